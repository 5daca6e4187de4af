"""Prometheus metrics, health and readiness over HTTP (``[metrics] listen``).

The counters live where the work is done, as plain integers (``server.Stats``,
``cache.CacheCounters``, ``forwarder.Stats``), so counting costs a dict update per answer and
nothing else.  ``counters`` gathers them into one JSON-able value; ``merge`` adds such values
up (the first process of ``[server] workers`` adds its workers' to its own); ``Collector`` turns
one into metric families for ``prometheus_client``'s registry and exposition, named in the
style CoreDNS uses, prefixed ``smartdns_``.

Endpoints (twisted.web, on the server's own reactor):
  /metrics   Prometheus text format
  /health    200 while the reactor runs
  /ready     200 once zones are loaded and the listeners are bound, 503 before; it stays 200
             while old data is served after a failed reload (``smartdns_reload_failed`` says so)
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server as web_server

from smartdns import __version__
from smartdns.forwarder import ANSWER_BUCKETS
from smartdns.journal import served_serials
from smartdns.server import DURATION_BUCKETS, rcode_text, type_text

import dns.rdatatype

# Query types that get their own label value; everything else is "other" (bounded cardinality).
COMMON_TYPES = frozenset(int(dns.rdatatype.from_text(t)) for t in (
    "A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA", "DS", "DNSKEY", "HTTPS", "SVCB",
    "NAPTR", "ANY", "AXFR", "IXFR"))

Counters = dict[str, Any]
log = Logger()


def type_label(qtype: int) -> str:
    """A query type as a label value: its name as dig prints it for common types, else other."""
    return type_text(qtype) if qtype in COMMON_TYPES else "other"


rcode_label = rcode_text      # a response code as dig names it (NOERROR, NXDOMAIN, BADVERS, RCODE23 …)


def counters(service: Any) -> Counters:
    """Everything this process counted since it started, as one JSON-able value."""
    stats = service.handler.stats
    cache = service.cache_counters
    upstream = service.upstream_stats
    reload_state = service.reload_state
    return {
        "queries": stats.queries,
        "dropped": stats.dropped,
        "fast": stats.memo_hits,
        "rrl": {"dropped": stats.rrl_dropped, "slipped": stats.rrl_slipped},
        "answers": [[int(tcp), line or "", qtype, rcode, source, count]
                    for (tcp, line, qtype, rcode, source), count in stats.answers.items()],
        "durations": stats.duration_histograms(),
        "cache": {"entries": len(service.cache), "hits": cache.hits, "misses": cache.misses,
                  "evictions": cache.evictions, "stale": cache.stale},
        "upstreams": {name: list(row) for name, row in upstream.per_upstream.items()},
        "upstream_rcodes": [[name, rcode, count] for (name, rcode), count in upstream.rcodes.items()],
        "upstream_up": service.upstream_health(),
        "forward": {"sent": upstream.sent, "timeouts": upstream.timeouts, "failures": upstream.failures,
                    "dropped_replies": upstream.dropped_replies, "tcp_retries": upstream.tcp_retries,
                    "overloaded": upstream.overloaded, "in_flight": service.resolver.in_flight()},
        "reload": {"generation": service.current.generation, "last_success": reload_state.last_success,
                   "failures": reload_state.failures, "failed": int(reload_state.failed)},
        "querylog": {"written": service.querylog.written if service.querylog else 0,
                     "dropped": service.querylog.dropped if service.querylog else 0},
        "notify": {"sent": service.notifier.counters.sent, "answered": service.notifier.counters.answered,
                   "refused": service.notifier.counters.refused, "failed": service.notifier.counters.failed},
        "zones": [[zone, line or "", serial] for zone, line, serial in served_serials(service.current)],
        "processes": 1,
    }


def merge(values: list[Counters]) -> Counters:
    """Several processes' counters as one server's: sums, and for gauges of shared state
    (generation, upstream health) the first process's view."""
    total: Counters = {k: v for k, v in values[0].items()}
    for other in values[1:]:
        for key in ("queries", "dropped", "fast", "processes"):
            total[key] = total[key] + other[key]
        total["answers"] = total["answers"] + other["answers"]
        total["upstream_rcodes"] = total["upstream_rcodes"] + other["upstream_rcodes"]
        for key in ("cache", "forward", "querylog", "rrl", "notify"):
            total[key] = {k: total[key].get(k, 0) + other[key].get(k, 0) for k in total[key].keys() | other[key].keys()}
        for key in ("durations", "upstreams"):
            merged = {k: list(v) for k, v in total[key].items()}
            for name, row in other[key].items():
                mine = merged.get(name)
                merged[name] = list(row) if mine is None else [a + b for a, b in zip(mine, row)]
            total[key] = merged
        reload_total = dict(total["reload"])
        reload_total["failures"] += other["reload"]["failures"]
        reload_total["failed"] = max(reload_total["failed"], other["reload"]["failed"])
        total["reload"] = reload_total
    return total


