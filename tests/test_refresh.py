"""Tests for smartdns.refresh (SOA timers on a task.Clock, NOTIFY routing) and for how saved
secondary zones enter the snapshot (base zone, a line's whole view, SERVFAIL, conflicts)."""
from __future__ import annotations

import os
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.tsigkeyring
from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial import unittest

from smartdns import wire
from smartdns.authority import Authority
from smartdns.config import SecondaryZone, parse_config
from smartdns.errors import ZoneError
from smartdns.refresh import Secondaries, Secondary
from smartdns.reload import changed_origins
from smartdns.secondary import AXFR, IXFR, SoaTimers, TransferError, Transferred
from smartdns.snapshot import build_snapshot
from smartdns.xfr import PASS
from tests.support import write_tree

SECRET = "cHJpbWFyeS1zZWNyZXQtZm9yLXRlc3Rz"
SPEC = SecondaryZone("fleet.test", (("192.0.2.53", 53),))
TIMERS = SoaTimers(5, 100, 10, 300)
SAVED = """\
$TTL 300
fleet.test. IN SOA ns1.fleet.test. hostmaster.fleet.test. 5 100 10 300 60
fleet.test. NS ns1.fleet.test.
ns1.fleet.test. A 192.0.2.1
www.fleet.test. A 192.0.2.10
"""
LINE_SAVED = SAVED.replace("192.0.2.10", "198.51.100.10").replace(" 5 100", " 6 100")
BASE_FILE = SAVED.replace("192.0.2.10", "203.0.113.10")


