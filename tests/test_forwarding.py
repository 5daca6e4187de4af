"""Forwarding and caching against fake upstreams that are real servers on loopback ports."""
from __future__ import annotations

import struct

import dns.flags
import dns.rcode
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from smartdns import wire
from tests.support import (FakeUpstream, ShiftedReactor, answer_a, answer_negative, query, rrs,
                           start_server)

WAIT_STEP_SECONDS = 0.02


def ips(message) -> list[str]:
    return [r.split()[-1] for r in rrs(message)]


def ttls(message) -> list[int]:
    return [int(r.split()[1]) for r in rrs(message)]


class ForwardingTests(unittest.TestCase):
    """Upstream pools, caching rules and poisoning defences, end to end."""

    timeout = 30

    def start(self, upstreams: list[FakeUpstream], extra: str = "", forward_extra: str = "",
              timeout: float = 0.3, total: float = 2.0, scheme: str = ""):
        self.clock = ShiftedReactor()
        listed = ", ".join(f'"{scheme}{u.address}"' for u in upstreams)
        config = f"""
        [forward]
        upstreams = [{listed}]
        timeout = {timeout}
        total_timeout = {total}
        {forward_extra}
        {extra}
        """
        self.service, self.host, self.port = start_server(self, config, clock=self.clock)

    def upstream(self, answer) -> FakeUpstream:
        return FakeUpstream(answer).start(self)

    @defer.inlineCallbacks
    def wait_for(self, condition, limit: float = 5.0):
        waited = 0.0
        while not condition():
            self.assertLess(waited, limit, "condition not met in time")
            yield task.deferLater(reactor, WAIT_STEP_SECONDS, lambda: None)
            waited += WAIT_STEP_SECONDS

    @defer.inlineCallbacks
    def test_failover_on_timeout_then_back_off_and_recovery(self):
        """A silent upstream is skipped after its timeout, then avoided while down, probed, and used
        again once it answers."""
        state = {"alive": False}
        first = self.upstream(lambda q, t: answer_a(q, ["198.51.100.1"], ttl=1) if state["alive"] else None)
        second = self.upstream(lambda q, t: answer_a(q, ["198.51.100.2"], ttl=1))
        self.start([first, second])
        reply = yield query(self.host, self.port, "a.example.net")
        self.assertEqual(ips(reply), ["198.51.100.2"])
        self.assertEqual((len(first.queries), len(second.queries)), (1, 1))
        reply = yield query(self.host, self.port, "b.example.net")       # first is down: not asked
        self.assertEqual(ips(reply), ["198.51.100.2"])
        self.assertEqual(len(first.queries), 1)
        state["alive"] = True
        pool = self.service.forwarder.pools[0]
        health = pool.health[pool.upstreams[0]]
        yield self.wait_for(lambda: health.probes >= 1 and health.down_until == 0.0)
        self.assertEqual(first.queries[-1][1].qkey, wire.ROOT)            # the probe asks for ". NS"
        reply = yield query(self.host, self.port, "c.example.net")
        self.assertEqual(ips(reply), ["198.51.100.1"])

    @defer.inlineCallbacks
    def test_conditional_forwarding_longest_suffix_wins(self):
        """[[forward.zone]] sends a suffix to its own upstreams; the longest suffix wins."""
        default = self.upstream(lambda q, t: answer_a(q, ["198.51.100.1"]))
        corp = self.upstream(lambda q, t: answer_a(q, ["10.0.0.1"]))
        dev = self.upstream(lambda q, t: answer_a(q, ["10.0.0.2"]))
        self.start([default], forward_extra=f"""
        [[forward.zone]]
        name = "corp.test"
        upstreams = ["{corp.address}"]
        [[forward.zone]]
        name = "dev.corp.test."
        upstreams = ["{dev.address}"]
        """)
        answers = []
        for name in ("www.example.net", "app.corp.test", "api.dev.corp.test", "corp.test"):
            answers.append(ips((yield query(self.host, self.port, name))))
        self.assertEqual(answers, [["198.51.100.1"], ["10.0.0.1"], ["10.0.0.2"], ["10.0.0.1"]])

    @defer.inlineCallbacks
    def test_tcp_upstream_is_reused_and_pipelined(self):
        """Concurrent queries to a tcp:// upstream share one connection."""
        up = self.upstream(lambda q, t: answer_a(q, ["198.51.100.3"]))
        self.start([up], scheme="tcp://")
        replies = yield defer.gatherResults([query(self.host, self.port, f"p{i}.example.net") for i in range(5)])
        self.assertEqual([ips(r) for r in replies], [["198.51.100.3"]] * 5)
        self.assertEqual(up.tcp_connections, 1)
        self.assertEqual({t for t, _ in up.queries}, {"tcp"})

    @defer.inlineCallbacks
    def test_serve_stale_when_every_upstream_fails(self):
        """An expired entry is served with TTL 30 when the upstream has gone silent (RFC 8767)."""
        state = {"alive": True}
        up = self.upstream(lambda q, t: answer_a(q, ["198.51.100.4"], ttl=10) if state["alive"] else None)
        self.start([up], extra="[cache]\nserve_stale = 3600\nprefetch = false")
        yield query(self.host, self.port, "stale.example.net")
        state["alive"] = False
        self.clock.advance(60)
        reply = yield query(self.host, self.port, "stale.example.net")
        self.assertEqual(ips(reply), ["198.51.100.4"])
        self.assertEqual(ttls(reply), [30])

    @defer.inlineCallbacks
    def test_no_stale_answers_by_default(self):
        """Without serve_stale an expired entry is not used: the client gets SERVFAIL."""
        state = {"alive": True}
        up = self.upstream(lambda q, t: answer_a(q, ["198.51.100.4"], ttl=10) if state["alive"] else None)
        self.start([up])
        yield query(self.host, self.port, "stale.example.net")
        state["alive"] = False
        self.clock.advance(60)
        reply = yield query(self.host, self.port, "stale.example.net")
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)

    @defer.inlineCallbacks
    def test_ttl_counts_down_and_prefetch_refreshes(self):
        """A hit shows the TTL counted down; one asked in the last tenth of its TTL is refreshed once
        in the background."""
        up = self.upstream(lambda q, t: answer_a(q, ["198.51.100.5"], ttl=100))
        self.start([up])
        yield query(self.host, self.port, "hot.example.net")
        self.clock.advance(40)
        reply = yield query(self.host, self.port, "hot.example.net")
        self.assertEqual(ttls(reply), [60])
        self.assertEqual(len(up.queries), 1)
        self.clock.advance(55)
        reply = yield query(self.host, self.port, "hot.example.net")
        yield query(self.host, self.port, "hot.example.net")
        self.assertEqual(ttls(reply), [5])
        yield self.wait_for(lambda: len(up.queries) == 2 and not self.service.resolver._inflight)
        reply = yield query(self.host, self.port, "hot.example.net")
        self.assertEqual(ttls(reply), [100])
        self.assertEqual(len(up.queries), 2)

    @defer.inlineCallbacks
    def test_negative_answers_are_cached_by_soa_minimum(self):
        """NXDOMAIN is cached for min(SOA TTL, MINIMUM) and asked again after that."""
        up = self.upstream(lambda q, t: answer_negative(q, wire.NXDOMAIN, soa_ttl=3600, minimum=60))
        self.start([up])
        first = yield query(self.host, self.port, "gone.example.net")
        self.clock.advance(30)
        second = yield query(self.host, self.port, "gone.example.net")
        self.assertEqual((first.rcode(), second.rcode()), (dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN))
        self.assertEqual(len(up.queries), 1)
        self.assertEqual([int(r.split()[1]) for r in rrs(second, "authority")], [30])
        self.clock.advance(31)
        yield query(self.host, self.port, "gone.example.net")
        self.assertEqual(len(up.queries), 2)

    @defer.inlineCallbacks
    def test_servfail_is_cached_briefly(self):
        """After every upstream failed, the same question is not re-sent for servfail_ttl (RFC 9520)."""
        up = self.upstream(lambda q, t: answer_a(q, [], rcode=wire.SERVFAIL))
        self.start([up], extra="[cache]\nservfail_ttl = 5")
        yield query(self.host, self.port, "broken.example.net")
        reply = yield query(self.host, self.port, "broken.example.net")
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertEqual(len(up.queries), 1)
        self.clock.advance(6)
        yield query(self.host, self.port, "broken.example.net")
        self.assertEqual(len(up.queries), 2)

    @defer.inlineCallbacks
    def test_lru_bound(self):
        """With max_entries = 2, the least recently used entry is evicted first."""
        up = self.upstream(lambda q, t: answer_a(q, ["198.51.100.6"]))
        self.start([up], extra="[cache]\nmax_entries = 2")
        for name in ("a", "b", "a", "c", "a", "b"):
            yield query(self.host, self.port, f"{name}.example.net")
        self.assertEqual([q.qkey for _, q in up.queries],
                         [wire.from_text(n + ".example.net") for n in ("a", "b", "c", "b")])
        self.assertEqual(len(self.service.cache), 2)

    @defer.inlineCallbacks
    def test_edns_and_do_bit_are_passed_upstream(self):
        """Upstream queries carry OPT with our UDP size and the client's DO bit; the key keeps DO apart."""
        up = self.upstream(lambda q, t: answer_a(q, ["198.51.100.7"]))
        self.start([up])
        yield query(self.host, self.port, "sec.example.net", edns=0, want_dnssec=True)
        yield query(self.host, self.port, "sec.example.net")
        self.assertEqual([(q.edns.payload, q.edns.do) for _, q in up.queries], [(1232, True), (1232, False)])

    @defer.inlineCallbacks
    def test_reply_with_wrong_id_is_dropped(self):
        """A reply whose ID does not match is ignored and counted; the client gets SERVFAIL."""
        def answer(q, t):
            reply = bytearray(answer_a(q, ["203.0.113.66"]))
            struct.pack_into("!H", reply, 0, (q.id + 1) & 0xFFFF)
            return bytes(reply)
        up = self.upstream(answer)
        self.start([up], timeout=0.2, total=0.5)
        reply = yield query(self.host, self.port, "bank.example.net")
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertGreaterEqual(self.service.forwarder.stats.dropped_replies, 1)

    @defer.inlineCallbacks
    def test_reply_from_wrong_port_is_dropped(self):
        """A correct-looking reply sent from another port than the one queried is ignored."""
        side = reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(side.stopListening)
        up = self.upstream(lambda q, t: None)

        def answer(q, t):
            side.write(answer_a(q, ["203.0.113.66"]), up.last_client)
            return None
        up.answer = answer
        self.start([up], timeout=0.2, total=0.5)
        reply = yield query(self.host, self.port, "bank.example.net")
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertGreaterEqual(self.service.forwarder.stats.dropped_replies, 1)

    @defer.inlineCallbacks
    def test_out_of_bailiwick_records_are_not_cached(self):
        """Extra records for other names in a reply are dropped before caching and never served."""
        def answer(q, t):
            good = wire.make_rrset(q.qkey, wire.A, 300, [bytes([198, 51, 100, 8])])
            evil = wire.make_rrset(wire.from_text("bank.example"), wire.A, 300, [bytes([203, 0, 113, 66])])
            return wire.render(q.id, wire.FLAG_QR | wire.FLAG_RA | wire.FLAG_RD, q.question,
                               ((good, evil), (), (evil,)))[0]
        up = self.upstream(answer)
        self.start([up])
        reply = yield query(self.host, self.port, "www.example.net")
        self.assertEqual(rrs(reply), ["www.example.net. 300 A 198.51.100.8"])
        self.assertEqual(rrs(reply, "additional"), [])

    @defer.inlineCallbacks
    def test_identical_misses_share_one_upstream_query(self):
        """Concurrent identical questions cause one upstream query."""
        pending = []
        up = self.upstream(lambda q, t: pending.append(q) or None)
        self.start([up], timeout=2.0, total=3.0)
        replies = [query(self.host, self.port, "same.example.net") for _ in range(4)]
        yield self.wait_for(lambda: len(pending) >= 1)
        yield task.deferLater(reactor, 0.2, lambda: None)      # let every client's query arrive
        self.assertEqual(len(pending), 1)
        up.udp.write(answer_a(pending[0], ["198.51.100.9"]), up.last_client)
        results = yield defer.gatherResults(replies)
        self.assertEqual([ips(r) for r in results], [["198.51.100.9"]] * 4)


