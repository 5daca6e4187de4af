"""Unit tests for smartdns.wire: query parsing, rendering, truncation and response parsing.

Every rendered message is decoded with dnspython, the independent oracle for our codec.
"""
from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
from twisted.trial import unittest

from smartdns import wire
from tests.unit_support import decode, ipv4, name, record_count, soa_rdata, texts

WWW = name("www.example.com")


def header(id_: int = 0x1234, flags: int = wire.FLAG_RD, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    """A raw 12-byte header."""
    return wire.HEADER.pack(id_, flags, qd, an, ns, ar)


def question(qname: bytes = WWW, qtype: int = wire.A, qclass: int = wire.IN) -> bytes:
    """A raw question entry."""
    return qname + struct.pack("!HH", qtype, qclass)


def opt(payload: int = 1232, flags: int = 0, options: bytes = b"", owner: bytes = wire.ROOT) -> bytes:
    """A raw OPT record."""
    return owner + struct.pack("!HHIH", wire.OPT, payload, flags, len(options)) + options


def tsig(key_name: bytes = name("Some-Key"), algorithm: bytes = name("HMAC-SHA256"), rclass: int = wire.CLASS_ANY,
         mac: bytes = b"\x01" * 32, other: bytes = b"") -> bytes:
    """A raw TSIG record (RFC 8945 §4.2) with a made-up MAC."""
    rdata = (algorithm + struct.pack("!HIH", 0, 1_700_000_000, 300) + struct.pack("!H", len(mac)) + mac
             + struct.pack("!HHH", 0x1234, 0, len(other)) + other)
    return key_name + struct.pack("!HHIH", wire.TSIG, rclass, 0, len(rdata)) + rdata


class ParseQueryTests(unittest.SynchronousTestCase):
    """parse_query: what the hot path reads from a client packet."""

    def test_plain_query(self) -> None:
        """A plain query yields its ID, flags, name as written, type, class and raw question."""
        data = header(0xBEEF) + question(name("WwW.ExAmPlE.CoM"), wire.MX)
        query = wire.parse_query(data)
        self.assertEqual(query.id, 0xBEEF)
        self.assertEqual(query.flags, wire.FLAG_RD)
        self.assertEqual(query.qname, name("WwW.ExAmPlE.CoM"))
        self.assertEqual(query.qkey, WWW)
        self.assertEqual((query.qtype, query.qclass), (wire.MX, wire.IN))
        self.assertEqual(query.question, question(name("WwW.ExAmPlE.CoM"), wire.MX))
        self.assertIsNone(query.edns)
        self.assertEqual(query.opcode, 0)

    def test_edns_read(self) -> None:
        """The OPT record's payload size, version and DO bit are read."""
        data = header(ar=1) + question() + opt(4000, flags=wire.EDNS_DO)
        query = wire.parse_query(data)
        assert query.edns is not None
        self.assertEqual((query.edns.payload, query.edns.version, query.edns.do), (4000, 0, True))

    def test_dnspython_query(self) -> None:
        """A query built by dnspython with EDNS and an option parses to the same question."""
        msg = dns.message.make_query("Mixed.Example.ORG.", "AAAA", use_edns=0, payload=1400,
                                     options=[dns.edns.GenericOption(10, b"12345678")])
        query = wire.parse_query(msg.to_wire())
        self.assertEqual(query.id, msg.id)
        self.assertEqual(query.qname, name("Mixed.Example.ORG"))
        self.assertEqual(query.qtype, wire.AAAA)
        assert query.edns is not None
        self.assertEqual(query.edns.payload, 1400)
        self.assertEqual(query.edns.options, struct.pack("!HH", 10, 8) + b"12345678")

    def test_shorter_than_header(self) -> None:
        """Fewer than 12 bytes is a FormError without an ID (the packet is dropped)."""
        for data in (b"", b"\x12", header()[:11]):
            with self.assertRaises(wire.FormError) as caught:
                wire.parse_query(data)
            self.assertNotIsInstance(caught.exception, wire.QueryError)

    def test_response_is_dropped(self) -> None:
        """A packet with QR=1 is a FormError, not a QueryError: never answer a response."""
        data = header(flags=wire.FLAG_QR) + question()
        with self.assertRaises(wire.FormError) as caught:
            wire.parse_query(data)
        self.assertNotIsInstance(caught.exception, wire.QueryError)

    def assert_query_error(self, data: bytes, id_: int = 0x1234) -> wire.QueryError:
        """``data`` raises QueryError carrying the packet's ID and flags."""
        with self.assertRaises(wire.QueryError) as caught:
            wire.parse_query(data)
        self.assertEqual(caught.exception.id, id_)
        self.assertEqual(caught.exception.flags, wire.HEADER.unpack_from(data)[1])
        return caught.exception

    def test_qdcount_two(self) -> None:
        """QDCOUNT 2 is a QueryError with the ID and no question to echo (BIND), except for
        UPDATE, whose first zone is echoed."""
        self.assertEqual(self.assert_query_error(header(qd=2) + question() + question()).question, b"")
        update = header(flags=wire.OPCODE_UPDATE << 11, qd=2) + question(qtype=wire.SOA) + question()
        self.assertEqual(self.assert_query_error(update).question, question(qtype=wire.SOA))

    def test_no_question_parses(self) -> None:
        """QDCOUNT 0 parses, with an empty question and the OPT: the server decides (FORMERR or
        NOTIMP, by opcode, with the OPT as BIND)."""
        query = wire.parse_query(header(qd=0, ar=1) + opt())
        self.assertEqual((query.question, query.qname, query.qtype, query.qclass), (b"", b"", 0, 0))
        self.assertIsNotNone(query.edns)

    def test_question_cut_short(self) -> None:
        """A question without its full type and class is a QueryError with the ID."""
        self.assert_query_error(header() + WWW + b"\x00\x01\x00")
        self.assert_query_error(header() + WWW)

    def test_name_runs_past_end(self) -> None:
        """A label longer than the packet is a QueryError."""
        self.assert_query_error(header() + b"\x07exam")

    def test_compression_loop_in_question(self) -> None:
        """A pointer to itself in the question is a QueryError, not a hang."""
        self.assert_query_error(header() + b"\xc0\x0c" + b"\x00\x01\x00\x01")

    def test_pointer_into_header(self) -> None:
        """A question name ending in a pointer (here into the header) is a QueryError."""
        self.assert_query_error(header() + b"\x03www\xc0\x04" + b"\x00\x01\x00\x01")

    def test_forward_pointer(self) -> None:
        """A pointer pointing forwards is a QueryError."""
        self.assert_query_error(header() + b"\xc0\x0e" + b"\x03www\x00" + b"\x00\x01\x00\x01")

    def test_compression_loop_in_additional(self) -> None:
        """A looping pointer in an additional record's owner is a QueryError keeping the question."""
        q = question()
        loop_at = 12 + len(q)
        record = struct.pack("!H", 0xC000 | loop_at) + struct.pack("!HHIH", wire.A, wire.IN, 0, 4) + b"\x01\x02\x03\x04"
        error = self.assert_query_error(header(ar=1) + q + record)
        self.assertEqual(error.question, q)

    def test_pointer_loop_between_two_names(self) -> None:
        """Two pointers pointing at each other (one backwards, one forwards) are rejected."""
        q = question()
        first = 12 + len(q)
        # name 1 at `first` points forwards to name 2; name 2 points back to name 1.
        rec1 = struct.pack("!H", 0xC000 | (first + 2 + 10 + 4)) + struct.pack("!HHIH", wire.A, wire.IN, 0, 4) + b"\x01\x02\x03\x04"
        rec2 = struct.pack("!H", 0xC000 | first) + struct.pack("!HHIH", wire.A, wire.IN, 0, 4) + b"\x01\x02\x03\x04"
        self.assert_query_error(header(ar=2) + q + rec1 + rec2)

    def test_unknown_label_type(self) -> None:
        """Label types 0x40 and 0x80 (extended, reserved) are a QueryError."""
        self.assert_query_error(header() + b"\x41x\x00\x00\x01\x00\x01")
        self.assert_query_error(header() + b"\x81x\x00\x00\x01\x00\x01")

    def test_duplicate_opt(self) -> None:
        """Two OPT records are a QueryError (RFC 6891 §6.1.1)."""
        error = self.assert_query_error(header(ar=2) + question() + opt() + opt())
        self.assertEqual(error.question, question())

    def test_opt_outside_additional(self) -> None:
        """An OPT record in the answer or authority section is a QueryError."""
        self.assert_query_error(header(an=1) + question() + opt())
        self.assert_query_error(header(ns=1) + question() + opt())

    def test_named_opt(self) -> None:
        """An OPT record whose owner is not the root is a QueryError."""
        self.assert_query_error(header(ar=1) + question() + opt(owner=WWW))

    def test_bad_option_length(self) -> None:
        """An EDNS option claiming more bytes than the OPT RDATA holds is a QueryError."""
        bad = struct.pack("!HH", 10, 8) + b"1234"
        self.assert_query_error(header(ar=1) + question() + opt(options=bad))

    def test_option_header_cut_short(self) -> None:
        """OPT RDATA ending inside an option header is a QueryError."""
        self.assert_query_error(header(ar=1) + question() + opt(options=b"\x00\x0a\x00"))

    def test_well_formed_options_accepted(self) -> None:
        """Options that tile the RDATA exactly are accepted and kept as raw bytes."""
        good = struct.pack("!HH", 10, 8) + b"12345678" + struct.pack("!HH", 12, 0)
        query = wire.parse_query(header(ar=1) + question() + opt(options=good))
        assert query.edns is not None
        self.assertEqual(query.edns.options, good)

    def test_record_data_cut_short(self) -> None:
        """An additional record whose RDLENGTH passes the end is a QueryError."""
        record = wire.ROOT + struct.pack("!HHIH", wire.A, wire.IN, 0, 4) + b"\x01\x02"
        self.assert_query_error(header(ar=1) + question() + record)

    def test_more_records_announced_than_present(self) -> None:
        """ARCOUNT larger than the records present is a QueryError."""
        self.assert_query_error(header(ar=2) + question() + opt())

    def test_trailing_bytes(self) -> None:
        """Bytes after the last announced record are ignored, as BIND ignores them."""
        query = wire.parse_query(header(ar=1) + question() + opt() + b"\x00junk")
        self.assertEqual(query.question, question())
        self.assertIsNotNone(query.edns)

    def test_tsig(self) -> None:
        """A TSIG as the last record is parsed: its owner and algorithm as sent."""
        query = wire.parse_query(header(ar=2) + question() + opt() + tsig())
        self.assertEqual(query.tsig, wire.Tsig(name("Some-Key"), name("HMAC-SHA256")))
        self.assertIsNotNone(query.edns)
        self.assertIsNone(wire.parse_query(header() + question()).tsig)

    def test_misplaced_or_malformed_tsig(self) -> None:
        """A TSIG not last, in the answer section, twice, not class ANY, or whose fields do not
        fill its RDATA exactly is a QueryError keeping the question (RFC 8945 §5.1, as BIND)."""
        cases = [
            header(ar=2) + question() + tsig() + opt(),
            header(an=1) + question() + tsig(),
            header(ar=2) + question() + tsig() + tsig(),
            header(ar=1) + question() + tsig(rclass=wire.IN),
            header(ar=1) + question() + tsig()[:-2] + b"\x00\x05abcde",     # other length 0, five bytes
            header(ar=1) + question() + name("k") + struct.pack("!HHIH", wire.TSIG, wire.CLASS_ANY, 0, 3) + b"abc",
            header(ar=1) + question() + name("k") + struct.pack("!HHIH", wire.TSIG, wire.CLASS_ANY, 0, 0),
        ]
        for data in cases:
            self.assertEqual(self.assert_query_error(data).question, question())

    def test_tsig_error_record(self) -> None:
        """The unsigned TSIG of an error response: names in lower case, class ANY, TTL 0, the
        time given, fudge 300, no MAC, the query's ID, the error, no other data."""
        record = wire.tsig_error_record(wire.Tsig(name("Some-Key"), name("HMAC-SHA256")), 77, wire.BADKEY,
                                        1_796_110_454)
        rrset = dns.message.from_wire(header(flags=wire.FLAG_QR, qd=0, ar=1) + record, keyring=False).tsig
        self.assertEqual(rrset.name, dns.name.from_text("some-key."))
        self.assertEqual((rrset.rdclass, rrset.ttl), (wire.CLASS_ANY, 0))
        rdata = rrset[0]
        self.assertEqual(rdata.algorithm, dns.name.from_text("hmac-sha256."))
        self.assertEqual((rdata.time_signed, rdata.fudge, rdata.mac, rdata.original_id, rdata.error, rdata.other),
                         (1_796_110_454, 300, b"", 77, wire.BADKEY, b""))

    def test_sniff_agrees_with_parse(self) -> None:
        """The cheap sniff finds the question end and EDNS of a plain query, and gives up on others."""
        plain = header() + question()
        self.assertEqual(wire.sniff(plain), (len(plain), False, 0, False))
        with_opt = header(ar=1) + question() + opt(1400, flags=wire.EDNS_DO)
        self.assertEqual(wire.sniff(with_opt), (12 + len(question()), True, 1400, True))
        self.assertIsNone(wire.sniff(header(qd=2) + question() + question()))
        self.assertIsNone(wire.sniff(header(ar=1) + question() + opt(options=b"\x00\x0a\x00")))
        self.assertIsNone(wire.sniff(header() + b"\xc0\x0c\x00\x01\x00\x01"))


class NameTests(unittest.SynchronousTestCase):
    """Wire names: subdomain checks and text conversion."""

    def test_is_subdomain_label_aligned(self) -> None:
        """A byte suffix that is not on a label boundary is not an ancestor."""
        # "q\x07example" is one label; its tail bytes spell "\x07example", but not as a label.
        tricky = b"\x09q\x07example\x03com\x00"
        self.assertTrue(tricky.endswith(name("example.com")))
        self.assertFalse(wire.is_subdomain(tricky, name("example.com")))
        self.assertTrue(wire.is_subdomain(tricky, name("com")))

    def test_is_subdomain_basic(self) -> None:
        """A name is below itself, its parents and the root, and not below a child or sibling."""
        self.assertTrue(wire.is_subdomain(WWW, WWW))
        self.assertTrue(wire.is_subdomain(WWW, name("example.com")))
        self.assertTrue(wire.is_subdomain(WWW, wire.ROOT))
        self.assertFalse(wire.is_subdomain(name("example.com"), WWW))
        self.assertFalse(wire.is_subdomain(name("badexample.com"), name("example.com")))
        self.assertFalse(wire.is_subdomain(name("example.net"), name("example.com")))

    def test_text_round_trip(self) -> None:
        """from_text and to_text are inverse, and the root is a dot."""
        self.assertEqual(wire.to_text(name("a.B.c.")), "a.B.c.")
        self.assertEqual(wire.from_text("."), wire.ROOT)
        self.assertEqual(wire.to_text(wire.ROOT), ".")
        self.assertEqual(wire.label_count(name("a.b.c")), 3)
        self.assertEqual(wire.parent(name("a.b")), name("b"))
        self.assertEqual(wire.parent(wire.ROOT), wire.ROOT)

    def test_from_text_rejects_bad_names(self) -> None:
        """Empty labels, labels over 63 bytes and names over 255 bytes are rejected."""
        self.assertRaises(ValueError, wire.from_text, "a..b")
        self.assertRaises(ValueError, wire.from_text, "x" * 64 + ".com")
        self.assertRaises(ValueError, wire.from_text, ".".join(["x" * 63] * 4))


def a_rrset(owner: bytes, count: int, ttl: int = 300, base: str = "10.0") -> wire.RRset:
    """An A RRset of ``count`` distinct addresses."""
    return wire.make_rrset(owner, wire.A, ttl, [ipv4(f"{base}.{i // 256}.{i % 256}") for i in range(count)])


class RenderTests(unittest.SynchronousTestCase):
    """render: messages dnspython reads back exactly."""

    def sample(self) -> tuple[bytes, tuple[int, ...], list[wire.RRset]]:
        """A response with names to compress in owners and in MX, CNAME, NS and SOA RDATA."""
        origin = name("example.com")
        q = question(name("www.example.com"), wire.MX)
        rrsets = [
            wire.make_rrset(name("www.example.com"), wire.CNAME, 300, [name("mail.example.com")]),
            wire.make_rrset(name("mail.example.com"), wire.MX, 300, [b"\x00\x0a" + name("mx1.example.com"),
                                                                     b"\x00\x14" + name("mx2.example.net")]),
            wire.make_rrset(origin, wire.NS, 3600, [name("ns1.example.com"), name("ns2.example.com")]),
            wire.make_rrset(origin, wire.SOA, 3600, [soa_rdata("example.com", minimum=77)]),
            wire.make_rrset(name("mx1.example.com"), wire.A, 60, [ipv4("192.0.2.1")]),
        ]
        message, offsets = wire.render(0x4242, wire.FLAG_QR | wire.FLAG_AA, q,
                                       ([rrsets[0], rrsets[1]], [rrsets[2], rrsets[3]], [rrsets[4]]))
        return message, offsets, rrsets

    def test_round_trip(self) -> None:
        """Every record, flag and count survives a round trip through dnspython."""
        message, _, _ = self.sample()
        msg = decode(message)
        self.assertEqual(msg.id, 0x4242)
        self.assertTrue(msg.flags & dns.flags.QR and msg.flags & dns.flags.AA)
        self.assertFalse(msg.flags & dns.flags.TC)
        self.assertEqual(texts(msg.answer), [
            "mail.example.com. 300 MX 10 mx1.example.com.",
            "mail.example.com. 300 MX 20 mx2.example.net.",
            "www.example.com. 300 CNAME mail.example.com.",
        ])
        self.assertEqual(texts(msg.authority), [
            "example.com. 3600 NS ns1.example.com.",
            "example.com. 3600 NS ns2.example.com.",
            "example.com. 3600 SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 77",
        ])
        self.assertEqual(texts(msg.additional), ["mx1.example.com. 60 A 192.0.2.1"])
        self.assertEqual(struct.unpack_from("!4H", message, 4), (1, 3, 3, 1))

    def test_names_compressed(self) -> None:
        """Each distinct suffix is written once; the rest are pointers dnspython follows."""
        message, _, _ = self.sample()
        self.assertEqual(message.count(b"\x07example\x03com\x00"), 1)
        self.assertEqual(message.count(b"\x07example\x03net\x00"), 1)
        self.assertEqual(message.count(b"\x04mail"), 1)
        uncompressed = decode(message).to_wire(max_size=65535)
        # dnspython also compresses, so the sizes are comparable; ours must not be larger.
        self.assertLessEqual(len(message), len(uncompressed))

    def test_pointers_point_backwards_at_names(self) -> None:
        """Every pointer in the message targets an earlier offset holding a label or pointer."""
        message, _, _ = self.sample()
        parsed = wire.parse_message(message)   # our own reader rejects forward pointers
        self.assertEqual(len(parsed.answer), 3)
        msg = decode(message)
        self.assertEqual(msg.question[0].name, dns.name.from_text("www.example.com."))

    def test_question_case_preserved_in_owner(self) -> None:
        """An owner spelled as the client spelled the question is a pointer to it (0x20 kept)."""
        q = question(name("wWw.ExAmPlE.cOm"))
        rrset = wire.make_rrset(name("wWw.ExAmPlE.cOm"), wire.A, 60, [ipv4("192.0.2.7")])
        message, _ = wire.render(1, wire.FLAG_QR, q, ([rrset], [], []))
        owner_at = 12 + len(q)
        self.assertEqual(message[owner_at:owner_at + 2], b"\xc0\x0c")
        msg = decode(message)
        self.assertEqual(msg.question[0].name.to_text(), "wWw.ExAmPlE.cOm.")
        self.assertEqual(msg.answer[0].name.to_text(), "wWw.ExAmPlE.cOm.")

    def test_owner_keeps_its_own_spelling(self) -> None:
        """Compression is case-sensitive (as BIND): an owner spelled unlike the question keeps its
        own case, and only the exactly matching suffix is a pointer."""
        q = question(name("WWW.example.com"))
        rrset = wire.make_rrset(name("www.example.com"), wire.A, 60, [ipv4("192.0.2.7")])
        message, _ = wire.render(1, wire.FLAG_QR, q, ([rrset], [], []))
        owner_at = 12 + len(q)
        self.assertEqual(message[owner_at:owner_at + 6], b"\x03www\xc0\x10")
        self.assertEqual(decode(message).answer[0].name.to_text(), "www.example.com.")

    def test_question_bytes_echoed(self) -> None:
        """The question section is the client's bytes, unchanged."""
        q = question(name("MiXeD.example.com"), wire.TXT)
        message, _ = wire.render(7, wire.FLAG_QR, q, ())
        self.assertEqual(message[12:12 + len(q)], q)

    def test_ttl_offsets_point_at_ttls(self) -> None:
        """Each TTL offset holds the TTL of one record, in order; rewriting them changes the TTLs."""
        message, offsets, rrsets = self.sample()
        self.assertEqual(len(offsets), 1 + 2 + 2 + 1 + 1)
        ttls = [struct.unpack_from("!I", message, o)[0] for o in offsets]
        self.assertEqual(ttls, [300, 300, 300, 3600, 3600, 3600, 60])
        patched = bytearray(message)
        for index, offset in enumerate(offsets):
            struct.pack_into("!I", patched, offset, 1000 + index)
        msg = decode(bytes(patched))
        self.assertEqual([r.ttl for r in msg.answer + msg.authority + msg.additional],
                         [1000, 1001, 1003, 1005, 1006])

    def test_opt_present_when_asked(self) -> None:
        """With ``opt`` the reply carries exactly one OPT with the given size and DO bit."""
        rrset = wire.make_rrset(WWW, wire.A, 60, [ipv4("192.0.2.1")])
        message, _ = wire.render(1, wire.FLAG_QR, question(), ([rrset], [], []),
                                 opt=wire.opt_record(1232, True))
        msg = decode(message)
        self.assertEqual(msg.edns, 0)
        self.assertEqual(msg.payload, 1232)
        self.assertTrue(msg.ednsflags & dns.flags.DO)
        self.assertEqual(struct.unpack_from("!H", message, 10)[0], 1)

    def test_no_opt_unless_asked(self) -> None:
        """Without ``opt`` there is no OPT record."""
        message, _ = wire.render(1, wire.FLAG_QR, question(), ())
        self.assertEqual(decode(message).edns, -1)

    def test_extended_rcode_in_opt(self) -> None:
        """An extended rcode (BADVERS) is split between the header and the OPT TTL."""
        message = wire.header_only(1, wire.FLAG_QR | (wire.BADVERS & 0xF), question(),
                                   wire.opt_record(1232, False, ext_rcode=wire.BADVERS >> 4))
        self.assertEqual(decode(message).rcode(), wire.BADVERS)
        self.assertEqual(wire.parse_message(message).rcode, wire.BADVERS)

    def test_header_only(self) -> None:
        """header_only gives the flags, rcode and question with no records."""
        message = wire.header_only(9, wire.FLAG_QR | wire.REFUSED, question())
        msg = decode(message)
        self.assertEqual(msg.rcode(), wire.REFUSED)
        self.assertEqual(struct.unpack_from("!4H", message, 4), (1, 0, 0, 0))

    def test_encode_query(self) -> None:
        """encode_query builds a query dnspython reads, with RD, CD and EDNS as asked."""
        msg = decode(wire.encode_query(5, WWW, wire.AAAA, rd=False, edns_payload=1400, do=True, cd=True))
        self.assertEqual(msg.id, 5)
        self.assertFalse(msg.flags & dns.flags.RD)
        self.assertTrue(msg.flags & dns.flags.CD)
        self.assertEqual((msg.edns, msg.payload, bool(msg.ednsflags & dns.flags.DO)), (0, 1400, True))
        self.assertEqual(msg.question[0].rdtype, dns.rdatatype.AAAA)


class RenderPlainTests(unittest.SynchronousTestCase):
    """``render_plain`` (the first-sight lane's renderer) makes ``render``'s bytes, or declines."""

    def test_same_bytes_as_render_or_none(self) -> None:
        owner = wire.from_text("Www.Example.")
        question = owner + struct.pack("!HH", wire.A, wire.IN)
        rrsets = [wire.make_rrset(owner, wire.A, 300, [ipv4("192.0.2.%d" % i) for i in range(1, n + 1)])
                  for n in (1, 3, 40)]
        rrsets.append(wire.make_rrset(owner, wire.TXT, 60, [b"\xff" + b"t" * 255] * 3))
        opts = (None, wire.opt_record(1232, False), wire.opt_record(4096, True))
        checked = declined = 0
        for rrset in rrsets:
            for opt in opts:
                for limit in (512, 600, 700, 800, 1232, 65535):
                    flags = wire.FLAG_QR | wire.FLAG_AA | wire.FLAG_RD
                    plain = wire.render_plain(b"\xbe\xef", flags, question, rrset, opt, limit)
                    full = wire.render(0xBEEF, flags, question, ((rrset,),), opt=opt, limit=limit)[0]
                    if plain is None:
                        declined += 1
                        self.assertTrue(full[2] & 0x02, "declined although it fits")   # render truncated
                    else:
                        checked += 1
                        self.assertEqual(plain, full)
        self.assertGreater(checked, 30)
        self.assertGreater(declined, 5)

    def test_declines_another_spelling(self) -> None:
        """An owner spelled unlike the question is written out by ``render``: declined."""
        rrset = wire.make_rrset(wire.from_text("www.example."), wire.A, 300, [ipv4("192.0.2.1")])
        question = wire.from_text("WWW.example.") + struct.pack("!HH", wire.A, wire.IN)
        self.assertIsNone(wire.render_plain(b"\x00\x01", wire.FLAG_QR, question, rrset, None, 512))


class TruncationTests(unittest.SynchronousTestCase):
    """render's limit: truncation at record/RRset boundaries (RFC 2181 §9)."""

    def assert_valid(self, message: bytes, limit: int) -> dns.message.Message:
        """The message fits, dnspython reads it (counts match), and TTL offsets cover the records."""
        self.assertLessEqual(len(message), limit)
        msg = decode(message)
        counts = struct.unpack_from("!4H", message, 4)
        self.assertEqual(counts[1], record_count(msg, "answer"))
        self.assertEqual(counts[2], record_count(msg, "authority"))
        self.assertEqual(counts[3], record_count(msg, "additional") + (1 if msg.edns >= 0 else 0))
        return msg

    def test_answer_too_big_sets_tc(self) -> None:
        """An answer RRset too large for the limit sets TC and leaves a valid, smaller message."""
        big = a_rrset(WWW, 100)
        message, offsets = wire.render(3, wire.FLAG_QR, question(), ([big], [], []), limit=512)
        msg = self.assert_valid(message, 512)
        self.assertTrue(msg.flags & dns.flags.TC)
        self.assertLess(record_count(msg, "answer"), 100)
        self.assertEqual(len(offsets), record_count(msg, "answer"))
        self.assertTrue(all(o < len(message) for o in offsets))

    def test_answer_too_big_with_edns(self) -> None:
        """Truncated with EDNS, the reply still carries the OPT record and TC."""
        big = a_rrset(WWW, 100)
        message, _ = wire.render(3, wire.FLAG_QR, question(), ([big], [], []),
                                 opt=wire.opt_record(512, False), limit=512)
        msg = self.assert_valid(message, 512)
        self.assertTrue(msg.flags & dns.flags.TC)
        self.assertEqual(msg.edns, 0)
        self.assertEqual(msg.payload, 512)

    def test_earlier_rrsets_kept_without_edns(self) -> None:
        """An answer RRset that fits before one that does not is kept whole (no EDNS)."""
        small = wire.make_rrset(WWW, wire.CNAME, 300, [name("target.example.com")])
        big = a_rrset(name("target.example.com"), 100)
        message, _ = wire.render(3, wire.FLAG_QR, question(), ([small, big], [], []), limit=512)
        msg = self.assert_valid(message, 512)
        self.assertTrue(msg.flags & dns.flags.TC)
        self.assertIn("www.example.com. 300 CNAME target.example.com.", texts(msg.answer))

    def test_records_that_fit_kept_without_edns(self) -> None:
        """Without EDNS, a truncated answer keeps the whole records that fit (BIND 9)."""
        big = a_rrset(WWW, 100)
        message, _ = wire.render(3, wire.FLAG_QR, question(), ([big], [], []), limit=512)
        msg = decode(message)
        self.assertGreater(record_count(msg, "answer"), 0)
        # each A record here costs 16 bytes, so at most one more would not have fitted
        self.assertGreater(len(message) + 16, 512)

    def test_sections_emptied_with_edns(self) -> None:
        """With EDNS, a truncated reply carries no records besides the OPT (BIND 9)."""
        small = wire.make_rrset(WWW, wire.CNAME, 300, [name("target.example.com")])
        big = a_rrset(name("target.example.com"), 100)
        message, offsets = wire.render(3, wire.FLAG_QR, question(), ([small, big], [], []),
                                       opt=wire.opt_record(1232, False), limit=512)
        self.assertEqual(struct.unpack_from("!4H", message, 4), (1, 0, 0, 1))
        self.assertEqual(offsets, ())
        self.assertTrue(decode(message).flags & dns.flags.TC)

    def test_authority_too_big_sets_tc(self) -> None:
        """An authority RRset that does not fit sets TC too."""
        answer = wire.make_rrset(WWW, wire.A, 60, [ipv4("192.0.2.1")])
        ns = wire.make_rrset(name("example.com"), wire.NS, 60,
                             [name(f"ns{i:03d}-{'x' * 40}.example.net") for i in range(40)])
        message, _ = wire.render(3, wire.FLAG_QR, question(), ([answer], [ns], []), limit=512)
        msg = self.assert_valid(message, 512)
        self.assertTrue(msg.flags & dns.flags.TC)

    def test_additional_dropped_without_tc(self) -> None:
        """Additional records that do not fit are dropped; TC stays clear and the answer is whole."""
        answer = wire.make_rrset(WWW, wire.MX, 60, [b"\x00\x0a" + name(f"mx{i}.example.com") for i in range(5)])
        glue = [a_rrset(name(f"mx{i}.example.com"), 20, base=f"10.{i}") for i in range(5)]
        message, offsets = wire.render(3, wire.FLAG_QR, question(qtype=wire.MX), ([answer], [], glue), limit=512)
        msg = self.assert_valid(message, 512)
        self.assertFalse(msg.flags & dns.flags.TC)
        self.assertEqual(record_count(msg, "answer"), 5)
        self.assertLess(record_count(msg, "additional"), 100)
        self.assertEqual(len(offsets), 5 + record_count(msg, "additional"))

    def test_opt_fits_at_the_limit(self) -> None:
        """The OPT record's room is reserved: an answer filling the limit leaves room for it."""
        q = question()
        for count in range(1, 40):
            rrset = a_rrset(WWW, count)
            message, _ = wire.render(3, wire.FLAG_QR, q, ([rrset], [], []),
                                     opt=wire.opt_record(1232, False), limit=300)
            msg = self.assert_valid(message, 300)
            self.assertEqual(msg.edns, 0, f"no OPT with {count} records")

    def test_exact_fit_not_truncated(self) -> None:
        """A message exactly at the limit is not truncated."""
        rrset = a_rrset(WWW, 10)
        full, _ = wire.render(3, wire.FLAG_QR, question(), ([rrset], [], []))
        message, _ = wire.render(3, wire.FLAG_QR, question(), ([rrset], [], []), limit=len(full))
        self.assertEqual(message, full)
        shorter, _ = wire.render(3, wire.FLAG_QR, question(), ([rrset], [], []), limit=len(full) - 1)
        self.assertTrue(decode(shorter).flags & dns.flags.TC)


class ParseMessageTests(unittest.SynchronousTestCase):
    """parse_message: upstream responses with every name decompressed."""

    def build(self) -> bytes:
        """A dnspython response whose names dnspython compresses."""
        query = dns.message.make_query("www.example.com.", "A", use_edns=0)
        response = dns.message.make_response(query)
        for section, text in (
                (response.answer, "www.example.com. 300 IN CNAME host.example.com."),
                (response.answer, "host.example.com. 300 IN MX 10 mail.example.com."),
                (response.authority, "example.com. 3600 IN SOA ns1.example.com. admin.example.com. 7 1 2 3 99"),
                (response.authority, "example.com. 3600 IN NS ns1.example.com."),
                (response.additional, "ns1.example.com. 3600 IN A 192.0.2.53")):
            owner, ttl, rdclass, rdtype, rdata = text.split(" ", 4)
            section.append(dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata))
        return response.to_wire()

    def test_names_decompressed(self) -> None:
        """CNAME, MX, SOA and NS RDATA come back uncompressed, equal to dnspython's uncompressed form."""
        data = self.build()
        self.assertIn(b"\xc0", data[12:])    # dnspython did compress something
        message = wire.parse_message(data)
        expected = dns.message.from_wire(data)
        ours = {(r.rtype, r.rdata) for r in message.answer + message.authority + message.additional}
        theirs = {(rrset.rdtype, rd.to_wire()) for rrset in expected.answer + expected.authority + expected.additional
                  for rd in rrset}
        self.assertEqual(ours, theirs)
        mx = next(r for r in message.answer if r.rtype == wire.MX)
        self.assertEqual(mx.rdata, b"\x00\x0a" + name("mail.example.com"))
        self.assertEqual(mx.target, name("mail.example.com"))
        soa = message.authority[0]
        self.assertEqual(soa.rdata, name("ns1.example.com") + name("admin.example.com") + struct.pack("!5I", 7, 1, 2, 3, 99))
        self.assertEqual(message.question, (name("www.example.com"), wire.A, wire.IN))
        assert message.edns is not None
        self.assertEqual(message.edns.payload, expected.payload)

    def test_srv_target_decompressed(self) -> None:
        """An SRV target sent compressed (not allowed, but seen) is decompressed."""
        q = question(name("_sip._udp.example.com"), wire.SRV)
        # target "sip" + pointer to "example.com" inside the question (offset 12 + 5 + 5)
        target = b"\x03sip" + struct.pack("!H", 0xC000 | (12 + 5 + 5))
        rdata = struct.pack("!HHH", 1, 2, 5060) + target
        record = struct.pack("!H", 0xC00C) + struct.pack("!HHIH", wire.SRV, wire.IN, 60, len(rdata)) + rdata
        data = header(flags=wire.FLAG_QR, an=1) + q + record
        message = wire.parse_message(data)
        srv = message.answer[0]
        self.assertEqual(srv.name, name("_sip._udp.example.com"))
        self.assertEqual(srv.rdata, struct.pack("!HHH", 1, 2, 5060) + name("sip.example.com"))
        self.assertEqual(srv.target, name("sip.example.com"))

    def test_unknown_type_copied(self) -> None:
        """RDATA of a type without names is copied as it is, with no target."""
        q = question()
        rdata = b"\x05hello"
        record = struct.pack("!H", 0xC00C) + struct.pack("!HHIH", wire.TXT, wire.IN, 60, len(rdata)) + rdata
        message = wire.parse_message(header(flags=wire.FLAG_QR, an=1) + q + record)
        self.assertEqual((message.answer[0].rdata, message.answer[0].target), (rdata, None))

    def test_ttl_high_bit_cleared(self) -> None:
        """A TTL with the top bit set is read without it (RFC 2181 §8)."""
        record = struct.pack("!H", 0xC00C) + struct.pack("!HHIH", wire.A, wire.IN, 0x80000010, 4) + b"\x01\x02\x03\x04"
        message = wire.parse_message(header(flags=wire.FLAG_QR, an=1) + question() + record)
        self.assertEqual(message.answer[0].ttl, 0x10)

    def test_rdata_length_mismatch(self) -> None:
        """An MX whose RDLENGTH is longer than its contents is a FormError."""
        rdata = b"\x00\x0a" + name("mx.example.com") + b"\x00"
        record = struct.pack("!H", 0xC00C) + struct.pack("!HHIH", wire.MX, wire.IN, 60, len(rdata)) + rdata
        with self.assertRaises(wire.FormError):
            wire.parse_message(header(flags=wire.FLAG_QR, an=1) + question() + record)

    def test_short_message(self) -> None:
        """Fewer than 12 bytes, or a record cut short, is a FormError."""
        self.assertRaises(wire.FormError, wire.parse_message, b"\x00" * 11)
        self.assertRaises(wire.FormError, wire.parse_message, header(flags=wire.FLAG_QR, an=1) + question() + b"\xc0\x0c\x00")

    def test_render_parse_round_trip(self) -> None:
        """What render writes, parse_message reads back to the same records."""
        message, _ = wire.render(1, wire.FLAG_QR, question(),
                                 ([wire.make_rrset(WWW, wire.NS, 60, [name("ns.example.com")])],
                                  [wire.make_rrset(name("example.com"), wire.SOA, 60, [soa_rdata("example.com")])],
                                  []))
        parsed = wire.parse_message(message)
        self.assertEqual(parsed.answer[0].rdata, name("ns.example.com"))
        self.assertEqual(parsed.authority[0].rdata, soa_rdata("example.com"))
        self.assertEqual(parsed.answer[0].rclass, wire.IN)
