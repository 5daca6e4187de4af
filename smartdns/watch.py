"""Reload triggers: file changes (inotify on directories, polling elsewhere) and a local control
socket for ``smartdns reload``.

Directories are watched, never single files: editors and ``mv`` replace files, and Twisted's
``INotify`` drops every watch when a watched file is deleted (IN_DELETE_SELF).  Events are
debounced so a burst of writes makes one reload.

Only files that feed the server trigger a reload: in a zones directory, ``*.zone`` files and
line subdirectories (with their ``*.zone`` files); elsewhere, exactly the files named (the
config, JSON sources, ``$INCLUDE``d files, hosts files).  A new ``notes.txt`` beside the config,
or a test run's scratch files, change nothing, and each reload would empty the fast-path tables.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from smartdns.txtyping import TypedLineOnlyReceiver, lose_connection, new_inotify

log = Logger()

DEBOUNCE_SECONDS = 0.2
POLL_INTERVAL_SECONDS = 1.0
IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".bak", ".dpkg-new", ".sock")
ZONE_SUFFIX = ".zone"
CONFIGMAP_DATA = "..data"   # Kubernetes swaps a mounted ConfigMap by renaming this symlink


def interesting(name: str) -> bool:
    """Editor droppings and dotfiles are never data (Kubernetes' ``..data`` is)."""
    if name == CONFIGMAP_DATA:
        return True
    return not name.startswith(".") and not name.startswith("#") and not name.endswith(IGNORED_SUFFIXES)


def feeds_zones(name: str, is_directory: bool) -> bool:
    """Whether an entry of a zones directory is zone data: a zone file or a line directory."""
    if not interesting(name):
        return False
    return is_directory or name == CONFIGMAP_DATA or name.endswith(ZONE_SUFFIX)


def snapshot_tree(directories: list[str], files: list[str]) -> dict[str, tuple[int, int, int]]:
    """(size, mtime_ns, inode) of every zone file in ``directories`` (one level of
    subdirectories: line overlays) and of ``files``."""
    out: dict[str, tuple[int, int, int]] = {}

    def add(path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        out[path] = (st.st_size, st.st_mtime_ns, st.st_ino)

    for directory in directories:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(directory, entry)
            is_directory = os.path.isdir(path)
            if not feeds_zones(entry, is_directory):
                continue
            if is_directory:
                for sub in os.listdir(path) if os.access(path, os.R_OK) else ():
                    if feeds_zones(sub, False) and not os.path.isdir(os.path.join(path, sub)):
                        add(os.path.join(path, sub))
            add(path)
    for path in files:
        add(path)
    return out


class Watcher:
    """Calls ``trigger`` (debounced) when anything under the watched paths changes."""

    def __init__(self, reactor: Any, trigger: Callable[[str], Any], *, use_inotify: bool = True) -> None:
        self.reactor = reactor
        self.trigger = trigger
        self.use_inotify = use_inotify
        self.directories: list[str] = []
        self.files: list[str] = []
        self._notifier: Any = None
        self._watched: set[str] = set()
        self._poller: task.LoopingCall | None = None
        self._state: dict[str, tuple[int, int, int]] = {}
        self._pending: Any = None
        self.running = False

    def set_paths(self, directories: list[str], files: list[str]) -> None:
        """Watch these directories (and their line subdirectories) and these files."""
        self.directories = [os.path.abspath(d) for d in directories]
        self.files = [os.path.abspath(f) for f in files]
        self._sync()

    def start(self) -> None:
        """Begin watching; inotify where available, else polling."""
        self.running = True
        if self.use_inotify:
            try:
                from twisted.internet import inotify
                self._inotify = inotify
                self._sync()
                return
            except (ImportError, OSError, NotImplementedError) as e:
                log.info("inotify unavailable ({error}); polling every {interval}s", error=e,
                         interval=POLL_INTERVAL_SECONDS)
                self.use_inotify = False
        self._state = snapshot_tree(self.directories, self.files)
        self._poller = task.LoopingCall(self._poll)
        self._poller.clock = self.reactor
        self._poller.start(POLL_INTERVAL_SECONDS, now=False)

    def stop(self) -> None:
        """Stop every watch and timer (a reload still finishing will not start new ones)."""
        self.running = False
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        self._watched.clear()

    def _dirs_to_watch(self) -> set[str]:
        dirs = set(self.directories) | {os.path.dirname(f) for f in self.files}
        for directory in self.directories:
            try:
                for entry in os.listdir(directory):
                    path = os.path.join(directory, entry)
                    if interesting(entry) and os.path.isdir(path):
                        dirs.add(path)
            except OSError:
                continue
        return {d for d in dirs if os.path.isdir(d)}

    def _sync(self) -> None:
        """(Re)create inotify watches for the current set of directories."""
        if not self.running or not self.use_inotify or not hasattr(self, "_inotify"):
            return
        if self._notifier is not None and not self._notifier.connected:
            self._notifier = None          # a watched directory went away and took the watches with it
            self._watched.clear()
        if self._notifier is None:
            self._notifier = new_inotify(self.reactor)
            self._notifier.startReading()
        mask = (self._inotify.IN_CLOSE_WRITE | self._inotify.IN_MOVED_TO | self._inotify.IN_MOVED_FROM
                | self._inotify.IN_DELETE | self._inotify.IN_CREATE | self._inotify.IN_ATTRIB)
        for directory in self._dirs_to_watch() - self._watched:
            try:
                self._notifier.watch(FilePath(directory), mask, callbacks=[self._event])
                self._watched.add(directory)
            except Exception as e:  # an unreadable or vanished directory must not stop serving
                log.warn("cannot watch {directory}: {error}", directory=directory, error=e)

    def _event(self, _watch: Any, path: FilePath[Any], mask: int) -> None:
        text = path.asTextMode().path
        if self.feeds(text, bool(mask & self._inotify.IN_ISDIR)):
            self._schedule(f"change to {text}")

    def feeds(self, path: str, is_directory: bool | None = None) -> bool:
        """Whether a change at ``path`` (an inotify event's; ``is_directory`` from the event, or
        looked up) can change what is served."""
        path = os.path.abspath(path)
        if is_directory is None:
            is_directory = os.path.isdir(path)
        name = os.path.basename(path)
        if path in self.files:
            return True
        parent = os.path.dirname(path)
        if name == CONFIGMAP_DATA and (parent in self.directories or parent in self._file_dirs()):
            return True
        for directory in self.directories:
            if parent == directory:
                return feeds_zones(name, is_directory)
            if os.path.dirname(parent) == directory and interesting(os.path.basename(parent)):
                return feeds_zones(name, False)       # a file in a line's overlay directory
        return False

    def _file_dirs(self) -> set[str]:
        return {os.path.dirname(f) for f in self.files}

    def _poll(self) -> None:
        state = snapshot_tree(self.directories, self.files)
        if state != self._state:
            self._state = state
            self._schedule("files changed (poll)")

    def _schedule(self, reason: str) -> None:
        """Debounce: one reload for a burst of events."""
        if self._pending is not None and self._pending.active():
            self._pending.reset(DEBOUNCE_SECONDS)
            return
        self._pending = self.reactor.callLater(DEBOUNCE_SECONDS, self._fire, reason)

    def _fire(self, reason: str) -> None:
        self._pending = None
        d = defer.maybeDeferred(self.trigger, reason)

        def resync(result: Any) -> Any:
            self._sync()             # new line directories get watches; a lost INotify is rebuilt
            return result

        d.addBoth(resync)


class ControlProtocol(TypedLineOnlyReceiver):
    """``reload`` → one line ``ok ...`` or ``error ...`` followed by the problems, then close.
    ``stats`` → ``ok stats`` then one ``name value`` line per counter (summed over every
    process), then close; ``stats json`` → ``ok stats`` then the whole report
    (`smartdns.control.stats_report`) as one JSON line.  ``explain {json}`` → ``ok explain`` then
    the explanation (`smartdns.explain`) as one JSON line."""

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        command = line.strip().decode("ascii", "replace")
        if command in ("stats", "stats json"):
            self._send_stats(as_json=command == "stats json")
            return
        if command.startswith("explain ") and self.factory.explain is not None:
            self._send_explain(command[len("explain "):])
            return
        if command != "reload":
            self.sendLine(b"error unknown command (try: reload, stats, stats json, explain)")
            lose_connection(self)
            return
        d = defer.maybeDeferred(self.factory.reload, "smartdns reload")

        def reply(result: Any) -> None:
            status = "ok" if result.ok else "error"
            for text in [f"{status} {result.summary()}"]:
                self.sendLine(text.encode("utf-8"))
            lose_connection(self)

        def crashed(reason: Any) -> None:
            self.sendLine(f"error {reason.getErrorMessage()}".encode("utf-8"))
            lose_connection(self)

        d.addCallbacks(reply, crashed)

    def _send_stats(self, *, as_json: bool) -> None:
        def reply(report: dict[str, Any]) -> None:
            self.sendLine(b"ok stats")
            if as_json:
                self.sendLine(json.dumps(report, sort_keys=True).encode("utf-8"))
            else:
                for name, value in report["counters"].items():
                    self.sendLine(f"{name} {value}".encode("utf-8"))
            lose_connection(self)

        def crashed(reason: Any) -> None:
            self.sendLine(f"error {reason.getErrorMessage()}".encode("utf-8"))
            lose_connection(self)

        defer.maybeDeferred(self.factory.report).addCallbacks(reply, crashed)

    def _send_explain(self, argument: str) -> None:
        def reply(report: dict[str, Any]) -> None:
            self.sendLine(b"ok explain")
            self.sendLine(json.dumps(report, sort_keys=True).encode("utf-8"))
            lose_connection(self)

        def crashed(reason: Any) -> None:
            self.sendLine(f"error {reason.getErrorMessage()}".encode("utf-8"))
            lose_connection(self)

        defer.maybeDeferred(self.factory.explain, argument).addCallbacks(reply, crashed)


class ControlFactory(protocol.ServerFactory):
    """The local control socket's factory: ``report`` gives (or fires with) the counters of every
    process, as `smartdns.control.stats_report` makes them."""

    protocol = ControlProtocol
    noisy = False

    def __init__(self, reload: Callable[[str], Any],
                 report: Callable[[], Any] = lambda: {"counters": {}, "processes": [], "missing_workers": []},
                 explain: Callable[[str], Any] | None = None) -> None:
        self.reload = reload
        self.report = report
        self.explain = explain      # ``explain {json}`` → (a Deferred of) the explanation dict
