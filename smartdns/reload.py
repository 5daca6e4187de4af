"""Hot reload: build a new snapshot off the reactor thread, validate it, swap it in at once.

A reload re-reads the config and every data source, re-parsing only zone files whose content
fingerprint (size, mtime, inode of the file and of each ``$INCLUDE``) changed.  Any problem keeps
the old snapshot serving and logs every ``file:line: message``.  Reloads never overlap: a
trigger during a reload schedules exactly one more afterwards.

Answers go on while a reload runs, and should not wait for it (bench/zone_load.py --serve
measures local answers at 2,000 a second during the reload of a 1,000,000-name zone with three
lines; bench/README.rst, "Memory and load time").  The builder thread and the reactor share one
GIL; what made the reactor wait for the builder, and what is done about it:

- The GIL itself: a thread that wants it waits for the holder's switch interval, 5 ms by
  default (``sys.getswitchinterval``), and the reactor wants it for every datagram.  While a
  reload builds, the interval is 0.5 ms and the reactor and the builder share one CPU
  (``smartdns.background.quiet``, as during a secondary's transfer); then all is as it was.  Measured in-process (a thread ticking every 0.5 ms beside the build of the bench's
  zone): ticks 1.15 ms late at the median with 0.5 ms, 5.6 ms with the default; the build
  takes some 6 % longer.
- Long single C calls, which no interval interrupts: the zone reader works through a file in
  chunks (``smartdns.fastzone``), an overlay's default TTL is found without reading the whole
  base file (``zones.file_default_ttl``, 20-30 ms per overlay before), and a zone without empty
  non-terminals uses its node dictionary's keys as its set of names (``zones.all_names``: no
  set of a million names and its 40 ms resizes).  Still there: the resizes of the node
  dictionary itself as it grows, one C call each, 12, 24 and 43-99 ms at 175,000, 350,000 and
  700,000 names on the bench VM: with the collector's walk gone, these are what keep a base
  reload's p99 above 5 ms (a dictionary split in parts, or built in C, would avoid them).
- The cyclic garbage collector: with it on, young collections walked the build's new objects
  every few milliseconds, 5-15 ms each; it is off during the build (``quiet``).  Once it was on
  again, its next collection walked everything the build made, once: 0.03-0.05 s after an
  overlay reload, 0.5-0.7 s after a reload of the million-name base file.  Now a large build is
  frozen out of its sight when done (``background.frozen_after``: garbage collected first, then
  ``gc.freeze``, microseconds).  That is safe only because nothing a snapshot's life depends on
  forms a reference cycle: the query handler's resolver chains used to (Twisted's
  ``ResolverBase`` keeps bound methods of itself; ``smartdns.chain.Acyclic``), and frozen they
  would have kept every replaced snapshot forever; now a replaced snapshot is freed by
  reference counting (tests/test_reload.py checks it, with the freeze on).  bench/zone_load.py
  --serve, medians of 3 in the same hour: p99 during the overlay reload 42.8 -> 6.1 ms, during
  the base reload 522 -> 33 ms (max 611 -> 97 ms: the largest resize above), nothing lost; a
  second set of 3: 6.5 and 9.0 ms (max 49 ms).
- Freeing what a reload replaces: the last reference to a million-name node dictionary going
  away frees it in one C call, 0.2 s, on the reactor (where the query handler lets go of the
  old snapshot).  The swap hands the replaced snapshot's own dictionaries to ``Retirement``
  instead, which empties each a node at a time in a thread once nothing else holds it
  (``background.empty_piecewise``).
- Work at the swap, on the reactor: which origins changed (``changed_origins``, which compares
  changed line views record by record, 0.1 s for the bench's three lines) is worked out in the
  builder thread and only looked up at the swap.

Building in a subprocess would keep the GIL free, but the snapshot would then have to be copied
into this process, in C calls as long as building the dictionaries here.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartdns.background import empty_piecewise, frozen_after, quiet
from smartdns.config import Config, load_config
from smartdns.errors import LoadError, Problem
from smartdns.snapshot import Snapshot, build_snapshot
from smartdns.zones import Zone, ZoneView, read_zone_file

log = Logger()

Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(paths: tuple[str, ...]) -> Fingerprint:
    """(path, size, mtime_ns, inode) of each file; a missing file reads as (-1, -1, -1)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((path, -1, -1, -1))
    return tuple(out)


