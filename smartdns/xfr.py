"""Zone transfers out (AXFR, RFC 5936) for ``[[transfer]]`` keys, and the hook NOTIFY comes in by.

A transfer is allowed only to a client whose request is TSIG-signed (RFC 8945) with a key some
``[[transfer]]`` names; it carries exactly what that rule's line sees (``Snapshot.view``: base
and overlay merged), or the base zone when the rule has no line.  Unsigned transfer requests are
not ours: the normal query path REFUSES them, as it always has.

BIND 9.18's answers, measured with named (``allow-transfer { key k1; }``) and reproduced here:

- unsigned AXFR/IXFR, UDP or TCP: REFUSED (the normal path);
- signed with an unknown key: NOTAUTH, TSIG error BADKEY, unsigned; a bad MAC: NOTAUTH, BADSIG;
- signed with a known key, for a name that is not one of our zone apexes: NOTAUTH, signed;
- signed with a known key that no ``[[transfer]]`` names: REFUSED, signed;
- AXFR over UDP with an allowed key: FORMERR, signed;
- IXFR without an SOA in the authority section: FORMERR, signed.

A signed SOA query for a zone apex with a ``[[transfer]]`` key (a secondary's refresh asks it
before transferring) is answered here too, with the serial of that key's view, signed.

IXFR (RFC 1995) is answered from the view's journal (``smartdns.journal``): a client whose
serial is not older than ours (RFC 1982 arithmetic) gets the single SOA; one whose serial starts
an unbroken chain of kept differences gets the incremental form (our SOA, then per difference
the old SOA, the deleted records, the new SOA, the added records, and our SOA to close); any
other serial gets the whole zone AXFR-style (RFC 1995 §4).  Over UDP the incremental answer is
sent when it fits in one datagram (512 bytes, or the client's EDNS size), else the single SOA,
telling the client to come back over TCP (RFC 1995 §2); a client that needs the whole zone
gets the single SOA over UDP too.

Responses to transfers are built and TSIG-signed by dnspython, not by the response shaper (which
shapes every normal, single-message answer): a transfer is a stream of signed messages whose
MACs chain (RFC 8945 §5.3.1), and that is dnspython's code.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
from twisted.internet import defer, threads
from twisted.logger import Logger

from smartdns import wire
from smartdns.journal import Difference, Journal
from smartdns.serial import serial_gte
from smartdns.snapshot import Snapshot
from smartdns.tsig import config_keyring
from smartdns.zones import ZoneView

log = Logger()

OPCODE_NOTIFY = 4                    # RFC 1996
TSIG_TYPE = 250
BADSIG, BADKEY, BADTIME = 16, 17, 18  # TSIG errors, RFC 8945 §3
TSIG_ERROR_FUDGE_SECONDS = 300        # the fudge BIND puts in an unsigned TSIG error record
#: Records are packed into one message up to about this many bytes (BIND packs up to 64 KB).
MESSAGE_BUDGET_BYTES = 16_000

#: Requests the hook reads when signed: transfers, and the SOA query a secondary's refresh sends.
SIGNED_TYPES = frozenset({wire.AXFR, wire.IXFR, wire.SOA})

#: What the hook returns for a message that is none of its business: the normal path answers it.
PASS: Any = object()

HookResult = Any   # PASS, None (drop), bytes, list[bytes] (a TCP stream) or a Deferred of those
Run = Callable[..., "defer.Deferred[Any]"]


def classify(data: bytes) -> tuple[int, int] | None:
    """(opcode, qtype) of a request with one question, cheaply; None for anything else."""
    if len(data) < 17 or data[2] & 0x80 or data[4:6] != b"\x00\x01":
        return None
    pos = 12
    while pos < len(data):
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += 1 + length
    if pos + 5 > len(data):
        return None
    return (data[2] >> 3) & 0xF, struct.unpack_from("!H", data, pos + 1)[0]


class TransferHook:
    """What ``QueryHandler`` asks first about every request: signed AXFR/IXFR (answered here)
    and NOTIFY (given to ``notify``, the secondary's handler, when there is one)."""

    def __init__(self, reactor: Any, *, notify: Callable[[bytes, str, bool, Snapshot], HookResult] | None = None,
                 run: Run | None = None, journal: Journal | None = None,
                 update: Callable[[bytes, str, bool, Snapshot], HookResult] | None = None) -> None:
        self.reactor = reactor
        self.notify = notify
        self.update = update                # signed UPDATE (RFC 2136): smartdns.update.UpdateHandler
        self.journal = journal              # IXFR differences (none: IXFR is answered AXFR-style)
        self._run = run or (lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))


    def answer(self, data: bytes, client: str, tcp: bool, snap: Snapshot) -> HookResult:
        """PASS, or our answer to a transfer request or NOTIFY."""
        kind = classify(data)
        if kind is None:
            return PASS
        opcode, qtype = kind
        if opcode == OPCODE_NOTIFY:
            return PASS if self.notify is None else self.notify(data, client, tcp, snap)
        if opcode == wire.OPCODE_UPDATE:
            return PASS if self.update is None else self.update(data, client, tcp, snap)
        if opcode != wire.OPCODE_QUERY or qtype not in SIGNED_TYPES or data[10:12] == b"\x00\x00":
            return PASS                      # unsigned transfers: REFUSED by the normal path
        query, error = parse_signed(data, config_keyring(snap.config.tsig), int(self.reactor.seconds()))
        if error is not None:
            return error
        if query is None or not query.had_tsig:
            return PASS
        if qtype == wire.SOA:
            return self._soa(query, snap)
        return self._transfer(query, client, tcp, snap)

    def _soa(self, query: dns.message.Message, snap: Snapshot) -> HookResult:
        """A signed SOA query for one of our apexes, as a secondary's refresh sends it before
        the transfer (RFC 1996 §3.11): the serial of the key's line's view, signed."""
        question = query.question[0]
        origin, key_name = _origin_key(question.name), _key_name(query)
        rule = next((rule for rule in snap.config.transfers if rule.key == key_name), None)
        if origin not in snap.zones or rule is None or (origin, rule.line) in snap.servfail:
            return PASS
        return single_soa(query, snap.view(origin, rule.line))

    def _transfer(self, query: dns.message.Message, client: str, tcp: bool, snap: Snapshot) -> HookResult:
        question = query.question[0]
        key_name, origin = _key_name(query), _origin_key(question.name)
        qtype = "AXFR" if question.rdtype == dns.rdatatype.AXFR else "IXFR"
        rule = next((rule for rule in snap.config.transfers if rule.key == key_name), None)
        if origin not in snap.zones or question.rdclass != dns.rdataclass.IN:
            return signed_error(query, dns.rcode.NOTAUTH)
        if rule is None:
            log.info("{qtype} {zone} refused to {client}: key {key} is in no [[transfer]]",
                     qtype=qtype, zone=question.name, client=client, key=key_name)
            return signed_error(query, dns.rcode.REFUSED)
        if (origin, rule.line) in snap.servfail:
            return signed_error(query, dns.rcode.SERVFAIL)   # a secondary zone past expire: nothing to give
        view = snap.view(origin, rule.line)
        ours = soa_serial(view)
        if qtype == "IXFR":
            theirs = next((int(rrset[0].serial) for rrset in query.authority
                           if rrset.rdtype == dns.rdatatype.SOA and len(rrset)), None)
            if theirs is None:
                return signed_error(query, dns.rcode.FORMERR)
            if serial_gte(theirs, ours):
                return single_soa(query, view)
            chain = self.journal.chain(origin, rule.line, theirs, ours) if self.journal is not None else None
            if chain is not None and sum(step.records for step in chain) > chain[-1].view_records:
                chain = None             # more than the whole zone: AXFR-style is smaller (BIND's max-ixfr-ratio)
            if not tcp:
                fits = None if chain is None else incremental_datagram(query, view, chain)
                return fits if fits is not None else single_soa(query, view)
            if chain is not None:
                log.info("IXFR {zone} (line {line}) serial {theirs} to {serial} ({steps} differences) to {client} "
                         "with key {key}", zone=question.name, line=rule.line or "-", theirs=theirs, serial=ours,
                         steps=len(chain), client=client, key=key_name)
                return self._run(incremental_messages, query, view, chain)
        elif not tcp:
            return signed_error(query, dns.rcode.FORMERR)
        log.info("{qtype} {zone} (line {line}) serial {serial} to {client} with key {key}",
                 qtype=qtype, zone=question.name, line=rule.line or "-", serial=ours, client=client, key=key_name)
        return self._run(transfer_messages, query, view)


