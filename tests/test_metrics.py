"""``[metrics] listen``: Prometheus scrapes, health and readiness over real HTTP.

Real queries over UDP and TCP from several lines, then a real scrape parsed with
``prometheus_client``'s own parser.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from smartdns import __version__
from smartdns.config import parse_config
from smartdns.service import SmartDNSService
from smartdns.snapshot import build_snapshot
from tests.support import FakeUpstream, answer_a, query, start_server, write_tree

ZONE = """
$TTL 300
@      IN SOA ns1 hostmaster 1 3600 600 86400 60
@      IN NS  ns1
ns1    IN A   192.0.2.53
www    IN A   192.0.2.1
"""
OVERLAY = "$TTL 300\nwww IN A 10.1.1.1\n"
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
control_socket = ""
[metrics]
listen = "127.0.0.1:0"
[lines]
office = ["127.0.0.3/32"]
[forward]
upstreams = ["{upstream}"]
"""


def get(url: str) -> defer.Deferred[tuple[int, str]]:
    """(status, body) of a GET, in a thread so the reactor keeps serving."""
    def run() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    return threads.deferToThread(run)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class MetricsTests(unittest.TestCase):
    """Scrapes after real queries."""

    def setUp(self) -> None:
        self.up = FakeUpstream(lambda q, t: answer_a(q, ["198.51.100.1"])).start(self)
        self.service, self.host, self.port = start_server(
            self, CONFIG.format(upstream=self.up.address),
            zones={"example.com.zone": ZONE, "office/example.com.zone": OVERLAY})
        self.url = f"http://127.0.0.1:{self.service.metrics_port.getHost().port}"

    @defer.inlineCallbacks
    def scrape(self):
        status, body = yield get(self.url + "/metrics")
        self.assertEqual(status, 200)
        return samples(body)

    @defer.inlineCallbacks
    def test_counts_by_transport_line_type_rcode_and_source(self):
        """Requests by transport, line and type; responses by rcode, line and source; the
        duration histogram; cache and upstream counters; build info."""
        yield query(self.host, self.port, "www.example.com", source="127.0.0.3")
        yield query(self.host, self.port, "www.example.com", source="127.0.0.3", tcp=True)
        yield query(self.host, self.port, "www.example.com", "AAAA", source="127.0.0.1")
        yield query(self.host, self.port, "nope.example.com", "TYPE65280", source="127.0.0.1")
        yield query(self.host, self.port, "www.fwd.test", source="127.0.0.1")
        yield query(self.host, self.port, "www.fwd.test", source="127.0.0.1")
        s = yield self.scrape()
        req = "smartdns_dns_requests_total"
        self.assertEqual(s[(req, (("line", "office"), ("transport", "udp"), ("type", "A")))], 1)
        self.assertEqual(s[(req, (("line", "office"), ("transport", "tcp"), ("type", "A")))], 1)
        self.assertEqual(s[(req, (("line", ""), ("transport", "udp"), ("type", "AAAA")))], 1)
        self.assertEqual(s[(req, (("line", ""), ("transport", "udp"), ("type", "other")))], 1)
        self.assertEqual(s[(req, (("line", ""), ("transport", "udp"), ("type", "A")))], 2)
        resp = "smartdns_dns_responses_total"
        self.assertEqual(s[(resp, (("line", "office"), ("rcode", "NOERROR"), ("source", "local")))], 2)
        self.assertEqual(s[(resp, (("line", ""), ("rcode", "NXDOMAIN"), ("source", "local")))], 1)
        self.assertEqual(s[(resp, (("line", ""), ("rcode", "NOERROR"), ("source", "upstream")))], 1)
        self.assertEqual(s[(resp, (("line", ""), ("rcode", "NOERROR"), ("source", "cache")))], 1)
        self.assertEqual(s[("smartdns_dns_request_duration_seconds_count", (("source", "local"),))], 4)
        self.assertEqual(s[("smartdns_dns_request_duration_seconds_bucket", (("le", "+Inf"), ("source", "upstream")))], 1)
        self.assertEqual(s[("smartdns_cache_hits_total", ())], 1)
        self.assertEqual(s[("smartdns_cache_misses_total", ())], 1)
        self.assertEqual(s[("smartdns_cache_entries", ())], 1)
        to = (("to", self.up.address),)              # the upstream as the config spells it
        self.assertEqual(s[("smartdns_forward_requests_total", to)], 1)
        self.assertEqual(s[("smartdns_forward_responses_total", (("rcode", "NOERROR"),) + to)], 1)
        self.assertEqual(s[("smartdns_forward_request_duration_seconds_count", to)], 1)
        self.assertEqual(s[("smartdns_forward_up", to)], 1)
        self.assertEqual(s[("smartdns_build_info", (("version", __version__),))], 1)
        self.assertEqual(s[("smartdns_reload_generation", ())], 1)

    @defer.inlineCallbacks
    def test_fast_lane_answers_are_counted(self):
        """Answers from the memo and the UDP replay table count like any other."""
        for _ in range(5):
            yield query(self.host, self.port, "www.example.com", source="127.0.0.3")
        s = yield self.scrape()
        self.assertEqual(s[("smartdns_dns_requests_total", (("line", "office"), ("transport", "udp"), ("type", "A")))], 5)
        self.assertGreaterEqual(s[("smartdns_dns_fast_answers_total", ())], 3)
        self.assertEqual(s[("smartdns_dns_request_duration_seconds_count", (("source", "local"),))], 5)

    @defer.inlineCallbacks
    def test_counters_survive_reloads_and_a_failed_reload_keeps_ready(self):
        """A reload that replaces forwarding keeps every counter; a rejected reload leaves
        /ready at 200 and sets smartdns_reload_failed."""
        yield query(self.host, self.port, "www.fwd.test")
        path = self.service.config.path
        text = open(path, encoding="utf-8").read()
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "[cache]\nmax_entries = 500\n")
        result = yield self.service.reload("test")
        self.assertTrue(result.ok, result.summary())
        yield query(self.host, self.port, "www.fwd.test")
        s = yield self.scrape()
        self.assertEqual(s[("smartdns_cache_misses_total", ())], 2)
        self.assertEqual(s[("smartdns_reload_generation", ())], 2)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "[cache]\nmax_entries = -1\n")
        result = yield self.service.reload("test")
        self.assertFalse(result.ok)
        status, _ = yield get(self.url + "/ready")
        self.assertEqual(status, 200)
        s = yield self.scrape()
        self.assertEqual(s[("smartdns_reload_failed", ())], 1)
        self.assertEqual(s[("smartdns_reload_failures_total", ())], 1)
        self.assertEqual(s[("smartdns_dns_requests_total", (("line", ""), ("transport", "udp"), ("type", "A")))], 2)

    @defer.inlineCallbacks
    def test_health(self):
        """/health is 200 while the reactor runs; an unknown path is 404."""
        status, body = yield get(self.url + "/health")
        self.assertEqual((status, body), (200, "healthy\n"))
        status, _ = yield get(self.url + "/nope")
        self.assertEqual(status, 404)


