#!/usr/bin/env python3
"""Zone load time: how long ``zones.read_zone_file`` takes on a large zone, cold.

The target for a 100,000-record zone is 5 s cold.  This script writes such a zone to a temporary
directory, then loads it in fresh interpreters (one per run, so nothing is warm but the OS file
cache) and prints the load time of each run (wall clock, and CPU time, which other load on the
machine disturbs less) and the median wall time.  The import of smartdns.zones is timed apart.

    python bench/zone_load.py                       # 100,000 "h{i} IN A 10.x.y.z" records
    python bench/zone_load.py --shape mixed         # A, AAAA, MX, TXT, CNAME, SRV, CAA mix
    python bench/zone_load.py --path dnspython      # the dnspython path alone (the "before")

``--serve`` measures a running server instead (bench/README.rst, "Memory and load time"): a
zone of 1,000,000 names and three lines whose overlays override 10 % of them, served by
smartdns started as ``bench/run.py`` starts it; per run (a fresh process each) the time until
it answers its first query, its RSS (VmRSS, and the peak VmHWM) once loaded, and the latency
of local answers asked at a fixed rate while it reloads, once after touching an overlay file
and once after touching the base zone file::

    flock /tmp/bench.lock python3 bench/zone_load.py --serve

Run by hand, never in CI; the unit tests assert correctness, not speed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

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
    serve = parser.add_argument_group("--serve: a running smartdns with a large zone and lines")
    serve.add_argument("--serve", action="store_true", help="measure a running server (see above)")
    serve.add_argument("--names", type=int, default=SERVE_NAMES, help="names in the zone (default 1,000,000)")
    serve.add_argument("--lines", type=int, default=SERVE_LINES, help="lines with an overlay (1-200, default 3)")
    serve.add_argument("--overlay-percent", type=int, default=SERVE_OVERLAY_PERCENT,
                       help="names overridden in some line's overlay (default 10)")
    serve.add_argument("--qps", type=int, default=SERVE_QPS,
                       help="rate of local queries during a reload (default 2000)")
    serve.add_argument("--reloads", default="overlay,base",
                       help="the file each reload touches first: overlay (line 0's), base (the zone) "
                            "or none; comma list (default overlay,base)")
    serve.add_argument("--port", type=int, default=5410)
    serve.add_argument("--server-cpu", default="0", help="CPU for smartdns ('' = no pinning)")
    serve.add_argument("--client-cpu", default="1", help="CPU for this script ('' = no pinning)")
    serve.add_argument("--smartdns-tree", default=REPO, help="source tree to run (first on PYTHONPATH)")
    serve.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"),
                       help="interpreter for smartdns (runs the twistd beside it)")
    serve.add_argument("--workdir", default="/tmp/smartdns-zone-load")
    serve.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    if args.serve:
        return serve_main(args)
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


# ---------------------------------------------------------------- --serve: a running server

SERVE_ZONE = "big.test"
SERVE_NAMES = 1_000_000
SERVE_LINES = 3
SERVE_OVERLAY_PERCENT = 10
SERVE_QPS = 2000
SERVE_LOAD_SECONDS = 10.0          # targets (README.rst, "Memory and load time")
SERVE_LOAD_MB = 1024
SERVE_RELOAD_P99_MS = 5.0
CHECK_NAME = "check"               # answered differently in every line: shows lines work
QUIET_SECONDS = 1.0                # queries before and after each reload, for the baseline
LOST_AFTER_SECONDS = 2.0           # an answer later than this counts as lost


def line_source(k: int) -> str:
    """Client address of line ``k`` (lines are 127.0.<k+1>.0/24)."""
    return f"127.0.{k + 1}.1"


def overlay_line(index: int, lines: int, percent: int) -> int | None:
    """The line whose overlay overrides name ``index`` (None: no line does).  Overridden names
    are spread evenly over the zone and dealt out to the lines in turn."""
    step = 100 // percent
    if index % step:
        return None
    return (index // step) % lines


def write_serve_data(args: argparse.Namespace) -> dict[str, str]:
    """Zone, overlays and smartdns.toml under --workdir (made again only when a size changes)."""
    zones = os.path.join(args.workdir, "zones")
    stamp = os.path.join(args.workdir, "stamp")
    wanted = f"{args.names} {args.lines} {args.overlay_percent} {args.port}\n"
    paths = {"zones": zones, "base": os.path.join(zones, SERVE_ZONE + ".zone"),
             "overlay0": os.path.join(zones, "line0", SERVE_ZONE + ".zone"),
             "config": os.path.join(args.workdir, "smartdns.toml"),
             "control": os.path.join(args.workdir, "control.sock")}
    try:
        with open(stamp, encoding="ascii") as handle:
            if handle.read() == wanted:
                return paths
    except OSError:
        pass
    os.makedirs(zones, exist_ok=True)
    overlays = []
    for k in range(args.lines):
        os.makedirs(os.path.join(zones, f"line{k}"), exist_ok=True)
        handle = open(os.path.join(zones, f"line{k}", SERVE_ZONE + ".zone"), "w", encoding="ascii")
        handle.write(f"$ORIGIN {SERVE_ZONE}.\n$TTL 3600\n{CHECK_NAME} IN A 192.0.2.{101 + k}\n")
        overlays.append(handle)
    with open(paths["base"], "w", encoding="ascii") as base:
        base.write(f"$ORIGIN {SERVE_ZONE}.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 3600 600 864000 3600\n"
                   f"@ IN NS ns1\nns1 IN A 127.0.0.1\n{CHECK_NAME} IN A 192.0.2.100\n")
        for i in range(args.names):
            a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
            base.write(f"n{i} IN A 10.{a}.{b}.{c}\n")
            line = overlay_line(i, args.lines, args.overlay_percent)
            if line is not None:
                overlays[line].write(f"n{i} IN A 172.{16 + line}.{b}.{c}\n")
    for handle in overlays:
        handle.close()
    lines = "".join(f'line{k} = ["127.0.{k + 1}.0/24"]\n' for k in range(args.lines))
    with open(paths["config"], "w", encoding="ascii") as handle:
        handle.write(f"# Generated by bench/zone_load.py --serve\n[server]\n"
                     f'listen = ["127.0.0.1:{args.port}"]\ncontrol_socket = "{paths["control"]}"\n\n'
                     f'[zones]\ndirectory = "{zones}"\nwatch = false\n\n[lines]\n{lines}')
    with open(stamp, "w", encoding="ascii") as handle:
        handle.write(wanted)
    return paths


def query_packet(qid: int, name: str) -> bytes:
    """A plain UDP query for ``name`` A, no RD, no EDNS."""
    labels = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split("."))
    return struct.pack("!6H", qid, 0, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def wait_first_answer(port: int, started: float, proc: subprocess.Popen[bytes], timeout: float) -> float | None:
    """Seconds from ``started`` to the first answer to a local query (asked every 20 ms)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.02)
    packet = query_packet(0x5151, f"{CHECK_NAME}.{SERVE_ZONE}")
    try:
        while time.perf_counter() - started < timeout and proc.poll() is None:
            try:
                sock.sendto(packet, ("127.0.0.1", port))
                while True:
                    data = sock.recv(512)
                    if data[:2] == packet[:2] and data[3] & 0x0F == 0:
                        return time.perf_counter() - started
            except (socket.timeout, ConnectionRefusedError):
                continue
    finally:
        sock.close()
    return None


