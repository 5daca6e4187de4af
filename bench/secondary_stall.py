#!/usr/bin/env python3
"""Answers during a big zone transfer: latency of smartdns's local answers while it transfers a
100,000-record zone from BIND as a secondary (RFC 5936 AXFR), saves it and reloads.
Target: p99 ≤ 5 ms over the transfer window.

Run by hand, never in CI (bench/README.rst, "Answers during a zone transfer"), with the venv's
interpreter (dnspython) and BIND ``named`` and ``rndc``, under the bench lock::

    flock /tmp/bench.lock .venv/bin/python bench/secondary_stall.py

Each of ``--runs`` runs starts a fresh smartdns, serving ``local.test`` (300 names, zones/
directory) and following ``big.test`` (``--records`` A records) from named with a TSIG key, and
then a fresh named (so smartdns's refresh at start finds no primary and waits for NOTIFY).
Two windows are measured in each run:

first
    the first transfer: the bench sends a signed NOTIFY (from 127.0.0.1, a primary's address;
    named itself has ``notify no``) and smartdns makes an AXFR of the whole zone.
update
    named's zone file is rewritten with the next serial and every address changed, ``rndc
    reload`` loads it, then (``--mode axfr``, the default) smartdns's saved file is deleted, so
    smartdns has no local copy and transfers by AXFR, or (``--mode ixfr-full``) the saved file
    is kept and smartdns asks IXFR, which named (``provide-ixfr no``) answers with the whole zone
    (read onto the saved copy).  Then the bench sends NOTIFY.

During each window one loop in this process sends ``local.test`` A queries over UDP at a fixed
rate (``--qps``, open loop: each at its time, whatever the answers do), takes the time of each
answer, asks smartdns for ``big.test``'s SOA every 10 ms, and reads smartdns's log as it grows
(time of the lines that mark the phases: NOTIFY taken, the transfer's ``serial .. -> ..`` line,
which comes after the zone was transferred and saved, ``reload (transfer) started``, ``reload
OK``).  The window runs from the NOTIFY's send until the first SOA answer with the new serial;
``--quiet`` seconds before it and ``--after`` seconds after it are measured too.  A query not
answered ``--lost-after`` seconds after the last send is lost.

Prints a table, and writes bench/results/<timestamp>-stall.json (every query's send offset and
latency by window, the phases' times, CPU time of smartdns and named, CPU used by other
processes, the interpreter with PGO/LTO from its sysconfig, the commands).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import Proc, cpu_seconds, foreign_percent, foreign_ticks  # noqa: E402  (bench/run.py)
from fleet import free_port, git_rev, percentile, run_meta, secondary_toml  # noqa: E402

BIG = "big.test"
LOCAL = "local.test"
LOCAL_NAMES = 300
KEY_NAME = "stall-key"
SECRET = "c3RhbGwtYmVuY2gtc2VjcmV0LTIwMjYtMTItMDE="     # "stall-bench-secret-2026-12-01"
KEYRING = {dns.name.from_text(KEY_NAME): dns.tsig.Key(KEY_NAME, SECRET, "hmac-sha256")}
RNDC_KEY = "stall-rndc"
TARGET_P99_MS = 5.0
SOA_POLL_SECONDS = 0.010
CLIENT_STALL_SECONDS = 0.010     # a turn of the client's loop longer than this is reported (its own stall)
PHASES = (("notify", re.compile(r"NOTIFY for big\.test from")),
          ("transferred", re.compile(r"secondary big\.test: serial \S+ -> \d+ by")),
          ("reload_started", re.compile(r"reload \(transfer\) started")),
          ("reload_ok", re.compile(r"reload OK")),
          ("transfer_failed", re.compile(r"secondary big\.test: keeping serial")))


def log(*a: Any) -> None:
    print("[stall]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data

def big_zone(records: int, serial: int) -> str:
    """``records`` A records h0..h<N-1>; each serial gives every name another address."""
    lines = ["$ORIGIN %s." % BIG, "$TTL 3600",
             "@ IN SOA ns1 hostmaster %d 3600 600 864000 60" % serial,   # refresh 1 h: only NOTIFY moves it
             "@ IN NS ns1", "ns1 IN A 192.0.2.53"]
    for i in range(records - 1):
        n = i + serial * 7919
        lines.append("h%d IN A 10.%d.%d.%d" % (i, (n >> 16) & 255, (n >> 8) & 255, n & 255))
    return "\n".join(lines) + "\n"


def local_zone() -> str:
    lines = ["$ORIGIN %s." % LOCAL, "$TTL 300", "@ IN SOA ns1 hostmaster 1 3600 600 864000 60",
             "@ IN NS ns1", "ns1 IN A 192.0.2.1"]
    lines += ["n%d IN A 192.0.2.%d" % (i, i % 250 + 2) for i in range(LOCAL_NAMES)]
    return "\n".join(lines) + "\n"


def query_packet(qid: int, name: str, qtype: int = 1) -> bytes:
    """A plain query (RD clear, no EDNS) as wire bytes."""
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + wire + struct.pack("!HH", qtype, 1)


def notify_packet() -> bytes:
    """A NOTIFY for big.test (RFC 1996), signed with the zone's key."""
    msg = dns.message.make_query(BIG + ".", dns.rdatatype.SOA)
    msg.flags = dns.flags.AA               # before the opcode: the opcode lives in the flags word
    msg.set_opcode(dns.opcode.NOTIFY)
    msg.use_tsig(KEYRING, keyname=KEY_NAME)
    return msg.to_wire()


