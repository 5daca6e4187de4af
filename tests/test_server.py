"""The query handler's protocol rules, straight through ``QueryHandler.handle`` (no sockets), and
the TCP listener's limits with a fake transport and a task.Clock."""
from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from smartdns import wire
from smartdns.server import SmartDNSServerFactory
from tests.support import start_server

ZONES = {
    "proto.test.zone": """
        $TTL 300
        @ SOA ns1 h 1 2 3 4 60
        @ NS ns1
        ns1 A 192.0.2.1
        www A 192.0.2.2
        www AAAA 2001:db8::2
        www TXT "hello"
        big TXT "{a}" "{a}" "{a}"
        many A 192.0.2.10
        many A 192.0.2.11
        many A 192.0.2.12
        *.wild A 192.0.2.99
        alias CNAME www
    """.replace("{a}", "a" * 200),
    "office/proto.test.zone": "www A 10.0.0.2\n",
}
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
control_socket = ""
chaos_version = "smartdns-test"
[lines]
office = ["127.0.0.3/32"]
[forward]
upstreams = []
"""


def decode(data: bytes) -> dns.message.Message:
    return dns.message.from_wire(data)


class ProtocolRuleTests(unittest.TestCase):
    """FORMERR, NOTIMP, BADVERS, REFUSED, TC and friends."""

    def setUp(self) -> None:
        self.service, _, _ = start_server(self, CONFIG, zones=ZONES)
        self.handler = self.service.handler

    def ask(self, data: bytes, client: str = "127.0.0.1", tcp: bool = False) -> bytes | None:
        reply = self.handler.handle(data, client, tcp)
        if reply is not None and not isinstance(reply, bytes):
            reply = self.successResultOf(reply)
        return reply

    def query(self, name: str, rdtype: str = "A", rdclass: str = "IN", **kwargs) -> dns.message.Message:
        msg = dns.message.make_query(name, rdtype, rdclass, **kwargs)
        return decode(self.ask(msg.to_wire()))

    def test_badvers(self):
        """EDNS version 1 gets BADVERS with an OPT and no records (RFC 6891 §6.1.3)."""
        reply = self.query("www.proto.test", use_edns=1)
        self.assertEqual(reply.rcode(), dns.rcode.BADVERS)
        self.assertEqual(reply.edns, 0)
        self.assertEqual(reply.answer, [])

    def test_two_opt_records_are_formerr(self):
        """More than one OPT is FORMERR (RFC 6891 §6.1.1)."""
        data = wire.encode_query(5, wire.from_text("www.proto.test"), wire.A, edns_payload=1232)
        data = data[:11] + b"\x02" + data[12:] + wire.opt_record(1232, False)
        reply = decode(self.ask(data))
        self.assertEqual((reply.id, reply.rcode()), (5, dns.rcode.FORMERR))

    def test_qdcount_not_one_is_formerr(self):
        """No question, or two, is FORMERR with the query's ID."""
        two = wire.encode_query(6, wire.from_text("www.proto.test"), wire.A)
        two = two[:5] + b"\x02" + two[6:] + two[12:]
        none = struct.pack("!HHHHHH", 7, 0x0100, 0, 0, 0, 0)
        for data, qid in ((two, 6), (none, 7)):
            raw = self.ask(data)
            self.assertEqual(struct.unpack("!H", raw[:2])[0], qid)
            self.assertEqual(raw[3] & 0xF, wire.FORMERR)
            self.assertTrue(raw[2] & 0x80)

    def test_unknown_opcode_is_notimp(self):
        """NOTIFY, UPDATE and unassigned opcodes get NOTIMP, as responses (QR=1)."""
        for opcode in (dns.opcode.NOTIFY, dns.opcode.UPDATE, 3, 15):
            data = bytearray(wire.encode_query(8, wire.from_text("www.proto.test"), wire.A))
            data[2] = (data[2] & 0x87) | (opcode << 3)
            raw = self.ask(bytes(data))
            self.assertEqual(raw[3] & 0xF, wire.NOTIMP)
            self.assertEqual((raw[2] >> 3) & 0xF, opcode)
            self.assertTrue(raw[2] & 0x80)

    def test_responses_and_runts_are_dropped(self):
        """A packet with QR=1, or shorter than a header, is never answered."""
        data = bytearray(wire.encode_query(9, wire.from_text("www.proto.test"), wire.A))
        data[2] |= 0x80
        self.assertIsNone(self.ask(bytes(data)))
        self.assertIsNone(self.ask(b"\x00\x01\x00"))

    def test_transfers_are_refused(self):
        """AXFR and IXFR are REFUSED over UDP and TCP: a transfer would leak every line's data."""
        for rdtype in ("AXFR", "IXFR"):
            for tcp in (False, True):
                raw = self.ask(dns.message.make_query("proto.test", rdtype).to_wire(), tcp=tcp)
                self.assertEqual(decode(raw).rcode(), dns.rcode.REFUSED)

    def test_any_gets_one_rrset(self):
        """ANY is answered with a single RRset (RFC 8482)."""
        reply = self.query("www.proto.test", "ANY")
        self.assertEqual(len(reply.answer), 1)
        self.assertTrue(reply.flags & dns.flags.AA)

    def test_chaos_class(self):
        """CH version.bind gets the configured string; CH for a zone name never gets IN data."""
        reply = self.query("version.bind", "TXT", "CH")
        self.assertEqual([rd.to_text() for rd in reply.answer[0]], ['"smartdns-test"'])
        self.assertEqual(self.query("www.proto.test", "A", "CH").rcode(), dns.rcode.REFUSED)
        self.service.handler.set_chaos_version("")
        self.assertEqual(self.query("version.bind", "TXT", "CH").rcode(), dns.rcode.REFUSED)

    def test_udp_truncation_and_tcp(self):
        """Without EDNS a >512-byte answer is TC over UDP; with EDNS 1232 or over TCP it is whole."""
        plain = self.query("big.proto.test", "TXT")
        self.assertTrue(plain.flags & dns.flags.TC)
        edns = self.query("big.proto.test", "TXT", use_edns=0, payload=1232)
        self.assertFalse(edns.flags & dns.flags.TC)
        self.assertEqual(len(edns.answer), 1)
        raw = self.ask(dns.message.make_query("big.proto.test", "TXT").to_wire(), tcp=True)
        self.assertFalse(decode(raw).flags & dns.flags.TC)

    def test_small_edns_payload_is_raised_to_512(self):
        """An EDNS payload below 512 counts as 512 (RFC 6891 §6.2.5); the reply advertises 1232."""
        reply = self.query("www.proto.test", "A", use_edns=0, payload=100)
        self.assertFalse(reply.flags & dns.flags.TC)
        self.assertEqual(reply.payload, 1232)

    def test_do_bit_is_echoed(self):
        """The DO bit of the query comes back in the OPT (RFC 3225 §3)."""
        reply = self.query("www.proto.test", "A", want_dnssec=True)
        self.assertTrue(reply.ednsflags & dns.flags.DO)

    def test_rd_and_cd_are_copied(self):
        """RD and CD are echoed; RA is clear, since with ``upstreams = []`` no recursion is offered."""
        msg = dns.message.make_query("www.proto.test", "A")
        msg.flags |= dns.flags.CD
        reply = decode(self.ask(msg.to_wire()))
        self.assertTrue(reply.flags & dns.flags.RD and reply.flags & dns.flags.CD)
        self.assertFalse(reply.flags & dns.flags.RA)

    def test_no_upstreams_means_refused(self):
        """With ``upstreams = []`` a name outside the local zones is REFUSED (not SERVFAIL), RA clear."""
        for tcp in (False, True):
            reply = decode(self.ask(dns.message.make_query("www.elsewhere.test", "A").to_wire(), tcp=tcp))
            self.assertEqual(reply.rcode(), dns.rcode.REFUSED)
            self.assertFalse(reply.flags & dns.flags.RA)


