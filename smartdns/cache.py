"""A bounded TTL cache of forwarded answers, stored ready to send.

Only upstream answers go in here — never local ones, which depend on the client's line.  Each
entry keeps the answer rendered once (ID 0, lowercase question, no OPT) with the offsets of its
TTL fields, so a hit costs a copy and a few ``pack_into`` calls instead of an encode.  Time is
read from the injected reactor; expiry is lazy (no timer per entry); eviction is LRU.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from smartdns import wire
from smartdns.config import CacheConfig


class Clock(Protocol):
    """The one thing the cache needs from a reactor."""

    def seconds(self) -> float: ...


CacheKey = tuple[bytes, int, int, bool, int]   # (qname key, qtype, qclass, DO bit, upstream pool)


@dataclass(slots=True)
class Entry:
    """One cached answer."""

    rcode: int
    sections: tuple[tuple[wire.RRset, ...], tuple[wire.RRset, ...], tuple[wire.RRset, ...]]
    wire: bytes                      # rendered with ID 0 and the question in key form, no OPT
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]            # the TTL written at each offset when stored
    stored_at: float
    expires_at: float
    stale_until: float               # expires_at + serve_stale window
    prefetching: bool = False

    def remaining(self, now: float) -> int:
        """Whole seconds of freshness left (0 when expired)."""
        return max(0, int(self.expires_at - now))

    def sections_at(self, now: float, stale_ttl: int | None = None) -> tuple[tuple[wire.RRset, ...], ...]:
        """The sections with TTLs counted down (or all set to ``stale_ttl`` when serving stale)."""
        elapsed = int(now - self.stored_at)
        return tuple(
            tuple(r.with_ttl(stale_ttl if stale_ttl is not None else max(0, r.ttl - elapsed)) for r in section)
            for section in self.sections
        )

    def patched(self, now: float, stale_ttl: int | None = None) -> bytearray:
        """The stored message with every TTL counted down to ``now``."""
        buf = bytearray(self.wire)
        elapsed = int(now - self.stored_at)
        pack = struct.pack_into
        if stale_ttl is not None:
            for offset in self.ttl_offsets:
                pack("!I", buf, offset, stale_ttl)
        elif elapsed > 0:
            for offset, ttl in zip(self.ttl_offsets, self.ttls):
                pack("!I", buf, offset, ttl - elapsed if ttl > elapsed else 0)
        return buf


def make_entry(rcode: int, sections: tuple[tuple[wire.RRset, ...], tuple[wire.RRset, ...], tuple[wire.RRset, ...]],
               question: bytes, lifetime: int, now: float, serve_stale: int) -> Entry:
    """Render an answer once for storage."""
    message, offsets = wire.render(0, wire.FLAG_QR | rcode, question, sections)
    ttls = tuple(struct.unpack_from("!I", message, o)[0] for o in offsets)
    return Entry(rcode, sections, message, offsets, ttls, now, now + lifetime, now + lifetime + serve_stale)


class AnswerCache:
    """Forwarded answers by key, bounded by ``max_entries`` with LRU eviction."""

    def __init__(self, clock: Clock, config: CacheConfig) -> None:
        self.clock = clock
        self.config = config
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Entry | None:
        """A fresh entry, or None; expired entries past their stale window are dropped."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        now = self.clock.seconds()
        if now >= entry.expires_at:
            if now >= entry.stale_until:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def peek(self, key: CacheKey) -> Entry | None:
        """The entry under ``key`` whatever its age, without touching LRU order or counters."""
        return self._entries.get(key)

    def touch(self, key: CacheKey, entry: Entry) -> bool:
        """For the fast path: whether ``entry`` is still the one cached under ``key`` (not evicted,
        replaced or flushed); if so it counts as a hit and becomes most recently used."""
        if self._entries.get(key) is not entry:
            return False
        self._entries.move_to_end(key)
        self.hits += 1
        return True

    def get_stale(self, key: CacheKey) -> Entry | None:
        """An expired entry still inside its serve-stale window (RFC 8767), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        if entry.expires_at <= now < entry.stale_until:
            return entry
        return None

    def put(self, key: CacheKey, entry: Entry) -> None:
        """Store an entry, evicting the least recently used beyond the bound."""
        if self.config.max_entries <= 0:
            return
        entries = self._entries
        entries[key] = entry
        entries.move_to_end(key)
        while len(entries) > self.config.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def flush_below(self, names: set[bytes] | frozenset[bytes]) -> int:
        """Drop entries whose name is at or below any of ``names`` (key form); return how many."""
        if not names:
            return 0
        doomed = [k for k in self._entries if any(wire.is_subdomain(k[0], n) for n in names)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()

    def clamp_ttl(self, ttl: int) -> int:
        """A record TTL within [min_ttl, max_ttl]."""
        return min(max(ttl, self.config.min_ttl), self.config.max_ttl)