class FakeRefresh:
    """Stands in for smartdns.secondary.refresh: each call returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, defer.Deferred[Any]]] = []

    def run(self, _function: Any, _directory: str, _secondary: SecondaryZone, _key: Any,
            serial: int | None) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((serial, d))
        return d


def transferred(serial: int, timers: SoaTimers = TIMERS) -> Transferred:
    return Transferred("fleet.test.", "", SoaTimers(serial, timers.refresh, timers.retry, timers.expire), "192.0.2.53:53")


class TimerTests(unittest.TestCase):
    """A Secondary follows the SOA refresh, retry and expire timers, reading time from the reactor."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.fake = FakeRefresh()
        self.reloads: list[str] = []
        self.secondary = Secondary(self.clock, SPEC, None, self.mktemp(), self.reloads.append, None, run=self.fake.run)
        self.secondary.startService()
        self.addCleanup(self.secondary.stopService)

    def test_first_refresh_then_every_refresh_interval(self) -> None:
        """Nothing saved: a refresh at once; a new serial reloads; the next refresh comes after SOA refresh."""
        self.clock.advance(0)
        self.assertEqual([serial for serial, _ in self.fake.calls], [None])
        self.fake.calls[0][1].callback(transferred(5))
        self.assertEqual(self.reloads, ["transfer"])
        self.clock.advance(99)
        self.assertEqual(len(self.fake.calls), 1)
        self.clock.advance(1)
        self.assertEqual([serial for serial, _ in self.fake.calls], [None, 5])
        self.fake.calls[1][1].callback(None)               # same serial: nothing to swap in
        self.assertEqual(self.reloads, ["transfer"])

    def test_log_names_how_the_serial_came(self) -> None:
        """Each new serial is logged with the serials, IXFR or AXFR, the primary, and why AXFR
        where IXFR was possible; the Secondary keeps the last transfer."""
        self.clock.advance(0)
        with capturedLogs() as events:
            self.fake.calls[0][1].callback(transferred(5))
            self.clock.advance(100)
            self.fake.calls[1][1].callback(Transferred("fleet.test.", "", SoaTimers(6, 100, 10, 300), "192.0.2.53:53",
                                                       IXFR, 5))
            self.clock.advance(100)
            self.fake.calls[2][1].callback(Transferred("fleet.test.", "", SoaTimers(7, 100, 10, 300), "192.0.2.53:53",
                                                       AXFR, 6, "IXFR answered NOTIMP"))
        lines = [e["log_format"].format(**e) for e in events]
        self.assertEqual([line for line in lines if " by " in line], [
            "secondary fleet.test: serial none -> 5 by AXFR from 192.0.2.53:53",
            "secondary fleet.test: serial 5 -> 6 by IXFR from 192.0.2.53:53",
            "secondary fleet.test: serial 6 -> 7 by AXFR from 192.0.2.53:53 (IXFR answered NOTIMP)"])
        self.assertEqual([serial for serial, _ in self.fake.calls], [None, 5, 6])
        assert self.secondary.last is not None
        self.assertEqual((self.secondary.last.how, self.secondary.serial), (AXFR, 7))

    def test_failure_retries_keeps_data_then_expires_and_recovers(self) -> None:
        """A failed refresh keeps the serial and retries after SOA retry; no success for SOA expire
        marks the zone expired and reloads; the next success ends it and reloads again."""
        self.clock.advance(0)
        self.fake.calls[0][1].callback(transferred(5))
        self.clock.advance(100)
        with capturedLogs() as events:
            self.fake.calls[1][1].errback(TransferError("transfer of fleet.test failed: 192.0.2.53:53: timed out"))
        self.assertEqual(self.secondary.serial, 5)
        lines = [e["log_format"].format(**e) for e in events]
        self.assertIn("secondary fleet.test: keeping serial 5: transfer of fleet.test failed: 192.0.2.53:53: timed out",
                      lines)
        self.clock.advance(10)
        self.assertEqual(len(self.fake.calls), 3)
        for _ in range(18):                                 # keep failing every retry
            self.fake.calls[-1][1].errback(TransferError("down"))
            self.clock.advance(10)
        self.assertFalse(self.secondary.expired)
        self.fake.calls[-1][1].errback(TransferError("down"))
        self.clock.advance(10)                              # 300 s after the last success
        self.assertTrue(self.secondary.expired)
        self.assertEqual(self.reloads, ["transfer", "expire"])
        self.fake.calls[-1][1].callback(None)               # the primary is back, same serial
        self.assertFalse(self.secondary.expired)
        self.assertEqual(self.reloads, ["transfer", "expire", "transfer"])

    def test_notify_during_refresh_runs_one_more(self) -> None:
        """NOTIFY while a refresh runs: exactly one more refresh right after it."""
        self.clock.advance(0)
        self.secondary.notified()
        self.secondary.notified()
        self.fake.calls[0][1].callback(transferred(5))
        self.clock.advance(0)
        self.assertEqual([serial for serial, _ in self.fake.calls], [None, 5])

    def test_saved_file_time_counts_for_expire(self) -> None:
        """After a restart, expire counts from the saved file's time, as BIND does."""
        directory = os.path.abspath(self.mktemp())
        write_tree(directory, {"fleet.test.zone": SAVED})
        stamp = os.stat(os.path.join(directory, "fleet.test.zone")).st_mtime
        clock = task.Clock()
        clock.advance(stamp + 299)
        reloads: list[str] = []
        secondary = Secondary(clock, SPEC, None, directory, reloads.append, TIMERS, run=FakeRefresh().run)
        secondary.startService()
        self.addCleanup(secondary.stopService)
        self.assertFalse(secondary.expired)
        clock.advance(1)
        self.assertTrue(secondary.expired)
        self.assertEqual(reloads, ["expire"])


def _config(base: str, extra: str = "", lines: str = 'line1 = ["127.0.0.2/32"]') -> Any:
    text = (f'[zones]\ndirectory = "zones"\nsecondary_directory = "secondary"\n[lines]\n{lines}\n'
            f'[[tsig]]\nname = "k1"\nsecret = "{SECRET}"\n' + extra)
    path = os.path.join(base, "smartdns.toml")
    return parse_config(text, path)


SECONDARY_BASE = '[[secondary]]\nzone = "fleet.test"\nprimaries = ["127.0.0.1"]\nkey = "k1"\n'
SECONDARY_LINE = '[[secondary]]\nzone = "fleet.test"\nprimaries = ["127.0.0.1"]\nline = "line1"\n'


