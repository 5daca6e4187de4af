"""DNS Cookies: SipHash-2-4 vectors, RFC 9018 server cookies, the handler's answers (FORMERR,
BADCOOKIE, a fresh cookie in every reply) and ``dig +cookie`` against the running service."""
from __future__ import annotations

import os
import re

import dns.edns
import dns.message
import dns.query
import dns.rcode
from twisted.internet import defer, reactor, threads
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from smartdns import cookies, wire
from smartdns.config import parse_config
from smartdns.reload import ZoneFileCache
from smartdns.service import SmartDNSService, load
from smartdns.siphash import siphash24
from smartdns.workers import Supervisor
from tests.support import ShiftedReactor, dig, dig_available, start_server, write_tree
from tests.test_workers import CONFIG as WORKERS_CONFIG
from tests.test_workers import ZONE, wait_for

# The reference implementation's vectors (Aumasson and Bernstein, vectors.h): key 00..0f,
# message 00..(n-1), for a few n.
SIPHASH_VECTORS = [
    (0, "310e0edd47db6f72"),
    (1, "fd67dc93c539f874"),
    (7, "37d1018bf50002ab"),
    (8, "6224939a79f5f593"),
    (15, "e545be4961ca29a1"),
    (16, "db9bc2577fcc2a3f"),
    (63, "724506eb4c328a95"),
]

# RFC 9018 Appendix A: (secret, client cookie, client IP, timestamp, server cookie).
RFC9018_VECTORS = [
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559731985,
     "010000005cf79f111f8130c3eee29480"),
    ("dd3bdf9344b678b185a6f5cb60fca715", "22681ab97d52c298", "2001:db8:220:1:59de:d0f4:8769:82b8", 1559741817,
     "010000005cf7c57926556bd0934c72f8"),
]

SECRET = "000102030405060708090a0b0c0d0e0f"
ZONES = {"cookie.test.zone": "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\n"}
CONFIG = f"""
[cookies]
secret = "{SECRET}"
{{require}}
[forward]
upstreams = []
"""
CLIENT_COOKIE = bytes.fromhex("0102030405060708")


def cookie_query(body: bytes | None, name: str = "www.cookie.test") -> bytes:
    """An EDNS query for ``name`` A carrying a COOKIE option with ``body`` (none for None)."""
    options = [] if body is None else [dns.edns.GenericOption(cookies.COOKIE_OPTION, body)]
    return dns.message.make_query(name, "A", use_edns=0, options=options).to_wire()


def reply_cookie(message: dns.message.Message) -> bytes | None:
    """The COOKIE option data of a reply, or None."""
    for option in message.options:
        if option.otype == cookies.COOKIE_OPTION:
            return option.to_wire()
    return None


class SipHashTests(unittest.TestCase):
    """The pure-Python SipHash-2-4."""

    def test_reference_vectors(self) -> None:
        """SipHash-2-4 matches the reference implementation's vectors."""
        key = bytes(range(16))
        for size, expected in SIPHASH_VECTORS:
            self.assertEqual(siphash24(key, bytes(range(size))).hex(), expected, size)

    def test_key_length(self) -> None:
        """A key that is not 16 bytes is refused."""
        self.assertRaises(ValueError, siphash24, b"short", b"")


