#!/usr/bin/env python3
"""Zone load time: how long ``zones.read_zone_file`` takes on a large zone, cold.

The target for a 100,000-record zone is 5 s cold.  This script writes such a zone to a temporary
directory, then loads it in fresh interpreters (one per run, so nothing is warm but the OS file
cache) and prints the load time of each run (wall clock, and CPU time, which other load on the
machine disturbs less) and the median wall time.  The import of smartdns.zones is timed apart.

    python bench/zone_load.py                       # 100,000 "h{i} IN A 10.x.y.z" records
    python bench/zone_load.py --shape mixed         # A, AAAA, MX, TXT, CNAME, SRV, CAA mix
    python bench/zone_load.py --path dnspython      # the dnspython path alone (the "before")

Run by hand, never in CI; the unit tests assert correctness, not speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ORIGIN = "example.com."
DEFAULT_RECORDS = 100_000
DEFAULT_RUNS = 3
BOUND_SECONDS = 5.0

HEADER = """\
$TTL 3600
@   IN  SOA ns1.example.com. hostmaster.example.com. (
            2024010101 ; serial
            7200       ; refresh
            3600       ; retry
            1209600    ; expire
            300 )      ; minimum
    IN  NS  ns1
    IN  NS  ns2
ns1 IN  A   192.0.2.1
ns2 IN  A   192.0.2.2
"""

# Runs in the child: time the import, then the load.
CHILD = r"""
import json, sys, time
started = time.perf_counter()
from smartdns import fastzone, zones
imported = time.perf_counter()
cpu = time.process_time()
if sys.argv[3] == "dnspython":
    fastzone.read_zone_fast = lambda *args, **kwargs: None
zone, problems = zones.read_zone_file(sys.argv[1], sys.argv[2])
done = time.perf_counter()
cpu = time.process_time() - cpu
if problems or zone is None:
    sys.exit(f"load failed: {problems}")
print(json.dumps({"import": imported - started, "load": done - imported, "cpu": cpu,
                  "rrsets": sum(len(node) for node in zone.nodes.values())}))
"""


def record(index: int, shape: str) -> str:
    """One record line of the generated zone."""
    a, b, c = (index >> 16) & 255, (index >> 8) & 255, index & 255
    if shape == "a":
        return f"h{index} IN A 10.{a}.{b}.{c}"
    kind = index % 10
    if kind < 4:
        return f"h{index} IN A 10.{a}.{b}.{c}"
    if kind == 4:
        return f"h{index} 300 IN AAAA 2001:db8::{a:x}:{b:x}:{c:x}"
    if kind == 5:
        return f"h{index} IN MX 10 mail{index % 50}.example.net."
    if kind == 6:
        return f'h{index} IN TXT "v=spf1 ip4:10.{a}.{b}.{c} -all" "id={index}; x"'
    if kind == 7:
        return f"h{index} IN CNAME h{index - 7}"
    if kind == 8:
        return f"_svc{index}._tcp IN SRV 10 5 {1024 + index % 60000} h{index - 8}"
    return f'h{index} IN CAA 0 issue "ca{index % 7}.example"'


def write_zone(directory: str, records: int, shape: str) -> str:
    """The zone file with ``records`` records besides SOA, NS and glue; returns its path."""
    path = os.path.join(directory, ORIGIN + "zone")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER)
        for index in range(records):
            handle.write(record(index, shape) + "\n")
    return path


def run_once(path: str, which: str) -> dict[str, float]:
    """One cold load in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD, path, ORIGIN, which], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    """Generate, load, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS)
    parser.add_argument("--shape", choices=["a", "mixed"], default="a")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--path", choices=["default", "dnspython"], default="default",
                        help="default: read_zone_file as shipped; dnspython: fast reader off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartdns-zone-load-") as directory:
        path = write_zone(directory, args.records, args.shape)
        sys.path.insert(0, REPO)
        from smartdns import fastzone
        reason = fastzone.decline_reason(path, ORIGIN)
        print(f"zone: {args.records} records ({args.shape}), {os.path.getsize(path)} bytes; "
              f"path: {args.path}; fast reader: {'declines: ' + reason if reason else 'accepts'}")
        loads = []
        for run in range(args.runs):
            result = run_once(path, args.path)
            loads.append(result["load"])
            print(f"run {run + 1}: load {result['load']:.3f} s wall, {result['cpu']:.3f} s CPU "
                  f"(import {result['import']:.3f} s), {result['rrsets']} RRsets")
    median = statistics.median(loads)
    verdict = "within" if median <= BOUND_SECONDS else "OVER"
    print(f"median cold load: {median:.3f} s ({verdict} the {BOUND_SECONDS:.0f} s bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
