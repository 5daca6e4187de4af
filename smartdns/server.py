"""The query path: bytes in, bytes out.  Sockets and fast lanes here; DNS decisions elsewhere.

One query goes down, never back up:
  socket → request shape (``smartdns.response.RequestShape``) → header check (QR) → parse
  (FORMERR) → BIND's checks before the question (``QueryHandler._before_chain``: EDNS version,
  missing question, TSIG, then the opcode: NOTIFY, UPDATE, NOTIMP) → class and meta-types
  → client line → policy
  → the client's resolver chain (``smartdns.chain``: cache, line authority, hosts, your own
  resolvers, upstream) → the response shaper (``smartdns.response.Shaper``) → for UDP while
  ``[rate_limit]`` is on, the rate limiter (``smartdns.ratelimit``: send, TC=1 slip, or drop) → socket.
The client's line is chosen from the peer address of the datagram or connection; it selects
which chain answers.

Two fast lanes keep the shaper's output, never deciding anything themselves; both are emptied
when the snapshot (or the UDP size limit) changes:
  memo    (question bytes, RequestShape code, line, recursion right) → the bytes after the ID of a
          response that depends only on the snapshot and the request, or a cached forwarded
          result, shaped again per answer so its TTLs count down.
  replay  UDP only: (client address, query bytes after the ID) → the response bytes after the
          ID, answered by ``DNSDatagramPort`` inside its read loop without entering the handler.
          Filled on the second sight of a query; a cached answer's bytes are kept only until
          its TTLs next count down or its prefetch point, whichever comes first.
The memo key holds the client's line and the replay key its address, so a line's answer is only
ever replayed to clients of the same line.  While ``[rate_limit]`` is on the memo's answers are
rate limited like the full path's (each keeps its rate limit identity) and the replay table is
off, since its answers never reach the handler.  ``fast_lanes=False`` turns both off; the tests
compare the two byte for byte.
"""
from __future__ import annotations

import bisect
import errno
import socket
import struct

import dns.rcode
import dns.rdatatype
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartdns import cookies
from smartdns import ecs as ecs_mod
from smartdns import policy as policy_mod
from smartdns import wire
from smartdns.authority import negative_soa, plain_answer
from smartdns.chain import EDE_PROHIBITED, ChainSet, Compose
from smartdns.ratelimit import DROP, PASS, RateLimiter, identity as rrl_identity
from smartdns.response import (QUESTION_OPCODES, RequestShape, Result, Shaper, error, shape_from_code, shape_of,
                               truncated)
from smartdns.snapshot import Snapshot
from smartdns.xfr import PASS as TRANSFER_PASS
try:
    from smartdns import _udp           # optional C module (setup.py); DNSDatagramPort
except ImportError:                     # pragma: no cover - depends on the build
    _udp = None                         # type: ignore[assignment]
from smartdns.txtyping import (TypedInt16StringReceiver, TypedTimeoutMixin, TypedUDPPort, failure_of,
                               lose_connection, peer_host, peer_port, udp_socket)

log = Logger()
_sniff, _render_plain, _RRset = wire.sniff, wire.render_plain, wire.RRset    # the first-sight lane's calls

CHAOS_NAMES = frozenset(wire.from_text(n) for n in ("version.bind", "version.server", "id.server", "hostname.bind"))
TRANSFER_TYPES = frozenset({wire.AXFR, wire.IXFR})
MEMO_MAX_ENTRIES = 100_000        # shaped answers kept per snapshot
LANE_HEADS_MAX_ENTRIES = 4_096    # the first-sight lane's (shape code, client class) → header parts
CLIENT_CACHE_ENTRIES = 65_536     # client addresses whose line and recursion right are remembered
REPLAY_MAX_ENTRIES = 65_536       # (client, query) pairs answered inside the UDP read loop
UDP_READ_BUDGET = 1024            # datagrams read per readiness event before other sockets get a turn
UDP_RECEIVE_BUFFER_BYTES = 4 << 20   # asked for each UDP listener (SO_RCVBUF; the kernel may give less)
REPLAY_SEND_BURST = 32            # replayed answers sent together (see DNSDatagramPort)
NEVER = float("inf")
SOURCES = ("local", "hosts", "resolver", "cache", "upstream", "policy", "error")


# Upper bounds of the answer-time histogram, in seconds (CoreDNS's buckets).
DURATION_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                    0.512, 1.024, 2.048, 4.096, 8.192)

AnswerKey = tuple[bool, "str | None", int, int, str]    # (TCP, line, qtype, rcode, source)


class Tally:
    """What one kept answer adds to the counters each time a fast lane sends it again: its
    counter key, and for a cached answer the packed cache key of its entry.  Compared and
    hashed by identity, so counting a burst of replayed answers is one dict update each.
    While ``[rate_limit]`` is on it also holds the answer's rate limit identity
    (``smartdns.ratelimit.identity``), so the memo lane limits without looking at the answer."""

    __slots__ = ("key", "packed", "rrl")

    def __init__(self, key: AnswerKey, packed: bytes | None = None, rrl: tuple[Any, ...] | None = None) -> None:
        self.key = key
        self.packed = packed
        self.rrl = rrl