def soa_serial(data: bytes) -> int | None:
    try:
        reply = dns.message.from_wire(data)
    except Exception:   # noqa: BLE001
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def ask_soa(port: int) -> int | None:
    try:
        reply = dns.query.udp(dns.message.make_query(BIG + ".", "SOA"), "127.0.0.1", port=port, timeout=0.5)
    except Exception:   # noqa: BLE001
        return None
    return soa_serial(reply.to_wire())


def answers_local(port: int) -> bool:
    try:
        reply = dns.query.udp(dns.message.make_query("n1." + LOCAL + ".", "A"), "127.0.0.1", port=port,
                              timeout=0.5)
    except Exception:   # noqa: BLE001
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def wait_for(what: str, check: Any, seconds: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s died while waiting for %s:\n%s" % (proc.name, what, proc.tail()))
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what + ("" if proc is None else ":\n" + proc.tail()))


# ---------------------------------------------------------------- servers

class Setup:
    """named and smartdns of one run, in a fresh directory under --workdir."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        os.makedirs(args.workdir, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="run-", dir=args.workdir)
        self.port = free_port()
        self.named_port = free_port()
        self.rndc_port = free_port()
        self.serial = 1
        self.procs: list[Proc] = []
        self.smartdns: Proc | None = None
        self.named: Proc | None = None

    def write(self, rel: str, text: str) -> str:
        path = os.path.join(self.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def saved_file(self) -> str:
        return os.path.join(self.dir, "smartdns", "secondary", BIG + ".zone")

    def start_smartdns(self) -> None:
        self.write("smartdns/zones/%s.zone" % LOCAL, local_zone())
        self.write("smartdns/secondary/.keep", "")
        conf = self.write("smartdns/smartdns.toml",
                          secondary_toml("bench/secondary_stall.py", self.port, KEY_NAME, SECRET, BIG, self.named_port))
        env = dict(os.environ)
        tree = self.args.smartdns_tree
        env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = self.args.nice_cmd + [os.path.join(REPO, ".venv", "bin", "twistd"), "-n", "--pidfile=", "smartdns",
                                    "--config", conf]
        self.smartdns = Proc("smartdns", cmd, os.path.join(self.dir, "smartdns.log"), cpu=self.args.server_cpu,
                             env=env, cwd=os.path.join(self.dir, "smartdns"))
        self.procs.append(self.smartdns)
        wait_for("smartdns to answer local.test", lambda: answers_local(self.port), 60, self.smartdns)

    def start_named(self) -> None:
        self.write("named/%s.zone" % BIG, big_zone(self.args.records, self.serial))
        conf = self.write("named/named.conf", """\
# Generated by bench/secondary_stall.py
options {{
    directory "{dir}"; pid-file none; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; notify no; provide-ixfr no;
}};
key "{rndc}" {{ algorithm hmac-sha256; secret "{secret}"; }};
controls {{ inet 127.0.0.1 port {rport} allow {{ 127.0.0.1; }} keys {{ "{rndc}"; }}; }};
key "{key}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{ type primary; file "{zone}.zone"; allow-transfer {{ key {key}; }}; }};
""".format(dir=os.path.join(self.dir, "named"), port=self.named_port, rport=self.rndc_port, rndc=RNDC_KEY,
           key=KEY_NAME, secret=SECRET, zone=BIG))
        self.write("named/rndc.conf", """\
