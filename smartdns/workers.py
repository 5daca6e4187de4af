"""``[server] workers = N``: N processes answering on the same ports (SO_REUSEPORT).

The first process (the one twistd runs) binds its listeners, then starts N-1 worker processes
(``python -m smartdns.workers``) that bind the same ports; the kernel spreads queries over all
of them.  Each process has its own cache.  A reload in the first process is passed on with
SIGHUP; a worker that dies is started again after a short delay; workers die with the first
process (PR_SET_PDEATHSIG) and are stopped with it.

Only the first process has the control socket.  For ``smartdns stats`` it asks each worker over
a pipe of its own (file descriptors 3 and 4 in the worker: ``ID stats`` in, ``ID {json}`` out),
so no second socket needs a path, permissions or cleanup.  A worker's log events come back as
JSON on its stderr and join the first process's log (`smartdns.logs.relay`).
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import itertools
import json
import os
import signal
import sys
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger

from smartdns import cookies, logs
from smartdns.config import Config, load_config
from smartdns.txtyping import TypedLineOnlyReceiver

log = Logger()

RESTART_DELAY_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
PR_SET_PDEATHSIG = 1
COMMAND_FD = 3                 # in a worker: commands from the first process
REPLY_FD = 4                   # in a worker: one ``ID {json}`` line per command
ASK_TIMEOUT_SECONDS = 5.0      # a worker that takes longer is reported as not answering


class _WorkerProcess(protocol.ProcessProtocol):
    """Watches one worker; tells the supervisor when it ends."""

    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self._partial: dict[int, bytes] = {}
        self._ids = itertools.count(1)
        self._asked: dict[int, tuple[defer.Deferred[Any], Any]] = {}
        self.gone = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N802,N803 (Twisted API)
        """Whole lines only: a pipe read can end mid-line."""
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            if childFD == REPLY_FD:
                self._answered(line)
            else:
                logs.relay(line, self.index)

    def ask(self, command: str) -> defer.Deferred[Any]:
        """Fires with the worker's decoded reply, or None if it ends or takes too long."""
        answer: defer.Deferred[Any] = defer.Deferred()
        if self.gone or self.transport is None:
            answer.callback(None)
            return answer
        ident = next(self._ids)
        timer = self.supervisor.reactor.callLater(ASK_TIMEOUT_SECONDS, self._give_up, ident)
        self._asked[ident] = (answer, timer)
        transport: Any = self.transport
        transport.writeToChild(COMMAND_FD, f"{ident} {command}\n".encode("ascii"))
        return answer

    def _answered(self, line: bytes) -> None:
        ident, _, text = line.partition(b" ")
        try:
            answer, timer = self._asked.pop(int(ident))
            reply = json.loads(text)
        except (ValueError, KeyError):
            return                     # a reply that came after its time ran out
        timer.cancel()
        answer.callback(reply)

    def _give_up(self, ident: int) -> None:
        answer, _timer = self._asked.pop(ident, (None, None))
        if answer is not None:
            answer.callback(None)

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.gone = True
        for answer, timer in self._asked.values():
            if timer.active():
                timer.cancel()
            answer.callback(None)
        self._asked.clear()
        self.supervisor.ended(self.index, reason)


class Supervisor:
    """Starts, restarts, signals and stops the worker processes."""

    def __init__(self, reactor: Any, config: Config, ports: list[int], *, cookie_secret: bytes | None = None) -> None:
        self.reactor = reactor
        self.cookie_secret = cookie_secret     # made by the first process when [cookies] secret is unset
        self.config = config
        self.ports = ports
        self.processes: dict[int, Any] = {}
        self.protocols: dict[int, _WorkerProcess] = {}
        self.restarts = 0
        self.running = False
        self._stopped: defer.Deferred[None] | None = None

    def start(self) -> None:
        """Start workers 1..N-1 (the current process is worker 0)."""
        self.running = True
        for index in range(1, self.config.server.workers):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        if not self.running:
            return
        args = [sys.executable, "-m", "smartdns.workers", "--ports", ",".join(map(str, self.ports)),
                "--index", str(index)]
        if self.config.path:
            args += ["--config", self.config.path]
        watcher = _WorkerProcess(self, index)
        self.protocols[index] = watcher
        env = os.environ.copy()
        if self.cookie_secret is not None:
            # Through the environment, not the command line (which any local user can read).
            env[cookies.SECRET_ENVIRONMENT] = self.cookie_secret.hex()
        self.processes[index] = self.reactor.spawnProcess(
            watcher, sys.executable, args, env=env, path=os.getcwd(),
            childFDs={0: "w", 1: "r", 2: "r", COMMAND_FD: "w", REPLY_FD: "r"})
        log.info("started worker {index} (pid {pid})", index=index, pid=self.processes[index].pid)

    def ended(self, index: int, reason: Any) -> None:
        """A worker exited: start it again unless we are stopping."""
        self.processes.pop(index, None)
        self.protocols.pop(index, None)
        if not self.running:
            if not self.processes and self._stopped is not None and not self._stopped.called:
                self._stopped.callback(None)
            return
        if self.running:
            self.restarts += 1
            log.warn("worker {index} ended ({reason}); restarting in {delay}s", index=index,
                     reason=reason.getErrorMessage(), delay=RESTART_DELAY_SECONDS)
            self.reactor.callLater(RESTART_DELAY_SECONDS, self._spawn, index)

    def ask_all(self, command: str) -> defer.Deferred[list[tuple[int, int, Any]]]:
        """(index, pid, decoded reply or None) from every worker 1..N-1, in order; a worker
        that is not running (being restarted) or does not answer in time gives None."""
        asked = []
        for index in range(1, self.config.server.workers):
            watcher, process = self.protocols.get(index), self.processes.get(index)
            pid = process.pid if process is not None and process.pid else 0
            answer = watcher.ask(command) if watcher is not None else defer.succeed(None)
            asked.append(answer.addCallback(_tagged, index, pid))
        return defer.gatherResults(asked)

    def signal_all(self, signum: int) -> None:
        """Pass a signal (SIGHUP: reload) to every worker."""
        for process in list(self.processes.values()):
            try:
                process.signalProcess(signum)
            except Exception as e:  # the process may be exiting; it will be restarted
                log.debug("signalling worker failed: {error}", error=e)

    def stop(self) -> defer.Deferred[None]:
        """Stop every worker; fires once they have all exited (SIGKILL after a grace period)."""
        self.running = False
        if not self.processes:
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(STOP_GRACE_SECONDS, self.signal_all, signal.SIGKILL)
        return self._stopped.addBoth(lambda r: killer.cancel() if killer.active() else None)


