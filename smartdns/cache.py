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
from smartdns.wire import RRset     # the Entry.wire property shadows the module name in class scope
from smartdns.config import CacheConfig


class Clock(Protocol):
    """The one thing the cache needs from a reactor."""

    def seconds(self) -> float: ...


CacheKey = tuple[bytes, int, int, bool, int]   # (qname key, qtype, qclass, DO bit, upstream pool)


# Packed entry header: stored_at (float64); lifetime and serve-stale window, 20 bits of seconds
# each (the config caps both at a week, under 2**20), as a uint32 and a uint8; rcode (uint16: 12
# bits with EDNS, and _QUESTION_IN_KEY); offset count (uint16).  Seventeen bytes rather than the
# 28 of three float64 times: a million entries are a million ``bytes`` objects, and pymalloc
# hands them out in 16-byte steps, so every byte saved moves some entries down a step
# (bench/README.rst, "Memory and load time").
_HEAD = struct.Struct("!dIBHH")
_TIME_BITS = 20
_TIME_MASK = (1 << _TIME_BITS) - 1
_LIFETIME_SHIFT = _TIME_BITS - 8       # the lifetime's place in the uint32 of the two times
_RCODE_AT = 13                   # offset of the rcode's high byte in _HEAD
_QUESTION_IN_KEY = 0x8000        # rcode flag: the message is stored without its question
_FLAG_BYTE = _QUESTION_IN_KEY >> 8
_HEADER_SIZE = 12                # the DNS header, before the question


class Entry:
    """One cached answer, kept as a single ``bytes`` so a million of them fit in a few hundred MB.

    Layout: ``_HEAD``, then the TTL offsets (uint16 each), then the message rendered once with
    ID 0, the question in key form and no OPT.  The original TTLs are the ones in the message.
    In the cache the question is left out when it is the one in the entry's key (the usual case;
    ``AnswerCache.put``): ``key`` is that key, and ``wire`` and ``patched`` put it back.
    """

    __slots__ = ("packed", "rcode", "stored_at", "expires_at", "_offsets_end", "upstream", "_key")

    def __init__(self, packed: bytes, key: bytes = b"") -> None:
        self.packed = packed
        self.upstream: str | None = None     # who answered, on the entry just made (not stored)
        stored, times, _low, rcode, count = _HEAD.unpack_from(packed)
        self.stored_at = stored
        self.expires_at = stored + (times >> _LIFETIME_SHIFT)   # as make_entry_from_wire computed it
        self.rcode = rcode & ~_QUESTION_IN_KEY
        self._key = key if rcode & _QUESTION_IN_KEY else b""   # the packed key holding the question
        self._offsets_end = _HEAD.size + 2 * count

    @property
    def stale_until(self) -> float:
        """Until when the entry may be served stale (RFC 8767): read only once it has expired."""
        _stored, times, low, _rcode, _count = _HEAD.unpack_from(self.packed)
        stale = (times << 8 | low) & _TIME_MASK
        expires: float = self.expires_at
        return expires + stale if stale else expires

    @property
    def wire(self) -> bytes:
        """The stored message."""
        start = self._offsets_end
        if not self._key:
            return self.packed[start:]
        split = start + _HEADER_SIZE
        return b"".join((self.packed[start:split], self._key[:-_KEY_FLAGS_SIZE], self.packed[split:]))

    @property
    def ttl_offsets(self) -> tuple[int, ...]:
        """Offsets of every TTL field in ``wire``."""
        count = (self._offsets_end - _HEAD.size) // 2
        return struct.unpack_from(f"!{count}H", self.packed, _HEAD.size)

    @property
    def sections(self) -> tuple[tuple[RRset, ...], ...]:
        """The records as RRsets, decoded again from the message (only the slow path needs this)."""
        message = wire.parse_message(self.wire)
        return tuple(tuple(_rrsets(records)) for records in (message.answer, message.authority, message.additional))

    def remaining(self, now: float) -> int:
        """Whole seconds of freshness left (0 when expired)."""
        return max(0, int(self.expires_at - now))

    def sections_at(self, now: float, stale_ttl: int | None = None) -> tuple[tuple[RRset, ...], ...]:
        """The sections with TTLs counted down (or all set to ``stale_ttl`` when serving stale)."""
        elapsed = int(now - self.stored_at)
        return tuple(
            tuple(r.with_ttl(stale_ttl if stale_ttl is not None else max(0, r.ttl - elapsed)) for r in section)
            for section in self.sections
        )

    def patched(self, now: float, stale_ttl: int | None = None, question: bytes | None = None) -> bytearray:
        """The stored message with every TTL counted down to ``now`` (and ``question``, of the
        stored question's length, in its place: the client's spelling)."""
        start = self._offsets_end
        if self._key:
            split = start + _HEADER_SIZE
            buf = bytearray(self.packed[start:split])
            buf += self._key[:-_KEY_FLAGS_SIZE] if question is None else question
            buf += self.packed[split:]
        else:
            buf = bytearray(self.packed[start:])
            if question is not None:
                buf[_HEADER_SIZE:_HEADER_SIZE + len(question)] = question
        elapsed = int(now - self.stored_at)
        if stale_ttl is None and elapsed <= 0:
            return buf
        pack = struct.pack_into
        unpack = struct.unpack_from
        for (offset,) in struct.iter_unpack("!H", self.packed[_HEAD.size:start]):
            if stale_ttl is not None:
                pack("!I", buf, offset, stale_ttl)
            else:
                (ttl,) = unpack("!I", buf, offset)
                pack("!I", buf, offset, ttl - elapsed if ttl > elapsed else 0)
        return buf


