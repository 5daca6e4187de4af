"""The resolver chain: Twisted Names resolvers, composed in one place, in one order.

    cache       forwarded answers only (``CacheStage``); in chains of clients allowed recursion
    authority   the local zones as one line sees them (``LineAuthority``)
    hosts       optional hosts(5) files (``HostsFiles``, the stock ``twisted.names.hosts.Resolver``)
    your own    any ``IResolver`` given to the service (see README.rst, "A chain of your own")
    upstream    the forwarder's pools (``UpstreamStage``); in chains of clients allowed recursion

Each stage is an ``IResolver`` (``query`` and the ``lookup*`` methods; Deferreds of
``(answers, authority, additional)`` lists of ``RRHeader``; failures as ``twisted.names.error``
classes), so Twisted Names code can use it alone, in a stock ``ResolverChain`` or behind a stock
``DNSServerFactory``.  A stage is skipped the stock way: it fails with ``DomainError`` (and a
cache miss, a name outside every local zone or a name absent from the hosts files do), and
``AuthoritativeDomainError`` (NXDOMAIN in a local zone) ends the walk.

Our own stages also offer ``resolve(qname, qtype, qclass, shape)``, the same decision returned as
a ``response.Result`` of wire-format RRsets (or a cached entry) instead of Twisted objects, so the
server does not convert every answer twice; a stage without it is asked through ``query`` and its
answer converted.  ``tests/test_chain.py`` checks the two methods agree.

The cache goes first, as the design asks, and that order gives the same answers as putting it
after the authority: the cache only ever holds forwarded answers, a name is forwarded only when
no earlier stage answers it, and a reload that gives a name to a local zone or a hosts file
flushes it from the cache at once.

A CNAME or DNAME chain that leaves the zone it started in continues through the whole chain
(other local zones of the client's line, the hosts files, the cache, the upstreams) when the
client is allowed recursion and asked for it (RD=1), as BIND does in a recursive view; otherwise
the answer ends with the last CNAME and the client's resolver continues it.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import common, dns, error as dns_error, hosts, resolve
from twisted.python.failure import Failure

from smartdns import wire
from smartdns.authority import EDE_OTHER, MAX_CNAMES, Authority
from smartdns.cache import packed_key, packed_key_of
from smartdns.errors import UpstreamError
from smartdns.resolver import ForwardResolver
from smartdns.response import API_SHAPE, RequestShape, Result, error
from smartdns.snapshot import HostsTable, Snapshot
from smartdns.txtyping import failure_check, failure_trap

log = Logger()

HOSTS_TTL_SECONDS = 3600        # twisted.names.hosts.Resolver's default
RESOLVER_TIMEOUT_SECONDS = 5.0  # a stage of your own that has not answered by then is skipped
EDE_PROHIBITED = 18             # RFC 8914 §4.19
FORWARDED = frozenset({"cache", "upstream"})

StageResult = "Result | None | defer.Deferred[Result | None]"

_RCODE_ERRORS: dict[int, type[Exception]] = {
    wire.FORMERR: dns_error.DNSFormatError,
    wire.SERVFAIL: dns_error.DNSServerError,
    wire.NXDOMAIN: dns_error.DNSNameError,
    wire.NOTIMP: dns_error.DNSNotImplementedError,
    wire.REFUSED: dns_error.DNSQueryRefusedError,
}
_ERROR_RCODES = [(cls, rcode) for rcode, cls in _RCODE_ERRORS.items()]


def wire_name(name: Any) -> bytes:
    """Twisted's name (``dns.Name``, bytes or str, no trailing dot) in wire form."""
    text = name.name if isinstance(name, dns.Name) else name
    if isinstance(text, bytes):
        text = text.decode("ascii", "backslashreplace")
    return wire.from_text(text)