class Stats:
    """Counters since the process started, for ``smartdns stats`` and the metrics endpoint.

    ``answers`` counts every answer sent by (TCP, line, qtype, rcode, source); ``durations``
    holds, per source, a histogram of the time answers that waited (for an upstream or a
    resolver of your own) took: bucket counts over ``DURATION_BUCKETS`` plus +Inf, then the sum.
    Answers made without waiting (the fast lanes, local data, cache hits, refusals) are not
    timed: they take microseconds, and count in the first bucket (``duration_histograms``).
    ``rrl_dropped`` and ``rrl_slipped`` count UDP answers that ``[rate_limit]`` did not send, or
    replaced by an empty TC=1 reply; they are counted in ``answers`` too (as decided)."""

    def __init__(self) -> None:
        self.queries = 0
        self.dropped = 0
        self.memo_hits = 0
        self.first_sight = 0            # answers from the first-sight lane (QueryHandler._first_sight)
        self.rrl_dropped = 0
        self.rrl_slipped = 0
        self.answers: dict[AnswerKey, int] = {}
        self.durations: dict[str, list[float]] = {}

    def observe(self, source: str, seconds: float) -> None:
        """One answer of the full path that took ``seconds``."""
        histogram = self.durations.get(source)
        if histogram is None:
            histogram = self.durations[source] = [0.0] * (len(DURATION_BUCKETS) + 2)
        histogram[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    @property
    def by_source(self) -> dict[str, int]:
        """Answers by the stage (or decision) that gave them."""
        out = dict.fromkeys(SOURCES, 0)
        for (_tcp, _line, _qtype, _rcode, source), count in self.answers.items():
            out[source] = out.get(source, 0) + count
        return out

    @property
    def by_rcode(self) -> dict[int, int]:
        """Answers by response code."""
        out: dict[int, int] = {}
        for (_tcp, _line, _qtype, rcode, _source), count in self.answers.items():
            out[rcode] = out.get(rcode, 0) + count
        return out

    def duration_histograms(self) -> dict[str, list[float]]:
        """Per source: cumulative-ready bucket counts and sum, fast-lane answers in the first bucket."""
        timed = {source: list(h) for source, h in self.durations.items()}
        for source, total in self.by_source.items():
            histogram = timed.setdefault(source, [0.0] * (len(DURATION_BUCKETS) + 2))
            untimed = total - sum(histogram[:-1])
            if untimed > 0:
                histogram[0] += untimed
        return timed


class QueryHandler:
    """Answers one query message for one client address."""

    def __init__(self, reactor: Any, snapshot: Callable[[], Snapshot], compose: Compose,
                 max_udp_payload: int, chaos_version: str = "", *, fast_lanes: bool = True,
                 stats: Stats | None = None, transfers: Any = None, cookie_secret: bytes | None = None) -> None:
        self.reactor = reactor
        # The server cookie secret when [cookies] secret is not set: made at start (or handed
        # down by the first process to its workers), kept across reloads.
        self.cookie_secret = cookie_secret if cookie_secret is not None else cookies.new_secret()
        self.transfers = transfers          # smartdns.xfr.TransferHook: signed AXFR/IXFR and NOTIFY, asked first
        self.snapshot = snapshot
        self.compose = compose              # snapshot → its chains (smartdns.chain.compose, bound by the service)
        self.shaper = Shaper(max_udp_payload)
        self.chaos_version = chaos_version   # set through set_chaos_version once serving
        self.fast_lanes = fast_lanes
        self.stats = stats if stats is not None else Stats()
        self.querylog: Any = None           # smartdns.querylog.QueryLog while [log] queries is set
        self.rrl: RateLimiter | None = None   # [rate_limit] while on (set_rate_limiter); UDP answers only
        self._chains: ChainSet | None = None
        # Shaped answers by (question bytes, RequestShape.code, (line, may recurse)): a pair
        # (bytes after the ID, Tally) for a fixed answer, or (Result holding a cached entry, Tally).
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._memo_snapshot: Snapshot | None = None
        self._clients: dict[str, tuple[str | None, bool]] = {}   # address → (line, may recurse), per snapshot
        # The first-sight lane's tallies by (TCP, line, qtype, rcode): one per counter key, shared by
        # every answer it keeps (a Tally counts by identity, and these carry nothing else).
        self._lane_tallies: dict[tuple[bool, str | None, int, int], Tally] = {}
        # The first-sight lane's (flags, OPT, size limit) by (shape code, (line, may recurse)):
        # ``Shaper.plain`` for the RA of that client's chain.  Emptied with the memo when the
        # snapshot (its chains) or the shaper changes.
        self._lane_heads: dict[tuple[int, tuple[str | None, bool]], tuple[int, bytes | None, int]] = {}
        # UDP answers by (client address, query after the ID): (answer after the ID, valid until,
        # Tally).  Read by DNSDatagramPort; only ever cleared in place, since the port holds a
        # reference while it reads.
        self.replay: dict[tuple[str, bytes], tuple[bytes, float, Tally]] = {}

    @property
    def max_udp_payload(self) -> int:
        """The largest UDP answer to EDNS clients, as advertised in our OPT."""
        return self.shaper.max_udp_payload

    def set_max_udp_payload(self, size: int) -> None:
        """A new ``[server] max_udp_payload``: a new shaper, and nothing shaped by the old one."""
        if size != self.shaper.max_udp_payload:
            self.shaper = Shaper(size)
            self._memo.clear()
            self._lane_heads.clear()
            self.replay.clear()

    def set_chaos_version(self, text: str) -> None:
        """A new ``[server] chaos_version``: nothing answered with the old one is kept."""
        if text != self.chaos_version:
            self.chaos_version = text
            self._memo.clear()
            self.replay.clear()

    def current_replay(self) -> dict[tuple[str, bytes], tuple[bytes, float, Tally]]:
        """The replay table, emptied first if the snapshot changed since it was filled."""
        self._sync()
        return self.replay

    def count_replayed(self, counts: dict[Tally, int]) -> None:
        """Account for answers the UDP port sent from the replay table; a cached answer counts
        as a use of its entry (a hit, and most recently used) as on the full path."""
        total = 0
        answers = self.stats.answers
        chains = self._chains
        cache = chains.cache if chains is not None else None
        for tally, count in counts.items():
            total += count
            answers[tally.key] = answers.get(tally.key, 0) + count
            if tally.packed is not None and cache is not None:
                cache.count_hits(tally.packed, count)
        self.stats.queries += total
        self.stats.memo_hits += total

    def chains(self) -> ChainSet:
        """The chains of the current snapshot."""
        self._sync()
        assert self._chains is not None
        return self._chains

    def _sync(self) -> Snapshot:
        """The current snapshot; everything shaped under an older one is dropped."""
        snap = self.snapshot()
        if snap is not self._memo_snapshot:
            self._memo.clear()
            self._lane_heads.clear()
            self._clients.clear()
            self.replay.clear()
            self._chains = self.compose(snap)
            self._memo_snapshot = snap
        return snap

    def _client_info(self, client: str, snap: Snapshot) -> tuple[str | None, bool]:
        """(line, may recurse) of a client address, remembered for the snapshot."""
        info = self._clients.get(client)
        if info is None:
            info = (snap.lines.lookup(client), snap.recursion.contains(client))
            if len(self._clients) >= CLIENT_CACHE_ENTRIES:
                self._clients.clear()
            self._clients[client] = info
        return info

    def _replay_put(self, client: str, data: bytes, tail: bytes, until: float, tally: Tally) -> None:
        """Remember the answer (``tail``: everything after the ID) to ``data`` from ``client``."""
        replay = self.replay
        if len(replay) >= REPLAY_MAX_ENTRIES:
            replay.clear()
        replay[(client, data[2:])] = (tail, until, tally)

    # -- entry point -----------------------------------------------------------------------------

    def handle(self, data: bytes, client: str, tcp: bool, port: int = 0) -> bytes | defer.Deferred[bytes | None] | None:
        """The response to ``data`` from ``client`` (``port``: its source port, for the query
        log): bytes, a Deferred of bytes, or None to drop."""
        self.stats.queries += 1
        snap = self.snapshot()
        if snap is not self._memo_snapshot:
            snap = self._sync()
        memo_key = None
        sniffed = _sniff(data) if self.fast_lanes else None
        if sniffed is not None:
            # The memo: a response already shaped for everything that shapes it.  The code is
            # the RequestShape's (response.shape_code), computed from the packet's bits.
            qend, edns, payload, do = sniffed
            flags = data[3]
            code = ((data[2] & 0x01) | (flags & 0x30) >> 3 | tcp << 3 | edns << 4 | do << 5 | payload << 10)
            info = self._clients.get(client)
            if info is None:
                info = self._client_info(client, snap)
            memo_key = (data[12:qend], code, info)
            hit = self._memo.get(memo_key)
            if hit is not None:
                kept, tally = hit
                stats = self.stats
                limiter = None if tcp else self.rrl     # [rate_limit]: UDP answers only
                if type(kept) is bytes:                 # a fixed answer, after its ID
                    stats.memo_hits += 1
                    stats.answers[tally.key] = stats.answers.get(tally.key, 0) + 1
                    if self.querylog is not None:
                        self._log(tally, data[12:qend], client, port, kept[4:6], None, 0)
                    elif not tcp and limiter is None:   # (no replay while limiting: it would skip the limit)
                        self._replay_put(client, data, kept, NEVER, tally)
                    if limiter is not None:
                        return self._rate_limit(limiter, tally.rrl, client, shape_from_code(code),
                                                data[0] << 8 | data[1], data[12:qend], tally.key[3], data[0:2] + kept)
                    return data[0:2] + kept             # the question is in the key, byte for byte
                cache = self._chains.cache               # type: ignore[union-attr]
                now = self.reactor.seconds()
                if cache is not None and cache.still_fresh(kept, now):   # still cached, no prefetch due
                    stats.memo_hits += 1
                    stats.answers[tally.key] = stats.answers.get(tally.key, 0) + 1
                    answer = self.shaper.shape(shape_from_code(code), data[0] << 8 | data[1], data[12:qend], kept, now)
                    if self.querylog is not None:
                        self._log(tally, data[12:qend], client, port, answer[6:8], None, 0)
                    elif not tcp and limiter is None:
                        self._replay_put(client, data, answer[2:], cache.replay_until(kept, now), tally)
                    if limiter is not None:
                        return self._rate_limit(limiter, tally.rrl, client, shape_from_code(code),
                                                data[0] << 8 | data[1], data[12:qend], tally.key[3], answer)
                    return answer
                del self._memo[memo_key]
            elif code & 1 and self.querylog is None and self.rrl is None and len(data) == qend + 11 * edns:
                lane = self._first_sight(snap, data, qend, code, memo_key, tcp)
                if lane is not None:
                    return lane
        return self._handle_full(data, client, tcp, snap, memo_key, port)

    def _first_sight(self, snap: Snapshot, data: bytes, qend: int, code: int, memo_key: tuple[Any, ...],
                     tcp: bool) -> bytes | None:
        """The answer to a sniffed recursive query (RD=1, no EDNS options, no query log or rate
        limit) for a name not in the memo, when ``plain_answer`` has it (one local RRset,
        NODATA or NXDOMAIN): the decisions of the full path in the same functions, without its
        objects.

        Before the chain (``_decide``): class IN and a plain type (so not CHAOS, a transfer
        type or OPT), and no policy.  In the chain: the cache stage first never holds a name
        under a local zone (the service flushes those when a snapshot brings them), so the
        line's authority answers, with ``plain_answer`` as ``Authority.lookup`` does.  An
        RRset is rendered from the shaper's ``plain`` flags, OPT and size limit by
        ``wire.render_plain`` (None when it does not fit: the full path then truncates);
        negative answers go through ``Shaper.shape`` itself."""
        question, _code, info = memo_key
        if question[-1] != 1 or question[-2]:             # class IN
            return None
        qtype = question[-4] << 8 | question[-3]
        line = info[0]
        qkey = question[:-4].lower()
        policies = snap.policies
        if (policies.exact or policies.below) and policies.match(qkey, qtype, line) is not None:
            return None
        found = plain_answer(snap, line, qkey, qtype)
        if found is None:
            return None
        if type(found) is _RRset:
            head = self._lane_heads.get((code, info))
            if head is None:
                recursive = self._chains.chains[info].recursive   # type: ignore[union-attr]
                if len(self._lane_heads) >= LANE_HEADS_MAX_ENTRIES:   # codes carry the EDNS size: bounded
                    self._lane_heads.clear()
                head = self._lane_heads[(code, info)] = self.shaper.plain(code, recursive)
            flags, opt, limit = head
            message = _render_plain(data[:2], flags, question, found, opt, limit)
            if message is None:
                return None
            rcode = wire.NOERROR
        else:
            result: Result = found   # type: ignore[assignment]
            result.ra = self._chains.chains[info].recursive   # type: ignore[union-attr]
            message = self.shaper.shape(shape_from_code(code), data[0] << 8 | data[1], question, result,
                                        self.reactor.seconds())
            rcode = result.rcode
        tally = self._lane_tallies.get((tcp, line, qtype, rcode))
        if tally is None:
            tally = self._lane_tallies[(tcp, line, qtype, rcode)] = Tally((tcp, line, qtype, rcode, "local"))
        stats = self.stats
        stats.first_sight += 1
        answers = stats.answers
        answers[tally.key] = answers.get(tally.key, 0) + 1
        memo = self._memo
        if len(memo) >= MEMO_MAX_ENTRIES:
            memo.clear()
        memo[memo_key] = (message[2:], tally)
        return message

    def _handle_full(self, data: bytes, client: str, tcp: bool, snap: Snapshot,
                     memo_key: tuple[Any, ...] | None, port: int = 0) -> bytes | defer.Deferred[bytes | None] | None:
        """Everything the memo does not answer, and filling it."""
        if len(data) < wire.HEADER.size:
            self.stats.dropped += 1
            return None                                    # no header: nothing to answer to
        qid, flags = struct.unpack_from("!HH", data)
        if flags & wire.FLAG_QR:
            self.stats.dropped += 1
            return None                                    # never answer a response (reflection loops)
        if self.transfers is not None and memo_key is None:
            # A sniffed query (memo_key set) is an unsigned QUERY: never the hook's business.
            handled = self.transfers.answer(data, client, tcp, snap)
            if handled is not TRANSFER_PASS:
                return handled                             # type: ignore[no-any-return]
        # Answers made without waiting take microseconds: they are timed only for the query log,
        # and otherwise count in the first bucket of the answer-time histogram (Stats).
        # ``peer`` is also how _finish learns the client of a UDP answer to rate limit.
        logged = self.querylog is not None
        peer = (client, port) if logged or (self.rrl is not None and not tcp) else None
        started = self.reactor.seconds() if logged else 0.0
        if memo_key is not None:
            # Sniffed: a well-formed QUERY with one question and at most a version-0 OPT, read
            # from the checked bytes; the memo key holds its shape's code (the same value).
            shape = shape_from_code(memo_key[1])
            query = wire.sniffed_query(data, 12 + len(memo_key[0]), shape.payload if shape.edns else None, shape.do)
        else:
            try:
                query = wire.parse_query(data)
            except wire.QueryError as e:
                return self._finish(error(wire.FORMERR), shape_of(flags, None, tcp), qid, e.question, False, None,
                                    None, _qtype_of(e.question), started, None, peer)
            except wire.FormError:
                self.stats.dropped += 1
                return None
            shape = shape_of(query.flags, query.edns, tcp)
        info = None
        if query.edns is not None and query.edns.options and query.edns.version == 0:
            # Never sniffed (wire.sniff declines COOKIE and ECS), so never memo-keyed.
            shape, info, early = self._answered_options(snap, query, shape, client, tcp)
            if early is not None:
                return self._finish(early, shape, qid, query.question, False, None, None, query.qtype, started,
                                    None, peer)
        early = self._before_chain(snap, query) if memo_key is None else None   # nothing to say to a sniffed QUERY
        if early is not None:
            return self._finish(early, shape, qid, query.question, False, None, None, query.qtype, started, None, peer)
        if info is None:
            info = memo_key[2] if memo_key is not None else self._client_info(client, snap)
        chain = self._chains.chains[info]            # type: ignore[union-attr]
        result = self._decide(snap, query, shape, info[0], chain)
        if type(result) is Result:
            return self._finish(result, shape, qid, query.question, chain.recursive, memo_key, info[0], query.qtype,
                                started, snap, peer)
        if result is None:
            self.stats.dropped += 1                     # a policy said drop
            return None
        waiting: defer.Deferred[Result] = result  # type: ignore[assignment]  # a Result returned above
        return waiting.addCallback(self._finish, shape, qid, query.question, chain.recursive, memo_key, info[0],
                                   query.qtype, started or self.reactor.seconds(), snap, peer)

    def _answered_options(self, snap: Snapshot, query: wire.Query, shape: RequestShape, client: str,
                          tcp: bool) -> tuple[RequestShape, tuple[str | None, bool] | None, Result | None]:
        """The EDNS options answered in kind: (shape carrying them, (line, may recurse) when a
        trusted Client Subnet chose the line, an early answer or None).

        COOKIE (RFC 7873 §5.2): FORMERR for a malformed option; otherwise the reply carries the
        client cookie and a fresh server cookie, and with ``[cookies] require`` a UDP query
        whose server cookie is missing or not good gets BADCOOKIE (§5.2.3, §5.2.4).  Client
        Subnet (RFC 7871): FORMERR for a malformed option (§7.1.2); from an ``[ecs] trusted``
        client with a source prefix above 0, the line is the one of the subnet's longest
        matching CIDR and the reply's scope is that CIDR's length; from anyone else the line is
        the client's own and the scope 0.  The recursion right is always the client's own.
        With ``[ecs] forward``, a trusted subnet is also sent upstream (``ecs_forward``)."""
        assert query.edns is not None
        cookie = subnet = None
        for code, body in wire.option_items(query.edns.options):
            if code == cookies.COOKIE_OPTION and cookie is None:
                cookie = body
            elif code == ecs_mod.ECS_OPTION and subnet is None:
                subnet = body
        reply_cookie = b""
        good = False
        if cookie is not None:
            try:
                client_cookie, server_cookie = cookies.parse(cookie)
            except cookies.CookieFormatError:
                return shape, None, error(wire.FORMERR)
            secret = snap.config.cookies.secret or self.cookie_secret
            try:
                address = cookies.address_bytes(client)
            except (OSError, ValueError):
                address = b""
            now = int(self.reactor.seconds())
            good = bool(server_cookie) and cookies.is_valid(secret, client_cookie, server_cookie, address, now)
            reply_cookie = client_cookie + cookies.make(secret, client_cookie, address, now)
        info = None
        if subnet is not None:
            try:
                ecs = ecs_mod.parse(subnet)
            except ecs_mod.SubnetFormatError:
                return shape._replace(cookie=reply_cookie), None, error(wire.FORMERR)
            scope = 0
            forward = False
            if ecs.source and snap.ecs_trusted.contains(client):
                line, scope = snap.lines.lookup_scoped(str(ecs.network.network_address))
                info = (line, self._client_info(client, snap)[1])
                forward = snap.config.ecs.forward
            shape = shape._replace(ecs=ecs, ecs_scope=scope, ecs_forward=forward)
        shape = shape._replace(cookie=reply_cookie, cookie_good=good)
        if cookie is not None and not good and not tcp and snap.config.cookies.require:
            return shape, info, error(wire.BADCOOKIE)
        return shape, info, None

    def _before_chain(self, snap: Snapshot, query: wire.Query) -> Result | None:
        """BIND 9's answers before any chain sees the question, in BIND's order; None for a
        QUERY that goes on to ``_decide``.

        EDNS version above 0: BADVERS (RFC 6891 §6.1.3).  No question: FORMERR for QUERY,
        NOTIFY and UPDATE, NOTIMP for other opcodes.  A TSIG: NOTAUTH with TSIG error BADKEY,
        the answer for a key the server does not hold (RFC 8945 §5.2.1); no key is checked on
        this path (signed transfers are answered before it, by the transfer hook).  Then the
        opcode: NOTIFY and UPDATE get their own small answers, any other but QUERY NOTIMP.
        (The shaper clears the flags and question section that BIND does not echo.)"""
        if query.edns is not None and query.edns.version > 0:
            return error(wire.BADVERS)
        opcode = query.opcode
        if not query.question:
            return error(wire.FORMERR if opcode in QUESTION_OPCODES else wire.NOTIMP)
        if query.tsig is not None:
            unsigned = error(wire.NOTAUTH)
            unsigned.tsig_error = (query.tsig, wire.BADKEY)
            return unsigned
        if opcode == wire.OPCODE_QUERY:
            return None
        if opcode == wire.OPCODE_NOTIFY:
            return answer_notify(snap, query)
        if opcode == wire.OPCODE_UPDATE:
            return answer_update(snap, query)
        return error(wire.NOTIMP)

    def _decide(self, snap: Snapshot, query: wire.Query, shape: RequestShape, line: str | None,
                chain: Any) -> Result | defer.Deferred[Result] | None:
        """What to answer: the decisions before the chain, then the chain (None: drop)."""
        qtype, qclass = query.qtype, query.qclass
        if qclass == wire.CH:
            return self._chaos(query)
        if qclass != wire.IN or qtype in TRANSFER_TYPES:
            return error(wire.REFUSED)             # transfers would leak every line's data
        if qtype == wire.OPT:
            return error(wire.FORMERR)
        action = snap.policies.match(query.qkey, qtype, line)
        if action is not None:
            return self._policy(snap, query, action)
        found: Any = chain.answer(query.qname, qtype, qclass, shape)
        if type(found) is Result:
            return found
        if found is None:
            return _refused_if_none(found, chain)
        if chain.fixed_misses:
            return found  # type: ignore[no-any-return]  # a Deferred of a Result (LineChain.answer)
        waiting: defer.Deferred[Result] = found.addCallback(_refused_if_none, chain)
        return waiting

    def _finish(self, result: Result, shape: RequestShape, qid: int, question: bytes, ra: bool,
                memo_key: tuple[Any, ...] | None, line: str | None, qtype: int, started: float,
                snap: Snapshot | None = None, peer: tuple[str, int] | None = None) -> bytes | None:
        """Count, shape, log, keep what the memo may serve again, and rate limit (``peer`` is
        set for UDP answers while ``[rate_limit]`` is on)."""
        result.ra = ra
        stats = self.stats
        key = (shape.tcp, line, qtype, result.rcode, result.source)
        stats.answers[key] = stats.answers.get(key, 0) + 1
        now = self.reactor.seconds()
        if started:
            stats.observe(result.source, now - started)
        message = self.shaper.shape(shape, qid, question, result, now)
        limiter = self.rrl
        ident = rrl_identity(result, question) if limiter is not None else None
        if peer is not None and self.querylog is not None:
            self._log(Tally(key), question, peer[0], peer[1], message[6:8], result.upstream, now - started)
        if memo_key is not None and snap is self._memo_snapshot:
            if result.fixed:
                self._memo_put(memo_key, (message[2:], Tally(key, None, ident)))
            elif result.entry is not None and result.cache_key and not result.answer \
                    and result.rcode != wire.SERVFAIL and result.entry.expires_at > now:
                self._memo_put(memo_key, (result, Tally((shape.tcp, line, qtype, result.rcode, "cache"),
                                                        result.cache_key, ident)))
        if limiter is not None and peer is not None and not shape.tcp:
            return self._rate_limit(limiter, ident, peer[0], shape, qid, question, result.rcode, message,
                                    self.has_valid_server_cookie(shape))
        return message

    def _rate_limit(self, limiter: RateLimiter, ident: tuple[Any, ...] | None, client: str, shape: RequestShape,
                    qid: int, question: bytes, rcode: int, answer: bytes, server_cookie: bool = False) -> bytes | None:
        """``answer``, an empty TC=1 reply in its place (a slip), or None (dropped), as the rate
        limiter decides; the TC reply is shaped like any other, so it keeps the OPT record."""
        if ident is None:
            return answer                   # kept before [rate_limit] came on (set_rate_limiter empties the memo)
        verdict = limiter.check(client, ident, server_cookie=server_cookie)
        if verdict == PASS:
            return answer
        if verdict == DROP:
            self.stats.rrl_dropped += 1
            return None
        self.stats.rrl_slipped += 1
        return self.shaper.shape(shape, qid, question, truncated(rcode), self.reactor.seconds())

    def has_valid_server_cookie(self, shape: RequestShape) -> bool:
        """Whether the query presented a valid server cookie (RFC 7873 §5.2.3): its sender is
        not spoofed, so, as in BIND, its answers are never rate limited.  Decided once, by
        ``_answered_options``; only the full path asks (queries with a COOKIE option never
        reach the memo lane)."""
        return shape.cookie_good

    def _log(self, tally: Tally, question: bytes, client: str, port: int, ancount: bytes, upstream: str | None,
             seconds: float) -> None:
        """One line of the query log (``[log] queries``)."""
        assert self.querylog is not None
        tcp, line, qtype, rcode, source = tally.key
        qname = wire.to_text(question[:-4]) if len(question) > 4 else ""
        self.querylog.record(self.reactor.seconds(), client, port, "tcp" if tcp else "udp", line, qname,
                             type_text(qtype), rcode_text(rcode), source, upstream, int(seconds * 1e6),
                             int.from_bytes(ancount, "big") if len(ancount) == 2 else 0)

    def set_querylog(self, querylog: Any) -> None:
        """Start (or stop, with None) the query log; while it runs the replay table is off,
        since its answers never reach the handler to be logged."""
        self.querylog = querylog
        self.replay.clear()

    def set_rate_limiter(self, limiter: RateLimiter | None) -> None:
        """Start (or stop, with None) ``[rate_limit]``.  While it runs the replay table is off,
        since its answers never reach the limiter; the memo is emptied so every kept answer
        carries its rate limit identity."""
        self.rrl = limiter
        self._memo.clear()
        self.replay.clear()

    def _memo_put(self, key: tuple[Any, ...], value: Any) -> None:
        memo = self._memo
        if len(memo) >= MEMO_MAX_ENTRIES:
            memo.clear()
        memo[key] = value

    def servfail(self, data: bytes, tcp: bool) -> bytes | None:
        """Last resort for a bug on the answer path: SERVFAIL, never silence or a hang."""
        try:
            query = wire.parse_query(data)
        except wire.FormError:
            return None
        return self.shaper.shape(shape_of(query.flags, None, tcp), query.id, query.question,
                                 error(wire.SERVFAIL), self.reactor.seconds())

    def _policy(self, snap: Snapshot, query: wire.Query, action: str) -> Result | None:
        """Apply a ``[[policy]]`` or deny action."""
        if action == policy_mod.DROP:
            return None
        if action == policy_mod.REFUSE:
            return error(wire.REFUSED, "policy")
        result = Result(rcode=wire.NXDOMAIN if action == policy_mod.NXDOMAIN else wire.NOERROR, source="policy")
        origin = snap.find_zone(query.qkey)
        if origin is not None:
            result.authority.append(negative_soa(snap.view(origin, None)))
            result.aa = True
        return result

    def _chaos(self, query: wire.Query) -> Result:
        """CH TXT version.bind and friends: the configured string, else REFUSED; never IN data."""
        if not self.chaos_version or query.qkey not in CHAOS_NAMES or query.qtype not in (wire.TXT, wire.ANY):
            return error(wire.REFUSED)
        text = self.chaos_version.encode("utf-8")[:255]
        rrset = wire.make_rrset(query.qkey, wire.TXT, 0, [bytes([len(text)]) + text], wire.CH)
        return Result(aa=True, answer=[rrset])


def answer_notify(snap: Snapshot, query: wire.Query) -> Result:
    """NOTIFY (RFC 1996) to a server that is secondary for nothing: BIND 9's answers as the
    primary of every local zone.  NOERROR with AA for a local zone's apex SOA, NOTAUTH for any
    other name, FORMERR for another type, NOTIMP for another class.  The one place to replace
    when NOTIFY is acted on (secondary zones)."""
    return _apex_question(snap, query) or Result(aa=True)


def answer_update(snap: Snapshot, query: wire.Query) -> Result:
    """UPDATE (RFC 2136): no local zone takes updates.  As BIND 9 without ``allow-update``:
    REFUSED for a local zone's apex, NOTAUTH for any other zone name, FORMERR for a zone
    section that is not an SOA, NOTIMP for another class."""
    return _apex_question(snap, query) or error(wire.REFUSED)


def _apex_question(snap: Snapshot, query: wire.Query) -> Result | None:
    """BIND 9's checks of the question of a NOTIFY or an UPDATE (the zone section): NOTIMP for
    a class other than IN, FORMERR for a type other than SOA, NOTAUTH for a name that is not a
    local zone's apex; None when it names one."""
    if query.qclass != wire.IN:
        return error(wire.NOTIMP)
    if query.qtype != wire.SOA:
        return error(wire.FORMERR)
    if snap.find_zone(query.qkey) != query.qkey:
        return error(wire.NOTAUTH)
    return None


def type_text(qtype: int) -> str:
    """A type as dig names it (``AAAA``, ``TYPE65280``)."""
    try:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))
    except ValueError:
        return f"TYPE{qtype}"