def _origin_key(name: dns.name.Name) -> bytes:
    """A question name in the snapshot's key form (lowercase wire)."""
    data = name.canonicalize().to_wire()
    assert data is not None
    return data


def _key_name(query: dns.message.Message) -> str:
    """The name of the key a verified request was signed with, as ``[[tsig]] name`` spells it."""
    assert query.keyname is not None
    return str(query.keyname.to_text(omit_final_dot=True)).lower()


def parse_signed(data: bytes, ring: dict[dns.name.Name, dns.tsig.Key], now: int) -> tuple[
        dns.message.Message | None, bytes | None]:
    """(the verified message, None), or (None, the NOTAUTH answer BIND gives for a bad TSIG),
    or (None, None) for a message dnspython cannot read (the normal path answers FORMERR)."""
    try:
        return dns.message.from_wire(data, keyring=ring), None
    except dns.message.UnknownTSIGKey:
        return None, tsig_error_answer(data, BADKEY, now)
    except dns.tsig.BadSignature:
        return None, tsig_error_answer(data, BADSIG, now)
    except dns.tsig.BadTime:
        return None, tsig_error_answer(data, BADTIME, now)
    except (dns.exception.DNSException, ValueError, struct.error):
        return None, None


def tsig_error_answer(data: bytes, error: int, now: int, payload: int = 1232) -> bytes | None:
    """NOTAUTH with an unsigned TSIG record carrying ``error`` (RFC 8945 §5.2.2: a request whose
    key is unknown or MAC is wrong gets an answer the client cannot verify, MAC empty); time
    signed is ``now`` and the fudge 300 s, as BIND 9.18 writes them.  A request with EDNS gets
    an OPT advertising ``payload`` (``[server] max_udp_payload``)."""
    try:
        query = dns.message.from_wire(data, keyring=False)
    except (dns.exception.DNSException, ValueError, struct.error):
        return None
    if query.tsig is None or query.keyname is None:
        return None
    request_tsig = query.tsig[0]
    response = dns.message.make_response(query, our_payload=payload)
    response.set_rcode(dns.rcode.NOTAUTH)
    response.flags &= ~dns.flags.AA
    head = bytearray(response.to_wire())
    head[10:12] = struct.pack("!H", struct.unpack_from("!H", head, 10)[0] + 1)
    algorithm = bytes(request_tsig.algorithm.to_wire() or b"")
    rdata = (algorithm + struct.pack("!HIH", now >> 32, now & 0xFFFFFFFF, TSIG_ERROR_FUDGE_SECONDS)
             + struct.pack("!HHHH", 0, query.id, error, 0))
    record = bytes(query.keyname.to_wire() or b"") + struct.pack("!HHIH", TSIG_TYPE, dns.rdataclass.ANY, 0, len(rdata)) + rdata
    return bytes(head) + record


