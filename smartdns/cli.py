"""The ``smartdns`` command: ``smartdns check --config FILE`` validates without serving."""
from __future__ import annotations

import argparse
import sys

from smartdns.errors import LoadError


def check(config_path: str | None) -> int:
    """Load the config and every zone; print each problem as ``file:line: message``."""
    from smartdns.service import load

    try:
        config, snapshot = load(config_path)
    except LoadError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    records = sum(len(rrset.rdatas) for zone in snapshot.zones.values()
                  for node in zone.nodes.values() for rrset in node.values())
    print(f"{config.path or '<defaults>'}: OK, {len(snapshot.zones)} zones, {records} records, "
          f"{len(snapshot.line_names)} lines, {len(snapshot.views)} line overlays")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="smartdns", description="smartdns DNS server tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="validate the config and zones, then exit")
    p_check.add_argument("--config", "-c", default=None, help="path to smartdns.toml")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.config)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
