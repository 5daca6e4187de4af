"""The fast lanes never change a response: a differential property test.

Two ``QueryHandler``s differ only in ``fast_lanes``; each has its own cache, ``ForwardResolver``
and stages (so the caches evolve the same way), both read one ``task.Clock`` and one snapshot.
Hypothesis draws sequences of queries (names local, overlaid, policed, wildcarded, CNAMEd and
DNAMEd in and out of the zones, forwarded, failing, flaky; 0x20 case; EDNS absent or with any
payload, DO, CD, RD, AD; UDP or TCP; eight clients in two lines, in none, with and without
recursion), repeats of earlier queries with one thing changed, and clock advances across TTLs,
prefetch points and stale windows.  The fast handler answers UDP through the replay table first,
as ``DNSDatagramPort.doRead`` does, then through ``handle`` (the memo); the slow one only through
``handle``.  The two must be byte-identical, drops included.

The upstream side is a fake forwarder answering at once from a fixed table, so forwarded
answers, cache hits, prefetch and serve-stale all run synchronously and deterministically.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, replace
from typing import Any, Sequence

import dns.message
import dns.rdatatype
from hypothesis import HealthCheck, example, given, settings, strategies as st
from twisted.internet import defer, task
from twisted.trial import unittest

from smartdns import wire
from smartdns.cache import AnswerCache
from smartdns.chain import CacheStage, UpstreamStage, compose
from smartdns.config import CacheConfig
from smartdns.errors import UpstreamError
from smartdns.resolver import ForwardResolver
from smartdns.server import QueryHandler
from smartdns.snapshot import Snapshot, build_snapshot
from tests.test_resolver import reply_bytes
from tests.unit_support import make_config

START_SECONDS = 10_000.0         # the shared clock's reading when an example starts
FLAKY_PERIOD_SECONDS = 50        # flaky.fwd.example answers in even periods, fails in odd ones
MIN_STEPS = 8                    # shorter scripts rarely repeat anything
MAX_STEPS = 40
CHAOS_VERSION = "fastlanes-test"

BIG = " ".join(['"' + "b" * 200 + '"'] * 3)       # ~600 bytes: cut at 512, fits 1232
HUGE = " ".join(['"' + "h" * 200 + '"'] * 8)      # ~1600 bytes: cut at 512 and 1232, fits TCP

ZONES = {
    "fl.test.zone": f"""
        $TTL 300
        @        SOA   ns1 hostmaster 1 3600 600 86400 60
        @        NS    ns1
        ns1      A     192.0.2.1
        www      A     192.0.2.2
        www      AAAA  2001:db8::2
        www      MX    10 mail
        mail     A     192.0.2.3
        txtonly  TXT   "no address here"
        *.wild   A     192.0.2.99
        *.wild   TXT   "wild"
        alias    CNAME www
        out      CNAME short.fwd.example.
        outnx    CNAME nx.fwd.example.
        outfail  CNAME fail.fwd.example.
        outflaky CNAME flaky.fwd.example.
        sub      DNAME other.test.
        ext      DNAME fwd.example.
        big      TXT   {BIG}
        huge     TXT   {HUGE}
        quiet    A     192.0.2.50
        deleg    NS    ns.deleg
        ns.deleg A     192.0.2.77
        ns.ovcut A     192.0.2.78
        ns.ovcut TXT   "a plain answer, but glue for east"
        MixedCase A    192.0.2.80
        MixedCase TXT  "zone spelling"
    """,
    "east/fl.test.zone": """
        www      A     10.1.0.2
        secret   A     10.1.0.99
        alias    CNAME long.fwd.example.
        ovcut    NS    ns.ovcut
    """,
    "west/fl.test.zone": """
        www      A     10.2.0.2
        big      TXT   "west is small"
    """,
    "other.test.zone": """
        $TTL 600
        @        SOA   ns1.fl.test. hostmaster.fl.test. 1 3600 600 86400 30
        @        NS    ns1.fl.test.
        www      A     198.51.100.1
    """,
}
CONFIG = """
[lines]
east = ["10.1.0.0/16"]
west = ["10.2.0.0/16", "192.0.2.0/24"]
[access]
recursion = ["10.0.0.0/8"]
[cache]
serve_stale = 3600
prefetch = true
servfail_ttl = 5
[forward]
upstreams = ["127.0.0.1:5399"]
[[policy]]
names = ["blocked.fl.test"]
action = "refuse"
[[policy]]
names = ["*.ads.fl.test"]
action = "nxdomain"
[[policy]]
names = ["quiet.fl.test"]
action = "nodata"
lines = ["east"]
[[policy]]
names = ["gone.fl.test"]
action = "drop"
"""

NAMES = (
    "fl.test", "www.fl.test", "mail.fl.test", "nx.fl.test", "txtonly.fl.test", "x.wild.fl.test",
    "deep.y.wild.fl.test", "alias.fl.test", "out.fl.test", "outnx.fl.test", "outfail.fl.test",
    "outflaky.fl.test", "www.sub.fl.test", "short.ext.fl.test", "big.fl.test", "huge.fl.test",
    "blocked.fl.test", "x.ads.fl.test", "quiet.fl.test", "gone.fl.test", "secret.fl.test",
    "www.other.test", "short.fwd.example", "long.fwd.example", "chain.fwd.example",
    "bigfwd.fwd.example", "nx.fwd.example", "fail.fwd.example", "flaky.fwd.example",
    "unknown.fwd.example", "version.bind", "deleg.fl.test", "ns.deleg.fl.test", "x.deleg.fl.test",
    "ns.ovcut.fl.test", "mixedcase.fl.test",
)
BIG_NAMES = ("big.fl.test", "huge.fl.test", "bigfwd.fwd.example")
QTYPES = (wire.A, wire.AAAA, wire.MX, wire.TXT, wire.CNAME, wire.ANY, wire.NS)
CH, CLASS_ANY = 3, 255
EAST, EAST2, EAST_MAPPED, WEST, WEST_NOREC, NOLINE, OUTSIDE, OUTSIDE6 = (
    "10.1.0.5", "10.1.0.6", "::ffff:10.1.0.5", "10.2.0.7", "192.0.2.9", "10.9.9.9", "203.0.113.5", "2001:db8::5")
CLIENTS = (EAST, EAST2, EAST_MAPPED, WEST, WEST_NOREC, NOLINE, OUTSIDE, OUTSIDE6)
PAYLOADS = (0, 1, 511, 512, 513, 1231, 1232, 1233, 4096, 65535)
COOKIE = struct.pack("!HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"     # RFC 7873 client cookie
PADDING = struct.pack("!HH", 12, 4) + b"\x00" * 4                             # RFC 7830
ECS = struct.pack("!HHHBB", 8, 7, 1, 24, 0) + b"\x0a\x01\x00"                     # RFC 7871 10.1.0.0/24

FWD_SOA = "fwd.example. 600 SOA ns.fwd.example. hostmaster.fwd.example. 1 3600 600 86400 60"
# Positive answers of the fake upstream: name → A records (also given for ANY) with their TTLs.
FORWARDED_A = {
    "short.fwd.example": ["short.fwd.example. 30 A 198.51.100.30"],
    "long.fwd.example": ["long.fwd.example. 300 A 198.51.100.200", "long.fwd.example. 300 A 198.51.100.201"],
    "flaky.fwd.example": ["flaky.fwd.example. 20 A 198.51.100.77"],
    "chain.fwd.example": ["chain.fwd.example. 120 CNAME long.fwd.example.",
                          "long.fwd.example. 300 A 198.51.100.200"],
}
FORWARDED_TXT = {
    "bigfwd.fwd.example": ["bigfwd.fwd.example. 100 TXT " + " ".join(['"' + "f" * 250 + '"'] * 6)],
}


# -- the queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One query, as the bytes a client sends and the address it sends them from."""

    name: str
    case: int = 0             # bit i set: the i-th letter of the name in upper case (0x20)
    qtype: int = wire.A
    qclass: int = wire.IN
    client: str = EAST
    edns: int | None = None   # the advertised payload; None: no OPT record
    version: int = 0          # EDNS version (1: BADVERS)
    do: bool = False
    option: bytes = b""       # EDNS options, echoed by nobody
    rd: bool = True
    cd: bool = False
    ad: bool = False
    noise: int = 0            # header bits no answer depends on: AA, TC (byte 2), Z, RA (byte 3)
    opcode: int = 0
    tcp: bool = False
    qid: int = 0x1234

    def name_bytes(self) -> bytes:
        """The name in wire form, letters cased by ``case``."""
        out = bytearray(wire.from_text(self.name))
        bit = 0
        for i, byte in enumerate(out):
            if 0x61 <= byte <= 0x7A:
                if self.case >> bit & 1:
                    out[i] = byte - 0x20
                bit += 1
        return bytes(out)

    def data(self) -> bytes:
        """The query message."""
        byte2 = self.opcode << 3 | (0x01 if self.rd else 0) | (0x04 if self.noise & 1 else 0) \
            | (0x02 if self.noise & 2 else 0)
        byte3 = (0x20 if self.ad else 0) | (0x10 if self.cd else 0) | (0x40 if self.noise & 4 else 0) \
            | (0x80 if self.noise & 8 else 0)
        header = struct.pack("!HBBHHHH", self.qid, byte2, byte3, 1, 0, 0, 0 if self.edns is None else 1)
        question = self.name_bytes() + struct.pack("!HH", self.qtype, self.qclass)
        if self.edns is None:
            return header + question
        ttl = self.version << 16 | (wire.EDNS_DO if self.do else 0)
        opt = b"\x00" + struct.pack("!HHIH", wire.OPT, self.edns, ttl, len(self.option)) + self.option
        return header + question + opt


