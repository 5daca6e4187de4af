"""Unit tests for smartdns.cache: TTL countdown, lazy expiry, LRU bound, serve-stale, flushes.

Time comes from a ``task.Clock``; stored messages are decoded with dnspython.
"""
from __future__ import annotations

import struct

from twisted.internet import task
from twisted.trial import unittest

from smartdns import wire
from smartdns.cache import AnswerCache, CacheKey, Entry, make_entry, make_entry_from_wire
from smartdns.config import CacheConfig
from tests.unit_support import decode, ipv4, name, rrset_texts, soa_rdata, texts


def question(qname: str, qtype: int = wire.A) -> bytes:
    """The question bytes stored with an entry."""
    return name(qname) + struct.pack("!HH", qtype, wire.IN)


def key(qname: str, qtype: int = wire.A, do: bool = False, pool: int = 0) -> CacheKey:
    """A cache key for a name."""
    return (name(qname), qtype, wire.IN, do, pool)


def positive(qname: str, now: float, lifetime: int = 300, serve_stale: int = 0,
             ttls: tuple[int, int] = (300, 60)) -> Entry:
    """An entry with an A answer (first TTL) and an NS authority RRset (second TTL)."""
    a = wire.make_rrset(name(qname), wire.A, ttls[0], [ipv4("192.0.2.1"), ipv4("192.0.2.2")])
    ns = wire.make_rrset(name("example.com"), wire.NS, ttls[1], [name("ns.example.com")])
    return make_entry(wire.NOERROR, ((a,), (ns,), ()), question(qname), lifetime, now, serve_stale)


class CacheCase(unittest.SynchronousTestCase):
    """A cache on a fake clock."""

    def make(self, **settings: int) -> AnswerCache:
        """A cache with these [cache] settings on ``self.clock``."""
        self.clock = task.Clock()
        self.clock.advance(1000)
        return AnswerCache(self.clock, CacheConfig(**settings))  # type: ignore[arg-type]


