"""DNS wire format: parse queries and responses, render answers with name compression.

Twisted's ``dns.Message`` is correct for ordinary messages, but smartdns needs things it does not
give: truncation at RRset boundaries (RFC 2181 §9), EDNS (RFC 6891), byte-exact copies of the
client's question (0x20 case), TTL offsets for countdown without re-encoding, and a query parse
cheap enough for the hot path.  This module is the one codec used for every packet; names travel
as uncompressed wire bytes (``b"\\x03www\\x07example\\x00"``), and the *key* form of a name is the
same bytes ASCII-lowercased, so dictionary lookups are case-insensitive (RFC 4343).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

# RR types and classes used by name in the code (RFC 1035 §3.2.2 and later registrations).
A = 1
NS = 2
CNAME = 5
SOA = 6
PTR = 12
MX = 15
TXT = 16
AAAA = 28
SRV = 33
DNAME = 39
OPT = 41
DS = 43
TSIG = 250
IXFR = 251
AXFR = 252
MAILB = 253
MAILA = 254
ANY = 255

IN = 1
CH = 3
HS = 4
CLASS_ANY = 255

# Response codes (RFC 1035 §4.1.1, RFC 6891 §9).
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
NOTAUTH = 9
BADVERS = 16
BADKEY = 17                # TSIG error: the key is not known here (RFC 8945 §5.3.2)
BADCOOKIE = 23             # a bad or missing server cookie (RFC 7873 §8)

OPCODE_QUERY = 0
OPCODE_NOTIFY = 4
OPCODE_UPDATE = 5
TSIG_FUDGE_SECONDS = 300   # the fudge BIND puts in the TSIG of an error response

# Header flag bits (second and third byte of the header as one 16-bit word).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010

EDNS_DO = 0x8000
HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")
MAX_POINTER_JUMPS = 64
MAX_NAME_LENGTH = 255
CLASSIC_UDP_LIMIT = 512

ROOT = b"\x00"

# Types whose RDATA names may be compressed on output (RFC 3597 §4) and, on input, may arrive
# compressed (RFC 3597 §4 plus §7's list of types receivers must decompress).
COMPRESSIBLE_OUT = frozenset({NS, 3, 4, CNAME, SOA, 7, 8, 9, PTR, 14, MX})
# type → layout of its RDATA: "n" a domain name, "2"/"4" fixed bytes, "*" the rest as raw.
RDATA_LAYOUTS: dict[int, str] = {
    NS: "n", 3: "n", 4: "n", CNAME: "n", 7: "n", 8: "n", 9: "n", PTR: "n", DNAME: "n",
    SOA: "nn44444", 14: "nn", MX: "2n", 17: "nn", 18: "2n", 21: "2n", SRV: "222n", 26: "2nn",
}


class FormError(Exception):
    """The packet is not a well-formed DNS message."""


class CompressedName(bytes):
    """An RDATA part that is a domain name the renderer may compress (RFC 1035 §4.1.4)."""

    __slots__ = ()


def key(name: bytes) -> bytes:
    """The case-insensitive lookup key of a wire name (RFC 4343: ASCII only)."""
    return name.lower()


def parent(name: bytes) -> bytes:
    """The wire name with its first label removed (the root is its own parent)."""
    if name == ROOT:
        return ROOT
    return name[1 + name[0]:]


def label_count(name: bytes) -> int:
    """The number of labels in a wire name, not counting the root."""
    count, pos = 0, 0
    while name[pos]:
        count += 1
        pos += 1 + name[pos]
    return count


def is_subdomain(name: bytes, ancestor: bytes) -> bool:
    """Whether ``name`` is ``ancestor`` or below it (both key form), checked label by label."""
    if len(name) < len(ancestor):
        return False
    while True:
        if name == ancestor:
            return True
        if name == ROOT:
            return False
        name = name[1 + name[0]:]
        if len(name) < len(ancestor):
            return False


def from_text(text: str) -> bytes:
    """Wire form of a presentation name (absolute; the trailing dot is optional)."""
    text = text.strip()
    if text in ("", "."):
        return ROOT
    out = bytearray()
    for label in text.rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not raw or len(raw) > 63:
            raise ValueError(f"bad label in name {text!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME_LENGTH:
        raise ValueError(f"name too long: {text!r}")
    return bytes(out)


def to_text(name: bytes) -> str:
    """Presentation form of a wire name, with a trailing dot."""
    if name == ROOT:
        return "."
    labels = []
    pos = 0
    while name[pos]:
        length = name[pos]
        raw = name[pos + 1:pos + 1 + length]
        labels.append("".join(chr(c) if 0x21 <= c <= 0x7E and c not in (0x2E, 0x5C) else f"\\{c:03d}"
                              for c in raw))
        pos += 1 + length
    return ".".join(labels) + "."


def read_name(buf: bytes, offset: int) -> tuple[bytes, int]:
    """Read a possibly compressed name at ``offset``; return (uncompressed wire name, end offset).

    Pointers must point backwards (so no loop is possible) and the name must fit 255 bytes.
    """
    out = bytearray()
    end = -1
    pos = offset
    jumps = 0
    limit = len(buf)
    while True:
        if pos >= limit:
            raise FormError("name runs past the end of the message")
        length = buf[pos]
        if length == 0:
            out.append(0)
            if end < 0:
                end = pos + 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= limit:
                raise FormError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | buf[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= pos or jumps >= MAX_POINTER_JUMPS:
                raise FormError("bad compression pointer")
            jumps += 1
            pos = target
            continue
        if length & 0xC0:
            raise FormError("unknown label type")
        if pos + 1 + length > limit:
            raise FormError("label runs past the end of the message")
        out += buf[pos:pos + 1 + length]
        if len(out) > MAX_NAME_LENGTH - 1:
            raise FormError("name longer than 255 bytes")
        pos += 1 + length
    return bytes(out), end


@dataclass(frozen=True, slots=True)
class Edns:
    """The EDNS(0) parameters of a message's OPT record (RFC 6891 §6.1.3)."""

    payload: int
    version: int
    do: bool
    ext_rcode: int = 0
    options: bytes = b""