class ServerCookieTests(unittest.TestCase):
    """RFC 9018 server cookies: made and checked."""

    def test_rfc9018_vectors(self) -> None:
        """Server cookies equal RFC 9018's worked examples (IPv4 and IPv6 clients)."""
        for secret, client, address, stamp, expected in RFC9018_VECTORS:
            made = cookies.make(bytes.fromhex(secret), bytes.fromhex(client), cookies.address_bytes(address), stamp)
            self.assertEqual(made.hex(), expected)

    def test_window(self) -> None:
        """A cookie is good up to an hour old and up to five minutes ahead, and for its own
        client cookie, address and secret only."""
        secret, address = bytes(16), cookies.address_bytes("192.0.2.7")
        made = cookies.make(secret, CLIENT_COOKIE, address, 1_000_000)
        for now, good in ((1_000_000, True), (1_003_600, True), (1_003_601, False),
                          (999_700, True), (999_699, False)):
            self.assertEqual(cookies.is_valid(secret, CLIENT_COOKIE, made, address, now), good, now)
        self.assertFalse(cookies.is_valid(secret, bytes(8), made, address, 1_000_000))
        self.assertFalse(cookies.is_valid(secret, CLIENT_COOKIE, made, cookies.address_bytes("192.0.2.8"), 1_000_000))
        self.assertFalse(cookies.is_valid(b"\x01" * 16, CLIENT_COOKIE, made, address, 1_000_000))

    def test_timestamp_wraps(self) -> None:
        """Timestamps compare in serial arithmetic, so a cookie made just before 2^32 is good
        just after it."""
        secret, address = bytes(16), cookies.address_bytes("192.0.2.7")
        made = cookies.make(secret, CLIENT_COOKIE, address, 0xFFFFFFF0)
        self.assertTrue(cookies.is_valid(secret, CLIENT_COOKIE, made, address, 0x1_0000_0010))

    def test_mapped_address(self) -> None:
        """An IPv4-mapped IPv6 peer hashes as its IPv4 address."""
        self.assertEqual(cookies.address_bytes("::ffff:192.0.2.7"), cookies.address_bytes("192.0.2.7"))

    def test_malformed_lengths(self) -> None:
        """Option data of 8 bytes or 16 to 40 parses; any other length is malformed."""
        for size in range(0, 50):
            if size == 8 or 16 <= size <= 40:
                self.assertEqual(cookies.parse(bytes(size))[0], bytes(8))
            else:
                self.assertRaises(cookies.CookieFormatError, cookies.parse, bytes(size))


