"""Memory per cached answer: fill an AnswerCache with N one-record answers, report RSS and bytes
per entry.  Run: .venv/bin/python bench/cache_memory.py 1000000"""
from __future__ import annotations

import os
import struct
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smartdns import wire  # noqa: E402
from smartdns.cache import AnswerCache, make_entry_from_wire  # noqa: E402
from smartdns.config import CacheConfig  # noqa: E402


class FixedClock:
    """Time does not matter here."""

    def seconds(self) -> float:
        return 1000.0


def rss_mb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def fill(cache: AnswerCache, count: int) -> None:
    for i in range(count):
        qname = wire.from_text(f"h{i}.bench.test")
        rrset = wire.make_rrset(qname, wire.A, 300, [struct.pack("!I", 0x0A000000 + i)])
        message, offsets = wire.render(0, wire.FLAG_QR, qname + b"\x00\x01\x00\x01", ((rrset,), (), ()))
        cache.put((qname, wire.A, wire.IN, False, 0), make_entry_from_wire(0, message, offsets, 300, 1000.0, 0))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    sample = min(count, 100_000)
    tracemalloc.start()
    cache = AnswerCache(FixedClock(), CacheConfig(max_entries=sample))
    before = tracemalloc.get_traced_memory()[0]
    fill(cache, sample)
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / sample
    tracemalloc.stop()
    cache.clear()
    base = rss_mb()
    cache = AnswerCache(FixedClock(), CacheConfig(max_entries=count))
    fill(cache, count)
    print(f"{per_entry:.0f} bytes per entry (tracemalloc, {sample} entries); "
          f"{count} entries: RSS {rss_mb()} MB (process before filling: {base} MB)")


if __name__ == "__main__":
    main()
