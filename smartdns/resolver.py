"""Forwarded answers: the cache in front of the forwarder.

Turns an upstream response into a cache entry — keeping only records at or below the question's
name and the CNAME chain the answer walks (bailiwick), clamping TTLs, caching negative answers
by their SOA (RFC 2308 §5) and failures briefly (RFC 9520) — and makes concurrent identical
misses share one upstream query.  Serve-stale (RFC 8767) and prefetch live here too.
"""
from __future__ import annotations

import struct
from typing import Any

import dns.rdataclass
import dns.rdatatype
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartdns import wire
from smartdns.cache import AnswerCache, CacheKey, Entry, make_entry, make_entry_from_wire, packed_key
from smartdns.config import DEFAULT_MAX_OUTSTANDING, CacheConfig
from smartdns.errors import UpstreamError
from smartdns.forwarder import Forwarder
from smartdns.txtyping import failure_of, failure_trap

log = Logger()

STALE_ANSWER_AFTER_SECONDS = 1.8    # RFC 8767 §5: client response timer before answering stale
PREFETCH_FRACTION = 0.1         # refresh an entry asked for in the last 10% of its TTL
PREFETCH_MIN_TTL_SECONDS = 10   # entries shorter than this are not worth prefetching
_TYPE_AND_TTL = struct.Struct("!H2xI")   # a record's type and TTL, read from 4 bytes before the TTL
_TTL = struct.Struct("!I")


def _group(records: tuple[wire.Record, ...], keep: Any) -> tuple[wire.RRset, ...]:
    """Records → RRsets in order of first appearance, keeping those ``keep`` accepts."""
    order: list[tuple[bytes, int, int]] = []
    groups: dict[tuple[bytes, int, int], tuple[int, list[bytes]]] = {}
    for rec in records:
        if not keep(rec):
            continue
        k = (rec.name.lower(), rec.rtype, rec.rclass)
        if k not in groups:
            order.append(k)
            groups[k] = (rec.ttl, [])
        ttl, rdatas = groups[k]
        groups[k] = (min(ttl, rec.ttl), rdatas)
        if rec.rdata not in rdatas:
            rdatas.append(rec.rdata)
    return tuple(wire.make_rrset(name, rtype, groups[(name, rtype, rclass)][0], groups[(name, rtype, rclass)][1],
                                 rclass) for name, rtype, rclass in order)


def sanitize(message: wire.Message, qkey: bytes) -> tuple[tuple[wire.RRset, ...], ...]:
    """The sections worth caching (RFC 5452 §6 bailiwick): answer records on the CNAME/DNAME chain
    from the question, SOA/NS/DS authority records of zones enclosing the chain, and additional
    addresses only for names the kept records point at.  Everything else is dropped."""
    chain = {qkey}
    for rec in message.answer:
        if rec.name.lower() in chain and rec.rtype == wire.CNAME and rec.target:
            chain.add(rec.target)
    answer = _group(message.answer, lambda r: r.name.lower() in chain or (
        r.rtype == wire.DNAME and any(wire.is_subdomain(n, r.name.lower()) for n in chain)))
    # Authority data must be about a zone that encloses the name the chain ended at.
    tail = list(chain)
    authority = _group(message.authority, lambda r: r.rtype in (wire.SOA, wire.NS, wire.DS)
                       and any(wire.is_subdomain(n, r.name.lower()) for n in tail))
    targets = {r for rr in answer + authority for r in _targets(rr)}
    additional = _group(message.additional, lambda r: r.rtype in (wire.A, wire.AAAA) and r.name.lower() in targets)
    return answer, authority, additional


def _targets(rrset: wire.RRset) -> list[bytes]:
    """Names an NS/MX/SRV RRset points at (key form)."""
    out = []
    for parts in rrset.rdatas:
        raw = b"".join(parts)
        if rrset.rtype == wire.NS:
            out.append(raw.lower())
        elif rrset.rtype == wire.MX:
            out.append(raw[2:].lower())
        elif rrset.rtype == wire.SRV:
            out.append(raw[6:].lower())
    return out


