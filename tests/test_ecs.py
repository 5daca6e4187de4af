"""EDNS Client Subnet (RFC 7871): parsing, line choice for ``[ecs] trusted`` clients, the
scope echoed, FORMERR for malformed options, and ``dig +subnet`` (and ``kdig``) from a trusted
and an untrusted loopback address."""
from __future__ import annotations

import re
import shutil

import dns.edns
import dns.message
import dns.query
import dns.rcode
from twisted.internet import defer, threads, utils
from twisted.trial import unittest

from smartdns import ecs, wire
from tests.support import FakeUpstream, answer_a, dig, dig_available, start_server

ZONES = {
    "ecs.test.zone": "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\n",
    "east/ecs.test.zone": "www A 10.1.0.53\n",
    "west/ecs.test.zone": "www A 10.2.0.53\n",
}
CONFIG = """
[lines]
east = ["10.1.0.0/16", "2001:db8:1::/48"]
west = ["127.0.0.3/32", "10.2.0.0/16", "10.1.2.128/25"]
[ecs]
trusted = ["127.0.0.2/32"]
[forward]
upstreams = []
"""
TRUSTED, UNTRUSTED = "127.0.0.2", "127.0.0.3"

# Option data (family, source, scope, address) → why it is FORMERR (RFC 7871 §7.1.2).
MALFORMED = [
    (bytes.fromhex("0003180000000000"), "unknown family"),
    (bytes.fromhex("000121000a010200ff"), "IPv4 source prefix 33"),
    (bytes.fromhex("0002810000"), "IPv6 source prefix 129"),
    (bytes.fromhex("000118080a0102"), "scope set in a query"),
    (bytes.fromhex("000118000a01"), "too few address bytes"),
    (bytes.fromhex("000110000a010200"), "too many address bytes"),
    (bytes.fromhex("000117000a0103"), "a bit beyond the /23"),
    (bytes.fromhex("0001"), "cut short"),
]


def ecs_query(body: bytes, name: str = "www.ecs.test") -> bytes:
    """An EDNS query carrying an ECS option with ``body``."""
    return dns.message.make_query(name, "A", use_edns=0,
                                  options=[dns.edns.GenericOption(ecs.ECS_OPTION, body)]).to_wire()


def subnet(text: str) -> bytes:
    """The ECS option data a client sends for ``text`` (``10.1.2.0/24``)."""
    option = dns.edns.ECSOption.from_text(text)
    return option.to_wire()


class ParseTests(unittest.TestCase):
    """The option parser."""

    def test_valid(self) -> None:
        """IPv4 and IPv6 subnets parse; the reply option echoes them with the scope given."""
        parsed = ecs.parse(subnet("10.1.2.0/24"))
        self.assertEqual((parsed.family, parsed.source, parsed.address), (1, 24, b"\x0a\x01\x02"))
        self.assertEqual(str(parsed.network), "10.1.2.0/24")
        self.assertEqual(parsed.option(16), bytes.fromhex("0008000700011810") + b"\x0a\x01\x02")
        self.assertEqual(str(ecs.parse(subnet("2001:db8:1::/56")).network), "2001:db8:1::/56")
        self.assertEqual(str(ecs.parse(bytes.fromhex("00010000")).network), "0.0.0.0/0")

    def test_malformed(self) -> None:
        """Each malformed row is refused."""
        for body, why in MALFORMED:
            self.assertRaises(ecs.SubnetFormatError, ecs.parse, body)


