"""``smartdns.background.quiet``: what a reload's build and a secondary's refresh run under,
however they overlap, and that a reload's build really runs under it."""
from __future__ import annotations

import gc
import os
import sys
import weakref
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from smartdns import background
from smartdns.background import SWITCH_INTERVAL_SECONDS, frozen_after, quiet
from smartdns.config import load_config
from smartdns.reload import Reloader
from smartdns.snapshot import Snapshot, build_snapshot
from tests.support import write_tree
from tests.test_reload import CONFIG, ZONE_V1, ZONE_V2


class QuietTests(unittest.SynchronousTestCase):
    """One count for every job: the first sets, the last restores."""

    def setUp(self) -> None:
        self.interval, self.collecting = sys.getswitchinterval(), gc.isenabled()
        sys.setswitchinterval(0.004)
        gc.enable()
        self.addCleanup(sys.setswitchinterval, self.interval)
        self.addCleanup(lambda: gc.enable() if self.collecting else gc.disable())

    def state(self) -> tuple[float, bool]:
        return sys.getswitchinterval(), gc.isenabled()

    def test_overlapping_jobs_restore_what_the_first_found(self) -> None:
        """A reload that starts during a refresh and ends after it leaves the interval and the
        collector as they were before the refresh (each saving and restoring on its own left
        the short interval behind)."""
        first = quiet()
        first.__enter__()
        quiet_state = self.state()
        self.assertLessEqual(quiet_state[0], SWITCH_INTERVAL_SECONDS)
        self.assertFalse(quiet_state[1])
        second = quiet()
        second.__enter__()
        first.__exit__(None, None, None)
        self.assertEqual(self.state(), quiet_state)       # the second job still runs
        second.__exit__(None, None, None)
        self.assertAlmostEqual(self.state()[0], 0.004)
        self.assertTrue(self.state()[1])

    def test_restored_after_a_failure(self) -> None:
        with self.assertRaises(ValueError):
            with quiet():
                raise ValueError("the job failed")
        self.assertAlmostEqual(self.state()[0], 0.004)
        self.assertTrue(self.state()[1])

    def test_a_reload_builds_under_it(self) -> None:
        """The reload's build (with its prepare hook) runs with the short interval and no
        collector, and both are back once the new snapshot serves."""
        base = self.mktemp()
        write_tree(base, {"smartdns.toml": CONFIG, "zones/example.test.zone": ZONE_V1})
        path = os.path.join(base, "smartdns.toml")
        current = [build_snapshot(load_config(path))]
        seen: list[tuple[float, bool]] = []

        def prepare(old: Snapshot, new: Snapshot) -> Snapshot:
            seen.append(self.state())
            return new

        def apply(_config: Any, snapshot: Snapshot) -> None:
            current[0] = snapshot

        reloader = Reloader(task.Clock(), path, apply, lambda: current[0],
                            run=lambda f, *a: defer.maybeDeferred(f, *a), prepare=prepare)
        write_tree(base, {"zones/example.test.zone": ZONE_V2})
        result = self.successResultOf(reloader.reload())
        self.assertTrue(result.ok)
        self.assertEqual(len(seen), 1)
        self.assertLessEqual(seen[0][0], SWITCH_INTERVAL_SECONDS)
        self.assertFalse(seen[0][1])
        self.assertAlmostEqual(self.state()[0], 0.004)
        self.assertTrue(self.state()[1])


class FrozenAfterTests(unittest.SynchronousTestCase):
    """``frozen_after``: a large build, alone, is frozen once it succeeds; nothing else is."""

    def setUp(self) -> None:
        self.collecting = gc.isenabled()
        gc.enable()
        self.addCleanup(lambda: gc.enable() if self.collecting else gc.disable())
        self.patch(background, "FREEZE_MIN_OBJECTS", 1000)

    def test_a_large_build_alone_is_frozen_and_garbage_before_it_is_collected(self) -> None:
        cycle: list[Any] = []
        cycle.append(cycle)
        garbage = weakref.ref(Cyclic(cycle))
        del cycle
        frozen = background._Quiet.frozen
        with quiet(), frozen_after():
            self.assertIsNone(garbage())               # collected before the build, not frozen
            built = [Cyclic(None) for _ in range(2000)]
        self.assertEqual(background._Quiet.frozen, frozen + 1)
        self.assertFalse(any(x is built[0] for g in range(3) for x in gc.get_objects(g)))   # out of sight

    def test_a_small_build_is_left_to_the_collector(self) -> None:
        frozen = background._Quiet.frozen
        with quiet(), frozen_after():
            built = [Cyclic(None) for _ in range(10)]
        self.assertEqual(background._Quiet.frozen, frozen)
        self.assertTrue(any(x is built[0] for g in range(3) for x in gc.get_objects(g)))   # in the collector's sight

    def test_a_build_that_overlapped_another_job_is_not_frozen(self) -> None:
        frozen = background._Quiet.frozen
        other = quiet()
        with quiet(), frozen_after():
            other.__enter__()                          # a secondary's refresh starts and ends meanwhile
            other.__exit__(None, None, None)
            built = [Cyclic(None) for _ in range(2000)]
        self.assertEqual(background._Quiet.frozen, frozen)
        self.assertTrue(any(x is built[0] for g in range(3) for x in gc.get_objects(g)))   # in the collector's sight

    def test_a_failed_build_is_not_frozen(self) -> None:
        frozen = background._Quiet.frozen
        with self.assertRaises(ValueError):
            with quiet(), frozen_after():
                built = [Cyclic(None) for _ in range(2000)]
                raise ValueError("bad zone")
        self.assertEqual(background._Quiet.frozen, frozen)
        self.assertTrue(any(x is built[0] for g in range(3) for x in gc.get_objects(g)))   # in the collector's sight

    def test_nothing_is_frozen_when_the_collector_was_off(self) -> None:
        gc.disable()
        frozen = background._Quiet.frozen
        with quiet(), frozen_after():
            [Cyclic(None) for _ in range(2000)]
        self.assertEqual(background._Quiet.frozen, frozen)
        self.assertFalse(gc.isenabled())


class EmptyPiecewiseTests(unittest.SynchronousTestCase):

    def test_dicts_and_sets_are_emptied_and_let_go(self) -> None:
        nodes = {i: {1: i} for i in range(100)}
        names = set(range(50))
        kept = frozenset(range(10))
        containers: list[Any] = [nodes, names, kept]
        self.assertEqual(background.empty_piecewise(containers), 150)
        self.assertEqual((nodes, names, containers), ({}, set(), []))
        self.assertEqual(len(kept), 10)


class Cyclic:
    """A tracked object (what a zone's RRsets and nodes are to the collector)."""

    def __init__(self, other: Any) -> None:
        self.other = other