def to_twisted(result: Result | None, name: Any, now: float) -> tuple[list[Any], list[Any], list[Any]]:
    """A result as Twisted Names returns one: the three sections as ``RRHeader`` lists, or an
    exception from ``twisted.names.error`` for a failure (raised)."""
    if result is None:
        raise dns_error.DomainError(name)
    message = dns.Message(auth=result.aa)
    data, _ = wire.render(0, wire.FLAG_QR | (wire.FLAG_AA if result.aa else 0) | (result.rcode & 0xF), b"",
                          result.sections_at(now))
    message.fromStr(data)
    if result.rcode == wire.NXDOMAIN and result.aa:
        raise dns_error.AuthoritativeDomainError(name)
    if result.rcode != wire.NOERROR:
        raise _RCODE_ERRORS.get(result.rcode, dns_error.DNSUnknownError)(message)
    return list(message.answers), list(message.authority), list(message.additional)


def from_twisted(sections: tuple[Sequence[Any], Sequence[Any], Sequence[Any]], source: str) -> Result:
    """``(answers, authority, additional)`` from any IResolver as a result (AA when any answer
    record is authoritative, as Twisted's own server decides)."""
    answers, authority, additional = (list(s) for s in sections)
    message = dns.Message(answer=1)
    message.answers, message.authority, message.additional = answers, authority, additional
    parsed = wire.parse_message(message.toStr())
    return Result(aa=any(getattr(rr, "auth", False) for rr in answers), answer=_rrsets(parsed.answer),
                  authority=_rrsets(parsed.authority), additional=_rrsets(parsed.additional),
                  source=source, fixed=False)


def _rrsets(records: Sequence[wire.Record]) -> list[wire.RRset]:
    """Records grouped into RRsets in order of first appearance, owner names as spelled."""
    order: list[tuple[bytes, int, int]] = []
    groups: dict[tuple[bytes, int, int], tuple[bytes, int, list[bytes]]] = {}
    for rec in records:
        k = (rec.name.lower(), rec.rtype, rec.rclass)
        if k not in groups:
            order.append(k)
            groups[k] = (rec.name, rec.ttl, [])
        owner, ttl, rdatas = groups[k]
        groups[k] = (owner, min(ttl, rec.ttl), rdatas)
        if rec.rdata not in rdatas:
            rdatas.append(rec.rdata)
    return [wire.make_rrset(groups[k][0], k[1], groups[k][1], groups[k][2], k[2]) for k in order]


def _failure_result(reason: Failure) -> Result | None:
    """A failure from any IResolver: None to go on to the next stage (what the stock
    ``ResolverChain`` traps), NXDOMAIN for ``AuthoritativeDomainError``, else SERVFAIL."""
    if failure_check(reason, dns_error.DomainError, defer.TimeoutError, NotImplementedError):
        return None
    if failure_check(reason, dns_error.AuthoritativeDomainError):
        return Result(rcode=wire.NXDOMAIN, aa=True, source="resolver", fixed=False)
    log.failure("a resolver in the chain failed", reason)
    return error(wire.SERVFAIL, "resolver")


class _BoundMethods(Mapping[int, Any]):
    """``ResolverBase.typeToMethod`` of one resolver, looked up on use: query type → its
    ``lookup*`` method, bound to the resolver."""

    __slots__ = ("_resolver",)

    def __init__(self, resolver: Any) -> None:
        self._resolver = resolver

    def __getitem__(self, qtype: int) -> Any:
        return getattr(self._resolver, common.typeToMethod[qtype])

    def __iter__(self) -> Iterator[int]:
        return iter(common.typeToMethod)

    def __len__(self) -> int:
        return len(common.typeToMethod)


class _TypeToMethod:
    """A class attribute standing in for the dictionary of bound methods that
    ``ResolverBase.__init__`` stores on each resolver: that dictionary is a reference cycle
    (the resolver holds methods that hold the resolver).  A resolver of one snapshot's chains
    (which hold the snapshot) must be freed by reference counting alone the moment the query
    handler lets go of it, because a reload freezes everything alive out of the collector's
    sight (``smartdns.background.freeze_after_build``) and a frozen cycle is never freed."""

    def __get__(self, resolver: Any, owner: Any = None) -> Any:
        return self if resolver is None else _BoundMethods(resolver)

    def __set__(self, resolver: Any, value: Any) -> None:
        raise AttributeError("typeToMethod is per class here: do not call ResolverBase.__init__")


class Acyclic:
    """Mixed in before a Twisted Names resolver class: ``typeToMethod`` without the cycle.
    Such classes set their own attributes instead of calling ``ResolverBase.__init__``."""

    typeToMethod = _TypeToMethod()


