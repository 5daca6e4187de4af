"""Which file changes make the server reload: only files that feed it."""
from __future__ import annotations

import os

from twisted.internet import task
from twisted.trial import unittest

from smartdns.config import load_config
from smartdns.snapshot import build_snapshot, watched_paths
from smartdns.watch import Watcher

ZONE = "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n$INCLUDE ../common/extra.inc\n"


def write(base: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)


class FeedsTests(unittest.TestCase):
    """Watcher.feeds: the decision for one changed path."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        write(self.base, {"smartdns.toml": "", "zones/a.test.zone": ZONE, "zones/office/a.test.zone": "",
                          "common/extra.inc": "www A 192.0.2.2\n", "records.json": "[]"})
        self.watcher = Watcher(task.Clock(), lambda reason: None, use_inotify=False)
        self.watcher.set_paths([os.path.join(self.base, "zones")],
                               [os.path.join(self.base, name) for name in
                                ("smartdns.toml", "records.json", "common/extra.inc")])

    def test_files_that_feed_the_server(self) -> None:
        """Zone files, line directories and their zone files, and each named file."""
        for rel in ("zones/a.test.zone", "zones/new.test.zone", "zones/office", "zones/office/a.test.zone",
                    "zones/vpn/b.test.zone", "smartdns.toml", "records.json", "common/extra.inc",
                    "zones/..data", "..data"):
            self.assertTrue(self.watcher.feeds(os.path.join(self.base, rel)), rel)

    def test_other_files_do_not(self) -> None:
        """Files beside the config or in the zones directory that feed nothing, and editor
        droppings, do not make a reload."""
        for rel in ("newfile.txt", "_trial_temp/test.log", "zones/notes.txt", "zones/.a.test.zone.swp",
                    "zones/a.test.zone~", "zones/office/readme.md", "common/other.inc", "smartdns.sock"):
            self.assertFalse(self.watcher.feeds(os.path.join(self.base, rel)), rel)

    def test_deleted_line_directory(self) -> None:
        """A line directory that was removed (the event says it was a directory) counts."""
        self.assertTrue(self.watcher.feeds(os.path.join(self.base, "zones", "gone.line"), True))


class PollingTests(unittest.TestCase):
    """The polling fallback sees only files that feed the server (task.Clock, no sleeps)."""

    def test_new_file_beside_the_config_is_ignored(self) -> None:
        """``touch newfile.txt`` next to the config makes no reload; editing the config does."""
        base = os.path.abspath(self.mktemp())
        write(base, {"smartdns.toml": "", "zones/a.test.zone": ZONE})
        clock = task.Clock()
        fired: list[str] = []
        watcher = Watcher(clock, fired.append, use_inotify=False)
        watcher.set_paths([os.path.join(base, "zones")], [os.path.join(base, "smartdns.toml")])
        watcher.start()
        self.addCleanup(watcher.stop)
        write(base, {"newfile.txt": "x", "zones/notes.txt": "x"})
        clock.advance(1.0)
        clock.advance(0.2)
        self.assertEqual(fired, [])
        write(base, {"smartdns.toml": "# edited\n"})
        os.utime(os.path.join(base, "smartdns.toml"), ns=(0, 1))
        clock.advance(1.0)
        clock.advance(0.2)
        self.assertEqual(len(fired), 1)


class WatchedPathsTests(unittest.TestCase):
    """watched_paths: what the service hands the watcher."""

    def test_includes_and_sources(self) -> None:
        """The config, the zones directory and each $INCLUDEd file are watched."""
        base = os.path.abspath(self.mktemp())
        write(base, {"smartdns.toml": '[forward]\nupstreams = []\n', "zones/a.test.zone": ZONE,
                     "common/extra.inc": "www A 192.0.2.2\n"})
        config = load_config(os.path.join(base, "smartdns.toml"))
        paths = watched_paths(config, build_snapshot(config))
        for rel in ("smartdns.toml", "zones", "zones/a.test.zone", "common/extra.inc"):
            self.assertIn(os.path.join(base, rel), paths)