def _rrsets(records: tuple[wire.Record, ...]) -> list[wire.RRset]:
    """Records (in stored order, RRsets contiguous) back into RRsets."""
    out: list[wire.RRset] = []
    for rec in records:
        last = out[-1] if out else None
        if last is not None and last.name == rec.name.lower() and last.rtype == rec.rtype:
            out[-1] = wire.RRset(last.name, last.rtype, last.ttl, last.rdatas + (wire.rdata_parts(rec.rtype, rec.rdata),),
                                 last.rclass)
        else:
            out.append(wire.make_rrset(rec.name.lower(), rec.rtype, rec.ttl, [rec.rdata], rec.rclass))
    return out


def make_entry_from_wire(rcode: int, message: bytes | bytearray, offsets: list[int] | tuple[int, ...], lifetime: int,
                         now: float, serve_stale: int, key: bytes = b"") -> Entry:
    """An entry from a message already in stored form (ID 0, no OPT) and its TTL offsets.

    With ``key`` (the packed key it is to be cached under), an entry whose one question is the
    key's is made straight in the form the cache keeps (``_stored_form``: the question left
    out, read back from the key), so storing it copies nothing more."""
    if not (0 <= lifetime <= _TIME_MASK and 0 <= serve_stale <= _TIME_MASK):
        raise ValueError(f"cache times out of range: lifetime {lifetime}, serve_stale {serve_stale}")
    times = lifetime << _TIME_BITS | serve_stale
    count = len(offsets)
    if key:
        end = _HEADER_SIZE + len(key) - _KEY_FLAGS_SIZE
        if message[4:6] == b"\x00\x01" and message[_HEADER_SIZE:end] == key[:-_KEY_FLAGS_SIZE]:
            head = _HEAD.pack(now, times >> 8, times & 0xFF, rcode | _QUESTION_IN_KEY, count)
            return Entry(b"".join((head, struct.pack(f"!{count}H", *offsets), message[:_HEADER_SIZE], message[end:])),
                         key)
    head = _HEAD.pack(now, times >> 8, times & 0xFF, rcode, count)
    return Entry(b"".join((head, struct.pack(f"!{count}H", *offsets), message)))


def make_entry(rcode: int, sections: tuple[tuple[wire.RRset, ...], tuple[wire.RRset, ...], tuple[wire.RRset, ...]],
               question: bytes, lifetime: int, now: float, serve_stale: int) -> Entry:
    """Render an answer once for storage."""
    message, offsets = wire.render(0, wire.FLAG_QR | rcode, question, sections)
    return make_entry_from_wire(rcode, message, offsets, lifetime, now, serve_stale)


def packed_key(key: CacheKey) -> bytes:
    """The tuple key as one bytes object (a tuple of five objects per entry costs ~150 bytes)."""
    qkey, qtype, qclass, do, pool = key
    return qkey + _KEY_TAIL.pack(qtype, qclass, do, pool)


def packed_key_of(qkey: bytes, qtype: int, qclass: int, do: bool, pool: int) -> bytes:
    """``packed_key`` of the key with these parts, without building the tuple."""
    return qkey + _KEY_TAIL.pack(qtype, qclass, do, pool)


_KEY_TAIL = struct.Struct("!HH?H")
_KEY_FLAGS_SIZE = 3              # the DO bit and pool after qtype and qclass: key[:-3] is the question


def _stored_form(entry: Entry, k: bytes) -> bytes:
    """What the cache keeps for ``entry`` under the packed key ``k``: its bytes without the
    question when that is ``k``'s (the question is then read from the key), else whole.  The
    entry is changed to hold exactly that object, so ``touch`` finds it the one stored."""
    packed = entry.packed
    if entry._key:
        if entry._key == k:
            return packed
        whole = entry.wire          # stored under another key before: make it whole again
        start = entry._offsets_end
        packed = (packed[:_RCODE_AT] + bytes([packed[_RCODE_AT] & ~_FLAG_BYTE]) + packed[_RCODE_AT + 1:start]
                  + whole)
        entry._key = b""
    start = entry._offsets_end
    split = start + _HEADER_SIZE
    question = k[:-_KEY_FLAGS_SIZE]
    end = split + len(question)
    if packed[start + 4:start + 6] == b"\x00\x01" and packed[split:end] == question:
        packed = (packed[:_RCODE_AT] + bytes([packed[_RCODE_AT] | _FLAG_BYTE]) + packed[_RCODE_AT + 1:split]
                  + packed[end:])
        entry._key = k
    entry.packed = packed
    return packed


