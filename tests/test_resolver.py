"""Unit tests for smartdns.resolver: what forwarded answers are cached, for how long, and when
upstream is asked.

The forwarder is a fake whose ``query()`` returns Deferreds the test fires; upstream replies are
built with dnspython (which compresses names as real servers do); time is a ``task.Clock``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
from twisted.internet import defer, task
from twisted.trial import unittest

from smartdns import wire
from smartdns.cache import AnswerCache, CacheKey, Entry
from smartdns.config import CacheConfig
from smartdns.errors import UpstreamError
from smartdns.resolver import ForwardResolver, sanitize
from tests.unit_support import decode, name, texts


def reply_bytes(qname: str, qtype: str, answer: list[str] = (), authority: list[str] = (),  # type: ignore[assignment]
                additional: list[str] = (), rcode: int = wire.NOERROR) -> bytes:  # type: ignore[assignment]
    """An upstream response built by dnspython; records as ``owner ttl TYPE rdata`` strings."""
    query = dns.message.make_query(qname, qtype)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    for section, records in ((response.answer, answer), (response.authority, authority),
                             (response.additional, additional)):
        for text in records:
            owner, ttl, rdtype, rdata = text.split(" ", 3)
            rrset = dns.rrset.from_text(owner, int(ttl), "IN", rdtype, rdata)
            existing = next((r for r in section if r.name == rrset.name and r.rdtype == rrset.rdtype), None)
            if existing is not None:
                existing.update(rrset)
            else:
                section.append(rrset)
    return response.to_wire()


def upstream_reply(data: bytes, qname: str, qtype: int) -> Any:
    """What the real forwarder hands the resolver for ``data``: a ``wire.Reply`` where the codec
    has one (validated against the question), else a parsed ``wire.Message``."""
    check = getattr(wire, "check_reply", None)
    if check is None:
        return wire.parse_message(data)
    reply = check(data, (name(qname), qtype, wire.IN))
    assert reply is not None, "the test's reply does not match its question"
    return reply


def message_of(data: bytes) -> wire.Message:
    """Our parse of a reply (for calling sanitize directly)."""
    return wire.parse_message(data)


@dataclass
class FakePool:
    """Just the part of forwarder.Pool the resolver reads."""

    index: int


@dataclass
class Call:
    """One query the resolver sent upstream."""

    qname: bytes
    qtype: int
    qclass: int
    do: bool
    pool: FakePool
    deferred: defer.Deferred[Any]


class FakeForwarder:
    """A forwarder whose answers the test supplies; names under corp.example use pool 1."""

    def __init__(self) -> None:
        self.pools = [FakePool(0), FakePool(1)]
        self.calls: list[Call] = []

    def pool_for(self, qkey: bytes) -> FakePool:
        """The pool for a name, as Forwarder.pool_for."""
        return self.pools[1] if wire.is_subdomain(qkey, name("corp.example")) else self.pools[0]

    def query(self, qname: bytes, qtype: int, qclass: int = wire.IN, *, do: bool = False,
              cd: bool = False, pool: FakePool | None = None) -> defer.Deferred[Any]:
        """Record the query; the test fires the returned Deferred."""
        d: defer.Deferred[Any] = defer.Deferred()
        assert pool is not None
        self.calls.append(Call(qname, qtype, qclass, do, pool, d))
        return d


QTYPES = {"A": wire.A, "AAAA": wire.AAAA, "MX": wire.MX, "TXT": wire.TXT, "CNAME": wire.CNAME}

SOA_COM = "example.com. {ttl} SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 {minimum}"


class ResolverCase(unittest.SynchronousTestCase):
    """A resolver over a fake forwarder and a clock."""

    def make(self, **settings: Any) -> ForwardResolver:
        """A resolver with these [cache] settings (prefetch off unless asked for)."""
        settings.setdefault("prefetch", False)
        self.clock = task.Clock()
        self.clock.advance(10_000)
        self.config = CacheConfig(**settings)
        self.cache = AnswerCache(self.clock, self.config)
        self.forwarder = FakeForwarder()
        self.resolver = ForwardResolver(self.clock, self.cache, self.forwarder, self.config)  # type: ignore[arg-type]
        return self.resolver

    def key(self, qname: str, qtype: str = "A", do: bool = False) -> CacheKey:
        """The resolver's key for a question."""
        return self.resolver.key(name(qname), QTYPES[qtype], wire.IN, do)

    def answer(self, call_index: int, qname: str, qtype: str, **records: Any) -> None:
        """Fire forwarder call ``call_index`` with a reply built from ``records``."""
        data = reply_bytes(qname, qtype, **records)
        self.forwarder.calls[call_index].deferred.callback(upstream_reply(data, qname, QTYPES[qtype]))

    def fail(self, call_index: int, error: Exception | None = None) -> None:
        """Fail forwarder call ``call_index`` (every upstream failed)."""
        self.forwarder.calls[call_index].deferred.errback(error or UpstreamError("timed out"))

    def fetch(self, qname: str, qtype: str = "A", **records: Any) -> Entry:
        """Resolve a miss and answer it at once; the entry handed back."""
        d = self.resolver.resolve(self.key(qname, qtype))
        self.answer(len(self.forwarder.calls) - 1, qname, qtype, **records)
        return self.successResultOf(d)

    def lifetime(self, qname: str, qtype: str = "A") -> float:
        """How long the cached entry for a question stays fresh."""
        entry = self.cache.peek(self.key(qname, qtype))
        assert entry is not None, f"{qname} {qtype} not cached"
        return entry.expires_at - entry.stored_at