class PoolPolicyTests(unittest.TestCase):
    """round_robin spreads queries; source ports and IDs vary (RFC 5452)."""

    timeout = 30

    @defer.inlineCallbacks
    def test_round_robin_and_random_spread_queries(self):
        """Each policy sends queries to every upstream."""
        for policy in ("round_robin", "random"):
            ups = [FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.1"])).start(self) for _ in range(3)]
            clock = ShiftedReactor()
            listed = ", ".join(f'"{u.address}"' for u in ups)
            service, host, port = start_server(self, f"""
            [forward]
            upstreams = [{listed}]
            policy = "{policy}"
            """, clock=clock)
            for i in range(30):
                yield query(host, port, f"n{i}.example.net")
            counts = [len(u.queries) for u in ups]
            self.assertEqual(sum(counts), 30)
            self.assertTrue(all(c > 0 for c in counts), (policy, counts))
            if policy == "round_robin":
                self.assertEqual(counts, [10, 10, 10])

    @defer.inlineCallbacks
    def test_source_ports_and_ids_vary(self):
        """Upstream queries come from several source ports with random IDs."""
        ports = []
        up = FakeUpstream(lambda q, t: ports.append(up.last_client[1]) or answer_a(q, ["198.51.100.1"]))
        up.start(self)
        service, host, port = start_server(self, f"""
        [forward]
        upstreams = ["{up.address}"]
        """)
        for i in range(40):
            yield query(host, port, f"p{i}.example.net")
        self.assertGreaterEqual(len(set(ports)), 8)
        ids = [q.id for _, q in up.queries]
        self.assertGreaterEqual(len(set(ids)), 38)


class ServeStaleTimerTests(unittest.TestCase):
    """RFC 8767 §5: a slow upstream does not hold a stale-capable answer back."""

    timeout = 30

    @defer.inlineCallbacks
    def test_stale_answer_after_the_client_response_timer(self):
        """With serve_stale on and a silent upstream, the expired entry is sent after about 1.8 s,
        well before the upstream's total timeout."""
        state = {"alive": True}
        up = FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.4"], ttl=10) if state["alive"] else None)
        up.start(self)
        clock = ShiftedReactor()
        service, host, port = start_server(self, f"""
        [forward]
        upstreams = ["{up.address}"]
        timeout = 4.0
        total_timeout = 8.0
        [cache]
        serve_stale = 3600
        prefetch = false
        """, clock=clock)
        yield query(host, port, "stale.example.net")
        state["alive"] = False
        clock.advance(60)
        started = reactor.seconds()
        reply = yield query(host, port, "stale.example.net")
        self.assertEqual((ips(reply), ttls(reply)), (["198.51.100.4"], [30]))
        self.assertLess(reactor.seconds() - started, 3.5)


class OutstandingLimitTests(unittest.TestCase):
    """[forward] max_outstanding bounds the questions waiting on upstreams."""

    timeout = 30

    @defer.inlineCallbacks
    def test_new_questions_beyond_the_limit_get_servfail_at_once(self):
        """With one question waiting, a different one is SERVFAIL at once (and not cached); the
        same one still shares the waiting query; after the answer, new questions go out again."""
        held = []
        up = FakeUpstream(lambda q, t: held.append(q) or None).start(self)
        service, host, port = start_server(self, f"""
        [forward]
        upstreams = ["{up.address}"]
        timeout = 3.0
        total_timeout = 4.0
        max_outstanding = 1
        """)
        first = query(host, port, "a.example.net")
        while not held:
            yield task.deferLater(reactor, WAIT_STEP_SECONDS, lambda: None)
        started = reactor.seconds()
        refused = yield query(host, port, "b.example.net")
        self.assertEqual(refused.rcode(), dns.rcode.SERVFAIL)
        self.assertLess(reactor.seconds() - started, 1.0)
        same = query(host, port, "a.example.net")
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(held), 1)
        up.udp.write(answer_a(held[0], ["198.51.100.1"]), up.last_client)
        replies = yield defer.gatherResults([first, same])
        self.assertEqual([ips(r) for r in replies], [["198.51.100.1"]] * 2)
        self.assertEqual(service.resolver.overloaded, 1)
        up.answer = lambda q, t: answer_a(q, ["198.51.100.2"])
        again = yield query(host, port, "b.example.net")
        self.assertEqual(ips(again), ["198.51.100.2"])
