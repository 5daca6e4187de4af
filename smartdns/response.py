"""The request's shape, the chain's result, and the one response shaper.

Every response smartdns sends (full path, memo, replay, cache hits, policy answers, errors) gets
its header flags, question echo, OPT record (RFC 6891), TSIG error record (RFC 8945), UDP size
limit and truncation (RFC 2181 §9) from ``Shaper.shape``.  It reads two values: the ``RequestShape`` (what the client's packet asked
for: transport, EDNS present, advertised payload, DO, CD, RD, AD, opcode) and the ``Result``
(what the resolver chain found: rcode, AA, RA, records or a cached entry, Extended DNS Error).

The fast lanes (``QueryHandler``'s memo, ``DNSDatagramPort``'s replay table) only ever store
this function's output, under keys that hold the whole ``RequestShape`` (memo) or the request
bytes it was read from (replay); they never decide a flag, a size or an OPT themselves.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

from smartdns import wire
from smartdns.cache import Entry
from smartdns.cookies import COOKIE_OPTION
from smartdns.ecs import ClientSubnet

TCP_LIMIT = 65535
STALE_TTL_SECONDS = 30          # RFC 8767 §4: TTL of records served stale
# Opcodes whose responses echo the question (BIND 9: QUERY, NOTIFY and UPDATE; the zone section
# of an UPDATE is its question).  Responses to any other opcode have an empty question section.
QUESTION_OPCODES = frozenset({wire.OPCODE_QUERY, wire.OPCODE_NOTIFY, wire.OPCODE_UPDATE})


class RequestShape(NamedTuple):
    """Everything in a request, besides its question and the client's address, that can change
    the bytes of the response.  A tuple, so it hashes cheaply as part of a fast-lane key."""

    tcp: bool
    edns: bool            # an OPT record was present (whatever payload it advertised)
    payload: int          # the advertised UDP payload size (0 without EDNS)
    do: bool              # DNSSEC OK (RFC 3225)
    cd: bool              # checking disabled: echoed
    rd: bool              # recursion desired: echoed; also decides whether CNAME chains continue
    ad: bool              # authentic data asked for (RFC 6840 §5.7)
    opcode: int
    # EDNS options answered in kind.  Queries carrying them never reach the fast lanes
    # (``wire.sniff`` declines them), so these are not part of ``code``.
    cookie: bytes = b""   # the reply's COOKIE option data: the client cookie and a fresh server cookie
    ecs: ClientSubnet | None = None   # the query's Client Subnet, echoed (RFC 7871 §7.2.1) ...
    ecs_scope: int = 0    # ... with the prefix length of the CIDR that chose the line
    ecs_forward: bool = False   # a trusted subnet sent upstream ([ecs] forward): no cache either way
    cookie_good: bool = False   # the query presented a good server cookie (not spoofed)

    @property
    def code(self) -> int:
        """The shape as one int, the form the fast lanes key on (see ``shape_code``)."""
        return shape_code(self.tcp, self.edns, self.payload, self.do, self.cd, self.rd, self.ad, self.opcode)


def shape_code(tcp: bool, edns: bool, payload: int, do: bool, cd: bool, rd: bool, ad: bool, opcode: int) -> int:
    """A shape as one int, one-to-one: RD, CD, AD, TCP, EDNS, DO in bits 0-5, the opcode in
    bits 6-9, the payload above.  ``QueryHandler.handle`` computes the same bits straight from
    the packet; ``shape_from_code`` turns them back into the shape."""
    return (rd | cd << 1 | ad << 2 | tcp << 3 | edns << 4 | do << 5 | opcode << 6 | payload << 10)


_SHAPES: dict[int, "RequestShape"] = {}
_SHAPES_MAX = 4096


def shape_from_code(code: int) -> RequestShape:
    """The shape a code stands for (one shared object per code)."""
    shape = _SHAPES.get(code)
    if shape is None:
        shape = RequestShape(bool(code & 8), bool(code & 16), code >> 10, bool(code & 32), bool(code & 2),
                             bool(code & 1), bool(code & 4), (code >> 6) & 0xF)
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[code] = shape
    return shape


def shape_of(flags: int, edns: wire.Edns | None, tcp: bool) -> RequestShape:
    """The shape of a parsed request (``flags``: header bits as one 16-bit word)."""
    return RequestShape(tcp, edns is not None, edns.payload if edns is not None else 0,
                        bool(edns is not None and edns.do), bool(flags & wire.FLAG_CD),
                        bool(flags & wire.FLAG_RD), bool(flags & wire.FLAG_AD), (flags >> 11) & 0xF)


# The shape the Twisted Names API implies: a recursive query with no EDNS and no size limit.
API_SHAPE = RequestShape(True, False, 0, False, False, True, False, wire.OPCODE_QUERY)


@dataclass(slots=True)
class Result:
    """What the chain (or a decision before it) found for one question, before shaping."""

    rcode: int = wire.NOERROR
    aa: bool = False
    answer: list[wire.RRset] = field(default_factory=list)
    authority: list[wire.RRset] = field(default_factory=list)
    additional: list[wire.RRset] = field(default_factory=list)
    entry: Entry | None = None                # a cached forwarded answer: served with TTLs counted down
    referral: bool = False
    ede: tuple[int, str] | None = None        # Extended DNS Error (RFC 8914) for EDNS clients
    source: str = "local"                     # for counters: local, hosts, resolver, cache, upstream, policy, error
    fixed: bool = True                        # depends only on the snapshot and the request: fast lanes may keep it
    ra: bool = False
    cache_key: bytes = b""                    # the packed cache key of ``entry``
    upstream: str | None = None               # the upstream that just answered (query log)
    tsig_error: tuple[wire.Tsig, int] | None = None   # the query's TSIG and the TSIG error to answer
    truncated: bool = False                   # TC=1 with no records (a rate limit's slip, smartdns.ratelimit)

    @property
    def sections(self) -> tuple[list[wire.RRset], list[wire.RRset], list[wire.RRset]]:
        """Answer, authority and additional, in rendering order (records only, not ``entry``)."""
        return self.answer, self.authority, self.additional

    def sections_at(self, now: float) -> tuple[Sequence[wire.RRset], Sequence[wire.RRset], Sequence[wire.RRset]]:
        """The records, with a cached entry's TTLs counted down to ``now``."""
        entry = self.entry
        if entry is None:
            return self.sections
        answer, authority, additional = entry.sections_at(now, stale_ttl(entry, now))
        return answer, authority, additional


