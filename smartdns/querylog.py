"""The query log (``[log] queries``): one JSON object per answered query, one per line.

Lines are formatted on the reactor thread and handed to a writer thread through a bounded
queue, so a slow disk never blocks answering: when the queue is full a line is dropped and
counted (``dropped``, and a log line at most once a minute).  ``reopen`` (called on SIGHUP and
on every reload) makes the writer close and reopen the file, for logrotate.  ``"-"`` writes to
standard output.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
from typing import Any

from twisted.logger import Logger

log = Logger()

QUEUE_LINES = 10_000            # lines waiting for the disk before new ones are dropped
BATCH_LINES = 256               # lines joined into one write
DROP_REPORT_SECONDS = 60.0
_REOPEN = object()
_STOP = object()


class QueryLog:
    """A bounded, non-blocking writer of query records."""

    def __init__(self, reactor: Any, path: str, capacity: int = QUEUE_LINES) -> None:
        self.reactor = reactor
        self.path = path
        self.written = 0
        self.dropped = 0
        self._reported_at = -DROP_REPORT_SECONDS
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._run, name="smartdns-querylog", daemon=True)
        self._thread.start()

    def record(self, when: float, client: str, port: int, transport: str, line: str | None, qname: str,
               qtype: str, rcode: str, source: str, upstream: str | None, micros: int, answers: int) -> None:
        """Queue one query's line (never blocks)."""
        text = json.dumps({
            "time": round(when, 6), "client": client, "port": port, "transport": transport, "line": line,
            "qname": qname, "qtype": qtype, "rcode": rcode, "stage": source, "upstream": upstream,
            "latency_us": micros, "answers": answers}, separators=(",", ":")) + "\n"
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1
            now = self.reactor.seconds()
            if now - self._reported_at >= DROP_REPORT_SECONDS:
                self._reported_at = now
                log.warn("query log {path} is not keeping up: {dropped} lines dropped so far",
                         path=self.path, dropped=self.dropped)

    def reopen(self) -> None:
        """Close and reopen the file before the next line (logrotate)."""
        try:
            self._queue.put_nowait(_REOPEN)
        except queue.Full:
            pass                        # the writer reopens on the next reopen request

    def close(self) -> None:
        """Write what is queued, then stop the writer (waits at most a second)."""
        self._queue.put(_STOP)
        self._thread.join(1.0)

    def _open(self) -> int:
        if self.path == "-":
            return sys.stdout.fileno()
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _run(self) -> None:
        """Write whole lines only, several per ``write`` call on an O_APPEND descriptor, so the
        processes of ``[server] workers`` can share one file without splitting each other's lines."""
        fd: int | None = None
        while True:
            if fd is None:
                try:
                    fd = self._open()           # before taking lines: a stuck file keeps them queued
                except OSError as e:
                    self.reactor.callFromThread(log.warn, "query log {path}: {error}", path=self.path, error=e)
            item = self._queue.get()
            lines: list[str] = []
            control = None
            while True:
                if item is _STOP or item is _REOPEN:
                    control = item
                    break
                lines.append(item)
                if len(lines) >= BATCH_LINES:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if lines:
                try:
                    if fd is None:
                        raise OSError(f"cannot open {self.path}")
                    os.write(fd, "".join(lines).encode("utf-8"))
                    self.written += len(lines)
                except OSError as e:
                    self.dropped += len(lines)
                    if fd is not None:
                        self.reactor.callFromThread(log.warn, "query log {path}: {error}", path=self.path, error=e)
                    self._close(fd)
                    fd = None
            if control is not None:
                self._close(fd)
                fd = None
                if control is _STOP:
                    return

    def _close(self, fd: int | None) -> None:
        if fd is not None and self.path != "-":
            try:
                os.close(fd)
            except OSError:
                pass
        return None