@dataclass(frozen=True, slots=True)
class Tsig:
    """The parts of a query's TSIG record (RFC 8945 §4.2) an error response must repeat."""

    key_name: bytes       # the record's owner, wire
    algorithm: bytes      # the algorithm name, wire


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed client query: just what answering needs, plus the raw question bytes.

    A message without a question parses (qname, question empty; qtype, qclass 0): whether
    that is FORMERR or NOTIMP depends on the opcode, which the server judges."""

    id: int
    flags: int
    qname: bytes          # wire, as the client wrote it
    qtype: int
    qclass: int
    question: bytes       # the raw question section (name, type, class) for echoing
    edns: Edns | None
    tsig: Tsig | None = None

    @property
    def opcode(self) -> int:
        """The header opcode."""
        return (self.flags >> 11) & 0xF

    @property
    def qkey(self) -> bytes:
        """The query name in key form."""
        return self.qname.lower()


class QueryError(FormError):
    """A query whose header was readable but whose body is malformed: answer FORMERR."""

    def __init__(self, message: str, id: int, flags: int, question: bytes = b"") -> None:
        super().__init__(message)
        self.id = id
        self.flags = flags
        self.question = question


def _record_header(data: bytes, pos: int) -> tuple[bytes, int, int, int, int, int]:
    """(owner, type, class, TTL, RDLENGTH, offset of RDATA) of the record at ``pos``, checked to fit."""
    name, pos = read_name(data, pos)
    if pos + RR_FIXED.size > len(data):
        raise FormError("record cut short")
    rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
    pos += RR_FIXED.size
    if pos + rdlen > len(data):
        raise FormError("record data cut short")
    return name, rtype, rclass, ttl, rdlen, pos


def parse_query(data: bytes) -> Query:
    """Parse a client query, as strictly as BIND 9 does.

    Raises ``FormError`` when not even the header is readable (drop the packet) and
    ``QueryError`` when the header is readable but the rest is not (answer FORMERR): more than
    one question (UPDATE keeps its first zone for the echo, as BIND), a misplaced, duplicate
    or named OPT, a TSIG that is not the last record, not class ANY or not well formed
    (RFC 8945 §5.1).  Bytes after the last record are ignored, as BIND ignores them.
    QR and opcode are not judged here; the server decides what to do with them.
    """
    if len(data) < HEADER.size:
        raise FormError("shorter than a DNS header")
    id_, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise FormError("a response, not a query")
    pos = HEADER.size
    qname, qtype, qclass, question = b"", 0, 0, b""
    if qdcount:
        try:
            qname, pos = read_name(data, HEADER.size)
        except FormError as e:
            raise QueryError(str(e), id_, flags) from None
        if pos - HEADER.size != len(qname):
            # Nothing precedes the question that a pointer could sensibly point at.
            raise QueryError("compression pointer in the question", id_, flags)
        if pos + 4 > len(data):
            raise QueryError("question cut short", id_, flags)
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        question = data[HEADER.size:pos + 4]
        pos += 4
        if qdcount > 1:
            kept = question if (flags >> 11) & 0xF == OPCODE_UPDATE else b""
            raise QueryError(f"QDCOUNT is {qdcount}, not 1", id_, flags, kept)
    edns: Edns | None = None
    tsig: Tsig | None = None
    records = ancount + nscount + arcount
    try:
        for index in range(records):
            name, rtype, rclass, ttl, rdlen, pos = _record_header(data, pos)
            if rtype == OPT:
                if index < ancount + nscount or edns is not None or name != ROOT:
                    raise FormError("misplaced, duplicate or named OPT record")
                edns = Edns(payload=rclass, version=(ttl >> 16) & 0xFF, do=bool(ttl & EDNS_DO),
                            ext_rcode=ttl >> 24, options=data[pos:pos + rdlen])
                _check_options(edns.options)
            elif rtype == TSIG:
                if index != records - 1 or index < ancount + nscount or rclass != CLASS_ANY:
                    raise FormError("TSIG not the last record, or not class ANY")
                tsig = Tsig(name, _tsig_algorithm(data, pos, rdlen))
            pos += rdlen
    except FormError as e:
        raise QueryError(str(e), id_, flags, question) from None
    return Query(id_, flags, qname, qtype, qclass, question, edns, tsig)


def _tsig_algorithm(data: bytes, pos: int, rdlen: int) -> bytes:
    """The algorithm name of the TSIG RDATA at ``pos``, after checking that its fields tile
    the RDATA exactly (RFC 8945 §4.2): name, time (6), fudge (2), MAC, original ID, error,
    other data."""
    end = pos + rdlen
    algorithm, pos = read_name(data[:end], pos)
    pos += 8                                            # time signed, fudge
    if pos + 2 > end:
        raise FormError("TSIG cut short")
    (mac_size,) = struct.unpack_from("!H", data, pos)
    pos += 2 + mac_size + 4                             # MAC, original ID, error
    if pos + 2 > end:
        raise FormError("TSIG cut short")
    (other_size,) = struct.unpack_from("!H", data, pos)
    if pos + 2 + other_size != end:
        raise FormError("TSIG length does not match its contents")
    return algorithm


def tsig_error_record(tsig: Tsig, original_id: int, error: int, time_signed: int) -> bytes:
    """The TSIG record of an error response that cannot be signed (RFC 8945 §5.3.2), as BIND
    writes it: the key and algorithm names in lower case, class ANY, TTL 0, no MAC, the
    query's ID, no other data."""
    rdata = (key(tsig.algorithm) + struct.pack("!HIH", time_signed >> 32 & 0xFFFF, time_signed & 0xFFFFFFFF,
                                               TSIG_FUDGE_SECONDS)
             + struct.pack("!HHHH", 0, original_id, error, 0))
    return key(tsig.key_name) + RR_FIXED.pack(TSIG, CLASS_ANY, 0, len(rdata)) + rdata


