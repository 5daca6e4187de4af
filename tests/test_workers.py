"""``[server] workers``: several processes on one port (SO_REUSEPORT), reloaded and restarted."""
from __future__ import annotations

import json
import os
import signal

import dns.message
import dns.query
from twisted.internet import defer, reactor, task, threads, utils
from twisted.trial import unittest

from smartdns.reload import ZoneFileCache
from smartdns.service import SmartDNSService, load
from tests.support import write_tree

ZONE = """
$TTL 300
@ SOA ns1 h 1 2 3 4 5
@ NS ns1
www A 192.0.2.{last}
"""
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
workers = 2
control_socket = ""
[zones]
directory = "zones"
watch = false
[forward]
upstreams = []
"""
WAIT_STEP_SECONDS = 0.05
WAIT_LIMIT_SECONDS = 20.0


def ask(host: str, port: int, count: int) -> defer.Deferred[list[str]]:
    """``count`` queries for www.example.test, each from a fresh source port (so the kernel
    spreads them over the processes); the A record of each answer."""
    def run() -> list[str]:
        out = []
        for _ in range(count):
            reply = dns.query.udp(dns.message.make_query("www.example.test", "A"), host, port=port, timeout=2)
            out.append(reply.answer[0][0].to_text() if reply.answer else "none")
        return out
    return threads.deferToThread(run)


@defer.inlineCallbacks
def wait_for(case: unittest.TestCase, condition, what: str):
    """Poll ``condition`` (may return a Deferred) every WAIT_STEP_SECONDS until it is true."""
    waited = 0.0
    while not (yield defer.maybeDeferred(condition)):
        if waited > WAIT_LIMIT_SECONDS:
            case.fail(f"timed out waiting for {what}")
        yield task.deferLater(reactor, WAIT_STEP_SECONDS, lambda: None)
        waited += WAIT_STEP_SECONDS


class WorkerTests(unittest.TestCase):
    """Two processes share the port; both answer, both reload, a dead one comes back."""

    timeout = 60

    def setUp(self) -> None:
        # The worker must be able to import smartdns from this checkout.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = root + os.pathsep + (old or "")
        self.addCleanup(lambda: os.environ.__setitem__("PYTHONPATH", old) if old is not None
                        else os.environ.pop("PYTHONPATH", None))
        self.base = os.path.abspath(self.mktemp())
        write_tree(self.base, {"smartdns.toml": CONFIG, "zones/example.test.zone": ZONE.format(last=10)})
        files = ZoneFileCache()
        config, snapshot = load(os.path.join(self.base, "smartdns.toml"), files)
        self.service = SmartDNSService(config, snapshot, reactor, files=files)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.host, self.port = self.service.addresses()[0]

    def ask_many(self, count: int) -> defer.Deferred[list[str]]:
        """``count`` queries, each from a fresh source port (so the kernel spreads them)."""
        def run() -> list[str]:
            out = []
            for _ in range(count):
                reply = dns.query.udp(dns.message.make_query("www.example.test", "A"), self.host,
                                      port=self.port, timeout=2)
                out.append(reply.answer[0][0].to_text() if reply.answer else "none")
            return out
        return threads.deferToThread(run)

    @defer.inlineCallbacks
    def wait_for(self, condition, what: str):
        waited = 0.0
        while not (yield defer.maybeDeferred(condition)):
            if waited > WAIT_LIMIT_SECONDS:
                self.fail(f"timed out waiting for {what}")
            yield task.deferLater(reactor, WAIT_STEP_SECONDS, lambda: None)
            waited += WAIT_STEP_SECONDS

    @defer.inlineCallbacks
    def both_answer(self):
        before = self.service.handler.stats.queries
        answers = yield self.ask_many(40)
        return self.service.handler.stats.queries - before < len(answers)

    @defer.inlineCallbacks
    def test_both_processes_answer_and_reload(self):
        """Queries reach both processes; after a reload every answer has the new data."""
        yield self.wait_for(self.both_answer, "the worker to answer")
        write_tree(self.base, {"zones/example.test.zone": ZONE.format(last=20)})
        result = yield self.service.reload("test")
        self.assertTrue(result.ok)

        @defer.inlineCallbacks
        def all_new():
            answers = yield self.ask_many(40)
            return set(answers) == {"192.0.2.20"}

        yield self.wait_for(all_new, "every worker to serve the new data")

    @defer.inlineCallbacks
    def test_dead_worker_is_restarted(self):
        """A worker killed with SIGKILL is started again and answers."""
        yield self.wait_for(self.both_answer, "the worker to answer")
        supervisor = self.service.supervisor
        (process,) = supervisor.processes.values()
        old_pid = process.pid
        os.kill(old_pid, signal.SIGKILL)
        yield self.wait_for(lambda: supervisor.restarts == 1 and supervisor.processes, "a restart")
        (process,) = supervisor.processes.values()
        self.assertNotEqual(process.pid, old_pid)
        yield self.wait_for(self.both_answer, "the restarted worker to answer")


class WorkerControlTests(unittest.TestCase):
    """``smartdns stats`` and ``smartdns reload`` cover every worker (the first process asks
    each over its pipe); the CLI runs as a real process against the real control socket."""

    timeout = 90

    def setUp(self) -> None:
        import shutil
        import tempfile

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env = dict(os.environ, PYTHONPATH=root)
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = root + os.pathsep + (old or "")
        self.addCleanup(lambda: os.environ.__setitem__("PYTHONPATH", old) if old is not None
                        else os.environ.pop("PYTHONPATH", None))
        self.base = tempfile.mkdtemp(prefix="smartdns-test-")     # a short path, for the socket
        self.addCleanup(shutil.rmtree, self.base, True)
        config = CONFIG.replace('control_socket = ""', 'control_socket = "control.sock"').replace(
            "workers = 2", "workers = 3") + '[metrics]\nlisten = "127.0.0.1:0"\n'
        write_tree(self.base, {"smartdns.toml": config, "zones/example.test.zone": ZONE.format(last=10)})
        self.config = os.path.join(self.base, "smartdns.toml")
        files = ZoneFileCache()
        config_value, snapshot = load(self.config, files)
        self.service = SmartDNSService(config_value, snapshot, reactor, files=files)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.host, self.port = self.service.addresses()[0]

    @defer.inlineCallbacks
    def cli(self, *args: str):
        import sys
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ("-m", "smartdns", *args, "--config", self.config), env=self.env, path=self.base)
        return code, out.decode(), err.decode()

    @defer.inlineCallbacks
    def report(self):
        code, out, err = yield self.cli("stats", "--json")
        self.assertEqual(code, 0, err)
        return json.loads(out)

    @defer.inlineCallbacks
    def every_worker_counted(self):
        """True once all three processes have answered queries (more queries are sent)."""
        yield ask(self.host, self.port, 30)
        report = yield self.report()
        return len(report["processes"]) == 3 and all(p["counters"]["queries"] for p in report["processes"])

    @defer.inlineCallbacks
    def test_stats_sum_every_process(self):
        """``stats --json`` has each process's counters and their sums; ``stats`` prints the sums."""
        yield wait_for(self, self.every_worker_counted, "every process to answer queries")
        report = yield self.report()
        processes = report["processes"]
        self.assertEqual([p["worker"] for p in processes], [0, 1, 2])
        self.assertEqual(processes[0]["pid"], os.getpid())
        self.assertEqual(set(processes[1]["counters"]), set(processes[0]["counters"]))
        self.assertEqual(report["missing_workers"], [])
        for name, total in report["counters"].items():
            if name.startswith("serial."):        # the serial served: each process's, not a sum
                self.assertEqual({p["counters"][name] for p in processes}, {total}, name)
            elif name != "generation":
                self.assertEqual(total, sum(p["counters"][name] for p in processes), name)
        self.assertEqual(report["counters"]["generation"], 1)
        code, out, err = yield self.cli("stats")
        self.assertEqual((code, err), (0, ""))
        text = dict(line.split(" ") for line in out.splitlines())
        self.assertGreaterEqual(int(text["queries"]), report["counters"]["queries"])
        self.assertEqual(set(text), set(report["counters"]))

    @defer.inlineCallbacks
    def test_one_scrape_is_the_whole_server(self):
        """The first process's /metrics sums every process: its request counter equals the sum
        of the processes' query counters, and smartdns_processes is 3."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        yield wait_for(self, self.every_worker_counted, "every process to answer queries")
        report = yield self.report()
        url = f"http://127.0.0.1:{self.service.metrics_port.getHost().port}/metrics"
        body = yield threads.deferToThread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0) + sample.value
        self.assertEqual(values["smartdns_processes"], 3)
        # Queries keep arriving only from this test, so the counts stand still between the two reads.
        self.assertEqual(values["smartdns_dns_requests_total"], report["counters"]["queries"])

    @defer.inlineCallbacks
    def test_reload_reaches_every_worker(self):
        """After ``smartdns reload``, every process serves generation 2 and the new data."""
        yield wait_for(self, self.every_worker_counted, "every process to answer queries")
        write_tree(self.base, {"zones/example.test.zone": ZONE.format(last=20)})
        code, out, err = yield self.cli("reload")
        self.assertEqual(code, 0, err)
        self.assertIn("reload OK: generation 2", out)

        @defer.inlineCallbacks
        def all_reloaded():
            report = yield self.report()
            return [p["counters"]["generation"] for p in report["processes"]] == [2, 2, 2]

        yield wait_for(self, all_reloaded, "every worker to reload")
        answers = yield ask(self.host, self.port, 30)
        self.assertEqual(set(answers), {"192.0.2.20"})

    @defer.inlineCallbacks
    def test_a_dead_worker_is_reported_missing(self):
        """A worker that is not running is listed as missing; the others are still summed."""
        yield wait_for(self, self.every_worker_counted, "every process to answer queries")
        supervisor = self.service.supervisor
        supervisor.running = False            # keep it dead, for the test
        ended = defer.Deferred()
        watcher = supervisor.protocols[2]
        original = supervisor.ended

        def on_end(index, reason):
            original(index, reason)
            if index == 2:
                ended.callback(None)

        supervisor.ended = on_end
        os.kill(supervisor.processes[2].pid, signal.SIGKILL)
        yield ended
        self.assertTrue(watcher.gone)
        report = yield self.service.stats_report()
        self.assertEqual(report["missing_workers"], [2])
        self.assertEqual([p["worker"] for p in report["processes"]], [0, 1])