@dataclass(frozen=True)
class Repeat:
    """An earlier query again (``back`` queries ago, 0: the last), with ``change`` applied,
    sent ``times`` times in a row (a query is memoised on its first answer and replayed from
    its third)."""

    back: int = 0
    change: str = ""          # "" (the same bytes) or a field of Ask to change, see ``apply``
    value: int = 0
    times: int = 1

    def apply(self, ask: Ask) -> Ask:
        """The earlier query with this step's change."""
        change, value = self.change, self.value
        if change == "id":
            return replace(ask, qid=value & 0xFFFF)
        if change == "edns":
            return replace(ask, edns=None if ask.edns is not None else value & 0xFFFF)
        if change == "payload":
            return replace(ask, edns=value & 0xFFFF)
        if change in ("do", "rd", "cd", "ad", "tcp"):
            toggled: dict[str, Any] = {change: not getattr(ask, change)}
            return replace(ask, **toggled)
        if change == "client":
            return replace(ask, client=CLIENTS[value % len(CLIENTS)])
        if change == "case":
            return replace(ask, case=value)
        if change == "noise":
            return replace(ask, noise=value & 0xF)
        return ask


@dataclass(frozen=True)
class Advance:
    """The shared clock moves on."""

    seconds: float


Step = Ask | Repeat | Advance
Sent = tuple[Ask, bytes | None]             # a query sent and the (identical) answer to it