class ForwardResolver:
    """Cache lookups, shared misses and cache fills for forwarded names."""

    def __init__(self, reactor: Any, cache: AnswerCache, forwarder: Forwarder, config: CacheConfig,
                 max_outstanding: int = DEFAULT_MAX_OUTSTANDING) -> None:
        self.reactor = reactor
        self.cache = cache
        self.forwarder = forwarder
        self.config = config
        self.max_outstanding = max_outstanding
        self._inflight: dict[CacheKey, list[defer.Deferred[Entry]]] = {}

    @property
    def overloaded(self) -> int:
        """Misses refused because ``max_outstanding`` questions were waiting."""
        return self.forwarder.stats.overloaded

    def in_flight(self) -> int:
        """Questions waiting on upstreams now (one per key, however many clients wait on it)."""
        return len(self._inflight)

    def key(self, qkey: bytes, qtype: int, qclass: int, do: bool) -> CacheKey:
        """Everything that changes a forwarded answer."""
        return (qkey, qtype, qclass, do, self.forwarder.pool_for(qkey).index)

    def prefetch_at(self, entry: Entry) -> float:
        """When a hit on ``entry`` starts a background refresh (never, with prefetch off, for
        short-lived entries and for remembered failures).  The fast lanes serve an entry again
        only before this point, so a hit after it always reaches ``cached``."""
        expires: float = entry.expires_at
        stored: float = entry.stored_at
        lifetime = expires - stored
        if not self.config.prefetch or lifetime < PREFETCH_MIN_TTL_SECONDS or entry.rcode == wire.SERVFAIL:
            return expires
        return expires - lifetime * PREFETCH_FRACTION

    def cached(self, key: CacheKey, packed: bytes | None = None) -> Entry | None:
        """A fresh entry; also starts a background refresh when it is close to expiry.  A miss
        is not counted here: ``resolve_for_client`` counts the questions actually forwarded.
        ``packed``: the key packed, when the caller has it (``AnswerCache.get``)."""
        entry = self.cache.get(key, count_miss=False, packed=packed)
        if entry is not None and key not in self._inflight:
            due = self.prefetch_at(entry)
            if due < entry.expires_at and self.reactor.seconds() > due:
                self.resolve(key).addErrback(lambda f: None)      # one refresh in flight per key
        return entry

    def resolve_for_client(self, key: CacheKey) -> defer.Deferred[Entry]:
        """``resolve``, but with serve-stale on: if an expired entry is at hand and the upstream has
        not answered within the client response timer, answer stale now and let the refresh go
        on in the background (RFC 8767 §5)."""
        self.cache.counters.misses += 1          # AnswerCache.count_miss, without the call
        stale = self.cache.get_stale(key) if self.config.serve_stale else None
        d = self.resolve(key)
        if stale is None:
            return d
        answer: defer.Deferred[Entry] = defer.Deferred()
        def answer_stale() -> None:
            if not answer.called:
                self.cache.counters.stale += 1
                answer.callback(stale)

        timer = self.reactor.callLater(STALE_ANSWER_AFTER_SECONDS, answer_stale)

        def settled(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if not answer.called:
                answer.errback(result) if isinstance(result, Failure) else answer.callback(result)

        d.addBoth(settled)
        return answer

    def resolve(self, key: CacheKey) -> defer.Deferred[Entry]:
        """Ask upstream (one query per key at a time) and cache what comes back.

        The first caller gets the forwarder's own Deferred, whose first callback (``_settle``)
        stores the answer and fires a Deferred for each caller that joined meanwhile, before
        the first caller's callbacks run: every caller has a Deferred of its own, so no caller's
        callbacks change what others see, and a lone miss costs one Deferred, not three."""
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiter: defer.Deferred[Entry] = defer.Deferred()
            waiters.append(waiter)
            return waiter
        if len(self._inflight) >= self.max_outstanding:
            self.forwarder.stats.overloaded += 1
            # SERVFAIL for this client, not cached: the name itself is fine
            return defer.fail(UpstreamError("too many questions waiting on upstreams"))
        self._inflight[key] = waiters = []
        qkey, qtype, qclass, do, pool_index = key
        d: defer.Deferred[Any] = self.forwarder.query(qkey, qtype, qclass, do=do, pool=self.forwarder.pools[pool_index])
        return d.addBoth(self._settle, key, waiters)

    def _settle(self, result: wire.Reply | Failure, key: CacheKey,
                waiters: list[defer.Deferred[Entry]]) -> Entry | Failure:
        """The upstream's reply (or failure) as an entry, cached where cacheable, for the first
        caller (returned) and every caller waiting on the same key (fired)."""
        outcome: Entry | Failure
        try:
            outcome = self._failed(result, key) if isinstance(result, Failure) else self._store(result, key)
        except Exception as e:
            outcome = failure_of(e)
        del self._inflight[key]
        for w in waiters:
            if isinstance(outcome, Failure):
                w.errback(outcome)
            else:
                w.callback(outcome)
        return outcome

    def resolve_uncached(self, key: CacheKey, options: bytes) -> defer.Deferred[Entry]:
        """Ask upstream with EDNS ``options`` (a client's subnet, ``[ecs] forward``) and keep
        nothing: the answer may be for that subnet only, so it is neither served from nor put
        in the cache, nor shared with other clients asking the same question meanwhile."""
        qkey, qtype, qclass, do, pool_index = key
        d = self.forwarder.query(qkey, qtype, qclass, do=do, pool=self.forwarder.pools[pool_index], options=options)
        return d.addCallback(self._entry_only, key)

    def _entry_only(self, reply: wire.Reply, key: CacheKey) -> Entry:
        """An upstream reply as an entry, not cached."""
        entry = self._store_reply(reply, key, keep=False)
        entry.upstream = reply.upstream
        return entry

    def _store(self, reply: wire.Reply, key: CacheKey) -> Entry:
        """Turn a validated upstream response into an entry and cache it where cacheable; the
        entry says which upstream answered (for the query log)."""
        entry = self._store_reply(reply, key)
        entry.upstream = reply.upstream
        return entry

    def _store_reply(self, reply: wire.Reply, key: CacheKey, keep: bool = True) -> Entry:
        qkey, qtype, qclass = key[0], key[1], key[2]
        now = self.reactor.seconds()
        if reply.rcode == wire.NOERROR:
            entry = self._store_fast(reply, key, now, keep)
            if entry is not None:
                return entry
        try:
            message = reply.message
        except wire.FormError as e:
            return self._failed(failure_of(UpstreamError(f"malformed upstream reply: {e}")), key)
        answer, authority, additional = sanitize(message, qkey)
        clamp = self.cache.clamp_ttl
        rcode = message.rcode
        soa = next((r for r in authority if r.rtype == wire.SOA), None)
        lifetime: int | None
        if rcode == wire.NOERROR and any(r.rtype == qtype or qtype == wire.ANY for r in answer) or (
                rcode == wire.NOERROR and answer and answer[-1].rtype in (wire.CNAME, wire.DNAME) and not soa):
            # Positive: only the chain is kept, like the undecoded fast store (_store_fast).
            answer = tuple(r.with_ttl(clamp(r.ttl)) for r in answer)
            authority = additional = ()
            lifetime = min(r.ttl for r in answer)
        elif rcode in (wire.NOERROR, wire.NXDOMAIN) and soa is not None:
            minimum = struct.unpack("!I", b"".join(soa.rdatas[0])[-4:])[0]
            negative = min(soa.ttl, minimum, self.config.negative_max_ttl)
            authority = tuple(r.with_ttl(min(r.ttl, negative)) for r in authority)
            answer = tuple(r.with_ttl(clamp(r.ttl)) for r in answer)
            lifetime = negative
        else:
            lifetime = None       # negative without SOA, or an odd rcode: pass through, do not cache
        question = qkey + struct.pack("!HH", qtype, qclass)
        entry = make_entry(rcode, (answer, authority, additional), question, lifetime or 0, now,
                           self.config.serve_stale)
        if lifetime and keep:
            self.cache.put(key, entry)
        return entry

    def _store_fast(self, reply: wire.Reply, key: CacheKey, now: float, keep: bool = True) -> Entry | None:
        """The common positive answer: keep the upstream's own bytes up to the end of the answer
        section (authority and additional dropped), TTLs clamped in place.  None: use the full path."""
        cut = wire.answer_prefix(reply, key[0])
        if cut is None:
            return None
        message, offsets = cut          # at least one record; the message is a copy of the reply
        qtype = key[1]
        ends_with_data = qtype == wire.ANY
        clamp = self.cache.clamp_ttl
        lifetime: int | None = None
        rtype = 0
        for offset in offsets:          # one pass: the types seen, and the TTLs clamped in place
            rtype, ttl = _TYPE_AND_TTL.unpack_from(message, offset - 4)
            ends_with_data = ends_with_data or rtype == qtype
            ttl = clamp(ttl & 0x7FFFFFFF)
            _TTL.pack_into(message, offset, ttl)
            if lifetime is None or ttl < lifetime:
                lifetime = ttl
        if not ends_with_data and (rtype != wire.CNAME or reply.data[8:10] != b"\x00\x00"):
            return None     # a dangling CNAME with authority data may be CNAME-then-NODATA (RFC 2308 §5)
        packed = packed_key(key)
        entry = make_entry_from_wire(wire.NOERROR, message, offsets, lifetime or 0, now, self.config.serve_stale,
                                     packed)
        if lifetime and keep:
            self.cache.put(key, entry, packed)
        return entry

    def _failed(self, reason: Failure, key: CacheKey) -> Entry:
        """Every upstream failed: serve stale if allowed, else remember SERVFAIL briefly."""
        failure_trap(reason, UpstreamError)
        current = self.cache.peek(key)
        if current is not None and current.rcode != wire.SERVFAIL and self.reactor.seconds() < current.expires_at:
            return current      # a failed prefetch leaves the still-fresh entry alone
        # Named as dig names them (``AAAA``, ``TYPE12289``; ``IN``, ``CLASS7``).
        log.info("forwarding {qname} {qclass} {qtype} failed: {error}", qname=wire.to_text(key[0]),
                 qclass=dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(key[2])),
                 qtype=dns.rdatatype.to_text(dns.rdatatype.RdataType.make(key[1])),
                 error=reason.getErrorMessage())
        stale = self.cache.get_stale(key)
        if stale is not None:
            self.cache.counters.stale += 1
            return stale
        now = self.reactor.seconds()
        question = key[0] + struct.pack("!HH", key[1], key[2])
        entry = make_entry(wire.SERVFAIL, ((), (), ()), question, self.config.servfail_ttl, now, 0)
        if self.config.servfail_ttl > 0:
            self.cache.put(key, entry)
        return entry