class ZoneSerialMetricsTests(unittest.TestCase):
    """smartdns_zone_serial{zone,line}: the serial each zone is served with, per line."""

    @defer.inlineCallbacks
    def test_serials_by_zone_and_line(self):
        """Base and the office line's view; an overlay-only change raises office's serial (a
        [[transfer]] line) and the reload generation, not the base's; NOTIFY counters are there."""
        config = CONFIG.format(upstream="127.0.0.1:9") + (
            '[[tsig]]\nname = "k1"\nsecret = "c2VjcmV0"\n[[transfer]]\nkey = "k1"\nline = "office"\n')
        service, _host, _port = start_server(self, config, zones={"example.com.zone": ZONE,
                                                                  "office/example.com.zone": OVERLAY})
        url = f"http://127.0.0.1:{service.metrics_port.getHost().port}/metrics"
        _status, body = yield get(url)
        s = samples(body)
        self.assertEqual(s[("smartdns_zone_serial", (("line", ""), ("zone", "example.com")))], 1)
        self.assertEqual(s[("smartdns_zone_serial", (("line", "office"), ("zone", "example.com")))], 1)
        self.assertEqual(s[("smartdns_notify_sent_total", ())], 0)
        with open(os.path.join(service.config.zones.directory, "office", "example.com.zone"), "w") as handle:
            handle.write(OVERLAY.replace("10.1.1.1", "10.1.1.2"))
        result = yield service.reload("test")
        self.assertTrue(result.ok, result.summary())
        _status, body = yield get(url)
        s = samples(body)
        self.assertEqual(s[("smartdns_zone_serial", (("line", ""), ("zone", "example.com")))], 1)
        self.assertEqual(s[("smartdns_zone_serial", (("line", "office"), ("zone", "example.com")))], 2)
        self.assertEqual(s[("smartdns_reload_generation", ())], 2)


class ReadinessTests(unittest.TestCase):
    """/ready is 503 until the service has started."""

    @defer.inlineCallbacks
    def test_not_ready_before_start(self):
        """Bound but not started: 503; started: 200; stopped: the listener is gone."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": CONFIG.format(upstream="127.0.0.1:9"), "zones/example.com.zone": ZONE})
        path = os.path.join(base, "smartdns.toml")
        config = parse_config(open(path, encoding="utf-8").read(), path)
        service = SmartDNSService(config, build_snapshot(config), reactor)
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        url = f"http://127.0.0.1:{service.metrics_port.getHost().port}/ready"
        status, _ = yield get(url)
        self.assertEqual(status, 503)
        service.startService()
        status, _ = yield get(url)
        self.assertEqual(status, 200)