payloads = st.one_of(st.sampled_from(PAYLOADS), st.integers(0, 65535))


def ask_strategy(names: Sequence[str], qtypes: Sequence[int]) -> st.SearchStrategy[Ask]:
    """Queries for ``names`` and ``qtypes``, every other field drawn freely."""
    return st.builds(
        Ask,
        name=st.sampled_from(names),
        case=st.one_of(st.just(0), st.integers(0, 2**32 - 1)),
        qtype=st.sampled_from(qtypes),
        qclass=st.sampled_from((wire.IN,) * 18 + (CH, CLASS_ANY)),
        client=st.sampled_from(CLIENTS),
        edns=st.one_of(st.none(), payloads),
        version=st.sampled_from((0,) * 19 + (1,)),
        do=st.booleans(),
        option=st.sampled_from((b"",) * 4 + (COOKIE, PADDING, ECS)),
        rd=st.booleans(),
        cd=st.booleans(),
        ad=st.booleans(),
        noise=st.sampled_from((0,) * 15 + tuple(range(1, 16))),
        opcode=st.sampled_from((0,) * 39 + (4,)),
        tcp=st.booleans(),
        qid=st.integers(0, 0xFFFF),
    )


# Big answers are a few names of many: asked for on their own too, so truncation comes up often.
asks = st.one_of(ask_strategy(NAMES, QTYPES), ask_strategy(BIG_NAMES, (wire.TXT, wire.ANY)))
repeats = st.builds(
    Repeat,
    back=st.one_of(st.just(0), st.integers(0, 6)),
    change=st.sampled_from(("",) * 4 + ("id",) * 3 + ("edns", "payload", "do", "rd", "cd", "ad", "tcp",
                                                       "client", "case", "noise")),
    value=st.one_of(st.sampled_from(PAYLOADS), st.integers(0, 2**32 - 1)),
    times=st.integers(1, 3),
)
advances = st.builds(Advance, st.sampled_from((0, 0.25, 0.5, 0.999, 1, 1.5, 3, 5, 10, 21, 29, 31, 45, 61,
                                               121, 271, 301, 900, 4000)))