class FastPathIdentityTests(unittest.TestCase):
    """The memoized fast path returns byte-for-byte what the full path returns."""

    CORPUS = [
        ("www.proto.test", "A", {}), ("WwW.PrOtO.TeSt", "A", {}), ("www.proto.test", "AAAA", {"use_edns": 0}),
        ("big.proto.test", "TXT", {}), ("big.proto.test", "TXT", {"use_edns": 0, "payload": 512}),
        ("big.proto.test", "TXT", {"use_edns": 0, "payload": 4096}), ("many.proto.test", "A", {"want_dnssec": True}),
        ("x.wild.proto.test", "A", {}), ("alias.proto.test", "A", {}), ("nx.proto.test", "MX", {}),
        ("proto.test", "NS", {}), ("proto.test", "SOA", {"use_edns": 0}),
    ]

    def setUp(self) -> None:
        self.service, _, _ = start_server(self, CONFIG, zones=ZONES)

    def test_byte_identical(self):
        """For every query, line, transport and RD setting the second (memoized) answer equals
        the first (fully computed) one, and equals what a handler with no memo computes."""
        handler = self.service.handler
        checked = 0
        for name, rdtype, kwargs in self.CORPUS:
            for client in ("127.0.0.1", "127.0.0.3", "192.0.2.50"):
                for tcp in (False, True):
                    for rd in (True, False):
                        msg = dns.message.make_query(name, rdtype, **kwargs)
                        if not rd:
                            msg.flags &= ~dns.flags.RD
                        data = msg.to_wire()
                        handler._memo.clear()
                        first = handler.handle(data, client, tcp)
                        hits = handler.stats.memo_hits
                        second = handler.handle(data, client, tcp)
                        self.assertEqual(handler.stats.memo_hits, hits + 1, (name, rdtype, client, tcp))
                        self.assertEqual(first, second, (name, rdtype, client, tcp, rd))
                        handler._memo.clear()
                        third = handler._handle_full(data, client, tcp, handler.snapshot(), None)
                        self.assertEqual(first, third)
                        checked += 1
        self.assertEqual(checked, len(self.CORPUS) * 12)