class WireResolver(Acyclic, common.ResolverBase):
    """A Twisted Names resolver whose answers come from ``resolve``: the IResolver methods
    convert its result, so the two can never disagree."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock              # no ResolverBase.__init__: see Acyclic

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Any:
        """A ``Result``, None (not mine: the next stage decides) or a Deferred of either."""
        raise NotImplementedError

    def _lookup(self, name: Any, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:  # noqa: A002 (Twisted API)
        try:
            qname = wire_name(name)
        except ValueError:
            return defer.fail(dns_error.DomainError(name))
        d = defer.maybeDeferred(self.resolve, qname, type, cls, API_SHAPE)
        return d.addCallback(to_twisted, name, self.clock.seconds())


class LineAuthority(WireResolver):
    """The local zones as the clients of one line see them (base plus that line's overlay), for
    one snapshot: RFC 1034 §4.3.2 in ``smartdns.authority``."""

    def __init__(self, clock: Any, snapshot: Snapshot, line: str | None) -> None:
        super().__init__(clock)
        self.snapshot = snapshot
        self.line = line
        self._authority = Authority()

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Result | None:
        """The local answer, or None for a name outside every local zone."""
        if qclass != wire.IN:
            return None
        return self._authority.lookup(self.snapshot, self.line, qname, qtype, shape.rd, shape.tcp)


class HostsFiles(Acyclic, hosts.Resolver):
    """The stock hosts(5) resolver, answering from files read into the snapshot (so they are
    reloaded, and checked, with everything else) instead of re-reading them per query."""

    def __init__(self, table: HostsTable, ttl: int = HOSTS_TTL_SECONDS) -> None:
        self.file = b""                 # what hosts.Resolver.__init__ sets, without its cycle (Acyclic)
        self.ttl = ttl
        self.table = table

    def _records(self, name: bytes, rtype: int, record: Any) -> tuple[Any, ...]:
        addresses = self.table.get(wire_name(name).lower(), {}).get(rtype, ())
        return tuple(dns.RRHeader(name, rtype, dns.IN, self.ttl, record(addr, self.ttl)) for addr in addresses)

    def _aRecords(self, name: bytes) -> tuple[Any, ...]:  # noqa: N802 (Twisted API)
        return self._records(name, dns.A, dns.Record_A)

    def _aaaaRecords(self, name: bytes) -> tuple[Any, ...]:  # noqa: N802 (Twisted API)
        return self._records(name, dns.AAAA, dns.Record_AAAA)

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Result | None:
        """What the stock resolver answers (A, AAAA, and ANY as A; not authoritative), as a result."""
        if qclass != wire.IN:
            return None
        rtype = wire.A if qtype == wire.ANY else qtype
        found = self.table.get(qname.lower())
        packed = found.get(rtype) if found is not None and rtype in (wire.A, wire.AAAA) else None
        if not packed:
            return None
        rrset = wire.make_rrset(qname, rtype, self.ttl, [ipaddress.ip_address(a).packed for a in packed])
        return Result(answer=[rrset], source="hosts")


class CacheStage(WireResolver):
    """Forwarded answers still fresh in the cache (a miss is ``DomainError``)."""

    def __init__(self, clock: Any, forward: ForwardResolver) -> None:
        super().__init__(clock)
        self.forward = forward

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Result | None:
        if shape.ecs_forward:
            return None                 # [ecs] forward: a subnet's answer is never cached (UpstreamStage)
        forward = self.forward
        qkey = qname.lower()
        packed = packed_key_of(qkey, qtype, qclass, shape.do, forward.forwarder.pool_for(qkey).index)
        if packed not in forward.cache:
            return None                 # the common case for local names: one dict probe, no key tuple
        entry = forward.cached(forward.key(qkey, qtype, qclass, shape.do), packed)
        if entry is None:
            return None
        return Result(rcode=entry.rcode, entry=entry, source="cache", fixed=False, cache_key=packed)

    def count_hits(self, packed: bytes, count: int) -> None:
        """``count`` answers the replay table served from the entry under ``packed``."""
        self.forward.cache.used(packed, count)

    def still_fresh(self, result: Result, now: float) -> bool:
        """Whether a result this stage gave may be served again as it is: its entry is still
        the cached one (counted as a hit) and no prefetch is due."""
        entry = result.entry
        assert entry is not None
        return self.forward.cache.touch(result.cache_key, entry) and now < self.forward.prefetch_at(entry)

    def replay_until(self, result: Result, now: float) -> float:
        """Until when the bytes of a response from this entry stay the same: its TTLs next count
        down (whole seconds since stored), and never past the prefetch point."""
        entry = result.entry
        assert entry is not None
        stored: float = entry.stored_at
        return min(stored + int(now - stored) + 1, self.forward.prefetch_at(entry))


class UpstreamStage(WireResolver):
    """The upstream pools: failover, TCP on truncation, DNS over TLS, conditional forwarding.
    Answers are cached (that is the only way into the cache); a name with no upstream to ask
    (``upstreams = []`` and no ``[[forward.zone]]`` for it) is ``DomainError``."""

    whole_answers = True        # its Deferred always fires with a Result, the upstream's whole answer

    def __init__(self, clock: Any, forward: ForwardResolver) -> None:
        super().__init__(clock)
        self.forward = forward

    @property
    def offers_recursion(self) -> bool:
        """Whether any name can be forwarded at all."""
        return any(pool.upstreams for pool in self.forward.forwarder.pools)

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Any:
        qkey = qname.lower()
        if not self.forward.forwarder.pool_for(qkey).upstreams:
            return None
        key = self.forward.key(qkey, qtype, qclass, shape.do)
        if shape.ecs_forward and shape.ecs is not None:
            d = self.forward.resolve_uncached(key, shape.ecs.option(0))
            return d.addCallbacks(_upstream_result, _upstream_failed, callbackArgs=(b"",))
        d = self.forward.resolve_for_client(key)
        return d.addCallbacks(_upstream_result, _upstream_failed, callbackArgs=(packed_key(key),))


def _upstream_result(entry: Any, cache_key: bytes) -> Result:
    return Result(rcode=entry.rcode, entry=entry, source="upstream", fixed=False, cache_key=cache_key,
                  upstream=entry.upstream)


def _upstream_failed(reason: Failure) -> Result:
    """No upstream answer at all (e.g. too many questions already waiting): SERVFAIL, not cached."""
    failure_trap(reason, UpstreamError)
    return Result(rcode=wire.SERVFAIL, source="upstream", fixed=False)


def ask(stage: Any, qname: bytes, qtype: int, qclass: int, shape: RequestShape, clock: Any) -> Any:
    """One stage's answer: through its ``resolve`` if it has one, else through ``query``."""
    fast = getattr(stage, "resolve", None)
    if fast is not None:
        return fast(qname, qtype, qclass, shape)
    try:
        d = stage.query(dns.Query(wire.to_text(qname).rstrip(".") or ".", qtype, qclass),
                        timeout=(RESOLVER_TIMEOUT_SECONDS,))
    except Exception:
        d = defer.fail()
    d.addTimeout(RESOLVER_TIMEOUT_SECONDS, clock)
    return d.addCallbacks(from_twisted, _failure_result, callbackArgs=("resolver",))


class LineChain(Acyclic, resolve.ResolverChain):
    """The stages for one line and one recursion right, walked in order.

    ``answer`` is what the server uses; ``query`` and the ``lookup*`` methods give the same
    answers through the Twisted Names API (with RD=1 and no EDNS).  Nothing here refers back
    to the chain (see Acyclic), so a replaced snapshot's chains, and the snapshot, are freed by
    reference counting."""

    def __init__(self, clock: Any, stages: Sequence[Any], recursive: bool, snapshot: Snapshot,
                 prohibited: bool = False) -> None:
        self.resolvers = list(stages)   # what ResolverChain.__init__ sets, without its cycle (Acyclic)
        self.clock = clock
        self.snapshot = snapshot
        # Recursion is offered, but not to this chain's clients: say so with EDE 18, as BIND
        # with allow-recursion does (a server offering none, like BIND's recursion no, does not).
        self.prohibited = prohibited
        self.stages = tuple(stages)
        self.recursive = recursive           # whether answers may continue through the upstreams
        # Whether "no stage answers" depends only on the snapshot (no resolver of your own here).
        self.fixed_misses = all(isinstance(s, (WireResolver, HostsFiles)) for s in stages)
        # The leading stages that have the fast method, as bound methods (one loop per query).
        fast = []
        for stage in stages:
            if not isinstance(stage, (WireResolver, HostsFiles)):
                break
            fast.append(stage.resolve)
        self._fast = tuple(fast)
        # Stages whose Deferred always fires with a Result that is the whole answer (the
        # upstream's): no "not mine" to check and nothing to continue, so no callback to add.
        self._whole = tuple(bool(getattr(stage, "whole_answers", False)) for stage in stages[:len(fast)])

    # -- the Twisted Names API ----------------------------------------------------------------

    def _lookup(self, name: Any, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:  # noqa: A002
        try:
            qname = wire_name(name)
        except ValueError:
            return defer.fail(dns_error.DomainError(name))
        d = defer.maybeDeferred(self.answer, qname, type, cls, API_SHAPE)
        return d.addCallback(lambda result: to_twisted(result, name, self.clock.seconds()))

    def lookupAllRecords(self, name: Any, timeout: Any = None) -> defer.Deferred[Any]:  # noqa: N802
        return self._lookup(name, dns.IN, dns.ALL_RECORDS, timeout)

    # -- the walk ---------------------------------------------------------------------------------

    def answer(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Any:
        """The first stage's answer for the question, continued through the chain when a CNAME
        leads out of local data: a ``Result``, None (no stage answers) or a Deferred of either
        (of a Result only, when ``fixed_misses``: our own stages never say "not mine" late)."""
        fast = self._fast
        result: Any = None
        for index, resolve_ in enumerate(fast):       # our own stages: one bound method each
            result = resolve_(qname, qtype, qclass, shape)
            if result is not None:
                if type(result) is not Result:         # a Deferred that may still say "not mine"
                    if self._whole[index]:
                        return result
                    result = result.addCallback(self._next_if_none, qname, qtype, qclass, shape, index + 1)
                break
        else:
            if len(fast) == len(self.stages):
                return None
            result = self._first(qname, qtype, qclass, shape, len(fast))
            if result is None:
                return None
        if not self.recursive:
            if not self.prohibited:
                return result
            if isinstance(result, defer.Deferred):
                return result.addCallback(self._prohibited, qtype)
            return self._prohibited(result, qtype)
        if not shape.rd:
            return result
        if isinstance(result, defer.Deferred):
            return result.addCallback(self._continue, qname, qtype, qclass, shape, None, None)
        answer = result.answer
        if result.entry is not None or result.rcode or not answer or answer[-1].rtype != wire.CNAME:
            return result                              # nothing to continue
        return self._continue(result, qname, qtype, qclass, shape, None, None)

    def _prohibited(self, result: Result | None, qtype: int) -> Result | None:
        """A client not allowed recursion whose answer ends in a CNAME that leaves the local
        zones: the CNAMEs, plus Extended DNS Error 18 (Prohibited, RFC 8914 §4.19) as BIND gives."""
        if result is not None and not result.referral:
            target = dangling_target(result.rcode, result.answer, qtype)
            if target is not None and self.snapshot.find_zone(target.lower()) is None:
                result.ede = (EDE_PROHIBITED, "")
        return result

    def _first(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape, start: int) -> Any:
        stages = self.stages
        for index in range(start, len(stages)):
            found = ask(stages[index], qname, qtype, qclass, shape, self.clock)
            if found is None:
                continue
            if isinstance(found, defer.Deferred):
                return found.addCallback(self._next_if_none, qname, qtype, qclass, shape, index + 1)
            return found
        return None

    def _next_if_none(self, found: Result | None, qname: bytes, qtype: int, qclass: int,
                      shape: RequestShape, start: int) -> Any:
        return found if found is not None else self._first(qname, qtype, qclass, shape, start)

    def _continue(self, result: Result | None, qname: bytes, qtype: int, qclass: int, shape: RequestShape,
                  prefix: Result | None, seen: set[bytes] | None) -> Any:
        """Join ``result`` (the answer for ``qname``) to what came before it, and go on if it
        ends in a CNAME to a name nobody has answered yet."""
        if result is None:                    # nobody answers the target: the chain ends with the CNAME
            return prefix
        if prefix is None and result.entry is not None:
            return result                     # a forwarded name: the upstream's answer is the whole answer
        if prefix is not None and result.rcode == wire.SERVFAIL and result.source in FORWARDED:
            # The forwarded part failed: SERVFAIL with no records and no AA, as BIND answers.
            return Result(rcode=wire.SERVFAIL, source=result.source, fixed=False)
        tail = result.sections_at(self.clock.seconds())
        whole = result if prefix is None else join(prefix, result, tail)
        target = None if result.referral else dangling_target(result.rcode, tail[0], qtype)
        if target is None:
            return whole
        if seen is None:
            seen = {qname.lower()}
        seen.update(r.name.lower() for r in tail[0])
        tkey = target.lower()
        if tkey in seen or sum(r.rtype == wire.CNAME for r in whole.answer) > MAX_CNAMES:
            whole.rcode = wire.SERVFAIL       # a loop, or a chain too long to follow
            whole.ede = (EDE_OTHER, "max. restarts reached")
            return whole
        seen.add(tkey)
        found = self._first(target, qtype, qclass, shape, 0)
        if isinstance(found, defer.Deferred):
            return found.addCallback(self._continue, target, qtype, qclass, shape, whole, seen)
        return self._continue(found, target, qtype, qclass, shape, whole, seen)


def dangling_target(rcode: int, answer: Sequence[wire.RRset], qtype: int) -> bytes | None:
    """The name a NOERROR answer's last CNAME points at, when nothing after it answers it."""
    if rcode != wire.NOERROR or not answer or qtype in (wire.CNAME, wire.ANY):
        return None
    last = answer[-1]
    if last.rtype != wire.CNAME:
        return None
    return b"".join(last.rdatas[0])


def join(prefix: Result, tail: Result, sections: tuple[Sequence[wire.RRset], ...]) -> Result:
    """The answer for a chain: ``prefix``'s CNAMEs, then ``tail``'s records (``sections``: a
    cached part with its TTLs counted down).  AA and the additional addresses come from where
    the chain started, the rcode and authority section from where it ended, as BIND gives them."""
    answer, authority, additional = sections
    return Result(rcode=tail.rcode, aa=prefix.aa, answer=prefix.answer + list(answer),
                  authority=list(authority), additional=prefix.additional + list(additional),
                  ede=tail.ede, source=tail.source, fixed=prefix.fixed and tail.fixed)


@dataclass(frozen=True)
class ChainSet:
    """The chains of one snapshot, by (line, client allowed recursion)."""

    chains: Mapping[tuple[str | None, bool], LineChain]
    cache: CacheStage | None

    def for_client(self, line: str | None, recursion: bool) -> LineChain:
        """The chain a client of ``line`` with that recursion right is answered by."""
        return self.chains[(line, recursion)]


def compose(clock: Any, snapshot: Snapshot, cache: CacheStage, upstream: UpstreamStage,
            extra: Sequence[Any] = ()) -> ChainSet:
    """The chains for a snapshot, in the one order smartdns uses (see the module docstring).

    Clients not allowed recursion, and every client when no name can be forwarded, get the
    local stages only (so no RA, and REFUSED for names no local stage answers)."""
    hosts_stage = [HostsFiles(snapshot.hosts)] if snapshot.hosts else []
    forwarding = upstream.offers_recursion
    chains: dict[tuple[str | None, bool], LineChain] = {}
    for line in (None, *snapshot.line_names):
        local = [LineAuthority(clock, snapshot, line), *hosts_stage, *extra]
        chains[(line, False)] = LineChain(clock, local, False, snapshot, prohibited=forwarding)
        chains[(line, True)] = (LineChain(clock, [cache, *local, upstream], True, snapshot) if forwarding
                                else chains[(line, False)])
    return ChainSet(chains, cache if forwarding else None)


Compose = Callable[[Snapshot], ChainSet]