steps = st.lists(st.one_of(asks, repeats, repeats, advances), min_size=MIN_STEPS, max_size=MAX_STEPS)


# -- the fake upstream -------------------------------------------------------------------------


@dataclass
class FakePool:
    """The part of ``forwarder.Pool`` the resolver and stages read."""

    index: int
    upstreams: tuple[str, ...] = ("fake",)


@dataclass
class FakeStats:
    """The part of ``forwarder.Stats`` the resolver writes."""

    overloaded: int = 0


@functools.cache
def upstream_bytes(text: str, qtype: int) -> bytes:
    """The fake upstream's reply to a question, built once (dnspython shuffles RRsets as it
    renders them, and both handlers must see the same bytes)."""
    rdtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))
    if text in FORWARDED_A and qtype in (wire.A, wire.ANY):
        return reply_bytes(text, rdtype, answer=FORWARDED_A[text])
    if text == "chain.fwd.example" and qtype == wire.CNAME:
        return reply_bytes(text, rdtype, answer=FORWARDED_A[text][:1])
    if text in FORWARDED_TXT and qtype in (wire.TXT, wire.ANY):
        return reply_bytes(text, rdtype, answer=FORWARDED_TXT[text])
    if text in FORWARDED_A or text in FORWARDED_TXT or text == "fwd.example":
        return reply_bytes(text, rdtype, authority=[FWD_SOA])
    return reply_bytes(text, rdtype, authority=[FWD_SOA], rcode=wire.NXDOMAIN)


