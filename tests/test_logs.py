"""The server log: ``[log] level`` everywhere, and worker lines with one timestamp."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
from typing import Any

from twisted.internet import defer
from twisted.logger import LogLevel, Logger, globalLogPublisher, formatEvent
from twisted.trial import unittest

from smartdns import logs
from smartdns.workers import REPLY_FD, _WorkerProcess
from tests.test_control import poll, socket_directory
from tests.test_startup import ROOT, TWISTD

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"
STOP_TIMEOUT_SECONDS = 30.0


class Captured:
    """Events reaching the global log publisher while installed."""

    def __init__(self, case: unittest.TestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)


class WorkerObserverTests(unittest.TestCase):
    """A worker's own log: filtered by level, written as JSON records."""

    def emit_all(self, level: str) -> list[str]:
        stream = io.StringIO()
        logger = Logger(observer=logs.worker_observer(stream, level), namespace="smartdns.test")
        for name in ("debug", "info", "warn", "error"):
            getattr(logger, name)("{name} line", name=name)
        return [line for line in stream.getvalue().split("\n") if line]

    def test_levels(self) -> None:
        """Each level keeps itself and what is more severe."""
        self.assertEqual(len(self.emit_all("debug")), 4)
        self.assertEqual(len(self.emit_all("info")), 3)
        self.assertEqual(len(self.emit_all("warn")), 2)
        self.assertEqual(len(self.emit_all("error")), 1)

    def test_level_filter_on_any_observer(self) -> None:
        """level_filter passes warn and error at "warn", and drops info."""
        seen: list[dict[str, Any]] = []
        logger = Logger(observer=logs.level_filter(seen.append, "warn"))
        logger.info("no")
        logger.warn("yes")
        logger.error("yes")
        self.assertEqual([e["log_level"] for e in seen], [LogLevel.warn, LogLevel.error])


class RelayTests(unittest.TestCase):
    """The first process puts a worker's events into its own log as they were."""

    def worker_lines(self) -> list[str]:
        stream = io.StringIO()
        logger = Logger(observer=logs.worker_observer(stream, "info"), namespace="smartdns.service")
        logger.info("serving generation {generation}", generation=7)
        return [line for line in stream.getvalue().split("\n") if line]

    def test_event_keeps_its_time_level_and_text(self) -> None:
        """A JSON record becomes the same event, under the system ``worker N ...``."""
        captured = Captured(self)
        (line,) = self.worker_lines()
        logs.relay(line.encode(), 2)
        (event,) = captured.events
        self.assertEqual(formatEvent(event), "serving generation 7")
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["log_system"], "worker 2 smartdns.service#info")
        self.assertIsInstance(event["log_time"], float)

    def test_other_lines_are_warnings(self) -> None:
        """A line that is not an event (a crash before logging began) is logged as a warning."""
        captured = Captured(self)
        logs.relay(b"Traceback (most recent call last):", 1)
        logs.relay(b"", 1)
        self.assertEqual([(e["log_level"], formatEvent(e)) for e in captured.events],
                         [(LogLevel.warn, "worker 1: Traceback (most recent call last):")])

    def test_records_split_across_reads(self) -> None:
        """A pipe read may end mid-record: only whole lines are relayed; replies are separate."""
        captured = Captured(self)

        class Supervisor:
            reactor = None

        watcher = _WorkerProcess(Supervisor(), 1)   # type: ignore[arg-type]
        data = ("\n".join(self.worker_lines() * 2) + "\n").encode()
        watcher.childDataReceived(2, data[:10])
        self.assertEqual(captured.events, [])
        watcher.childDataReceived(2, data[10:-5])
        self.assertEqual(len(captured.events), 1)
        watcher.childDataReceived(2, data[-5:])
        self.assertEqual(len(captured.events), 2)
        watcher.childDataReceived(REPLY_FD, b"99 {}\n")     # a reply nobody waits for: ignored
        self.assertEqual(len(captured.events), 2)


class TwistdLogTests(unittest.TestCase):
    """The log of a real twistd with ``[server] workers = 2``."""

    timeout = 120

    def start(self, level: str) -> tuple[subprocess.Popen[str], str]:
        if not os.path.exists(TWISTD):
            raise unittest.SkipTest("twistd is not installed next to this Python")
        base = socket_directory(self)
        config = os.path.join(base, "smartdns.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = ["127.0.0.1:0"]\nworkers = 2\ncontrol_socket = ""\n'
                    f'[access]\nrecursion = ["0.0.0.0/0"]\n[forward]\nupstreams = []\n'
                    f'[zones]\nwatch = false\n[log]\nlevel = "{level}"\n')
        logfile = os.path.join(base, "twistd.log")
        process = subprocess.Popen([TWISTD, "-n", "--pidfile=", f"--logfile={logfile}", "smartdns", "--config",
                                    config], cwd=base, env=dict(os.environ, PYTHONPATH=ROOT), text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def stop() -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.communicate(timeout=STOP_TIMEOUT_SECONDS)

        self.addCleanup(stop)
        return process, logfile

    def read(self, logfile: str) -> str:
        try:
            with open(logfile) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @defer.inlineCallbacks
    def test_worker_lines_have_one_timestamp(self):
        """A worker's line is ``TIME [worker 1 namespace#level] text``: its own time, once."""
        _process, logfile = self.start("info")
        pattern = re.compile(rf"^{TIMESTAMP} \[worker 1 smartdns\.service#info\] serving generation 1: ", re.M)
        yield poll(lambda: pattern.search(self.read(logfile)), "the worker's start in the log")
        for line in self.read(logfile).splitlines():
            if "worker 1" in line and not line.startswith("\t"):
                self.assertEqual(len(re.findall(TIMESTAMP, line)), 1, line)

    @defer.inlineCallbacks
    def test_level_applies_to_every_process(self):
        """At "warn", no process logs info lines (twistd's own included); warnings still show."""
        process, logfile = self.start("warn")
        yield poll(lambda: "open resolver" in self.read(logfile), "the open-resolver warning")
        # The worker is up once SIGTERM stops it cleanly; its info lines would be in by then.
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=STOP_TIMEOUT_SECONDS)
        text = self.read(logfile)
        self.assertNotIn("#info]", text)
        self.assertNotIn("serving generation", text)
        self.assertIn("#warn] warning: ", text)