class HandlerTests(unittest.TestCase):
    """What the handler answers to ECS."""

    def setUp(self) -> None:
        self.service, _, _ = start_server(self, CONFIG, zones=ZONES)
        self.handler = self.service.handler

    def ask(self, data: bytes, client: str) -> dns.message.Message:
        reply = self.handler.handle(data, client, False)
        assert isinstance(reply, bytes)
        return dns.message.from_wire(reply)

    def answer_and_scope(self, text: str, client: str) -> tuple[str, str]:
        reply = self.ask(ecs_query(subnet(text)), client)
        options = [o for o in reply.options if o.otype == ecs.ECS_OPTION]
        self.assertEqual(len(options), 1)
        return reply.answer[0][0].to_text(), options[0].to_text()

    def test_trusted_client_chooses_by_subnet(self) -> None:
        """From a trusted address the subnet's line answers, and the scope is the prefix
        length of the CIDR that chose it (the longest match); no match is the base, scope 0."""
        rows = [
            ("10.1.2.0/24", ("10.1.0.53", "ECS 10.1.2.0/24 scope/16")),
            ("10.1.2.128/25", ("10.2.0.53", "ECS 10.1.2.128/25 scope/25")),
            ("10.1.2.0/23", ("10.1.0.53", "ECS 10.1.2.0/23 scope/16")),
            ("10.2.7.7/32", ("10.2.0.53", "ECS 10.2.7.7/32 scope/16")),
            ("10.9.0.0/16", ("192.0.2.2", "ECS 10.9.0.0/16 scope/0")),
            ("2001:db8:1:2::/64", ("10.1.0.53", "ECS 2001:db8:1:2::/64 scope/48")),
        ]
        for text, expected in rows:
            self.assertEqual(self.answer_and_scope(text, TRUSTED), expected, text)

    def test_untrusted_client_chooses_by_address(self) -> None:
        """From anyone else the line is the client's own and the scope 0."""
        self.assertEqual(self.answer_and_scope("10.1.2.0/24", UNTRUSTED), ("10.2.0.53", "ECS 10.1.2.0/24 scope/0"))
        self.assertEqual(self.answer_and_scope("10.2.0.0/24", "127.0.0.9"), ("192.0.2.2", "ECS 10.2.0.0/24 scope/0"))

    def test_source_prefix_zero(self) -> None:
        """A /0 subnet (the client opted out, RFC 7871 §7.1.2) leaves the line to the address."""
        self.assertEqual(self.answer_and_scope("0.0.0.0/0", UNTRUSTED), ("10.2.0.53", "ECS 0.0.0.0/0 scope/0"))
        self.assertEqual(self.answer_and_scope("0.0.0.0/0", TRUSTED), ("192.0.2.2", "ECS 0.0.0.0/0 scope/0"))

    def test_recursion_right_stays_the_clients(self) -> None:
        """A subnet inside [access] recursion does not give an outside client recursion: a
        name outside local zones is still REFUSED."""
        reply = self.ask(ecs_query(subnet("127.0.0.1/32"), "elsewhere.example"), TRUSTED)
        self.assertEqual(reply.rcode(), dns.rcode.REFUSED)

    def test_malformed_is_formerr(self) -> None:
        """Each malformed option is FORMERR with an OPT, from trusted and untrusted clients."""
        for body, why in MALFORMED:
            for client in (TRUSTED, UNTRUSTED):
                reply = self.ask(ecs_query(body), client)
                self.assertEqual(reply.rcode(), dns.rcode.FORMERR, why)
                self.assertEqual(reply.edns, 0, why)
                self.assertEqual(reply.answer, [], why)

    def test_ecs_queries_skip_the_fast_lanes(self) -> None:
        """ECS queries are never sniffed; asked twice, the memo keeps nothing."""
        data = ecs_query(subnet("10.1.2.0/24"))
        self.assertIsNone(wire.sniff(data))
        self.ask(data, TRUSTED)
        self.ask(data, TRUSTED)
        self.assertEqual(self.handler.stats.memo_hits, 0)