def pin(config: Config, ports: list[int]) -> Config:
    """A worker's view of the config: the first process's actual ports, no watcher, no control socket."""
    listen = tuple((host, port) for (host, _), port in zip(config.server.listen, ports))
    server = dataclasses.replace(config.server, listen=listen, control_socket=None)
    return dataclasses.replace(config, server=server, zones=dataclasses.replace(config.zones, watch=False))


def main(argv: list[str] | None = None) -> int:
    """Worker process entry point."""
    parser = argparse.ArgumentParser(prog="smartdns-worker")
    parser.add_argument("--config", default=None)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--index", type=int, default=1)
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    from twisted.internet import reactor as installed_reactor
    from twisted.logger import globalLogBeginner

    from smartdns.reload import ZoneFileCache
    from smartdns.service import SmartDNSService, tune_gc
    from smartdns.snapshot import build_snapshot

    # Any, like every reactor in smartdns: mypy cannot call the zope interfaces it is typed by.
    reactor: Any = installed_reactor
    ports = [int(p) for p in args.ports.split(",")]
    files = ZoneFileCache()
    config = pin(load_config(args.config), ports)
    globalLogBeginner.beginLoggingTo([logs.worker_observer(sys.stderr, config.log.level)], redirectStandardIO=False)
    snapshot = build_snapshot(config, 1, read_zone=files.read)
    tune_gc()
    shared = os.environ.pop(cookies.SECRET_ENVIRONMENT, "")
    service = SmartDNSService(config, snapshot, reactor, files=files, install_signals=True, worker=True,
                              transform=lambda c: pin(c, ports),
                              cookie_secret=bytes.fromhex(shared) if shared else None)
    service.startService()
    if _fd_open(COMMAND_FD):      # started by a Supervisor (not by hand)
        from twisted.internet import stdio
        standard_io: Any = stdio.StandardIO       # typed from the Windows module, which has no fds
        standard_io(WorkerCommands(service.stats, service.metrics_counters), stdin=COMMAND_FD, stdout=REPLY_FD,
                    reactor=reactor)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def _tagged(reply: Any, index: int, pid: int) -> tuple[int, int, Any]:
    return index, pid, reply


def _fd_open(fd: int) -> bool:
    """Whether ``fd`` is an open file descriptor of this process."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class WorkerCommands(TypedLineOnlyReceiver):
    """A worker's end of the pipe from the first process: ``ID stats`` → ``ID {"pid": ...,
    "counters": [[name, value], ...]}``; ``ID metrics`` → ``ID {"pid": ..., "metrics": {...}}``
    (smartdns.metrics.counters); an unknown command → ``ID {"error": ...}``."""

    delimiter = b"\n"

    def __init__(self, stats: Callable[[], list[tuple[str, int]]],
                 metrics: Callable[[], dict[str, Any]] | None = None) -> None:
        self.stats = stats
        self.metrics = metrics

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 (Twisted API)
        ident, _, command = line.decode("ascii", "replace").strip().partition(" ")
        if command == "stats":
            reply: dict[str, Any] = {"pid": os.getpid(), "counters": self.stats()}
        elif command == "metrics" and self.metrics is not None:
            reply = {"pid": os.getpid(), "metrics": self.metrics()}
        else:
            reply = {"error": f"unknown command {command!r}"}
        self.sendLine(f"{ident} {json.dumps(reply)}".encode("utf-8"))


if __name__ == "__main__":
    sys.exit(main())
