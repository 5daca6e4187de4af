"""Tests for smartdns.secondary: AXFR from BIND named as the primary with a TSIG key, atomic save;
IXFR and its AXFR fallbacks against a small primary made of dnspython messages; and the running
server as BIND's secondary (smartdns.refresh): per-line views, nsupdate at BIND brought over by
NOTIFY and IXFR, BIND answering IXFR with the whole zone, expire, restart."""
from __future__ import annotations

import gc
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.task import deferLater
from twisted.trial import unittest

from smartdns.config import SecondaryZone, parse_config
from smartdns.background import SWITCH_INTERVAL_SECONDS as TRANSFER_SWITCH_INTERVAL_SECONDS, quiet
from smartdns.secondary import (AXFR, IXFR, IXFR_FULL, TransferError, refresh,
                                save, saved_path, transfer)
from smartdns.service import SmartDNSService
from smartdns.snapshot import build_snapshot
from smartdns.tsig import TsigKey, parse_secret
from tests.support import query, write_tree

SECRET = "cHJpbWFyeS1zZWNyZXQtZm9yLXRlc3Rz"      # "primary-secret-for-tests"
KEY = TsigKey("fleet-key", "hmac-sha256", parse_secret(SECRET))
ZONE = """\
$TTL 300
@    IN SOA ns1 hostmaster 7 3600 600 86400 60
@    NS  ns1
ns1  A   192.0.2.1
www  A   192.0.2.10
"""
NAMED = shutil.which("named") or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)


class TransferFromBindTests(unittest.TestCase):
    """smartdns pulls a zone from BIND named (allow-transfer by key only) and saves it."""

    def setUp(self) -> None:
        if NAMED is None:
            raise unittest.SkipTest("BIND named is not installed (apt-get install bind9)")
        from tests.oracle_harness import ServerProcess, free_port, wait_for_soa

        workdir = tempfile.mkdtemp(prefix="secondary-named-")
        self.port = free_port()
        write_tree(workdir, {"fleet.test.zone": ZONE, "named.conf": textwrap.dedent(f"""\
            options {{ directory "{workdir}"; listen-on port {self.port} {{ 127.0.0.1; }};
                      listen-on-v6 {{ none; }}; recursion no; notify no; dnssec-validation no; pid-file none; }};
            controls {{ }};
            key "fleet-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
            zone "fleet.test" {{ type primary; file "fleet.test.zone"; allow-transfer {{ key fleet-key; }}; }};
            """)})
        log_path = os.path.abspath(self.mktemp()) + "-named.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", os.path.join(workdir, "named.conf")],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
        self.named = ServerProcess("named", proc, self.port, workdir, log_path)
        self.addCleanup(self.named.stop)
        wait_for_soa(self.named, "fleet.test.")
        self.secondary = SecondaryZone("fleet.test", (("127.0.0.1", self.port),), "fleet-key", None)

    async def test_transfer_and_save(self) -> None:
        """The signed AXFR gives BIND's zone with its timers; the saved file reads back equal."""
        got = await threads.deferToThread(transfer, self.secondary, KEY)
        self.assertEqual((got.timers.serial, got.timers.refresh, got.timers.retry, got.timers.expire),
                         (7, 3600, 600, 86400))
        directory = os.path.abspath(self.mktemp())
        path = save(directory, self.secondary, got.text)
        self.assertEqual(path, os.path.join(directory, "fleet.test.zone"))
        self.assertEqual(os.listdir(directory), ["fleet.test.zone"])        # no temp file left
        saved = dns.zone.from_file(path, origin="fleet.test.", relativize=False)
        primary = dns.zone.from_text(ZONE, origin="fleet.test.", relativize=False)
        self.assertEqual(saved, primary)

    async def test_same_serial_is_nothing_to_do(self) -> None:
        """A primary whose serial equals ours: None, nothing to save."""
        self.assertIsNone(await threads.deferToThread(transfer, self.secondary, KEY, 7))

    async def test_older_serial_and_bad_key_fail(self) -> None:
        """A serial that went back, a wrong key, a primary that is down: TransferError naming each."""
        with self.assertRaisesRegex(TransferError, "serial 7 is older than ours \\(8\\)"):
            await threads.deferToThread(transfer, self.secondary, KEY, 8)
        wrong = TsigKey("fleet-key", "hmac-sha256", b"not the secret")
        with self.assertRaisesRegex(TransferError, f"127.0.0.1:{self.port}: "):
            await threads.deferToThread(transfer, self.secondary, wrong, None, 3)
        self.named.stop()
        with self.assertRaisesRegex(TransferError, "transfer of fleet.test failed"):
            await threads.deferToThread(transfer, self.secondary, KEY, None, 2)


    async def test_refresh_keeps_the_saved_copy_on_failure(self) -> None:
        """With a saved copy to apply IXFR to: a wrong key, or a serial that went back, is a
        TransferError and the saved file is not touched."""
        directory = os.path.abspath(self.mktemp())
        path = save(directory, self.secondary, "$ORIGIN fleet.test.\n" + ZONE.replace(" 7 3600", " 6 3600"))
        with open(path, "rb") as handle:
            before = handle.read()
        wrong = TsigKey("fleet-key", "hmac-sha256", b"not the secret")
        with self.assertRaisesRegex(TransferError, f"127.0.0.1:{self.port}: "):
            await threads.deferToThread(refresh, directory, self.secondary, wrong, 6, 3)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), before)
        save(directory, self.secondary, "$ORIGIN fleet.test.\n" + ZONE.replace(" 7 3600", " 8 3600"))
        with open(path, "rb") as handle:
            before = handle.read()
        with self.assertRaisesRegex(TransferError, "serial 7 is older than ours \\(8\\)"):
            await threads.deferToThread(refresh, directory, self.secondary, KEY, 8, 3)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), before)


