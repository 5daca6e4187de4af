"""Random and mutated packets: nothing a client sends stops the server or gets a malformed reply."""
from __future__ import annotations

import random
import socket
import struct

import dns.message
import dns.rcode
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import defer, threads
from twisted.trial import unittest

from smartdns import wire
from tests.support import query, rrs, start_server

ZONES = {
    "fuzz.test.zone": """
        $TTL 300
        @ SOA ns1 h 1 2 3 4 5
        @ NS ns1
        ns1 A 192.0.2.1
        www A 192.0.2.2
        *.wild TXT "wild"
        alias CNAME www
        sub NS ns.sub
        ns.sub A 192.0.2.3
        big TXT "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t"
    """,
    "line1/fuzz.test.zone": "www A 10.0.0.2\n",
}
CONFIG = """
[lines]
line1 = ["127.0.0.3/32"]
[forward]
upstreams = []
"""
SEED_QUERIES = [
    wire.encode_query(1, wire.from_text(name), qtype, edns_payload=payload, do=do)
    for name, qtype in (("www.fuzz.test", wire.A), ("x.wild.fuzz.test", wire.TXT), ("alias.fuzz.test", wire.A),
                        ("a.sub.fuzz.test", wire.A), ("big.fuzz.test", wire.TXT), ("nx.fuzz.test", wire.MX))
    for payload, do in ((None, False), (1232, True), (512, False))
]
MUTATIONS = 3000


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """Flip, insert, delete, truncate or splice bytes of a valid query."""
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        if choice == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif choice == 2 and data:
            del data[rng.randrange(len(data))]
        elif choice == 3:
            del data[rng.randrange(len(data) + 1):]
        else:
            other = rng.choice(SEED_QUERIES)
            cut = rng.randrange(len(other))
            data[cut:] = other[cut:]
    return bytes(data)


class HandlerFuzzTests(unittest.TestCase):
    """Straight into the query handler: every reply is a well-formed response to the query's ID."""

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(self, CONFIG, zones=ZONES)
        self.handler = self.service.handler

    def check(self, data: bytes, client: str = "127.0.0.1", tcp: bool = False) -> None:
        reply = self.handler.handle(data, client, tcp)
        if isinstance(reply, defer.Deferred):       # forwarded: no upstreams, so it fails at once
            reply = self.successResultOf(reply)
        if reply is None:
            return
        self.assertIsInstance(reply, bytes)
        self.assertEqual(reply[:2], data[:2])                       # the query's ID
        self.assertTrue(reply[2] & 0x80)                            # QR set
        self.assertFalse(data[2] & 0x80)                            # never answers a response
        message = dns.message.from_wire(reply, ignore_trailing=False, keyring=False)   # a TSIG error is unsigned
        if not tcp:
            limit = 512
            if message.edns >= 0:
                limit = max(512, min(1232, message.payload))
            self.assertLessEqual(len(reply), max(limit, 1232))

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=600))
    def test_random_bytes(self, data):
        """Arbitrary bytes are dropped or answered with a parseable response."""
        self.check(data)

    def test_mutated_queries(self):
        """Thousands of mutated valid queries over UDP and TCP semantics, from several lines."""
        rng = random.Random(20261128)
        for i in range(MUTATIONS):
            self.check(mutate(rng, rng.choice(SEED_QUERIES)), rng.choice(["127.0.0.1", "127.0.0.3"]), tcp=i % 3 == 0)


class LiveFuzzTests(unittest.TestCase):
    """Garbage at the live server over UDP and TCP; it keeps answering correct queries."""

    timeout = 60

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(self, CONFIG, zones=ZONES)

    @defer.inlineCallbacks
    def test_server_survives_garbage(self):
        """1000 mutated datagrams and 50 broken TCP streams, then normal service."""
        rng = random.Random(7)
        packets = [mutate(rng, rng.choice(SEED_QUERIES)) for _ in range(1000)]
        streams = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(25)]
        streams += [struct.pack("!H", len(p) + rng.choice([-3, 0, 5])) + p for p in packets[:25]]

        def blast() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for packet in packets:
                    sock.sendto(packet, (self.host, self.port))
            for data in streams:
                with socket.create_connection((self.host, self.port), timeout=2) as conn:
                    conn.sendall(data)
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(0.5)
                    try:
                        while conn.recv(65535):
                            pass
                    except OSError:
                        pass

        yield threads.deferToThread(blast)
        for tcp in (False, True):
            reply = yield query(self.host, self.port, "www.fuzz.test", tcp=tcp, source="127.0.0.3")
            self.assertEqual(rrs(reply), ["www.fuzz.test. 300 A 10.0.0.2"])
            reply = yield query(self.host, self.port, "www.fuzz.test", tcp=tcp)
            self.assertEqual(rrs(reply), ["www.fuzz.test. 300 A 192.0.2.2"])
