"""BIND 9 as an answer oracle for smartdns's local zones.

Goal: a client, a resolver or ``dig`` must not be able to tell smartdns's
local answers from BIND 9's for the same zone data.  This module holds the
pieces any test can use to check that:

- ``start_named(zone_dir, zones)`` runs a throw-away ``named`` on a free
  loopback port, serving ``<zone_dir>/<origin>.zone`` for each origin.
- ``start_smartdns(zone_dir)`` runs ``twistd smartdns`` the same way.
- ``QUERIES``: the query corpus over ``tests/oracle/zones``.
- ``compare(a, b, qname, qtype, transport, edns)``: send one query to two
  servers, return the differences a client could see.
- ``run_corpus(a, b)``: ``compare`` over the whole corpus.

Everything here is blocking and uses plain sockets through dnspython, so it
works from any test case (or a REPL) without a reactor.

BIND settings (see ``NAMED_OPTIONS``) and why
---------------------------------------------
``recursion no``
    smartdns answers its zones authoritatively; BIND must not try to resolve.
    Side effect: BIND never sets RA, while smartdns sets RA for clients that
    ``[access] recursion`` allows, so RA is left out of the comparison.
``minimal-responses no-auth-recursive``
    BIND 9.18's own default, spelled out so a distribution's named.conf
    cannot change it.  For RD=1 queries (dig, stub resolvers) a positive
    answer carries no NS RRset in the authority section; for RD=0 queries
    (what recursive resolvers send to an authoritative server) it carries the
    zone's apex NS RRset plus their in-zone addresses in the additional
    section.  The additional section is filled either way (addresses of
    MX/NS/SRV/SVCB/HTTPS targets, SRV for NAPTR), negative answers carry the
    SOA and referrals NS + glue.  Stock BIND is what a resolver would compare
    smartdns with, so the stock behaviour is the target; the alternatives
    (``no-auth``: never NS on positive answers; ``no``: always) would each
    make smartdns look unlike an out-of-the-box BIND for one kind of client.
``minimal-any yes``
    Closest BIND gets to RFC 8482: over UDP one RRset, no additional data, no
    NS for RD=0.  Which RRset follows BIND's database order, so ANY over UDP
    is kept out of the exact corpus (``KNOWN_DIFFERENT``).  Over TCP BIND
    answers every RRset at the name (no additional data; for RD=0 the apex NS
    unless the answer holds it), and so does smartdns: ``ANY_QUERIES`` pins it.
``edns-udp-size 1232`` / ``max-udp-size 1232``
    The DNS flag day 2020 size, which is also smartdns's default: BIND's OPT
    advertises 1232 and UDP answers above min(client size, 1232) get TC=1.
``answer-cookie no``
    smartdns has no DNS COOKIE support (RFC 7873); with the BIND default a
    client sending a cookie would get a server cookie back.  (dnspython
    sends none, so this only matters for other clients such as dig.)
``notify no``, ``dnssec-validation no``, ``empty-zones-enable no``,
``controls { }``, ``listen-on-v6 { none; }``, ``version/hostname/server-id none``
    Keep the instance self-contained: no NOTIFY to the zones' NS hosts, no
    trust anchors, no automatic RFC 6303 empty zones, no rndc channel on port
    953 (two instances would collide), IPv4 loopback only, no CH TXT leaks.
``directory`` is the zone directory
    so relative ``$INCLUDE`` paths resolve against it (BIND resolves them
    against ``directory``; dnspython against the process's cwd).

What BIND 9.18 answers (observed on these zones; the corpus pins each)
----------------------------------------------------------------------
- Names in answers keep the zone file's case, not the query's: ``MIXED.
  oracle.test A`` is answered by ``MiXeD.oracle.test.``; an NXDOMAIN's SOA
  owner is ``oracle.test.`` whatever the query's case.  Only the question is
  echoed byte for byte.  Exceptions: a DNAME-synthesized CNAME has the qname
  as asked for owner, and the asked prefix + the DNAME target as RDATA;
  a wildcard-synthesized owner gets the *wildcard owner's* case bits applied
  position by position (so lowercase here, since the wildcards are).
- Negative answers: SOA in authority with TTL min(SOA TTL, MINIMUM) (300 in
  oracle.test., 3600 in example.); aa=1; nothing in additional.
- RD=1 positive answers: empty authority; additional holds A then AAAA of
  in-zone targets of MX, NS, SRV, SVCB/HTTPS (TargetName "." means the
  owner), and for NAPTR the SRV RRset plus its targets' addresses.  Targets
  in another local zone (``MX 30 host1.example.``) get nothing.  Wildcards
  do match for additional data (``SRV ... x.wild`` adds x.wild A).
- RD=0 positive answers: also the apex NS RRset in authority and its in-zone
  addresses in additional, except when the answer is that NS RRset itself
  or a DS RRset at a delegation.
- Referrals: aa=0, NS in authority, additional only *glue* (addresses at or
  below some zone cut, sibling glue included); in-zone addresses of NS
  targets above the cut (``sub4 NS ns1``) are not added.  DS at a cut is
  answered by the parent (aa=1); DS below a cut is a referral.  Occluded
  data (below a cut or a DNAME) is never served.
- CNAME: followed only within the same zone.  A target in the other local
  zone, outside every zone, or the other zone's wildcard: only the CNAME,
  NOERROR, aa=1, empty authority.  Into a delegation: CNAME + referral NS +
  glue, aa=1.  A loop: SERVFAIL with the CNAMEs seen so far (loop1: 2,
  selfloop: 1).  Chains: 11 CNAMEs are followed; at a 12th, SERVFAIL with
  those 12 CNAMEs in the answer (``l06`` vs ``l05``).
- DNAME: answer DNAME + synthesized CNAME (TTL of the DNAME) + the chase;
  into another zone or out: DNAME + CNAME only.  Overflowing 255 octets:
  YXDOMAIN with the DNAME alone.  qtype DNAME below the owner: DNAME + CNAME
  + NODATA SOA; qtype CNAME at the owner: plain NODATA.
- Truncation (UDP): without EDNS, as many whole RRs as fit in 512 bytes,
  partial RRsets included (CNAME + 2 of 3 TXT), TC=1.  With EDNS, a
  truncated response has empty answer/authority/additional (question + OPT
  only), TC=1.  The limit is min(client payload, 1232).  An additional section that does not fit is cut RR by RR (A records
  first, then AAAA) with no TC (``mx`` without EDNS: 12 A + 1 AAAA, 504
  bytes).
- Flags: CD and RD echoed; AD cleared, except in truncated responses where
  the query's AD comes back; OPT always advertises 1232, echoes DO, carries
  no options; EDNS version 1 gets BADVERS.
- An RRset whose RRs have different TTLs in the file gets the first RR's
  TTL (the apex MX RRset: 7200).  dnspython's loader keeps the minimum.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Address = tuple[str, int]

#: Where the oracle zones live: ``<origin>.zone`` files plus ``include/``.
ORACLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle")
ZONE_DIR = os.path.join(ORACLE_DIR, "zones")
#: The zones in ``ZONE_DIR``, by origin (file name ``<origin>zone``).
ZONES = ["example.", "oracle.test."]
#: The project root: put on PYTHONPATH so twistd finds the working tree's plugin.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAMED_PATH = "/usr/sbin/named"
EDNS_PAYLOAD_BYTES = 1232
QUERY_TIMEOUT_SECONDS = 1.0
#: run_corpus gives up after this many queries in a row that one server left
#: unanswered (a dead server would otherwise cost a timeout per query).
MAX_CONSECUTIVE_FAILURES = 10
STARTUP_TIMEOUT_SECONDS = 20.0
POLL_SECONDS = 0.05              # between readiness probes of a starting server
STOP_TIMEOUT_SECONDS = 5.0

NAMED_OPTIONS = """\
    recursion no;
    minimal-responses no-auth-recursive;
    minimal-any yes;
    edns-udp-size {payload};
    max-udp-size {payload};
    answer-cookie no;
    notify no;
    dnssec-validation no;
    empty-zones-enable no;
    version none;
    hostname none;
    server-id none;
    automatic-interface-scan no;