class ImmediateForwarder:
    """A forwarder answering every query at once from a fixed table (``FORWARDED_*``; other
    types of those names are NODATA, other names NXDOMAIN, both with the zone's SOA; fail.*
    always fails, flaky.* fails in odd ``FLAKY_PERIOD_SECONDS`` periods of the clock)."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.pools = [FakePool(0)]
        self.stats = FakeStats()
        self.asked: list[tuple[bytes, int, float]] = []

    def pool_for(self, qkey: bytes) -> FakePool:
        """Every name goes to the one pool."""
        return self.pools[0]

    def query(self, qname: bytes, qtype: int, qclass: int = wire.IN, *, do: bool = False,
              cd: bool = False, pool: FakePool | None = None) -> defer.Deferred[Any]:
        """The table's answer, already fired."""
        now = self.clock.seconds()
        self.asked.append((qname, qtype, now))
        text = wire.to_text(qname).rstrip(".").lower()
        label = text.split(".", 1)[0]
        if label == "fail" or (label == "flaky" and int(now // FLAKY_PERIOD_SECONDS) % 2):
            return defer.fail(UpstreamError(f"{text}: every upstream timed out"))
        data = upstream_bytes(text, qtype)
        reply = wire.check_reply(data, (qname, qtype, qclass))
        assert reply is not None, "the fake's reply does not match its question"
        return defer.succeed(reply)


COOKIE_SECRET = bytes(range(16))    # both handlers make the same server cookies


# -- the two handlers ----------------------------------------------------------------------------


def make_handler(clock: task.Clock, snapshot: Snapshot, max_udp_payload: int, fast_lanes: bool,
                 cache_config: CacheConfig) -> tuple[QueryHandler, ImmediateForwarder]:
    """A handler over its own cache, resolver and stages, as ``service`` composes them."""
    forwarder = ImmediateForwarder(clock)
    cache = AnswerCache(clock, cache_config)
    resolver = ForwardResolver(clock, cache, forwarder, cache_config)  # type: ignore[arg-type]
    cache_stage, upstream_stage = CacheStage(clock, resolver), UpstreamStage(clock, resolver)
    handler = QueryHandler(clock, lambda: snapshot,
                           lambda snap: compose(clock, snap, cache_stage, upstream_stage),
                           max_udp_payload, CHAOS_VERSION, fast_lanes=fast_lanes, cookie_secret=COOKIE_SECRET)
    return handler, forwarder


class Pair:
    """A fast and a slow handler on one clock; ``replayed`` counts answers from the replay table."""

    def __init__(self, snapshot: Snapshot, max_udp_payload: int, cache_config: CacheConfig) -> None:
        self.clock = task.Clock()
        self.clock.advance(START_SECONDS)
        self.fast, self.fast_upstream = make_handler(self.clock, snapshot, max_udp_payload, True, cache_config)
        self.slow, self.slow_upstream = make_handler(self.clock, snapshot, max_udp_payload, False, cache_config)
        self.replayed = 0

    def fast_answer(self, data: bytes, client: str, tcp: bool) -> Any:
        """What the fast handler sends: from the replay table as ``DNSDatagramPort.doRead``
        reads it (UDP only), else from ``handle``."""
        if not tcp:
            replay = self.fast.current_replay()
            hit = replay.get((client, data[2:]))
            if hit is not None and self.clock.seconds() < hit[1]:
                self.replayed += 1
                self.fast.count_replayed({hit[2]: 1})
                return data[:2] + hit[0]
        return self.fast.handle(data, client, tcp)


def described(answer: bytes | None) -> str:
    """An answer as dnspython reads it, for failure messages."""
    if answer is None:
        return "(dropped)"
    try:
        return dns.message.from_wire(answer, raise_on_truncation=False).to_text()
    except Exception as e:          # a malformed answer is shown as bytes
        return f"undecodable ({e}): {answer!r}"


# -- the tests -----------------------------------------------------------------------------------

# The OPT leak: an answer shaped for an EDNS query advertising payload 0 must never reach a
# plain query for the same name from the same line (or the reverse), from the memo or the replay.
EDNS_ZERO_THEN_PLAIN: list[Step] = [
    Ask("www.fl.test", client=EAST, edns=0), Repeat(times=2), Repeat(change="edns", times=3),
    Repeat(change="edns", value=0, times=3), Repeat(back=1, times=2),
    Repeat(change="client", value=CLIENTS.index(EAST2), times=3),
]
PLAIN_THEN_EDNS_ZERO: list[Step] = [
    Ask("www.fl.test", client=WEST, qtype=wire.MX), Repeat(times=2),
    Repeat(change="payload", value=0, times=3), Repeat(back=1, times=3),
]


class FastLaneIdentityTests(unittest.SynchronousTestCase):
    """The memo and the replay table answer byte for byte what the full path answers."""

    def setUp(self) -> None:
        self.config = make_config(self, CONFIG, zones=ZONES)
        self.snapshot = build_snapshot(self.config)

    def settle(self, answer: Any) -> bytes | None:
        """Bytes or None from a handler's result, a Deferred resolved (it must have fired)."""
        if isinstance(answer, defer.Deferred):
            return self.successResultOf(answer)
        return answer

    def run_steps(self, script: Sequence[Step], max_udp_payload: int = 1232,
                  cache_config: CacheConfig | None = None) -> tuple[Pair, list[Sent]]:
        """Send each query of ``script`` to both handlers (each cache built from ``cache_config``,
        by default the config's ``[cache]``); fail at the first differing answer."""
        pair = Pair(self.snapshot, max_udp_payload, cache_config or self.snapshot.config.cache)
        history: list[Ask] = []
        sent: list[Sent] = []
        for index, step in enumerate(script):
            if isinstance(step, Advance):
                pair.clock.advance(step.seconds)
                continue
            if isinstance(step, Repeat):
                if not history:
                    continue
                ask, times = step.apply(history[-1 - step.back % len(history)]), step.times
            else:
                ask, times = step, 1
            history.append(ask)
            data = ask.data()
            for _ in range(times):
                fast = self.settle(pair.fast_answer(data, ask.client, ask.tcp))
                slow = self.settle(pair.slow.handle(data, ask.client, ask.tcp))
                if fast != slow:
                    self.fail(f"step {index}: {ask} at t+{pair.clock.seconds() - START_SECONDS:g}s:\n"
                              f"fast lanes:\n{described(fast)}\nfull path:\n{described(slow)}")
                sent.append((ask, slow))
        return pair, sent

    @settings(max_examples=200, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(script=steps, max_udp_payload=st.sampled_from((1232, 512, 4096)))
    @example(script=EDNS_ZERO_THEN_PLAIN, max_udp_payload=1232)
    @example(script=PLAIN_THEN_EDNS_ZERO, max_udp_payload=1232)
    @example(script=[Ask("big.fl.test", qtype=wire.TXT, client=NOLINE, edns=0), Repeat(), Repeat(change="edns"),
                     Repeat(), Repeat(change="payload", value=1232), Repeat(), Repeat(change="tcp"), Repeat()],
             max_udp_payload=1232)
    @example(script=[Ask("long.fwd.example", client=EAST), Repeat(), Repeat(change="id", value=7), Advance(1.5),
                     Repeat(), Repeat(), Advance(270), Repeat(), Repeat(), Advance(40), Repeat(), Repeat(),
                     Advance(4000), Repeat(), Repeat()], max_udp_payload=1232)
    @example(script=[Ask("flaky.fwd.example", client=WEST, edns=4096, do=True), Repeat(), Advance(21), Repeat(),
                     Advance(31), Repeat(), Repeat(), Repeat(change="do"), Advance(60), Repeat(), Repeat()],
             max_udp_payload=4096)
    @example(script=[Ask("out.fl.test", client=EAST, case=0x5555), Repeat(), Repeat(change="rd"), Repeat(),
                     Repeat(change="client", value=CLIENTS.index(WEST_NOREC)), Repeat(), Repeat(change="edns"),
                     Repeat(), Advance(31), Repeat(back=4), Repeat(back=4)], max_udp_payload=1232)
    @example(script=[Ask("bigfwd.fwd.example", qtype=wire.TXT, client=NOLINE), Repeat(), Repeat(change="payload",
                     value=600), Repeat(), Repeat(change="payload", value=1232), Repeat(), Repeat(change="tcp"),
                     Repeat(), Advance(2), Repeat(back=2), Repeat(back=2)], max_udp_payload=1232)
    @example(script=[Ask("quiet.fl.test", client=EAST), Repeat(), Repeat(change="client", value=CLIENTS.index(WEST)),
                     Repeat(), Ask("gone.fl.test", client=NOLINE), Repeat(), Ask("blocked.fl.test", qtype=wire.NS),
                     Repeat(), Ask("x.ads.fl.test", edns=512, client=OUTSIDE6), Repeat(),
                     Ask("secret.fl.test", client=EAST2), Repeat(), Repeat(change="client", value=CLIENTS.index(WEST)),
                     Repeat(), Repeat(change="client", value=CLIENTS.index(EAST_MAPPED)), Repeat()],
             max_udp_payload=1232)
    @example(script=[Ask("huge.fl.test", qtype=wire.TXT, client=OUTSIDE, edns=1232, ad=True, rd=False),
                     Repeat(), Repeat(change="ad"), Repeat(), Repeat(change="noise", value=15), Repeat(),
                     Ask("www.fl.test", edns=1232, version=1), Repeat(), Ask("version.bind", qtype=wire.TXT,
                     qclass=CH), Repeat(), Ask("www.fl.test", opcode=4), Repeat()], max_udp_payload=512)
    def test_fast_lanes_never_change_a_response(self, script: list[Step], max_udp_payload: int) -> None:
        """Over any sequence of queries, repeats and clock advances, the handler with its fast
        lanes on sends exactly the bytes (or drops exactly the queries) of the one without."""
        self.run_steps(script, max_udp_payload)

    def test_plain_client_never_gets_an_opt_record(self) -> None:
        """A plain query for a name just answered to an EDNS query advertising payload 0 (and
        the reverse) gets no OPT record, from the memo and from the replay table alike."""
        for script in (EDNS_ZERO_THEN_PLAIN, PLAIN_THEN_EDNS_ZERO):
            pair, sent = self.run_steps(script)
            self.assertEqual({ask.edns for ask, _ in sent}, {None, 0})
            for ask, answer in sent:
                assert answer is not None
                self.assertEqual(dns.message.from_wire(answer).edns, -1 if ask.edns is None else 0, ask)
            self.assertGreater(pair.fast.stats.memo_hits, 0)
            self.assertGreater(pair.replayed, 0)

    def test_first_sight_lane(self) -> None:
        """Names never asked before are answered by the first-sight lane when the answer is one
        local RRset and the request allows it; the identity test checks the bytes."""
        script: list[Step] = [
            Ask("www.fl.test", client=WEST), Ask("www.fl.test", client=EAST, qtype=wire.AAAA, edns=1232, do=True),
            Ask("mail.fl.test", client=NOLINE, tcp=True), Ask("txtonly.fl.test", qtype=wire.TXT, client=OUTSIDE),
            Ask("mixedcase.fl.test", case=0b100001, client=WEST),            # the zone's spelling: MixedCase
            Ask("ns.ovcut.fl.test", client=WEST),                            # plain for west ...
            Ask("txtonly.fl.test", client=EAST), Ask("www.fl.test", qtype=wire.TXT, client=WEST, edns=512),  # NODATA
            Ask("nx.fl.test", client=NOLINE), Ask("nx.other.test", qtype=wire.AAAA, client=EAST, tcp=True),  # NXDOMAIN
            # ... and not first sight: lowercase MixedCase (renders its own owner), big (cut at
            # 512), glue under a cut for east only, RD=0, a wildcard, a CNAME, padding, a DNAME.
            Ask("mixedcase.fl.test", client=EAST), Ask("big.fl.test", qtype=wire.TXT, client=NOLINE),
            Ask("ns.ovcut.fl.test", client=EAST), Ask("ns.deleg.fl.test", client=EAST),
            Ask("www.fl.test", client=NOLINE, rd=False), Ask("x.wild.fl.test", client=EAST),
            Ask("alias.fl.test", client=WEST), Ask("mail.fl.test", client=WEST, edns=1232, option=PADDING),
            Ask("www.sub.fl.test", client=WEST), Ask("quiet.fl.test", client=EAST),
        ]
        pair, sent = self.run_steps(script)
        self.assertEqual(pair.fast.stats.first_sight, 10)
        self.assertEqual(pair.slow.stats.first_sight, 0)
        self.assertEqual(len([answer for _, answer in sent if answer]), len(script))

    def test_plain_answer_is_the_walks_answer(self) -> None:
        """``plain_answer`` (the first-sight lane's and ``Authority.lookup``'s shortcut) answers
        only where RFC 1034's whole walk gives exactly that answer (one RRset, or NODATA with the
        SOA), authoritative, and nothing else; and it does answer the plain names."""
        from smartdns.authority import PLAIN_TYPES, Authority, plain_answer
        from smartdns.response import Result
        snap, authority = self.snapshot, Authority()
        answered, nodata, nxdomain = 0, 0, 0
        for line in (None, *snap.line_names):
            for text in NAMES + ("ns1.fl.test", "www.other.test", "other.test", "MixedCase.fl.test", "wild.fl.test",
                                 "nx.other.test", "a.b.nx.fl.test", "nx.y.wild.fl.test", "x.ns.deleg.fl.test"):
                qname = wire.from_text(text)
                for qtype in sorted(PLAIN_TYPES) + [wire.MX, wire.NS]:
                    found = plain_answer(snap, line, qname.lower(), qtype)
                    if found is None:
                        continue
                    plain = Result(aa=True, answer=[found]) if isinstance(found, wire.RRset) else found
                    answered += 1
                    nodata += not plain.answer and not plain.rcode
                    nxdomain += plain.rcode == wire.NXDOMAIN
                    walked = authority.walk(snap, line, qname, qname.lower(), qtype, True)
                    assert walked is not None
                    self.assertEqual(plain, walked, (line, text, qtype))
                    self.assertEqual((plain.aa, len(plain.answer) + len(plain.authority), plain.additional,
                                      plain.referral, plain.ede), (True, 1, [], False, None))
        self.assertGreater(answered, 20)
        self.assertGreater(nodata, 10)
        self.assertGreater(nxdomain, 5)
        self.assertIsNone(plain_answer(snap, None, wire.from_text("x.wild.fl.test"), wire.A))       # synthesised
        east = wire.from_text("ns.ovcut.fl.test")
        self.assertIsNone(plain_answer(snap, "east", east, wire.A))
        self.assertIsNotNone(plain_answer(snap, "west", east, wire.A))
        self.assertIsNone(plain_answer(snap, "west", wire.from_text("alias.fl.test"), wire.TXT))   # a CNAME

    def test_the_fast_lanes_are_used(self) -> None:
        """Plain repeats are answered by the memo, then by the replay table, for local and for
        cached forwarded answers alike, so the identity test cannot pass vacuously."""
        script: list[Step] = []
        for name in ("www.fl.test", "long.fwd.example"):
            script += [Ask(name, client=EAST), Repeat(change="id", value=1), Repeat(change="id", value=2),
                       Repeat(change="id", value=3)]
        pair, sent = self.run_steps(script)
        stats = pair.fast.stats
        self.assertEqual(pair.slow.stats.memo_hits, 0)
        self.assertEqual(stats.memo_hits, 6)          # per name: one from the memo, two replayed
        self.assertEqual(pair.replayed, 4)
        replay = pair.fast.current_replay()
        sources = [replay[(EAST, Ask(name, client=EAST).data()[2:])][2]
                   for name in ("www.fl.test", "long.fwd.example")]
        self.assertEqual([(t.key[-1], t.packed is not None) for t in sources], [("local", False), ("cache", True)])
        self.assertEqual([answer[:2] for _, answer in sent if answer],
                         [b"\x12\x34", b"\x00\x01", b"\x00\x02", b"\x00\x03"] * 2)

    def test_the_corpus_reaches_every_path(self) -> None:
        """The corpus reaches every source of answers, truncation, an upstream prefetch and a
        stale answer, with both handlers asking upstream the same questions at the same times
        (so the property test covers what it claims to)."""
        long_a = Ask("long.fwd.example", client=EAST)
        flaky = Ask("flaky.fwd.example", client=WEST)
        script: list[Step] = [
            Ask("www.fl.test", client=WEST), Repeat(), Ask("blocked.fl.test"),
            Ask("short.fwd.example", client=OUTSIDE), Ask("outfail.fl.test", client=NOLINE),
            Ask("big.fl.test", qtype=wire.TXT, client=NOLINE), long_a, Repeat(), Advance(275), long_a, long_a,
            Advance(25), flaky, Advance(FLAKY_PERIOD_SECONDS), flaky, Repeat(),   # answered at t+300, failing at t+350
        ]
        pair, sent = self.run_steps(script)
        answers = [answer for _, answer in sent]
        by_source = pair.fast.stats.by_source
        for source in ("local", "cache", "upstream", "policy", "error"):
            self.assertGreater(by_source[source], 0, source)
        self.assertTrue(any(a is not None and a[2] & 0x02 for a in answers), "no truncated answer")
        asked = [(q, t) for q, t, _ in pair.fast_upstream.asked]
        self.assertEqual(asked.count((wire.from_text("long.fwd.example"), wire.A)), 2, "no prefetch")
        self.assertEqual(pair.fast_upstream.asked, pair.slow_upstream.asked)
        assert answers[-1] is not None
        stale = dns.message.from_wire(answers[-1])
        self.assertEqual((stale.rcode(), stale.answer[0].ttl), (0, 30), "no stale answer")

    def test_replayed_cache_hits_keep_their_place_in_a_full_cache(self) -> None:
        """In a full cache, an answer sent from the replay table makes its entry the most
        recently used, as the same answer from the full path does, so the same entry is evicted
        next and later answers (their TTLs, their upstream queries) do not change."""
        small = replace(self.snapshot.config.cache, max_entries=2)
        long_a, short_a, chain_a = (Ask(name, client=EAST) for name in
                                    ("long.fwd.example", "short.fwd.example", "chain.fwd.example"))
        script: list[Step] = [long_a, long_a, short_a, long_a,   # the third long_a: from the replay table
                              chain_a, Advance(2), short_a]       # chain_a evicts the least recently used
        self.run_steps(script, cache_config=small)

