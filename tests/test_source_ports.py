"""Upstream UDP source ports (RFC 5452 §9.2): a fresh socket on a random port per query.

Real sockets on 127.0.0.1 and the real reactor (the subject is sockets); a small UDP fake
upstream here records the client address of every query, which ``FakeUpstream`` does not.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Any, Callable

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from smartdns import forwarder as forwarder_module, wire
from smartdns.config import ForwardConfig, Upstream
from smartdns.errors import UpstreamError
from smartdns.forwarder import Forwarder, Stats, UDPClient

QUERIES = 2000
MIN_DISTINCT_PORTS = 1900
CONCURRENT = 100
SHORT_TIMEOUT_SECONDS = 0.05
LONG_TIMEOUT_SECONDS = 5.0

Reply = Callable[[wire.Query, tuple[str, int], Any], None]   # (query, client, transport)


def answer(query: wire.Query, address: str = "198.51.100.7", *, qid: int | None = None,
           qname: bytes | None = None) -> bytes:
    """A one-record A answer to ``query``, or a near miss with another ID or question name."""
    name = qname if qname is not None else query.qkey
    rrset = wire.make_rrset(name, wire.A, 300, [socket.inet_aton(address)])
    question = name + struct.pack("!HH", query.qtype, query.qclass)
    return wire.render(query.id if qid is None else qid, wire.FLAG_QR | wire.FLAG_RD | wire.FLAG_RA,
                       question, ((rrset,), (), ()))[0]


def answered_address(reply: wire.Reply) -> str:
    """The A record's address in a reply made by ``answer``."""
    return socket.inet_ntoa(reply.data[-4:])


class RecordingUpstream(protocol.DatagramProtocol):
    """A UDP upstream on a loopback port that records the client address of every query."""

    noisy = False

    def __init__(self, testcase: unittest.TestCase, respond: Reply | None = None) -> None:
        self.clients: list[tuple[str, int]] = []
        self.queries: list[wire.Query] = []
        self.respond: Reply = respond or (lambda q, client, t: t.write(answer(q), client))
        self.port = reactor.listenUDP(0, self, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)

    @property
    def upstream(self) -> Upstream:
        return Upstream("udp", "127.0.0.1", self.port.getHost().port)

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        query = wire.parse_query(data)
        self.clients.append((addr[0], addr[1]))
        self.queries.append(query)
        self.respond(query, (addr[0], addr[1]), self.transport)


