"""The whole server over real loopback sockets, asked by real clients (dnspython, dig)."""
from __future__ import annotations

import os

import dns.flags
import dns.rcode
from twisted.internet import defer, reactor
from twisted.trial import unittest

from smartdns import wire
from tests.support import FakeUpstream, answer_a, dig, dig_available, query, raw_tcp, raw_udp, rrs, start_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_ZONES = os.path.join(ROOT, "zones")
EXAMPLES = os.path.join(ROOT, "examples")

# The article's two lines, moved onto loopback addresses a test can send from.
ARTICLE_CONFIG = f"""
[zones]
directory = "{SHIPPED_ZONES}"
[lines]
line1 = ["127.0.0.3/32"]
line2 = ["127.0.0.1/32"]
[forward]
upstreams = []
"""


class ArticleSessionTests(unittest.TestCase):
    """The article's dig session against the shipped zones."""

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(self, ARTICLE_CONFIG)

    @defer.inlineCallbacks
    def test_lines_choose_the_address(self):
        """line1 gets .10, line2 gets .11, a client in no line gets both (UDP and TCP)."""
        for tcp in (False, True):
            line2 = yield query(self.host, self.port, "example.com", "A", tcp=tcp, source="127.0.0.1")
            line1 = yield query(self.host, self.port, "example.com", "A", tcp=tcp, source="127.0.0.3")
            none = yield query(self.host, self.port, "example.com", "A", tcp=tcp, source="127.0.0.2")
            self.assertEqual(rrs(line2), ["example.com. 60 A 192.168.139.11"])
            self.assertEqual(rrs(line1), ["example.com. 60 A 192.168.139.10"])
            self.assertEqual(rrs(none), ["example.com. 60 A 192.168.139.10", "example.com. 60 A 192.168.139.11"])
            for m in (line1, line2, none):
                self.assertTrue(m.flags & dns.flags.AA)
                self.assertTrue(m.flags & dns.flags.QR)

    @defer.inlineCallbacks
    def test_dig_session(self):
        """dig sees the article's answers: line2's A, and the MX, TXT and NS records for everyone."""
        if not dig_available():
            raise unittest.SkipTest("dig is not installed (apt install bind9-dnsutils)")
        out = yield dig(self.host, self.port, "-b", "127.0.0.1", "+short", "a", "example.com")
        self.assertEqual(out.decode().split(), ["192.168.139.11"])
        out = yield dig(self.host, self.port, "-b", "127.0.0.2", "+short", "a", "example.com")
        self.assertEqual(sorted(out.decode().split()), ["192.168.139.10", "192.168.139.11"])
        out = yield dig(self.host, self.port, "+short", "mx", "example.com")
        self.assertEqual(sorted(out.decode().strip().splitlines()), ["10 mail1.example.com.", "10 mail2.example.com."])
        out = yield dig(self.host, self.port, "+short", "txt", "example.com")
        self.assertEqual(out.decode().strip(), '"hi.pipy!"')
        out = yield dig(self.host, self.port, "+short", "ns", "example.com")
        self.assertEqual(out.decode().strip(), "ns1.example.com.")
        out = yield dig(self.host, self.port, "a", "example.com")
        self.assertIn("flags: qr aa rd;", out.decode())     # upstreams = []: no recursion offered, no RA

    @defer.inlineCallbacks
    def test_negative_answers_carry_the_soa(self):
        """NXDOMAIN and NODATA are authoritative with the SOA at min(TTL, MINIMUM) in authority."""
        nx = yield query(self.host, self.port, "nope.example.com", "A")
        self.assertEqual(nx.rcode(), dns.rcode.NXDOMAIN)
        self.assertTrue(nx.flags & dns.flags.AA)
        self.assertEqual([r.split()[1:3] for r in rrs(nx, "authority")], [["60", "SOA"]])
        nodata = yield query(self.host, self.port, "ns1.example.com", "AAAA")
        self.assertEqual(nodata.rcode(), dns.rcode.NOERROR)
        self.assertEqual(rrs(nodata), [])
        self.assertEqual(len(nodata.authority), 1)

    @defer.inlineCallbacks
    def test_question_case_is_echoed(self):
        """The question comes back exactly as the client wrote it (0x20)."""
        reply = yield query(self.host, self.port, "eXaMpLe.CoM", "A", source="127.0.0.3")
        self.assertEqual(str(reply.question[0].name), "eXaMpLe.CoM.")


