#!/usr/bin/env python3
"""Fleet propagation bench: how long an RFC 2136 update on a primary takes to reach 5 smartdns
secondaries that follow it by NOTIFY (RFC 1996) and zone transfer (RFC 5936).

Run by hand, never in CI (see bench/README.rst, "Fleet propagation"). Needs the project's venv
(dnspython, Twisted) and BIND ``named``; run it with the venv's interpreter::

    flock /tmp/bench.lock .venv/bin/python bench/fleet.py

One run per primary (``--primaries named,smartdns``): start the primary on a loopback port with
zone ``fleet.test`` (updates and transfers allowed with one TSIG key, NOTIFY to every secondary),
start ``--secondaries`` smartdns processes, each with a ``[[secondary]]`` for ``fleet.test`` from
the primary, and wait until every one answers the zone. Then ``--edits`` times, one after another:
replace ``www.fleet.test A`` with a new address by a signed UPDATE over TCP, take the time at
which the primary's reply is received, and poll every secondary over UDP (one query per
secondary per round, rounds ``--poll-interval`` apart) until each answers the new address. An
edit's propagation time is the latest secondary's: the receive time of its first answer with the
new address minus the receive time of the update's reply. An edit not everywhere within
``--timeout`` seconds is a failure (counted at the timeout in the percentiles).

Prints a Markdown table and writes bench/results/<timestamp>-fleet.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import select
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import Proc, cpu_seconds, foreign_percent, foreign_ticks  # noqa: E402  (bench/run.py)

ZONE = "fleet.test"
NAME = "www." + ZONE + "."
KEY_NAME = "fleet-key"
SECRET = "ZmxlZXQtYmVuY2gtc2VjcmV0LTIwMjYtMTItMDE="    # "fleet-bench-secret-2026-12-01"
KEY = dns.tsig.Key(KEY_NAME, SECRET, "hmac-sha256")
FIRST_ADDRESS = "192.0.2.1"
TARGET_P99 = 1.0
# SOA refresh 3600 s: within a run only NOTIFY makes a secondary refresh.
ZONE_TEXT = """\
$ORIGIN fleet.test.
$TTL 300
@    IN SOA ns1 hostmaster 1 3600 600 864000 60
@    IN NS  ns1
ns1  IN A   192.0.2.53
www  IN A   {address}
"""


def log(*a: Any) -> None:
    print("[fleet]", *a, file=sys.stderr, flush=True)


def address_of(i: int) -> str:
    """The address edit i writes (unique per edit, never FIRST_ADDRESS)."""
    return "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, statistics' 'inclusive')."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------- interpreter and versions

INTERPRETER_PROBE = r"""
import json, sys, sysconfig
flags = sysconfig.get_config_var('PY_CFLAGS_NODIST') or ''
args = sysconfig.get_config_var('CONFIG_ARGS') or ''
print(json.dumps({
    'executable': sys.executable, 'version': sys.version,
    'PY_CFLAGS_NODIST': flags, 'CONFIG_ARGS': args,
    'pgo': '--enable-optimizations' in args or '-fprofile-use' in flags,
    'lto': '--with-lto' in args or '-flto' in flags,
    'smartdns_imported_from': __import__('smartdns').__file__,
}))
"""


def interpreter(python: str, tree: str) -> dict[str, Any]:
    """sys.version and whether ``python`` was built with PGO / LTO (from its sysconfig), and
    which smartdns package it imports with ``tree`` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        out = subprocess.run([python, "-c", INTERPRETER_PROBE], capture_output=True, text=True, env=env,
                             cwd=tree, timeout=30, check=True).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return {"executable": python, "error": str(e)}


def git_rev(tree: str) -> str:
    try:
        return subprocess.run(["git", "-C", tree, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_meta(script: str, argv: list[str], smartdns_label: str, tree: str, python: str) -> dict[str, Any]:
    """What every bench script records about its run (the machine, the smartdns tree and its
    interpreter, BIND), and how busy other processes kept the CPUs over one second first."""
    fo0, t0 = foreign_ticks(), time.monotonic()
    time.sleep(1)
    return {
        "argv": [script] + list(argv),
        "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name")), "?"),
        "smartdns": "%s (%s, first on PYTHONPATH)" % (smartdns_label, tree),
        "interpreter": interpreter(python, tree),
        "bench_interpreter": sys.version,
        "named": named_version(),
        "other_processes_cpu_before": foreign_percent(fo0, foreign_ticks(), time.monotonic() - t0),
    }