class ZoneFileCache:
    """Parsed zones by file, reused while none of their source files changed."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, bool, int | None], tuple[Fingerprint, Zone]] = {}
        self.parsed: list[str] = []       # files parsed by the current build (the changed ones)

    def read(self, path: str, origin_text: str, *, overlay: bool = False,
             default_ttl: int | None = None) -> tuple[Zone | None, list[Problem]]:
        """Like ``read_zone_file``, from cache when unchanged."""
        key = (path, origin_text, overlay, default_ttl)
        cached = self._entries.get(key)
        if cached is not None and fingerprint(cached[1].sources or (path,)) == cached[0]:
            return cached[1], []
        before = fingerprint((path,))
        zone, problems = read_zone_file(path, origin_text, overlay=overlay, default_ttl=default_ttl)
        self.parsed.append(path)
        if zone is not None:
            sources = zone.sources or (path,)
            stamp = fingerprint(sources)
            if stamp[0] == before[0]:          # unchanged while we read it: safe to reuse later
                self._entries[key] = (stamp, zone)
        else:
            self._entries.pop(key, None)
        return zone, problems

    def prune(self, live: set[str]) -> None:
        """Forget files that are no longer part of the data."""
        for key in [k for k in self._entries if k[0] not in live]:
            del self._entries[key]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did."""

    ok: bool
    generation: int
    changed: tuple[str, ...]
    seconds: float
    problems: tuple[Problem, ...] = ()

    def summary(self) -> str:
        """One line for the log and the ``smartdns reload`` command."""
        if self.ok:
            files = ", ".join(self.changed) if self.changed else "no zone files"
            return f"reload OK: generation {self.generation}, re-parsed {files}, {self.seconds * 1000:.0f} ms"
        return "reload FAILED, still serving generation {}:\n{}".format(
            self.generation, "\n".join(str(p) for p in self.problems))


@dataclass
class ReloadState:
    """What the metrics say about reloads: when the served data was loaded (Unix time), how
    many reloads were rejected, and whether the last one was."""

    last_success: float
    failures: int = 0
    failed: bool = False

    def note(self, result: ReloadResult, now: float) -> ReloadResult:
        """Record one reload's outcome (a Deferred callback: passes the result on)."""
        if result.ok:
            self.last_success = now
            self.failed = False
        else:
            self.failures += 1
            self.failed = True
        return result




class _Prepared:
    """``changed_origins`` worked out in the builder thread, for the swap to look up."""

    pair: tuple[Snapshot, Snapshot, frozenset[bytes]] | None = None


def prepare_changes(old: Snapshot, new: Snapshot) -> None:
    """Work out ``changed_origins(old, new)`` now (in the builder thread), so the call at the
    swap only looks it up: it compares changed views record by record, 0.1 s for three lines of
    100,000 overridden names, which on the reactor would hold every answer back."""
    _Prepared.pair = (old, new, frozenset(_changed_origins(old, new)))


def changed_origins(old: Snapshot, new: Snapshot) -> set[bytes]:
    """Origins (and hosts-file names) whose data any client could see differently after the swap."""
    prepared = _Prepared.pair
    if prepared is not None and prepared[0] is old and prepared[1] is new:
        _Prepared.pair = None
        return set(prepared[2])
    return _changed_origins(old, new)


def _changed_origins(old: Snapshot, new: Snapshot) -> set[bytes]:
    origins = set(old.zones) ^ set(new.zones)
    for origin in set(old.zones) & set(new.zones):
        if old.zones[origin] is not new.zones[origin]:
            origins.add(origin)
    old_views = {k: v.merged for k, v in old.views.items()}
    new_views = {k: v.merged for k, v in new.views.items()}
    for key in set(old_views) | set(new_views):
        if key[0] not in origins and old_views.get(key) is not new_views.get(key) \
                and old_views.get(key) != new_views.get(key):
            origins.add(key[0])
    for key in set(old.views) & set(new.views):   # a line's [[secondary]] zone is its view's base
        if old.views[key].base is not new.views[key].base:
            origins.add(key[0])
    origins |= {origin for origin, _line in old.servfail ^ new.servfail}
    if old.hosts is not new.hosts:
        origins |= {name for name in set(old.hosts) | set(new.hosts) if old.hosts.get(name) != new.hosts.get(name)}
    return origins


