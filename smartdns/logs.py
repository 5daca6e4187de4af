"""The server log: ``[log] level`` everywhere, and worker processes' lines in the first one's log.

- The level is a `twisted.logger.FilteringLogObserver` in front of the observer twistd would
  have used (``--logfile``, ``--syslog``, ``-n``, or your own ``--logger``): the twistd entry
  (`smartdns.tap`) sets it as the application's ``ILogObserver``, which twistd then logs to,
  so twistd's own lines are filtered too.  Worker processes filter their own events the same
  way before they leave the process.
- A worker writes its events as JSON (Twisted's ``jsonFileLogObserver``) to its stderr; the
  first process re-emits each one into its own log with the worker's time, level and text,
  under the system ``worker N``.  So a worker line carries one timestamp (its own), and goes
  to wherever the first process logs (file, syslog, stdout).
"""
from __future__ import annotations

from typing import IO, Any, Callable, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    eventFromJSON,
    globalLogPublisher,
    jsonFileLogObserver,
)

log = Logger()

LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
DEFAULT_LEVEL = "info"
RECORD_SEPARATOR = b"\x1e"      # what jsonFileLogObserver puts before each event


def level_filter(observer: ILogObserver, level: str) -> ILogObserver:
    """``observer`` seeing only events at ``level`` (a key of LEVELS) or above."""
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])   # zope-declared interface
    filtered: Any = FilteringLogObserver(observer, [predicate])
    return cast(ILogObserver, filtered)


def twistd_observer(twistd_options: Any, factory: Callable[[], Any] | None, level: str) -> ILogObserver:
    """The observer twistd would make from its options (``--logfile``, ``--syslog``, ``-n``), or
    the one ``factory`` (a ``--logger``) makes, filtered to ``level``."""
    if factory is not None:
        observer: Any = factory()
    else:
        from twisted.scripts import twistd        # its runner knows this platform's AppLogger
        runner: Any = getattr(twistd, "_SomeApplicationRunner")
        observer = runner.loggerFactory(twistd_options)._getLogObserver()
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)   # --syslog's is an old-style observer
    return level_filter(observer, level)


def worker_observer(stream: IO[str], level: str) -> ILogObserver:
    """A worker's log: its events at ``level`` or above, as JSON records on ``stream`` (its
    stderr, read by the first process, see `relay`)."""
    observer: Any = jsonFileLogObserver(stream)
    return level_filter(cast(ILogObserver, observer), level)


def relay(line: bytes, index: int) -> None:
    """Put one line of worker ``index``'s stderr into this process's log: a JSON event as the
    event it was (time, level, text), anything else (a crash before logging began) as a warning."""
    text = line.rstrip(b"\r").lstrip(RECORD_SEPARATOR)
    if not text.strip():
        return
    event: dict[str, Any] | None = None
    if text.startswith(b"{"):
        try:
            event = eventFromJSON(text.decode("utf-8", "replace"))
        except ValueError:
            event = None
    if not isinstance(event, dict) or "log_time" not in event:
        log.warn("worker {index}: {line}", index=index, line=text.decode("utf-8", "replace"))
        return
    # The system twistd's text shows in brackets, as the worker would have shown it, prefixed.
    system = event.get("log_system") or "{}#{}".format(event.get("log_namespace", "-"),
                                                         getattr(event.get("log_level"), "name", "-"))
    event["log_system"] = f"worker {index} {system}"
    globalLogPublisher(event)