class StoppedClock(ShiftedReactor):
    """The real reactor's sockets with a clock that moves only when the test says."""

    def __init__(self, now: float) -> None:
        super().__init__()
        self.now = now

    def seconds(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HandlerCookieTests(unittest.TestCase):
    """What the query handler answers to cookies (driven with a task.Clock)."""

    def start(self, require: bool = False):
        self.clock = StoppedClock(1_700_000_000)
        service, _, _ = start_server(self, CONFIG.replace("{require}", "require = true" if require else ""),
                                     zones=ZONES, clock=self.clock)
        return service.handler

    def ask(self, handler, data: bytes, tcp: bool = False) -> dns.message.Message:
        reply = handler.handle(data, "192.0.2.7", tcp)
        assert isinstance(reply, bytes)
        return dns.message.from_wire(reply)

    def expected(self, now: int) -> bytes:
        return CLIENT_COOKIE + cookies.make(bytes.fromhex(SECRET), CLIENT_COOKIE,
                                            cookies.address_bytes("192.0.2.7"), now)

    def test_client_cookie_gets_server_cookie(self) -> None:
        """A query with only a client cookie is answered as usual, with the client cookie and
        a server cookie made from the secret, the client address and the reactor's time."""
        handler = self.start()
        reply = self.ask(handler, cookie_query(CLIENT_COOKIE))
        self.assertEqual(reply.rcode(), dns.rcode.NOERROR)
        self.assertEqual(len(reply.answer), 1)
        self.assertEqual(reply_cookie(reply), self.expected(1_700_000_000))

    def test_every_reply_gets_a_fresh_cookie(self) -> None:
        """A presented good cookie is answered with one made now; REFUSED and NXDOMAIN carry it too."""
        handler = self.start()
        first = reply_cookie(self.ask(handler, cookie_query(CLIENT_COOKIE)))
        self.clock.advance(10)
        second = self.ask(handler, cookie_query(first))
        self.assertEqual(reply_cookie(second), self.expected(1_700_000_010))
        for name in ("nx.cookie.test", "elsewhere.example"):
            self.assertEqual(reply_cookie(self.ask(handler, cookie_query(CLIENT_COOKIE, name))),
                             self.expected(1_700_000_010))

    def test_malformed_cookie_is_formerr(self) -> None:
        """A COOKIE option of 7, 9, 15 or 41 bytes is FORMERR with an OPT and no cookie
        (RFC 7873 §5.2.2)."""
        handler = self.start()
        for size in (7, 9, 15, 41):
            reply = self.ask(handler, cookie_query(bytes(size)))
            self.assertEqual(reply.rcode(), dns.rcode.FORMERR, size)
            self.assertEqual(reply.edns, 0)
            self.assertIsNone(reply_cookie(reply))
            self.assertEqual(reply.answer, [])

    def test_bad_server_cookie_without_policy_is_answered(self) -> None:
        """Without ``require``, a bad or stale server cookie is treated as no server cookie:
        a normal answer with a fresh cookie (RFC 7873 §5.2.4)."""
        handler = self.start()
        for server in (bytes(16), self.expected(1_700_000_000 - 3601)[8:]):
            reply = self.ask(handler, cookie_query(CLIENT_COOKIE + server))
            self.assertEqual(reply.rcode(), dns.rcode.NOERROR)
            self.assertEqual(reply_cookie(reply), self.expected(1_700_000_000))

    def test_badcookie_when_required_over_udp(self) -> None:
        """With ``require``, a UDP query whose server cookie is missing or bad gets BADCOOKIE
        (extended rcode 23) with a fresh cookie and no answer; a good one is answered; TCP
        and queries without any cookie are always answered."""
        handler = self.start(require=True)
        for body in (CLIENT_COOKIE, CLIENT_COOKIE + bytes(16)):
            reply = self.ask(handler, cookie_query(body))
            self.assertEqual(reply.rcode(), dns.rcode.BADCOOKIE)
            self.assertEqual(reply.answer, [])
            self.assertEqual(reply_cookie(reply), self.expected(1_700_000_000))
        good = self.ask(handler, cookie_query(self.expected(1_700_000_000)))
        self.assertEqual((good.rcode(), len(good.answer)), (dns.rcode.NOERROR, 1))
        over_tcp = self.ask(handler, cookie_query(CLIENT_COOKIE), tcp=True)
        self.assertEqual((over_tcp.rcode(), len(over_tcp.answer)), (dns.rcode.NOERROR, 1))
        plain = self.ask(handler, cookie_query(None))
        self.assertEqual((plain.rcode(), len(plain.answer)), (dns.rcode.NOERROR, 1))

    def test_cookie_queries_skip_the_fast_lanes(self) -> None:
        """A query carrying a cookie is never sniffed, so the memo and replay never keep its
        answer; a plain EDNS query still is."""
        self.assertIsNone(wire.sniff(cookie_query(CLIENT_COOKIE)))
        self.assertIsNotNone(wire.sniff(cookie_query(None)))
        nsid = dns.message.make_query("www.cookie.test", "A", use_edns=0,
                                      options=[dns.edns.GenericOption(3, b"")]).to_wire()
        self.assertIsNotNone(wire.sniff(nsid))
        handler = self.start()
        for _ in range(3):
            self.ask(handler, cookie_query(CLIENT_COOKIE))
        self.assertEqual(handler.stats.memo_hits, 0)
        self.assertEqual(handler._memo, {})


class WorkerSecretTests(unittest.TestCase):
    """The secret the first process made reaches its workers."""

    def test_supervisor_passes_the_secret(self) -> None:
        """A worker is spawned with the secret in its environment, not on its command line."""
        spawned = []

        class Reactor(MemoryReactorClock):
            def spawnProcess(self, proto, executable, args, env=None, path=None, childFDs=None):  # noqa: N802
                spawned.append((args, env))

                class Process:
                    pid = 4242
                return Process()

        config = parse_config('[server]\nworkers = 2\ncontrol_socket = ""\n', self.mktemp() + ".toml")
        supervisor = Supervisor(Reactor(), config, [5300], cookie_secret=b"\x07" * 16)
        supervisor.start()
        args, env = spawned[0]
        self.assertEqual(env[cookies.SECRET_ENVIRONMENT], "07" * 16)
        self.assertNotIn("07" * 16, " ".join(args))


class DigCookieTests(unittest.TestCase):
    """``dig +cookie`` against the running service."""

    def setUp(self) -> None:
        if not dig_available():
            raise unittest.SkipTest("dig (bind9-dnsutils) is not installed")

    @defer.inlineCallbacks
    def test_dig_cookie_round_trip(self):
        """dig's first query gets a server cookie dig calls good; sent back, it is accepted
        (with ``require``, so a bad one would be BADCOOKIE) and answered with a good cookie."""
        _, host, port = start_server(self, CONFIG.replace("{require}", "require = true"), zones=ZONES)
        out = (yield dig(host, port, "+cookie=0102030405060708", "www.cookie.test", "A")).decode()
        # dig retries a BADCOOKIE answer once with the server cookie it was given (dig 9.18).
        found = re.findall(r"; COOKIE: ([0-9a-f]+) \(good\)", out)
        self.assertTrue(found, out)
        cookie = found[-1]
        self.assertTrue(cookie.startswith("0102030405060708"), out)
        self.assertEqual(len(cookie), 48)
        out = (yield dig(host, port, f"+cookie={cookie}", "www.cookie.test", "A")).decode()
        self.assertIn("status: NOERROR", out)
        self.assertNotIn("BADCOOKIE", out)
        self.assertIn("192.0.2.2", out)
        self.assertRegex(out, r"; COOKIE: 0102030405060708[0-9a-f]{32} \(good\)")


class RateLimitExemptionTests(unittest.TestCase):
    """As in BIND, a client presenting a good server cookie is never rate limited."""

    def test_good_cookie_is_exempt(self) -> None:
        """Under ``[rate_limit] responses_per_second = 2``, 40 UDP queries in the same second
        with a good server cookie are all answered in full; without one, or with a bad one,
        most are dropped or slipped."""
        clock = StoppedClock(1_700_000_000)
        config = CONFIG.replace("{require}", "") + "[rate_limit]\nresponses_per_second = 2\n"
        service, _, _ = start_server(self, config, zones=ZONES, clock=clock)
        handler = service.handler
        good = CLIENT_COOKIE + cookies.make(bytes.fromhex(SECRET), CLIENT_COOKIE,
                                            cookies.address_bytes("192.0.2.7"), 1_700_000_000)

        def full_answers(body: bytes | None) -> int:
            count = 0
            for _ in range(40):
                reply = handler.handle(cookie_query(body), "192.0.2.7", False)
                if isinstance(reply, bytes) and dns.message.from_wire(reply).answer:
                    count += 1
            return count

        self.assertEqual(full_answers(good), 40)
        self.assertLess(full_answers(None), 10)
        self.assertLess(full_answers(CLIENT_COOKIE + bytes(16)), 10)


class WorkerCookieTests(unittest.TestCase):
    """With ``[server] workers = 2`` and no configured secret, a cookie one process made is
    good at the other."""

    timeout = 60

    def setUp(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = root + os.pathsep + (old or "")
        self.addCleanup(lambda: os.environ.__setitem__("PYTHONPATH", old) if old is not None
                        else os.environ.pop("PYTHONPATH", None))
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": WORKERS_CONFIG + "[cookies]\nrequire = true\n",
                          "zones/example.test.zone": ZONE.format(last=10)})
        files = ZoneFileCache()
        config, snapshot = load(os.path.join(base, "smartdns.toml"), files)
        self.service = SmartDNSService(config, snapshot, reactor, files=files)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.host, self.port = self.service.addresses()[0]

    def ask_many(self, body: bytes, count: int):
        """``count`` UDP queries with COOKIE ``body``, each from a fresh source port (so the
        kernel spreads them over both processes); their rcodes."""
        def run() -> list[int]:
            out = []
            for _ in range(count):
                query = dns.message.make_query("www.example.test", "A", use_edns=0,
                                               options=[dns.edns.GenericOption(cookies.COOKIE_OPTION, body)])
                out.append(dns.query.udp(query, self.host, port=self.port, timeout=2).rcode())
            return out
        return threads.deferToThread(run)

    @defer.inlineCallbacks
    def test_cookie_is_good_at_every_worker(self):
        """Once both processes answer, 40 UDP queries presenting one server cookie (got over
        TCP) are all answered NOERROR, not BADCOOKIE, and some reached the worker."""
        def fetch_cookie() -> bytes:
            query = dns.message.make_query("www.example.test", "A", use_edns=0,
                                           options=[dns.edns.GenericOption(cookies.COOKIE_OPTION, CLIENT_COOKIE)])
            reply = dns.query.tcp(query, self.host, port=self.port, timeout=2)
            found = reply_cookie(reply)
            assert found is not None
            return found

        cookie = yield threads.deferToThread(fetch_cookie)
        state = {}

        @defer.inlineCallbacks
        def all_good_and_spread():
            before = self.service.handler.stats.queries
            state["rcodes"] = yield self.ask_many(cookie, 40)
            return self.service.handler.stats.queries - before < 40

        yield wait_for(self, all_good_and_spread, "the worker to answer")
        self.assertEqual(set(state["rcodes"]), {dns.rcode.NOERROR})