def replaced_containers(old: Snapshot, new: Snapshot) -> list[Any]:
    """The large dictionaries and sets of ``old`` that ``new`` does not share: the node
    dictionary (and set of names) of each zone it replaces, the merged nodes of each line view
    it replaces.  Each once; empty ones left out."""
    def zones_of(snap: Snapshot) -> list[Zone]:
        return [*snap.zones.values(), *(v.base for v in snap.base_views.values()),
                *(v.base for v in snap.views.values())]

    def views_of(snap: Snapshot) -> list[ZoneView]:
        return [*snap.base_views.values(), *snap.views.values()]

    kept = {id(zone) for zone in zones_of(new)} | {id(view) for view in views_of(new)}
    found: dict[int, Any] = {}
    for zone in zones_of(old):
        if id(zone) not in kept:
            for container in (zone.nodes, zone.names):
                if isinstance(container, (dict, set)) and container:
                    found[id(container)] = container
    for view in views_of(old):
        if id(view) not in kept and isinstance(view.merged, dict) and view.merged:
            found[id(view.merged)] = view.merged
    return list(found.values())


class Retirement:
    """What reloads replaced, freed a piece at a time in a thread instead of all at once on the
    reactor (see the module docstring).

    At the swap the replaced snapshot's own containers (``replaced_containers``) are held here.
    The snapshot itself goes when the last of its users lets go, without them; each container is
    emptied (``background.empty_piecewise``, in ``run``'s thread) once this is the only
    reference left to it: nobody else can reach it then, so emptying it changes no answer (a
    query in flight that started on the old snapshot still holds it, and so it waits).  Checked
    ``CHECK_DELAYS`` after the swap; one still held elsewhere after the last check is let go,
    and reference counting frees it whenever its last holder lets go."""

    CHECK_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

    def __init__(self, reactor: Any, run: Callable[..., defer.Deferred[Any]]) -> None:
        self.reactor = reactor
        self._run = run
        self.waiting: list[Any] = []          # containers not emptied yet
        self.emptied = 0                      # containers emptied so far
        self.entries = 0                      # and the entries they held
        self.let_go = 0                       # containers still held elsewhere at the last check
        self._calls: list[Any] = []           # the pending checks (IDelayedCall)

    def retire(self, old: Snapshot, new: Snapshot) -> None:
        """``new`` replaced ``old``: take ``old``'s own containers (``new`` is served already)."""
        held = replaced_containers(old, new)
        if held:
            self.waiting.extend(held)
            self._later(self.CHECK_DELAYS[0], held, 0)

    def stop(self) -> None:
        """The service stops: no check stays pending, and everything is let go as it is."""
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()
        self.waiting.clear()

    def _later(self, delay: float, held: list[Any], attempt: int) -> None:
        self._calls = [call for call in self._calls if call.active()]
        self._calls.append(self.reactor.callLater(delay, self._check, held, attempt))

    def _check(self, held: list[Any], attempt: int) -> None:
        """Empty, in a thread, those of ``held`` nobody else holds; look again later at the rest."""
        free: list[Any] = []
        busy: list[Any] = []
        for index in range(len(held)):
            # Three references when nobody else has one: ``held``, ``waiting`` and the argument.
            (free if sys.getrefcount(held[index]) == 3 else busy).append(held[index])
        held.clear()
        for container in free:
            self._forget(container)
        if free:
            count = len(free)
            d = self._run(empty_piecewise, free)
            d.addCallback(self._done, count)
            d.addErrback(lambda reason: log.failure("emptying replaced zone data failed", reason))
        del free
        if not busy:
            return
        if attempt + 1 < len(self.CHECK_DELAYS):
            self._later(self.CHECK_DELAYS[attempt + 1], busy, attempt + 1)
            return
        for container in busy:
            self._forget(container)
        self.let_go += len(busy)

    def _forget(self, container: Any) -> None:
        for index, item in enumerate(self.waiting):
            if item is container:
                del self.waiting[index]
                return

    def _done(self, entries: int, count: int) -> None:
        self.emptied += count
        self.entries += entries