def control(path: str, command: bytes, timeout: float = 300.0) -> str:
    """One command over the control socket (as ``smartdns reload`` sends it); the reply."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from smartdns.control import exchange
    return exchange(path, command, timeout)


def percentile(values: list[float], fraction: float) -> float | None:
    """The value below which ``fraction`` of ``values`` lie (nearest rank), or None."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


def latency_summary(latencies: list[float], lost: int) -> dict[str, Any]:
    """Count, p50, p99 and max in ms, and how many were lost."""
    as_ms = [x * 1000 for x in latencies]
    p50, p99 = percentile(as_ms, 0.50), percentile(as_ms, 0.99)
    return {"answers": len(as_ms), "lost": lost,
            "p50_ms": None if p50 is None else round(p50, 3), "p99_ms": None if p99 is None else round(p99, 3),
            "max_ms": round(max(as_ms), 3) if as_ms else None}


def reload_under_load(args: argparse.Namespace, paths: dict[str, str], touch: str | None) -> dict[str, Any]:
    """Local queries at --qps from line 0's address, open loop (each sent at its time whatever
    the answers do), while a reload runs: latency of those sent during the reload, and of
    those sent in the quiet second before it.  ``touch``: the file whose mtime changes first."""
    rng = random.Random(len(touch or "") + args.names)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((line_source(0), 0))
    sock.setblocking(False)
    server = ("127.0.0.1", args.port)
    interval = 1.0 / args.qps
    sent_at: dict[int, float] = {}      # query number → send time
    answered: dict[int, float] = {}     # query number → latency
    bad = 0
    window: dict[str, Any] = {}

    def trigger() -> None:
        if touch is not None:
            os.utime(touch)
        window["start"] = time.perf_counter()
        try:
            window["reply"] = control(paths["control"], b"reload")
        except OSError as e:
            window["reply"] = f"error {e!r}"
        window["end"] = time.perf_counter()

    thread = threading.Thread(target=trigger, daemon=True)
    began = time.perf_counter()
    next_send = began
    seq = 0
    stop_at: float | None = None
    while True:
        now = time.perf_counter()
        if not thread.is_alive() and "end" not in window and now - began >= QUIET_SECONDS:
            thread.start()
        if stop_at is None and "end" in window:
            stop_at = window["end"] + QUIET_SECONDS
        if stop_at is not None and now >= stop_at + LOST_AFTER_SECONDS:
            break
        while next_send <= now and (stop_at is None or next_send < stop_at):
            packet = query_packet(seq & 0xFFFF, f"n{rng.randrange(args.names)}.{SERVE_ZONE}")
            try:
                sock.sendto(packet, server)
            except BlockingIOError:
                pass
            sent_at[seq] = time.perf_counter()
            seq += 1
            next_send += interval
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send - time.perf_counter(), 0.01)))
        if not ready:
            continue
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            got = time.perf_counter()
            qid = struct.unpack_from("!H", data)[0]
            # The newest query with this ID (IDs wrap after 65,536 queries, 30 s at 2,000 qps).
            number = seq - 1 - ((seq - 1 - qid) % 65536)
            if number in sent_at and number not in answered:
                answered[number] = got - sent_at[number]
                if data[3] & 0x0F or struct.unpack_from("!H", data, 6)[0] == 0:
                    bad += 1
    sock.close()
    thread.join()
    start, end = window["start"], window["end"]
    during = [n for n, t in sent_at.items() if start <= t <= end]
    before = [n for n, t in sent_at.items() if t < start]
    result = {"touched": touch, "reply": window["reply"], "reload_s": round(end - start, 3),
              "sent": seq, "bad_answers": bad,
              "during": latency_summary([answered[n] for n in during if n in answered],
                                        sum(1 for n in during if n not in answered)),
              "before": latency_summary([answered[n] for n in before if n in answered],
                                        sum(1 for n in before if n not in answered))}
    return result