class SavePathTests(unittest.TestCase):
    """Saved files are named like the zone directory's: <origin>.zone, <line>/<origin>.zone."""

    def test_paths(self) -> None:
        """A line's transferred view goes in the line's subdirectory."""
        self.assertEqual(saved_path("/s", SecondaryZone("a.test", (("192.0.2.1", 53),))), "/s/a.test.zone")
        self.assertEqual(saved_path("/s", SecondaryZone("a.test", (("192.0.2.1", 53),), None, "line1")),
                         "/s/line1/a.test.zone")


# -- IXFR (RFC 1995) and its AXFR fallbacks, against a small primary on loopback ----------------

OLD_ZONE = ZONE                                                        # serial 7
NEW_ZONE = ZONE.replace(" 7 3600", " 8 3600").replace("192.0.2.10", "192.0.2.20") + "mail A   192.0.2.25\n"
ORIGIN = dns.name.from_text("fleet.test.")


def rrs(text: str) -> list[dns.rrset.RRset]:
    """One RRset per record (IXFR's order matters), absolute names."""
    zone = dns.zone.from_text(text, origin=ORIGIN, relativize=False)
    return [dns.rrset.from_rdata(name, rdataset.ttl, rdata)
            for name, rdataset in zone.iterate_rdatasets() for rdata in rdataset]


def rr(text: str) -> dns.rrset.RRset:
    return rrs("$TTL 300\n@ SOA ns1 hostmaster 1 1 1 1 1\n@ NS ns1\n" + text)[-1] if text else rrs(ZONE)[0]