class PositiveTests(ResolverCase):
    """Positive answers."""

    def test_cached_for_min_ttl(self) -> None:
        """A positive answer is cached for its smallest answer TTL, then is a miss."""
        self.make()
        entry = self.fetch("www.example.com", "A", answer=["www.example.com. 600 CNAME host.example.com.",
                                                           "host.example.com. 120 A 192.0.2.1"])
        self.assertEqual(entry.rcode, wire.NOERROR)
        self.assertEqual(self.lifetime("www.example.com"), 120)
        self.clock.advance(119)
        self.assertIsNotNone(self.resolver.cached(self.key("www.example.com")))
        self.clock.advance(1)
        self.assertIsNone(self.resolver.cached(self.key("www.example.com")))

    def test_answer_served_from_cache(self) -> None:
        """The cached entry holds the upstream's records, decoded by dnspython."""
        self.make()
        self.fetch("www.example.com", "A", answer=["www.example.com. 300 A 192.0.2.1",
                                                   "www.example.com. 300 A 192.0.2.2"])
        entry = self.resolver.cached(self.key("www.example.com"))
        assert entry is not None
        msg = decode(entry.wire)
        self.assertEqual(texts(msg.answer), ["www.example.com. 300 A 192.0.2.1", "www.example.com. 300 A 192.0.2.2"])
        self.assertEqual(len(self.forwarder.calls), 1)

    def test_cached_ttls_count_down(self) -> None:
        """A cached upstream answer (names compressed by the upstream) counts its TTLs down."""
        self.make()
        self.fetch("www.example.com", "A", answer=["www.example.com. 600 CNAME host.example.com.",
                                                   "host.example.com. 120 A 192.0.2.1",
                                                   "host.example.com. 120 A 192.0.2.2"])
        self.clock.advance(50)
        entry = self.resolver.cached(self.key("www.example.com"))
        assert entry is not None
        msg = decode(bytes(entry.patched(self.clock.seconds())))
        self.assertEqual(texts(msg.answer), ["host.example.com. 70 A 192.0.2.1", "host.example.com. 70 A 192.0.2.2",
                                             "www.example.com. 550 CNAME host.example.com."])

    def test_query_sent_with_key_parts(self) -> None:
        """The forwarder is asked for the key's name, type, class, DO bit and pool."""
        self.make()
        self.resolver.resolve(self.key("www.corp.example", "MX", do=True))
        call = self.forwarder.calls[0]
        self.assertEqual((call.qname, call.qtype, call.qclass, call.do, call.pool.index),
                         (name("www.corp.example"), wire.MX, wire.IN, True, 1))
        self.assertEqual(self.key("www.example.com")[4], 0)

    def test_ttls_clamped(self) -> None:
        """Record TTLs and the lifetime are clamped into [min_ttl, max_ttl]."""
        self.make(min_ttl=60, max_ttl=600)
        entry = self.fetch("www.example.com", "A", answer=["www.example.com. 5 A 192.0.2.1"])
        self.assertEqual(self.lifetime("www.example.com"), 60)
        self.assertEqual([r.ttl for r in decode(entry.wire).answer], [60])
        entry = self.fetch("mail.example.com", "A", answer=["mail.example.com. 86400 A 192.0.2.2"])
        self.assertEqual(self.lifetime("mail.example.com"), 600)
        self.assertEqual([r.ttl for r in decode(entry.wire).answer], [600])

    def test_zero_ttl_not_cached(self) -> None:
        """An answer with TTL 0 is passed on but not cached."""
        self.make()
        entry = self.fetch("www.example.com", "A", answer=["www.example.com. 0 A 192.0.2.1"])
        self.assertEqual(entry.rcode, wire.NOERROR)
        self.assertEqual(len(self.cache), 0)


