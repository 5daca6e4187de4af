"""SOA serial arithmetic (RFC 1982): which of two 32-bit serials is newer, across wrap-around."""
from __future__ import annotations

SERIAL_BITS = 32


def serial_gte(a: int, b: int) -> bool:
    """``a`` is not older than ``b`` in RFC 1982 serial arithmetic (32 bits)."""
    return a == b or (0 < (a - b) % 2**SERIAL_BITS < 2**(SERIAL_BITS - 1))
