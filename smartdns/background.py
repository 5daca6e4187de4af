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
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from typing import Iterator

#: sys.setswitchinterval while a background job runs.
SWITCH_INTERVAL_SECONDS = 0.0005


class _Quiet:
    """The background jobs running now, and what ``quiet`` found before the first of them."""

    lock = threading.Lock()
    running = 0
    interval = 0.005
    collecting = True
    cpu: int | None = None                     # the CPU the main thread and refreshes share
    main_cpus: set[int] | None = None          # the main thread's CPUs before


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