def named_version() -> str:
    try:
        return subprocess.run(["named", "-v"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


# ---------------------------------------------------------------- DNS

def ask(port: int, name: str, rdtype: str, timeout: float = 0.5) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return None


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset)


def secondary_toml(tool: str, port: int, key: str, secret: str, zone: str, primary: int) -> str:
    """A smartdns config serving on ``port`` as the secondary of ``zone`` from 127.0.0.1:``primary``
    with TSIG ``key`` (also used by bench/secondary_stall.py)."""
    return """\
# Generated by {tool}
[server]
listen = ["127.0.0.1:{port}"]
control_socket = ""

[forward]
upstreams = []

[zones]
directory = "zones"
secondary_directory = "secondary"

[[tsig]]
name = "{key}"
secret = "{secret}"

[[secondary]]
zone = "{zone}"
primaries = ["127.0.0.1:{primary}"]
key = "{key}"
""".format(tool=tool, port=port, key=key, secret=secret, zone=zone, primary=primary)


def wait_answers(port: int, want: str, seconds: float, proc: Proc | None = None) -> bool:
    """Until the server on ``port`` answers www with ``want`` (or ``proc`` died, or time ran out)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        reply = ask(port, NAME, "A")
        if reply is not None and reply.rcode() == dns.rcode.NOERROR and addresses(reply) == [want]:
            return True
        time.sleep(0.1)
    return False


def send_update(port: int, address: str, client: str) -> tuple[float, float, str]:
    """Replace www's A with ``address`` on the primary; (sent, reply received, rcode text).

    ``dnspython``: a TSIG-signed UPDATE over TCP; the second time is taken right after the
    signed reply was read and checked.  ``nsupdate``: BIND's client as a subprocess (-v: TCP);
    the second time is taken when it exits, a little after the reply came."""
    if client == "nsupdate":
        script = ("server 127.0.0.1 %d\nzone %s\nupdate delete %s A\nupdate add %s 300 A %s\nsend\n"
                  % (port, ZONE, NAME, NAME, address))
        sent = time.monotonic()
        done = subprocess.run(["nsupdate", "-v", "-y", "hmac-sha256:%s:%s" % (KEY_NAME, SECRET)],
                              input=script, capture_output=True, text=True, timeout=30)
        received = time.monotonic()
        return sent, received, "NOERROR" if done.returncode == 0 else (
            "nsupdate exit %d: %s" % (done.returncode, (done.stderr or done.stdout).strip()[:200]))
    update = dns.update.UpdateMessage(ZONE, keyring=KEY)
    update.replace("www", 300, "A", address)
    sent = time.monotonic()
    try:
        reply = dns.query.tcp(update, "127.0.0.1", port=port, timeout=5)
    except (dns.exception.DNSException, OSError) as e:
        return sent, time.monotonic(), "%s: %s" % (type(e).__name__, e)
    received = time.monotonic()
    return sent, received, dns.rcode.to_text(reply.rcode())


class Poller:
    """One connected UDP socket per secondary; a round sends one query to each secondary not yet
    seen with the new data and collects the replies (at most ``round_timeout`` seconds)."""

    def __init__(self, ports: list[int], round_timeout: float = 0.2) -> None:
        self.socks = []
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            self.socks.append(s)
        self.round_timeout = round_timeout

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def drain(self) -> None:
        for s in self.socks:
            while True:
                try:
                    s.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break

    def wait(self, want: str, start: float, deadline: float, interval: float) -> tuple[dict[int, float], int]:
        """{secondary index: seconds from ``start`` to its first answer with ``want``}, and the
        number of rounds."""
        seen: dict[int, float] = {}
        rounds = 0
        self.drain()
        while len(seen) < len(self.socks) and time.monotonic() < deadline:
            rounds += 1
            waiting: dict[socket.socket, tuple[int, int]] = {}
            for i, s in enumerate(self.socks):
                if i in seen:
                    continue
                q = dns.message.make_query(NAME, "A")
                try:
                    s.send(q.to_wire())
                except OSError:
                    continue
                waiting[s] = (i, q.id)
            end = min(time.monotonic() + self.round_timeout, deadline)
            while waiting:
                left = end - time.monotonic()
                if left <= 0:
                    break
                readable, _, _ = select.select(list(waiting), [], [], left)
                for s in readable:
                    try:
                        data = s.recv(65535)
                    except (BlockingIOError, ConnectionRefusedError):
                        continue
                    got = time.monotonic()
                    i, qid = waiting[s]
                    try:
                        reply = dns.message.from_wire(data)
                    except dns.exception.DNSException:
                        continue
                    if reply.id != qid:
                        continue        # a late reply to an earlier round
                    del waiting[s]
                    if reply.rcode() == dns.rcode.NOERROR and addresses(reply) == [want]:
                        seen[i] = got - start
            if len(seen) < len(self.socks):
                time.sleep(interval)
        return seen, rounds


# ---------------------------------------------------------------- servers

class Fleet:
    """The primary and the secondaries of one run, in a fresh directory under --workdir."""

    def __init__(self, args: argparse.Namespace, primary: str) -> None:
        self.args = args
        self.kind = primary
        os.makedirs(args.workdir, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=primary + "-", dir=args.workdir)
        self.primary_port = free_port()
        self.ports = [free_port() for _ in range(args.secondaries)]
        self.procs: list[Proc] = []
        self.primary: Proc | None = None
        self.secondary_procs: list[Proc] = []
        self.primary_cmd = ""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Run the working tree (or --smartdns-tree), not whatever copy is installed in the venv.
        tree = self.args.smartdns_tree
        env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def smartdns(self, name: str, config: str) -> Proc:
        cmd = [os.path.join(REPO, ".venv", "bin", "twistd"), "-n", "--pidfile=", "smartdns", "--config", config]
        p = Proc(name, cmd, os.path.join(self.dir, name + ".log"), env=self.env(), cwd=self.args.smartdns_tree)
        self.procs.append(p)
        return p

    def write(self, rel: str, text: str) -> str:
        path = os.path.join(self.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_primary(self) -> None:
        if self.kind == "named":
            self.start_named()
        else:
            self.start_smartdns_primary()
        assert self.primary is not None
        if not wait_answers(self.primary_port, FIRST_ADDRESS, 30, self.primary):
            raise RuntimeError("primary %s did not answer:\n%s" % (self.kind, self.primary.tail()))

    def start_named(self) -> None:
        pdir = os.path.join(self.dir, "primary")
        self.write("primary/%s.zone" % ZONE, ZONE_TEXT.format(address=FIRST_ADDRESS))
        notify = "".join("127.0.0.1 port %d; " % p for p in self.ports)
        delay = "" if self.args.notify_delay == "default" else "notify-delay %s; " % self.args.notify_delay
        if self.args.notify_rate != "default":
            delay += "notify-rate %s; " % self.args.notify_rate
        conf = self.write("primary/named.conf", """\
# Generated by bench/fleet.py
options {{
    directory "{dir}"; pid-file none; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no;
    notify explicit; also-notify {{ {notify}}}; {delay}
}};
controls {{ }};
key "{key}" {{ algorithm hmac-sha256; secret "{secret}"; }};
server 127.0.0.1 {{ keys {{ {key}; }}; }};      # NOTIFY to the secondaries is signed
zone "{zone}" {{
    type primary; file "{zone}.zone";
    allow-update {{ key {key}; }}; allow-transfer {{ key {key}; }};
}};
""".format(dir=pdir, port=self.primary_port, notify=notify, delay=delay, key=KEY_NAME, secret=SECRET, zone=ZONE))
        cmd = ["named", "-g", "-4", "-c", conf]
        self.primary_cmd = " ".join(shlex.quote(c) for c in cmd)
        self.primary = Proc("named", cmd, os.path.join(self.dir, "named.log"), cwd=pdir)
        self.procs.append(self.primary)

    def start_smartdns_primary(self) -> None:
        missing = smartdns_primary_missing(self.args.smartdns_tree)
        if missing:
            raise RuntimeError(missing)
        self.write("primary/zones/%s.zone" % ZONE, ZONE_TEXT.format(address=FIRST_ADDRESS))
        notify = ", ".join('"127.0.0.1:%d"' % p for p in self.ports)
        conf = self.write("primary/smartdns.toml", """\
# Generated by bench/fleet.py
[server]
listen = ["127.0.0.1:{port}"]
control_socket = ""

[forward]
upstreams = []

[zones]
directory = "zones"

[[tsig]]
name = "{key}"
secret = "{secret}"

[[transfer]]
key = "{key}"
also_notify = [{notify}]

[[update]]
zone = "{zone}"
key = "{key}"
""".format(port=self.primary_port, key=KEY_NAME, secret=SECRET, notify=notify, zone=ZONE))
        self.primary = self.smartdns("smartdns-primary", conf)
        self.primary_cmd = " ".join(shlex.quote(c) for c in self.primary.cmd)

    def start_secondaries(self) -> None:
        for k, port in enumerate(self.ports):
            name = "secondary%d" % (k + 1)
            self.write(name + "/zones/.keep", "")
            self.write(name + "/secondary/.keep", "")
            conf = self.write(name + "/smartdns.toml",
                              secondary_toml("bench/fleet.py", port, KEY_NAME, SECRET, ZONE, self.primary_port))
            self.secondary_procs.append(self.smartdns(name, conf))
        for p, port in zip(self.secondary_procs, self.ports):
            if not wait_answers(port, FIRST_ADDRESS, 60, p):
                raise RuntimeError("%s (port %d) did not answer the first transfer:\n%s" % (p.name, port, p.tail()))

    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.procs}

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def smartdns_primary_missing(tree: str) -> str:
    """'' when the tree's smartdns can be a primary for the bench (RFC 2136 UPDATE with
    ``[[update]]``, NOTIFY to ``[[transfer]] also_notify``), else what is missing."""
    missing = []
    if not os.path.exists(os.path.join(tree, "smartdns", "update.py")):
        missing.append("RFC 2136 UPDATE ([[update]] tables, smartdns/update.py)")
    try:
        with open(os.path.join(tree, "smartdns", "config.py"), encoding="utf-8") as f:
            has_notify = "also_notify" in f.read()
    except OSError:
        has_notify = False
    if not has_notify:
        missing.append("NOTIFY to [[transfer]] also_notify addresses")
    if not missing:
        return ""
    return "smartdns as the primary needs features this tree does not have: " + "; ".join(missing)


# ---------------------------------------------------------------- one run

def run_primary(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    fleet = Fleet(args, kind)
    out: dict[str, Any] = {"primary": kind, "workdir": fleet.dir, "secondaries": args.secondaries,
                           "ports": {"primary": fleet.primary_port, "secondaries": fleet.ports}}
    if kind == "named":
        out["named_notify_delay"] = args.notify_delay
        out["named_notify_rate"] = args.notify_rate
    poller = None
    try:
        t0 = time.monotonic()
        fleet.start_primary()
        out["primary_cmd"] = fleet.primary_cmd
        fleet.start_secondaries()
        out["secondary_cmd"] = " ".join(shlex.quote(c) for c in fleet.secondary_procs[0].cmd)
        out["start_s"] = round(time.monotonic() - t0, 2)
        log("%s: primary on %d, secondaries on %s, all serving after %.1f s"
            % (kind, fleet.primary_port, ",".join(map(str, fleet.ports)), out["start_s"]))
        poller = Poller(fleet.ports)
        edits: list[dict[str, Any]] = []
        cpu0 = {name: cpu_seconds(pid) for name, pid in fleet.pids().items()}
        fo0, w0 = foreign_ticks(), time.monotonic()
        for i in range(args.warmup + args.edits):
            address = address_of(i + 1)
            sent, received, rcode = send_update(fleet.primary_port, address, args.client)
            edit: dict[str, Any] = {"edit": i + 1 - args.warmup, "warmup": i < args.warmup, "address": address,
                                    "update_rtt_ms": round((received - sent) * 1000, 2), "rcode": rcode}
            if rcode != "NOERROR":
                edit.update(ok=False, error="update answered " + rcode)
                log("edit %d: update failed: %s" % (i + 1, rcode))
                edits.append(edit)
                continue
            seen, rounds = poller.wait(address, received, received + args.timeout, args.poll_interval)
            edit["rounds"] = rounds
            edit["per_secondary_ms"] = [round(seen[k] * 1000, 2) if k in seen else None
                                        for k in range(args.secondaries)]
            edit["ok"] = len(seen) == args.secondaries
            edit["propagation_ms"] = round(max(seen.values()) * 1000, 2) if edit["ok"] else None
            if not edit["ok"]:
                edit["error"] = "not on %s after %g s" % (
                    ",".join("secondary%d" % (k + 1) for k in range(args.secondaries) if k not in seen), args.timeout)
                log("edit %d: %s" % (i + 1, edit["error"]))
            edits.append(edit)
        wall = time.monotonic() - w0
        out["other_processes_cpu_percent"] = foreign_percent(fo0, foreign_ticks(), wall)
        out["cpu_s"] = {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in fleet.pids().items()}
        out["edits_wall_s"] = round(wall, 2)
        out["edits"] = edits
        out["summary"] = summarize(edits, args)
        for p in fleet.procs:
            if p.poll() is not None:
                out.setdefault("died", []).append(p.name)
    except Exception as e:  # noqa: BLE001  (the report says what went wrong, the other primary still runs)
        out["error"] = str(e)
        log("%s: %s" % (kind, e))
    finally:
        if poller is not None:
            poller.close()
        fleet.stop()
    return out


def summarize(edits: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    measured = [e for e in edits if not e["warmup"]]
    times = [e["propagation_ms"] / 1000 if e.get("ok") else args.timeout for e in measured]
    rtts = [e["update_rtt_ms"] for e in measured]
    if not times:
        return {"edits": 0}
    # From the UPDATE's send instead: the primary's own work before it replies counts too.
    from_sent = [t + rtt / 1000 for t, rtt in zip(times, rtts)]
    p99 = percentile(times, 0.99)
    return {
        "edits": len(measured), "failed": sum(1 for e in measured if not e.get("ok")),
        "p50_ms": round(percentile(times, 0.50) * 1000, 1), "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(max(times) * 1000, 1), "mean_ms": round(statistics.mean(times) * 1000, 1),
        "target_p99_ms": TARGET_P99 * 1000, "pass": p99 <= TARGET_P99,
        "update_rtt_p50_ms": round(percentile(rtts, 0.5), 2),
        "from_sent_p50_ms": round(percentile(from_sent, 0.50) * 1000, 1),
        "from_sent_p99_ms": round(percentile(from_sent, 0.99) * 1000, 1),
    }


# ---------------------------------------------------------------- output

def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = ["| primary | edits | failed | p50 ms | p99 ms | max ms | p99 <= 1 s | update RTT p50 ms "
            "| from send p50 / p99 ms | notes |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        name = r["primary"] + ("" if r["primary"] != "named" else " (notify-delay %s, notify-rate %s)" % (
            r["named_notify_delay"], r["named_notify_rate"]))
        if "summary" not in r:
            rows.append("| %s | - | - | - | - | - | - | - | - | did not run: %s |" % (name, r.get("error", "?")))
            continue
        s = r["summary"]
        notes = []
        if r.get("other_processes_cpu_percent", 0) > 10:
            notes.append("other processes used %.0f%% CPU" % r["other_processes_cpu_percent"])
        if r.get("died"):
            notes.append("died: " + ",".join(r["died"]))
        rows.append("| %s | %d | %d | %.1f | %.1f | %.1f | %s | %.2f | %.1f / %.1f | %s |" % (
            name, s["edits"], s["failed"], s["p50_ms"], s["p99_ms"], s["max_ms"],
            "PASS" if s["pass"] else "FAIL", s["update_rtt_p50_ms"], s["from_sent_p50_ms"],
            s["from_sent_p99_ms"], "; ".join(notes)))
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--primaries", default="named,smartdns",
                    help="comma-separated, in order: named (BIND), smartdns")
    ap.add_argument("--secondaries", type=int, default=5, help="smartdns secondaries")
    ap.add_argument("--edits", type=int, default=50, help="measured edits per primary")
    ap.add_argument("--warmup", type=int, default=1,
                    help="edits made and propagated first, not counted (in the JSON as warmup)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds an edit may take to reach every secondary before it counts as failed")
    ap.add_argument("--poll-interval", type=float, default=0.005, help="seconds between polling rounds")
    ap.add_argument("--notify-delay", default="0",
                    help="BIND's notify-delay for the named primary, seconds, or 'default' (BIND's, 5 s)")
    ap.add_argument("--notify-rate", default="1000",
                    help="BIND's notify-rate for the named primary, NOTIFY messages per second, or "
                         "'default' (BIND's, 20: one NOTIFY at once, the rest 500 ms later)")
    ap.add_argument("--client", choices=("dnspython", "nsupdate"), default="dnspython",
                    help="how updates are sent: dnspython (signed UPDATE over TCP, timed at the reply) "
                         "or nsupdate -v (timed at its exit)")
    ap.add_argument("--smartdns-tree", default=REPO,
                    help="source tree smartdns runs from (first on PYTHONPATH), e.g. a git worktree or "
                         "'git checkout-index -a --prefix=DIR/' copy of a commit")
    ap.add_argument("--workdir", default="/tmp/smartdns-fleet",
                    help="configs, zones and logs of each run go in a fresh directory under it")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    args.smartdns_tree = os.path.abspath(args.smartdns_tree)
    args.primaries = [p for p in args.primaries.split(",") if p]
    for p in args.primaries:
        if p not in ("named", "smartdns"):
            ap.error("unknown primary %r (named, smartdns)" % p)
    for option in ("notify_delay", "notify_rate"):
        value = getattr(args, option)
        if value != "default" and not value.isdigit():
            ap.error("--%s: a whole number or 'default', not %r" % (option.replace("_", "-"), value))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if "named" in args.primaries and not shutil.which("named"):
        sys.exit("named not found (apt-get install bind9)")
    if args.client == "nsupdate" and not shutil.which("nsupdate"):
        sys.exit("nsupdate not found (apt-get install bind9-dnsutils)")
    started = datetime.datetime.now(datetime.timezone.utc)
    python = os.path.join(REPO, ".venv", "bin", "python")
    meta = {
        "started": started.isoformat(timespec="seconds"),
        **run_meta("bench/fleet.py", argv, git_rev(args.smartdns_tree), args.smartdns_tree, python),
        "client": args.client, "poll_interval_s": args.poll_interval, "timeout_s": args.timeout,
        "warmup": args.warmup, "zone": ZONE, "edited": NAME + " A (replaced)",
        "percentiles": "linear interpolation between closest ranks; a failed edit counts as the timeout",
    }
    if meta["other_processes_cpu_before"] > 10:
        log("WARNING: other processes are using %.0f%% of a CPU: propagation times include waiting for it"
            % meta["other_processes_cpu_before"])
    runs = [run_primary(args, kind) for kind in args.primaries]
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, started.strftime("%Y%m%d-%H%M%S") + "-fleet.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=2, sort_keys=True)
    interp = meta["interpreter"]
    print()
    print("smartdns fleet propagation, %s, %s, %d CPUs; %d smartdns secondaries; %s" % (
        meta["started"], meta["cpu_model"], meta["cpus"], args.secondaries, meta["smartdns"]))
    print("servers' Python: %s (PGO %s, LTO %s); updates by %s, polled every %g ms, timeout %g s\n" % (
        interp.get("version", "?").split()[0], interp.get("pgo", "?"), interp.get("lto", "?"),
        args.client, args.poll_interval * 1000, args.timeout))
    print(table(runs, args))
    print("\nresults: %s" % os.path.relpath(path))
    return 0 if all(r.get("summary", {}).get("pass") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
