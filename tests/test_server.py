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


def question_bytes(qname: str = "www.proto.test", qtype: int = wire.A, qclass: int = wire.IN) -> bytes:
    """A raw question entry."""
    return wire.from_text(qname) + struct.pack("!HH", qtype, qclass)


def raw_query(qid: int, flags: int, qname: str = "www.proto.test", qtype: int = wire.A, qclass: int = wire.IN, *,
              edns: bool = False, edns_version: int = 0) -> bytes:
    """A query with exactly the header ``flags`` given (opcode included) and an optional OPT."""
    opt = wire.ROOT + struct.pack("!HHIH", wire.OPT, 1232, edns_version << 16, 0) if edns else b""
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, int(edns)) + question_bytes(qname, qtype, qclass) + opt


def tsig_record(key_name: bytes, algorithm: str = "HMAC-SHA256") -> bytes:
    """A TSIG record with a made-up 32-byte MAC (no key here knows it)."""
    rdata = (wire.from_text(algorithm) + struct.pack("!HIH", 0, 1_700_000_000, 300) + struct.pack("!H", 32)
             + b"\x01" * 32 + struct.pack("!HHH", 1, 0, 0))
    return key_name + struct.pack("!HHIH", wire.TSIG, wire.CLASS_ANY, 0, len(rdata)) + rdata


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
        """Opcodes other than QUERY, NOTIFY and UPDATE get NOTIMP as BIND answers it: every flag
        clear but QR, the opcode echoed, no question, and an OPT when the query had one."""
        every_flag = wire.FLAG_RD | wire.FLAG_CD | wire.FLAG_AD | wire.FLAG_AA | wire.FLAG_TC | wire.FLAG_RA | 0x40
        for opcode in (1, 2, 3, 6, 15):
            for edns in (False, True):
                raw = self.ask(raw_query(8, opcode << 11 | every_flag, edns=edns))
                self.assertEqual(raw[:4], struct.pack("!HH", 8, 0x8000 | opcode << 11 | wire.NOTIMP))
                self.assertEqual(raw[4:12], struct.pack("!HHHH", 0, 0, 0, int(edns)))
                if edns:
                    self.assertEqual(raw[12:], wire.opt_record(1232, False))
        raw = self.ask(struct.pack("!HHHHHH", 9, 15 << 11, 0, 0, 0, 1) + wire.opt_record(1232, False))
        self.assertEqual(raw, struct.pack("!HHHHHH", 9, 0xF800 | wire.NOTIMP, 0, 0, 0, 1) + wire.opt_record(1232, False))

    def test_edns_version_and_form_come_before_the_opcode(self):
        """As BIND: EDNS version 1 with an unknown opcode is BADVERS, and a malformed one FORMERR
        (without OPT), both with the flags clear and no question."""
        badvers = self.ask(raw_query(10, 15 << 11 | wire.FLAG_RD, edns=True, edns_version=1))
        reply = decode(badvers)
        self.assertEqual((reply.rcode(), reply.flags, reply.edns, reply.question), (dns.rcode.BADVERS, 0xF800, 0, []))
        formerr = self.ask(raw_query(11, 15 << 11 | wire.FLAG_RD, edns=True)[:-11] + b"\x01\x02")
        self.assertEqual(formerr, struct.pack("!HHHHHH", 11, 0xF800 | wire.FORMERR, 0, 0, 0, 0))

    def test_notify(self):
        """NOTIFY (nobody's secondary here): NOERROR with AA for a local zone's apex, NOTAUTH for
        other names, FORMERR for another type, NOTIMP for CH; the question echoed, RD and CD
        not, the OPT kept."""
        cases = [("proto.test", wire.SOA, wire.IN, wire.NOERROR), ("www.proto.test", wire.SOA, wire.IN, wire.NOTAUTH),
                 ("elsewhere.test", wire.SOA, wire.IN, wire.NOTAUTH), ("proto.test", wire.A, wire.IN, wire.FORMERR),
                 ("proto.test", wire.SOA, wire.CH, wire.NOTIMP)]
        for qname, qtype, qclass, rcode in cases:
            data = raw_query(12, 4 << 11 | wire.FLAG_RD | wire.FLAG_CD | wire.FLAG_AA, qname, qtype, qclass, edns=True)
            raw = self.ask(data)
            aa = wire.FLAG_AA if rcode == wire.NOERROR else 0
            self.assertEqual(raw[:12], struct.pack("!HHHHHH", 12, 0xA000 | aa | rcode, 1, 0, 0, 1), qname)
            self.assertEqual(raw[12:], data[12:])           # the question, then the same OPT

    def test_update(self):
        """UPDATE: REFUSED for a local zone (no zone takes updates), NOTAUTH for another zone,
        with the zone section echoed and the OPT kept."""
        for qname, rcode in (("proto.test", wire.REFUSED), ("elsewhere.test", wire.NOTAUTH),
                             ("www.proto.test", wire.NOTAUTH)):
            data = raw_query(13, 5 << 11 | wire.FLAG_RD, qname, wire.SOA, edns=True)
            raw = self.ask(data)
            self.assertEqual(raw, struct.pack("!HHHHHH", 13, 0xA800 | rcode, 1, 0, 0, 1) + data[12:], qname)

    def test_no_question(self):
        """No question with an OPT: FORMERR for QUERY, NOTIFY and UPDATE, NOTIMP for other
        opcodes, each with the OPT (BIND parses the OPT first)."""
        for opcode, rcode in ((0, wire.FORMERR), (4, wire.FORMERR), (5, wire.FORMERR), (15, wire.NOTIMP)):
            raw = self.ask(struct.pack("!HHHHHH", 14, opcode << 11 | wire.FLAG_RD, 0, 0, 0, 1) + wire.opt_record(1232, False))
            rd = wire.FLAG_RD if opcode == 0 else 0
            self.assertEqual(raw, struct.pack("!HHHHHH", 14, 0x8000 | opcode << 11 | rd | rcode, 0, 0, 0, 1)
                             + wire.opt_record(1232, False))

    def test_two_questions_lose_question_and_opt(self):
        """Two questions and an OPT: FORMERR with neither question nor OPT, RD and CD echoed."""
        data = raw_query(15, wire.FLAG_RD | wire.FLAG_CD, edns=True)
        data = data[:5] + b"\x02" + data[6:12] + question_bytes() + data[12:]
        self.assertEqual(self.ask(data), struct.pack("!HHHHHH", 15, 0x8000 | 0x0110 | wire.FORMERR, 0, 0, 0, 0))

    def test_trailing_bytes_are_ignored(self):
        """Bytes after the last record are ignored, as BIND does: a normal answer."""
        for tcp in (False, True):
            reply = decode(self.ask(raw_query(16, wire.FLAG_RD, edns=True) + b"\x00\x00\x01", tcp=tcp))
            self.assertEqual((reply.rcode(), reply.edns), (dns.rcode.NOERROR, 0))
            self.assertEqual([rd.to_text() for rd in reply.answer[0]], ["192.0.2.2"])

    def test_tsig_with_unknown_key(self):
        """A TSIG-signed query: NOTAUTH, RD and CD echoed, the question and OPT, then an unsigned
        TSIG (key and algorithm in lower case, time now, fudge 300, no MAC, the query's ID,
        error BADKEY), as BIND answers for a key it does not hold."""
        data = raw_query(17, wire.FLAG_RD | wire.FLAG_CD | wire.FLAG_AD, edns=True)
        data = data[:11] + b"\x02" + data[12:] + tsig_record(b"\x08Some-Key\x00")
        for tcp in (False, True):
            raw = self.ask(data, tcp=tcp)
            reply = dns.message.from_wire(raw, keyring=False)
            self.assertEqual((reply.id, reply.rcode(), reply.flags), (17, dns.rcode.NOTAUTH, 0x8119))
            self.assertEqual(reply.question[0].to_text(), "www.proto.test. IN A")
            self.assertEqual(reply.edns, 0)
            tail = wire.opt_record(1232, False) + b"\x08some-key\x00"      # OPT, then the TSIG (39 bytes on)
            self.assertEqual((raw[10:12], raw[-len(tail) - 39:-39]), (b"\x00\x02", tail))
            self.assertEqual(reply.tsig.name, dns.name.from_text("some-key."))
            rdata = reply.tsig[0]
            self.assertEqual((rdata.algorithm.to_text(), rdata.fudge, rdata.mac, rdata.original_id, rdata.error,
                              rdata.other), ("hmac-sha256.", 300, b"", 17, wire.BADKEY, b""))
            self.assertLessEqual(abs(rdata.time_signed - self.service.reactor.seconds()), 5)

    def test_tsig_not_last_is_formerr(self):
        """A TSIG followed by another record: FORMERR with the question, without OPT."""
        data = raw_query(18, wire.FLAG_RD, edns=True)
        opt = data[-11:]
        data = data[:11] + b"\x02" + data[12:-11] + tsig_record(b"\x01k\x00") + opt
        self.assertEqual(self.ask(data), struct.pack("!HHHHHH", 18, 0x8100 | wire.FORMERR, 1, 0, 0, 0)
                         + question_bytes())

    def test_refusals_carry_opt(self):
        """REFUSED for CH on a zone name, a name outside the local zones and AXFR keeps the OPT."""
        for qname, qtype, qclass in (("www.proto.test", wire.A, wire.CH), ("www.elsewhere.test", wire.A, wire.IN),
                                     ("proto.test", wire.AXFR, wire.IN)):
            for tcp in (False, True):
                reply = decode(self.ask(raw_query(19, wire.FLAG_RD, qname, qtype, qclass, edns=True), tcp=tcp))
                self.assertEqual((reply.rcode(), reply.edns, reply.payload), (dns.rcode.REFUSED, 0, 1232))

    def test_corners_stay_off_the_fast_lanes(self):
        """sniff() rejects other opcodes, TSIG and trailing bytes, and the memo stays empty after
        asking each twice."""
        handler = self.handler
        signed = raw_query(20, wire.FLAG_RD)
        signed = signed[:11] + b"\x01" + signed[12:] + tsig_record(b"\x01k\x00")
        packets = [raw_query(20, 15 << 11), raw_query(20, 4 << 11, "proto.test", wire.SOA), signed,
                   raw_query(20, wire.FLAG_RD) + b"\x00"]
        handler._memo.clear()
        for data in packets:
            self.assertIsNone(wire.sniff(data))
            self.assertEqual(self.ask(data), self.ask(data))
        self.assertEqual(handler._memo, {})
        self.assertEqual(handler.replay, {})

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
        """ANY over UDP is answered with a single RRset (RFC 8482, BIND's minimal-any), no
        additional section and, for RD=0, no NS; over TCP with every RRset at the name."""
        reply = self.query("www.proto.test", "ANY")
        self.assertEqual(len(reply.answer), 1)
        self.assertTrue(reply.flags & dns.flags.AA)
        msg = dns.message.make_query("proto.test", "ANY")
        msg.flags &= ~dns.flags.RD
        udp = decode(self.ask(msg.to_wire()))
        self.assertEqual((len(udp.answer), udp.authority, udp.additional), (1, [], []))
        tcp = decode(self.ask(msg.to_wire(), tcp=True))
        self.assertEqual(sorted(dns.rdatatype.to_text(r.rdtype) for r in tcp.answer), ["NS", "SOA"])
        self.assertEqual((tcp.authority, tcp.additional), ([], []))
        www = dns.message.make_query("www.proto.test", "ANY")
        www.flags &= ~dns.flags.RD
        full = decode(self.ask(www.to_wire(), tcp=True))
        self.assertEqual(sorted(dns.rdatatype.to_text(r.rdtype) for r in full.answer), ["A", "AAAA", "TXT"])
        self.assertEqual([r.to_text() for r in full.authority], ["proto.test. 300 IN NS ns1.proto.test."])
        self.assertEqual(full.additional, [])

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


class UDPListenerTests(unittest.TestCase):
    """The UDP listener's socket."""

    def test_receive_buffer_is_enlarged(self):
        """Each UDP listener asks for UDP_RECEIVE_BUFFER_BYTES of receive buffer, so queries that
        arrive while the reactor is busy wait instead of being dropped; Linux gives at most
        net.core.rmem_max (and reports twice what it gives)."""
        import socket

        from smartdns.server import UDP_RECEIVE_BUFFER_BYTES
        service, _, _ = start_server(self, CONFIG, zones=ZONES)
        with open("/proc/sys/net/core/rmem_max") as handle:
            allowed = min(UDP_RECEIVE_BUFFER_BYTES, int(handle.read()))
        udp = service.ports[0]
        self.assertGreaterEqual(udp.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), allowed)


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
