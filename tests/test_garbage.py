"""Answering leaves no reference cycles behind.

Garbage in cycles is only freed by CPython's cyclic collector, whose pauses grow with the heap;
at a few thousand misses per second they were the whole tail of the miss latency.  Here every
path a query can take (local, cache hit, miss, upstream failure) runs with the collector off and
``DEBUG_SAVEALL`` on, and then nothing from smartdns may be found in the collected cycles.
"""
from __future__ import annotations

import gc

import dns.message
from twisted.internet import defer
from twisted.trial import unittest

from tests.support import FakeUpstream, answer_a, start_server
from tests.test_server import ZONES

CONFIG = """
[lines]
office = ["127.0.0.3/32"]
[forward]
upstreams = ["{up}"]
timeout = 0.2
total_timeout = 0.5
"""


def smartdns_objects(objects: list[object]) -> list[str]:
    """Descriptions of the objects made by smartdns code (functions, frames, instances)."""
    found = []
    for obj in objects:
        module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", "")
        code = getattr(obj, "f_code", None) or getattr(obj, "__code__", None)
        filename = getattr(code, "co_filename", "") if code is not None else ""
        if str(module).startswith("smartdns") or "/smartdns/" in filename:
            found.append(f"{type(obj).__name__} {getattr(obj, '__qualname__', '')}".strip())
    return found


class NoCycleTests(unittest.TestCase):

    timeout = 30

    def setUp(self) -> None:
        self.up = FakeUpstream(lambda q, t: None if q.qkey.startswith(b"\x06silent") else
                               answer_a(q, ["198.51.100.9"])).start(self)
        self.service, _, _ = start_server(self, CONFIG.format(up=self.up.address), zones=ZONES)
        self.handler = self.service.handler

    def ask(self, name: str) -> defer.Deferred[bytes]:
        result = self.handler.handle(dns.message.make_query(name, "A").to_wire(), "127.0.0.1", False)
        return result if isinstance(result, defer.Deferred) else defer.succeed(result)

    @defer.inlineCallbacks
    def test_no_cycles_on_any_path(self):
        yield self.ask("warm.example.net")            # sockets and pools exist before counting
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(20):
                yield self.ask(f"miss{i}.example.net")
                yield self.ask(f"miss{i}.example.net")        # cache hit (memo on the second)
                yield self.ask(f"miss{i}.example.net")
                yield self.ask("www.proto.test")              # local
            answer = yield self.ask("silent.example.net")    # every upstream times out: SERVFAIL
            self.assertEqual(answer[3] & 0x0F, 2)
            gc.collect()
            leaked = smartdns_objects(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        self.assertEqual(leaked, [])