class SnapshotTests(unittest.TestCase):
    """Saved transferred zones in the snapshot."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        write_tree(self.base, {"zones/.keep": "", "secondary/.keep": ""})

    def answer(self, snap: Any, line: str | None, name: str = "www.fleet.test.") -> Any:
        return Authority().lookup(snap, line, wire.from_text(name), wire.A, True)

    def test_saved_base_and_line_view(self) -> None:
        """A base secondary is the base zone; a line's secondary is that line's whole zone."""
        write_tree(self.base, {"secondary/fleet.test.zone": SAVED, "secondary/line1/fleet.test.zone": LINE_SAVED})
        snap = build_snapshot(_config(self.base, SECONDARY_BASE + SECONDARY_LINE))
        self.assertEqual(snap.servfail, frozenset())
        self.assertEqual(b"".join(self.answer(snap, None).answer[0].rdatas[0]), bytes([192, 0, 2, 10]))
        self.assertEqual(b"".join(self.answer(snap, "line1").answer[0].rdatas[0]), bytes([198, 51, 100, 10]))

    def test_line_secondary_over_a_zone_file(self) -> None:
        """A line's secondary may stand beside a base zone file: other clients get the file."""
        write_tree(self.base, {"zones/fleet.test.zone": BASE_FILE, "secondary/line1/fleet.test.zone": LINE_SAVED})
        snap = build_snapshot(_config(self.base, SECONDARY_LINE))
        self.assertEqual(b"".join(self.answer(snap, None).answer[0].rdatas[0]), bytes([203, 0, 113, 10]))
        self.assertEqual(b"".join(self.answer(snap, "line1").answer[0].rdatas[0]), bytes([198, 51, 100, 10]))

    def test_not_transferred_and_expired_answer_servfail(self) -> None:
        """No saved file yet: SERVFAIL for every client of that zone; an expired line's zone:
        SERVFAIL for that line only.  The change counts as changed data (cache flush)."""
        snap = build_snapshot(_config(self.base, SECONDARY_BASE))
        origin = wire.from_text("fleet.test.")
        self.assertEqual(snap.servfail, frozenset({(origin, None), (origin, "line1")}))
        self.assertEqual(self.answer(snap, "line1").rcode, wire.SERVFAIL)
        write_tree(self.base, {"secondary/fleet.test.zone": SAVED, "secondary/line1/fleet.test.zone": LINE_SAVED})
        fresh = build_snapshot(_config(self.base, SECONDARY_BASE + SECONDARY_LINE))
        self.assertEqual(changed_origins(snap, fresh), {origin})
        expired = build_snapshot(_config(self.base, SECONDARY_BASE + SECONDARY_LINE),
                                 expired=frozenset({("fleet.test", "line1")}))
        self.assertEqual(expired.servfail, frozenset({(origin, "line1")}))
        self.assertEqual(self.answer(expired, "line1").rcode, wire.SERVFAIL)
        self.assertEqual(self.answer(expired, None).rcode, wire.NOERROR)
        self.assertEqual(changed_origins(fresh, expired), {origin})

    def test_conflicts_are_rejected(self) -> None:
        """A zone file and a secondary for the same zone (base, or a line's overlay), and a line's
        secondary with no base zone at all: one problem each."""
        write_tree(self.base, {"zones/fleet.test.zone": BASE_FILE, "zones/line1/fleet.test.zone": "www A 192.0.2.99\n"})
        with self.assertRaises(ZoneError) as caught:
            build_snapshot(_config(self.base, SECONDARY_BASE + SECONDARY_LINE))
        self.assertEqual([p.message for p in caught.exception.problems], [
            "zone fleet.test is also a [[secondary]]; serve it from one of them",
            "zone fleet.test for line line1 is also a [[secondary]]; serve it from one of them"])
        os.unlink(os.path.join(self.base, "zones/fleet.test.zone"))
        os.unlink(os.path.join(self.base, "zones/line1/fleet.test.zone"))
        with self.assertRaises(ZoneError) as caught:
            build_snapshot(_config(self.base, SECONDARY_LINE))
        self.assertEqual([p.message for p in caught.exception.problems], [
            "[[secondary]] zone fleet.test for line line1 needs a base zone (a zone file or a [[secondary]] "
            "without line)"])