key "{rndc}" {{ algorithm hmac-sha256; secret "{secret}"; }};
options {{ default-key "{rndc}"; default-server 127.0.0.1; default-port {rport}; }};
""".format(rndc=RNDC_KEY, secret=SECRET, rport=self.rndc_port))
        cmd = self.args.nice_cmd + ["named", "-g", "-4", "-c", conf]
        self.named = Proc("named", cmd, os.path.join(self.dir, "named.log"), cpu=self.args.client_cpu,
                          cwd=os.path.join(self.dir, "named"))
        self.procs.append(self.named)
        wait_for("named to serve big.test", lambda: ask_soa(self.named_port) == self.serial, 120, self.named)

    def change_zone(self) -> None:
        """The next serial, every address changed, loaded by ``rndc reload``."""
        self.serial += 1
        self.write("named/%s.zone" % BIG, big_zone(self.args.records, self.serial))
        done = subprocess.run(["rndc", "-c", os.path.join(self.dir, "named", "rndc.conf"), "reload", BIG],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError("rndc reload: %s" % (done.stderr or done.stdout).strip())
        assert self.named is not None
        wait_for("named to serve serial %d" % self.serial, lambda: ask_soa(self.named_port) == self.serial, 120,
                 self.named)

    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.procs}

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


# ---------------------------------------------------------------- one window

def summary(latencies: list[float], lost: int) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    if not ms:
        return {"answers": 0, "lost": lost}
    return {"answers": len(ms), "lost": lost, "p50_ms": round(percentile(ms, 0.50), 3),
            "p99_ms": round(percentile(ms, 0.99), 3), "max_ms": round(max(ms), 3),
            "over_5ms": sum(1 for x in ms if x > TARGET_P99_MS)}


def measure(args: argparse.Namespace, setup: Setup, want_serial: int) -> dict[str, Any]:
    """Local queries at --qps; after --quiet s the NOTIFY; until smartdns serves ``want_serial``
    (and --after s more).  Latencies by window and by phase."""
    assert setup.smartdns is not None
    rng = random.Random(want_serial)
    server = ("127.0.0.1", setup.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)    # SOA polls and the NOTIFY
    control.bind(("127.0.0.1", 0))
    control.setblocking(False)
    logf = open(setup.smartdns.logpath, "rb")
    logf.seek(0, os.SEEK_END)
    pending = b""
    phases: dict[str, float] = {}
    interval = 1.0 / args.qps
    sent_at: list[float] = []
    answered: dict[int, float] = {}
    bad = 0
    notify_rcode: str | None = None
    cpu0 = {name: cpu_seconds(pid) for name, pid in setup.pids().items()}
    fo0 = foreign_ticks()
    began = time.perf_counter()
    next_send = began
    next_poll = began
    notified: float | None = None
    served: float | None = None
    stop_at: float | None = None
    deadline = began + args.quiet + args.timeout
    last_turn = began
    client_stalls: list[tuple[float, float]] = []    # (offset from start, ms) of this loop's own gaps
    while True:
        now = time.perf_counter()
        if now - last_turn > CLIENT_STALL_SECONDS:
            client_stalls.append((round(last_turn - began, 3), round((now - last_turn) * 1000, 1)))
        last_turn = now
        if notified is None and now - began >= args.quiet:
            control.sendto(notify_packet(), server)
            notified = time.perf_counter()
        if served is None and now > deadline:
            stop_at = now
        if stop_at is not None and now >= stop_at + args.lost_after:
            break
        while next_send <= now and (stop_at is None or next_send < stop_at):
            seq = len(sent_at)
            try:
                sock.sendto(query_packet(seq & 0xFFFF, "n%d.%s" % (rng.randrange(LOCAL_NAMES), LOCAL)), server)
            except BlockingIOError:
                pass
            sent_at.append(time.perf_counter())
            next_send += interval
        if notified is not None and served is None and now >= next_poll:
            control.sendto(query_packet(0xBEEF, BIG, 6), server)
            next_poll = now + SOA_POLL_SECONDS
        ready, _, _ = select.select([sock, control], [], [], max(0.0, min(next_send - time.perf_counter(), 0.005)))
        got = time.perf_counter()
        if sock in ready:
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                got = time.perf_counter()
                qid = struct.unpack_from("!H", data)[0]
                last = len(sent_at) - 1
                number = last - ((last - qid) % 65536)
                if 0 <= number <= last and number not in answered:
                    answered[number] = got - sent_at[number]
                    if data[3] & 0x0F or struct.unpack_from("!H", data, 6)[0] == 0:
                        bad += 1
        if control in ready:
            while True:
                try:
                    data = control.recv(65535)
                except BlockingIOError:
                    break
                if struct.unpack_from("!H", data)[0] == 0xBEEF:
                    if served is None and soa_serial(data) == want_serial:
                        served = time.perf_counter()
                        stop_at = served + args.after
                elif (data[2] >> 3) & 0x0F == dns.opcode.NOTIFY:
                    notify_rcode = dns.rcode.to_text(data[3] & 0x0F)
        chunk = logf.read()
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace")
                for name, pattern in PHASES:
                    if name not in phases and notified is not None and pattern.search(text):
                        phases[name] = got
    wall = time.perf_counter() - began
    logf.close()
    sock.close()
    control.close()
    out: dict[str, Any] = {
        "want_serial": want_serial, "notify_rcode": notify_rcode, "sent": len(sent_at),
        "answered": len(answered), "bad_answers": bad,
        "other_processes_cpu_percent": foreign_percent(fo0, foreign_ticks(), wall),
        "cpu_s": {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in setup.pids().items()},
    }
    if notified is None or served is None:
        out["error"] = "smartdns did not serve serial %d within %g s of the NOTIFY" % (want_serial, args.timeout)
        served = stop_at if stop_at is not None else time.perf_counter()
    out["window_s"] = round(served - notified, 3)
    # The client's own stalls (not scheduled, or slow): answers that came meanwhile look late.
    out["client_stalls"] = [(round(t - (notified - began), 3), ms) for t, ms in client_stalls]
    out["phases_s"] = {name: round(t - notified, 3) for name, t in sorted(phases.items(), key=lambda kv: kv[1])}

    def span(start: float, end: float) -> dict[str, Any]:
        numbers = [n for n, t in enumerate(sent_at) if start <= t < end]
        return summary([answered[n] for n in numbers if n in answered], sum(1 for n in numbers if n not in answered))

    out["quiet"] = span(began, notified)
    out["window"] = span(notified, served)
    out["after"] = span(served, served + args.after)
    # Phases (from smartdns's log, as this loop read it: within ~5 ms): the transfer and save
    # run in the thread until the "serial .. -> .." line; the reload from its start to "reload OK".
    marks = [("transfer_and_save", notified, phases.get("transferred")),
             ("reload", phases.get("reload_started"), phases.get("reload_ok")),
             ("reload_ok_to_served", phases.get("reload_ok"), served)]
    out["by_phase"] = {name: span(a, b) for name, a, b in marks if a is not None and b is not None and b > a}
    # The worst answer of each 100 ms of the window (ms from the NOTIFY), to see where stalls are.
    buckets: dict[int, float] = {}
    for n, t in enumerate(sent_at):
        if notified <= t < served + args.after and n in answered:
            b = int((t - notified) * 10)
            buckets[b] = max(buckets.get(b, 0.0), answered[n] * 1000)
    out["worst_per_100ms"] = [round(buckets.get(b, -1.0), 2) for b in range(max(buckets) + 1)] if buckets else []
    if args.keep_queries:
        out["queries"] = [[round(t - notified, 5), round(answered[n] * 1000, 3) if n in answered else None]
                          for n, t in enumerate(sent_at)]
    return out


def run_once(args: argparse.Namespace, index: int) -> dict[str, Any]:
    setup = Setup(args)
    out: dict[str, Any] = {"run": index, "workdir": setup.dir, "mode": args.mode}
    try:
        setup.start_smartdns()
        assert setup.smartdns is not None
        out["smartdns_cmd"] = " ".join(shlex.quote(c) for c in setup.smartdns.cmd)
        setup.start_named()
        assert setup.named is not None
        out["named_cmd"] = " ".join(shlex.quote(c) for c in setup.named.cmd)
        if "first" in args.windows:
            log("run %d: first transfer (AXFR of %d records)" % (index, args.records))
            out["first"] = measure(args, setup, setup.serial)
            log("run %d first: %s" % (index, brief(out["first"])))
        else:
            sock_notify(setup)
            wait_for("the first transfer", lambda: ask_soa(setup.port) == setup.serial, args.timeout, setup.smartdns)
        if "update" in args.windows:
            time.sleep(args.settle)
            setup.change_zone()
            if args.mode == "axfr":
                os.unlink(setup.saved_file())     # no local copy at our serial: smartdns makes an AXFR
            time.sleep(args.settle)
            log("run %d: update (%s of %d records)" % (index, args.mode, args.records))
            out["update"] = measure(args, setup, setup.serial)
            log("run %d update: %s" % (index, brief(out["update"])))
        with open(setup.smartdns.logpath, errors="replace") as f:
            out["smartdns_log"] = [line.rstrip() for line in f
                                   if "big.test" in line or "reload" in line][-12:]
        if setup.smartdns.poll() is not None:
            out["died"] = "smartdns"
    except Exception as e:   # noqa: BLE001  (the report says what went wrong; the other runs still run)
        out["error"] = str(e)
        log("run %d: %s" % (index, e))
    finally:
        setup.stop()
    return out


def sock_notify(setup: Setup) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(notify_packet(), ("127.0.0.1", setup.port))


def brief(m: dict[str, Any]) -> str:
    w = m.get("window", {})
    return "window %.2f s, p50 %s ms, p99 %s ms, max %s ms, lost %s, answers %s; phases %s%s" % (
        m.get("window_s", 0), w.get("p50_ms"), w.get("p99_ms"), w.get("max_ms"), w.get("lost"), w.get("answers"),
        m.get("phases_s"), "; ERROR " + m["error"] if "error" in m else "")


# ---------------------------------------------------------------- output

def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = ["| run | window | window s | answers | lost | p50 ms | p99 ms | max ms | >5 ms | transfer+save p99 / max "
            "| reload p99 / max | other CPU % | smartdns CPU s | notes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for name in args.windows:
            m = r.get(name)
            if m is None:
                rows.append("| %d | %s | - | - | - | - | - | - | - | - | - | - | - | %s |" % (
                    r["run"], name, r.get("error", "")))
                continue
            w = m["window"]
            ph = m.get("by_phase", {})

            def pm(key: str) -> str:
                s = ph.get(key)
                return "%.1f / %.1f" % (s["p99_ms"], s["max_ms"]) if s and s.get("answers") else "-"
            notes = []
            if m.get("client_stalls"):
                notes.append("this client stalled %d times, longest %.0f ms (its answers look late)" % (
                    len(m["client_stalls"]), max(ms for _, ms in m["client_stalls"])))
            if m.get("other_processes_cpu_percent", 0) > 10:
                notes.append("disturbed")
            if "error" in m:
                notes.append(m["error"])
            rows.append("| %d | %s | %.2f | %d | %d | %.2f | %.2f | %.1f | %d | %s | %s | %.0f | %.2f | %s |" % (
                r["run"], name, m["window_s"], w.get("answers", 0), w.get("lost", 0), w.get("p50_ms", -1),
                w.get("p99_ms", -1), w.get("max_ms", -1), w.get("over_5ms", 0), pm("transfer_and_save"),
                pm("reload"), m["other_processes_cpu_percent"], m["cpu_s"].get("smartdns", 0), "; ".join(notes)))
    for name in args.windows:
        p99s = [r[name]["window"]["p99_ms"] for r in runs if name in r and "p99_ms" in r[name]["window"]]
        if p99s:
            rows.append("| median | %s | | | | | %.2f | | | | | | | |" % (name, statistics.median(p99s)))
    return "\n".join(rows)


def archive_tree(rev: str, workdir: str) -> str:
    """A ``git archive`` copy of ``rev`` (committed files only: half-done edits in the shared
    working tree cannot break a run)."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    tree = os.path.join(workdir, "tree-" + sha)
    if not os.path.isdir(tree):
        os.makedirs(tree + ".tmp", exist_ok=True)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tree + ".tmp"], input=archive, check=True)
        os.rename(tree + ".tmp", tree)
    return tree


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=100_000, help="records in big.test")
    ap.add_argument("--qps", type=int, default=2000, help="local queries per second")
    ap.add_argument("--mode", choices=("axfr", "ixfr-full"), default="axfr",
                    help="the update's transfer: axfr (saved file deleted first) or ixfr-full (IXFR answered "
                         "with the whole zone, applied to the saved copy)")
    ap.add_argument("--windows", default="first,update", help="comma-separated: first, update")
    ap.add_argument("--quiet", type=float, default=1.0, help="seconds measured before the NOTIFY")
    ap.add_argument("--after", type=float, default=2.0, help="seconds measured after the new serial is served")
    ap.add_argument("--lost-after", type=float, default=2.0, help="an answer later than this is lost")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds the transfer may take")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of rest before a window's setup")
    ap.add_argument("--server-cpu", default="0", help="CPU for smartdns ('' = no pinning)")
    ap.add_argument("--client-cpu", default="1", help="CPU for named and this script ('' = no pinning)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of smartdns, named and this script (below 0 needs root; 0: as started): "
                         "other sessions' busy processes then take less of the servers' CPUs")
    ap.add_argument("--rev", default="HEAD", help="commit to run (a git archive copy under --workdir)")
    ap.add_argument("--smartdns-tree", default="",
                    help="run this source tree instead of --rev (first on PYTHONPATH), e.g. the working tree")
    ap.add_argument("--keep-queries", action="store_true", help="every query's send time and latency in the JSON")
    ap.add_argument("--workdir", default="/tmp/smartdns-stall")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    args.windows = [w for w in args.windows.split(",") if w]
    for w in args.windows:
        if w not in ("first", "update"):
            ap.error("unknown window %r (first, update)" % w)
    args.server_cpu = args.server_cpu or None
    args.nice_cmd = ["nice", "-n", str(args.nice)] if args.nice else []
    args.client_cpu = args.client_cpu or None
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))   # the runs' finally stops the servers
    for tool in ("named", "rndc"):
        if not shutil.which(tool):
            sys.exit("%s not found (apt-get install bind9)" % tool)
    os.makedirs(args.workdir, exist_ok=True)
    args.smartdns_tree = os.path.abspath(args.smartdns_tree) if args.smartdns_tree else archive_tree(args.rev,
                                                                                                    args.workdir)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {int(args.client_cpu)})
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as e:
            sys.exit("--nice %d: %s (run as root, or --nice 0)" % (args.nice, e))
    started = datetime.datetime.now(datetime.timezone.utc)
    python = os.path.join(REPO, ".venv", "bin", "python")
    label = (git_rev(args.smartdns_tree) if not args.smartdns_tree.startswith(args.workdir)
             else os.path.basename(args.smartdns_tree))
    meta = {
        "started": started.isoformat(timespec="seconds"),
        **run_meta("bench/secondary_stall.py", argv, label, args.smartdns_tree, python),
        "records": args.records, "qps": args.qps, "mode": args.mode, "windows": args.windows,
        "pinning": {"smartdns": args.server_cpu, "named and bench": args.client_cpu}, "nice": args.nice,
        "target": "p99 of local answers in the window <= %g ms" % TARGET_P99_MS,
        "window": "from the NOTIFY's send to the first SOA answer with the new serial",
        "percentiles": "linear interpolation between closest ranks, over answered queries; lost counted apart",
    }
    if meta["other_processes_cpu_before"] > 10:
        log("WARNING: other processes are using %.0f%% of a CPU" % meta["other_processes_cpu_before"])
    runs = [run_once(args, i + 1) for i in range(args.runs)]
    medians: dict[str, Any] = {}
    for name in args.windows:
        ok = [r[name] for r in runs if name in r and "p99_ms" in r[name]["window"]]
        if ok:
            medians[name] = {k: statistics.median(m["window"][k] for m in ok) for k in ("p50_ms", "p99_ms", "max_ms")}
            medians[name]["window_s"] = statistics.median(m["window_s"] for m in ok)
            medians[name]["lost"] = sum(m["window"]["lost"] for m in ok)
            medians[name]["pass"] = medians[name]["p99_ms"] <= TARGET_P99_MS
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, started.strftime("%Y%m%d-%H%M%S") + "-stall.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "medians": medians, "runs": runs}, f, indent=2, sort_keys=True)
    interp = meta["interpreter"]
    print()
    print("answers during a %d-record transfer, %s, %s, %d CPUs; %s" % (
        args.records, meta["started"], meta["cpu_model"], meta["cpus"], meta["smartdns"]))
    print("smartdns's Python: %s (PGO %s, LTO %s); %d local q/s; update by %s\n" % (
        interp.get("version", "?").split()[0], interp.get("pgo", "?"), interp.get("lto", "?"), args.qps, args.mode))
    print(table(runs, args))
    for name, m in medians.items():
        print("%s: median p99 %.2f ms (target <= %g ms: %s), lost %d" % (
            name, m["p99_ms"], TARGET_P99_MS, "PASS" if m["pass"] else "FAIL", m["lost"]))
    print("\nresults: %s" % os.path.relpath(path))
    return 0 if medians and all(m["pass"] for m in medians.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