def sniffed_query(data: bytes, qend: int, payload: int | None, do: bool) -> Query:
    """The ``Query`` ``parse_query`` gives for a packet ``sniff`` accepted (``qend`` its question
    end; ``payload`` None without OPT): the fields read straight from the checked bytes."""
    edns = None if payload is None else Edns(payload=payload, version=0, do=do, ext_rcode=0,
                                              options=data[qend + 11:])
    return Query((data[0] << 8) | data[1], (data[2] << 8) | data[3], data[12:qend - 4],
                 (data[qend - 4] << 8) | data[qend - 3], (data[qend - 2] << 8) | data[qend - 1],
                 data[12:qend], edns)


def _check_options(options: bytes) -> None:
    """EDNS options must tile the OPT RDATA exactly (RFC 6891 §6.1.2)."""
    pos = 0
    while pos < len(options):
        if pos + 4 > len(options):
            raise FormError("EDNS option header cut short")
        (length,) = struct.unpack_from("!H", options, pos + 2)
        pos += 4 + length
        if pos > len(options):
            raise FormError("EDNS option data cut short")


def option_items(options: bytes) -> list[tuple[int, bytes]]:
    """(code, data) of each EDNS option, in order (``options`` already checked to tile)."""
    items = []
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from("!HH", options, pos)
        items.append((code, options[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return items


def sniff(data: bytes) -> tuple[int, bool, int, bool] | None:
    """Cheap check for the common query shape, without building objects.

    Returns (end of question, OPT present, EDNS payload (0 without OPT), DO bit) for a QUERY
    with one plain question, no answer/authority records, and at most a well-formed version-0
    OPT without a COOKIE or Client Subnet option; None for anything else (the full parser
    then decides).
    """
    if len(data) < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00" or data[10]:
        return None
    arcount = data[11]
    pos = 12
    limit = len(data)
    while True:
        if pos >= limit:
            return None
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += 1 + length
    qend = pos + 5
    if qend > limit or qend - 12 > MAX_NAME_LENGTH + 4:
        return None
    if arcount == 0:
        return (qend, False, 0, False) if qend == limit else None
    if arcount != 1 or limit < qend + 11 or data[qend] != 0 or data[qend + 1:qend + 3] != b"\x00\x29":
        return None
    payload, ext, version, flags, rdlen = struct.unpack_from("!HBBHH", data, qend + 3)
    if version or ext or qend + 11 + rdlen != limit:
        return None
    if rdlen and not _plain_options(data, qend + 11):
        return None
    return qend, True, payload, bool(flags & EDNS_DO)


# EDNS options whose reply depends on more than the fast lanes' keys hold (a server cookie made
# for this client and this second; a Client Subnet echoed and maybe choosing the line).
ANSWERED_OPTIONS = frozenset({8, 10})     # ECS (RFC 7871), COOKIE (RFC 7873)


def _plain_options(data: bytes, pos: int) -> bool:
    """Whether the options from ``pos`` to the end tile exactly and none is answered in kind."""
    limit = len(data)
    while pos < limit:
        if pos + 4 > limit:
            return False
        code, length = struct.unpack_from("!HH", data, pos)
        if code in ANSWERED_OPTIONS:
            return False
        pos += 4 + length
    return pos == limit


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record with uncompressed RDATA (``parts`` keeps names apart for compression)."""

    name: bytes            # wire, original case
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes           # uncompressed wire RDATA
    target: bytes | None   # first RDATA name for name-bearing types (key form), else None


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed response from an upstream."""

    id: int
    flags: int
    question: tuple[bytes, int, int] | None
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]
    edns: Edns | None

    @property
    def rcode(self) -> int:
        """The full response code, including EDNS extended bits."""
        extended = self.edns.ext_rcode << 4 if self.edns else 0
        return extended | (self.flags & 0xF)


def _read_rdata(data: bytes, pos: int, rdlen: int, rtype: int) -> tuple[bytes, bytes | None]:
    """Decompress the RDATA of types known to carry names; other types are copied as they are."""
    layout = RDATA_LAYOUTS.get(rtype)
    end = pos + rdlen
    if layout is None:
        return data[pos:end], None
    out = bytearray()
    target: bytes | None = None
    for part in layout:
        if part == "n":
            name, pos = read_name(data, pos)
            if target is None:
                target = name.lower()
            out += name
        else:
            size = int(part)
            out += data[pos:pos + size]
            pos += size
        if pos > end:
            raise FormError("record data shorter than its type needs")
    if pos != end:
        raise FormError("record data length does not match its contents")
    return bytes(out), target


def parse_message(data: bytes) -> Message:
    """Parse a whole message (an upstream response), decompressing every name."""
    if len(data) < HEADER.size:
        raise FormError("shorter than a DNS header")
    id_, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    pos = HEADER.size
    question = None
    for _ in range(qdcount):
        qname, pos = read_name(data, pos)
        if pos + 4 > len(data):
            raise FormError("question cut short")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        if question is None:
            question = (qname, qtype, qclass)
    sections: list[list[Record]] = [[], [], []]
    edns: Edns | None = None
    for section, count in zip(sections, (ancount, nscount, arcount)):
        for _ in range(count):
            name, rtype, rclass, ttl, rdlen, pos = _record_header(data, pos)
            if rtype == OPT:
                edns = Edns(payload=rclass, version=(ttl >> 16) & 0xFF, do=bool(ttl & EDNS_DO),
                            ext_rcode=ttl >> 24, options=data[pos:pos + rdlen])
                pos += rdlen
                continue
            rdata, target = _read_rdata(data, pos, rdlen, rtype)
            pos += rdlen
            section.append(Record(name, rtype, rclass, ttl & 0x7FFFFFFF, rdata, target))
    return Message(id_, flags, question, tuple(sections[0]), tuple(sections[1]),
                   tuple(sections[2]), edns)


class Reply:
    """An upstream response checked only as far as matching it to our query needs; the rest is
    parsed on demand, so the common answer can be cached without decoding every record."""

    __slots__ = ("data", "flags", "qend", "_message", "upstream")

    def __init__(self, data: bytes, flags: int, qend: int) -> None:
        self.data = data
        self.flags = flags
        self.qend = qend
        self._message: Message | None = None
        self.upstream: str | None = None       # set by the forwarder: which upstream sent it

    @property
    def rcode(self) -> int:
        """The header rcode (extended bits need the OPT record: see ``message``)."""
        return self.flags & 0xF

    @property
    def message(self) -> Message:
        """The fully parsed message (raises FormError if the body is malformed)."""
        if self._message is None:
            self._message = parse_message(self.data)
        return self._message


def check_reply(data: bytes, question: tuple[bytes, int, int]) -> Reply | None:
    """A response to exactly ``question`` (name compared case-insensitively), or None."""
    if len(data) < HEADER.size + 5:
        return None
    flags, qdcount = struct.unpack_from("!HH", data, 2)
    if not flags & FLAG_QR or qdcount != 1:
        return None
    try:
        name, pos = read_name(data, HEADER.size)
    except FormError:
        return None
    if pos + 4 > len(data) or name.lower() != question[0].lower():
        return None
    if struct.unpack_from("!HH", data, pos) != (question[1], question[2]):
        return None
    return Reply(data, flags, pos + 4)


def answer_prefix(reply: Reply, qkey: bytes) -> tuple[bytearray, list[int]] | None:
    """The reply cut after its answer section, if every answer record lies on the CNAME chain
    from the question: the bytes up to there are self-contained (pointers only point back), so
    they can be cached as they are.  Returns (message with ID 0 and no authority/additional
    records, TTL offsets), or None when anything needs the full path."""
    data = reply.data
    ancount = struct.unpack_from("!H", data, 6)[0]
    if not ancount:
        return None
    chain = {qkey}
    pos = reply.qend
    offsets = []
    try:
        for _ in range(ancount):
            if data[pos:pos + 2] == b"\xc0\x0c":
                owner = qkey
                pos += 2
            else:
                spelled, pos = read_name(data, pos)
                owner = spelled.lower()
            if owner not in chain or pos + 10 > len(data):
                return None
            rtype, rclass, _ttl, rdlen = RR_FIXED.unpack_from(data, pos)
            offsets.append(pos + 4)
            pos += 10
            if pos + rdlen > len(data) or rtype in (OPT, DNAME):
                return None
            if rtype in RDATA_LAYOUTS:
                _, target = _read_rdata(data, pos, rdlen, rtype)   # checks names point backwards
                if rtype == CNAME and target:
                    chain.add(target)
            pos += rdlen
    except FormError:
        return None
    out = bytearray(data[:pos])
    HEADER.pack_into(out, 0, 0, FLAG_QR | (reply.flags & 0xF), 1, ancount, 0, 0)
    return out, offsets


def rdata_parts(rtype: int, rdata: bytes) -> tuple[bytes, ...]:
    """Split uncompressed RDATA into raw bytes and ``CompressedName`` parts for rendering."""
    if rtype not in COMPRESSIBLE_OUT:
        return (rdata,)
    layout = RDATA_LAYOUTS[rtype]
    parts: list[bytes] = []
    pos = 0
    for part in layout:
        if part == "n":
            name, pos = read_name(rdata, pos)
            parts.append(CompressedName(name))
        else:
            size = int(part)
            parts.append(rdata[pos:pos + size])
            pos += size
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class RRset:
    """Records sharing owner, type and class: the unit of answers and of truncation."""

    name: bytes                      # wire; key form for zone data
    rtype: int
    ttl: int
    rdatas: tuple[tuple[bytes, ...], ...]   # each rdata as parts (see ``rdata_parts``)
    rclass: int = IN

    def with_name(self, name: bytes) -> "RRset":
        """The same data under another owner (wildcard synthesis, RFC 4592 §3.3.1)."""
        return RRset(name, self.rtype, self.ttl, self.rdatas, self.rclass)

    def with_ttl(self, ttl: int) -> "RRset":
        """The same data with another TTL (negative-answer SOA, RFC 2308 §3)."""
        return RRset(self.name, self.rtype, ttl, self.rdatas, self.rclass)


def make_rrset(name: bytes, rtype: int, ttl: int, rdatas: Iterable[bytes], rclass: int = IN) -> RRset:
    """Build an RRset from uncompressed RDATA blobs."""
    return RRset(name, rtype, ttl, tuple(rdata_parts(rtype, r) for r in rdatas), rclass)


def opt_record(payload: int, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """An OPT pseudo-record for a response (version 0)."""
    ttl = (ext_rcode << 24) | (EDNS_DO if do else 0)
    return ROOT + RR_FIXED.pack(OPT, payload, ttl, len(options)) + options


EDE_OPTION = 15


def ede_option(info_code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914)."""
    body = struct.pack("!H", info_code) + text.encode("utf-8")
    return struct.pack("!HH", EDE_OPTION, len(body)) + body


OPT_SIZE = 11


class Renderer:
    """Builds one message: header, the client's question, then records with name compression.

    Compression matches names case-sensitively, as BIND does: a name is written in its own
    spelling (zone-file case for local data) unless an earlier name has exactly that suffix.
    """

    __slots__ = ("buf", "comp", "counts", "ttl_offsets")

    def __init__(self, question: bytes) -> None:
        self.buf = bytearray(12)
        self.comp: dict[bytes, int] = {}
        self.counts = [1 if question else 0, 0, 0, 0]
        self.ttl_offsets: list[int] = []
        if question:
            self.buf += question
            self._remember(question[:-4], 12)

    def _remember(self, name: bytes, offset: int) -> None:
        """Register each suffix of a name written at ``offset``, up to one already known."""
        comp = self.comp
        while name != ROOT and offset < 0x4000:
            if name in comp:
                return
            comp[name] = offset
            step = 1 + name[0]
            offset += step
            name = name[step:]

    def name(self, name: bytes) -> None:
        """Write a name, pointing at an earlier copy of its longest known suffix."""
        buf = self.buf
        comp = self.comp
        start = len(buf)
        pos = 0
        while name[pos]:
            pointer = comp.get(name[pos:])
            if pointer is not None:
                buf += name[:pos]
                buf += struct.pack("!H", 0xC000 | pointer)
                self._remember(name, start)
                return
            pos += 1 + name[pos]
        buf += name
        self._remember(name, start)

    def record(self, section: int, rrset: RRset, parts: tuple[bytes, ...]) -> None:
        """Append one record of ``rrset`` to section 1 (answer), 2 (authority) or 3 (additional)."""
        buf = self.buf
        self.name(rrset.name)
        self.ttl_offsets.append(len(buf) + 4)
        buf += RR_FIXED.pack(rrset.rtype, rrset.rclass, rrset.ttl, 0)
        start = len(buf)
        for part in parts:
            if type(part) is CompressedName:
                self.name(part)
            else:
                buf += part
        struct.pack_into("!H", buf, start - 2, len(buf) - start)
        self.counts[section] += 1

    def rrset(self, section: int, rrset: RRset) -> None:
        """Append every record of an RRset."""
        for parts in rrset.rdatas:
            self.record(section, rrset, parts)

    def mark(self) -> tuple[int, list[int], int]:
        """A point to roll back to if what follows does not fit."""
        return len(self.buf), list(self.counts), len(self.ttl_offsets)

    def rollback(self, mark: tuple[int, list[int], int]) -> None:
        """Forget everything written since ``mark``."""
        length, counts, ttls = mark
        del self.buf[length:]
        self.counts = counts
        del self.ttl_offsets[ttls:]
        self.comp = {k: v for k, v in self.comp.items() if v < length}

    def finish(self, id_: int, flags: int) -> bytes:
        """Write the header and return the message."""
        HEADER.pack_into(self.buf, 0, id_, flags, *self.counts)
        return bytes(self.buf)


def render(
    id_: int,
    flags: int,
    question: bytes,
    sections: Sequence[Sequence[RRset]],
    *,
    opt: bytes | None = None,
    limit: int = 65535,
    last: bytes = b"",
) -> tuple[bytes, tuple[int, ...]]:
    """Render a response no longer than ``limit``; returns the message and its TTL offsets.

    Truncation follows BIND 9 (RFC 2181 §9): records are added one at a time; additional records
    that do not fit are dropped without TC.  If an answer or authority record does not fit, TC is
    set and — without EDNS — the records that did fit are kept; with EDNS (``opt``), every
    section is emptied, since the client will ask again over TCP anyway.  Space for the OPT
    record, and for ``last`` (one record that must end the message: a TSIG, RFC 8945 §5.1), is
    reserved up front.
    """
    r = Renderer(question)
    budget = limit - (len(opt) if opt else 0) - len(last)
    truncated = False
    for index, section in enumerate(sections, start=1):
        for rrset in section:
            for parts in rrset.rdatas:
                mark = r.mark()
                r.record(index, rrset, parts)
                if len(r.buf) > budget:
                    r.rollback(mark)
                    truncated = index < 3
                    break
            else:
                continue
            break
        if truncated:
            break
    if truncated:
        flags |= FLAG_TC
        if opt:
            r.rollback((len(question) + 12, [1 if question else 0, 0, 0, 0], 0))
    if opt:
        r.buf += opt
        r.counts[3] += 1
    if last:
        r.buf += last
        r.counts[3] += 1
    return r.finish(id_, flags), tuple(r.ttl_offsets)


def render_plain(qid: bytes, flags: int, question: bytes, rrset: RRset, opt: bytes | None,
                 limit: int) -> bytes | None:
    """``render(id, flags, question, ((rrset,),), opt=opt, limit=limit)[0]`` (``qid``: the ID's
    two bytes as the query carried them) when ``rrset`` is owned by the question's name spelled
    byte for byte as in the question (so each owner is a pointer to offset 12), its RDATA holds
    no compressible names, and it fits; else None (ask ``render``).  A few joins instead of the
    renderer's per-record bookkeeping: the first-sight lane's renderer, checked against
    ``render`` by the fast-lane tests."""
    if rrset.name != question[:-4]:
        return None
    rdatas = rrset.rdatas
    fixed = RR_FIXED.pack
    if len(rdatas) == 1:
        parts = rdatas[0]
        rdata = parts[0] if len(parts) == 1 else b"".join(parts)
        message = b"".join((qid, _HEADER_AFTER_ID.pack(flags, 1, 1, 0, 1 if opt else 0), question, b"\xc0\x0c",
                            fixed(rrset.rtype, rrset.rclass, rrset.ttl, len(rdata)), rdata, opt or b""))
    else:
        rtype, rclass, ttl = rrset.rtype, rrset.rclass, rrset.ttl
        body = b"".join([b"\xc0\x0c" + fixed(rtype, rclass, ttl, len(rdata)) + rdata
                         for rdata in [b"".join(parts) for parts in rdatas]])
        message = b"".join((qid, _HEADER_AFTER_ID.pack(flags, 1, len(rdatas), 0, 1 if opt else 0), question, body,
                            opt or b""))
    return message if len(message) <= limit else None


_HEADER_AFTER_ID = struct.Struct("!HHHHH")      # HEADER without the ID: flags and the four counts


def header_only(id_: int, flags: int, question: bytes = b"", opt: bytes | None = None) -> bytes:
    """A response with no records: errors, refusals and TC stubs."""
    return render(id_, flags, question, (), opt=opt)[0]


def encode_query(id_: int, qname: bytes, qtype: int, qclass: int = IN, *, rd: bool = True,
                 edns_payload: int | None = None, do: bool = False, cd: bool = False, options: bytes = b"") -> bytes:
    """A query message, as sent to upstreams and by tests (packed directly: once per cache miss);
    ``options`` (EDNS options, whole) go in the OPT, so only with ``edns_payload``."""
    flags = (FLAG_RD if rd else 0) | (FLAG_CD if cd else 0)
    if edns_payload:
        return (HEADER.pack(id_, flags, 1, 0, 0, 1) + qname + struct.pack("!HH", qtype, qclass)
                + opt_record(edns_payload, do, options=options))
    return HEADER.pack(id_, flags, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, qclass)