def rcode_text(rcode: int) -> str:
    """A response code as dig names it (``NXDOMAIN``, ``BADVERS``)."""
    try:
        return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
    except ValueError:
        return f"RCODE{rcode}"


def _qtype_of(question: bytes) -> int:
    """The type in a raw question section, 0 when it is cut short."""
    return struct.unpack_from("!H", question, len(question) - 4)[0] if len(question) >= 5 else 0


def _refused_if_none(found: Result | None, chain: Any) -> Result:
    """No stage of the chain answers the name: not local, and not forwarded for this client
    (with Extended DNS Error 18, Prohibited, when the client may not recurse, as BIND)."""
    if found is not None:
        return found
    refused = error(wire.REFUSED)
    refused.fixed = chain.fixed_misses
    if chain.prohibited:
        refused.ede = (EDE_PROHIBITED, "")
    return refused


def _servfail(reason: Failure, handler: QueryHandler, query_data: bytes, tcp: bool) -> bytes | None:
    """A failure on the forwarding path: log it and answer SERVFAIL."""
    log.failure("unexpected error answering a query", reason)
    return handler.servfail(query_data, tcp)


def dispatch(handler: QueryHandler, data: bytes, client: str, tcp: bool,
             send: Callable[[bytes, Any], None], target: Any = None, port: int = 0) -> None:
    """Run the handler and ``send(answer, target)`` now or when it is ready; nothing escapes.

    ``target`` (the UDP peer) is passed through so the hot path needs no closure per packet."""
    result = respond(handler, data, client, tcp, send, target, port)
    if result is not None:
        _deliver(send, result, target)