class DigSubnetTests(unittest.TestCase):
    """``dig +subnet`` and ``kdig +subnet`` from a trusted and an untrusted loopback address."""

    def setUp(self) -> None:
        if not dig_available():
            raise unittest.SkipTest("dig (bind9-dnsutils) is not installed")
        _, self.host, self.port = start_server(self, CONFIG, zones=ZONES)

    @defer.inlineCallbacks
    def test_dig_subnet(self):
        """Trusted: the subnet's line answers, scope 16; untrusted: its own line, scope 0."""
        out = (yield dig(self.host, self.port, "-b", TRUSTED, "+subnet=10.1.2.0/24", "+short",
                         "www.ecs.test")).decode()
        self.assertEqual(out.strip(), "10.1.0.53")
        out = (yield dig(self.host, self.port, "-b", TRUSTED, "+subnet=10.1.2.0/24", "www.ecs.test")).decode()
        self.assertIn("; CLIENT-SUBNET: 10.1.2.0/24/16", out)
        out = (yield dig(self.host, self.port, "-b", UNTRUSTED, "+subnet=10.1.2.0/24", "www.ecs.test")).decode()
        self.assertIn("; CLIENT-SUBNET: 10.1.2.0/24/0", out)
        self.assertIn("10.2.0.53", out)
        self.assertNotIn("10.1.0.53", out)

    @defer.inlineCallbacks
    def test_kdig_subnet(self):
        """kdig (knot-dnsutils) reads the same scopes."""
        path = shutil.which("kdig")
        if path is None:
            raise unittest.SkipTest("kdig (knot-dnsutils) is not installed")
        rows = [(TRUSTED, "10.1.0.53", "/24/16"), (UNTRUSTED, "10.2.0.53", "/24/0")]
        for source, answer, scope in rows:
            out = yield utils.getProcessOutput(path, ("@" + self.host, "-p", str(self.port), "-b", source,
                                                      "+subnet=10.1.2.0/24", "+time=3", "+retry=0",
                                                      "www.ecs.test", "A"), errortoo=True)
            out = out.decode()
            self.assertIn(answer, out)
            self.assertTrue(re.search(r"CLIENT-SUBNET: 10\.1\.2\.0" + re.escape(scope), out), out)


class ForwardTests(unittest.TestCase):
    """``[ecs] forward``: what goes upstream, and the cache."""

    def start(self, forward: bool):
        self.upstream = FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.7"])).start(self)
        config = f"""
        [lines]
        east = ["10.1.0.0/16"]
        [access]
        recursion = ["127.0.0.0/8"]
        [ecs]
        trusted = ["{TRUSTED}/32"]
        forward = {"true" if forward else "false"}
        [forward]
        upstreams = ["{self.upstream.address}"]
        """
        _, self.host, self.port = start_server(self, config)

    def sent_options(self) -> list[bytes]:
        """The EDNS options of each query the upstream received."""
        return [q.edns.options if q.edns is not None else b"" for _t, q in self.upstream.queries]

    @defer.inlineCallbacks
    def ask(self, text: str | None, source: str, name: str = "fwd.example"):
        options = [dns.edns.ECSOption.from_text(text)] if text else []
        msg = dns.message.make_query(name, "A", use_edns=0, options=options)
        reply = yield threads.deferToThread(dns.query.udp, msg, self.host, port=self.port, timeout=3, source=source)
        return reply

    @defer.inlineCallbacks
    def test_never_sent_upstream_by_default(self):
        """Without ``forward`` no subnet goes upstream, from trusted or other clients, and the
        answer is cached as usual (one upstream query for three client queries)."""
        self.start(forward=False)
        for source in (TRUSTED, UNTRUSTED, TRUSTED):
            reply = yield self.ask("10.1.2.0/24", source)
            self.assertEqual(reply.answer[0][0].to_text(), "198.51.100.7")
        self.assertEqual(len(self.upstream.queries), 1)
        self.assertNotIn(ecs.ECS_OPTION, [code for o in self.sent_options() for code, _ in wire.option_items(o)])

    @defer.inlineCallbacks
    def test_forward_sends_trusted_subnets_and_bypasses_the_cache(self):
        """With ``forward``, a trusted client's subnet goes upstream (scope 0) and its answer is
        neither served from nor put in the cache; untrusted clients' subnets never go up, and
        their answers are cached as usual."""
        self.start(forward=True)
        for _ in range(2):
            reply = yield self.ask("10.1.2.0/24", TRUSTED)
            self.assertEqual(reply.answer[0][0].to_text(), "198.51.100.7")
            self.assertEqual([o.to_text() for o in reply.options], ["ECS 10.1.2.0/24 scope/16"])
        sent = [wire.option_items(o) for o in self.sent_options()]
        self.assertEqual(sent, [[(ecs.ECS_OPTION, bytes.fromhex("000118000a0102"))]] * 2)
        for _ in range(2):
            yield self.ask("10.1.2.0/24", UNTRUSTED)
        yield self.ask(None, TRUSTED)
        self.assertEqual(len(self.upstream.queries), 3)       # the untrusted asks: one, then cached
        self.assertEqual(self.sent_options()[2], b"")