class NegativeTests(ResolverCase):
    """Negative answers (RFC 2308 §5)."""

    def test_nxdomain_cached_for_minimum(self) -> None:
        """NXDOMAIN is cached for min(SOA TTL, MINIMUM, negative_max_ttl): here MINIMUM 60."""
        self.make()
        entry = self.fetch("nope.example.com", "A", rcode=wire.NXDOMAIN,
                           authority=[SOA_COM.format(ttl=3600, minimum=60)])
        self.assertEqual(entry.rcode, wire.NXDOMAIN)
        self.assertEqual(self.lifetime("nope.example.com"), 60)
        self.assertEqual([r.ttl for r in decode(entry.wire).authority], [60])

    def test_nxdomain_soa_ttl_lower(self) -> None:
        """When the SOA's own TTL is lowest, it decides."""
        self.make()
        self.fetch("nope.example.com", "A", rcode=wire.NXDOMAIN, authority=[SOA_COM.format(ttl=30, minimum=600)])
        self.assertEqual(self.lifetime("nope.example.com"), 30)

    def test_negative_max_ttl(self) -> None:
        """negative_max_ttl caps negative caching."""
        self.make(negative_max_ttl=100)
        self.fetch("nope.example.com", "A", rcode=wire.NXDOMAIN, authority=[SOA_COM.format(ttl=3600, minimum=3600)])
        self.assertEqual(self.lifetime("nope.example.com"), 100)

    def test_nodata_cached_for_minimum(self) -> None:
        """NODATA (NOERROR, no answer, SOA) is cached the same way."""
        self.make()
        entry = self.fetch("www.example.com", "AAAA", authority=[SOA_COM.format(ttl=3600, minimum=90)])
        self.assertEqual(entry.rcode, wire.NOERROR)
        self.assertEqual(self.lifetime("www.example.com", "AAAA"), 90)
        self.clock.advance(90)
        self.assertIsNone(self.resolver.cached(self.key("www.example.com", "AAAA")))

    def test_nodata_after_cname_is_negative(self) -> None:
        """A CNAME whose target has no data of the type (NOERROR, CNAME, SOA) is a negative answer:
        cached for the negative TTL, with the SOA kept for the client."""
        self.make()
        entry = self.fetch("www.example.com", "AAAA", answer=["www.example.com. 3600 CNAME host.example.com."],
                           authority=[SOA_COM.format(ttl=3600, minimum=60)])
        self.assertEqual(self.lifetime("www.example.com", "AAAA"), 60)
        msg = decode(entry.wire)
        self.assertEqual(texts(msg.answer), ["www.example.com. 3600 CNAME host.example.com."])
        self.assertEqual(len(msg.authority), 1)

    def test_negative_without_soa_not_cached(self) -> None:
        """NXDOMAIN without an SOA is passed on but not cached; the next ask goes upstream."""
        self.make()
        entry = self.fetch("nope.example.com", "A", rcode=wire.NXDOMAIN)
        self.assertEqual(entry.rcode, wire.NXDOMAIN)
        self.assertEqual(len(self.cache), 0)
        self.resolver.resolve(self.key("nope.example.com"))
        self.assertEqual(len(self.forwarder.calls), 2)

    def test_foreign_soa_not_cached(self) -> None:
        """An NXDOMAIN whose SOA is for an unrelated zone counts as having no SOA: not cached."""
        self.make()
        entry = self.fetch("www.example.com", "A", rcode=wire.NXDOMAIN,
                           authority=["bank.example. 3600 SOA ns.bank.example. h.bank.example. 1 2 3 4 3600"])
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(decode(entry.wire).authority, [])