"""


def zone_file_name(origin: str) -> str:
    """``oracle.test.`` -> ``oracle.test.zone`` (the smartdns layout)."""
    return origin.rstrip(".") + ".zone"


# ---------------------------------------------------------------------------
# Processes


@dataclass
class ServerProcess:
    """A DNS server subprocess on 127.0.0.1:``port`` (UDP and TCP)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: str
    log_path: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> Address:
        """The ``(host, port)`` to query."""
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its temp dir."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_SECONDS)
        shutil.rmtree(self.workdir, ignore_errors=True)


NamedProcess = ServerProcess


def free_port() -> int:
    """A loopback port that is free for both UDP and TCP right now."""
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
    raise RuntimeError("no free loopback port for UDP+TCP")


def wait_until_answers(
    server: ServerProcess, qname: str, timeout: float = STARTUP_TIMEOUT_SECONDS
) -> None:
    """Poll ``server`` with a SOA query until any DNS response comes back.

    Raises RuntimeError (with the server's log) if the process exits or
    ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(qname, "SOA")
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with status {server.proc.returncode} before "
                f"answering on port {server.port}:\n{server.log()}"
            )
        try:
            dns.query.udp(query, "127.0.0.1", timeout=0.25, port=server.port)
            return
        except (dns.exception.DNSException, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"{server.name} did not answer on port {server.port} within "
                f"{timeout:.0f}s:\n{server.log()}"
            )
        _wait_for_exit(server.proc, POLL_SECONDS)


def _wait_for_exit(proc: subprocess.Popen, seconds: float) -> None:
    """Block until the process exits or ``seconds`` pass (the next readiness probe comes then):
    a wait on the process itself, so a server that dies is noticed at once."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def named_conf(zone_dir: str, zones: Sequence[str], port: int, workdir: str) -> str:
    """The named.conf text for an authoritative-only instance (see module doc)."""
    zone_blocks = "".join(
        f'zone "{origin}" {{ type primary; file "{zone_file_name(origin)}"; }};\n'
        for origin in zones
    )
    return (
        "options {\n"
        f'    directory "{os.path.abspath(zone_dir)}";\n'
        f'    pid-file "{workdir}/named.pid";\n'
        f'    session-keyfile "{workdir}/session.key";\n'
        f'    managed-keys-directory "{workdir}";\n'
        f'    dump-file "{workdir}/named_dump.db";\n'
        f'    statistics-file "{workdir}/named.stats";\n'
        f'    memstatistics-file "{workdir}/named.memstats";\n'
        f"    listen-on port {port} {{ 127.0.0.1; }};\n"
        "    listen-on-v6 { none; };\n"
        + NAMED_OPTIONS.format(payload=EDNS_PAYLOAD_BYTES)
        + "};\n"
        "controls { };\n" + zone_blocks
    )


