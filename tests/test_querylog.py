"""``[log] queries``: one JSON line per query, bounded, reopened for logrotate."""
from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from smartdns.querylog import QueryLog
from tests.support import FakeUpstream, answer_a, query, start_server

ZONE = """
$TTL 300
@      IN SOA ns1 hostmaster 1 3600 600 86400 60
@      IN NS  ns1
ns1    IN A   192.0.2.53
www    IN A   192.0.2.1
"""
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
control_socket = ""
[log]
queries = "queries.log"
[lines]
office = ["127.0.0.3/32"]
[forward]
upstreams = ["{upstream}"]
"""


def read_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


class QueryLogTests(unittest.TestCase):
    """The query log of a running server."""

    def setUp(self) -> None:
        self.up = FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.1"])).start(self)
        self.service, self.host, self.port = start_server(self, CONFIG.format(upstream=self.up.address),
                                                          zones={"example.com.zone": ZONE})
        self.path = os.path.join(os.path.dirname(self.service.config.path), "queries.log")

    def flush(self) -> None:
        """Close the writer (it writes everything queued first) so the file can be read."""
        self.service.querylog.close()

    @defer.inlineCallbacks
    def test_one_json_line_per_query_with_every_field(self):
        """Local (full path and memo, UDP and TCP), forwarded and cached answers each get a line
        with time, client and port, transport, line, qname, qtype, rcode, stage, upstream,
        latency and answer count; repeats are logged too (the replay table is off)."""
        yield query(self.host, self.port, "www.example.com", source="127.0.0.3")
        for _ in range(3):
            yield query(self.host, self.port, "www.example.com", source="127.0.0.3")
        yield query(self.host, self.port, "nope.example.com", "AAAA", tcp=True)
        yield query(self.host, self.port, "www.fwd.test")
        yield query(self.host, self.port, "www.fwd.test")
        self.flush()
        lines = read_lines(self.path)
        self.assertEqual(len(lines), 7)
        first = lines[0]
        self.assertEqual(set(first), {"time", "client", "port", "transport", "line", "qname", "qtype", "rcode",
                                      "stage", "upstream", "latency_us", "answers"})
        self.assertEqual((first["client"], first["transport"], first["line"], first["qname"], first["qtype"],
                          first["rcode"], first["stage"], first["answers"]),
                         ("127.0.0.3", "udp", "office", "www.example.com.", "A", "NOERROR", "local", 1))
        self.assertGreater(first["port"], 0)
        self.assertEqual([line["line"] for line in lines[1:4]], ["office"] * 3)
        nx = lines[4]
        self.assertEqual((nx["transport"], nx["qtype"], nx["rcode"], nx["line"], nx["answers"]),
                         ("tcp", "AAAA", "NXDOMAIN", None, 0))
        self.assertEqual((lines[5]["stage"], lines[5]["upstream"]), ("upstream", self.up.address))
        self.assertEqual((lines[6]["stage"], lines[6]["upstream"]), ("cache", None))

    @defer.inlineCallbacks
    def test_reopened_on_reload(self):
        """After logrotate moves the file, a reload makes the server write a new one."""
        yield query(self.host, self.port, "www.example.com")
        rotated = self.path + ".1"
        # Let the writer finish the first line before moving the file.
        for _ in range(100):
            if self.service.querylog.written:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        os.rename(self.path, rotated)
        result = yield self.service.reload("logrotate")
        self.assertTrue(result.ok, result.summary())
        yield query(self.host, self.port, "ns1.example.com")
        self.flush()
        self.assertEqual([line["qname"] for line in read_lines(rotated)], ["www.example.com."])
        self.assertEqual([line["qname"] for line in read_lines(self.path)], ["ns1.example.com."])


class BoundedBufferTests(unittest.TestCase):
    """A writer that cannot write never blocks the caller and never grows without bound."""

    def test_lines_beyond_the_buffer_are_dropped_and_counted(self):
        """With the writer stuck (a FIFO nobody reads), record() returns at once and counts
        what it could not queue."""
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        clock = task.Clock()
        qlog = QueryLog(clock, fifo, capacity=3)
        for i in range(10):
            qlog.record(0.0, "127.0.0.1", 1, "udp", None, f"n{i}.", "A", "NOERROR", "local", None, 1, 1)
        self.assertEqual(qlog.dropped, 7)                         # the writer waits in open(): 3 queued
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)     # unblock the writer, then stop it
        self.addCleanup(os.close, reader)
        qlog.close()
