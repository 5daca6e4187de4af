#!/usr/bin/env python3
"""smartdns benchmark: smartdns vs stock Twisted Names, dnsmasq and unbound.

Run by hand, never in CI (see bench/README.rst). Standard library only; needs
dnsperf, nsd, dnsmasq and unbound on PATH (bench/run.sh installs them).

One run: generate the data (once, cached in --workdir), start NSD on loopback as
the upstream authoritative server for a large synthetic zone, then for every
server in turn: start it pinned to one CPU, and for every job (local, hit, miss)
measure with dnsperf pinned to the other CPU:

  throughput  dnsperf unthrottled (closed loop, -q outstanding) for --duration s:
              qps, mean latency at saturation, lost queries
  latency     dnsperf open loop at --latency-qps for --latency-duration s, every
              answer's latency logged (-v): mean and p99, lost queries

Then print a table (Markdown) and write bench/results/<timestamp>.json.
--memory instead fills smartdns's cache with 1,000,000 entries and reports RSS.
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

ALL_SERVERS = ["smartdns", "twisted", "dnsmasq", "unbound", "named", "nsd"]
ALL_JOBS = ["local", "hit", "miss", "local-wide"]
WIDE_JOB = "local-wide"

UPSTREAM_ZONE = "bench.test"
LOCAL_ZONE = "local.test"
# Lines for smartdns's local job. The bench client (127.0.0.1) falls in "lo" by the
# longest prefix (127.0.0.1/32 beats 127.0.0.0/8 in "loopback"), and "lo" has an
# overlay for local.test, so every local answer goes through the line lookup and
# the overlay.
LINES = {
    "office": ["10.0.0.0/8", "192.168.1.0/24", "2001:db8:1::/48"],
    "vpn": ["172.16.0.0/12", "100.64.0.0/10", "fd00::/8"],
    "dc": ["192.168.0.0/16", "198.18.0.0/15"],
    "loopback": ["127.0.0.0/8", "::1/128"],
    "lo": ["127.0.0.1/32"],
}
OVERLAY_LINE = "lo"
# The local-wide job: a large zone (n0..n<N-1>.wide.test) and four lines by client
# address, each with an overlay for a tenth of the names' tenth (every 10th name is
# overridden for exactly one line: name i, i % 10 == 0, in line (i // 10) % 4).
# dnsperf sends from one address per process (-a), so the job runs one dnsperf per
# line in parallel, each from an address in its line, over its own share of the names.
WIDE_ZONE = "wide.test"
WIDE_LINES = {"wide%d" % k: ["127.0.%d.0/24" % (k + 1)] for k in range(4)}
WIDE_SOURCES = ["127.0.%d.1" % (k + 1) for k in range(4)]
# A name outside the query files whose answer differs in every line: asked from every
# source address before each run, it shows which servers really answer by line.
WIDE_CHECK = "check"
WIDE_CHECK_BASE = "192.0.2.100"
# Percent of a CPU that other processes may use during a run before it counts as disturbed.
DISTURBED = 10


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data generation

def ip_of(i, first_octet):
    return "%d.%d.%d.%d" % (first_octet, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text)


class Data:
    """Zone and query files, generated once and reused while the sizes are unchanged."""

    def __init__(self, args):
        self.dir = os.path.join(args.workdir, "data")
        os.makedirs(self.dir, exist_ok=True)
        self.zone_size = args.zone_size
        self.local_names = args.local_names
        self.hit_names = args.hit_names
        n_miss = self.zone_size - self.hit_names
        # The miss throughput file gets 3/4 of the names not used by the hit job, the
        # miss latency file the rest: no name is asked twice of one server process.
        self.miss_tput_count = n_miss * 3 // 4
        self.miss_lat_count = n_miss - self.miss_tput_count
        self.upstream_zone = os.path.join(self.dir, UPSTREAM_ZONE + ".zone")
        self.q = {
            "local": os.path.join(self.dir, "q-local.txt"),
            "hit": os.path.join(self.dir, "q-hit.txt"),
            "miss": os.path.join(self.dir, "q-miss.txt"),
            "miss-lat": os.path.join(self.dir, "q-miss-lat.txt"),
        }
        self.q_count = {"local": self.local_names, "hit": self.hit_names,
                        "miss": self.miss_tput_count, "miss-lat": self.miss_lat_count}
        self.wide_names = args.wide_names
        self.wide_sources = WIDE_SOURCES[:args.wide_sources]
        self.wide_zone = os.path.join(self.dir, WIDE_ZONE + ".zone")
        # One query file per source address: the shuffled names dealt out in turn.
        self.q_wide = [os.path.join(self.dir, "q-wide-%d.txt" % k) for k in range(len(self.wide_sources))]

    def generate(self):
        stamp = os.path.join(self.dir, "sizes")
        want = "%d %d %d v1\n" % (self.zone_size, self.local_names, self.hit_names)
        if os.path.exists(stamp) and open(stamp).read() == want and all(
                os.path.exists(p) for p in self.q.values()):
            log("data: reusing", self.dir)
            return
        log("data: generating %d-name upstream zone and query files in %s" % (self.zone_size, self.dir))
        t0 = time.time()
        with open(self.upstream_zone, "w") as f:
            f.write("$ORIGIN %s.\n$TTL 86400\n" % UPSTREAM_ZONE)
            f.write("@ IN SOA ns1 hostmaster 1 3600 600 864000 86400\n@ IN NS ns1\nns1 IN A 127.0.0.1\n")
            w = f.write
            for i in range(self.zone_size):
                w("h%d IN A %s\n" % (i, ip_of(i, 10)))
        with open(self.q["local"], "w") as f:
            for i in range(self.local_names):
                f.write("h%d.%s A\n" % (i, LOCAL_ZONE))
        with open(self.q["hit"], "w") as f:
            for i in range(self.hit_names):
                f.write("h%d.%s A\n" % (i, UPSTREAM_ZONE))
        # Shuffled so that consecutive queries do not hit neighbouring names.
        rest = list(range(self.hit_names, self.zone_size))
        random.Random(6).shuffle(rest)
        with open(self.q["miss"], "w") as f:
            f.writelines("h%d.%s A\n" % (i, UPSTREAM_ZONE) for i in rest[:self.miss_tput_count])
        with open(self.q["miss-lat"], "w") as f:
            f.writelines("h%d.%s A\n" % (i, UPSTREAM_ZONE) for i in rest[self.miss_tput_count:])
        with open(stamp, "w") as f:
            f.write(want)
        log("data: done in %.1fs" % (time.time() - t0))

    def generate_wide(self):
        """The local-wide job's base zone and query files (its own stamp: made once)."""
        stamp = os.path.join(self.dir, "wide-sizes")
        want = "%d %d v1\n" % (self.wide_names, len(self.wide_sources))
        if os.path.exists(stamp) and open(stamp).read() == want and all(
                os.path.exists(p) for p in self.q_wide + [self.wide_zone]):
            return
        log("data: generating %d-name %s zone and %d query files" % (self.wide_names, WIDE_ZONE, len(self.q_wide)))
        with open(self.wide_zone, "w") as f:
            f.write(self.wide_head())
            f.writelines("%s IN A %s\n" % r for r in self.wide_records())
        names = list(range(self.wide_names))
        random.Random(11).shuffle(names)
        files = [open(p, "w") for p in self.q_wide]
        for j, i in enumerate(names):
            files[j % len(files)].write("n%d.%s A\n" % (i, WIDE_ZONE))
        for f in files:
            f.close()
        with open(stamp, "w") as f:
            f.write(want)

    @staticmethod
    def wide_head():
        return ("$ORIGIN %s.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 3600 600 864000 3600\n"
                "@ IN NS ns1\nns1 IN A 127.0.0.1\n" % WIDE_ZONE)

    def wide_records(self):
        """(label, address) of the base zone, the check name included."""
        out = [("n%d" % i, ip_of(i, 10)) for i in range(self.wide_names)]
        out.append((WIDE_CHECK, WIDE_CHECK_BASE))
        return out

    def wide_overlay(self, k):
        """(label, address) pairs line k overrides: every 10th name, dealt out over the lines."""
        n = len(WIDE_LINES)
        out = [("n%d" % i, ip_of(i, 20 + k)) for i in range(0, self.wide_names, 10) if (i // 10) % n == k]
        out.append((WIDE_CHECK, "192.0.2.%d" % (101 + k)))
        return out

    def wide_view_records(self, k):
        """The base zone with line k's overlay applied (for servers that take whole views)."""
        over = dict(self.wide_overlay(k))
        return [(label, over.get(label, ip)) for label, ip in self.wide_records()]

    def local_records(self, overlay=False):
        """(label, address) pairs of the local zone; the overlay answers differently."""
        return [("h%d" % i, ip_of(i, 198 if overlay else 192)) for i in range(self.local_names)]


# ---------------------------------------------------------------- DNS probe

def probe(port, name, timeout=0.5, host="127.0.0.1"):
    """One UDP A query; returns (rcode, ancount) or None on timeout."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (host, port))
        while True:
            data = s.recv(4096)
            rid, flags, _, an, _, _ = struct.unpack(">HHHHHH", data[:12])
            if rid == qid:
                return flags & 0xF, an
    except (socket.timeout, ConnectionRefusedError, OSError):
        return None
    finally:
        s.close()


def probe_a(port, name, src=None, timeout=1.0):
    """One UDP A query from source address src; returns (rcode, [A addresses]) or None."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.sendto(q, ("127.0.0.1", port))
        while True:
            data = s.recv(4096)
            if struct.unpack(">H", data[:2])[0] == qid:
                break
    except (socket.timeout, ConnectionRefusedError, OSError):
        return None
    finally:
        s.close()
    flags, qd, an = struct.unpack(">HHH", data[2:8])

    def skip_name(i):
        while True:
            n = data[i]
            if n >= 0xC0:
                return i + 2
            if n == 0:
                return i + 1
            i += n + 1

    i = 12
    for _ in range(qd):
        i = skip_name(i) + 4
    addrs = []
    for _ in range(an):
        i = skip_name(i)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(data[i:i + 4]))
        i += rdlen
    return flags & 0xF, addrs


def wait_ready(port, name, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        r = probe(port, name)
        if r is not None and r[0] == 0 and r[1] > 0:
            return True
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------- processes

class Proc:
    def __init__(self, name, cmd, logpath, cpu=None, env=None, cwd=None):
        self.name = name
        self.cmd = cmd
        full = (["taskset", "-c", str(cpu)] if cpu is not None else []) + cmd
        self.logpath = logpath
        self.logf = open(logpath, "wb")
        log("start %s: %s" % (name, " ".join(shlex.quote(c) for c in full)))
        self.p = subprocess.Popen(full, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                  start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def poll(self):
        return self.p.poll()

    def stop(self):
        if self.p.poll() is None:
            # The process group is our own (start_new_session): it holds the server
            # and the children it forked (NSD's workers), nothing else.
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.logf.close()

    def tail(self, n=20):
        try:
            with open(self.logpath, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def tree_pids(root):
    """root and all its descendants, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kb(root):
    """Summed VmRSS (kB) of a process tree; the taskset wrapper execs, so root is the server."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(root):
    """utime+stime (s) of a process tree, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def foreign_ticks():
    """{pid: utime+stime} of every user process that is not this bench's.

    Processes that start and end between two samples are missed (counting the
    children's time that their parents collect would over-count instead)."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                stats[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                pass
    ours = set(tree_pids(os.getpid()))
    return {pid: t for pid, (ppid, t) in stats.items()
            if pid not in ours and pid != 2 and ppid != 2}


def foreign_percent(before, after, wall):
    """CPU used by other processes (percent of one CPU) between two foreign_ticks()."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    return round(100 * ticks / os.sysconf("SC_CLK_TCK") / wall, 1)


def cpu_times():
    """{cpuN: (busy, steal, total)} in ticks, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v]
                idle = v[3] + v[4]
                steal = v[7] if len(v) > 7 else 0
                out[name] = (sum(v[:8]) - idle - steal, steal, sum(v[:8]))
    return out


def cmd_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else ""
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


PYTHON_INFO = r"""
import json, platform, sys, sysconfig
args = sysconfig.get_config_var("CONFIG_ARGS") or ""
print(json.dumps({"executable": sys.executable, "implementation": platform.python_implementation(),
                  "version": platform.python_version(), "config_args": args,
                  "pgo": "--enable-optimizations" in args, "lto": "--with-lto" in args}))
"""


def smartdns_python(args):
    """The interpreter that runs smartdns: the venv's, or the one --smartdns-cmd names (its first
    word, or the #! line of that script); None when it cannot be told."""
    if not args.smartdns_cmd:
        return os.path.join(REPO, ".venv", "bin", "python")
    first = shlex.split(args.smartdns_cmd)[0]
    path = shutil.which(first) or first
    if os.path.basename(path).startswith("python"):
        return path
    try:
        with open(path, "rb") as f:
            line = f.readline(200)
    except OSError:
        return None
    words = line[2:].decode("utf-8", "replace").split() if line.startswith(b"#!") else []
    if words and os.path.basename(words[0]) == "env":
        words = words[1:]
    return words[0] if words and "python" in os.path.basename(words[0]) else None


def python_info(python):
    """Version of ``python`` and whether it was configured with PGO (--enable-optimizations) and
    LTO (--with-lto), asked of that interpreter (sysconfig's CONFIG_ARGS; a distribution's build,
    e.g. Debian's, may use both without saying so there)."""
    if python is None:
        return {"executable": None, "version": "unknown"}
    try:
        out = subprocess.run([python, "-c", PYTHON_INFO], capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return {"executable": python, "version": "unknown (%s)" % e}


def python_line(info):
    """One line for the report: 'CPython 3.11.7 (/path; --enable-optimizations no, --with-lto no)'."""
    if "pgo" not in info:
        return "%s (%s)" % (info.get("version"), info.get("executable"))
    yes = lambda flag: "yes" if flag else "no"
    return "%s %s (%s; configured with --enable-optimizations: %s, --with-lto: %s)" % (
        info["implementation"], info["version"], info["executable"], yes(info["pgo"]), yes(info["lto"]))


# ---------------------------------------------------------------- upstream (NSD)

def nsd_conf(port, zonesdir, d, zone, zonefile, minimal=False):
    """An nsd.conf serving ``zone`` from ``zonefile`` on 127.0.0.1:``port``, one server process,
    its state and log in ``d`` (the upstream; the local-wide peer adds minimal responses)."""
    return """\
server:
  ip-address: 127.0.0.1
  port: {port}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{zonesdir}"
  database: ""
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  pidfile: ""
  logfile: "{d}/nsd.log"
  verbosity: 1
  hide-version: yes
{minimal}remote-control:
  control-enable: no
zone:
  name: {zone}
  zonefile: {zonefile}
""".format(port=port, zonesdir=zonesdir, d=d, zone=zone, zonefile=os.path.basename(zonefile),
           minimal="  minimal-responses: yes\n" if minimal else "")


def start_upstream(args, data):
    d = os.path.join(args.workdir, "nsd")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nsd.conf")
    write_if_changed(conf, nsd_conf(args.upstream_port, data.dir, d, UPSTREAM_ZONE, data.upstream_zone))
    if probe(args.upstream_port, "ns1." + UPSTREAM_ZONE) is not None:
        sys.exit("port %d already answers DNS: stop that server or pass --upstream-port" % args.upstream_port)
    p = Proc("nsd", ["nsd", "-d", "-c", conf], os.path.join(args.logdir, "nsd.log"),
             cpu=args.upstream_cpu)
    last = "h%d.%s" % (data.zone_size - 1, UPSTREAM_ZONE)
    if not wait_ready(args.upstream_port, last, 120, p):
        p.stop()
        sys.exit("nsd did not come up:\n" + p.tail())
    log("nsd up, serving %d names of %s" % (data.zone_size, UPSTREAM_ZONE))
    return p


# ---------------------------------------------------------------- servers under test

class Server:
    name = "?"
    dirname = None            # defaults to name
    jobs = ("local", "hit", "miss", WIDE_JOB)
    by_line = False           # local-wide: answers differ by client line

    def __init__(self, args, data):
        self.args = args
        self.data = data
        self.dir = os.path.join(args.workdir, self.dirname or self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = args.port
        self.upstream = "127.0.0.1:%d" % args.upstream_port

    def prepare(self, max_entries, wide=False):
        """Write config (wide: the local-wide job's); return (cmd, env, cwd)."""
        raise NotImplementedError

    def version(self):
        return ""

    def notes(self):
        return ""

    def wide_notes(self):
        return ""


class SmartDNS(Server):
    name = "smartdns"
    by_line = True

    def tree(self):
        return self.args.smartdns_tree or REPO

    def prepare(self, max_entries, wide=False):
        if wide:
            zones_name = "wide-zones"
            zones = os.path.join(self.dir, zones_name)
            os.makedirs(zones, exist_ok=True)
            write_if_changed(os.path.join(zones, WIDE_ZONE + ".zone"),
                             self.data.wide_head()
                             + "".join("%s IN A %s\n" % r for r in self.data.wide_records()))
            for k, line in enumerate(WIDE_LINES):
                os.makedirs(os.path.join(zones, line), exist_ok=True)
                write_if_changed(os.path.join(zones, line, WIDE_ZONE + ".zone"),
                                 "$ORIGIN %s.\n$TTL 3600\n" % WIDE_ZONE
                                 + "".join("%s IN A %s\n" % r for r in self.data.wide_overlay(k)))
            all_lines = dict(LINES, **WIDE_LINES)
            conf = os.path.join(self.dir, "smartdns-wide.toml")
        else:
            zones_name = "zones"
            zones = os.path.join(self.dir, zones_name)
            overlay = os.path.join(zones, OVERLAY_LINE)
            os.makedirs(overlay, exist_ok=True)
            head = ("$ORIGIN %s.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 3600 600 864000 3600\n"
                    "@ IN NS ns1\nns1 IN A 127.0.0.1\n" % LOCAL_ZONE)
            write_if_changed(os.path.join(zones, LOCAL_ZONE + ".zone"),
                             head + "".join("%s IN A %s\n" % r for r in self.data.local_records()))
            # The overlay holds only what differs for the line: here every h<N> A RRset.
            write_if_changed(os.path.join(overlay, LOCAL_ZONE + ".zone"),
                             "$ORIGIN %s.\n$TTL 3600\n" % LOCAL_ZONE
                             + "".join("%s IN A %s\n" % r for r in self.data.local_records(True)))
            all_lines = LINES
            conf = os.path.join(self.dir, "smartdns.toml")
        lines = "".join('%s = [%s]\n' % (k, ", ".join('"%s"' % c for c in v)) for k, v in all_lines.items())
        write_if_changed(conf, """\
# Generated by bench/run.py
[server]
listen = ["127.0.0.1:{port}"]

[zones]
directory = "{zones}"

[lines]
{lines}
[forward]
upstreams = ["{up}"]

[cache]
max_entries = {max_entries}
""".format(port=self.port, zones=zones_name, lines=lines, up=self.upstream, max_entries=max_entries))
        if self.args.smartdns_cmd:
            template = self.args.smartdns_cmd
        elif self.args.smartdns_tree:
            # The tree's own twistd plugin, not the one installed in the venv.
            template = (shlex.quote(os.path.join(REPO, ".venv", "bin", "python")) + " "
                        + shlex.quote(os.path.join(HERE, "twistd_tree.py"))
                        + " -n --pidfile= smartdns --config {config}")
        else:
            template = (shlex.quote(os.path.join(REPO, ".venv", "bin", "twistd"))
                        + " -n --pidfile= smartdns --config {config}")
        cmd = [c.replace("{config}", conf).replace("{port}", str(self.port))
               for c in shlex.split(template)]
        env = dict(os.environ)
        # Run the working tree (or --smartdns-tree), not whatever copy is installed in the venv.
        env["PYTHONPATH"] = self.tree() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return cmd, env, self.tree()

    def version(self):
        try:
            rev = subprocess.run(["git", "-C", self.tree(), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True).stdout.strip()
        except OSError:
            rev = "?"
        # Which package the server's interpreter imports with this environment.
        py = os.path.join(REPO, ".venv", "bin", "python")
        env = dict(os.environ)
        env["PYTHONPATH"] = self.tree() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            where = subprocess.run([py, "-c", "import smartdns; print(smartdns.__file__)"], env=env,
                                   cwd=self.tree(), capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            where = "?"
        return "smartdns %s (%s; imports %s)" % (rev, self.tree(), where)

    def notes(self):
        return ("lines %s; local answers come from line %r's overlay; cache max_entries=%d"
                % (",".join(LINES), OVERLAY_LINE, self.args.cache_entries))

    def wide_notes(self):
        return ("lines %s + %s; zones/<line>/%s.zone overlays" % (",".join(LINES), ",".join(WIDE_LINES), WIDE_ZONE))


class StockTwisted(Server):
    name = "twisted"
    jobs = ("local", "hit", "miss")  # a 100,000-name pyzone would take minutes to load

    def prepare(self, max_entries, wide=False):
        pyzone = os.path.join(self.dir, LOCAL_ZONE + ".pyzone")
        body = ["zone = [\n",
                "    SOA(%r, mname='ns1.%s', rname='hostmaster.%s', serial=1, refresh=3600,"
                " retry=600, expire=864000, minimum=3600, ttl=3600),\n" % (LOCAL_ZONE, LOCAL_ZONE, LOCAL_ZONE),
                "    NS(%r, 'ns1.%s'),\n" % (LOCAL_ZONE, LOCAL_ZONE)]
        body += ["    A('%s.%s', '%s', ttl=3600),\n" % (label, LOCAL_ZONE, ip)
                 for label, ip in self.data.local_records()]
        body.append("]\n")
        write_if_changed(pyzone, "".join(body))
        env = dict(os.environ, SMARTDNS_BENCH_PORT=str(self.port),
                   SMARTDNS_BENCH_UPSTREAM=self.upstream, SMARTDNS_BENCH_PYZONE=pyzone)
        cmd = [self.args.twistd, "-n", "--pidfile=", "--logfile", os.path.join(self.dir, "twistd.log"),
               "-y", os.path.join(HERE, "stock_twisted.tac")]
        return cmd, env, self.dir

    def version(self):
        tw = os.path.join(os.path.dirname(self.args.twistd), "python")
        return "Twisted " + cmd_version([tw, "-c", "import twisted; print(twisted.__version__)"])

    def notes(self):
        return "twistd dns chain: PySourceAuthority + CacheResolver (unbounded) + client.Resolver"


class Dnsmasq(Server):
    name = "dnsmasq"
    CACHE_MAX = 10000  # dnsmasq(8): "the hard limit is 10000 names"

    def prepare(self, max_entries, wide=False):
        if wide:
            # hosts(5) style, base names only: dnsmasq has no views.
            hosts = os.path.join(self.dir, "wide.hosts")
            write_if_changed(hosts, "127.0.0.1 ns1.%s\n" % WIDE_ZONE
                             + "".join("%s %s.%s\n" % (ip, label, WIDE_ZONE)
                                       for label, ip in self.data.wide_records()))
            conf = os.path.join(self.dir, "dnsmasq-wide.conf")
            write_if_changed(conf, """\
port={port}
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
user=root
pid-file=
local=/{zone}/
addn-hosts={hosts}
cache-size={cache}
dns-forward-max={fwd}
""".format(port=self.port, zone=WIDE_ZONE, hosts=hosts,
           cache=min(max_entries, self.CACHE_MAX), fwd=max(150, self.args.outstanding * 2)))
            return ["dnsmasq", "-k", "-C", conf], None, self.dir
        hosts = os.path.join(self.dir, "local.hosts")
        write_if_changed(hosts, "".join("%s %s.%s\n" % (ip, label, LOCAL_ZONE)
                                        for label, ip in self.data.local_records()))
        conf = os.path.join(self.dir, "dnsmasq.conf")
        write_if_changed(conf, """\
port={port}
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
user=root
pid-file=
server={up}
local=/{local}/
addn-hosts={hosts}
cache-size={cache}
dns-forward-max={fwd}
""".format(port=self.port, up=self.upstream.replace(":", "#"), local=LOCAL_ZONE, hosts=hosts,
           cache=min(max_entries, self.CACHE_MAX), fwd=max(150, self.args.outstanding * 2)))
        return ["dnsmasq", "-k", "-C", conf], None, self.dir

    def version(self):
        return cmd_version(["dnsmasq", "--version"]).split("  Copyright")[0]

    def wide_notes(self):
        return "addn-hosts with the base names only (no views: every client gets the base answers)"

    def notes(self):
        return ("cache-size=%d (hard limit 10000); local names from addn-hosts; dns-forward-max=%d"
                % (min(self.args.cache_entries, self.CACHE_MAX), max(150, self.args.outstanding * 2)))


class Unbound(Server):
    name = "unbound"

    by_line = True

    def prepare(self, max_entries, wide=False):
        if wide:
            return self.prepare_wide()
        conf = os.path.join(self.dir, "unbound.conf")
        local = "".join('    local-data: "%s.%s. 3600 IN A %s"\n' % (label, LOCAL_ZONE, ip)
                        for label, ip in self.data.local_records())
        write_if_changed(conf, """\
server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    # No DNSSEC validation (no trust anchor in this config anyway): a plain cache.
    module-config: "iterator"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    msg-cache-size: 128m
    rrset-cache-size: 256m
    # .test is one of unbound's default static local zones; let our zones through.
    local-zone: "test." nodefault
    local-zone: "{local}." static
{localdata}
forward-zone:
    name: "{zone}."
    forward-addr: {up}
""".format(port=self.port, local=LOCAL_ZONE, localdata=local, zone=UPSTREAM_ZONE,
           up=self.upstream.replace(":", "@")))
        return ["unbound", "-d", "-c", conf], None, self.dir

    def version(self):
        return "unbound " + cmd_version(["unbound", "-V"]).replace("Version ", "")

    def notes(self):
        return "num-threads 1, iterator only (no validator), msg/rrset cache 128m/256m"

    def prepare_wide(self):
        # The base names in a static local zone; each line a view (access-control-view)
        # holding only its overlay's local-data. A view's local-data for a name makes a
        # transparent local zone at that name in the view; with view-first, names the
        # view has nothing for are looked up in the global (base) zone.
        conf = os.path.join(self.dir, "unbound-wide.conf")
        base = "".join('    local-data: "%s.%s. 3600 IN A %s"\n' % (label, WIDE_ZONE, ip)
                       for label, ip in [("ns1", "127.0.0.1")] + self.data.wide_records())
        views = []
        for k, (line, cidrs) in enumerate(WIDE_LINES.items()):
            views.append("view:\n    name: \"%s\"\n    view-first: yes\n" % line
                         + "".join('    local-data: "%s.%s. 3600 IN A %s"\n' % (label, WIDE_ZONE, ip)
                                   for label, ip in self.data.wide_overlay(k)))
        acv = "".join("    access-control-view: %s %s\n" % (c, line)
                      for line, cidrs in WIDE_LINES.items() for c in cidrs)
        write_if_changed(conf, """\
server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
{acv}    local-zone: "test." nodefault
    local-zone: "{zone}." static
{base}
{views}""".format(port=self.port, acv=acv, zone=WIDE_ZONE, base=base, views="".join(views)))
        return ["unbound", "-d", "-c", conf], None, self.dir

    def wide_notes(self):
        return "local-data in a static zone; one view per line (access-control-view, view-first) with its overlay"


class Named(Server):
    """BIND named, authoritative only: one view per line (match-clients), each loading
    the base zone with that line's overlay merged in, and a last view for everyone else."""
    name = "named"
    jobs = (WIDE_JOB,)
    by_line = True

    def prepare(self, max_entries, wide=False):
        files = {}
        for k, line in enumerate(WIDE_LINES):
            path = os.path.join(self.dir, "%s-%s.zone" % (WIDE_ZONE, line))
            write_if_changed(path, self.data.wide_head()
                             + "".join("%s IN A %s\n" % r for r in self.data.wide_view_records(k)))
            files[line] = path
        views = "".join("""\
view "{line}" {{
    match-clients {{ {cidrs} }};
    zone "{zone}" {{ type primary; file "{file}"; }};
}};
""".format(line=line, cidrs=" ".join(c + ";" for c in WIDE_LINES[line]), zone=WIDE_ZONE, file=f)
            for line, f in files.items())
        views += """\
view "base" {{
    match-clients {{ any; }};
    zone "{zone}" {{ type primary; file "{file}"; }};
}};
""".format(zone=WIDE_ZONE, file=self.data.wide_zone)
        conf = os.path.join(self.dir, "named.conf")
        write_if_changed(conf, """\
// Generated by bench/run.py
options {{
    directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file none;
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    recursion no;
    dnssec-validation no;
    notify no;
    minimal-responses yes;
}};
controls {{ }};
{views}""".format(d=self.dir, port=self.port, views=views))
        # -n 1: one worker thread (it has one CPU); -g: foreground, log to stderr.
        return ["named", "-g", "-n", "1", "-c", conf], None, self.dir

    def version(self):
        return cmd_version(["named", "-v"])

    def wide_notes(self):
        return "authoritative, recursion no, minimal-responses yes, -n 1; one view per line with the overlay merged"


class NSDAuth(Server):
    """NSD as a peer for local-wide (not the upstream): no views, base zone only."""
    name = "nsd"
    dirname = "nsd-auth"
    jobs = (WIDE_JOB,)

    def prepare(self, max_entries, wide=False):
        conf = os.path.join(self.dir, "nsd.conf")
        write_if_changed(conf, nsd_conf(self.port, self.data.dir, self.dir, WIDE_ZONE, self.data.wide_zone,
                                        minimal=True))
        return ["nsd", "-d", "-c", conf], None, self.dir

    def version(self):
        return cmd_version(["nsd", "-v"])

    def wide_notes(self):
        return "server-count 1, minimal-responses; no views: base zone only"


SERVERS = {c.name: c for c in (SmartDNS, StockTwisted, Dnsmasq, Unbound, Named, NSDAuth)}


# ---------------------------------------------------------------- dnsperf

STAT_RE = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "interrupted": r"Queries interrupted:\s+(\d+)",
    "run_time": r"Run time \(s\):\s+([\d.]+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "mean_s": r"Average Latency \(s\):\s+([\d.]+)",
    "min_s": r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)",
    "max_s": r"Average Latency \(s\):.*max ([\d.]+)\)",
    "stddev_s": r"Latency StdDev \(s\):\s+([\d.]+)",
}


def dnsperf(args, qfile, duration, qps=None, verbose=False, runs=None, tag="", watch=None, sources=None):
    """Run dnsperf against the server under test and parse its report.

    watch: {label: pid} of process trees whose CPU use (percent of one CPU over the
    run) is reported as cpu_<label>, and per answer as us_per_answer_<label>;
    dnsperf's own is cpu_dnsperf.
    sources: [(local address, query file)] runs one dnsperf per pair in parallel (-a),
    the clients, outstanding queries and rate split among them; the result is their sum
    (qps = all answers / the longest run time)."""
    parts = sources or [(None, qfile)]
    n = len(parts)
    cmds = []
    for addr, path in parts:
        cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(args.port), "-d", path,
               "-c", str(max(1, args.clients // n)), "-q", str(max(1, args.outstanding // n)),
               "-t", str(args.timeout)]
        if addr:
            cmd += ["-a", addr]
        if args.client_threads > 1:
            cmd += ["-T", str(args.client_threads)]
        if duration:
            cmd += ["-l", str(duration)]
        if runs:
            cmd += ["-n", str(runs)]
        if qps:
            cmd += ["-Q", str(max(1, qps // n))]
        if verbose:
            cmd.append("-v")
        cmds.append(cmd)
    outpaths = [os.path.join(args.logdir, "dnsperf-%s%s.out" % (tag, "-%d" % k if n > 1 else ""))
                if tag else os.devnull for k in range(n)]
    watch = watch or {}
    before = {k: cpu_seconds(pid) for k, pid in watch.items()}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ct0 = cpu_times()
    fo0 = foreign_ticks()
    t0 = time.monotonic()
    outs = [open(path, "w") for path in outpaths]
    procs = [subprocess.Popen(["taskset", "-c", str(args.client_cpu)] + cmd if args.client_cpu is not None
                              else cmd, stdout=out, stderr=subprocess.PIPE, text=True)
             for cmd, out in zip(cmds, outs)]
    errs = [p.communicate()[1] for p in procs]
    wall = time.monotonic() - t0
    for out in outs:
        out.close()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ct1 = cpu_times()
    fo1 = foreign_ticks()
    cpu_s = {k: cpu_seconds(pid) - before[k] for k, pid in watch.items()}
    cpu = {"cpu_" + k: round(100 * v / wall, 1) for k, v in cpu_s.items()}
    cpu["cpu_dnsperf"] = round(100 * (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall, 1)
    cpu["cpu_other_processes"] = foreign_percent(fo0, fo1, wall)
    # Whole-CPU view (includes softirq network work): busy and steal percent per CPU.
    for c in ct1:
        if c in ct0:
            total = (ct1[c][2] - ct0[c][2]) or 1
            cpu["busy_" + c] = round(100 * (ct1[c][0] - ct0[c][0]) / total, 1)
            cpu["steal_" + c] = round(100 * (ct1[c][1] - ct0[c][1]) / total, 1)
    for p, err in zip(procs, errs):
        if p.returncode != 0:
            raise RuntimeError("dnsperf failed (%d): %s" % (p.returncode, err.strip()))
    res = {"cmd": " ".join(cmds[0]) if n == 1 else [" ".join(c) for c in cmds]}
    res.update(cpu)
    lat = []
    rcodes = {}
    each = []
    for outpath in outpaths:
        one = {}
        with open(outpath) as f:
            text = []
            for line in f:
                if line.startswith("> "):
                    # "> RCODE name type latency"; "> T name type" for a timeout, "> I ..."
                    # for a query still outstanding when the run ended.
                    parts_ = line.split()
                    rcodes[parts_[1]] = rcodes.get(parts_[1], 0) + 1
                    if parts_[1] not in ("T", "I"):
                        try:
                            lat.append(float(parts_[-1]))
                        except ValueError:
                            pass
                else:
                    text.append(line)
            text = "".join(text)
        for k, rx in STAT_RE.items():
            m = re.search(rx, text)
            if m:
                one[k] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
        m = re.search(r"Response codes:\s+(.*)", text)
        if m:
            one["rcodes"] = {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+)", m.group(1))}
        each.append(one)
    if n == 1:
        res.update(each[0])
    else:
        res["per_source"] = [dict(one, source=addr) for one, (addr, _) in zip(each, parts)]
        for k in ("sent", "completed", "lost", "interrupted"):
            res[k] = sum(one.get(k, 0) for one in each)
        res["run_time"] = max(one.get("run_time", 0) for one in each)
        res["qps"] = round(res["completed"] / res["run_time"], 1) if res["run_time"] else 0
        done = sum(one.get("completed", 0) for one in each) or 1
        res["mean_s"] = sum(one.get("mean_s", 0) * one.get("completed", 0) for one in each) / done
        res["min_s"] = min(one.get("min_s", 0) for one in each)
        res["max_s"] = max(one.get("max_s", 0) for one in each)
        codes = {}
        for one in each:
            for k, v in one.get("rcodes", {}).items():
                codes[k] = codes.get(k, 0) + v
        if codes:
            res["rcodes"] = codes
    if "rcodes" not in res and rcodes:
        res["rcodes"] = rcodes
    if rcodes.get("T"):
        res["timeouts_logged"] = rcodes["T"]
    if lat:
        lat.sort()
        res["p50_s"] = lat[len(lat) // 2]
        res["p99_s"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        res["p999_s"] = lat[min(len(lat) - 1, int(len(lat) * 0.999))]
        res["mean_s"] = sum(lat) / len(lat)
    for k, v in cpu_s.items():
        res["cpu_s_" + k] = round(v, 3)
        if res.get("completed"):
            res["us_per_answer_" + k] = round(1e6 * v / res["completed"], 1)
    if tag and not args.keep_logs and verbose:
        for outpath in outpaths:
            os.unlink(outpath)  # the -v logs are large
    return res


def dnsperf_version():
    p = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    m = re.search(r"Version (\S+)", p.stdout + p.stderr)
    return "dnsperf " + (m.group(1) if m else "?")


def problems(res):
    """What makes a dnsperf result suspect: lost queries, error rcodes, a wrapped file, steal."""
    out = []
    steal = max([v for k, v in res.items() if k.startswith("steal_")] or [0])
    if steal > 5:
        out.append("CPU steal %.0f%%: noisy host" % steal)
    if res.get("cpu_other_processes", 0) > DISTURBED:
        out.append("other processes used %.0f%% CPU: disturbed" % res["cpu_other_processes"])
    if res.get("lost"):
        out.append("LOST %d" % res["lost"])
    bad = {k: v for k, v in res.get("rcodes", {}).items() if k != "NOERROR"}
    if bad:
        out.append("rcodes %s" % bad)
    return out


# ---------------------------------------------------------------- runs

def run_server(args, data, name):
    srv = SERVERS[name](args, data)
    jobs = [j for j in args.jobs if j in srv.jobs and j != WIDE_JOB]
    result = {"version": srv.version(), "notes": srv.notes(), "jobs": {},
              "jobs_run": [j for j in args.jobs if j in srv.jobs]}
    if jobs:
        run_standard_jobs(args, data, srv, jobs, result)
    return result


def run_wide_jobs(args, data, results):
    """The local-wide job of every server that runs it, the servers taking turns (run_wide);
    each server's result goes into its entry of ``results``."""
    names = [name for name in args.servers if name in results and WIDE_JOB in results[name]["jobs_run"]]
    if not names:
        return
    try:
        wide = run_wide(args, data, [SERVERS[name](args, data) for name in names])
    except Exception as e:
        import traceback
        traceback.print_exc()
        wide = {name: {"error": "%s: %s" % (type(e).__name__, e)} for name in names}
    for name in names:
        results[name]["jobs"][WIDE_JOB] = wide[name]


def run_standard_jobs(args, data, srv, jobs, result):
    """The local, hit and miss jobs, in a row on one server process."""
    name = srv.name
    cmd, env, cwd = srv.prepare(args.cache_entries)
    result["cmd"] = " ".join(cmd)
    if probe(args.port, "h0." + LOCAL_ZONE) is not None:
        sys.exit("port %d already answers DNS: stop that server or pass --port" % args.port)
    p = Proc(name, cmd, os.path.join(args.logdir, name + ".log"), cpu=args.server_cpu, env=env, cwd=cwd)
    try:
        if not wait_ready(args.port, "h0." + LOCAL_ZONE, args.start_timeout, p):
            tail = p.tail()
            msg = "%s did not start (no answer for h0.%s): %s\nlog tail (%s):\n%s" % (
                name, LOCAL_ZONE, (tail.strip().splitlines() or ["exited silently"])[-1], p.logpath, tail)
            log(msg)
            result["error"] = msg
            return result
        result["rss_kb_start"] = rss_kb(p.pid)
        for job in jobs:
            try:
                result["jobs"][job] = run_job(args, data, name, job, p)
            except Exception as e:  # keep the other jobs and servers going
                import traceback
                traceback.print_exc()
                result["jobs"][job] = {"error": "%s: %s" % (type(e).__name__, e)}
            if p.poll() is not None:
                result["error"] = "%s exited during job %s:\n%s" % (name, job, p.tail())
                log(result["error"])
                break
        result["rss_kb_end"] = rss_kb(p.pid)
    finally:
        p.stop()
    return result


def wide_once(args, data, srv, cmd, env, cwd, what, **kw):
    """Start a fresh server with the local-wide config, check its answers by line, run
    dnsperf from every source address in parallel (kw), stop it. A fresh process for
    every run, so that no name of the run was ever asked of it."""
    if probe(args.port, "ns1." + WIDE_ZONE) is not None:
        sys.exit("port %d already answers DNS: stop that server or pass --port" % args.port)
    p = Proc(srv.name, cmd, os.path.join(args.logdir, "%s-wide.log" % srv.name), cpu=args.server_cpu,
             env=env, cwd=cwd)
    try:
        t0 = time.monotonic()
        # ns1.wide.test is in no query file.
        if not wait_ready(args.port, "ns1." + WIDE_ZONE, max(args.start_timeout, 300), p):
            raise RuntimeError("%s did not start with the %s zone (%s):\n%s"
                               % (srv.name, WIDE_ZONE, p.logpath, p.tail()))
        ready_s = round(time.monotonic() - t0, 1)
        rss = rss_kb(p.pid)
        # The check name, from every source: does the server answer by line?
        check = {}
        for k, src in enumerate(data.wide_sources):
            r = probe_a(args.port, "%s.%s" % (WIDE_CHECK, WIDE_ZONE), src, timeout=2)
            want = "192.0.2.%d" % (101 + k) if srv.by_line else WIDE_CHECK_BASE
            check[src] = {"answer": r[1] if r else None, "want": want,
                          "ok": bool(r) and r[0] == 0 and r[1] == [want]}
        log("%s %s: ready in %.1fs, RSS %.0f MB, answers by line: %s" % (
            srv.name, what, ready_s, rss / 1024,
            "ok" if all(c["ok"] for c in check.values()) else "WRONG %r" % check))
        res = dnsperf(args, None, watch={"server": p.pid}, sources=list(zip(data.wide_sources, data.q_wide)),
                      **kw)
        res["ready_s"], res["rss_kb"], res["line_check"] = ready_s, rss, check
        if not all(c["ok"] for c in check.values()):
            res.setdefault("problems_extra", []).append("wrong answer by line: %s" % ", ".join(
                "%s got %s, want %s" % (src, c["answer"], c["want"]) for src, c in check.items() if not c["ok"]))
        if p.poll() is not None:
            raise RuntimeError("%s exited during %s:\n%s" % (srv.name, what, p.tail()))
        return res
    finally:
        p.stop()
        time.sleep(0.5)


def run_wide(args, data, servers):
    """local-wide for every server in ``servers``: --repeat throughput runs each, then one
    latency run each, each run on a fresh server sending every name at most once (dnsperf -n 1
    over the shuffled query files).  The throughput runs take turns (round 1 of every server,
    then round 2, ...), so a slow stretch of a shared machine lands on every server alike
    instead of on whichever ran then.  Returns {server name: result}."""
    prepared = {srv.name: srv.prepare(args.cache_entries, wide=True) for srv in servers}
    log("%s: throughput, %d names once each from %s, x %d per server, servers taking turns "
        "(a fresh server each run): %s" % (WIDE_JOB, data.wide_names, ",".join(data.wide_sources), args.repeat,
                                            ",".join(srv.name for srv in servers)))
    kept = {srv.name: [] for srv in servers}
    every = {srv.name: [] for srv in servers}
    retries = {srv.name: args.retries for srv in servers}
    while any(len(kept[srv.name]) < args.repeat for srv in servers):
        for srv in servers:
            name = srv.name
            if len(kept[name]) >= args.repeat:
                continue
            cmd, env, cwd = prepared[name]
            res = wide_once(args, data, srv, cmd, env, cwd, "throughput %d" % (len(every[name]) + 1),
                            duration=None, runs=1, tag="%s-wide-tput" % name)
            every[name].append(res)
            if disturbed(res) and retries[name] > 0:
                retries[name] -= 1
                log("%s %s throughput: disturbed by other load (%.0f%% CPU), running again"
                    % (name, WIDE_JOB, res.get("cpu_other_processes", 0)))
                continue
            kept[name].append(res)
    out = {}
    for srv in servers:
        name = srv.name
        cmd, env, cwd = prepared[name]
        r = {"cmd": " ".join(cmd), "notes": srv.wide_notes(), "interleaved_with": [s.name for s in servers]}
        t = dict(sorted(kept[name], key=lambda x: x.get("qps", 0))[len(kept[name]) // 2])
        if len(every[name]) > 1:
            t["repeats"] = every[name]
        t["problems"] = problems(t) + t.pop("problems_extra", [])
        core = t.get("busy_cpu%s" % args.server_cpu, 100)
        if core < 85:
            t["problems"].append("server's CPU only %.0f%% busy (dnsperf %.0f%%): not server-bound"
                                 % (core, t["cpu_dnsperf"]))
        r["throughput"] = t
        if args.latency_duration:
            log("%s %s: latency at %d qps for %ds" % (name, WIDE_JOB, args.latency_qps, args.latency_duration))
            lat = wide_once(args, data, srv, cmd, env, cwd, "latency", duration=args.latency_duration,
                            qps=args.latency_qps, verbose=True, runs=1, tag="%s-wide-lat" % name)
            lp = problems(lat) + lat.pop("problems_extra", [])
            q = t.get("qps") or 0
            if q and args.latency_qps > 0.7 * q:
                lp.append("latency rate %d is >70%% of this server's capacity (%.0f qps): queueing"
                          % (args.latency_qps, q))
            lat["problems"] = lp
            r["latency"] = lat
        for k in ("throughput", "latency"):
            if r.get(k, {}).get("problems"):
                log("%s %s %s: %s" % (name, WIDE_JOB, k, "; ".join(r[k]["problems"])))
        out[name] = r
    return out


def file_tail(src_path, skip, workdir):
    """A copy of a query file without its first `skip` lines."""
    path = os.path.join(workdir, "%s-from-%d.txt" % (os.path.basename(src_path)[:-4], skip))
    with open(src_path) as src, open(path, "w") as dst:
        for i, line in enumerate(src):
            if i >= skip:
                dst.write(line)
    return path


def disturbed(res):
    return res.get("cpu_other_processes", 0) > DISTURBED or max(
        [v for k, v in res.items() if k.startswith("steal_")] or [0]) > 5


def measure(args, data, qfile, fresh, count, tries_log, **kw):
    """Run dnsperf `count` times (plus up to --retries re-runs of disturbed runs).

    fresh: the names must never repeat (miss job), so each run starts where the
    previous stopped. Returns (runs kept, every run, total names sent)."""
    kept, every, sent = [], [], 0
    retries = args.retries
    while len(kept) < count:
        path = file_tail(qfile, sent, data.dir) if fresh and sent else qfile
        try:
            res = dnsperf(args, path, **kw)
        finally:
            if path != qfile:
                os.unlink(path)
        sent += res.get("sent", 0)
        every.append(res)
        if disturbed(res) and retries > 0:
            retries -= 1
            log("%s: disturbed by other load (%.0f%% CPU), running again"
                % (tries_log, res.get("cpu_other_processes", 0)))
            continue
        kept.append(res)
    return kept, every, sent


def run_job(args, data, name, job, proc):
    r = {}
    probe_name = {"local": "h1.%s" % LOCAL_ZONE, "hit": "h1.%s" % UPSTREAM_ZONE,
                  "miss": "h%d.%s" % (data.zone_size - 1, UPSTREAM_ZONE)}[job]
    pr = probe(args.port, probe_name, timeout=2)
    if pr is None or pr[0] != 0 or pr[1] < 1:
        r["error"] = "probe %s answered %r (want NOERROR with an answer)" % (probe_name, pr)
        log(name, job, r["error"])
        return r
    if job == "hit":
        # Warm: every hit name once, so the measured runs are all cache hits.
        dnsperf(args, data.q["hit"], None, runs=1)
    log("%s %s: throughput %ds x %d" % (name, job, args.duration, args.repeat))
    watch = {"server": proc.pid, "upstream": args.upstream_pid}
    runs, every, sent = measure(args, data, data.q[job], job == "miss", args.repeat,
                                "%s %s throughput" % (name, job), duration=args.duration,
                                tag="%s-%s-tput" % (name, job), watch=watch)
    # Report the run with the median qps; all runs stay in the results file.
    t = dict(sorted(runs, key=lambda x: x.get("qps", 0))[len(runs) // 2])
    if len(every) > 1:
        t["repeats"] = every
    r["throughput"] = t
    t["problems"] = problems(t)
    if job == "miss" and sent > data.q_count["miss"]:
        t["problems"].append("miss query file (%d names) wrapped: some misses were hits; "
                             "raise --zone-size" % data.q_count["miss"])
    core = t.get("busy_cpu%s" % args.server_cpu, 100)
    if core < 85:
        # The server's CPU had idle time: the rate was set by something else (usually
        # dnsperf, which shares its CPU with NSD), so this qps is a lower bound.
        t["problems"].append("server's CPU only %.0f%% busy (dnsperf %.0f%%, its CPU %.0f%%): "
                             "not server-bound" % (core, t["cpu_dnsperf"],
                                                   t.get("busy_cpu%s" % args.client_cpu, 0)))
    if args.latency_duration and proc.poll() is None:
        lat_file = data.q["miss-lat"] if job == "miss" else data.q[job]
        log("%s %s: latency at %d qps for %ds" % (name, job, args.latency_qps, args.latency_duration))
        runs, every, sent = measure(args, data, lat_file, job == "miss", 1, "%s %s latency" % (name, job),
                                    duration=args.latency_duration, qps=args.latency_qps, verbose=True,
                                    tag="%s-%s-lat" % (name, job), watch=watch)
        lat = r["latency"] = runs[0]
        if len(every) > 1:
            lat["disturbed_runs"] = every[:-1]
        lp = problems(lat)
        if job == "miss" and sent > data.q_count["miss-lat"]:
            lp.append("miss latency file wrapped: some misses were hits; raise --zone-size")
        q = r["throughput"].get("qps") or 0
        if q and args.latency_qps > 0.7 * q:
            lp.append("latency rate %d is >70%% of this server's capacity (%.0f qps): queueing" %
                      (args.latency_qps, q))
        lat["problems"] = lp
    for k in ("throughput", "latency"):
        if r.get(k, {}).get("problems"):
            log("%s %s %s: %s" % (name, job, k, "; ".join(r[k]["problems"])))
    return r


def run_memory(args, data, name):
    """Fill the cache with --memory-entries distinct forwarded names, report RSS."""
    n = args.memory_entries
    if data.miss_tput_count < n:
        sys.exit("--zone-size too small for --memory-entries %d" % n)
    qfile = os.path.join(data.dir, "q-mem-%d.txt" % n)
    if not os.path.exists(qfile):
        with open(data.q["miss"]) as src, open(qfile, "w") as dst:
            for i, line in enumerate(src):
                if i >= n:
                    break
                dst.write(line)
    srv = SERVERS[name](args, data)
    max_entries = int(n * 1.1)
    cmd, env, cwd = srv.prepare(max_entries)
    p = Proc(name, cmd, os.path.join(args.logdir, name + "-memory.log"), cpu=args.server_cpu, env=env, cwd=cwd)
    out = {"version": srv.version(), "cmd": " ".join(cmd), "entries": n, "max_entries": max_entries}
    try:
        if not wait_ready(args.port, "h0." + LOCAL_ZONE, args.start_timeout, p):
            out["error"] = "%s did not start:\n%s" % (name, p.tail())
            log(out["error"])
            return out
        out["rss_kb_before"] = rss_kb(p.pid)
        log("%s memory: filling with %d distinct names (RSS before %.1f MB)" % (name, n, out["rss_kb_before"] / 1024))
        t0 = time.time()
        out["fill"] = dnsperf(args, qfile, None, runs=1, tag="%s-memory-fill" % name,
                              watch={"server": p.pid, "upstream": args.upstream_pid})
        out["fill_seconds"] = round(time.time() - t0, 1)
        time.sleep(2)
        out["rss_kb_after"] = rss_kb(p.pid)
        # Re-ask a sample of 10,000: these must now be cache hits (fast, no upstream traffic).
        sample = os.path.join(data.dir, "q-mem-sample.txt")
        with open(qfile) as src, open(sample, "w") as dst:
            for i, line in enumerate(src):
                if i % (max(1, n // 10000)) == 0:
                    dst.write(line)
        out["recheck"] = dnsperf(args, sample, 3, tag="%s-memory-recheck" % name,
                                 watch={"server": p.pid, "upstream": args.upstream_pid})
        out["rss_mb"] = round(out["rss_kb_after"] / 1024, 1)
        out["target_mb"] = args.memory_target_mb
        out["pass"] = out["rss_mb"] <= args.memory_target_mb and not out["fill"].get("lost")
        log("%s memory: RSS after %d entries = %.1f MB (target <= %d MB): %s"
            % (name, n, out["rss_mb"], args.memory_target_mb, "PASS" if out["pass"] else "FAIL"))
    finally:
        p.stop()
    return out


# ---------------------------------------------------------------- report

def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def table(results, args):
    srv_order = [s for s in args.servers if s in results]
    rows = []
    hdr = ["job", "server", "qps", "lost", "srv CPU% proc/core", "srv us/answer",
           "mean ms @%d" % args.latency_qps, "p99 ms @%d" % args.latency_qps, "lost @%d" % args.latency_qps,
           "qps sd/peer", "us/answer sd/peer", "p99 sd/peer", "notes"]
    for job in args.jobs:
        sd = results.get("smartdns", {}).get("jobs", {}).get(job, {})
        sd_qps = sd.get("throughput", {}).get("qps")
        sd_p99 = sd.get("latency", {}).get("p99_s")
        sd_us = sd.get("throughput", {}).get("us_per_answer_server")
        for s in srv_order:
            r = results[s]
            if job not in r.get("jobs_run", args.jobs):
                continue
            j = r.get("jobs", {}).get(job, {})
            t, l = j.get("throughput", {}), j.get("latency", {})
            notes = "; ".join(["qps: " + x for x in t.get("problems", [])]
                              + ["@%d: " % args.latency_qps + x for x in l.get("problems", [])])
            if r.get("error") and not j:
                notes = "did not run: " + r["error"].splitlines()[0]
            elif j.get("error"):
                notes = j["error"]
            peer = s != "smartdns"
            rows.append([
                job, s, fmt(t.get("qps"), ".0f"), fmt(t.get("lost"), "d"),
                "%s/%s" % (fmt(t.get("cpu_server"), ".0f"), fmt(t.get("busy_cpu%s" % args.server_cpu), ".0f")),
                fmt(t.get("us_per_answer_server"), ".1f"),
                fmt(l.get("mean_s") and l["mean_s"] * 1e3, ".3f"),
                fmt(l.get("p99_s") and l["p99_s"] * 1e3, ".3f"), fmt(l.get("lost"), "d"),
                fmt(ratio(sd_qps, t.get("qps")), ".2f") if peer else "1",
                fmt(ratio(sd_us, t.get("us_per_answer_server")), ".2f") if peer else "1",
                fmt(ratio(sd_p99, l.get("p99_s")), ".2f") if peer else "1",
                notes])
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(hdr), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma list of %s" % ",".join(ALL_SERVERS))
    ap.add_argument("--jobs", default=",".join(ALL_JOBS), help="comma list of %s" % ",".join(ALL_JOBS))
    ap.add_argument("--duration", type=int, default=5, help="seconds of one throughput run (default 5)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="throughput runs per job; the one with the median qps is reported (default 3)")
    ap.add_argument("--retries", type=int, default=3,
                    help="re-runs allowed per measurement when other processes disturbed a run "
                         "(> %d%%%% of a CPU) or the host stole CPU (default 3)" % DISTURBED)
    ap.add_argument("--latency-duration", type=int, default=5,
                    help="seconds of the fixed-rate latency run per job; 0 skips it (default 5)")
    ap.add_argument("--latency-qps", type=int, default=1000, help="rate of the latency run (default 1000)")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q for the throughput run (default 100)")
    ap.add_argument("--clients", type=int, default=8, help="dnsperf -c: client sockets (default 8)")
    ap.add_argument("--client-threads", type=int, default=1,
                    help="dnsperf -T: client threads (default 1); give them CPUs with --client-cpu, e.g. 1-2")
    ap.add_argument("--timeout", type=int, default=2, help="dnsperf -t: seconds before a query counts as lost (default 2)")
    ap.add_argument("--smartdns-cmd", default=None,
                    help="command line to run smartdns; {config} and {port} are substituted "
                         "(default: .venv/bin/twistd -n --pidfile= smartdns --config {config}, "
                         "with the working tree on PYTHONPATH)")
    ap.add_argument("--smartdns-tree", default=None,
                    help="source tree to run smartdns from (put first on PYTHONPATH; default: this "
                         "repository), e.g. a git worktree of another commit for an A/B comparison")
    ap.add_argument("--wide-names", type=int, default=100000,
                    help="names in the local-wide job's zone, n0..n<N-1>.%s (default 100,000)" % WIDE_ZONE)
    ap.add_argument("--wide-sources", type=int, default=len(WIDE_SOURCES),
                    help="client addresses (one per line, one dnsperf each) of the local-wide job (1-%d, default %d)"
                         % (len(WIDE_SOURCES), len(WIDE_SOURCES)))
    ap.add_argument("--twistd", default=os.path.join(REPO, ".venv", "bin", "twistd"),
                    help="twistd of the venv whose Twisted is the 'twisted' peer")
    ap.add_argument("--cache-entries", type=int, default=100000,
                    help="cache bound given to every server that has one (dnsmasq caps at 10000)")
    ap.add_argument("--zone-size", type=int, default=2000000, help="names in the upstream zone (default 2,000,000)")
    ap.add_argument("--local-names", type=int, default=300, help="names in local.test (default 300)")
    ap.add_argument("--hit-names", type=int, default=1000, help="forwarded names of the hit job (default 1000)")
    ap.add_argument("--port", type=int, default=5400, help="port of the server under test (default 5400)")
    ap.add_argument("--upstream-port", type=int, default=5390, help="port of the NSD upstream (default 5390)")
    ap.add_argument("--server-cpu", default="0", help="CPU for the server under test ('' = no pinning)")
    ap.add_argument("--client-cpu", default="1", help="CPU for dnsperf ('' = no pinning)")
    ap.add_argument("--upstream-cpu", default="1", help="CPU for NSD ('' = no pinning)")
    ap.add_argument("--memory", action="store_true",
                    help="memory mode: fill the cache of --servers (default smartdns) with "
                         "--memory-entries names and report RSS, instead of the speed runs")
    ap.add_argument("--memory-entries", type=int, default=1000000)
    ap.add_argument("--memory-target-mb", type=int, default=400)
    ap.add_argument("--start-timeout", type=float, default=30, help="seconds to wait for a server to answer")
    ap.add_argument("--workdir", default="/tmp/smartdns-bench", help="generated data, configs, logs")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--keep-logs", action="store_true", help="keep dnsperf -v logs in WORKDIR/logs")
    argv = list(argv)
    args = ap.parse_args(argv)
    if args.memory and "--servers" not in " ".join(argv):
        args.servers = "smartdns"
    explicit = "--servers" in " ".join(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.jobs = [j for j in args.jobs.split(",") if j]
    if not explicit and not shutil.which("named") and "named" in args.servers:
        log("named not found: leaving BIND out of local-wide (apt-get install bind9)")
        args.servers.remove("named")
    if not 1 <= args.wide_sources <= len(WIDE_SOURCES):
        ap.error("--wide-sources must be 1-%d" % len(WIDE_SOURCES))
    for s in args.servers:
        if s not in SERVERS:
            ap.error("unknown server %r" % s)
    for j in args.jobs:
        if j not in ALL_JOBS:
            ap.error("unknown job %r" % j)
    for k in ("server_cpu", "client_cpu", "upstream_cpu"):
        setattr(args, k, getattr(args, k) or None)
    if (os.cpu_count() or 1) < 2:
        log("fewer than 2 CPUs: not pinning")
        args.server_cpu = args.client_cpu = args.upstream_cpu = None
    args.logdir = os.path.join(args.workdir, "logs")
    return args


def main(argv):
    args = parse_args(argv)
    for tool in ["dnsperf", "nsd", "taskset"] + [t for t in ("dnsmasq", "unbound", "named") if t in args.servers]:
        if not shutil.which(tool):
            sys.exit("%s not found: run bench/run.sh, which installs it" % tool)
    os.makedirs(args.logdir, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)
    data = Data(args)
    data.generate()
    if WIDE_JOB in args.jobs:
        data.generate_wide()
    started = datetime.datetime.now()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "argv": ["bench/run.py"] + list(argv),
        "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                           if l.startswith("model name")), "?"),
        "pinning": {"server": args.server_cpu, "dnsperf": args.client_cpu, "upstream": args.upstream_cpu},
        "dnsperf": {"duration": args.duration, "outstanding": args.outstanding, "clients": args.clients,
                    "threads": args.client_threads,
                    "timeout": args.timeout, "latency_qps": args.latency_qps,
                    "latency_duration": args.latency_duration},
        "versions": {"dnsperf": dnsperf_version(), "nsd": cmd_version(["nsd", "-v"])},
        "smartdns_python": python_info(smartdns_python(args)) if "smartdns" in args.servers else None,
        "data": {"upstream_zone_names": data.zone_size, "local_names": data.local_names,
                 "hit_names": data.hit_names, "miss_names": data.miss_tput_count,
                 "miss_latency_names": data.miss_lat_count,
                 "wide_names": data.wide_names, "wide_sources": data.wide_sources,
                 "wide_lines": WIDE_LINES, "wide_overlay_names_per_line":
                     len(data.wide_overlay(0)) - 1},
    }
    fo0, t0 = foreign_ticks(), time.monotonic()
    time.sleep(2)
    busy = foreign_percent(fo0, foreign_ticks(), time.monotonic() - t0)
    meta["other_processes_cpu_before"] = busy
    if busy > 5:
        log("WARNING: other processes are using %.0f%% of a CPU: the numbers will be disturbed "
            "(disturbed runs are run again, up to --retries times; the notes column flags the rest)" % busy)
    upstream = start_upstream(args, data)
    args.upstream_pid = upstream.pid
    results, memory = {}, {}
    try:
        for name in args.servers:
            if upstream.poll() is not None:
                sys.exit("nsd died:\n" + upstream.tail())
            if args.memory:
                memory[name] = run_memory(args, data, name)
            elif not any(j in SERVERS[name].jobs for j in args.jobs):
                log("%s: none of the jobs %s applies to it (it runs %s)" % (
                    name, ",".join(args.jobs), ",".join(SERVERS[name].jobs)))
            else:
                results[name] = run_server(args, data, name)
            time.sleep(1)
        if not args.memory and WIDE_JOB in args.jobs:
            run_wide_jobs(args, data, results)
    finally:
        upstream.stop()
    out = {"meta": meta}
    if results:
        out["results"] = results
        lost = [(s, j, k) for s, r in results.items() for j, jr in r.get("jobs", {}).items()
                for k in ("throughput", "latency") if jr.get(k, {}).get("lost")]
        out["no_lost_queries"] = {"pass": not lost, "lost_in": ["%s/%s/%s" % x for x in lost]}
    if memory:
        out["memory"] = memory
    path = os.path.join(args.results_dir, started.strftime("%Y%m%d-%H%M%S") + (
        "-memory" if args.memory else "") + ".json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    print()
    print("smartdns bench, %s, %s, %d CPUs (server on CPU %s, dnsperf and NSD upstream on CPU %s)" % (
        meta["started"], meta["cpu_model"], meta["cpus"], args.server_cpu, args.client_cpu))
    if meta["smartdns_python"]:
        print("smartdns ran on %s" % python_line(meta["smartdns_python"]))
    if results:
        print("throughput: dnsperf -c %d -q %d, %d x %ds, median; latency: dnsperf -Q %d for %ds\n" % (
            args.clients, args.outstanding, args.repeat, args.duration, args.latency_qps, args.latency_duration))
        print(table(results, args))
        print()
        for s, r in results.items():
            notes = [r["notes"]] if r.get("notes") and set(r.get("jobs_run", [])) - {WIDE_JOB} else []
            if r.get("jobs", {}).get(WIDE_JOB, {}).get("notes"):
                notes.append("%s: %s" % (WIDE_JOB, r["jobs"][WIDE_JOB]["notes"]))
            print("- %s: %s%s" % (s, r.get("version"), "".join("; " + n for n in notes)))
        nl = out["no_lost_queries"]
        print("\nno lost queries: %s%s" % ("PASS" if nl["pass"] else "FAIL",
                                          "" if nl["pass"] else " (" + ", ".join(nl["lost_in"]) + ")"))
    for s, m in memory.items():
        if m.get("error"):
            print("memory %s: did not run: %s" % (s, m["error"].splitlines()[0]))
        else:
            print("memory %s: %d entries, RSS %.1f MB (before %.1f MB), target <= %d MB: %s; "
                  "fill %.0f qps, lost %s, %ss; re-ask of a sample: %.0f qps, upstream CPU %.0f%%" % (
                      s, m["entries"], m["rss_mb"], m["rss_kb_before"] / 1024, m["target_mb"],
                      "PASS" if m["pass"] else "FAIL", m["fill"].get("qps", 0), m["fill"].get("lost"),
                      m["fill_seconds"], m["recheck"].get("qps", 0), m["recheck"].get("cpu_upstream", 0)))
    print("\nresults: %s" % os.path.relpath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