def serve_once(args: argparse.Namespace, paths: dict[str, str], run: Any) -> dict[str, Any]:
    """One fresh server: time to first answer, RSS, answers by line, then the reloads."""
    import run as bench_run   # bench/run.py: the process wrapper and answer probe
    cmd = [args.python, os.path.join(os.path.dirname(args.python), "twistd"), "-n", "--pidfile=", "smartdns",
           "--config", paths["config"]]
    env = dict(os.environ, PYTHONPATH=args.smartdns_tree + (os.pathsep + os.environ["PYTHONPATH"]
                                                           if os.environ.get("PYTHONPATH") else ""))
    logpath = os.path.join(args.workdir, f"smartdns-{run}.log")
    started = time.perf_counter()
    proc = bench_run.Proc("smartdns", cmd, logpath, cpu=args.server_cpu or None, env=env, cwd=args.smartdns_tree)
    out: dict[str, Any] = {"run": run, "cmd": " ".join(cmd)}
    try:
        ready = wait_first_answer(args.port, started, proc.p, 300)
        if ready is None:
            out["error"] = "no answer:\n" + proc.tail()
            return out
        out["ready_s"] = round(ready, 3)
        out["cpu_at_ready_s"] = bench_run.cpu_seconds(proc.pid)
        status = proc_status(proc.pid)
        time.sleep(1)
        settled = proc_status(proc.pid)
        out["rss_mb_ready"] = round(status["VmRSS"] / 1024, 1)
        out["rss_mb"] = round(settled["VmRSS"] / 1024, 1)
        out["hwm_mb"] = round(settled["VmHWM"] / 1024, 1)
        checks = {}
        for k in [None, *range(args.lines)]:
            got = bench_run.probe_a(args.port, f"{CHECK_NAME}.{SERVE_ZONE}", line_source(k) if k is not None else None)
            want = f"192.0.2.{100 if k is None else 101 + k}"
            checks["base" if k is None else f"line{k}"] = got is not None and got[1] == [want]
        out["answers_by_line_ok"] = all(checks.values())
        out["reloads"] = {}
        for which in [w for w in args.reloads.split(",") if w]:
            touch = {"overlay": paths["overlay0"], "base": paths["base"], "none": None}[which]
            out["reloads"][which] = reload_under_load(args, paths, touch)
        after = proc_status(proc.pid)
        out["rss_mb_after_reloads"] = round(after["VmRSS"] / 1024, 1)
        out["hwm_mb_after_reloads"] = round(after["VmHWM"] / 1024, 1)
    finally:
        proc.stop()
    return out