def respond(handler: QueryHandler, data: bytes, client: str, tcp: bool,
            send: Callable[[bytes, Any], None], target: Any = None, port: int = 0) -> bytes | list[bytes] | None:
    """Run the handler: the answer when it is ready now (the caller sends it), else None (dropped,
    or ``send(answer, target)`` is called when it is ready); nothing escapes."""
    try:
        result = handler.handle(data, client, tcp, port)
    except Exception as e:
        return settle(handler, data, client, tcp, send, target, failure_of(e))
    if result is None or isinstance(result, (bytes, list)):
        return result
    return settle(handler, data, client, tcp, send, target, result)


def settle(handler: QueryHandler, data: bytes, client: str, tcp: bool, send: Callable[[bytes, Any], None],
           target: Any, outcome: Failure | defer.Deferred[bytes | None]) -> bytes | None:
    """``respond`` for an outcome of the handler that is not an answer: an error is logged and
    answered SERVFAIL (returned, for the caller to send); a Deferred (a forwarded answer)
    sends its answer when it fires, a failure then becoming SERVFAIL, never silence (one
    callback: each one added to the Deferred is a measurable share of a cache miss)."""
    if isinstance(outcome, Failure):
        log.failure("unexpected error answering a query from {client}", outcome, client=client)
        return handler.servfail(data, tcp)
    outcome.addBoth(_answered_later, handler, data, tcp, send, target)
    return None