class SanitizeTests(ResolverCase):
    """Bailiwick filtering (RFC 5452 §6)."""

    POISON = dict(
        answer=["www.example.com. 300 A 192.0.2.1", "bank.example. 300 A 203.0.113.66"],
        authority=["example.com. 300 NS ns1.example.com.", "bank.example. 300 NS ns.evil.test."],
        additional=["ns1.example.com. 300 A 192.0.2.53", "bank.example. 300 A 203.0.113.67",
                    "ns.evil.test. 300 A 203.0.113.68"],
    )

    def test_sanitize_drops_out_of_bailiwick(self) -> None:
        """Records about bank.example in an answer for www.example.com are dropped from every section;
        in-bailiwick NS and the address of the NS target are kept."""
        self.make()
        message = message_of(reply_bytes("www.example.com", "A", **self.POISON))
        answer, authority, additional = sanitize(message, name("www.example.com"))
        self.assertEqual([(wire.to_text(r.name), r.rtype) for r in answer], [("www.example.com.", wire.A)])
        self.assertEqual([(wire.to_text(r.name), r.rtype) for r in authority], [("example.com.", wire.NS)])
        self.assertEqual([(wire.to_text(r.name), r.rtype) for r in additional], [("ns1.example.com.", wire.A)])

    def test_poison_not_cached(self) -> None:
        """What is cached and served carries no bank.example record."""
        self.make()
        entry = self.fetch("www.example.com", "A", **self.POISON)
        self.assertNotIn(b"\x04bank", entry.wire)
        cached = self.resolver.cached(self.key("www.example.com"))
        assert cached is not None
        msg = decode(cached.wire)
        self.assertEqual(texts(msg.answer), ["www.example.com. 300 A 192.0.2.1"])
        for rrset in msg.authority + msg.additional:
            self.assertNotIn("bank", rrset.name.to_text())
            self.assertNotIn("evil", rrset.name.to_text())

    def test_cname_chain_kept(self) -> None:
        """Records along the CNAME chain are kept, even in another domain; strays are not."""
        self.make()
        message = message_of(reply_bytes("www.example.com", "A", answer=[
            "www.example.com. 300 CNAME cdn.example.net.",
            "cdn.example.net. 300 CNAME edge.cdn.test.",
            "edge.cdn.test. 60 A 198.51.100.7",
            "other.example.com. 300 A 192.0.2.99"]))
        answer, _, _ = sanitize(message, name("www.example.com"))
        self.assertEqual([wire.to_text(r.name) for r in answer],
                         ["www.example.com.", "cdn.example.net.", "edge.cdn.test."])

    def test_additional_only_for_targets(self) -> None:
        """Additional addresses are kept only for names the kept records point at."""
        self.make()
        message = message_of(reply_bytes("example.com", "MX", answer=["example.com. 300 MX 10 mx.example.com."],
                                         additional=["mx.example.com. 300 A 192.0.2.25",
                                                     "www.example.com. 300 A 192.0.2.80",
                                                     "mx.example.com. 300 TXT \"x\""]))
        _, _, additional = sanitize(message, name("example.com"))
        self.assertEqual([(wire.to_text(r.name), r.rtype) for r in additional], [("mx.example.com.", wire.A)])

    def test_foreign_authority_dropped(self) -> None:
        """Authority NS of a zone not enclosing the question is dropped; of an enclosing one kept."""
        self.make()
        message = message_of(reply_bytes("www.example.com", "A", answer=["www.example.com. 300 A 192.0.2.1"],
                                         authority=["com. 300 NS a.gtld.test.", "example.org. 300 NS ns.example.org."]))
        _, authority, _ = sanitize(message, name("www.example.com"))
        self.assertEqual([wire.to_text(r.name) for r in authority], ["com."])