def signed_error(query: dns.message.Message, rcode: int) -> bytes:
    """An empty answer with ``rcode``, signed with the request's key (as BIND signs them)."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    response.flags &= ~dns.flags.AA
    return response.to_wire()


def soa_serial(view: ZoneView) -> int:
    """The serial of the SOA this view serves."""
    rdata = b"".join(view.soa.rdatas[0])
    return int(_to_dnspython(view.soa.rtype, rdata).serial)


def single_soa(query: dns.message.Message, view: ZoneView) -> bytes:
    """The one-SOA IXFR answer: you are up to date (or: come back over TCP)."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.answer.append(_rrset(view.soa))
    return response.to_wire()


def _to_dnspython(rtype: int, rdata: bytes) -> Any:
    return dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType(rtype), rdata, 0, len(rdata))


def _rrset(rrset: wire.RRset) -> dns.rrset.RRset:
    """Our RRset (wire form) as dnspython's, owner in the zone file's case."""
    out = dns.rrset.RRset(dns.name.from_wire(rrset.name, 0)[0], dns.rdataclass.RdataClass(rrset.rclass),
                          dns.rdatatype.RdataType(rrset.rtype))
    for parts in rrset.rdatas:
        out.add(_to_dnspython(rrset.rtype, b"".join(parts)), rrset.ttl)
    return out


