"""smartdns's local answers must be indistinguishable from BIND 9's.

The zone data is ``tests/oracle/zones``; the corpus, the BIND settings and the
comparison rules are in ``tests/oracle_harness.py``.  These tests run real
processes on loopback ports (``named`` and ``twistd smartdns``), so they use
blocking sockets and a ``SynchronousTestCase``; they skip with a reason where
``named`` (or, until it exists, smartdns's service module) is missing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile

import dns.flags
import dns.message
import dns.name
import dns.rrset
import dns.zone
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import oracle_harness as harness


def _report(matches: int, total: int, diffs: list[str]) -> str:
    """The failure text: the count first, then every mismatching case."""
    return f"{matches}/{total} matched\n\n" + "\n".join(diffs)


class ZoneDataTests(SynchronousTestCase):
    """The oracle zone files are valid for both BIND and dnspython."""

    def test_zones_load_in_dnspython(self) -> None:
        """Each zone loads with dnspython (what smartdns parses with).

        dnspython opens relative ``$INCLUDE`` paths against the process's
        working directory, so the load runs from the zone directory, which is
        what BIND's ``directory`` option resolves them against.
        """
        cwd = os.getcwd()
        os.chdir(harness.ZONE_DIR)
        try:
            for origin in harness.ZONES:
                zone = dns.zone.from_file(
                    harness.zone_file_name(origin), origin, relativize=False
                )
                self.assertEqual(zone.origin, dns.name.from_text(origin))
                self.assertIsNotNone(zone.get_soa())
        finally:
            os.chdir(cwd)

    def test_zones_pass_named_checkzone(self) -> None:
        """Each zone passes ``named-checkzone`` (BIND loads it as written)."""
        checkzone = shutil.which("named-checkzone") or "/usr/bin/named-checkzone"
        if not os.path.exists(checkzone):
            raise SkipTest("named-checkzone not installed (apt-get install bind9-utils)")
        for origin in harness.ZONES:
            result = subprocess.run(
                [checkzone, "-w", harness.ZONE_DIR, origin,
                 harness.zone_file_name(origin)],
                capture_output=True, text=True, check=False,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_corpus_targets_the_oracle_zones(self) -> None:
        """The corpus has 100+ distinct queries, each inside one oracle zone."""
        self.assertGreaterEqual(len(harness.QUERIES), 100)
        self.assertEqual(len(set(harness.QUERIES)), len(harness.QUERIES))
        origins = [dns.name.from_text(o) for o in harness.ZONES]
        for qname, qtype in harness.QUERIES:
            name = dns.name.from_text(qname)
            self.assertTrue(
                any(name.is_subdomain(o) for o in origins), f"{qname} is in no zone"
            )
            harness.make_query(qname, qtype, edns=True)  # parses
        excluded = {(q, t) for q, t, _, _ in harness.KNOWN_DIFFERENT}
        self.assertFalse(excluded & set(harness.QUERIES))


def _response(
    qname: str = "www.oracle.test.",
    flags: int = dns.flags.QR | dns.flags.AA | dns.flags.RD,
    answer: tuple[str, ...] = ("www.oracle.test. 300 IN A 192.0.2.80",),
    edns: int = -1,
    payload: int = 1232,
) -> dns.message.Message:
    """A response message built from text, for the comparison unit tests."""
    m = dns.message.Message()
    m.flags = flags
    m.question.append(dns.rrset.RRset(dns.name.from_text(qname), 1, 1))
    for line in answer:
        name, ttl, cls, typ, rdata = line.split(" ", 4)
        m.answer.append(dns.rrset.from_text(name, int(ttl), cls, typ, rdata))
    if edns >= 0:
        m.use_edns(edns, payload=payload)
    return m


class DiffTests(SynchronousTestCase):
    """``diff_responses`` reports what a client can see, and only that."""

    def test_identical_responses(self) -> None:
        """Two equal responses have no differences."""
        self.assertEqual(harness.diff_responses(_response(), _response()), [])

    def test_ra_is_ignored(self) -> None:
        """RA differs by design (smartdns recurses for some clients)."""
        a = _response(flags=dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.RA)
        self.assertEqual(harness.diff_responses(a, _response()), [])

    def test_other_flags_are_compared(self) -> None:
        """A missing AA bit is a difference."""
        a = _response(flags=dns.flags.QR | dns.flags.RD)
        diffs = harness.diff_responses(a, _response())
        self.assertEqual(len(diffs), 1)
        self.assertIn("flags", diffs[0])

    def test_question_case_is_compared(self) -> None:
        """The question must be echoed byte for byte (0x20)."""
        diffs = harness.diff_responses(_response("WWW.oracle.test."), _response())
        self.assertTrue(any(d.startswith("question") for d in diffs), diffs)

    def test_rr_order_is_ignored(self) -> None:
        """RRs in another order are the same section."""
        rrs = ("www.oracle.test. 300 IN A 192.0.2.80", "www.oracle.test. 300 IN A 192.0.2.81")
        self.assertEqual(
            harness.diff_responses(_response(answer=rrs), _response(answer=rrs[::-1])), []
        )

    def test_ttl_is_compared(self) -> None:
        """A different TTL is a difference, naming both RRs."""
        a = _response(answer=("www.oracle.test. 301 IN A 192.0.2.80",))
        diffs = harness.diff_responses(a, _response(), ("x", "y"))
        self.assertEqual(diffs[0], "answer: RRs differ")
        self.assertIn("  only x: www.oracle.test. 301 IN A 192.0.2.80", diffs)
        self.assertIn("  only y: www.oracle.test. 300 IN A 192.0.2.80", diffs)

    def test_owner_case_is_compared(self) -> None:
        """Answers that differ only in the case of a name are reported as such."""
        a = _response(answer=("WWW.oracle.test. 300 IN A 192.0.2.80",))
        diffs = harness.diff_responses(a, _response())
        self.assertEqual(diffs[0], "answer: same RRs but the case of names differs")

    def test_truncated_answers_compare_counts(self) -> None:
        """With TC=1 on both sides, which members of an RRset fit is not compared."""
        tc = dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.TC
        a = _response(flags=tc, answer=("www.oracle.test. 300 IN A 192.0.2.80",))
        b = _response(flags=tc, answer=("www.oracle.test. 300 IN A 192.0.2.81",))
        self.assertEqual(harness.diff_responses(a, b), [])
        c = _response(flags=tc, answer=())
        self.assertNotEqual(harness.diff_responses(a, c), [])

    def test_edns_is_compared(self) -> None:
        """OPT presence and its advertised UDP size are part of the answer."""
        self.assertNotEqual(harness.diff_responses(_response(edns=0), _response()), [])
        self.assertNotEqual(
            harness.diff_responses(_response(edns=0, payload=4096), _response(edns=0)), []
        )


class RawDiffTests(SynchronousTestCase):
    """``diff_raw`` compares TSIG error records field by field, the time only roughly."""

    def _notauth(self, time_signed: int, error: int = 17) -> bytes:
        rdata = (b"\x0bhmac-sha256\x00" + struct.pack("!HIH", 0, time_signed, 300)
                 + struct.pack("!HHHH", 0, 7, error, 0))
        return (struct.pack("!HHHHHH", 7, 0x8109, 0, 0, 0, 1)
                + b"\x01k\x00" + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata)

    def test_time_signed_may_differ_a_little(self) -> None:
        """Two BADKEY records a few seconds apart are the same answer."""
        self.assertEqual(harness.diff_raw(self._notauth(1_800_000_000), self._notauth(1_800_000_003)), [])

    def test_tsig_error_and_time_are_compared(self) -> None:
        """Another TSIG error, or a time far off, is a difference."""
        self.assertNotEqual(harness.diff_raw(self._notauth(1_800_000_000), self._notauth(1_800_000_000, 16)), [])
        self.assertNotEqual(harness.diff_raw(self._notauth(1_800_000_000), self._notauth(1_700_000_000)), [])

    def test_unparseable_messages_compare_bytes(self) -> None:
        """Messages dnspython cannot read are compared byte for byte after the ID, RA aside."""
        a = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\x03bad"
        self.assertEqual(harness.diff_raw(a, a[:3] + b"\x00" + a[4:]), [])
        self.assertNotEqual(harness.diff_raw(a, a[:-1] + b"c"), [])


class BindAgainstBindTests(SynchronousTestCase):
    """The harness itself: BIND matches BIND, and a changed zone is noticed."""

    def _named(self, zone_dir: str = harness.ZONE_DIR) -> harness.ServerProcess:
        server = harness.start_named(zone_dir, harness.ZONES)
        self.addCleanup(server.stop)
        return server

    def test_bind_matches_bind(self) -> None:
        """Two named instances on the same zones agree on the whole corpus.

        Every transport and EDNS mode, and the client variants the smartdns
        test uses (dig's RD+AD, RD=0, DO+CD): if this fails, the harness or the
        zone data is non-deterministic, not smartdns.
        """
        a, b = self._named(), self._named()
        for kwargs in harness.CLIENT_VARIANTS:
            matches, total, diffs = harness.run_corpus(
                a.address, b.address, names=("bind1", "bind2"), **kwargs
            )
            self.assertEqual(matches, total, _report(matches, total, diffs))

    def test_bind_matches_bind_on_protocol_corners(self) -> None:
        """Two named instances agree on every raw protocol case and on ANY over TCP (the TSIG
        time aside): the corner corpus is deterministic."""
        a, b = self._named(), self._named()
        matches, total, diffs = harness.run_raw_cases(a.address, b.address, names=("bind1", "bind2"))
        self.assertEqual(matches, total, _report(matches, total, diffs))
        for flags in (dns.flags.RD, 0):
            matches, total, diffs = harness.run_corpus(
                a.address, b.address, harness.ANY_QUERIES, ("tcp",), names=("bind1", "bind2"), flags=flags)
            self.assertEqual(matches, total, _report(matches, total, diffs))

    def test_changed_zone_is_noticed(self) -> None:
        """A TTL, a name's case and a removed RR each show up as differences."""
        copy = os.path.join(tempfile.mkdtemp(prefix="oracle-zones-"), "zones")
        self.addCleanup(shutil.rmtree, os.path.dirname(copy), True)
        shutil.copytree(harness.ZONE_DIR, copy)
        path = os.path.join(copy, "oracle.test.zone")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for old, new in [
            ("www     300 IN A    192.0.2.80", "www     301 IN A    192.0.2.80"),
            ("MiXeD       A       192.0.2.77", "mixed       A       192.0.2.77"),
            ("old         A       192.0.2.220", ""),
        ]:
            self.assertIn(old, text)
            text = text.replace(old, new)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        a, b = self._named(), self._named(copy)
        ttl = harness.compare(a.address, b.address, "www.oracle.test.", "A", "udp", True)
        self.assertIn("answer: RRs differ", ttl)
        case = harness.compare(a.address, b.address, "mixed.oracle.test.", "A", "tcp", False)
        self.assertEqual(case, ["answer: same RRs but the case of names differs",
                                "  only a: MiXeD.oracle.test. 3600 IN A 192.0.2.77",
                                "  only b: mixed.oracle.test. 3600 IN A 192.0.2.77"])
        gone = harness.compare(a.address, b.address, "old.oracle.test.", "A", "udp", False)
        self.assertIn("answer: RRs differ", gone)
        self.assertIn("authority: RRs differ", gone)
        matches, total, _ = harness.run_corpus(a.address, b.address)
        self.assertLess(matches, total)


class SmartDNSAgainstBindTests(SynchronousTestCase):
    """smartdns answers the oracle corpus exactly as BIND 9 does."""

    def setUp(self) -> None:
        if not os.path.exists(os.path.join(harness.PROJECT_ROOT, "smartdns", "service.py")):
            raise SkipTest("smartdns/service.py does not exist yet: no server to compare")
        self.named = harness.start_named(harness.ZONE_DIR, harness.ZONES)
        self.addCleanup(self.named.stop)
        self.smartdns = harness.start_smartdns(harness.ZONE_DIR, harness.ZONES)
        self.addCleanup(self.smartdns.stop)

    def _assert_corpus_matches(self, *variants: dict[str, object]) -> None:
        """Run the corpus once per keyword set; fail with every difference of all of them."""
        matches = total = 0
        diffs: list[str] = []
        for kwargs in variants:
            m, t, d = harness.run_corpus(
                self.named.address, self.smartdns.address, names=("bind", "smartdns"),
                **kwargs,  # type: ignore[arg-type]
            )
            matches, total, diffs = matches + m, total + t, diffs + d
        message = _report(matches, total, diffs)
        if self.smartdns.proc.poll() is not None:
            message += "\n\nsmartdns exited; its log:\n" + self.smartdns.log()
        self.assertEqual(matches, total, message)

    def test_udp(self) -> None:
        """Over UDP, with and without EDNS, every answer matches BIND's."""
        self._assert_corpus_matches({"transports": ("udp",), "edns_modes": (False, True)})

    def test_tcp(self) -> None:
        """Over TCP, with and without EDNS, every answer matches BIND's."""
        self._assert_corpus_matches({"transports": ("tcp",), "edns_modes": (False, True)})

    def test_protocol_corners(self) -> None:
        """Unknown opcodes, malformed messages, TSIG, NOTIFY, UPDATE and refusals, sent as raw
        packets over UDP and TCP, get BIND's answers (see ``harness.RAW_CASES``)."""
        matches, total, diffs = harness.run_raw_cases(
            self.named.address, self.smartdns.address, names=("bind", "smartdns"))
        self.assertEqual(matches, total, _report(matches, total, diffs))

    def test_any_over_tcp(self) -> None:
        """ANY over TCP gets every RRset at the name, as BIND answers it, with RD and without."""
        self._assert_corpus_matches(
            *({"queries": harness.ANY_QUERIES, "transports": ("tcp",), "flags": flags}
              for flags in (dns.flags.RD, 0, harness.DIG_FLAGS)))

    def test_client_variants(self) -> None:
        """dig's RD+AD, RD=0 and DO+CD queries get BIND's answers too.

        BIND echoes CD and DO, clears AD (except in truncated responses), and
        for RD=0 adds the zone's NS RRset (and its addresses) to positive
        answers (``minimal-responses no-auth-recursive``, BIND's default).
        """
        self._assert_corpus_matches(*harness.CLIENT_VARIANTS[1:])
