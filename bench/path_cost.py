#!/usr/bin/env python3
"""Instructions per query on the full answer path, counted by callgrind (repeatable on a noisy
machine, unlike wall-clock or CPU time).

Two paths, driven in-process through ``QueryHandler.handle`` with no sockets:

  local   first sight of a local name (a 20,000-name zone, 3 clients in 2 lines and none):
          parse, chain (cache probe, line authority), shaper, counters
  miss    a forwarded name never asked before, with a synchronous fake upstream: chain,
          ForwardResolver (cache fill), shaper, counters

Each path runs twice under ``valgrind --tool=callgrind``, with 0 and with N queries, and the
difference divided by N is printed, so start-up and loading cancel out.  Compare two trees
(``--tree``, default this checkout) in one run:

    python3 bench/path_cost.py --tree /tmp/before --tree . --queries 4000

Needs valgrind.  The fake upstream's own work (building its reply) is in the miss figure too,
identically for every tree.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ZONE_NAMES = 20_000

DRIVER = r'''
import os, sys
tree, path, count, total, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, tree)
import dns.message
from twisted.internet import defer, task
from smartdns import wire
from smartdns.config import parse_config
from smartdns.service import SmartDNSService, tune_gc
from smartdns.snapshot import build_snapshot
text = ('[server]\nlisten = ["127.0.0.1:0"]\ncontrol_socket = ""\n[zones]\ndirectory = "zones"\nwatch = false\n'
        '[lines]\nline1 = ["127.0.0.3/32"]\nline2 = ["127.0.0.4/32"]\n[forward]\nupstreams = ["127.0.0.1:9"]\n')
config = parse_config(text, os.path.join(workdir, "smartdns.toml"), resolv_conf="/nonexistent")
service = SmartDNSService(config, build_snapshot(config), task.Clock())
tune_gc()
handler = service.handler
if path == "miss":
    def query(qname, qtype, qclass=1, *, do=False, cd=False, pool=None):
        question = wire.parse_query(wire.encode_query(1, qname, qtype, qclass)).question
        rrset = wire.make_rrset(qname.lower(), wire.A, 300, [bytes([192, 0, 2, 1])])
        data = wire.render(0x4242, wire.FLAG_QR | wire.FLAG_RA | wire.FLAG_RD, question, ((rrset,), (), ()))[0]
        return defer.succeed(wire.check_reply(data, (qname, qtype, qclass)))
    service.forwarder.query = query
    items = [(dns.message.make_query(f"m{i}.fwd.example", "A").to_wire(), "127.0.0.1") for i in range(total)]
else:
    clients = ["127.0.0.1", "127.0.0.3", "127.0.0.4"]
    items = [(dns.message.make_query(f"n{i}.big.test", "A").to_wire(), clients[i % 3]) for i in range(total)]
for data, client in items[:count]:     # the queries are built in every run, so only answering differs
    handler.handle(data, client, False)
'''


def write_zone(workdir: str) -> None:
    """A 20,000-name zone with a line1 overlay on every 10th name."""
    os.makedirs(os.path.join(workdir, "zones", "line1"), exist_ok=True)
    with open(os.path.join(workdir, "zones", "big.test.zone"), "w", encoding="ascii") as handle:
        handle.write("$TTL 300\n@ SOA ns hm 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.1\n")
        for i in range(ZONE_NAMES):
            handle.write(f"n{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n")
    with open(os.path.join(workdir, "zones", "line1", "big.test.zone"), "w", encoding="ascii") as handle:
        for i in range(0, ZONE_NAMES, 10):
            handle.write(f"n{i} 300 A 172.16.{i >> 8 & 255}.{i & 255}\n")


def instructions(tree: str, path: str, count: int, total: int, workdir: str, driver: str) -> int:
    """Instructions callgrind counts for one run of the driver."""
    out = os.path.join(workdir, "callgrind.out")
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, driver, tree, path,
         str(count), str(total), workdir],
        capture_output=True, text=True, check=False, env=dict(os.environ, PYTHONHASHSEED="0"))
    match = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"callgrind run failed for {tree} {path}:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a smartdns checkout to measure (repeatable)")
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--paths", default="local,miss")
    args = parser.parse_args()
    trees = [os.path.abspath(t) for t in (args.tree or [os.path.dirname(HERE)])]
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]}; run this script with another to compare)")
    with tempfile.TemporaryDirectory(prefix="smartdns-path-cost-") as workdir:
        write_zone(workdir)
        driver = os.path.join(workdir, "driver.py")
        with open(driver, "w", encoding="utf-8") as handle:
            handle.write(DRIVER)
        for path in args.paths.split(","):
            for tree in trees:
                base = instructions(tree, path, 0, args.queries, workdir, driver)
                loaded = instructions(tree, path, args.queries, args.queries, workdir, driver)
                print(f"{path:6} {tree}: {(loaded - base) / args.queries / 1000:.1f}k instructions per query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