class Reloader:
    """Runs reloads for a service: one at a time, off the reactor thread."""

    def __init__(self, reactor: Any, config_path: str | None, apply: Callable[[Config, Snapshot], None],
                 current: Callable[[], Snapshot],
                 files: ZoneFileCache | None = None,
                 run: Callable[..., defer.Deferred[Any]] | None = None,
                 transform: Callable[[Config], Config] = lambda config: config,
                 expired: Callable[[], frozenset[tuple[str, str | None]]] = frozenset,
                 prepare: Callable[[Snapshot, Snapshot], Snapshot] | None = None) -> None:
        self.reactor = reactor
        self.config_path = config_path
        self.apply = apply
        self.current = current
        self.files = files or ZoneFileCache()
        self.transform = transform          # e.g. a worker process pinning its listeners
        self.expired = expired              # [[secondary]] (zone, line) past expire (smartdns.refresh)
        # Run in the build thread on (snapshot served now, new one): the serial-bump rule and the
        # IXFR differences (smartdns.journal.Journal.prepare), off the reactor.
        self.prepare = prepare
        self._run = run or (lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        self._running: defer.Deferred[ReloadResult] | None = None
        self._again: defer.Deferred[ReloadResult] | None = None
        self.last: ReloadResult | None = None
        self.retirement = Retirement(reactor, lambda f, *a: self._run(f, *a))   # _run as set now (tests replace it)

    def _build(self, generation: int, expired: frozenset[tuple[str, str | None]]) -> tuple[Config, Snapshot, list[str]]:
        with quiet(), frozen_after():
            self.files.parsed = []
            config = self.transform(load_config(self.config_path))
            snapshot = build_snapshot(config, generation, read_zone=self.files.read, expired=expired)
            if self.prepare is not None:
                snapshot = self.prepare(self.current(), snapshot)
            prepare_changes(self.current(), snapshot)
            live = {p for zone in snapshot.zones.values() for p in zone.sources}
            live |= {p for view in snapshot.views.values() for p in view.overlay_sources}
            self.files.prune(live)
            return config, snapshot, list(self.files.parsed)

    def reload(self, reason: str = "request") -> defer.Deferred[ReloadResult]:
        """Start a reload (or queue one behind the running one); fires with its result."""
        if self._running is not None:
            if self._again is None:
                self._again = defer.Deferred()
            waiter: defer.Deferred[ReloadResult] = defer.Deferred()

            def relay(result: Any) -> Any:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
                return result

            self._again.addBoth(relay)
            return waiter
        started = self.reactor.seconds()
        generation = self.current().generation + 1
        log.info("reload ({reason}) started", reason=reason)
        d = self._run(self._build, generation, self.expired())
        d.addCallbacks(self._swap, self._failed, callbackArgs=(started,), errbackArgs=(started, generation))
        self._running = d

        def finished(result: ReloadResult) -> ReloadResult:
            self._running = None
            self.last = result
            again, self._again = self._again, None
            if again is not None:
                self.reload("queued").chainDeferred(again)
            return result

        d.addCallback(finished)
        return d

    def _swap(self, built: tuple[Config, Snapshot, list[str]], started: float) -> ReloadResult:
        config, snapshot, parsed = built
        old = self.current()
        self.apply(config, snapshot)
        self.retirement.retire(old, self.current())
        del old
        result = ReloadResult(True, snapshot.generation, tuple(parsed), self.reactor.seconds() - started)
        log.info("{summary}", summary=result.summary())
        return result

    def _failed(self, reason: Failure, started: float, generation: int) -> ReloadResult:
        error = reason.value
        if not isinstance(error, LoadError):
            log.failure("reload crashed; keeping the old data", reason)
            problems: tuple[Problem, ...] = (Problem(self.config_path or "<defaults>", 0,
                                                     f"internal error: {reason.getErrorMessage()}"),)
        else:
            problems = error.problems
        result = ReloadResult(False, self.current().generation, (), self.reactor.seconds() - started, problems)
        for problem in problems:
            log.error("reload rejected: {problem}", problem=str(problem))
        return result