def _answered_later(result: bytes | list[bytes] | Failure | None, handler: QueryHandler, data: bytes, tcp: bool,
                    send: Callable[[bytes, Any], None], target: Any) -> None:
    """Send an answer that waited (a failure answered SERVFAIL); nothing escapes."""
    try:
        if isinstance(result, Failure):
            result = _servfail(result, handler, data, tcp)
        if result:
            _deliver(send, result, target)
    except Exception:
        log.failure("sending an answer failed")


def _deliver(send: Callable[[bytes, Any], None], result: bytes | list[bytes], target: Any) -> None:
    """Send one answer, or each message of a zone transfer's stream (a list; TCP only)."""
    if isinstance(result, list):
        for message in result:
            send(message, target)
    else:
        send(result, target)


def _normalise(host: str) -> str:
    """``::ffff:1.2.3.4`` → ``1.2.3.4`` is done by the line table; here only strip a scope."""
    return host.split("%", 1)[0]


class DNSDatagramProtocol(protocol.DatagramProtocol):
    """UDP listener: the client's address is the datagram's source."""

    noisy = False

    def __init__(self, handler: QueryHandler) -> None:
        self.handler = handler

    def startProtocol(self) -> None:  # noqa: N802
        # Answers go straight to the socket: Twisted's write() re-checks types and state per
        # packet, which is a measurable share of a fast-path answer.
        sock = udp_socket(self)
        self._sendto = sock.sendto
        # Room for the queries that arrive while the reactor is busy (a reload's swap, the
        # collector): the kernel caps this at net.core.rmem_max.
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
        except OSError as e:
            log.warn("could not enlarge the UDP receive buffer: {error}", error=e)

    def datagramReceived(self, data: bytes, addr: tuple[Any, ...]) -> None:  # noqa: N802 (Twisted API)
        host = addr[0]
        if "%" in host:
            host = _normalise(host)
        dispatch(self.handler, data, host, False, self._send, addr, addr[1])

    def _send(self, response: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._sendto(response, addr[:2])
        except OSError as e:       # a full socket buffer or an unreachable client: drop, like UDP
            log.debug("UDP send to {addr} failed: {error}", addr=addr, error=e)


_READ_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class DNSDatagramPort(TypedUDPPort):
    """A UDP port whose read loop answers replayable queries itself.

    A query seen before from the same address, byte for byte after the ID, under the same
    snapshot, gets the recorded answer with its own ID: one dict lookup between receive and
    send.  Everything else is answered by the handler as the protocol would (``respond``),
    called from here; a scoped IPv6 source goes to the protocol.  Unlike Twisted's loop, an
    unexpected receive error is logged and the port keeps listening.

    Two loops do this, with the same results (tests/test_replay.py runs both):

    - ``_read_batched``, when the optional C module ``smartdns._udp`` is built (setup.py): up
      to 64 datagrams per ``recvmmsg`` and answers per ``sendmmsg``, the replay lookup in C.
      It decides nothing: a datagram the table does not answer is passed to the handler's
      ``handle`` (what ``respond`` does, without its frame), and the bytes returned are sent;
      anything else (a Deferred, an error raised) comes back here and is finished by
      ``settle``, as ``respond`` finishes it.  Addresses are formatted as the socket module
      formats them.
    - ``_read_each``, in Python: ``recvfrom`` and ``sendto`` per datagram.  Answers ready at
      once are sent in bursts of up to ``REPLAY_SEND_BURST``, after that many queries have
      been read (or the socket is empty): a client woken by the first answer of a burst is
      still running when the rest arrive, so the kernel wakes it once instead of once per
      answer (measured on a 2-vCPU VM: 7-15 % less CPU per answer).  An answer waits for at
      most that many receives, and only when queries are already queued.

    ``batched`` (a class attribute, True when the C module is there) picks the loop.
    """

    batched = _udp is not None

    def doRead(self) -> None:  # noqa: N802 (Twisted API)
        if self.batched:
            self._read_batched()
        else:
            self._read_each()

    def _read_batched(self) -> None:
        """The read loop with ``smartdns._udp``: batches of datagrams in and answers out."""
        assert _udp is not None
        proto = self.protocol
        handler = proto.handler
        replay = handler.current_replay()
        clock = handler.reactor.seconds
        fd = self.socket.fileno()
        size = self.maxPacketSize
        serve = _udp.serve
        handle = handler.handle
        received = proto.datagramReceived
        reply = proto._send
        misses: list[tuple[bytes, Any]] = []
        waiting: list[tuple[bytes, Any, Any]] = []
        counts: dict[Tally, int] = {}
        try:
            for _ in range(UDP_READ_BUDGET // _udp.BATCH):
                # The module calls the handler itself (``respond`` without its frame) and sends
                # the answers it returns at once; what is left comes back here.
                try:
                    _read, more = serve(fd, size, replay, clock(), counts, misses, handle, waiting)
                except OSError as e:
                    log.warn("UDP receive failed: {error}", error=e)
                    more = False
                except Exception:               # (memory): this round ends, the port keeps listening
                    log.failure("UDP batch failed")
                    more = False
                for data, addr in misses:
                    received(data, addr)           # a scoped IPv6 address: the protocol's path
                misses.clear()
                for data, addr, outcome in waiting:    # rare: a forwarded answer, or an error
                    if isinstance(outcome, BaseException):
                        outcome = failure_of(outcome)   # the exception the handler raised
                    answer = settle(handler, data, addr[0], False, reply, addr, outcome)
                    if answer is not None:
                        reply(answer, addr)             # SERVFAIL for the error
                waiting.clear()
                if not more:
                    return
        finally:
            if counts:
                handler.count_replayed(counts)

    def _read_each(self) -> None:
        """The read loop in Python: a datagram per ``recvfrom``, an answer per ``sendto``."""
        proto = self.protocol
        handler = proto.handler
        replay = handler.current_replay()
        clock = handler.reactor.seconds
        recv = self.socket.recvfrom
        send = self.socket.sendto
        size = self.maxPacketSize
        received = proto.datagramReceived
        reply = proto._send
        burst: list[tuple[bytes, Any]] = []
        counts: dict[Tally, int] = {}
        try:
            for _ in range(UDP_READ_BUDGET):
                try:
                    data, addr = recv(size)
                except OSError as e:
                    if e.errno not in _READ_AGAIN and e.errno != errno.ECONNREFUSED:
                        log.warn("UDP receive failed: {error}", error=e)
                    return
                host = addr[0]
                hit = replay.get((host, data[2:])) if replay else None
                if hit is not None and clock() < hit[1]:
                    burst.append((data[:2] + hit[0], addr))
                    tally = hit[2]
                    counts[tally] = counts.get(tally, 0) + 1
                    if len(burst) >= REPLAY_SEND_BURST:
                        _send_all(send, burst)
                    continue
                if "%" in host:
                    received(data, addr)           # a scoped IPv6 address: the protocol's path
                    continue
                # The protocol's path without its calls: answers ready now join the burst.
                answer = respond(handler, data, host, False, reply, addr, addr[1])
                if answer is not None:
                    burst.append((answer, addr))   # type: ignore[arg-type]  # bytes: UDP never streams
                    if len(burst) >= REPLAY_SEND_BURST:
                        _send_all(send, burst)
        finally:
            if burst:
                _send_all(send, burst)
            if counts:
                handler.count_replayed(counts)


def _send_all(send: Callable[[bytes, Any], Any], burst: list[tuple[bytes, Any]]) -> None:
    """Send every (answer, address) of ``burst``, then empty it."""
    for answer, addr in burst:
        try:
            send(answer, addr)
        except OSError:
            pass                    # a full buffer or an unreachable client: dropped, like UDP
    burst.clear()


def udp_io(port: Any) -> str:
    """How a UDP port reads and sends, for the start-up log line."""
    if isinstance(port, DNSDatagramPort) and port.batched:
        return "batched: recvmmsg/sendmmsg (smartdns._udp)"
    return "a datagram per call (smartdns._udp not built)" if _udp is None else "a datagram per call"


def listen_udp(reactor: Any, port: int, proto: DNSDatagramProtocol, interface: str = "") -> Any:
    """``reactor.listenUDP`` with the replaying port where the reactor can take one."""
    if not hasattr(reactor, "addReader"):
        return reactor.listenUDP(port, proto, interface=interface)
    p = DNSDatagramPort(port, proto, interface, reactor=reactor)
    p.startListening()
    return p


def adopt_udp(reactor: Any, fd: int, family: int, proto: DNSDatagramProtocol) -> Any:
    """``reactor.adoptDatagramPort`` with the replaying port where the reactor can take one."""
    if not hasattr(reactor, "addReader"):
        return reactor.adoptDatagramPort(fd, family, proto)
    p = DNSDatagramPort._fromListeningDescriptor(reactor, fd, family, proto, maxPacketSize=8192)
    p.startListening()
    return p


class DNSStreamProtocol(TypedInt16StringReceiver, TypedTimeoutMixin):
    """TCP listener (RFC 7766): pipelined queries answered as they complete, idle timeout."""

    MAX_LENGTH = 65535

    def __init__(self, factory: "SmartDNSServerFactory") -> None:
        self.factory = factory
        self.client = ""
        self.port = 0

    def connectionMade(self) -> None:  # noqa: N802
        self.client = _normalise(peer_host(self))
        self.port = peer_port(self)
        self.factory.connections += 1
        if self.factory.connections > self.factory.max_connections:
            log.info("TCP connection limit {limit} reached; closing {client}",
                     limit=self.factory.max_connections, client=self.client)
            lose_connection(self)
            return
        self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.factory.connections -= 1
        self.setTimeout(None)

    def stringReceived(self, data: bytes) -> None:  # noqa: N802
        self.resetTimeout()
        dispatch(self.factory.handler, data, self.client, True, self._send, None, self.port)

    def _send(self, response: bytes, _target: Any = None) -> None:
        if self.transport is not None and self.connected:
            self.sendString(response)
            self.resetTimeout()

    def timeoutConnection(self) -> None:  # noqa: N802
        lose_connection(self)


class SmartDNSServerFactory(protocol.ServerFactory):
    """Builds TCP connections that share one query handler; caps concurrent connections."""

    noisy = False

    def __init__(self, handler: QueryHandler, idle_timeout: float, max_connections: int) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connections = 0

    def buildProtocol(self, addr: Any) -> DNSStreamProtocol:  # noqa: N802
        return DNSStreamProtocol(self)