def stale_ttl(entry: Entry, now: float) -> int | None:
    """The TTL to serve an expired entry with (RFC 8767), or None while it is fresh."""
    return STALE_TTL_SECONDS if now >= entry.expires_at and entry.rcode != wire.SERVFAIL else None


def error(rcode: int, source: str = "error") -> Result:
    """A response with no records (refusals, FORMERR, NOTIMP, SERVFAIL)."""
    return Result(rcode=rcode, source=source)


def truncated(rcode: int) -> Result:
    """An empty TC=1 reply with ``rcode``: a rate-limited answer that slips, so a real client
    retries over TCP (BIND's ``slip``)."""
    return Result(rcode=rcode, source="rate_limit", truncated=True)


def _options(shape: RequestShape, result: Result) -> bytes:
    """The reply's EDNS options: COOKIE (RFC 7873 §5.2), Client Subnet (RFC 7871 §7.2.1), then
    Extended DNS Error (RFC 8914)."""
    options = b""
    if shape.cookie:
        options += struct.pack("!HH", COOKIE_OPTION, len(shape.cookie)) + shape.cookie
    if shape.ecs is not None:
        options += shape.ecs.option(shape.ecs_scope)
    if result.ede is not None:
        options += wire.ede_option(*result.ede)
    return options


class Shaper:
    """The one place that turns a ``Result`` into response bytes for a ``RequestShape``."""

    def __init__(self, max_udp_payload: int) -> None:
        self.max_udp_payload = max_udp_payload
        self._opt = {do: wire.opt_record(max_udp_payload, do) for do in (False, True)}
        self._plain: dict[int, tuple[int, bytes | None, int]] = {}   # by code << 1 | RA

    def limit(self, shape: RequestShape) -> int:
        """The largest response this request may get (RFC 1035 §4.2.1, RFC 6891 §6.2.5)."""
        if shape.tcp:
            return TCP_LIMIT
        if shape.edns:
            return min(max(shape.payload, wire.CLASSIC_UDP_LIMIT), self.max_udp_payload)
        return wire.CLASSIC_UDP_LIMIT

    def shape(self, shape: RequestShape, qid: int, question: bytes, result: Result, now: float) -> bytes:
        """The response to a request of ``shape`` with ID ``qid`` and ``question`` (the client's
        own bytes, so its 0x20 case is echoed).

        As BIND 9: RD and CD are echoed only to QUERY; other opcodes get every flag clear but
        QR (and AA where the result says so), and opcodes other than QUERY, NOTIFY and UPDATE
        no question section.  A result with a TSIG error ends with the unsigned TSIG record
        (RFC 8945 §5.3.2), time signed ``now``."""
        flags, opt = self.head(shape, result)
        if shape.opcode not in QUESTION_OPCODES:
            question = b""
        limit = self.limit(shape)
        entry = result.entry
        if entry is not None and not result.answer:
            return self._entry(entry, qid, question, flags, opt, limit, now)
        sections = result.sections_at(now) if entry is not None else result.sections
        last = b""
        if result.tsig_error is not None:
            last = wire.tsig_error_record(result.tsig_error[0], qid, result.tsig_error[1], int(now))
        message, _ = wire.render(qid, flags, question, sections, opt=opt, limit=limit, last=last)
        if shape.ad and message[2] & 0x02 and message[6:8] != b"\x00\x00" and result.aa \
                and not any(r.rtype in (wire.CNAME, wire.DNAME) for r in result.answer):
            # BIND echoes the query's AD bit when it truncates an answer after some records fit
            # and no CNAME restart happened (a quirk of its re-render); copied so a client
            # cannot tell the two apart.
            message = message[:3] + bytes([message[3] | 0x20]) + message[4:]
        return message

    def head(self, shape: RequestShape, result: Result) -> tuple[int, bytes | None]:
        """The header flags and the OPT record (None without EDNS) of the response."""
        flags = (wire.FLAG_QR | shape.opcode << 11 | (result.rcode & 0xF)
                 | (wire.FLAG_AA if result.aa else 0) | (wire.FLAG_RA if result.ra else 0)
                 | (wire.FLAG_TC if result.truncated else 0))
        if shape.opcode == wire.OPCODE_QUERY:
            flags |= (wire.FLAG_RD if shape.rd else 0) | (wire.FLAG_CD if shape.cd else 0)
        opt = None
        if shape.edns:
            if result.rcode > 0xF or result.ede is not None or shape.cookie or shape.ecs is not None:
                opt = wire.opt_record(self.max_udp_payload, shape.do, ext_rcode=result.rcode >> 4,
                                      options=_options(shape, result))
            else:
                opt = self._opt[shape.do]
        return flags, opt

    def plain(self, code: int, ra: bool) -> tuple[int, bytes | None, int]:
        """``head`` and ``limit`` for an authoritative NOERROR answer with records (the shape of
        ``authority.plain_answer``'s RRset answers) to a request of shape ``code``: computed by those
        two functions once per (code, RA) and kept, for the query handler's first-sight lane."""
        key = code << 1 | ra
        found = self._plain.get(key)
        if found is None:
            shape = shape_from_code(code)
            flags, opt = self.head(shape, Result(aa=True, ra=ra))
            found = (flags, opt, self.limit(shape))
            if len(self._plain) >= _SHAPES_MAX:
                self._plain.clear()
            self._plain[key] = found
        return found

    def _entry(self, entry: Entry, qid: int, question: bytes, flags: int, opt: bytes | None,
               limit: int, now: float) -> bytes:
        """A cached entry with this client's ID, flags and question bytes, TTLs counted down:
        a copy and a few ``pack_into`` calls, rendered afresh only when it must be cut."""
        stale = stale_ttl(entry, now)
        buf = entry.patched(now, stale, question)   # with the client's own spelling (0x20)
        if len(buf) + (wire.OPT_SIZE if opt else 0) > limit:
            message, _ = wire.render(qid, flags, question, entry.sections_at(now, stale), opt=opt, limit=limit)
            return message
        struct.pack_into("!HH", buf, 0, qid, flags)
        if opt:
            buf += opt
            (arcount,) = struct.unpack_from("!H", buf, 10)
            struct.pack_into("!H", buf, 10, arcount + 1)
        return bytes(buf)
