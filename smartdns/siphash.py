"""SipHash-2-4 (Aumasson and Bernstein, 2012) in pure Python, for DNS server cookies (RFC 9018).

``hashlib`` offers no SipHash, and RFC 9018 names SipHash-2-4 so that servers of one anycast
set (or BIND, Knot and smartdns side by side) can check each other's cookies.  The input is at
most 36 bytes (a client cookie, four bytes of version and reserved, a timestamp and an IPv6
address), so the whole hash is a few dozen integer operations.
"""
from __future__ import annotations

import struct

MASK_64 = 0xFFFFFFFFFFFFFFFF
KEY_BYTES = 16


def _rounds(v0: int, v1: int, v2: int, v3: int, count: int) -> tuple[int, int, int, int]:
    """``count`` SipRounds over the four 64-bit state words."""
    mask = MASK_64
    for _ in range(count):
        v0 = (v0 + v1) & mask
        v1 = ((v1 << 13) | (v1 >> 51)) & mask ^ v0
        v0 = ((v0 << 32) | (v0 >> 32)) & mask
        v2 = (v2 + v3) & mask
        v3 = ((v3 << 16) | (v3 >> 48)) & mask ^ v2
        v0 = (v0 + v3) & mask
        v3 = ((v3 << 21) | (v3 >> 43)) & mask ^ v0
        v2 = (v2 + v1) & mask
        v1 = ((v1 << 17) | (v1 >> 47)) & mask ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & mask
    return v0, v1, v2, v3


def siphash24(key: bytes, data: bytes) -> bytes:
    """The 8-byte SipHash-2-4 of ``data`` under a 16-byte ``key``, little-endian as the
    reference implementation writes it (RFC 9018 §4.4 copies these bytes into the cookie)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"SipHash key must be {KEY_BYTES} bytes, not {len(key)}")
    k0, k1 = struct.unpack("<QQ", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    length = len(data)
    whole = length - length % 8
    for (m,) in struct.iter_unpack("<Q", data[:whole]):
        v3 ^= m
        v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
        v0 ^= m
    last = int.from_bytes(data[whole:], "little") | ((length & 0xFF) << 56)
    v3 ^= last
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
    v0 ^= last
    v2 ^= 0xFF
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 4)
    return struct.pack("<Q", v0 ^ v1 ^ v2 ^ v3)