class InflightTests(ResolverCase):
    """Concurrent identical misses share one upstream query."""

    def test_one_upstream_query(self) -> None:
        """Three callers asking the same question while it is in flight cause one forwarder call,
        and each gets the answer."""
        self.make()
        key = self.key("www.example.com")
        waiters = [self.resolver.resolve(key) for _ in range(3)]
        self.assertEqual(len(self.forwarder.calls), 1)
        for d in waiters:
            self.assertNoResult(d)
        self.answer(0, "www.example.com", "A", answer=["www.example.com. 300 A 192.0.2.1"])
        entries = [self.successResultOf(d) for d in waiters]
        self.assertEqual({e.wire for e in entries}, {entries[0].wire})

    def test_callers_independent(self) -> None:
        """One caller's callbacks do not change what another caller receives."""
        self.make()
        key = self.key("www.example.com")
        first = self.resolver.resolve(key)
        second = self.resolver.resolve(key)
        first.addCallback(lambda entry: "changed")
        self.answer(0, "www.example.com", "A", answer=["www.example.com. 300 A 192.0.2.1"])
        self.assertEqual(self.successResultOf(first), "changed")
        self.assertIsInstance(self.successResultOf(second), Entry)

    def test_different_questions_not_shared(self) -> None:
        """Different types or DO bits are different upstream queries."""
        self.make()
        self.resolver.resolve(self.key("www.example.com"))
        self.resolver.resolve(self.key("www.example.com", "AAAA"))
        self.resolver.resolve(self.key("www.example.com", do=True))
        self.assertEqual(len(self.forwarder.calls), 3)

    def test_next_miss_after_completion_asks_again(self) -> None:
        """Once the shared query has finished, a later uncached miss is a new upstream query."""
        self.make()
        key = self.key("nope.example.com")
        self.resolver.resolve(key)
        self.answer(0, "nope.example.com", "A", rcode=wire.NXDOMAIN)     # not cacheable
        self.resolver.resolve(key)
        self.assertEqual(len(self.forwarder.calls), 2)

    def test_unexpected_error_reaches_every_caller(self) -> None:
        """A failure that is not an upstream failure is passed to every waiter, and the next ask
        starts afresh."""
        self.make()
        key = self.key("www.example.com")
        waiters = [self.resolver.resolve(key) for _ in range(2)]
        self.fail(0, ZeroDivisionError())
        for d in waiters:
            self.failureResultOf(d, ZeroDivisionError)
        self.resolver.resolve(key)
        self.assertEqual(len(self.forwarder.calls), 2)


class FailureTests(ResolverCase):
    """Upstream failure: SERVFAIL caching (RFC 9520) and serve-stale (RFC 8767)."""

    def test_servfail_cached(self) -> None:
        """When every upstream fails, SERVFAIL is returned and cached for servfail_ttl."""
        self.make(servfail_ttl=5)
        key = self.key("www.example.com")
        d = self.resolver.resolve(key)
        self.fail(0)
        self.assertEqual(self.successResultOf(d).rcode, wire.SERVFAIL)
        self.clock.advance(4)
        cached = self.resolver.cached(key)
        assert cached is not None
        self.assertEqual(cached.rcode, wire.SERVFAIL)
        self.clock.advance(1)
        self.assertIsNone(self.resolver.cached(key))

    def test_servfail_not_cached_when_disabled(self) -> None:
        """servfail_ttl = 0 caches nothing."""
        self.make(servfail_ttl=0)
        d = self.resolver.resolve(self.key("www.example.com"))
        self.fail(0)
        self.assertEqual(self.successResultOf(d).rcode, wire.SERVFAIL)
        self.assertEqual(len(self.cache), 0)

    def test_serve_stale_within_window(self) -> None:
        """An expired entry inside the serve-stale window is returned when upstream fails."""
        self.make(serve_stale=100)
        old = self.fetch("www.example.com", "A", answer=["www.example.com. 60 A 192.0.2.1"])
        self.clock.advance(90)
        key = self.key("www.example.com")
        self.assertIsNone(self.resolver.cached(key))
        d = self.resolver.resolve(key)
        self.fail(1)
        stale = self.successResultOf(d)
        self.assertEqual(stale.rcode, wire.NOERROR)
        self.assertEqual(stale.wire, old.wire)

    def test_no_stale_after_window(self) -> None:
        """Past the serve-stale window, a failure is SERVFAIL."""
        self.make(serve_stale=100)
        self.fetch("www.example.com", "A", answer=["www.example.com. 60 A 192.0.2.1"])
        self.clock.advance(161)
        d = self.resolver.resolve(self.key("www.example.com"))
        self.fail(1)
        self.assertEqual(self.successResultOf(d).rcode, wire.SERVFAIL)

    def test_no_stale_when_disabled(self) -> None:
        """With serve_stale = 0 an expired entry is never served."""
        self.make(serve_stale=0)
        self.fetch("www.example.com", "A", answer=["www.example.com. 60 A 192.0.2.1"])
        self.clock.advance(61)
        d = self.resolver.resolve(self.key("www.example.com"))
        self.fail(1)
        self.assertEqual(self.successResultOf(d).rcode, wire.SERVFAIL)