SOA7, SOA8 = (next(r for r in rrs(z) if r.rdtype == dns.rdatatype.SOA) for z in (OLD_ZONE, NEW_ZONE))
SOA6 = rrs(ZONE.replace(" 7 3600", " 6 3600"))[0]
DIFF_OUT = [rr("www A 192.0.2.10")]
DIFF_IN = [rr("www A 192.0.2.20"), rr("mail A 192.0.2.25")]
#: What the fake primary answers to IXFR, by mode (RFC 1995 §4: new SOA, then per version old SOA,
#: deletions, new SOA, additions; then the new SOA again).
IXFR_ANSWERS = {
    "ixfr": [SOA8, SOA7, *DIFF_OUT, SOA8, *DIFF_IN, SOA8],
    "whole": [SOA8, *[r for r in rrs(NEW_ZONE) if r.rdtype != dns.rdatatype.SOA], SOA8],
    "not-ours": [SOA8, SOA7, rr("www A 192.0.2.99"), SOA8, *DIFF_IN, SOA8],    # deletes what we do not hold
    "other-base": [SOA8, SOA6, *DIFF_OUT, SOA8, *DIFF_IN, SOA8],               # differences from serial 6
    "no-ns": [SOA8, SOA7, *DIFF_OUT, rr("@ NS ns1"), SOA8, *DIFF_IN, SOA8],     # applies; smartdns won't load it
}
RCODES = {"NOTIMP": dns.rcode.NOTIMP, "FORMERR": dns.rcode.FORMERR, "REFUSED": dns.rcode.REFUSED}


RICH_ZONE = ZONE + """\
MiXeD  600 AAAA 2001:db8::1
@    MX  10 mail
mail A   192.0.2.25
txt  TXT "two words" "and \\"quotes\\""
_sip._tcp SRV 0 5 5060 www
@    CAA 0 issue "ca.example"
x    TYPE65280 \\# 3 abcdef
"""
SIGNED = ZONE + "www  RRSIG A 13 3 300 20300101000000 20200101000000 12345 fleet.test. YWJjZA==\n"


class LocalCopyTests(unittest.TestCase):
    """The saved file read as the base of an IXFR holds exactly dnspython's records."""

    def test_same_records_as_dnspython(self) -> None:
        """Through the fast reader (ordinary types, case, generic RDATA) and through dnspython
        (an RRSIG, which the fast reader declines): equal to dnspython's reading of the file; at
        another serial than asked: None."""
        from smartdns.secondary import load_local
        spec = SecondaryZone("fleet.test", (("127.0.0.1", 53),))
        for text in (RICH_ZONE, SIGNED):
            directory = os.path.abspath(self.mktemp())
            path = save(directory, spec, "$ORIGIN fleet.test.\n" + text)
            local = load_local(directory, spec, 7)
            self.assertEqual(local, dns.zone.from_file(path, origin=ORIGIN, relativize=False))
            self.assertFalse(local.replaced)
            self.assertIsNone(load_local(directory, spec, 8))
        self.assertIsNone(load_local(directory + "-missing", spec, 7))