def view_rrsets(view: ZoneView) -> Iterator[wire.RRset]:
    """Every RRset clients of the view see, the apex SOA first (RFC 5936 §2.2), names in
    canonical order so equal views give equal transfers."""
    names = set(view.base.nodes) | set(view.merged)
    yield view.soa
    for name in sorted(names, key=_canonical_key):
        node = view.node(name)
        if node is None:
            continue
        for rtype in sorted(node):
            if name == view.origin and rtype == wire.SOA:
                continue
            yield node[rtype]


def _canonical_key(name: bytes) -> tuple[bytes, ...]:
    """RFC 4034 §6.1 order: compare labels from the root down."""
    labels: list[bytes] = []
    pos = 0
    while name[pos]:
        labels.append(name[pos + 1:pos + 1 + name[pos]].lower())
        pos += 1 + name[pos]
    return tuple(reversed(labels))


def transfer_messages(query: dns.message.Message, view: ZoneView) -> list[bytes]:
    """The AXFR stream for ``view``: signed messages, SOA first and last (RFC 5936 §2.2).

    Runs in a thread for large zones: it reads only the immutable view."""
    return _stream(query, [*view_rrsets(view), view.soa])


def incremental_rrsets(view: ZoneView, chain: tuple[Difference, ...]) -> list[wire.RRset]:
    """The records of an incremental IXFR answer (RFC 1995 §4): the current SOA, then per
    difference its old SOA, deletions, new SOA, additions, and the current SOA again."""
    out = [view.soa]
    for step in chain:
        out += [step.old_soa, *step.deleted, step.new_soa, *step.added]
    out.append(view.soa)
    return out


def incremental_messages(query: dns.message.Message, view: ZoneView, chain: tuple[Difference, ...]) -> list[bytes]:
    """The incremental IXFR stream over TCP: signed messages whose MACs chain, like AXFR's."""
    return _stream(query, incremental_rrsets(view, chain))


def incremental_datagram(query: dns.message.Message, view: ZoneView, chain: tuple[Difference, ...]) -> bytes | None:
    """The incremental answer as one signed UDP message, or None when it does not fit the
    client's size (512 bytes without EDNS, RFC 1995 §2)."""
    limit = query.payload if query.edns >= 0 else 512
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.answer = [_rrset(rrset) for rrset in incremental_rrsets(view, chain)]
    data = response.to_wire(max_size=65535)
    return data if len(data) <= limit else None


def _stream(query: dns.message.Message, rrsets: list[wire.RRset]) -> list[bytes]:
    """``rrsets`` as a stream of signed messages of about MESSAGE_BUDGET_BYTES each."""
    messages: list[bytes] = []
    tsig_ctx: Any = None
    batch: list[dns.rrset.RRset] = []
    size = 0

    def flush() -> None:
        nonlocal tsig_ctx, batch, size
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if messages:
            response.question = []       # RFC 5936 §2.2.1: only the first message need echo it
        response.answer = batch
        messages.append(response.to_wire(multi=True, tsig_ctx=tsig_ctx))
        tsig_ctx = response.tsig_ctx
        batch, size = [], 0

    for rrset in rrsets:
        converted = _rrset(rrset)
        cost = sum(len(b"".join(parts)) + len(rrset.name) + 10 for parts in rrset.rdatas)
        if batch and size + cost > MESSAGE_BUDGET_BYTES:
            flush()
        batch.append(converted)
        size += cost
    flush()
    return messages