class ExpiryTests(CacheCase):
    """Freshness, lazy expiry and the serve-stale window."""

    def test_fresh_hit(self) -> None:
        """An entry is returned until its lifetime has passed, and counts as a hit."""
        cache = self.make()
        entry = positive("www.example.com", self.clock.seconds())
        cache.put(key("www.example.com"), entry)
        self.clock.advance(299)
        found = cache.get(key("www.example.com"))
        assert found is not None
        self.assertEqual(found.wire, entry.wire)
        self.assertEqual((cache.hits, cache.misses), (1, 0))

    def test_expired_is_miss(self) -> None:
        """An expired entry is a miss, and (with no stale window) is dropped."""
        cache = self.make()
        cache.put(key("www.example.com"), positive("www.example.com", self.clock.seconds()))
        self.clock.advance(300)
        self.assertIsNone(cache.get(key("www.example.com")))
        self.assertEqual((cache.hits, cache.misses), (0, 1))
        self.assertEqual(len(cache), 0)

    def test_unknown_key_is_miss(self) -> None:
        """A key never stored is a miss."""
        cache = self.make()
        self.assertIsNone(cache.get(key("nowhere.example.com")))
        self.assertEqual(cache.misses, 1)

    def test_key_parts_distinguish(self) -> None:
        """Type, DO bit and upstream pool are part of the key."""
        cache = self.make()
        cache.put(key("www.example.com"), positive("www.example.com", self.clock.seconds()))
        self.assertIsNone(cache.get(key("www.example.com", qtype=wire.AAAA)))
        self.assertIsNone(cache.get(key("www.example.com", do=True)))
        self.assertIsNone(cache.get(key("www.example.com", pool=1)))
        self.assertIsNotNone(cache.get(key("www.example.com")))

    def test_stale_window(self) -> None:
        """Within serve_stale seconds after expiry, get misses but get_stale returns the entry;
        before expiry and after the window, get_stale returns nothing."""
        cache = self.make(serve_stale=100)
        cache.put(key("www.example.com"), positive("www.example.com", self.clock.seconds(), serve_stale=100))
        self.assertIsNone(cache.get_stale(key("www.example.com")))
        self.clock.advance(350)
        self.assertIsNone(cache.get(key("www.example.com")))
        self.assertEqual(len(cache), 1)
        self.assertIsNotNone(cache.get_stale(key("www.example.com")))
        self.clock.advance(50)
        self.assertIsNone(cache.get_stale(key("www.example.com")))
        self.assertIsNone(cache.get(key("www.example.com")))
        self.assertEqual(len(cache), 0)

    def test_remaining(self) -> None:
        """remaining() counts whole seconds of freshness down to zero."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        self.assertEqual(entry.remaining(now), 300)
        self.assertEqual(entry.remaining(now + 299.5), 0)
        self.assertEqual(entry.remaining(now + 100), 200)
        self.assertEqual(entry.remaining(now + 1000), 0)


class CountdownTests(CacheCase):
    """TTLs counted down from the time of storage."""

    def test_patched_counts_down(self) -> None:
        """patched() rewrites every TTL to its original minus the seconds elapsed, never below 0."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        msg = decode(bytes(entry.patched(now + 100)))
        self.assertEqual([r.ttl for r in msg.answer], [200])
        self.assertEqual([r.ttl for r in msg.authority], [0])
        self.assertEqual(len(msg.answer[0]), 2)

    def test_patched_at_store_time(self) -> None:
        """With no time elapsed, patched() is the stored message unchanged."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        self.assertEqual(bytes(entry.patched(now)), entry.wire)

    def test_patched_partial_seconds(self) -> None:
        """Fractions of a second do not count down a TTL."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        self.assertEqual([r.ttl for r in decode(bytes(entry.patched(now + 9.9))).answer], [291])

    def test_patched_stale(self) -> None:
        """Served stale, every TTL is the stale TTL."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        msg = decode(bytes(entry.patched(now + 1000, stale_ttl=30)))
        self.assertEqual([r.ttl for r in msg.answer + msg.authority], [30, 30])

    def test_patched_does_not_change_entry(self) -> None:
        """Patching works on a copy: the entry keeps its original TTLs."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        entry.patched(now + 100)
        self.assertEqual([r.ttl for r in decode(entry.wire).answer], [300])

    def test_sections_at(self) -> None:
        """sections_at() gives the RRsets with counted-down TTLs (floor 0) or the stale TTL."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now)
        answer, authority, additional = entry.sections_at(now + 100)
        self.assertEqual(rrset_texts(answer), ["www.example.com. 200 A 192.0.2.1", "www.example.com. 200 A 192.0.2.2"])
        self.assertEqual(rrset_texts(authority), ["example.com. 0 NS ns.example.com."])
        self.assertEqual(additional, ())
        answer, authority, _ = entry.sections_at(now + 100, stale_ttl=30)
        self.assertEqual({r.ttl for r in answer + authority}, {30})

    def test_stored_form(self) -> None:
        """The stored message has ID 0, QR, the rcode, the question and every record."""
        self.make()
        now = self.clock.seconds()
        soa = wire.make_rrset(name("example.com"), wire.SOA, 60, [soa_rdata("example.com")])
        entry = make_entry(wire.NXDOMAIN, ((), (soa,), ()), question("nope.example.com"), 60, now, 0)
        msg = decode(entry.wire)
        self.assertEqual((msg.id, msg.rcode(), entry.rcode), (0, wire.NXDOMAIN, wire.NXDOMAIN))
        self.assertEqual(str(msg.question[0].name), "nope.example.com.")
        self.assertEqual(texts(msg.authority),
                         ["example.com. 60 SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60"])
        self.assertEqual(len(entry.ttl_offsets), 1)

    def test_entry_lifetime_fields(self) -> None:
        """An entry remembers when it was stored, when it expires and until when it may be stale."""
        self.make()
        now = self.clock.seconds()
        entry = positive("www.example.com", now, lifetime=120, serve_stale=30)
        self.assertEqual((entry.stored_at, entry.expires_at, entry.stale_until), (now, now + 120, now + 150))


class BoundTests(CacheCase):
    """The entry bound and LRU eviction."""

    def test_lru_eviction_order(self) -> None:
        """Beyond max_entries the least recently used entry goes; a hit refreshes recency."""
        cache = self.make(max_entries=2)
        now = self.clock.seconds()
        cache.put(key("a.example.com"), positive("a.example.com", now))
        cache.put(key("b.example.com"), positive("b.example.com", now))
        self.assertIsNotNone(cache.get(key("a.example.com")))
        cache.put(key("c.example.com"), positive("c.example.com", now))
        self.assertEqual(len(cache), 2)
        self.assertEqual(cache.evictions, 1)
        self.assertIsNone(cache.peek(key("b.example.com")))
        self.assertIsNotNone(cache.peek(key("a.example.com")))
        self.assertIsNotNone(cache.peek(key("c.example.com")))

    def test_peek_keeps_order(self) -> None:
        """peek() does not count as use: the peeked entry is still evicted first."""
        cache = self.make(max_entries=2)
        now = self.clock.seconds()
        cache.put(key("a.example.com"), positive("a.example.com", now))
        cache.put(key("b.example.com"), positive("b.example.com", now))
        cache.peek(key("a.example.com"))
        cache.put(key("c.example.com"), positive("c.example.com", now))
        self.assertIsNone(cache.peek(key("a.example.com")))
        self.assertEqual((cache.hits, cache.misses), (0, 0))

    def test_replacing_does_not_evict(self) -> None:
        """Storing under an existing key replaces the entry and evicts nothing."""
        cache = self.make(max_entries=2)
        now = self.clock.seconds()
        cache.put(key("a.example.com"), positive("a.example.com", now))
        cache.put(key("b.example.com"), positive("b.example.com", now))
        newer = positive("a.example.com", now, ttls=(77, 60))
        cache.put(key("a.example.com"), newer)
        self.assertEqual((len(cache), cache.evictions), (2, 0))
        found = cache.get(key("a.example.com"))
        assert found is not None
        self.assertEqual(found.wire, newer.wire)

    def test_many_entries_bounded(self) -> None:
        """However many entries are stored, at most max_entries remain: the newest ones."""
        cache = self.make(max_entries=10)
        now = self.clock.seconds()
        for i in range(100):
            cache.put(key(f"h{i}.example.com"), positive(f"h{i}.example.com", now))
        self.assertEqual(len(cache), 10)
        self.assertEqual(cache.evictions, 90)
        self.assertIsNotNone(cache.peek(key("h99.example.com")))
        self.assertIsNone(cache.peek(key("h89.example.com")))

    def test_zero_entries_disables(self) -> None:
        """max_entries = 0 stores nothing."""
        cache = self.make(max_entries=0)
        cache.put(key("a.example.com"), positive("a.example.com", self.clock.seconds()))
        self.assertEqual(len(cache), 0)

    def test_touch(self) -> None:
        """touch() is a hit only while that very entry is cached, and refreshes its recency."""
        cache = self.make(max_entries=2)
        now = self.clock.seconds()
        a = positive("a.example.com", now)
        cache.put(key("a.example.com"), a)
        cache.put(key("b.example.com"), positive("b.example.com", now))
        self.assertTrue(cache.touch(key("a.example.com"), a))
        cache.put(key("c.example.com"), positive("c.example.com", now))
        self.assertIsNotNone(cache.peek(key("a.example.com")))
        cache.put(key("a.example.com"), positive("a.example.com", now))
        self.assertFalse(cache.touch(key("a.example.com"), a))


class StoredFormTests(CacheCase):
    """The cache keeps an entry without the question its key already holds, and gives back the
    same message."""

    def test_question_left_out_and_put_back(self) -> None:
        """Stored under its own key an entry loses its question bytes, yet ``wire``, ``patched``
        and ``sections`` of what comes back are those of the entry as made; the entry put is the
        one stored (``touch``)."""
        cache = self.make()
        now = self.clock.seconds()
        made = positive("www.example.com", now)
        whole, sections = made.wire, made.sections
        size = len(made.packed)
        cache.put(key("www.example.com"), made)
        self.assertEqual(len(made.packed), size - len(question("www.example.com")))
        self.assertTrue(cache.touch(key("www.example.com"), made))
        found = cache.get(key("www.example.com"))
        assert found is not None
        for entry in (made, found):
            self.assertEqual(entry.wire, whole)
            self.assertEqual(bytes(entry.patched(now)), whole)
            self.assertEqual(entry.sections, sections)
            self.assertEqual(entry.rcode, wire.NOERROR)
        self.assertEqual(decode(bytes(found.patched(now + 100))).answer[0].ttl, 200)

    def test_other_question_kept_whole(self) -> None:
        """An entry whose question is not its key's (another case, another type) is kept whole;
        one entry stored under two keys answers right under both."""
        cache = self.make()
        now = self.clock.seconds()
        upper = make_entry(wire.NOERROR, ((),) * 3, question("WWW.example.com"), 60, now, 0)
        cache.put(key("www.example.com"), upper)
        found = cache.get(key("www.example.com"))
        assert found is not None
        self.assertEqual(found.wire, upper.wire)
        self.assertEqual(decode(found.wire).question[0].name.labels[0], b"WWW")
        shared = positive("a.example.com", now)
        whole = shared.wire
        cache.put(key("a.example.com"), shared)
        cache.put(key("a.example.com", qtype=wire.AAAA), shared)
        for k in (key("a.example.com"), key("a.example.com", qtype=wire.AAAA)):
            found = cache.get(k)
            assert found is not None
            self.assertEqual(found.wire, whole)

    def test_made_in_stored_form_is_stored_the_same(self) -> None:
        """An entry made with its packed key (``make_entry_from_wire(..., key)``) is already in
        the form ``put`` keeps: the same bytes as one made whole and then stored, the same
        message back; under another key's question it is made whole."""
        from smartdns.cache import packed_key
        cache = self.make()
        now = self.clock.seconds()
        made = positive("www.example.com", now, serve_stale=30)
        message, offsets = made.wire, made.ttl_offsets
        k = packed_key(key("www.example.com"))
        direct = make_entry_from_wire(wire.NOERROR, bytearray(message), offsets, 300, now, 30, k)
        cache.put(key("www.example.com"), made)
        self.assertEqual(direct.packed, made.packed)
        whole = make_entry_from_wire(wire.NOERROR, message, offsets, 300, now, 30)
        self.assertEqual(len(direct.packed), len(whole.packed) - len(question("www.example.com")))
        cache.put(key("www.example.com"), direct, k)
        self.assertTrue(cache.touch(k, direct))
        found = cache.get(key("www.example.com"))
        assert found is not None
        self.assertEqual((found.wire, found.ttl_offsets, found.stale_until), (message, offsets, now + 330))
        other = make_entry_from_wire(wire.NOERROR, message, offsets, 300, now, 30,
                                     packed_key(key("www.example.com", qtype=wire.AAAA)))
        self.assertEqual(other.packed, whole.packed)
        self.assertEqual(other.wire, message)

    def test_client_question_spliced(self) -> None:
        """``patched(question=...)`` gives the message with the client's spelling of the question."""
        cache = self.make()
        now = self.clock.seconds()
        cache.put(key("www.example.com"), positive("www.example.com", now))
        client = question("WwW.Example.COM")
        for entry in (cache.get(key("www.example.com")), positive("www.example.com", now)):
            assert entry is not None
            whole = entry.wire
            self.assertNotEqual(whole[12:12 + len(client)], client)
            self.assertEqual(bytes(entry.patched(now, question=client)), whole[:12] + client + whole[12 + len(client):])

    def test_longest_times(self) -> None:
        """The config's longest lifetime and serve-stale window (a week each) fit in an entry;
        longer ones are refused rather than stored wrong."""
        self.make()
        now = self.clock.seconds()
        week = 7 * 86400
        entry = positive("www.example.com", now, lifetime=week, serve_stale=week)
        self.assertEqual((entry.expires_at, entry.stale_until), (now + week, now + 2 * week))
        with self.assertRaises(ValueError):
            positive("www.example.com", now, lifetime=2**20)

    def test_extended_rcode(self) -> None:
        """An rcode with EDNS extended bits (up to 4095) survives in the entry."""
        self.make()
        entry = make_entry(wire.NOERROR, ((),) * 3, question("x.example.com"), 0, self.clock.seconds(), 0)
        badcookie = make_entry_from_wire(23, entry.wire, (), 0, self.clock.seconds(), 0)
        self.assertEqual(badcookie.rcode, 23)
        self.assertEqual(make_entry_from_wire(4095, entry.wire, (), 0, 0.0, 0).rcode, 4095)


