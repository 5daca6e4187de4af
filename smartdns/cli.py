"""The ``smartdns`` command: ``check`` validates without serving, ``reload`` asks a running
server to reload and prints whether it worked, ``stats`` prints its counters, ``explain`` says
why a client gets the answer it gets (smartdns.explain)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from typing import TYPE_CHECKING

from smartdns import DISTRIBUTION_NAME, __version__, wire
from smartdns.errors import LoadError, Problem

if TYPE_CHECKING:
    from smartdns.config import Config
    from smartdns.snapshot import Snapshot


def version_text() -> str:
    """``smartdns X.Y.Z``, with the distribution's name when it differs from the command's."""
    return f"smartdns {__version__} ({DISTRIBUTION_NAME})"


def check(config_path: str | None) -> int:
    """Load the config and every zone; print each problem as ``file:line: message``, and each
    warning (allowed, but probably not meant) as ``file:line: warning: message``.

    Zone and overlay files are also read strictly (`smartdns.zones.check_zone_file`): every
    error in each file, and what named-checkzone rejects or warns about that loading lets
    through (records outside the zone, a second CNAME at one name)."""
    from smartdns.config import load_config
    from smartdns.snapshot import build_snapshot

    try:
        config = load_config(config_path)
    except LoadError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"{warning.path}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    snapshot: Snapshot | None = None
    loading: list[Problem] = []
    try:
        snapshot = build_snapshot(config)
    except LoadError as e:
        loading = list(e.problems)
    strict = strict_zone_problems(config, snapshot)
    reported = {problem.path for problem in strict}
    problems = strict + [p for p in loading if p.path not in reported]
    if problems:
        for problem in sorted(problems, key=lambda p: (p.path, p.line)):
            print(problem, file=sys.stderr)
        return 1
    assert snapshot is not None
    records = sum(len(rrset.rdatas) for zone in snapshot.zones.values()
                  for node in zone.nodes.values() for rrset in node.values())
    print(f"{config.path or '<defaults>'}: OK, {len(snapshot.zones)} zones, {records} records, "
          f"{len(snapshot.line_names)} lines, {len(snapshot.views)} line overlays")
    return 0


def strict_zone_problems(config: Config, snapshot: Snapshot | None) -> list[Problem]:
    """`smartdns.zones.check_zone_file` over every base and overlay file of the config."""
    from smartdns.articlejson import read_lines_json
    from smartdns.zones import check_zone_file, overlay_default_ttl, scan_zone_directory

    if snapshot is not None:
        line_names = list(snapshot.line_names)
    else:
        line_names = [line.name for line in config.lines]
        if config.zones.lines_json:
            line_names += [name for name, _cidrs in read_lines_json(config.zones.lines_json)[0]]
    bases, overlays, _ = scan_zone_directory(config.zones.directory, line_names,
                                             missing_ok=config.zones.directory_optional)
    problems: list[Problem] = []
    for origin_text, path in bases.items():
        problems += check_zone_file(path, origin_text)
    for files in overlays.values():
        for origin_text, path in files.items():
            base = None
            if snapshot is not None:
                base = snapshot.zones.get(wire.from_text(origin_text).lower())
            ttl = overlay_default_ttl(bases.get(origin_text), base)
            problems += check_zone_file(path, origin_text, overlay=True, default_ttl=ttl)
    return problems


CONTROL_TIMEOUT_SECONDS = 60.0     # a reload of large zones can take a while


def _control_socket(config_path: str | None) -> str | None:
    """The control socket the config names ("" when none); None after printing why the config
    cannot be loaded."""
    from smartdns.config import load_config

    try:
        return load_config(config_path).server.control_socket or ""
    except LoadError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return None


def _control(path: str, command: bytes) -> tuple[int, str]:
    """Send one command to the control socket at ``path``: (1, message) when it cannot be
    reached, else (0, the reply)."""
    from smartdns.control import exchange
    try:
        return 0, exchange(path, command, CONTROL_TIMEOUT_SECONDS)
    except OSError as e:
        return 1, f"cannot reach the server's control socket {path}: {e.strerror or e}"


def stats(config_path: str | None, as_json: bool = False) -> int:
    """Print the running server's counters, summed over every process of ``[server] workers``:
    one ``name value`` per line, or with ``as_json`` one JSON object that also holds each
    process's own (smartdns.control.stats_report)."""
    path = _control_socket(config_path)
    if path is None:
        return 1
    if not path:
        print("no [server] control_socket in the config", file=sys.stderr)
        return 1
    code, reply = _control(path, b"stats json")
    status, _, text = reply.partition("\n")
    if code or status != "ok stats":
        print(reply, file=sys.stderr)
        return 1
    report = json.loads(text)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        for name, value in report["counters"].items():
            print(f"{name} {value}")
    for index in report["missing_workers"]:
        print(f"worker {index} did not answer; its counters are not included", file=sys.stderr)
    return 0


def reload(config_path: str | None, pidfile: str | None) -> int:
    """Ask the running server to reload: over its control socket (and print the result), or with
    SIGHUP to the pid in ``pidfile`` when no control socket is configured."""
    path = _control_socket(config_path)
    if path is None:
        return 1
    if path:
        code, reply = _control(path, b"reload")
        if code:
            print(reply, file=sys.stderr)
            return 1
        status, _, text = reply.partition(" ")
        print(text, file=sys.stdout if status == "ok" else sys.stderr)
        return 0 if status == "ok" else 1
    if pidfile:
        try:
            with open(pidfile, encoding="ascii") as handle:
                pid = int(handle.read().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as e:
            print(f"cannot signal the server from {pidfile}: {e}", file=sys.stderr)
            return 1
        print(f"sent SIGHUP to {pid}; the server log says whether the reload succeeded "
              "(set [server] control_socket to get the result here)")
        return 0
    print("no [server] control_socket in the config and no --pidfile given", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="smartdns", description="smartdns DNS server tools")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="validate the config and zones, then exit")
    p_check.add_argument("--config", "-c", default=None, help="path to smartdns.toml")
    p_reload = sub.add_parser("reload", help="make the running server reload and print the result")
    p_reload.add_argument("--config", "-c", default=None, help="path to smartdns.toml (finds the control socket)")
    p_reload.add_argument("--pidfile", default=None, help="send SIGHUP to this twistd pidfile's process instead")
    p_stats = sub.add_parser("stats", help="print the running server's counters")
    p_stats.add_argument("--config", "-c", default=None, help="path to smartdns.toml (finds the control socket)")
    p_stats.add_argument("--json", action="store_true",
                         help="one JSON object: the sums, and each worker process's own counters")
    p_explain = sub.add_parser("explain", help="why a client gets the answer it gets (asks no upstream)")
    p_explain.add_argument("--config", "-c", default=None, help="path to smartdns.toml")
    p_explain.add_argument("name", help="the name asked")
    p_explain.add_argument("type", nargs="?", default="A", help="the type asked (default A)")
    p_explain.add_argument("--from", dest="client", required=True, metavar="IP", help="the client's address")
    p_explain.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    if args.command == "explain":
        from smartdns.explain import run as explain
        return explain(args.config, args.name, args.type, args.client, args.json)
    if args.command == "stats":
        return stats(args.config, args.json)
    if args.command == "check":
        return check(args.config)
    if args.command == "reload":
        return reload(args.config, args.pidfile)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