class FakePrimaryProtocol(protocol.Protocol):
    """DNS over TCP (RFC 7766 framing): SOA, AXFR of NEW_ZONE, IXFR as the factory's mode says."""

    factory: FakePrimary

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.buffer += data
        while len(self.buffer) >= 2 and len(self.buffer) >= 2 + struct.unpack("!H", self.buffer[:2])[0]:
            size = struct.unpack("!H", self.buffer[:2])[0]
            message, self.buffer = self.buffer[2:2 + size], self.buffer[2 + size:]
            self.answer(dns.message.from_wire(message))

    def answer(self, query: dns.message.Message) -> None:
        rdtype = query.question[0].rdtype
        self.factory.asked.append(dns.rdatatype.to_text(rdtype))
        self.factory.process.append((gc.isenabled(), sys.getswitchinterval()))   # while the refresh waits
        if hasattr(os, "sched_getaffinity"):
            self.factory.cpus.append(os.sched_getaffinity(0))                   # the reactor thread's
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        mode = self.factory.ixfr
        if rdtype == dns.rdatatype.SOA:
            response.answer = [SOA8]
        elif rdtype == dns.rdatatype.AXFR and self.factory.axfr_rcode is not None:
            response.set_rcode(self.factory.axfr_rcode)
        elif rdtype == dns.rdatatype.AXFR:
            response.answer = [SOA8, *[r for r in rrs(NEW_ZONE) if r.rdtype != dns.rdatatype.SOA], SOA8]
        elif mode in RCODES:
            response.set_rcode(RCODES[mode])
        elif mode == "cut":                        # half of the first message, then the connection ends
            response.answer = IXFR_ANSWERS["ixfr"]
            wire = response.to_wire()
            self.transport.write(struct.pack("!H", len(wire)) + wire[:len(wire) // 2])
            self.transport.loseConnection()
            return
        else:
            response.answer = IXFR_ANSWERS[mode]
        wire = response.to_wire()
        self.transport.write(struct.pack("!H", len(wire)) + wire)


class FakePrimary(protocol.Factory):
    protocol = FakePrimaryProtocol

    def __init__(self) -> None:
        self.ixfr = "ixfr"
        self.axfr_rcode: int | None = None
        self.asked: list[str] = []
        self.process: list[tuple[bool, float]] = []     # (collector on, switch interval) at each query
        self.cpus: list[set[int]] = []                   # the reactor thread's CPUs at each query


class IxfrTests(unittest.TestCase):
    """refresh() from serial 7 (saved) to the primary's 8: IXFR onto the saved file when it can,
    AXFR when the primary refuses IXFR or its differences do not apply, never a broken file."""

    def setUp(self) -> None:
        self.primary = FakePrimary()
        listening = reactor.listenTCP(0, self.primary, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.spec = SecondaryZone("fleet.test", (("127.0.0.1", listening.getHost().port),))
        self.directory = os.path.abspath(self.mktemp())
        self.path = save(self.directory, self.spec, "$ORIGIN fleet.test.\n" + OLD_ZONE)

    async def refresh(self, mode: str, serial: int = 7) -> Any:
        self.primary.ixfr, self.primary.asked = mode, []
        return await threads.deferToThread(refresh, self.directory, self.spec, None, serial, 5.0)

    def assertSavedNew(self) -> None:  # noqa: N802 (unittest style)
        saved = dns.zone.from_file(self.path, origin=ORIGIN, relativize=False)
        self.assertEqual(saved, dns.zone.from_text(NEW_ZONE, origin=ORIGIN, relativize=False))
        self.assertEqual(os.listdir(self.directory), ["fleet.test.zone"])       # no temp file left

    async def test_increments_applied(self) -> None:
        """One SOA query and one IXFR, no AXFR; the saved file is the primary's zone."""
        got = await self.refresh("ixfr")
        self.assertEqual((got.how, got.from_serial, got.timers.serial, got.why_axfr), (IXFR, 7, 8, ""))
        self.assertEqual(self.primary.asked, ["SOA", "IXFR"])
        self.assertSavedNew()

    async def test_whole_zone_answer(self) -> None:
        """IXFR answered AXFR-style (the whole zone, RFC 1995 §4) replaces our copy."""
        got = await self.refresh("whole")
        self.assertEqual((got.how, got.timers.serial), (IXFR_FULL, 8))
        self.assertEqual(self.primary.asked, ["SOA", "IXFR"])
        self.assertSavedNew()

    async def test_quiet_while_it_runs(self) -> None:
        """While a refresh runs (seen from the reactor as each of its queries arrives) the switch
        interval is at most 0.5 ms and the garbage collector is off, so that answers do not wait
        for the transfer; afterwards both are as they were, after a failed refresh too."""
        before = (gc.isenabled(), sys.getswitchinterval())
        self.assertEqual(before[0], True)
        await self.refresh("ixfr")
        self.assertEqual(len(self.primary.process), 2)
        for collecting, interval in self.primary.process:
            self.assertFalse(collecting)
            self.assertLessEqual(interval, TRANSFER_SWITCH_INTERVAL_SECONDS)
        self.assertEqual((gc.isenabled(), sys.getswitchinterval()), before)
        save(self.directory, self.spec, "$ORIGIN fleet.test.\n" + OLD_ZONE)
        self.primary.axfr_rcode, self.primary.process = dns.rcode.REFUSED, []
        with self.assertRaises(TransferError):
            await self.refresh("REFUSED")
        self.assertEqual([collecting for collecting, _ in self.primary.process], [False] * 3)
        self.assertEqual((gc.isenabled(), sys.getswitchinterval()), before)

    async def test_reactor_and_refresh_share_a_cpu(self) -> None:
        """While a refresh runs the reactor thread is kept on one CPU, the one the refresh thread
        runs on (on two, the refresh thread took the GIL back at each of the reactor's system
        calls); afterwards it may use all its CPUs again."""
        if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
            raise unittest.SkipTest("needs a thread affinity and two CPUs")
        before = os.sched_getaffinity(0)
        refresh_cpus: list[set[int]] = []

        def no_local_copy() -> None:
            refresh_cpus.append(os.sched_getaffinity(0))          # in the refresh thread
            return None

        def run() -> Any:
            with quiet():
                return transfer(self.spec, None, 7, 5.0, local=no_local_copy)
        await threads.deferToThread(run)
        self.assertEqual(len(self.primary.cpus), 2)               # SOA, AXFR
        self.assertEqual(len(self.primary.cpus[0]), 1)
        self.assertEqual(refresh_cpus, [self.primary.cpus[0]])
        self.assertEqual(os.sched_getaffinity(0), before)

    async def test_error_rcodes_fall_back_to_axfr(self) -> None:
        """NOTIMP, FORMERR, REFUSED to IXFR: AXFR right after, and the reason is kept for the log."""
        for name in RCODES:
            save(self.directory, self.spec, "$ORIGIN fleet.test.\n" + OLD_ZONE)
            got = await self.refresh(name)
            self.assertEqual((got.how, got.why_axfr), (AXFR, f"IXFR answered {name}"))
            self.assertEqual(self.primary.asked, ["SOA", "IXFR", "AXFR"])
            self.assertSavedNew()

    async def test_differences_that_do_not_apply_fall_back_to_axfr(self) -> None:
        """A deletion of a record we do not hold, differences from another serial: dnspython
        raises, nothing of the IXFR is kept, AXFR gives the zone."""
        for mode, why in (("not-ours", "DeleteNotExact"), ("other-base", "IXFR base serial mismatch")):
            save(self.directory, self.spec, "$ORIGIN fleet.test.\n" + OLD_ZONE)
            got = await self.refresh(mode)
            self.assertEqual(got.how, AXFR)
            self.assertIn(why, got.why_axfr)
            self.assertEqual(self.primary.asked, ["SOA", "IXFR", "AXFR"])
            self.assertSavedNew()

    async def test_no_local_copy_is_axfr(self) -> None:
        """No saved file, or one at another serial than ours: AXFR without asking IXFR."""
        os.unlink(self.path)
        got = await self.refresh("ixfr")
        self.assertEqual((got.how, got.why_axfr), (AXFR, "no local copy at serial 7"))
        self.assertEqual(self.primary.asked, ["SOA", "AXFR"])
        self.assertSavedNew()
        save(self.directory, self.spec, "$ORIGIN fleet.test.\n" + OLD_ZONE)
        got = await self.refresh("ixfr", serial=6)
        self.assertEqual((got.how, got.why_axfr), (AXFR, "no local copy at serial 6"))

    async def test_cut_connection_and_broken_result_keep_the_saved_file(self) -> None:
        """A connection cut mid-IXFR fails this primary (no AXFR after it); differences that leave
        a zone smartdns would not load (no apex NS) are not saved; IXFR and AXFR both refused:
        both reasons in the error.  The old file stays as it was."""
        with open(self.path, "rb") as handle:
            before = handle.read()
        with self.assertRaisesRegex(TransferError, f"transfer of fleet.test failed: 127.0.0.1:\\d+: EOFError"):
            await self.refresh("cut")
        self.assertEqual(self.primary.asked, ["SOA", "IXFR"])
        with self.assertRaisesRegex(TransferError, "broken zone: .*NS"):
            await self.refresh("no-ns")
        self.primary.axfr_rcode = dns.rcode.REFUSED
        with self.assertRaisesRegex(TransferError, "127.0.0.1:\\d+: TransferError: IXFR answered NOTIMP, then AXFR: "
                                                   "TransferError: Zone transfer error: REFUSED"):
            await self.refresh("NOTIMP")
        with open(self.path, "rb") as handle:
            self.assertEqual(handle.read(), before)
        self.assertEqual(os.listdir(self.directory), ["fleet.test.zone"])


# -- the running server as a secondary of BIND named (two views keyed by TSIG) ------------------

LINE_SECRET = "bGluZTEtc2VjcmV0LWZvci10ZXN0cw=="     # "line1-secret-for-tests"
PRIMARY_ZONE = """\
$TTL 300
@    IN SOA ns1 hostmaster {serial} {timers}
@    NS  ns1
ns1  A   192.0.2.1
www  A   {www}
"""
LONG_TIMERS = "3600 600 86400 60"      # only NOTIFY makes smartdns refresh within a test
SHORT_TIMERS = "1 1 3 60"              # refresh 1 s, retry 1 s, expire 3 s


def primary_zone(serial: int, www: str, timers: str) -> str:
    return PRIMARY_ZONE.format(serial=serial, www=www, timers=timers)


class BindPrimary(unittest.TestCase):
    """named as the primary (two views: line1's by line1-key, the base for the rest, transfers
    by fleet-key; both zones dynamic, updated by nsupdate with the view's key, so named keeps a
    journal and answers IXFR with differences) and the real smartdns service as its secondary
    for both, on loopback."""

    timers = LONG_TIMERS
    provide_ixfr = True               # False: named answers every IXFR with the whole zone
    # named options: notify-delay 0 (else an update within 5 s of the load's NOTIFY waits);
    # max-ixfr-ratio unlimited (else named answers IXFR with the whole zone whenever the
    # differences are larger than this tiny zone, as they are here).

    def setUp(self) -> None:
        if NAMED is None:
            raise unittest.SkipTest("BIND named is not installed (apt-get install bind9)")
        from tests.oracle_harness import free_port
        self.named_port, self.port = free_port(), free_port()
        self.workdir = tempfile.mkdtemp(prefix="secondary-named-")
        self.base = os.path.abspath(self.mktemp())
        write_tree(self.base, {"zones/.keep": "", "secondary/.keep": "", "smartdns.toml": f"""\
            [server]
            listen = ["127.0.0.1:{self.port}"]
            control_socket = ""
            [forward]
            upstreams = []
            [zones]
            directory = "zones"
            secondary_directory = "secondary"
            [lines]
            line1 = ["127.0.0.2/32"]
            [[tsig]]
            name = "fleet-key"
            secret = "{SECRET}"
            [[tsig]]
            name = "line1-key"
            secret = "{LINE_SECRET}"
            [[secondary]]
            zone = "fleet.test"
            primaries = ["127.0.0.1:{self.named_port}"]
            key = "fleet-key"
            [[secondary]]
            zone = "fleet.test"
            primaries = ["127.0.0.1:{self.named_port}"]
            key = "line1-key"
            line = "line1"
            """})
        self.write_primary(7, "192.0.2.10", "198.51.100.10", age=60)
        self.start_named()

    def write_primary(self, serial: int, base_www: str, line_www: str, age: float = 0) -> None:
        write_tree(self.workdir, {"base.zone": primary_zone(serial, base_www, self.timers),
                                  "line1.zone": primary_zone(serial, line_www, self.timers)})
        stamp = time.time() - age           # named reloads a file whose time changed
        for name in ("base.zone", "line1.zone"):
            os.utime(os.path.join(self.workdir, name), (stamp, stamp))

    def start_named(self) -> None:
        from tests.oracle_harness import ServerProcess, wait_for_soa
        ixfr = "" if self.provide_ixfr else " provide-ixfr no;"
        write_tree(self.workdir, {"named.conf": textwrap.dedent(f"""\
            options {{ directory "{self.workdir}"; listen-on port {self.named_port} {{ 127.0.0.1; }};
                      listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; pid-file none;
                      notify explicit; notify-delay 0; also-notify {{ 127.0.0.1 port {self.port}; }};
                      max-ixfr-ratio unlimited; }};
            controls {{ }};
            key "fleet-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
            key "line1-key" {{ algorithm hmac-sha256; secret "{LINE_SECRET}"; }};
            view "line1" {{
              match-clients {{ key line1-key; }};
              server 127.0.0.1 {{ keys {{ line1-key; }};{ixfr} }};
              zone "fleet.test" {{ type primary; file "line1.zone"; allow-transfer {{ key line1-key; }};
                                  allow-update {{ key line1-key; }}; }};
            }};
            view "base" {{
              match-clients {{ any; }};
              server 127.0.0.1 {{ keys {{ fleet-key; }};{ixfr} }};
              zone "fleet.test" {{ type primary; file "base.zone"; allow-transfer {{ key fleet-key; }};
                                  allow-update {{ key fleet-key; }}; }};
            }};
            """)})
        log_path = os.path.abspath(self.mktemp()) + "-named.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", os.path.join(self.workdir, "named.conf")],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.named = ServerProcess("named", proc, self.named_port, self.workdir, log_path)
        self.addCleanup(self.named.stop)
        wait_for_soa(self.named, "fleet.test.")

    def nsupdate(self, key: str, secret: str, www: str) -> defer.Deferred[Any]:
        """Replace www's A at named (the view the key selects) with BIND's own nsupdate, signed;
        named increments the serial, keeps the difference in its journal and sends NOTIFY."""
        script = (f"server 127.0.0.1 {self.named_port}\nzone fleet.test\nupdate delete www.fleet.test. A\n"
                  f"update add www.fleet.test. 300 A {www}\nsend\n")
        return threads.deferToThread(subprocess.run, ["nsupdate", "-y", f"hmac-sha256:{key}:{secret}"],
                                     input=script.encode(), check=True, capture_output=True, timeout=10)

    def start_smartdns(self) -> Any:
        path = os.path.join(self.base, "smartdns.toml")
        with open(path, encoding="utf-8") as handle:
            config = parse_config(handle.read(), path)
        service = SmartDNSService(config, build_snapshot(config), reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    async def ask(self, source: str = "127.0.0.1") -> tuple[int, list[str]]:
        reply = await query("127.0.0.1", self.port, "www.fleet.test.", "A", source=source)
        return reply.rcode(), [rr.to_text() for rrset in reply.answer for rr in rrset]

    async def wait_for(self, source: str, want: tuple[int, list[str]], seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        got = None
        while time.monotonic() < deadline:
            got = await self.ask(source)
            if got == want:
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"from {source}: still {got}, wanted {want}")


class SecondaryOfBindTests(BindPrimary):
    """smartdns follows BIND named: the base zone with one key, line1's zone (another view) with
    another; an nsupdate at named reaches smartdns by NOTIFY and IXFR; a restart serves the saved
    files."""

    def transfers_out(self, view: str, kind: str) -> int:
        """How many transfers of kind (``IXFR``, ``AXFR-style IXFR``, ``AXFR``) named logged as
        ended for view."""
        return self.named.log().count(f"view {view}: transfer of 'fleet.test/IN': {kind} ended")

    async def test_nsupdate_notify_ixfr_and_restart(self) -> None:
        """The first transfer (AXFR: nothing saved) is served per line; an nsupdate of each view
        at named brings the new serial within seconds, by IXFR (named logs an incremental IXFR
        out for each view, and no AXFR after the first); a restart with named down serves the
        files the IXFRs saved."""
        service = self.start_smartdns()
        await self.wait_for("127.0.0.1", (dns.rcode.NOERROR, ["192.0.2.10"]))
        await self.wait_for("127.0.0.2", (dns.rcode.NOERROR, ["198.51.100.10"]))
        self.assertTrue(os.path.exists(os.path.join(self.base, "secondary", "line1", "fleet.test.zone")))
        children = {c.secondary.line: c for c in service.secondaries.by_spec.values()}
        self.assertEqual([children[line].last.how for line in (None, "line1")], [AXFR, AXFR])
        await self.nsupdate("fleet-key", SECRET, "192.0.2.20")
        await self.wait_for("127.0.0.1", (dns.rcode.NOERROR, ["192.0.2.20"]))
        await self.nsupdate("line1-key", LINE_SECRET, "198.51.100.20")
        await self.wait_for("127.0.0.2", (dns.rcode.NOERROR, ["198.51.100.20"]))
        self.assertEqual(await self.ask("127.0.0.1"), (dns.rcode.NOERROR, ["192.0.2.20"]))   # base unchanged
        for line, view in ((None, "base"), ("line1", "line1")):
            last = children[line].last
            self.assertEqual((last.how, last.from_serial, last.timers.serial), (IXFR, 7, 8))
            self.assertEqual([self.transfers_out(view, kind) for kind in ("IXFR", "AXFR-style IXFR", "AXFR")],
                             [1, 0, 1])
        await service.stopService()
        self.named.stop()
        self.start_smartdns()
        self.assertEqual(await self.ask("127.0.0.1"), (dns.rcode.NOERROR, ["192.0.2.20"]))
        self.assertEqual(await self.ask("127.0.0.2"), (dns.rcode.NOERROR, ["198.51.100.20"]))


class WholeZoneIxfrOfBindTests(SecondaryOfBindTests):
    """named with ``provide-ixfr no`` for smartdns: it answers IXFR with the whole zone."""

    provide_ixfr = False

    async def test_nsupdate_notify_ixfr_and_restart(self) -> None:
        """The whole-zone answer to IXFR replaces the saved zone (named logs an AXFR-style IXFR)."""
        service = self.start_smartdns()
        await self.wait_for("127.0.0.1", (dns.rcode.NOERROR, ["192.0.2.10"]))
        await self.nsupdate("fleet-key", SECRET, "192.0.2.20")
        await self.wait_for("127.0.0.1", (dns.rcode.NOERROR, ["192.0.2.20"]))
        base = next(c for c in service.secondaries.by_spec.values() if c.secondary.line is None)
        self.assertEqual((base.last.how, base.last.from_serial, base.last.timers.serial), (IXFR_FULL, 7, 8))
        self.assertEqual([self.transfers_out("base", kind) for kind in ("IXFR", "AXFR-style IXFR", "AXFR")],
                         [0, 1, 1])
        saved = dns.zone.from_file(os.path.join(self.base, "secondary", "fleet.test.zone"), origin="fleet.test.",
                                   relativize=False)
        self.assertEqual(saved.get_rdataset("www.fleet.test.", "A")[0].to_text(), "192.0.2.20")


class ExpireOfBindTests(BindPrimary):
    """Short SOA timers: a stopped primary keeps the old data, then SERVFAIL after expire."""

    timers = SHORT_TIMERS

    async def test_primary_down_then_expire(self) -> None:
        """With named stopped, refreshes fail and the old data stays; 3 s (SOA expire) after the
        last good refresh every client gets SERVFAIL, as BIND answers."""
        self.start_smartdns()
        await self.wait_for("127.0.0.2", (dns.rcode.NOERROR, ["198.51.100.10"]))
        self.named.stop()
        self.assertEqual(await self.ask("127.0.0.1"), (dns.rcode.NOERROR, ["192.0.2.10"]))
        await self.wait_for("127.0.0.1", (dns.rcode.SERVFAIL, []), seconds=6)
        await self.wait_for("127.0.0.2", (dns.rcode.SERVFAIL, []), seconds=1)


class BrokenZoneTests(unittest.TestCase):
    """A transferred zone smartdns's reader would not load is never saved."""

    def test_broken_zone_keeps_the_saved_file(self) -> None:
        """CNAME beside other data: TransferError naming the primary; the old file and no temp file stay."""
        directory = os.path.abspath(self.mktemp())
        spec = SecondaryZone("fleet.test", (("127.0.0.1", 53),))
        path = save(directory, spec, "$ORIGIN fleet.test.\n" + ZONE)
        broken = "$ORIGIN fleet.test.\n" + ZONE + "www  CNAME ns1\n"
        with self.assertRaisesRegex(TransferError, "transfer of fleet.test failed: 127.0.0.1:53: broken zone: "):
            save(directory, spec, broken, primary="127.0.0.1:53")
        self.assertEqual(os.listdir(directory), ["fleet.test.zone"])
        with open(path, encoding="utf-8") as handle:
            self.assertNotIn("CNAME", handle.read())