def notify_message(zone: str = "fleet.test.", key: str | None = None, secret: str = SECRET) -> dns.message.Message:
    message = dns.message.make_query(zone, "SOA")
    message.flags = dns.flags.AA
    message.set_opcode(dns.opcode.NOTIFY)
    if key is not None:
        message.use_tsig(dns.tsigkeyring.from_text({key: secret}), keyname=key)
    return message


class NotifyTests(unittest.TestCase):
    """NOTIFY is accepted only from a primary, signed with the zone's key when it has one."""

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"zones/.keep": "", "secondary/.keep": ""})
        self.config = _config(base, SECONDARY_BASE + SECONDARY_LINE.replace("127.0.0.1", "192.0.2.7"))
        self.snap = build_snapshot(self.config)
        self.clock = task.Clock()
        self.fake = FakeRefresh()
        self.secondaries = Secondaries(self.clock, lambda reason: None, run=self.fake.run)
        self.secondaries.configure(self.config, self.snap)
        self.secondaries.startService()
        self.addCleanup(self.secondaries.stopService)
        self.clock.advance(0)
        for _serial, d in self.fake.calls:
            d.errback(TransferError("down"))
        self.fake.calls.clear()

    def send(self, message: dns.message.Message, client: str, keyring: Any = None) -> dns.message.Message:
        answer = self.secondaries.notify(message.to_wire(), client, False, self.snap)
        if keyring is None:
            return dns.message.from_wire(answer, keyring=False)
        return dns.message.from_wire(answer, keyring=keyring, request_mac=message.mac)

    def test_signed_notify_from_the_primary(self) -> None:
        """Signed with the zone's key from its primary: NOERROR, AA, opcode NOTIFY, the question
        echoed, signed; that secondary refreshes (and the line's, from another primary, does not)."""
        ring = dns.tsigkeyring.from_text({"k1": SECRET})
        request = notify_message(key="k1")
        answer = self.send(request, "127.0.0.1", ring)
        self.assertEqual((answer.rcode(), answer.opcode(), answer.flags & (dns.flags.QR | dns.flags.AA | dns.flags.RD)),
                         (dns.rcode.NOERROR, dns.opcode.NOTIFY, dns.flags.QR | dns.flags.AA))
        self.assertEqual(answer.question, request.question)
        self.assertTrue(answer.had_tsig)
        self.clock.advance(0)
        self.assertEqual(len(self.fake.calls), 1)

    def test_refused_and_notauth(self) -> None:
        """Unsigned where a key is configured, or from an address that is no primary: REFUSED
        (no refresh); a bad MAC: NOTAUTH; a zone we are not secondary for: not ours."""
        self.assertEqual(self.send(notify_message(), "127.0.0.1").rcode(), dns.rcode.REFUSED)
        self.assertEqual(self.send(notify_message(key="k1"), "127.0.0.9").rcode(), dns.rcode.REFUSED)
        bad = notify_message(key="k1", secret="d3Jvbmc=")
        self.assertEqual(self.send(bad, "127.0.0.1").rcode(), dns.rcode.NOTAUTH)
        self.assertIs(self.secondaries.notify(notify_message("other.test.").to_wire(), "127.0.0.1", False, self.snap),
                      PASS)
        self.clock.advance(0)
        self.assertEqual(self.fake.calls, [])
        line = self.send(notify_message(), "192.0.2.7")       # the line's secondary has no key
        self.assertEqual(line.rcode(), dns.rcode.NOERROR)
        self.clock.advance(0)
        self.assertEqual(len(self.fake.calls), 1)

    def test_reconfigure_keeps_unchanged(self) -> None:
        """A reload with the same [[secondary]] tables keeps each Secondary (and its timers)."""
        before = dict(self.secondaries.by_spec)
        self.secondaries.configure(self.config, self.snap)
        self.assertEqual(self.secondaries.by_spec, before)
        self.assertTrue(all(a is b for a, b in zip(before.values(), self.secondaries.by_spec.values())))