class FlushAndClampTests(CacheCase):
    """flush_below and clamp_ttl."""

    def test_flush_below(self) -> None:
        """Entries at or below a flushed name go; siblings and look-alikes stay."""
        cache = self.make()
        now = self.clock.seconds()
        names = ["example.com", "www.example.com", "a.b.example.com", "badexample.com", "example.net"]
        for text in names:
            cache.put(key(text), positive(text, now))
        cache.put(key("www.example.com", qtype=wire.AAAA), positive("www.example.com", now))
        self.assertEqual(cache.flush_below({name("example.com")}), 4)
        self.assertEqual([text for text in names if cache.peek(key(text)) is not None],
                         ["badexample.com", "example.net"])
        self.assertEqual(cache.flush_below(set()), 0)

    def test_clear(self) -> None:
        """clear() empties the cache."""
        cache = self.make()
        cache.put(key("a.example.com"), positive("a.example.com", self.clock.seconds()))
        cache.clear()
        self.assertEqual(len(cache), 0)

    def test_clamp_ttl(self) -> None:
        """TTLs are clamped into [min_ttl, max_ttl]."""
        cache = self.make(min_ttl=10, max_ttl=100)
        self.assertEqual([cache.clamp_ttl(t) for t in (0, 5, 10, 50, 100, 500)], [10, 10, 10, 50, 100, 100])