class ArticleJsonTests(unittest.TestCase):
    """The article's own records.json and smart-line.json, loaded as they are."""

    def setUp(self) -> None:
        lines = os.path.join(self.mktemp() + "-lines.json")
        with open(lines, "w", encoding="utf-8") as handle:
            handle.write('{"line1": ["127.0.0.3/32"], "line2": ["127.0.0.1/32"]}')
        config = f"""
        [zones]
        directory = "{EXAMPLES}/empty-zones"
        records_json = ["{EXAMPLES}/records.json"]
        lines_json = "{os.path.abspath(lines)}"
        [forward]
        upstreams = []
        """
        self.service, self.host, self.port = start_server(self, config)

    @defer.inlineCallbacks
    def test_labels_and_deny(self):
        """Labels pick the line's record, unlabelled clients get all, deny gives REFUSED."""
        line1 = yield query(self.host, self.port, "example.com", "A", source="127.0.0.3", tcp=True)
        none = yield query(self.host, self.port, "example.com", "A", source="127.0.0.2")
        mx = yield query(self.host, self.port, "example.com", "MX", source="127.0.0.1")
        denied = yield query(self.host, self.port, "deny.example.com", "A")
        aaaa = yield query(self.host, self.port, "example.com", "AAAA")
        self.assertEqual(rrs(line1), ["example.com. 60 A 192.168.139.10"])
        self.assertEqual(len(rrs(none)), 2)
        self.assertEqual(len(rrs(mx)), 2)
        self.assertEqual(denied.rcode(), dns.rcode.REFUSED)
        self.assertEqual(rrs(aaaa), ["example.com. 60 AAAA 2001:db8::10"])


class ForwardingTests(unittest.TestCase):
    """Names outside local zones go to a fake upstream on loopback."""

    def start(self, answer, extra: str = "", upstreams: list[FakeUpstream] | None = None):
        ups = upstreams or [FakeUpstream(answer).start(self)]
        listed = ", ".join(f'"{u.address}"' for u in ups)
        config = f"""
        [forward]
        upstreams = [{listed}]
        timeout = 0.5
        total_timeout = 1.5
        [access]
        recursion = ["127.0.0.1/32"]
        {extra}
        """
        self.service, self.host, self.port = start_server(self, config, zones={
            "local.test.zone": """
                $TTL 300
                @ SOA ns1 h 1 2 3 4 5
                @ NS ns1
                ns1 A 192.0.2.1
            """})
        return ups

    @defer.inlineCallbacks
    def test_second_query_is_answered_from_the_cache(self):
        """The upstream sees one query; both clients get its answer, aa=0, rcode kept."""
        (up,) = self.start(lambda q, t: answer_a(q, ["198.51.100.7"]))
        first = yield query(self.host, self.port, "www.example.net", "A")
        second = yield query(self.host, self.port, "WWW.example.NET", "A", tcp=True)
        self.assertEqual(len(up.queries), 1)
        for reply in (first, second):
            self.assertEqual([r.split()[-1] for r in rrs(reply)], ["198.51.100.7"])
            self.assertFalse(reply.flags & dns.flags.AA)
            self.assertTrue(reply.flags & dns.flags.RA)
        self.assertEqual(str(second.question[0].name), "WWW.example.NET.")

    @defer.inlineCallbacks
    def test_upstream_nxdomain_is_kept(self):
        """An upstream NXDOMAIN reaches the client as NXDOMAIN, never turned into something else."""
        self.start(lambda q, t: answer_a(q, [], rcode=wire.NXDOMAIN))
        reply = yield query(self.host, self.port, "missing.example.net", "A")
        self.assertEqual(reply.rcode(), dns.rcode.NXDOMAIN)

    @defer.inlineCallbacks
    def test_silent_upstream_gives_servfail_in_bounded_time(self):
        """An upstream that never answers yields SERVFAIL within total_timeout, not a hang."""
        self.start(lambda q, t: None)
        started = reactor.seconds()
        reply = yield query(self.host, self.port, "slow.example.net", "A")
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertLess(reactor.seconds() - started, 4.0)

    @defer.inlineCallbacks
    def test_servfail_moves_to_the_next_upstream(self):
        """SERVFAIL from the first upstream sends the query to the second."""
        bad = FakeUpstream(lambda q, t: answer_a(q, [], rcode=wire.SERVFAIL)).start(self)
        good = FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.9"])).start(self)
        self.start(None, upstreams=[bad, good])
        reply = yield query(self.host, self.port, "host.example.net", "A")
        self.assertEqual([r.split()[-1] for r in rrs(reply)], ["198.51.100.9"])
        self.assertEqual((len(bad.queries), len(good.queries)), (1, 1))

    @defer.inlineCallbacks
    def test_truncated_udp_is_retried_over_tcp(self):
        """A truncated UDP reply from upstream is fetched again over TCP."""
        def answer(q, transport):
            if transport == "udp":
                return answer_a(q, [], flags=wire.FLAG_TC)
            return answer_a(q, ["198.51.100.%d" % i for i in range(1, 40)])
        (up,) = self.start(answer)
        reply = yield query(self.host, self.port, "big.example.net", "A", tcp=True)
        self.assertEqual(len(rrs(reply)), 39)
        self.assertEqual([t for t, _ in up.queries], ["udp", "tcp"])

    @defer.inlineCallbacks
    def test_denied_client_is_refused_for_forwarded_names(self):
        """A client outside [access] recursion gets REFUSED (no RA) but still gets local answers."""
        (up,) = self.start(lambda q, t: answer_a(q, ["198.51.100.7"]))
        refused = yield query(self.host, self.port, "www.example.net", "A", source="127.0.0.2")
        local = yield query(self.host, self.port, "ns1.local.test", "A", source="127.0.0.2")
        self.assertEqual(refused.rcode(), dns.rcode.REFUSED)
        self.assertFalse(refused.flags & dns.flags.RA)
        self.assertEqual(up.queries, [])
        self.assertEqual(rrs(local), ["ns1.local.test. 300 A 192.0.2.1"])

    @defer.inlineCallbacks
    def test_spoofed_reply_is_ignored(self):
        """A reply with the wrong question is dropped; the query then fails over, never poisoned."""
        def answer(q, transport):
            other = wire.Query(q.id, q.flags, wire.from_text("evil.example"), q.qtype, q.qclass,
                               wire.from_text("evil.example") + q.question[-4:], q.edns)
            return answer_a(other, ["203.0.113.66"])
        self.start(answer)
        reply = yield query(self.host, self.port, "bank.example.net", "A")
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertGreaterEqual(self.service.forwarder.stats.dropped_replies, 1)