def start_named(
    zone_dir: str = ZONE_DIR, zones: Sequence[str] = ZONES, named: str = NAMED_PATH
) -> ServerProcess:
    """Run ``named -g`` on a free 127.0.0.1 port serving ``zones`` from ``zone_dir``.

    Raises unittest.SkipTest if ``named`` is not installed.  named runs as
    the current user: no ``-u`` (that option is only for dropping root, and
    it fails for a non-root user); as root it simply keeps running as root.
    Call ``stop()`` on the result.
    """
    if not (os.path.exists(named) and os.access(named, os.X_OK)):
        found = shutil.which("named")
        if found is None:
            raise unittest.SkipTest(
                f"BIND named not installed ({named} missing); "
                "apt-get install bind9 to run the oracle tests"
            )
        named = found
    last_error: Exception | None = None
    for _ in range(3):  # the free port can be taken between probe and bind
        workdir = tempfile.mkdtemp(prefix="oracle-named-")
        port = free_port()
        conf = os.path.join(workdir, "named.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(named_conf(zone_dir, zones, port, workdir))
        log_path = os.path.join(workdir, "named.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [named, "-g", "-4", "-n", "1", "-c", conf],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        server = ServerProcess("named", proc, port, workdir, log_path)
        try:
            wait_until_answers(server, zones[0])
        except RuntimeError as e:
            last_error = e
            server.stop()
            continue
        # named answers while still loading later zones: wait for every zone.
        for origin in zones[1:]:
            wait_for_soa(server, origin)
        return server
    raise RuntimeError(f"named did not start: {last_error}")


def wait_for_soa(server: ServerProcess, origin: str) -> None:
    """Poll until ``server`` answers ``origin SOA`` with NOERROR (zone loaded)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    query = dns.message.make_query(origin, "SOA")
    while time.monotonic() < deadline:
        try:
            r = dns.query.udp(query, "127.0.0.1", timeout=0.25, port=server.port)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
        except (dns.exception.DNSException, OSError):
            pass
        _wait_for_exit(server.proc, POLL_SECONDS)
    server.stop()
    raise RuntimeError(f"{server.name} never served {origin}:\n{server.log()}")


def smartdns_toml(zone_dir: str, port: int) -> str:
    """The smartdns config for an oracle run: zones only, no upstreams."""
    return (
        "[server]\n"
        f'listen = ["127.0.0.1:{port}"]\n'
        "[zones]\n"
        f'directory = "{os.path.abspath(zone_dir)}"\n'
        "[forward]\n"
        "upstreams = []\n"
    )


def start_smartdns(
    zone_dir: str = ZONE_DIR, zones: Sequence[str] = ZONES
) -> ServerProcess:
    """Run ``twistd -n --pidfile= smartdns --config <tmp>/smartdns.toml``.

    ``twistd`` is the one next to ``sys.executable`` (the venv's), and
    PYTHONPATH starts with the project root so the working tree's plugin and
    package are used rather than an installed copy.  Waits until every zone's
    SOA is served.  Call ``stop()`` on the result.
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(twistd):
        raise unittest.SkipTest(f"twistd not found next to {sys.executable}")
    last_error: Exception | None = None
    for _ in range(3):
        workdir = tempfile.mkdtemp(prefix="oracle-smartdns-")
        port = free_port()
        conf = os.path.join(workdir, "smartdns.toml")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(smartdns_toml(zone_dir, port))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PROJECT_ROOT, env.get("PYTHONPATH", "")) if p
        )
        log_path = os.path.join(workdir, "twistd.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [twistd, "-n", "--pidfile=", "smartdns", "--config", conf],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
            )
        server = ServerProcess("smartdns", proc, port, workdir, log_path)
        try:
            wait_until_answers(server, zones[0])
            for origin in zones:
                wait_for_soa(server, origin)
        except RuntimeError as e:
            last_error = e
            server.stop()
            if "Address already in use" in str(e):
                continue
            raise
        return server
    raise RuntimeError(f"smartdns did not start: {last_error}")


# ---------------------------------------------------------------------------
# The corpus
#
# Every query names the zone data it exercises (tests/oracle/zones).  Mixed
# case qnames check that the question is echoed byte for byte (0x20) and how
# the answer's names are cased.

QUERIES: list[tuple[str, str]] = [
    # --- example.: RFC 4592 section 2.2.1 and the answers of section 3.3 ---
    ("host3.example.", "MX"),  # wildcard match, additional host1 A
    ("host3.example.", "A"),  # wildcard NODATA
    ("host3.example.", "TXT"),  # wildcard match
    ("foo.bar.example.", "TXT"),  # wildcard two labels deep
    ("a.b.c.d.example.", "MX"),  # wildcard four labels deep
    ("host1.example.", "MX"),  # host1 exists: NODATA, no wildcard
    ("host1.example.", "A"),  # exact match
    ("x.host1.example.", "A"),  # below an existing name, no wildcard there
    ("sub.*.example.", "MX"),  # '*' label that is not a wildcard: NODATA
    ("sub.*.example.", "TXT"),  # exact match on it
    ("x.sub.*.example.", "TXT"),  # below it: NXDOMAIN
    ("_telnet._tcp.host1.example.", "SRV"),  # NXDOMAIN (closest encloser _tcp.host1)
    ("_ssh._tcp.host1.example.", "SRV"),  # exact, additional host1 A
    ("_ssh._tcp.host2.example.", "SRV"),  # exact, target has no address
    ("_tcp.host1.example.", "SRV"),  # empty non-terminal
    ("host2.example.", "A"),  # ENT: the wildcard does not apply
    ("_tcp.host2.example.", "A"),  # ENT
    ("ghost.*.example.", "MX"),  # NXDOMAIN
    ("*.example.", "TXT"),  # the wildcard owner itself, asked literally
    ("*.example.", "MX"),
    ("*.example.", "A"),  # NODATA at the wildcard owner
    ("host.subdel.example.", "A"),  # referral, no glue (out-of-zone NS)
    ("subdel.example.", "NS"),  # referral at the cut
    ("subdel.example.", "A"),  # referral at the cut
    ("subdel.example.", "DS"),  # parent-side NODATA for DS at the cut
    ("example.", "SOA"),
    ("example.", "NS"),  # out-of-zone name servers: no additional
    ("example.", "A"),  # NODATA at the apex
    ("HoSt3.ExAmPlE.", "MX"),  # 0x20 + wildcard synthesis
    ("FOO.BAR.EXAMPLE.", "TXT"),
    ("GhOsT.*.eXaMpLe.", "MX"),  # 0x20 + NXDOMAIN
    # --- oracle.test. apex -------------------------------------------------
    ("oracle.test.", "SOA"),
    ("oracle.test.", "NS"),  # additional ns1 A/AAAA, ns2 A
    ("oracle.test.", "MX"),  # mixed TTLs in the file, in-zone/other-zone/outside targets
    ("oracle.test.", "A"),
    ("oracle.test.", "AAAA"),  # NODATA
    ("oracle.test.", "TXT"),
    ("oracle.test.", "CAA"),
    ("oracle.test.", "HTTPS"),
    ("oracle.test.", "DS"),  # DS at the apex of a zone whose parent is not ours
    ("oracle.test.", "DNSKEY"),  # NODATA, unsigned zone
    # --- plain names ---------------------------------------------------------
    ("ns1.oracle.test.", "A"),
    ("ns1.oracle.test.", "AAAA"),
    ("ns2.oracle.test.", "A"),  # TTL 1d
    ("ns2.oracle.test.", "AAAA"),  # NODATA
    ("www.oracle.test.", "A"),  # two A records
    ("www.oracle.test.", "AAAA"),
    ("www.oracle.test.", "MX"),  # NODATA
    ("www.oracle.test.", "NS"),  # NODATA
    ("www.oracle.test.", "SOA"),  # NODATA below the apex
    ("www.oracle.test.", "DS"),  # NODATA
    ("mail.oracle.test.", "A"),
    ("mail.oracle.test.", "AAAA"),
    ("sip.oracle.test.", "A"),  # TTL 1h30m
    ("v6only.oracle.test.", "A"),  # NODATA
    ("v6only.oracle.test.", "AAAA"),
    ("nothere.oracle.test.", "A"),  # NXDOMAIN
    ("nothere.oracle.test.", "MX"),
    ("a.b.nothere.oracle.test.", "TXT"),  # NXDOMAIN, several labels deep
    ("WWW.ORACLE.TEST.", "A"),  # 0x20
    ("wWw.OrAcLe.TeSt.", "AAAA"),
    ("NoThErE.oRaClE.tEsT.", "A"),  # 0x20 + NXDOMAIN (SOA owner case)
    ("oRaClE.tEsT.", "NS"),  # 0x20 + additional section
    # --- case of names in answers ------------------------------------------
    ("mixed.oracle.test.", "A"),  # owner as written in the zone: MiXeD
    ("MIXED.ORACLE.TEST.", "A"),
    ("casealias.oracle.test.", "A"),  # CNAME owner and target keep the zone's case
    ("CASEMX.oracle.test.", "MX"),  # MX target and additional owner: MiXeD
    # --- CNAME ---------------------------------------------------------------
    ("alias.oracle.test.", "A"),  # CNAME + www A
    ("alias.oracle.test.", "AAAA"),
    ("alias.oracle.test.", "CNAME"),  # the CNAME itself, no chasing
    ("alias.oracle.test.", "MX"),  # CNAME + NODATA
    ("alias.oracle.test.", "TXT"),
    ("alias2.oracle.test.", "A"),  # two steps
    ("alias3.oracle.test.", "A"),  # three steps
    ("alias3.oracle.test.", "CNAME"),
    ("outside.oracle.test.", "A"),  # chain leaves every local zone
    ("outside.oracle.test.", "CNAME"),
    ("toexample.oracle.test.", "A"),  # chain into the other local zone
    ("towild.oracle.test.", "MX"),  # into the other zone's wildcard
    ("towild.oracle.test.", "A"),  # ... which has no A: NODATA there
    ("dangling.oracle.test.", "A"),  # CNAME to nothing: NXDOMAIN + CNAME
    ("dangling.oracle.test.", "CNAME"),
    ("tonodata.oracle.test.", "A"),  # CNAME + NODATA
    ("tonodata.oracle.test.", "AAAA"),
    ("tosub.oracle.test.", "A"),  # CNAME into a delegation
    ("mxalias.oracle.test.", "MX"),  # CNAME to the apex: MX + additional
    ("loop1.oracle.test.", "A"),  # CNAME loop
    ("loop1.oracle.test.", "CNAME"),
    ("selfloop.oracle.test.", "A"),
    ("c1.oracle.test.", "A"),  # eight-step chain
    ("l06.oracle.test.", "A"),  # 11 CNAMEs: the longest chain BIND follows
    ("l05.oracle.test.", "A"),  # 12 CNAMEs: SERVFAIL, the 12 CNAMEs kept
    ("l01.oracle.test.", "A"),  # sixteen-step chain
    ("AlIaS2.OrAcLe.TeSt.", "A"),  # 0x20 through a chain
    ("x.cname.oracle.test.", "A"),  # NXDOMAIN (no such subtree)
    # --- wildcards -----------------------------------------------------------
    ("anything.wild.oracle.test.", "A"),
    ("anything.wild.oracle.test.", "TXT"),
    ("anything.wild.oracle.test.", "MX"),  # wildcard MX + additional mail A/AAAA
    ("anything.wild.oracle.test.", "AAAA"),  # wildcard NODATA
    ("a.b.wild.oracle.test.", "A"),  # deeper
    ("exists.wild.oracle.test.", "A"),  # explicit sibling wins
    ("exists.wild.oracle.test.", "TXT"),  # NODATA, not the wildcard's TXT
    ("x.exists.wild.oracle.test.", "A"),  # below the sibling: NXDOMAIN
    ("wild.oracle.test.", "A"),  # the wildcard's parent is an ENT
    ("*.wild.oracle.test.", "TXT"),  # the wildcard owner asked literally
    ("foo.wc.oracle.test.", "A"),  # wildcard CNAME chased to www
    ("foo.wc.oracle.test.", "CNAME"),
    ("foo.wc.oracle.test.", "AAAA"),
    ("foo.wcout.oracle.test.", "A"),  # wildcard CNAME leaving the zone
    ("x.deep.ent.oracle.test.", "TXT"),  # wildcard below ENTs
    ("deep.ent.oracle.test.", "TXT"),  # ENT
    ("_svc._tcp.oracle.test.", "SRV"),  # SRV target only a wildcard matches
    ("FoO.WiLd.OrAcLe.TeSt.", "A"),  # 0x20 + synthesis
    ("FoO.Wc.OrAcLe.TeSt.", "A"),  # 0x20 + wildcard CNAME
    # --- empty non-terminals -----------------------------------------------
    ("a.b.c.ent.oracle.test.", "A"),
    ("b.c.ent.oracle.test.", "A"),  # ENT
    ("c.ent.oracle.test.", "TXT"),  # ENT
    ("ent.oracle.test.", "A"),  # ENT
    ("x.b.c.ent.oracle.test.", "A"),  # NXDOMAIN below an ENT
    ("B.c.EnT.oracle.test.", "AAAA"),  # 0x20 + ENT
    # --- DNAME ---------------------------------------------------------------
    ("old.oracle.test.", "DNAME"),  # the DNAME owner itself
    ("old.oracle.test.", "A"),  # other data at the owner
    ("old.oracle.test.", "AAAA"),  # NODATA at the owner (no substitution)
    ("old.oracle.test.", "CNAME"),
    ("host.old.oracle.test.", "A"),  # DNAME + synthesized CNAME + A (not the occluded A)
    ("host.old.oracle.test.", "CNAME"),
    ("host.old.oracle.test.", "DNAME"),
    ("mail.old.oracle.test.", "MX"),  # + additional
    ("nothere.old.oracle.test.", "A"),  # substitution leads to NXDOMAIN
    ("a.b.old.oracle.test.", "A"),
    ("new.oracle.test.", "A"),  # DNAME target is an ENT
    ("host.new.oracle.test.", "A"),
    ("host1.ex.oracle.test.", "A"),  # DNAME into the other local zone
    ("foo.ex.oracle.test.", "TXT"),  # ... onto its wildcard
    ("x.ext.oracle.test.", "A"),  # DNAME out of every local zone
    (  # substitution would exceed 255 octets: YXDOMAIN
        "c" * 63 + "." + "d" * 63 + "." + "e" * 63 + ".y.oracle.test.",
        "A",
    ),
    ("HoSt.OlD.oRaClE.TeSt.", "A"),  # 0x20 + DNAME synthesis
    # --- delegations ---------------------------------------------------------
    ("sub.oracle.test.", "NS"),  # referral with in-bailiwick glue
    ("sub.oracle.test.", "A"),
    ("sub.oracle.test.", "SOA"),
    ("sub.oracle.test.", "DS"),  # answered by the parent, aa=1
    ("sub.oracle.test.", "TXT"),
    ("host.sub.oracle.test.", "A"),  # below the cut: referral
    ("www.sub.oracle.test.", "A"),  # occluded data: referral
    ("ns1.sub.oracle.test.", "A"),  # glue is not an answer: referral
    ("ns1.sub.oracle.test.", "AAAA"),
    ("ns2.sub.oracle.test.", "A"),
    ("a.b.sub.oracle.test.", "MX"),
    ("x.sub.oracle.test.", "DS"),  # DS below the cut: referral
    ("sub2.oracle.test.", "NS"),  # sibling glue + in-zone NS target
    ("host.sub2.oracle.test.", "A"),
    ("sub3.oracle.test.", "NS"),  # no glue
    ("sub3.oracle.test.", "DS"),  # unsigned delegation: NODATA
    ("host.sub3.oracle.test.", "A"),
    ("sub4.oracle.test.", "NS"),  # NS target is in-zone data: no additional
    ("host.sub4.oracle.test.", "A"),
    ("SuB.oRaClE.tEsT.", "NS"),  # 0x20 + referral
    ("HOST.SUB.ORACLE.TEST.", "A"),
    # --- RR types --------------------------------------------------------------
    ("txt.oracle.test.", "TXT"),  # quoted ';' and '(', escapes, empty string
    ("quoted.oracle.test.", "TXT"),  # from $INCLUDE, parentheses + comments
    ("utf8.oracle.test.", "TXT"),  # non-ASCII bytes
    ("ptr.oracle.test.", "PTR"),
    ("_sip._udp.oracle.test.", "SRV"),  # additional sip A
    ("naptr.oracle.test.", "NAPTR"),
    ("host.oracle.test.", "SSHFP"),
    ("host.oracle.test.", "HINFO"),
    ("host.oracle.test.", "A"),
    ("_443._tcp.www.oracle.test.", "TLSA"),
    ("_tcp.www.oracle.test.", "TLSA"),  # ENT
    ("svc.oracle.test.", "HTTPS"),  # in-zone target www
    ("svc.oracle.test.", "TXT"),  # from $INCLUDE with an origin argument
    ("api.svc.oracle.test.", "A"),
    ("api.svc.oracle.test.", "AAAA"),
    ("_dns.resolver.oracle.test.", "SVCB"),
    ("unk.oracle.test.", "TYPE65534"),  # RFC 3597 unknown type
    ("unk.oracle.test.", "TYPE65533"),  # empty RDATA
    ("unk.oracle.test.", "TYPE65532"),  # NODATA for an unknown type
    ("loc.oracle.test.", "LOC"),
    ("uri.oracle.test.", "URI"),
    ("rp.oracle.test.", "RP"),
    ("dot\\.label.oracle.test.", "TXT"),  # a label holding a '.'
    ("last.oracle.test.", "TXT"),  # after the $ORIGIN changes, TTL 1w
    ("mx01.mx.oracle.test.", "A"),  # $GENERATE
    ("mx12.mx.oracle.test.", "AAAA"),
    # --- sizes and truncation ----------------------------------------------------
    ("bigtxt.oracle.test.", "TXT"),  # ~690 bytes: TC=1 only without EDNS
    ("hugetxt.oracle.test.", "TXT"),  # >2 KB: TC=1 over UDP even with EDNS
    ("tobig.oracle.test.", "TXT"),  # CNAME + big RRset
    ("mx.oracle.test.", "MX"),  # 12 MX targets: additional does not fit in 512
    ("BiGtXt.OrAcLe.TeSt.", "TXT"),
]

#: ANY, compared over TCP only (see ``minimal-any`` above): every RRset at the
#: name, CNAME and DNAME owners, wildcards, referrals, NXDOMAIN and ENTs.
ANY_QUERIES: list[tuple[str, str]] = [
    (name, "ANY") for name in (
        "oracle.test.", "www.oracle.test.", "host.oracle.test.", "alias.oracle.test.",
        "anything.wild.oracle.test.", "nothere.oracle.test.", "sub.oracle.test.", "host3.example.",
        "old.oracle.test.", "host.old.oracle.test.", "svc.oracle.test.", "mail.oracle.test.",
        "b.c.ent.oracle.test.", "foo.wc.oracle.test.", "txt.oracle.test.", "example.",
        "CaseMX.oracle.test.", "_sip._udp.oracle.test.", "ns1.oracle.test.", "HoSt.OrAcLe.TeSt.",
    )
]

#: Queries kept out of the exact comparison because smartdns differs from
#: BIND there by design: (qname, qtype, transport or None for both, reason).
KNOWN_DIFFERENT: list[tuple[str, str, str | None, str]] = [
    ("oracle.test.", "ANY", "udp",
     "both answer one RRset (RFC 8482); BIND picks the first in its database order, smartdns a "
     "CNAME, else the lowest type"),
    ("oracle.test.", "AXFR", "tcp", "unsigned transfers: BIND allows them by default, smartdns refuses"),
    ("oracle.test.", "AXFR", "udp", "BIND: FORMERR (AXFR needs TCP); smartdns: REFUSED, as over TCP"),
    ("oracle.test.", "IXFR", "tcp", "unsigned transfers: BIND allows them by default, smartdns refuses"),
    ("oracle.test.", "IXFR", "udp", "BIND: FORMERR (no SOA in authority); smartdns: REFUSED"),
    ("www.example.net.", "A", None,
     "outside local zones: BIND (recursion no) says REFUSED, smartdns forwards"),
    ("version.bind.", "TXT", None,
     "CH class: BIND answers from its built-in CH zone (version none -> REFUSED)"),
]


# ---------------------------------------------------------------------------
# Comparison

_SECTIONS = ("answer", "authority", "additional")
# Everything in the header flags but RA: BIND with ``recursion no`` never sets
# it, smartdns sets it for clients allowed to recurse.
_FLAGS_COMPARED = 0xFFFF & ~dns.flags.RA & ~0x7800 & ~0x000F  # opcode, rcode: compared separately


@dataclass(frozen=True)
class Outcome:
    """One server's response (or the error instead of one), as seen by a client."""

    response: dns.message.Message | None
    error: str | None


#: dig's default query flags (RD and AD); dnspython's default is RD alone.
DIG_FLAGS = dns.flags.RD | dns.flags.AD


def make_query(
    qname: str,
    qtype: str,
    edns: bool,
    flags: int = dns.flags.RD,
    dnssec_ok: bool = False,
) -> dns.message.Message:
    """A query with header ``flags`` (RD by default), EDNS(0) at 1232 if ``edns``.

    ``dnssec_ok`` sets the DO bit (and so implies EDNS).
    """
    name = dns.name.from_text(qname)
    rdtype = dns.rdatatype.from_text(qtype)
    if edns or dnssec_ok:
        return dns.message.make_query(
            name, rdtype, use_edns=0, payload=EDNS_PAYLOAD_BYTES,
            want_dnssec=dnssec_ok, flags=flags,
        )
    return dns.message.make_query(name, rdtype, use_edns=False, flags=flags)


def ask(
    address: Address, query: dns.message.Message, transport: str
) -> Outcome:
    """Send ``query`` over ``transport`` ('udp' or 'tcp'); never raises for DNS errors."""
    host, port = address
    try:
        if transport == "udp":
            r = dns.query.udp(
                query, host, timeout=QUERY_TIMEOUT_SECONDS, port=port,
                one_rr_per_rrset=True, raise_on_truncation=False,
            )
        elif transport == "tcp":
            r = dns.query.tcp(
                query, host, timeout=QUERY_TIMEOUT_SECONDS, port=port,
                one_rr_per_rrset=True,
            )
        else:
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
    except (dns.exception.DNSException, OSError) as e:
        return Outcome(None, f"{type(e).__name__}: {e}")
    return Outcome(r, None)


def _flags_text(flags: int) -> str:
    return dns.flags.to_text(flags & _FLAGS_COMPARED) or "(none)"


def _question_bytes(m: dns.message.Message) -> bytes:
    """The question section as it was on the wire (names keep their case)."""
    out = b""
    for rrset in m.question:
        out += rrset.name.to_wire() + struct.pack("!HH", rrset.rdtype, rrset.rdclass)
    return out


def _rr_lines(
    section: Iterable[dns.rrset.RRset], with_rdata: bool = True
) -> list[str]:
    """One master-file line per RR, case preserved, TTL included.

    Without ``with_rdata`` only ``owner TTL class type`` is kept (used for
    truncated responses, see ``diff_responses``).
    """
    lines = []
    for rrset in section:
        head = (
            f"{rrset.name.to_text()} {rrset.ttl} "
            f"{dns.rdataclass.to_text(rrset.rdclass)} "
            f"{dns.rdatatype.to_text(rrset.rdtype)}"
        )
        for rdata in rrset:
            lines.append(f"{head} {rdata.to_text()}" if with_rdata else head)
    return lines


def _multiset_diff(
    label: str, a: list[str], b: list[str], names: tuple[str, str]
) -> list[str]:
    ca, cb = collections.Counter(a), collections.Counter(b)
    if ca == cb:
        return []
    if collections.Counter(x.lower() for x in a) == collections.Counter(
        x.lower() for x in b
    ):
        kind = f"{label}: same RRs but the case of names differs"
    else:
        kind = f"{label}: RRs differ"
    out = [kind]
    for line in sorted((ca - cb).elements()):
        out.append(f"  only {names[0]}: {line}")
    for line in sorted((cb - ca).elements()):
        out.append(f"  only {names[1]}: {line}")
    return out


def diff_responses(
    a: dns.message.Message, b: dns.message.Message, names: tuple[str, str] = ("a", "b")
) -> list[str]:
    """What a client could tell apart in two responses (RA and RR order aside).

    When both responses are truncated (TC=1), RRs are compared by owner, TTL,
    class and type only, i.e. by how many RRs of each RRset made it in: BIND
    fills a truncated answer with as many whole RRs as fit (without EDNS), and
    which members of a partly included RRset those are follows its RRset
    rotation, so they differ even between two BIND instances.
    """
    diffs: list[str] = []
    na, nb = names
    if a.rcode() != b.rcode():
        diffs.append(
            f"rcode: {na}={dns.rcode.to_text(a.rcode())} {nb}={dns.rcode.to_text(b.rcode())}"
        )
    if a.opcode() != b.opcode():
        diffs.append(f"opcode: {na}={a.opcode()} {nb}={b.opcode()}")
    if a.flags & _FLAGS_COMPARED != b.flags & _FLAGS_COMPARED:
        diffs.append(
            f"flags (ra ignored): {na}={_flags_text(a.flags)} {nb}={_flags_text(b.flags)}"
        )
    qa, qb = _question_bytes(a), _question_bytes(b)
    if qa != qb:
        diffs.append(
            f"question: {na}={[q.to_text() for q in a.question]} "
            f"{nb}={[q.to_text() for q in b.question]} (bytes {qa!r} vs {qb!r})"
        )
    # EDNS: present or not, version, advertised UDP size, flags (DO), options.
    ea = (a.edns, a.payload, a.ednsflags, [o.to_text() for o in a.options]) if a.edns >= 0 else None
    eb = (b.edns, b.payload, b.ednsflags, [o.to_text() for o in b.options]) if b.edns >= 0 else None
    if ea != eb:
        def show(e: tuple[object, ...] | None) -> str:
            if e is None:
                return "no OPT"
            return f"version={e[0]} udp={e[1]} flags={e[2]:#x} options={e[3]}"
        diffs.append(f"EDNS: {na}: {show(ea)}; {nb}: {show(eb)}")
    with_rdata = not (a.flags & b.flags & dns.flags.TC)
    for section in _SECTIONS:
        diffs += _multiset_diff(
            section if with_rdata else f"{section} (truncated: RR counts per RRset)",
            _rr_lines(getattr(a, section), with_rdata),
            _rr_lines(getattr(b, section), with_rdata),
            names,
        )
    return diffs


def compare(
    addr_a: Address,
    addr_b: Address,
    qname: str,
    qtype: str,
    transport: str,
    edns: bool,
    names: tuple[str, str] = ("a", "b"),
    flags: int = dns.flags.RD,
    dnssec_ok: bool = False,
) -> list[str]:
    """Send one query to both servers; return the differences (empty: indistinguishable).

    The query has RD set (as dig sends it; ``flags`` overrides the header
    flags, e.g. ``DIG_FLAGS`` adds AD like dig's default) and, if ``edns``,
    an OPT with a 1232-byte payload (``dnssec_ok`` adds the DO bit).

    Compared: rcode (extended included), opcode, every header flag but RA, the
    question section byte for byte, the OPT record, and each section as a
    multiset of RRs with owner, TTL, class, type and RDATA, case preserved.
    Not compared: RA (see module doc) and the order of RRs within a section
    (RRset order is the server's choice; BIND's default rrset-order is random).
    """
    query = make_query(qname, qtype, edns, flags, dnssec_ok)
    oa = ask(addr_a, query, transport)
    ob = ask(addr_b, query, transport)
    na, nb = names
    if oa.response is None or ob.response is None:
        if oa.error is not None and ob.error is not None:
            return []  # both failed the same way a client would see: no answer
        return [
            f"response: {na}={oa.error or 'answered'} {nb}={ob.error or 'answered'}"
        ]
    return diff_responses(oa.response, ob.response, names)


def run_corpus(
    addr_a: Address,
    addr_b: Address,
    queries: Sequence[tuple[str, str]] = QUERIES,
    transports: Sequence[str] = ("udp", "tcp"),
    edns_modes: Sequence[bool] = (False, True),
    names: tuple[str, str] = ("a", "b"),
    flags: int = dns.flags.RD,
    dnssec_ok: bool = False,
) -> tuple[int, int, list[str]]:
    """``compare`` every query in every transport/EDNS mode.

    Returns ``(matches, total, diffs)``; each entry of ``diffs`` is a
    multi-line text for one mismatching case, headed
    ``<qname> <qtype> <transport> edns=<bool> flags=<flags>``.  After
    ``MAX_CONSECUTIVE_FAILURES`` unanswered queries in a row the remaining
    cases are counted as mismatches without being sent.
    """
    matches = total = 0
    diffs: list[str] = []
    silent = 0
    for transport in transports:
        for edns in edns_modes:
            for qname, qtype in queries:
                total += 1
                if silent >= MAX_CONSECUTIVE_FAILURES:
                    continue
                d = compare(
                    addr_a, addr_b, qname, qtype, transport, edns, names,
                    flags, dnssec_ok,
                )
                silent = silent + 1 if d and d[0].startswith("response:") else 0
                if silent == MAX_CONSECUTIVE_FAILURES:
                    diffs.append(
                        f"aborted: {silent} queries in a row went unanswered; "
                        "the remaining cases were not sent"
                    )
                if d:
                    diffs.append(
                        f"{qname} {qtype} {transport} edns={edns}"
                        f" flags={dns.flags.to_text(flags) or '(none)'}"
                        f"{' do' if dnssec_ok else ''}:\n  " + "\n  ".join(d)
                    )
                else:
                    matches += 1
    return matches, total, diffs


#: ``run_corpus`` keyword sets for the client behaviours worth comparing: the
#: plain corpus (RD, UDP and TCP, with and without EDNS), dig's default flags
#: (RD+AD), a non-recursive query (RD=0), and a DNSSEC-aware one (DO+CD).
CLIENT_VARIANTS: list[dict[str, object]] = [
    {},
    {"flags": DIG_FLAGS},
    {"flags": 0},
    {"flags": dns.flags.RD | dns.flags.CD, "dnssec_ok": True, "edns_modes": (True,)},
]



# ---------------------------------------------------------------------------
# Protocol corners: raw packets BIND and smartdns must answer alike
#
# Each case is a whole query (its ID is the case's index), sent as is over
# UDP and TCP.  Measured with BIND 9.18 (``NAMED_OPTIONS``):
#
# - Opcodes other than QUERY, NOTIFY, UPDATE: NOTIMP, every flag clear but QR,
#   no question, the OPT kept.  EDNS version 1 is BADVERS first, a malformed
#   message FORMERR (without OPT), a TSIG NOTAUTH; without a question NOTIMP.
# - FORMERR from parsing (two questions, two OPTs, an OPT or TSIG out of place,
#   a record cut short) has no OPT; the question is echoed when it was read
#   (never for two questions, except an UPDATE's first zone).  A QUERY, NOTIFY
#   or UPDATE without a question is FORMERR *with* the OPT.  Bytes after the
#   last record are ignored.
# - A TSIG with an unknown key: NOTAUTH, RD/CD echoed (QUERY only), the
#   question and OPT, then an unsigned TSIG: key and algorithm in lower case,
#   class ANY, TTL 0, time now, fudge 300, no MAC, the query's ID, BADKEY.
#   A TSIG not last, not class ANY, twice, or badly formed: FORMERR.
#   (Known difference: a normal query signed with a key smartdns holds in
#   ``[[tsig]]`` still gets NOTAUTH/BADKEY; BIND would answer it signed.)
# - NOTIFY for a zone BIND is primary for: NOERROR, AA; any other name:
#   NOTAUTH; another type: FORMERR; class CH: NOTIMP.  UPDATE: REFUSED for
#   its zones, NOTAUTH otherwise, FORMERR/NOTIMP as NOTIFY.  Neither echoes RD.
# - REFUSED (CH for an IN name, outside every zone, HS) keeps the OPT.  Class
#   CH is not in the corpus: BIND answers it from its built-in ``_bind`` view,
#   rate-limited to 3 responses a second with slip 0, so it drops some.

def _raw_header(flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHH", flags, qd, an, ns, ar)    # the ID is added per case


def _raw_question(name: str = "www.oracle.test.", rdtype: int = 1, rdclass: int = 1) -> bytes:
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", rdtype, rdclass)


def _raw_opt(version: int = 0, do: bool = False, owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", 41, EDNS_PAYLOAD_BYTES, version << 16 | (0x8000 if do else 0), 0)


def _raw_tsig(owner: str = "unknown-key.", algorithm: str = "hmac-sha256.", rdclass: int = 255,
              other: bytes = b"", other_length: int | None = None) -> bytes:
    """A TSIG with a made-up 32-byte MAC: no server here knows the key."""
    rdata = (dns.name.from_text(algorithm).to_wire() + struct.pack("!HIH", 0, 1_700_000_000, 300)
             + struct.pack("!H", 32) + b"\x01" * 32
             + struct.pack("!HHH", 4242, 0, len(other) if other_length is None else other_length) + other)
    return dns.name.from_text(owner).to_wire() + struct.pack("!HHIH", 250, rdclass, 0, len(rdata)) + rdata


_EVERY_FLAG = 0x0100 | 0x0010 | 0x0020 | 0x0400 | 0x0200 | 0x0080 | 0x0040   # RD CD AD AA TC RA Z
_Q, _OPT, _TSIG = _raw_question(), _raw_opt(), _raw_tsig()


def _op(opcode: int, flags: int = 0x0100) -> int:
    return opcode << 11 | flags


def _soa(name: str, rdclass: int = 1) -> bytes:
    return _raw_question(name, 6, rdclass)


#: (label, query bytes after the ID).
RAW_CASES: list[tuple[str, bytes]] = [
    # unknown opcodes
    ("opcode 15, every flag, question + OPT", _raw_header(_op(15, _EVERY_FLAG), ar=1) + _Q + _OPT),
    ("opcode 15, every flag, question", _raw_header(_op(15, _EVERY_FLAG)) + _Q),
    ("opcode 15, header only", _raw_header(_op(15, _EVERY_FLAG), qd=0)),
    ("opcode 15, no question, OPT", _raw_header(_op(15), qd=0, ar=1) + _OPT),
    ("opcode 15, OPT with DO", _raw_header(_op(15), ar=1) + _Q + _raw_opt(do=True)),
    ("opcode 1 (IQUERY) + OPT", _raw_header(_op(1), ar=1) + _Q + _OPT),
    ("opcode 2 (STATUS) + OPT", _raw_header(_op(2), ar=1) + _Q + _OPT),
    ("opcode 3 + OPT", _raw_header(_op(3), ar=1) + _Q + _OPT),
    ("opcode 6 (DSO) + OPT", _raw_header(_op(6), ar=1) + _Q + _OPT),
    ("opcode 15, EDNS version 1", _raw_header(_op(15), ar=1) + _Q + _raw_opt(version=1)),
    ("opcode 15, garbage record", _raw_header(_op(15), ar=1) + _Q + b"\x01\x02"),
    ("opcode 15, two OPTs", _raw_header(_op(15), ar=2) + _Q + _OPT + _OPT),
    ("opcode 15, two questions", _raw_header(_op(15), qd=2, ar=1) + _Q + _Q + _OPT),
    ("opcode 15, trailing bytes", _raw_header(_op(15), ar=1) + _Q + _OPT + b"xx"),
    ("opcode 15, TSIG", _raw_header(_op(15), ar=2) + _Q + _OPT + _TSIG),
    ("opcode 15, TSIG, no question", _raw_header(_op(15), qd=0, ar=1) + _TSIG),
    # malformed QUERY
    ("two questions + OPT", _raw_header(0x0110, qd=2, ar=1) + _Q + _Q + _OPT),
    ("two questions", _raw_header(0x0100, qd=2) + _Q + _Q),
    ("two different questions + OPT",
     _raw_header(0x0100, qd=2, ar=1) + _Q + _raw_question("mail.oracle.test.") + _OPT),
    ("no question + OPT", _raw_header(0x0110, qd=0, ar=1) + _OPT),
    ("no question", _raw_header(0x0100, qd=0)),
    ("two OPTs", _raw_header(0x0110, ar=2) + _Q + _OPT + _OPT),
    ("trailing bytes after OPT", _raw_header(0x0100, ar=1) + _Q + _OPT + b"\x00\x00\x01"),
    ("trailing bytes, no OPT", _raw_header(0x0100) + _Q + b"junk"),
    ("OPT in the answer section", _raw_header(0x0100, an=1) + _Q + _OPT),
    ("OPT with an owner name", _raw_header(0x0100, ar=1) + _Q + _raw_opt(owner=dns.name.from_text("x.").to_wire())),
    ("question cut short", _raw_header(0x0100) + _Q[:-2]),
    ("ARCOUNT larger than the records", _raw_header(0x0100, ar=2) + _Q + _OPT),
    ("EDNS version 1, DO", _raw_header(0x0100, ar=1) + _Q + _raw_opt(version=1, do=True)),
    # TSIG
    ("TSIG, unknown key", _raw_header(0x0100, ar=1) + _Q + _TSIG),
    ("TSIG, unknown key, OPT", _raw_header(0x0100, ar=2) + _Q + _OPT + _TSIG),
    ("TSIG, RD CD AD", _raw_header(0x0130, ar=2) + _Q + _OPT + _raw_tsig(algorithm="hmac-md5.sig-alg.reg.int.")),
    ("TSIG, RD=0, outside every zone",
     _raw_header(0, ar=1) + _raw_question("nothere.example.net.") + _TSIG),
    ("TSIG, names in upper case",
     _raw_header(0x0100, ar=1) + _Q + _raw_tsig("UnKnOwN-KeY.", "HMAC-SHA256.")),
    ("TSIG, unknown algorithm", _raw_header(0x0100, ar=1) + _Q + _raw_tsig(algorithm="foo.bar.")),
    ("TSIG, trailing bytes", _raw_header(0x0100, ar=1) + _Q + _TSIG + b"zz"),
    ("TSIG + EDNS version 1", _raw_header(0x0100, ar=2) + _Q + _raw_opt(version=1) + _TSIG),
    ("TSIG, not last", _raw_header(0x0100, ar=2) + _Q + _TSIG + _OPT),
    ("TSIG in the answer section", _raw_header(0x0100, an=1) + _Q + _TSIG),
    ("TSIG, class IN", _raw_header(0x0100, ar=1) + _Q + _raw_tsig(rdclass=1)),
    ("two TSIGs", _raw_header(0x0100, ar=2) + _Q + _TSIG + _TSIG),
    ("TSIG, other length wrong", _raw_header(0x0100, ar=1) + _Q + _raw_tsig(other=b"abcdef", other_length=2)),
    ("TSIG, RDATA too short", _raw_header(0x0100, ar=1) + _Q + b"\x01k\x00" + struct.pack("!HHIH", 250, 255, 0, 3)
     + b"abc"),
    ("TSIG, empty RDATA", _raw_header(0x0100, ar=1) + _Q + b"\x01k\x00" + struct.pack("!HHIH", 250, 255, 0, 0)),
    ("TSIG, no question", _raw_header(0x0100, qd=0, ar=1) + _TSIG),
    ("TSIG, two questions", _raw_header(0x0100, qd=2, ar=1) + _Q + _Q + _TSIG),
    ("TSIG on NOTIFY", _raw_header(_op(4, 0x0500), ar=1) + _soa("oracle.test.") + _TSIG),
    # NOTIFY
    *[(f"NOTIFY {name} SOA{' + OPT' if opt else ''}",
       _raw_header(_op(4, _EVERY_FLAG), ar=int(opt)) + _soa(name) + (_OPT if opt else b""))
      for name in ("oracle.test.", "example.", "example.net.", "www.oracle.test.", "OrAcLe.TeSt.") for opt in (False, True)],
    ("NOTIFY, no question, OPT", _raw_header(_op(4, 0x0500), qd=0, ar=1) + _OPT),
    ("NOTIFY, two questions, OPT", _raw_header(_op(4, 0x0500), qd=2, ar=1) + _soa("oracle.test.") + _soa("example.") + _OPT),
    ("NOTIFY, EDNS version 1", _raw_header(_op(4, 0x0500), ar=1) + _soa("oracle.test.") + _raw_opt(version=1)),
    ("NOTIFY, type A", _raw_header(_op(4, 0x0400), ar=1) + _raw_question("oracle.test.") + _OPT),
    ("NOTIFY, class CH", _raw_header(_op(4, 0x0400), ar=1) + _soa("oracle.test.", 3) + _OPT),
    ("NOTIFY with the new SOA in the answer section",
     _raw_header(_op(4, 0x0400), an=1) + _soa("oracle.test.") + dns.name.from_text("oracle.test.").to_wire()
     + struct.pack("!HHIH", 6, 1, 60, 22) + b"\x00\x00" + b"\x00" * 20),
    # UPDATE
    *[(f"UPDATE {name}{' + OPT' if opt else ''}",
       _raw_header(_op(5, _EVERY_FLAG), ar=int(opt)) + _soa(name) + (_OPT if opt else b""))
      for name in ("oracle.test.", "example.", "example.net.", "www.oracle.test.") for opt in (False, True)],
    ("UPDATE, no zone, OPT", _raw_header(_op(5, 0x0500), qd=0, ar=1) + _OPT),
    ("UPDATE, two zones, OPT", _raw_header(_op(5), qd=2, ar=1) + _soa("oracle.test.") + _soa("example.") + _OPT),
    ("UPDATE, one zone twice", _raw_header(_op(5), qd=2, ar=1) + _soa("oracle.test.") + _soa("oracle.test.") + _OPT),
    ("UPDATE, EDNS version 1", _raw_header(_op(5, 0x0500), ar=1) + _soa("oracle.test.") + _raw_opt(version=1)),
    ("UPDATE, class CH", _raw_header(_op(5, 0), ar=1) + _soa("oracle.test.", 3) + _OPT),
    ("UPDATE, zone type A", _raw_header(_op(5, 0), ar=1) + _raw_question("oracle.test.") + _OPT),
    ("UPDATE adding an A record", _raw_header(_op(5, 0), ns=1) + _soa("oracle.test.")
     + dns.name.from_text("new.oracle.test.").to_wire() + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([192, 0, 2, 9])),
    ("UPDATE elsewhere adding an A record", _raw_header(_op(5, 0), ns=1) + _soa("example.net.")
     + dns.name.from_text("new.example.net.").to_wire() + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([192, 0, 2, 9])),
    # refusals keep the OPT
    ("qtype OPT", _raw_header(0x0100, ar=1) + _raw_question("www.oracle.test.", 41) + _OPT),
]


def ask_raw(address: Address, data: bytes, transport: str) -> bytes | None:
    """Send ``data`` as it is; the raw response, or None when none came back in time."""
    try:
        if transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(QUERY_TIMEOUT_SECONDS)
                sock.sendto(data, address)
                return sock.recvfrom(65535)[0]
        with socket.create_connection(address, timeout=QUERY_TIMEOUT_SECONDS) as conn:
            conn.sendall(struct.pack("!H", len(data)) + data)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = conn.recv(65535)
                if not chunk:
                    return None
                buf += chunk
            return buf[2:2 + struct.unpack("!H", buf[:2])[0]]
    except OSError:
        return None


#: How far apart the two TSIG "time signed" values may be (both are "now").
TSIG_TIME_SLACK_SECONDS = 60


def diff_raw(a: bytes, b: bytes, names: tuple[str, str] = ("a", "b")) -> list[str]:
    """What a client could tell apart in two raw responses: the header (RA aside) and section
    counts, then ``diff_responses`` on what dnspython reads (TSIG left unverified), and the
    TSIG record field by field except its time signed, which need only be close.  Messages
    dnspython cannot read are compared byte for byte after the ID (RA masked)."""
    na, nb = names
    ha, hb = struct.unpack("!HHHHHH", a[:12]), struct.unpack("!HHHHHH", b[:12])
    diffs = []
    if (ha[0], ha[1] & ~dns.flags.RA) + ha[2:] != (hb[0], hb[1] & ~dns.flags.RA) + hb[2:]:
        diffs.append(f"header (id, flags without ra, counts): {na}={ha} {nb}={hb}")
    try:
        ma = dns.message.from_wire(a, keyring=False)
        mb = dns.message.from_wire(b, keyring=False)
    except dns.exception.DNSException:
        unmasked_a = a[2:3] + bytes([a[3] & 0x7F]) + a[4:]
        unmasked_b = b[2:3] + bytes([b[3] & 0x7F]) + b[4:]
        if unmasked_a != unmasked_b:
            diffs.append(f"bytes after the ID: {na}={a[2:].hex()} {nb}={b[2:].hex()}")
        return diffs
    diffs += diff_responses(ma, mb, names)
    ta, tb = ma.tsig, mb.tsig
    if (ta is None) != (tb is None):
        diffs.append(f"TSIG: {na}={'present' if ta else 'absent'} {nb}={'present' if tb else 'absent'}")
    elif ta is not None and tb is not None:
        def fields(rrset: dns.rrset.RRset) -> tuple[object, ...]:
            r = rrset[0]
            return (rrset.name.to_text(), rrset.rdclass, rrset.ttl, r.algorithm.to_text(), r.fudge, r.mac,
                    r.original_id, r.error, r.other)
        if fields(ta) != fields(tb):
            diffs.append(f"TSIG (time aside): {na}={fields(ta)} {nb}={fields(tb)}")
        if abs(ta[0].time_signed - tb[0].time_signed) > TSIG_TIME_SLACK_SECONDS:
            diffs.append(f"TSIG time signed: {na}={ta[0].time_signed} {nb}={tb[0].time_signed}")
    return diffs


def run_raw_cases(
    addr_a: Address, addr_b: Address, cases: Sequence[tuple[str, bytes]] = RAW_CASES,
    transports: Sequence[str] = ("udp", "tcp"), names: tuple[str, str] = ("a", "b"),
) -> tuple[int, int, list[str]]:
    """Send every raw case to both servers (the ID is the case's index); like ``run_corpus``."""
    matches = total = 0
    diffs: list[str] = []
    for transport in transports:
        for index, (label, body) in enumerate(cases):
            total += 1
            data = struct.pack("!H", 0x5000 + index) + body
            ra, rb = ask_raw(addr_a, data, transport), ask_raw(addr_b, data, transport)
            if ra is None or rb is None:
                d = [] if ra is None and rb is None else [
                    f"response: {names[0]}={'none' if ra is None else 'answered'} "
                    f"{names[1]}={'none' if rb is None else 'answered'}"]
            else:
                d = diff_raw(ra, rb, names)
            if d:
                diffs.append(f"{label} ({transport}):\n  " + "\n  ".join(d))
            else:
                matches += 1
    return matches, total, diffs
