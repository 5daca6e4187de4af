"""The UDP replay table: answers sent from inside the read loop, over live loopback sockets.

A repeated query (same client address, same bytes after the ID, same snapshot) is answered by
``DNSDatagramPort`` without entering the handler.  These tests prove that such answers are the
bytes the full path computes, that they never cross lines, and that a reload or a TTL tick
retires them.  Every test runs under both read loops: ``_read_batched`` (the optional C module
``smartdns._udp``, skipped where it is not built) and ``_read_each`` (Python), and
``BatchedLoopTests`` compares the two on one burst of mixed queries.
"""
from __future__ import annotations

import os
import random
import socket
import struct

import dns.flags
import dns.message
import dns.rcode
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.trial import unittest

from smartdns import server
from smartdns.server import DNSDatagramPort
from tests.support import FakeUpstream, ShiftedReactor, answer_a, query, raw_udp, start_server, write_tree
from tests.test_server import CONFIG, ZONES

OFFICE, OTHER = "127.0.0.3", "127.0.0.1"      # CONFIG's office line is 127.0.0.3/32


def with_id(data: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + data[2:]


class PythonLoop:
    """Mixin: the test class's tests with the pure-Python read loop (``_read_each``)."""

    def setUp(self) -> None:
        self.patch(DNSDatagramPort, "batched", False)      # type: ignore[attr-defined]
        super().setUp()                                     # type: ignore[misc]


def skip_without_module() -> None:
    """Skip where smartdns._udp is not built, unless SMARTDNS_REQUIRE_UDP_MODULE is set (CI
    builds it, so there a missing module is a failure)."""
    if server._udp is None:
        if os.environ.get("SMARTDNS_REQUIRE_UDP_MODULE"):
            raise AssertionError("smartdns._udp is not built (SMARTDNS_REQUIRE_UDP_MODULE is set)")
        raise unittest.SkipTest("smartdns._udp is not built here (no C compiler or Python headers)")


class BatchedLoop:
    """Mixin: the test class's tests with the C module's read loop (``_read_batched``)."""

    def setUp(self) -> None:
        skip_without_module()
        self.patch(DNSDatagramPort, "batched", True)       # type: ignore[attr-defined]
        super().setUp()                                     # type: ignore[misc]


class ReplayTests(unittest.TestCase):
    """Local answers through the replay table."""

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(self, CONFIG, zones=ZONES)
        self.handler = self.service.handler

    def ask(self, data: bytes, source: str) -> defer.Deferred[bytes | None]:
        return raw_udp(self.host, self.port, data, source=source)

    def test_listener_is_the_replaying_port(self):
        """The UDP listener is the replaying port, and the start-up log line says which loop
        it reads with."""
        port = self.service.ports[0]
        self.assertIsInstance(port, DNSDatagramPort)
        self.assertEqual(server.udp_io(port).startswith("batched"), port.batched)

    @defer.inlineCallbacks
    def test_replayed_answers_are_the_full_paths_bytes(self):
        """Over a corpus of shapes (0x20 case, EDNS sizes, DO, CD, RD=0, truncation, NXDOMAIN,
        wildcard, CNAME) and two lines, the third sight of a query is sent from the replay table,
        and every answer equals what the full path computes for that ID, byte for byte."""
        corpus = [
            ("www.proto.test", "A", {}), ("WwW.PrOtO.TeSt", "A", {}),
            ("www.proto.test", "AAAA", {"use_edns": 0}),
            ("big.proto.test", "TXT", {}), ("big.proto.test", "TXT", {"use_edns": 0, "payload": 512}),
            ("big.proto.test", "TXT", {"use_edns": 0, "payload": 4096}),
            ("many.proto.test", "A", {"want_dnssec": True}), ("x.wild.proto.test", "A", {}),
            ("alias.proto.test", "A", {}), ("nx.proto.test", "MX", {}), ("proto.test", "NS", {}),
        ]
        replayed = 0
        for name, rdtype, kwargs in corpus:
            for source in (OFFICE, OTHER):
                for flags in (0, dns.flags.CD, -dns.flags.RD):
                    msg = dns.message.make_query(name, rdtype, **kwargs)
                    msg.flags = msg.flags & ~dns.flags.RD if flags < 0 else msg.flags | flags
                    data = msg.to_wire()
                    for round_ in range(3):
                        qid = random.randrange(65536)
                        before = self.handler.stats.queries, self.handler.stats.memo_hits
                        answer = yield self.ask(with_id(data, qid), source)
                        full = self.handler._handle_full(with_id(data, qid), source, False,
                                                         self.handler.snapshot(), None)
                        self.assertEqual(answer, full, (name, rdtype, kwargs, source, flags, round_))
                        if round_ == 2:
                            self.assertIn((source, data[2:]), self.handler.replay)
                            self.assertEqual(self.handler.stats.memo_hits, before[1] + 1)
                            replayed += 1
                        self.assertEqual(self.handler.stats.queries, before[0] + 1)
        self.assertEqual(replayed, len(corpus) * 6)

    @defer.inlineCallbacks
    def test_lines_never_share_a_replayed_answer(self):
        """The same bytes from two lines, interleaved: each keeps its own address throughout."""
        data = dns.message.make_query("www.proto.test", "A").to_wire()
        for _ in range(6):
            office = yield self.ask(data, OFFICE)
            other = yield self.ask(data, OTHER)
            self.assertEqual(dns.message.from_wire(office).answer[0][0].address, "10.0.0.2")
            self.assertEqual(dns.message.from_wire(other).answer[0][0].address, "192.0.2.2")
        self.assertIn((OFFICE, data[2:]), self.handler.replay)
        self.assertIn((OTHER, data[2:]), self.handler.replay)

    @defer.inlineCallbacks
    def test_reload_retires_replayed_answers(self):
        """After a zone edit and reload, a query that was being replayed gets the new data."""
        data = dns.message.make_query("www.proto.test", "A").to_wire()
        for _ in range(3):
            answer = yield self.ask(data, OTHER)
        self.assertIn((OTHER, data[2:]), self.handler.replay)
        zone = os.path.join(os.path.dirname(self.service.config.path), "zones", "proto.test.zone")
        with open(zone, encoding="utf-8") as handle:
            text = handle.read().replace("192.0.2.2", "192.0.2.222")
        write_tree(os.path.dirname(zone), {"proto.test.zone": text})
        st = os.stat(zone)
        os.utime(zone, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        result = yield self.service.reload("test")
        self.assertTrue(result.ok, result)
        answer = yield self.ask(data, OTHER)
        self.assertEqual(dns.message.from_wire(answer).answer[0][0].address, "192.0.2.222")

    @defer.inlineCallbacks
    def test_udp_size_change_retires_replayed_answers(self):
        """The replay key has no size limit in it: a new max_udp_payload empties the table."""
        data = dns.message.make_query("big.proto.test", "TXT", use_edns=0, payload=4096).to_wire()
        for _ in range(3):
            yield self.ask(data, OTHER)
        self.assertTrue(self.handler.replay)
        self.handler.set_max_udp_payload(512)
        self.assertFalse(self.handler.replay)
        answer = yield self.ask(data, OTHER)
        self.assertTrue(answer[2] & 0x02, "TC expected at the new 512-byte limit")

    def test_queued_queries_are_all_answered_in_bursts(self):
        """100 queued replayable queries (more than three bursts) read in one go: every one is
        answered once, with its own ID, and counted."""
        import socket

        data = dns.message.make_query("www.proto.test", "A").to_wire()
        self.handler.handle(data, OTHER, False)
        self.handler.handle(data, OTHER, False)          # memo hit: now replayable
        self.assertIn((OTHER, data[2:]), self.handler.replay)
        port = self.service.ports[0]
        port.stopReading()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind((OTHER, 0))
        ids = list(range(1000, 1100))
        for qid in ids:
            client.sendto(with_id(data, qid), (self.host, self.port))
        before = self.handler.stats.queries
        port.doRead()
        port.startReading()
        self.assertEqual(self.handler.stats.queries, before + len(ids))
        client.settimeout(1.0)
        answers = [client.recv(4096) for _ in ids]
        self.assertEqual(sorted(struct.unpack("!H", a[:2])[0] for a in answers), ids)
        self.assertEqual({a[2:] for a in answers}, {self.handler.replay[(OTHER, data[2:])][0]})
        client.settimeout(0.2)
        self.assertRaises(socket.timeout, client.recv, 4096)      # nothing sent twice

    @defer.inlineCallbacks
    def test_an_error_in_the_handler_is_answered_servfail_and_logged(self):
        """An exception escaping the handler never stops the port: the client gets SERVFAIL
        with its ID, and the error is logged with the handler's own frames."""
        def boom(data: bytes, client: str, tcp: bool, port: int = 0) -> bytes:
            raise RuntimeError("boom")

        self.handler.handle = boom       # type: ignore[method-assign]
        data = with_id(dns.message.make_query("www.proto.test", "A").to_wire(), 4321)
        reply = dns.message.from_wire((yield self.ask(data, OTHER)))
        self.assertEqual((reply.id, reply.rcode()), (4321, dns.rcode.SERVFAIL))
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual([str(e.value) for e in errors], ["boom"])
        self.assertIn("boom", [frame[0] for frame in errors[0].frames])

    @defer.inlineCallbacks
    def test_tcp_answers_are_not_recorded(self):
        for _ in range(3):
            yield query(self.host, self.port, "www.proto.test", tcp=True)
        self.assertFalse(self.handler.replay)


class IPv6ReplayTests(unittest.TestCase):
    """The replay key is the address as an IPv6 socket reports it; lines still apply."""

    @defer.inlineCallbacks
    def test_ipv6_client(self):
        config = CONFIG.replace('listen = ["127.0.0.1:0"]', 'listen = ["[::1]:0"]').replace(
            'office = ["127.0.0.3/32"]', 'office = ["::1/128"]')
        try:
            service, host, port = start_server(self, config, zones=ZONES)
        except CannotListenError as e:
            raise unittest.SkipTest(f"no IPv6 loopback here: {e}")
        data = dns.message.make_query("www.proto.test", "A").to_wire()
        for _ in range(4):
            answer = yield raw_udp(host, port, data)
            self.assertEqual(dns.message.from_wire(answer).answer[0][0].address, "10.0.0.2")
        self.assertIn(("::1", data[2:]), service.handler.replay)


class ReplayedCacheTests(unittest.TestCase):
    """Forwarded answers through the replay table: TTLs still count down, prefetch still runs."""

    timeout = 30

    @defer.inlineCallbacks
    def test_ttl_counts_down_and_prefetch_still_happens(self):
        up = FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.7"], ttl=100)).start(self)
        clock = ShiftedReactor()
        service, host, port = start_server(self, f'[forward]\nupstreams = ["{up.address}"]\n', clock=clock)
        data = dns.message.make_query("hot.example.net", "A").to_wire()

        def ttl(answer: bytes) -> int:
            return dns.message.from_wire(answer).answer[0].ttl

        for _ in range(4):
            answer = yield raw_udp(host, port, data)
        self.assertEqual(ttl(answer), 100)
        tally = service.handler.replay[(OTHER, data[2:])][2]
        self.assertEqual((tally.key[-1], type(tally.packed)), ("cache", bytes))   # counted as a use of the entry
        hits = service.cache.hits
        answer = yield raw_udp(host, port, data)
        self.assertEqual(service.cache.hits, hits + 1, "a replayed cache answer counts as a cache hit")
        clock.advance(1.2)
        self.assertEqual(ttl((yield raw_udp(host, port, data))), 99)
        self.assertEqual(ttl((yield raw_udp(host, port, data))), 99)
        clock.advance(40)
        self.assertEqual(ttl((yield raw_udp(host, port, data))), 59)
        self.assertEqual(len(up.queries), 1)
        clock.advance(55)                   # into the last tenth: the next answer starts a refresh
        self.assertEqual(ttl((yield raw_udp(host, port, data))), 4)
        while len(up.queries) < 2 or service.resolver._inflight:
            yield raw_udp(host, port, data, timeout=0.05)
        self.assertEqual(ttl((yield raw_udp(host, port, data))), 100)
        self.assertEqual(len(up.queries), 2)


class ReplayTableBoundTests(unittest.TestCase):
    """The table never grows past its bound."""

    def test_bound(self):
        service, _, _ = start_server(self, CONFIG, zones=ZONES)
        handler = service.handler
        self.patch(server, "REPLAY_MAX_ENTRIES", 8)
        data = dns.message.make_query("www.proto.test", "A").to_wire()
        for i in range(40):
            client = f"127.0.1.{i}"
            handler.handle(data, client, False)
            handler.handle(data, client, False)
            self.assertLessEqual(len(handler.replay), 8)
        self.assertIn(("127.0.1.39", data[2:]), handler.replay)


# Each class above under both read loops (the unsuffixed ones run with the default: the C loop
# where it is built).
class ReplayTestsPython(PythonLoop, ReplayTests):
    pass


class IPv6ReplayTestsPython(PythonLoop, IPv6ReplayTests):
    pass


class ReplayedCacheTestsPython(PythonLoop, ReplayedCacheTests):
    pass


class ReplayTestsBatched(BatchedLoop, ReplayTests):
    pass


class IPv6ReplayTestsBatched(BatchedLoop, IPv6ReplayTests):
    pass


class ReplayedCacheTestsBatched(BatchedLoop, ReplayedCacheTests):
    pass


class BatchedLoopTests(unittest.TestCase):
    """``smartdns._udp`` against the socket module and against the Python loop."""

    def setUp(self) -> None:
        skip_without_module()
        self.udp = server._udp

    def pair(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
        listener = socket.socket(family, socket.SOCK_DGRAM)
        client = socket.socket(family, socket.SOCK_DGRAM)
        for s in (listener, client):
            self.addCleanup(s.close)
        try:
            listener.bind((host, 0))
            client.bind((host, 0))
        except OSError as e:
            raise unittest.SkipTest(f"cannot bind {host}: {e}")
        listener.setblocking(False)
        client.settimeout(1.0)
        return listener, client

    def test_addresses_are_the_socket_modules(self):
        """A datagram the table does not answer comes back with the address tuple recvfrom
        gives, for IPv4 and IPv6."""
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            listener, client = self.pair(family, host)
            client.sendto(b"\x12\x34first", listener.getsockname())
            client.sendto(b"\x12\x34second", listener.getsockname())
            misses: list = []
            client_seen = None
            while not misses:       # loopback delivers at once; read until the first arrives
                read, more = self.udp.serve(listener.fileno(), 512, {}, 0.0, {}, misses)
            if len(misses) == 1:
                data, client_seen = listener.recvfrom(512)
                self.assertEqual(data, b"\x12\x34second")
            else:
                client_seen = misses[1][1]
            self.assertEqual(misses[0], (b"\x12\x34first", client_seen))
            self.assertEqual(misses[0][1], client.getsockname())

    def test_replay_hit_expiry_and_counts(self):
        """A key in the table is answered with the client's ID and counted; an expired one is
        handed back; the table's values are never changed."""
        listener, client = self.pair()
        host = client.getsockname()[0]
        tally = object()
        replay = {(host, b"\x01\x00query"): (b"ANSWER", 10.0, tally)}
        counts: dict = {}
        client.sendto(b"\xab\xcd\x01\x00query", listener.getsockname())
        client.sendto(b"\x00\x01\x01\x00query", listener.getsockname())
        misses: list = []
        got = 0
        while got < 2:
            got += self.udp.serve(listener.fileno(), 512, replay, 5.0, counts, misses)[0]
        self.assertEqual(client.recv(512), b"\xab\xcdANSWER")
        self.assertEqual(client.recv(512), b"\x00\x01ANSWER")
        self.assertEqual(counts, {tally: 2})
        self.assertEqual(misses, [])
        client.sendto(b"\x00\x02\x01\x00query", listener.getsockname())
        while not misses:
            self.udp.serve(listener.fileno(), 512, replay, 10.0, counts, misses)   # valid until 10.0: expired
        self.assertEqual(misses[0][0], b"\x00\x02\x01\x00query")
        self.assertEqual(counts, {tally: 2})
        self.assertEqual(replay, {(host, b"\x01\x00query"): (b"ANSWER", 10.0, tally)})

    def test_empty_socket_and_bad_arguments(self):
        listener, _client = self.pair()
        self.assertEqual(self.udp.serve(listener.fileno(), 512, {}, 0.0, {}, []), (0, False))
        self.assertRaises(TypeError, self.udp.serve, listener.fileno(), 512, [], 0.0, {}, [])
        self.assertRaises(ValueError, self.udp.serve, listener.fileno(), 1 << 20, {}, 0.0, {}, [])
        self.assertRaises(OSError, self.udp.serve, -1, 512, {}, 0.0, {}, [])

    @defer.inlineCallbacks
    def test_both_loops_answer_a_mixed_burst_alike(self):
        """One burst of 300 queued datagrams (replayable, first-time local names, NXDOMAIN,
        garbage, a response) read by each loop: the same answers, ID for ID, and the same
        counters."""
        results = []
        for batched in (False, True):
            self.patch(DNSDatagramPort, "batched", batched)
            service, host, port_number = start_server(self, CONFIG, zones=ZONES)
            handler = service.handler
            rng = random.Random(7)
            queries = []
            for i in range(300):
                kind = i % 5
                if kind == 0:
                    data = dns.message.make_query("www.proto.test", "A").to_wire()
                elif kind == 1:
                    data = dns.message.make_query(f"n{i}.proto.test", "A").to_wire()
                elif kind == 2:
                    data = dns.message.make_query(rng.choice(["WWW.proto.test", "x.wild.proto.test"]), "A",
                                                  use_edns=0).to_wire()
                elif kind == 3:
                    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
                else:
                    data = dns.message.make_query("alias.proto.test", "A").to_wire()
                queries.append(with_id(data, i))
            port = service.ports[0]
            port.stopReading()
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(client.close)
            client.bind((OTHER, 0))
            for data in queries:
                client.sendto(data, (host, port_number))
            port.doRead()
            port.startReading()
            client.settimeout(0.5)
            answers = {}
            try:
                while True:
                    a = client.recv(65535)
                    answers.setdefault(struct.unpack("!H", a[:2])[0], []).append(a)
            except socket.timeout:
                pass
            stats = handler.stats
            results.append((answers, stats.queries, stats.memo_hits, dict(stats.answers), stats.dropped))
            yield service.stopService()
        python, batched_result = results
        self.assertEqual(python[0], batched_result[0])
        self.assertEqual(python[1:], batched_result[1:])
        self.assertGreater(len(python[0]), 200)
        self.assertTrue(all(len(v) == 1 for v in python[0].values()), "every query answered at most once")
