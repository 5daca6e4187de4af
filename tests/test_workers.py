"""``[server] workers``: several processes on one port (SO_REUSEPORT), reloaded and restarted."""
from __future__ import annotations

import os
import signal

import dns.message
import dns.query
from twisted.internet import defer, reactor, task, threads
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