class RobustnessTests(unittest.TestCase):
    """Bad input gets a clear answer and the server keeps serving."""

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(self, ARTICLE_CONFIG)

    @defer.inlineCallbacks
    def test_garbage_then_a_real_query(self):
        """Short packets and responses are dropped, a bad body gets FORMERR, then a query works."""
        self.assertIsNone((yield raw_udp(self.host, self.port, b"\x00\x01garbage", timeout=0.3)))
        response_bit = wire.encode_query(7, wire.from_text("example.com"), wire.A)
        response_bit = response_bit[:2] + bytes([response_bit[2] | 0x80]) + response_bit[3:]
        self.assertIsNone((yield raw_udp(self.host, self.port, response_bit, timeout=0.3)))
        bad_body = wire.encode_query(9, wire.from_text("example.com"), wire.A)[:-3]
        formerr = yield raw_udp(self.host, self.port, bad_body)
        self.assertEqual((formerr[0:2], formerr[3] & 0xF), (b"\x00\x09", wire.FORMERR))
        good = yield query(self.host, self.port, "example.com", "A", source="127.0.0.3")
        self.assertEqual(rrs(good), ["example.com. 60 A 192.168.139.10"])

    @defer.inlineCallbacks
    def test_tcp_pipelining_and_a_lying_length(self):
        """Two queries on one connection are both answered; a short body after a long prefix does not
        stop other clients."""
        q1 = wire.encode_query(1, wire.from_text("example.com"), wire.A)
        q2 = wire.encode_query(2, wire.from_text("example.com"), wire.MX)
        frames = [len(q1).to_bytes(2, "big") + q1 + len(q2).to_bytes(2, "big") + q2]
        replies = yield raw_tcp(self.host, self.port, frames, replies=2)
        self.assertEqual(sorted(r[:2] for r in replies), [b"\x00\x01", b"\x00\x02"])
        liar = raw_tcp(self.host, self.port, [b"\x01\x00" + q1], replies=1, timeout=0.5)
        good = yield query(self.host, self.port, "example.com", "A", tcp=True, source="127.0.0.3")
        self.assertEqual(rrs(good), ["example.com. 60 A 192.168.139.10"])
        self.assertEqual((yield liar), [])