def _buckets(row: list[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Per-bucket counts (plus +Inf) as Prometheus's cumulative buckets."""
    out = []
    running = 0.0
    for bound, count in zip((*(repr(b) for b in bounds), "+Inf"), row[:len(bounds) + 1]):
        running += count
        out.append((bound, running))
    return out


class Collector:
    """Metric families from a counters source (this process, or every process summed)."""

    def __init__(self, source: Callable[[], Counters]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        c = self.source()
        requests = CounterMetricFamily("smartdns_dns_requests", "Queries answered, by transport, line and type.",
                                       labels=["transport", "line", "type"])
        responses = CounterMetricFamily("smartdns_dns_responses", "Responses sent, by rcode, line and source.",
                                        labels=["rcode", "line", "source"])
        by_request: dict[tuple[str, str, str], float] = {}
        by_response: dict[tuple[str, str, str], float] = {}
        for tcp, line, qtype, rcode, source, count in c["answers"]:
            k1 = ("tcp" if tcp else "udp", line, type_label(qtype))
            by_request[k1] = by_request.get(k1, 0) + count
            k2 = (rcode_label(rcode), line, source)
            by_response[k2] = by_response.get(k2, 0) + count
        for labels, value in sorted(by_request.items()):
            requests.add_metric(list(labels), value)
        for labels, value in sorted(by_response.items()):
            responses.add_metric(list(labels), value)
        yield requests
        yield responses
        durations = HistogramMetricFamily("smartdns_dns_request_duration_seconds",
                                          "Time to answer, by source (answers made without waiting count in the first bucket).",
                                          labels=["source"])
        for source, row in sorted(c["durations"].items()):
            durations.add_metric([source], _buckets(row, DURATION_BUCKETS), row[-1])
        yield durations
        yield CounterMetricFamily("smartdns_dns_dropped", "Messages not answered at all (responses, no header, "
                                  "policy drops).", value=c["dropped"])
        yield CounterMetricFamily("smartdns_dns_fast_answers", "Answers sent by the memo or the UDP replay table.",
                                  value=c["fast"])
        yield CounterMetricFamily("smartdns_rrl_dropped", "UDP answers [rate_limit] did not send.",
                                  value=c["rrl"]["dropped"])
        yield CounterMetricFamily("smartdns_rrl_slipped", "UDP answers [rate_limit] replaced by an empty "
                                  "truncated (TC=1) reply.", value=c["rrl"]["slipped"])

        cache = c["cache"]
        yield GaugeMetricFamily("smartdns_cache_entries", "Forwarded answers in the cache.", value=cache["entries"])
        for name, help_text in (("hits", "Answers served from the cache."),
                                ("misses", "Questions forwarded because the cache had no fresh answer."),
                                ("evictions", "Entries dropped to stay within [cache] max_entries."),
                                ("stale", "Expired entries served because upstreams failed (RFC 8767).")):
            yield CounterMetricFamily(f"smartdns_cache_{name}", help_text, value=cache[name])

        forward = c["forward"]
        sent = CounterMetricFamily("smartdns_forward_requests", "Queries sent to each upstream.", labels=["to"])
        failures = CounterMetricFamily("smartdns_forward_failures",
                                       "Tries with no usable reply (timeout, connection, garbage), per upstream.",
                                       labels=["to"])
        latency = HistogramMetricFamily("smartdns_forward_request_duration_seconds",
                                        "Time for each upstream to reply.", labels=["to"])
        for name, row in sorted(c["upstreams"].items()):
            sent.add_metric([name], row[0])
            failures.add_metric([name], row[1])
            latency.add_metric([name], _buckets(row[2:], ANSWER_BUCKETS), row[-1])
        replies = CounterMetricFamily("smartdns_forward_responses", "Replies from each upstream, by rcode.",
                                      labels=["to", "rcode"])
        by_rcode: dict[tuple[str, str], float] = {}
        for name, rcode, count in c["upstream_rcodes"]:
            pair = (name, rcode_label(rcode))
            by_rcode[pair] = by_rcode.get(pair, 0) + count
        for (to, rcode_text), value in sorted(by_rcode.items()):
            replies.add_metric([to, rcode_text], value)
        up = GaugeMetricFamily("smartdns_forward_up", "1 while an upstream is not backed off after failures.",
                               labels=["to"])
        for name, state in sorted(c["upstream_up"].items()):
            up.add_metric([name], state)
        yield from (sent, failures, latency, replies, up)
        for name, help_text in (("timeouts", "Upstream tries that timed out."),
                                ("dropped_replies", "Replies dropped for a wrong source, ID or question."),
                                ("tcp_retries", "Truncated replies asked again over TCP."),
                                ("overloaded", "Misses refused because [forward] max_outstanding were waiting.")):
            yield CounterMetricFamily(f"smartdns_forward_{name}", help_text, value=forward[name])
        yield GaugeMetricFamily("smartdns_forward_in_flight", "Questions waiting on upstreams now.",
                                value=forward["in_flight"])

        reload_state = c["reload"]
        yield GaugeMetricFamily("smartdns_reload_generation", "The data generation being served (1 at start).",
                                value=reload_state["generation"])
        yield GaugeMetricFamily("smartdns_reload_last_success_timestamp_seconds",
                                "When the data being served was loaded (Unix time).", value=reload_state["last_success"])
        yield CounterMetricFamily("smartdns_reload_failures", "Reloads rejected (old data kept).",
                                  value=reload_state["failures"])
        yield GaugeMetricFamily("smartdns_reload_failed", "1 when the last reload was rejected.",
                                value=reload_state["failed"])
        serials = GaugeMetricFamily("smartdns_zone_serial", "The SOA serial served, by zone and line "
                                    "(line empty: clients in no line).", labels=["zone", "line"])
        for zone, line, serial in c["zones"]:
            serials.add_metric([zone, line], serial)
        yield serials
        notify = c["notify"]
        for name, help_text in (("sent", "NOTIFY messages sent to [[transfer]] also_notify, retries included."),
                                ("answered", "NOTIFYs answered NOERROR."),
                                ("refused", "NOTIFYs answered with an error rcode."),
                                ("failed", "NOTIFYs never answered after every try.")):
            yield CounterMetricFamily(f"smartdns_notify_{name}", help_text, value=notify[name])
        yield CounterMetricFamily("smartdns_querylog_lines", "Query log lines written.",
                                  value=c["querylog"]["written"])
        yield CounterMetricFamily("smartdns_querylog_dropped", "Query log lines dropped because the disk was "
                                  "not keeping up.", value=c["querylog"]["dropped"])
        yield GaugeMetricFamily("smartdns_processes", "Processes whose counters are summed here.",
                                value=c["processes"])
        info = GaugeMetricFamily("smartdns_build_info", "The running version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def exposition(values: Counters) -> bytes:
    """Counters in the Prometheus text format, through prometheus-client's registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(lambda: values))
    return generate_latest(registry)


class _Metrics(resource.Resource):
    isLeaf = True

    def __init__(self, source: Callable[[], Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.source = source            # counters, or a Deferred of them (workers are asked)

    def render_GET(self, request: Any) -> Any:  # noqa: N802 (twisted.web API)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        d = defer.maybeDeferred(self.source)
        d.addCallback(lambda values: (request.write(exposition(values)), request.finish()))
        d.addErrback(self._failed, request)
        return web_server.NOT_DONE_YET

    @staticmethod
    def _failed(reason: Any, request: Any) -> None:
        log.failure("metrics scrape failed", reason)
        request.setResponseCode(500)
        request.finish()


class _Status(resource.Resource):
    isLeaf = True

    def __init__(self, ok: Callable[[], bool], what: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ok = ok
        self.what = what

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 (twisted.web API)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if self.ok():
            return f"{self.what}\n".encode()
        request.setResponseCode(503)
        return f"not {self.what}\n".encode()


def site(source: Callable[[], Any], ready: Callable[[], bool]) -> web_server.Site:
    """The HTTP site: /metrics, /health, /ready (``source``: the counters, or a Deferred of them)."""
    root = resource.Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", _Metrics(source))  # type: ignore[arg-type]
    root.putChild(b"health", _Status(lambda: True, "healthy"))  # type: ignore[arg-type]
    root.putChild(b"ready", _Status(ready, "ready"))  # type: ignore[arg-type]
    made = web_server.Site(root)  # type: ignore[no-untyped-call]
    made.noisy = False
    made.log = lambda request: None  # type: ignore[method-assign]  # no access log line per scrape
    return made
