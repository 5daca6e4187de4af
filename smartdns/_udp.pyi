# Types of the optional C module smartdns/_udp.c (built by setup.py where a compiler is present).
from typing import Any, Callable

BATCH: int

def serve(fd: int, size: int, replay: dict[Any, Any], now: float, counts: dict[Any, int],
          misses: list[tuple[bytes, Any]], handle: Callable[[bytes, str, bool, int], Any] | None = None,
          waiting: list[tuple[bytes, Any, Any]] | None = None) -> tuple[int, bool]: ...
