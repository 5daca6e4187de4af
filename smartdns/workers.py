"""``[server] workers = N``: N processes answering on the same ports (SO_REUSEPORT).

The first process (the one twistd runs) binds its listeners, then starts N-1 worker processes
(``python -m smartdns.workers``) that bind the same ports; the kernel spreads queries over all
of them.  Each process has its own cache.  A reload in the first process is passed on with
SIGHUP; a worker that dies is started again after a short delay; workers die with the first
process (PR_SET_PDEATHSIG) and are stopped with it.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import signal
import sys
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger

from smartdns.config import Config, load_config

log = Logger()

RESTART_DELAY_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


class _WorkerProcess(protocol.ProcessProtocol):
    """Watches one worker; tells the supervisor when it ends."""

    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        for line in data.decode("utf-8", "replace").splitlines():
            log.info("worker {index}: {line}", index=self.index, line=line)

    outReceived = errReceived  # noqa: N815

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.supervisor.ended(self.index, reason)


class Supervisor:
    """Starts, restarts, signals and stops the worker processes."""

    def __init__(self, reactor: Any, config: Config, ports: list[int]) -> None:
        self.reactor = reactor
        self.config = config
        self.ports = ports
        self.processes: dict[int, Any] = {}
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
        self.processes[index] = self.reactor.spawnProcess(
            _WorkerProcess(self, index), sys.executable, args, env=os.environ.copy(), path=os.getcwd())
        log.info("started worker {index} (pid {pid})", index=index, pid=self.processes[index].pid)

    def ended(self, index: int, reason: Any) -> None:
        """A worker exited: start it again unless we are stopping."""
        self.processes.pop(index, None)
        if not self.running:
            if not self.processes and self._stopped is not None and not self._stopped.called:
                self._stopped.callback(None)
            return
        if self.running:
            self.restarts += 1
            log.warn("worker {index} ended ({reason}); restarting in {delay}s", index=index,
                     reason=reason.getErrorMessage(), delay=RESTART_DELAY_SECONDS)
            self.reactor.callLater(RESTART_DELAY_SECONDS, self._spawn, index)

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
    from smartdns.txtyping import text_log_observer

    # Any, like every reactor in smartdns: mypy cannot call the zope interfaces it is typed by.
    reactor: Any = installed_reactor
    globalLogBeginner.beginLoggingTo([text_log_observer(sys.stderr)], redirectStandardIO=False)
    ports = [int(p) for p in args.ports.split(",")]
    files = ZoneFileCache()
    config = pin(load_config(args.config), ports)
    snapshot = build_snapshot(config, 1, read_zone=files.read)
    tune_gc()
    service = SmartDNSService(config, snapshot, reactor, files=files, install_signals=True, worker=True,
                              transform=lambda c: pin(c, ports))
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