@dataclass
class CacheCounters:
    """Counts since the process started: kept by the service and handed to each cache it
    builds, so a reload that replaces the cache does not reset them."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    stale: int = 0          # expired answers served because upstreams failed (RFC 8767)


class AnswerCache:
    """Forwarded answers by key, bounded by ``max_entries`` with LRU eviction."""

    def __init__(self, clock: Clock, config: CacheConfig, counters: CacheCounters | None = None) -> None:
        self.clock = clock
        self.config = config
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()   # packed key → Entry.packed
        self.counters = counters if counters is not None else CacheCounters()

    @property
    def hits(self) -> int:
        """Answers served from the cache."""
        return self.counters.hits

    @property
    def misses(self) -> int:
        """Questions the cache could not answer."""
        return self.counters.misses

    @property
    def evictions(self) -> int:
        """Entries dropped to stay within ``max_entries``."""
        return self.counters.evictions

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, packed: bytes) -> bool:
        """Whether anything (fresh or not) is stored under a packed key: the chain's cheap
        first look, before a name is known to be local or forwarded."""
        return packed in self._entries

    def get(self, key: CacheKey, count_miss: bool = True, packed: bytes | None = None) -> Entry | None:
        """A fresh entry, or None; expired entries past their stale window are dropped.

        ``count_miss=False`` is for a probe whose miss is counted where the question is then
        forwarded (the chain asks the cache before it knows whether a name is local);
        ``packed`` is ``packed_key(key)`` when the caller already has it."""
        k = packed if packed is not None else packed_key(key)
        packed = self._entries.get(k)
        if packed is None:
            if count_miss:
                self.counters.misses += 1
            return None
        entry = Entry(packed, k)
        now = self.clock.seconds()
        if now >= entry.expires_at:
            if now >= entry.stale_until:
                del self._entries[k]
            if count_miss:
                self.counters.misses += 1
            return None
        self._entries.move_to_end(k)
        self.counters.hits += 1
        return entry

    def count_miss(self) -> None:
        """A question that was forwarded because the cache had no fresh answer."""
        self.counters.misses += 1

    def peek(self, key: CacheKey) -> Entry | None:
        """The entry under ``key`` whatever its age, without touching LRU order or counters."""
        k = packed_key(key)
        packed = self._entries.get(k)
        return Entry(packed, k) if packed is not None else None

    def touch(self, key: CacheKey | bytes, entry: Entry) -> bool:
        """For the fast path: whether ``entry`` is still the one cached under ``key`` (not evicted,
        replaced or flushed); if so it counts as a hit and becomes most recently used.  ``key``
        may be given packed (``packed_key``) to save packing it on every hit."""
        k = key if isinstance(key, bytes) else packed_key(key)
        if self._entries.get(k) is not entry.packed:
            return False
        self._entries.move_to_end(k)
        self.counters.hits += 1
        return True

    def used(self, packed: bytes, count: int = 1) -> None:
        """``count`` answers were served from the entry under ``packed`` without looking it up
        (the UDP replay table): count the hits and make it most recently used, if still here."""
        if packed in self._entries:
            self._entries.move_to_end(packed)
        self.counters.hits += count

    def get_stale(self, key: CacheKey) -> Entry | None:
        """An expired entry still inside its serve-stale window (RFC 8767), or None."""
        entry = self.peek(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        if entry.expires_at <= now < entry.stale_until:
            return entry
        return None

    def put(self, key: CacheKey, entry: Entry, packed: bytes | None = None) -> None:
        """Store an entry, evicting the least recently used beyond the bound (``packed``:
        ``packed_key(key)``, when the caller has it)."""
        if self.config.max_entries <= 0:
            return
        entries = self._entries
        k = packed if packed is not None else packed_key(key)
        entries[k] = _stored_form(entry, k)
        entries.move_to_end(k)
        while len(entries) > self.config.max_entries:
            entries.popitem(last=False)
            self.counters.evictions += 1

    def flush_below(self, names: set[bytes] | frozenset[bytes]) -> int:
        """Drop entries whose name is at or below any of ``names`` (key form); return how many."""
        if not names:
            return 0
        tail = _KEY_TAIL.size
        doomed = [k for k in self._entries if any(wire.is_subdomain(k[:-tail], n) for n in names)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()

    def clamp_ttl(self, ttl: int) -> int:
        """A record TTL within [min_ttl, max_ttl]."""
        return min(max(ttl, self.config.min_ttl), self.config.max_ttl)