class TCPLimitTests(unittest.TestCase):
    """The TCP listener's idle timeout and connection cap, with a fake transport and clock."""

    def make(self, limit: int = 2, idle: float = 10.0):
        self.service, _, _ = start_server(self, CONFIG, zones=ZONES)
        factory = SmartDNSServerFactory(self.service.handler, idle, limit)
        clock = task.Clock()

        def connect():
            proto = factory.buildProtocol(None)
            proto.callLater = clock.callLater
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
            proto.makeConnection(transport)
            return proto, transport

        return factory, clock, connect

    def test_idle_connection_is_closed(self):
        """No query for tcp_idle_timeout seconds closes the connection; a query resets the timer."""
        _, clock, connect = self.make(idle=10.0)
        proto, transport = connect()
        clock.advance(9)
        q = wire.encode_query(1, wire.from_text("www.proto.test"), wire.A)
        proto.dataReceived(struct.pack("!H", len(q)) + q)
        self.assertTrue(transport.value())
        clock.advance(9)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_half_sent_message_does_not_hold_the_connection(self):
        """A length prefix promising more than is sent is cut off at the idle timeout."""
        _, clock, connect = self.make(idle=5.0)
        proto, transport = connect()
        proto.dataReceived(b"\x01\x00" + b"x" * 20)
        clock.advance(5)
        self.assertTrue(transport.disconnecting)

    def test_connection_cap(self):
        """Connections beyond tcp_max_connections are closed at once."""
        factory, _, connect = self.make(limit=2)
        conns = [connect() for _ in range(3)]
        self.assertEqual([t.disconnecting for _, t in conns], [False, False, True])
        conns[0][0].connectionLost(None)
        self.assertEqual(factory.connections, 2)
