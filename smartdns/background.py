"""Keeping the reactor answering while a thread does heavy work: a reload's build
(``smartdns.reload``) or a secondary zone's transfer (``smartdns.secondary``).

The worker thread shares the GIL with the reactor (measured with bench/zone_load.py --serve
and bench/secondary_stall.py; see those modules' docstrings for the numbers):

- A thread that wants the GIL waits for the holder's switch interval (5 ms by default), and
  the reactor wants it for every datagram: while a job runs the interval is
  ``SWITCH_INTERVAL_SECONDS``.
- The cyclic garbage collector walks every object a job makes, again and again, each walk one C
  call the reactor waits for: it is off while a job runs.
- On two CPUs, the worker took the GIL back each time the reactor let go of it for a system
  call, and the reactor waited out the interval again for every datagram: the main thread (the
  reactor's) and the jobs' threads are kept on the CPU the main thread was on (Linux thread
  affinity; nothing changes where the process has one CPU already).  The GIL lets the process
  use one CPU at a time anyway.

Jobs overlap (a NOTIFY during a reload): one count for all, so the first sets and the last
restores.

Once the collector is on again, its next collection would walk everything a large build made,
in one C call (0.5-0.7 s for a million names): a reload's build is frozen out of its sight
instead (``frozen_after``), and what it replaces is emptied here a piece at a time
(``empty_piecewise``), not freed in one C call on the reactor.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from typing import Any, Iterator

#: sys.setswitchinterval while a background job runs.
SWITCH_INTERVAL_SECONDS = 0.0005
#: A build that leaves fewer new objects than this to the collector is left to it (its walk is
#: short: some 10 ms on the bench VM); a larger one is frozen (``frozen_after``).
FREEZE_MIN_OBJECTS = 100_000


class _Quiet:
    """The background jobs running now, and what ``quiet`` found before the first of them."""

    lock = threading.Lock()
    running = 0
    interval = 0.005
    collecting = True
    cpu: int | None = None                     # the CPU the main thread and refreshes share
    main_cpus: set[int] | None = None          # the main thread's CPUs before
    started = 0                                # jobs started so far (frozen_after: was one alone?)
    frozen = 0                                 # builds frozen so far (frozen_after)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """While any background job runs (a reload's build, a secondary's refresh; in its own
    thread): the switch interval at most ``SWITCH_INTERVAL_SECONDS``, the cyclic garbage
    collector off, and the main thread and the jobs' threads on one CPU; afterwards all as the
    first job found them, however the jobs overlap."""
    with _Quiet.lock:
        if _Quiet.running == 0:
            _Quiet.interval = sys.getswitchinterval()
            _Quiet.collecting = gc.isenabled()
            sys.setswitchinterval(min(_Quiet.interval, SWITCH_INTERVAL_SECONDS))
            gc.disable()
            _Quiet.cpu, _Quiet.main_cpus = _pin_main()
        _Quiet.running += 1
        _Quiet.started += 1
        own = _pin_self(_Quiet.cpu)
    try:
        yield
    finally:
        with _Quiet.lock:
            _unpin(0, own)
            _Quiet.running -= 1
            if _Quiet.running == 0:
                sys.setswitchinterval(_Quiet.interval)
                if _Quiet.collecting:
                    gc.enable()
                _unpin(_main_id(), _Quiet.main_cpus)
                _Quiet.cpu = _Quiet.main_cpus = None


@contextlib.contextmanager
def frozen_after() -> Iterator[None]:
    """Inside ``quiet()``, around a build whose result is kept (a reload's snapshot): if it
    succeeds and made at least ``FREEZE_MIN_OBJECTS`` objects, freeze them (``gc.freeze``:
    moved where collections never look, in one step that takes microseconds).

    Frozen objects are still freed by reference counting, but a frozen reference cycle never
    is: ``gc.freeze`` freezes everything alive, so what it freezes must be free of cycles that
    are, or will become, garbage.  Hence:

    - the data and what points at it for a snapshot's life (the zones, the query handler's
      resolver chains: ``smartdns.chain.Acyclic``) hold no cycles, so a replaced snapshot is
      freed by reference counting alone;
    - garbage that exists before the build is collected first, while the collector has little
      to walk (what is not frozen already: made since the last freeze);
    - only a job that ran alone from start to end freezes: another's objects (a secondary's
      transfer, half built) are left to the collector, which then walks both once, as it did
      before;
    - the collector being off before the jobs started (a process that turned it off) means
      nothing would walk the build: nothing is frozen.

    What can still be frozen for good: reference cycles that other threads (the reactor,
    answering meanwhile) made during the build and that are garbage at the end or become
    garbage later (a Twisted Failure's traceback, a TCP connection and its protocol); a few
    objects per reload, not a snapshot.  ``gc.unfreeze`` is never called: it would give every
    frozen object back to the oldest generation, and the next full collection would walk the
    whole of the served data."""
    with _Quiet.lock:
        alone = _Quiet.running == 1 and _Quiet.collecting
        started = _Quiet.started
    if alone:
        gc.collect()
    yield
    with _Quiet.lock:
        if alone and _Quiet.running == 1 and _Quiet.started == started \
                and gc.get_count()[0] >= FREEZE_MIN_OBJECTS:
            gc.freeze()
            _Quiet.frozen += 1


def empty_piecewise(containers: list[Any]) -> int:
    """Empty each dict (``popitem``) or set (``pop``) in ``containers`` one entry at a time, in
    the calling thread (under ``quiet``), then let it go; returns the entries removed.

    For containers nobody else can reach (the caller checked): a dictionary of a million zone
    nodes freed by its last reference going away is one C call of some 0.2 s that no switch
    interval interrupts; emptied here, the reactor takes the GIL between entries.  Others
    (frozensets, ``None``) are just let go."""
    removed = 0
    with quiet():
        while containers:
            container = containers.pop()
            if isinstance(container, dict):
                removed += len(container)
                while container:
                    container.popitem()
            elif isinstance(container, set):
                removed += len(container)
                while container:
                    container.pop()
            del container
    return removed


def _main_id() -> int:
    """The main thread's kernel id (the reactor runs there)."""
    return threading.main_thread().native_id or os.getpid()


def _pin_main() -> tuple[int | None, set[int] | None]:
    """Keep the main thread (the reactor's) on the CPU it is on now; (that CPU, its CPUs before),
    or (None, None) where threads cannot be pinned or it has one CPU already."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    main = _main_id()
    try:
        before = os.sched_getaffinity(main)
        if len(before) <= 1:
            return None, None
        # Bytes, not text: no codec to import, which may be impossible once privileges are
        # dropped (a Python installed where the server's user cannot read).
        with open(f"/proc/self/task/{main}/stat", "rb") as stat:
            cpu = int(stat.read().rsplit(b")", 1)[1].split()[36])    # field 39: the CPU it last ran on
        if cpu not in before:
            return None, None
        os.sched_setaffinity(main, {cpu})
    except (OSError, ValueError, IndexError):
        return None, None
    return cpu, before


def _pin_self(cpu: int | None) -> set[int] | None:
    """Keep the calling thread on ``cpu``; its CPUs before (None: not pinned)."""
    if cpu is None:
        return None
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return before


def _unpin(thread: int, cpus: set[int] | None) -> None:
    """Give ``thread`` (0: the calling one) its CPUs back."""
    if cpus is not None:
        try:
            os.sched_setaffinity(thread, cpus)
        except OSError:
            pass