def median_of(runs: list[dict[str, Any]], *keys: str) -> float | None:
    """The median of a figure over the runs that have it."""
    values = []
    for result in runs:
        value: Any = result
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return statistics.median(values) if values else None


def serve_main(args: argparse.Namespace) -> int:
    """--serve: generate, then --runs fresh servers; print medians, write the JSON."""
    sys.path.insert(0, HERE)
    import run as bench_run
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)
    if args.client_cpu:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    t0 = time.perf_counter()
    paths = write_serve_data(args)
    print(f"data: {args.names} names in {SERVE_ZONE}, {args.lines} lines, {args.overlay_percent} % of the names "
          f"overridden ({os.path.getsize(paths['base'])} bytes; ready in {time.perf_counter() - t0:.1f} s)")
    python = bench_run.python_info(args.python)
    print(f"smartdns ran on {bench_run.python_line(python)}")
    runs = []
    for run in range(1, args.runs + 1):
        fo0, w0 = bench_run.foreign_ticks(), time.monotonic()
        result = serve_once(args, paths, run)
        result["other_processes_cpu"] = bench_run.foreign_percent(fo0, bench_run.foreign_ticks(), time.monotonic() - w0)
        runs.append(result)
        if "error" in result:
            print(f"run {run}: {result['error']}")
            continue
        text = (f"run {run}: first answer after {result['ready_s']:.2f} s (server CPU {result['cpu_at_ready_s']:.2f} s), "
                f"RSS {result['rss_mb']:.0f} MB (peak {result['hwm_mb']:.0f} MB), answers by line "
                f"{'ok' if result['answers_by_line_ok'] else 'WRONG'}; other processes "
                f"{result['other_processes_cpu']:.0f} % of a CPU")
        for which, r in result["reloads"].items():
            d, b = r["during"], r["before"]
            text += (f"\n  reload ({which}): {r['reload_s']:.2f} s, {d['answers']} answers during it: "
                     f"p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, max {d['max_ms']} ms, lost {d['lost']}; "
                     f"before: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms; bad answers {r['bad_answers']}")
        text += (f"\n  after the reloads: RSS {result['rss_mb_after_reloads']:.0f} MB, "
                 f"peak {result['hwm_mb_after_reloads']:.0f} MB")
        print(text, flush=True)
    summary: dict[str, Any] = {
        "ready_s": median_of(runs, "ready_s"), "rss_mb": median_of(runs, "rss_mb"),
        "hwm_mb": median_of(runs, "hwm_mb"),
        "reloads": {which: {"reload_s": median_of(runs, "reloads", which, "reload_s"),
                            "p50_ms": median_of(runs, "reloads", which, "during", "p50_ms"),
                            "p99_ms": median_of(runs, "reloads", which, "during", "p99_ms"),
                            "max_ms": median_of(runs, "reloads", which, "during", "max_ms"),
                            "lost": median_of(runs, "reloads", which, "during", "lost")}
                    for which in args.reloads.split(",") if which},
    }
    ok_load = (summary["ready_s"] is not None and summary["ready_s"] <= SERVE_LOAD_SECONDS
               and summary["hwm_mb"] is not None and summary["hwm_mb"] <= SERVE_LOAD_MB)
    print(f"\nmedian of {len(runs)}: first answer {summary['ready_s']} s, RSS {summary['rss_mb']} MB, "
          f"peak {summary['hwm_mb']} MB (targets <= {SERVE_LOAD_SECONDS:.0f} s, <= {SERVE_LOAD_MB} MB): "
          f"{'PASS' if ok_load else 'FAIL'}")
    for which, r in summary["reloads"].items():
        ok = r["p99_ms"] is not None and r["p99_ms"] <= SERVE_RELOAD_P99_MS and not r["lost"]
        print(f"median reload ({which}): {r['reload_s']} s; during it p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
              f"max {r['max_ms']} ms, lost {r['lost']} (target p99 <= {SERVE_RELOAD_P99_MS} ms): "
              f"{'PASS' if ok else 'FAIL'}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.results_dir, f"{stamp}-zone-load.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"argv": sys.argv, "python": python, "names": args.names, "lines": args.lines,
                   "overlay_percent": args.overlay_percent, "qps": args.qps, "runs": runs, "median": summary},
                  handle, indent=2, sort_keys=True)
    print(f"results: {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