class PrefetchTests(ResolverCase):
    """Refreshing popular entries before they expire."""

    def test_prefetch_in_last_tenth(self) -> None:
        """A hit in the last 10% of the TTL starts one background query; earlier hits do not;
        the refreshed answer replaces the entry."""
        self.make(prefetch=True)
        self.fetch("www.example.com", "A", answer=["www.example.com. 100 A 192.0.2.1"])
        key = self.key("www.example.com")
        self.clock.advance(89)
        self.assertIsNotNone(self.resolver.cached(key))
        self.assertEqual(len(self.forwarder.calls), 1)
        self.clock.advance(2)
        self.assertIsNotNone(self.resolver.cached(key))
        self.assertIsNotNone(self.resolver.cached(key))
        self.assertEqual(len(self.forwarder.calls), 2)
        self.answer(1, "www.example.com", "A", answer=["www.example.com. 100 A 192.0.2.2"])
        entry = self.cache.peek(key)
        assert entry is not None
        self.assertEqual(entry.stored_at, self.clock.seconds())
        self.assertEqual(texts(decode(entry.wire).answer), ["www.example.com. 100 A 192.0.2.2"])

    def test_no_prefetch_when_off(self) -> None:
        """prefetch = false never refreshes early."""
        self.make(prefetch=False)
        self.fetch("www.example.com", "A", answer=["www.example.com. 100 A 192.0.2.1"])
        self.clock.advance(95)
        self.resolver.cached(self.key("www.example.com"))
        self.assertEqual(len(self.forwarder.calls), 1)

    def test_short_ttls_not_prefetched(self) -> None:
        """Entries shorter than 10 seconds are not prefetched."""
        self.make(prefetch=True)
        self.fetch("www.example.com", "A", answer=["www.example.com. 5 A 192.0.2.1"])
        self.clock.advance(4.8)
        self.resolver.cached(self.key("www.example.com"))
        self.assertEqual(len(self.forwarder.calls), 1)

    def test_failed_prefetch_keeps_entry(self) -> None:
        """A prefetch that fails leaves the still-fresh entry in place (no SERVFAIL over it)."""
        self.make(prefetch=True)
        first = self.fetch("www.example.com", "A", answer=["www.example.com. 100 A 192.0.2.1"])
        key = self.key("www.example.com")
        self.clock.advance(95)
        self.resolver.cached(key)
        self.fail(1)
        entry = self.cache.peek(key)
        assert entry is not None
        self.assertEqual(entry.wire, first.wire)
        cached = self.resolver.cached(key)
        assert cached is not None
        self.assertEqual(cached.rcode, wire.NOERROR)


class FailureLogTests(ResolverCase):
    """The log line of a failed forward names the class and type as dig does."""

    def failed_line(self, qtype: int, qclass: int = wire.IN) -> str:
        from twisted.logger import capturedLogs, formatEvent

        self.make()
        with capturedLogs() as events:
            d = self.resolver.resolve(self.resolver.key(name("www.example.com"), qtype, qclass, False))
            self.fail(0)
        self.successResultOf(d)
        return "\n".join(formatEvent(e) for e in events if "forwarding" in e.get("log_format", ""))

    def test_known_type(self) -> None:
        """Type 28 is AAAA, class 1 is IN."""
        self.assertEqual(self.failed_line(28), "forwarding www.example.com. IN AAAA failed: timed out")

    def test_unknown_type_and_class(self) -> None:
        """A type without a mnemonic is TYPE12289, a class without one CLASS7 (RFC 3597 names)."""
        self.assertEqual(self.failed_line(12289, 7), "forwarding www.example.com. CLASS7 TYPE12289 failed: timed out")