def closed_port() -> int:
    """A loopback UDP port nobody listens on (bound, then released)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def open_sockets() -> int:
    """How many sockets and epoll sets this process has open (the reactor's own pipes, which
    come and go with trial's reactor runs, are not counted)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:             # the directory listing's own descriptor, closed by now
            continue
        count += target.startswith(("socket:", "anon_inode:[eventpoll]"))
    return count


class SourcePortTests(unittest.TestCase):
    """Each upstream UDP query has a socket of its own, on a random port."""

    timeout = 60

    def forwarder(self, upstreams: list[Upstream], timeout: float = LONG_TIMEOUT_SECONDS) -> Forwarder:
        config = ForwardConfig(tuple(upstreams), timeout=timeout, total_timeout=timeout * len(upstreams))
        forwarder = Forwarder(reactor, config)
        self.addCleanup(forwarder.close)
        return forwarder

    @defer.inlineCallbacks
    def test_two_thousand_queries_leave_from_distinct_ports(self):
        """2,000 forwarded queries, one after another, leave from at least 1,900 source ports."""
        up = RecordingUpstream(self)
        forwarder = self.forwarder([up.upstream])
        for i in range(QUERIES):
            yield forwarder.query(wire.from_text(f"p{i}.example.net"), wire.A)
        self.assertEqual(len(up.clients), QUERIES)
        self.assertGreaterEqual(len({port for _, port in up.clients}), MIN_DISTINCT_PORTS)
        self.assertGreaterEqual(len({q.id for q in up.queries}), MIN_DISTINCT_PORTS)
        self.assertEqual(forwarder.udp.sockets, [])

    @defer.inlineCallbacks
    def test_outstanding_queries_never_share_a_socket(self):
        """Queries outstanding together to one upstream each come from their own port, and every
        one is answered on it."""
        held: list[tuple[wire.Query, tuple[str, int]]] = []
        all_held: defer.Deferred[None] = defer.Deferred()

        def hold(q: wire.Query, client: tuple[str, int], transport: Any) -> None:
            held.append((q, client))
            if len(held) == CONCURRENT:
                all_held.callback(None)

        up = RecordingUpstream(self, hold)
        client = UDPClient(reactor, Stats())
        self.addCleanup(client.close)
        pending = [client.query(up.upstream, wire.from_text(f"c{i}.example.net"), wire.A, wire.IN,
                                LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
                   for i in range(CONCURRENT)]
        yield all_held
        self.assertEqual(len(client.sockets), CONCURRENT)
        self.assertEqual(len({c for _, c in held}), CONCURRENT)
        for i, (query, addr) in enumerate(reversed(held)):
            up.transport.write(answer(query, f"198.51.100.{i % 250}"), addr)
        replies = yield defer.gatherResults(pending)
        self.assertEqual([answered_address(r) for r in replies],
                         [f"198.51.100.{(CONCURRENT - 1 - i) % 250}" for i in range(CONCURRENT)])
        self.assertEqual(client.sockets, [])

    @defer.inlineCallbacks
    def test_wrong_replies_are_dropped_and_counted_then_the_right_one_accepted(self):
        """Replies from another port, with another ID, for another question, or too short are all
        read, dropped and counted; the right reply queued behind them is still accepted."""
        side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        side.bind(("127.0.0.1", 0))
        self.addCleanup(side.close)

        def respond(q: wire.Query, client: tuple[str, int], transport: Any) -> None:
            side.sendto(answer(q, "203.0.113.1"), client)                                   # wrong port
            transport.write(answer(q, "203.0.113.2", qid=(q.id + 1) & 0xFFFF), client)      # wrong ID
            transport.write(answer(q, "203.0.113.3", qname=wire.from_text("bank.example")), client)
            transport.write(struct.pack("!H", q.id), client)                                # garbage
            transport.write(answer(q, "198.51.100.7"), client)

        up = RecordingUpstream(self, respond)
        stats = Stats()
        client = UDPClient(reactor, stats)
        self.addCleanup(client.close)
        reply = yield client.query(up.upstream, wire.from_text("www.example.net"), wire.A, wire.IN,
                                   LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        self.assertEqual(answered_address(reply), "198.51.100.7")
        self.assertEqual(stats.dropped_replies, 4)
        self.assertEqual(client.sockets, [])

    @defer.inlineCallbacks
    def test_only_wrong_replies_time_out(self):
        """With only wrong replies the query times out; they are counted, the timeout too."""
        up = RecordingUpstream(self, lambda q, client, t: t.write(answer(q, qid=(q.id + 1) & 0xFFFF), client))
        stats = Stats()
        client = UDPClient(reactor, stats)
        self.addCleanup(client.close)
        d = client.query(up.upstream, wire.from_text("www.example.net"), wire.A, wire.IN,
                         SHORT_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        failure = yield self.assertFailure(d, UpstreamError)
        self.assertIn("no answer in", str(failure))
        self.assertEqual((stats.dropped_replies, stats.timeouts), (1, 1))
        self.assertEqual(client.sockets, [])

    @defer.inlineCallbacks
    def test_no_descriptor_leak(self):
        """Answered, timed-out and refused queries, and closing the client, leave as many sockets
        open as before."""
        if not os.path.isdir("/proc/self/fd"):
            raise unittest.SkipTest("needs /proc/self/fd to count descriptors")
        answering = RecordingUpstream(self)
        silent = RecordingUpstream(self, lambda q, client, t: None)
        refused = Upstream("udp", "127.0.0.1", closed_port())
        before = open_sockets()
        client = UDPClient(reactor, Stats())

        def ask(upstream: Upstream, i: int, timeout: float) -> defer.Deferred[Any]:
            d = client.query(upstream, wire.from_text(f"f{i}.example.net"), wire.A, wire.IN, timeout,
                             edns_payload=None, do=False, cd=False)
            return d.addErrback(lambda f: f.trap(UpstreamError))

        for round_ in range(3):
            batch = ([ask(answering.upstream, i, LONG_TIMEOUT_SECONDS) for i in range(100)]
                     + [ask(silent.upstream, i, SHORT_TIMEOUT_SECONDS) for i in range(20)]
                     + [ask(refused, i, LONG_TIMEOUT_SECONDS) for i in range(10)])
            yield defer.gatherResults(batch)
            self.assertEqual(client.sockets, [])
            self.assertLessEqual(open_sockets(), before + 1)     # the epoll set, kept while in use
        stuck = ask(silent.upstream, 0, LONG_TIMEOUT_SECONDS)
        client.close()
        yield stuck
        self.assertEqual(open_sockets(), before)

    @defer.inlineCallbacks
    def test_refused_port_fails_over_without_traceback(self):
        """An ICMP port unreachable from a closed upstream port fails that query at once (no
        waiting for the timeout, nothing logged as an error) and the next upstream answers."""
        up = RecordingUpstream(self)
        closed = Upstream("udp", "127.0.0.1", closed_port())
        forwarder = self.forwarder([closed, up.upstream])
        started = reactor.seconds()
        reply = yield forwarder.query(wire.from_text("www.example.net"), wire.A)
        self.assertEqual(answered_address(reply), "198.51.100.7")
        self.assertEqual(forwarder.stats.timeouts, 0)
        if sys.platform.startswith("linux"):
            self.assertLess(reactor.seconds() - started, LONG_TIMEOUT_SECONDS / 2)
        self.assertEqual(forwarder.udp.sockets, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_refused_query_fails_with_the_socket_error(self):
        """On Linux the failure names the ICMP error, so the log says why the upstream was skipped."""
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("ICMP errors on unconnected UDP sockets need Linux IP_RECVERR")
        client = UDPClient(reactor, Stats())
        self.addCleanup(client.close)
        d = client.query(Upstream("udp", "127.0.0.1", closed_port()), wire.from_text("www.example.net"),
                         wire.A, wire.IN, LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        failure = yield self.assertFailure(d, UpstreamError)
        self.assertIn("refused", str(failure).lower())

    def test_close_fails_pending_queries(self):
        """Closing the client fails what is outstanding and closes its sockets."""
        up = RecordingUpstream(self, lambda q, client, t: None)
        client = UDPClient(reactor, Stats())
        d = client.query(up.upstream, wire.from_text("www.example.net"), wire.A, wire.IN,
                         LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        self.assertEqual(len(client.sockets), 1)
        client.close()
        self.assertIn("forwarder stopped", str(self.failureResultOf(d, UpstreamError).value))
        self.assertEqual(client.sockets, [])

    @defer.inlineCallbacks
    def test_a_shorter_timeout_sent_later_expires_first(self):
        """The queries' deadlines share one reactor timer: a query sent after a long-lived one but
        with a shorter timeout still fails on time, and the long one keeps waiting."""
        silent = RecordingUpstream(self, lambda q, client, t: None)
        stats = Stats()
        client = UDPClient(reactor, stats)
        self.addCleanup(client.close)
        slow = client.query(silent.upstream, wire.from_text("slow.example.net"), wire.A, wire.IN,
                            LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        slow.addErrback(lambda f: f.trap(UpstreamError))
        started = reactor.seconds()
        quick = client.query(silent.upstream, wire.from_text("quick.example.net"), wire.A, wire.IN,
                             SHORT_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        failure = yield self.assertFailure(quick, UpstreamError)
        self.assertIn(f"no answer in {SHORT_TIMEOUT_SECONDS:g}s", str(failure))
        self.assertLess(reactor.seconds() - started, LONG_TIMEOUT_SECONDS / 2)
        self.assertEqual((stats.timeouts, len(client.sockets)), (1, 1))
        self.assertFalse(slow.called)

    @defer.inlineCallbacks
    def test_formerr_without_opt_is_asked_again_without_edns(self):
        """An upstream that answers FORMERR with no OPT does not speak EDNS (RFC 6891 §7): the
        walk asks it again without OPT, from another random port, and takes that answer."""
        def respond(q: wire.Query, client: tuple[str, int], transport: Any) -> None:
            if q.edns is not None:
                question = q.qname + struct.pack("!HH", q.qtype, q.qclass)
                transport.write(wire.render(q.id, wire.FLAG_QR | wire.FORMERR, question, ((), (), ()))[0], client)
            else:
                transport.write(answer(q), client)

        up = RecordingUpstream(self, respond)
        forwarder = self.forwarder([up.upstream])
        reply = yield forwarder.query(wire.from_text("old.example.net"), wire.A)
        self.assertEqual(answered_address(reply), "198.51.100.7")
        self.assertEqual([q.edns is not None for q in up.queries], [True, False])
        self.assertEqual(len({port for _, port in up.clients}), 2)
        self.assertEqual(forwarder.stats.failures, 0)
        self.assertEqual(forwarder.udp.sockets, [])

    @defer.inlineCallbacks
    def test_a_bug_handling_a_reply_fails_that_query_only(self):
        """An exception while a UDP reply is handled (here: counting it) fails that query's
        Deferred instead of reaching the socket loop, which would fail every query in flight."""
        up = RecordingUpstream(self)
        forwarder = self.forwarder([up.upstream])

        def broken(upstream: str, rcode: int, seconds: float) -> None:
            raise RuntimeError("counting failed")

        self.patch(forwarder.stats, "replied", broken)
        yield self.assertFailure(forwarder.query(wire.from_text("bug.example.net"), wire.A), RuntimeError)
        self.assertEqual(forwarder.udp.sockets, [])
        self.patch(forwarder.stats, "replied", Stats.replied.__get__(forwarder.stats))
        reply = yield forwarder.query(wire.from_text("ok.example.net"), wire.A)
        self.assertEqual(answered_address(reply), "198.51.100.7")

    @defer.inlineCallbacks
    def test_answered_queries_leave_no_deadlines_behind(self):
        """Answered queries' deadlines are dropped: all at once when nothing is outstanding, and
        by compaction while a slow query keeps the timer busy, so the heap stays bounded."""
        up = RecordingUpstream(self)
        silent = RecordingUpstream(self, lambda q, client, t: None)
        client = UDPClient(reactor, Stats())
        self.addCleanup(client.close)
        slow = client.query(silent.upstream, wire.from_text("slow.example.net"), wire.A, wire.IN,
                            LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        slow.addErrback(lambda f: f.trap(UpstreamError))
        answered = forwarder_module.DEADLINE_SLACK + 200
        for i in range(answered):
            yield client.query(up.upstream, wire.from_text(f"d{i}.example.net"), wire.A, wire.IN,
                               LONG_TIMEOUT_SECONDS, edns_payload=None, do=False, cd=False)
        self.assertLessEqual(len(client._deadlines), 4 + forwarder_module.DEADLINE_SLACK + 1)
        client.close()
        self.assertEqual(client._deadlines, [])



class ReactorReaderSourcePortTests(SourcePortTests):
    """The same, where there is no epoll: each socket is a reactor reader of its own."""

    def setUp(self) -> None:
        self.patch(forwarder_module, "_HAVE_EPOLL", False)


class ReplyMatchTests(unittest.TestCase):
    """``_match_reply`` (the UDP sockets' quick check) accepts and reads exactly what
    ``wire.check_reply`` does."""

    def variants(self, qname: bytes, qtype: int) -> list[bytes]:
        query = wire.parse_query(wire.encode_query(0x1234, qname, qtype))
        good = answer(query)
        flags_at, qd_at, q_at = 2, 4, wire.HEADER.size
        end = q_at + len(qname)
        return [
            good,
            good[:q_at] + good[q_at:end].upper() + good[end:],                       # 0x20-style echo
            good[:flags_at] + bytes([good[flags_at] & 0x7F]) + good[flags_at + 1:],   # QR clear
            good[:qd_at] + b"\x00\x00" + good[qd_at + 2:],                             # no question
            good[:qd_at] + b"\x00\x02" + good[qd_at + 2:],                             # two questions
            good[:end] + struct.pack("!HH", qtype ^ 1, wire.IN) + good[end + 4:],      # another type
            good[:end] + struct.pack("!HH", qtype, wire.CH) + good[end + 4:],          # another class
            good[:end + 2],                                                            # cut in the question
            good[:q_at] + b"\x05other" + good[end - 1:],                               # another name
            good[:wire.HEADER.size],                                                   # header only
        ]

    def test_quick_check_agrees_with_check_reply(self) -> None:
        for qname, qtype in ((wire.from_text("www.example.net"), wire.A), (wire.ROOT, wire.NS),
                             (wire.from_text("MiXeD.Example"), wire.AAAA)):
            sent = qname + struct.pack("!HH", qtype, wire.IN)
            question = (qname, qtype, wire.IN)
            for i, data in enumerate(self.variants(qname, qtype)):
                quick = forwarder_module._match_reply(data, sent, question)
                full = wire.check_reply(data, question)
                self.assertEqual(quick is None, full is None, (qname, i))
                if quick is not None and full is not None:
                    self.assertEqual((quick.data, quick.flags, quick.qend), (full.data, full.flags, full.qend))
