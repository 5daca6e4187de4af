"""Hot reload: validated snapshots swapped in whole, old data kept on a bad edit, caches coherent."""
from __future__ import annotations

import gc
import os
import struct
import threading
import weakref
from typing import Any

import dns.message
import dns.query
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from smartdns import background, wire
from smartdns.cache import make_entry
from smartdns.reload import Reloader, ZoneFileCache
from smartdns.service import SmartDNSService, load
from smartdns.watch import Watcher
from tests.support import raw_udp, write_tree

ZONE_V1 = """
$TTL 300
@ SOA ns1 h 1 2 3 4 5
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.10
"""
ZONE_V2 = ZONE_V1.replace("www A 192.0.2.10", "www A 192.0.2.20")
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
control_socket = ""
[zones]
directory = "zones"
watch = false
[lines]
office = ["127.0.0.5/32"]
[forward]
upstreams = ["127.0.0.1:9"]
"""


def sync_run(f, *args):
    """Run the build inline (the real server runs it in a thread)."""
    return defer.maybeDeferred(f, *args)


def ask(service: SmartDNSService, name: str, client: str = "127.0.0.1", qtype: int = wire.A) -> dns.message.Message:
    """Ask the query handler directly (no sockets) and decode the answer with dnspython."""
    data = service.handler.handle(wire.encode_query(1, wire.from_text(name), qtype), client, False)
    assert isinstance(data, bytes), data
    return dns.message.from_wire(data)


def addresses(message: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in message.answer for rd in rrset if rrset.rdtype == 1)


def start_live(testcase: unittest.TestCase, config: str = CONFIG, **service_options) -> tuple[str, SmartDNSService]:
    """The real service on the global reactor over a temp dir holding ``config`` and ZONE_V1."""
    base = os.path.abspath(testcase.mktemp())
    write_tree(base, {"smartdns.toml": config, "zones/example.test.zone": ZONE_V1})
    files = ZoneFileCache()
    config_value, snapshot = load(os.path.join(base, "smartdns.toml"), files)
    service = SmartDNSService(config_value, snapshot, reactor, files=files, **service_options)
    service.startService()
    testcase.addCleanup(service.stopService)
    return base, service


def start_service(case: Any, zones: dict[str, str]) -> None:
    """CONFIG and ``zones`` in a temp dir; sets ``base``, ``path``, ``clock`` (a task.Clock)
    and ``service`` on ``case``, whose reloads run in the caller's thread (``sync_run``)."""
    case.base = os.path.abspath(case.mktemp())
    write_tree(case.base, {"smartdns.toml": CONFIG, **zones})
    case.path = os.path.join(case.base, "smartdns.toml")
    case.clock = task.Clock()
    files = ZoneFileCache()
    config, snapshot = load(case.path, files)
    case.service = SmartDNSService(config, snapshot, case.clock, files=files)
    case.service.reloader._run = sync_run


class ReloadTests(unittest.TestCase):
    """Reloads with a task.Clock and real files in a temp dir."""

    def setUp(self) -> None:
        start_service(self, {"zones/example.test.zone": ZONE_V1, "zones/other.test.zone": ZONE_V1})

    def write(self, rel: str, text: str) -> None:
        write_tree(self.base, {rel: text})
        path = os.path.join(self.base, rel)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # a visible mtime change

    def reload(self):
        return self.successResultOf(self.service.reload("test"))

    def test_good_edit_is_picked_up_and_only_it_is_parsed(self):
        """An edited zone serves its new data; the untouched zone is not re-parsed."""
        self.assertEqual(addresses(ask(self.service, "www.example.test")), ["192.0.2.10"])
        self.reload()          # fills the parse cache for both files
        self.write("zones/example.test.zone", ZONE_V2)
        result = self.reload()
        self.assertTrue(result.ok)
        self.assertEqual(result.changed, (os.path.join(self.base, "zones/example.test.zone"),))
        self.assertEqual(result.generation, 3)
        self.assertEqual(addresses(ask(self.service, "www.example.test")), ["192.0.2.20"])

    def test_bad_edit_keeps_old_data_and_reports_file_and_line(self):
        """A syntax error keeps serving the old snapshot; the next good edit is picked up."""
        self.write("zones/example.test.zone", ZONE_V2 + "bad A 999.1.1.1\n")
        result = self.reload()
        self.assertFalse(result.ok)
        self.assertEqual(result.generation, 1)
        self.assertEqual([str(p).split(": ")[0] for p in result.problems],
                         [os.path.join(self.base, "zones/example.test.zone") + ":6"])
        self.assertEqual(addresses(ask(self.service, "www.example.test")), ["192.0.2.10"])
        self.write("zones/example.test.zone", ZONE_V2)
        self.assertTrue(self.reload().ok)
        self.assertEqual(addresses(ask(self.service, "www.example.test")), ["192.0.2.20"])

    def test_cname_beside_data_is_rejected(self):
        """CNAME beside other data is a rejected edit, not half a zone."""
        self.write("zones/example.test.zone", ZONE_V2 + "www CNAME ns1\n")
        result = self.reload()
        self.assertFalse(result.ok)
        self.assertIn("CNAME and other data", str(result.problems[0]))
        self.assertEqual(addresses(ask(self.service, "www.example.test")), ["192.0.2.10"])

    def test_line_overlay_added_and_removed(self):
        """An overlay appears for its line only, and goes away again."""
        self.write("zones/office/example.test.zone", "www 60 A 10.1.1.1\n")
        self.assertTrue(self.reload().ok)
        self.assertEqual(addresses(ask(self.service, "www.example.test", "127.0.0.5")), ["10.1.1.1"])
        self.assertEqual(addresses(ask(self.service, "www.example.test", "127.0.0.6")), ["192.0.2.10"])
        os.unlink(os.path.join(self.base, "zones/office/example.test.zone"))
        self.assertTrue(self.reload().ok)
        self.assertEqual(addresses(ask(self.service, "www.example.test", "127.0.0.5")), ["192.0.2.10"])

    def test_overlay_for_unknown_line_is_rejected(self):
        """An overlay directory for a line that is not configured keeps the old data."""
        self.write("zones/vpn/example.test.zone", "www 60 A 10.1.1.1\n")
        result = self.reload()
        self.assertFalse(result.ok)
        self.assertIn("unknown line 'vpn'", str(result.problems[0]))

    def test_zone_added_and_removed(self):
        """A new zone answers locally; once removed its names are forwarded again (REFUSED here
        because this client may not recurse... so check the authority flag instead)."""
        self.write("zones/new.test.zone", ZONE_V1)
        self.assertTrue(self.reload().ok)
        self.assertEqual(addresses(ask(self.service, "www.new.test")), ["192.0.2.10"])
        os.unlink(os.path.join(self.base, "zones/new.test.zone"))
        self.assertTrue(self.reload().ok)
        self.assertIsNone(self.service.current.find_zone(wire.from_text("www.new.test")))

    def test_cached_upstream_answer_is_replaced_by_a_new_local_record_at_once(self):
        """A forwarded answer in the cache loses to a zone added by reload, and is flushed."""
        qname = wire.from_text("api.corp.test")
        key = self.service.resolver.key(qname, wire.A, wire.IN, False)
        rrset = wire.make_rrset(qname, wire.A, 3600, [bytes([198, 51, 100, 1])])
        self.service.cache.put(key, make_entry(wire.NOERROR, ((rrset,), (), ()), qname + struct.pack("!HH", 1, 1),
                                               3600, self.clock.seconds(), 0))
        self.assertEqual(addresses(ask(self.service, "api.corp.test")), ["198.51.100.1"])
        self.write("zones/corp.test.zone", ZONE_V1 + "api A 10.9.9.9\n")
        self.assertTrue(self.reload().ok)
        self.assertEqual(addresses(ask(self.service, "api.corp.test")), ["10.9.9.9"])
        self.assertIsNone(self.service.cache.peek(key))

    def test_rename_over_editing(self):
        """An editor writing a temp file and renaming it over the zone is picked up."""
        self.reload()
        tmp = os.path.join(self.base, "zones/.example.test.zone.swp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(ZONE_V2.lstrip())
        os.rename(tmp, os.path.join(self.base, "zones/example.test.zone"))
        self.assertTrue(self.reload().ok)
        self.assertEqual(addresses(ask(self.service, "www.example.test")), ["192.0.2.20"])

    def test_listen_change_is_reported_as_needing_restart(self):
        """A new listen address does not rebind; the old listeners stay and a warning says restart."""
        self.write("smartdns.toml", CONFIG.replace("127.0.0.1:0", "127.0.0.1:5353"))
        logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.assertTrue(self.reload().ok)
        self.assertTrue(any("restart to apply" in e.get("log_format", "") for e in logged))

    def test_reloads_do_not_overlap(self):
        """A reload requested while one runs is queued and runs once afterwards."""
        gate: defer.Deferred[None] = defer.Deferred()
        calls = []

        def gated(f, *args):
            calls.append(args)
            return gate.addCallback(lambda _: f(*args)) if len(calls) == 1 else defer.maybeDeferred(f, *args)

        self.service.reloader._run = gated
        first = self.service.reload("one")
        second = self.service.reload("two")
        third = self.service.reload("three")
        self.assertNoResult(first)
        gate.callback(None)
        self.assertEqual([self.successResultOf(d).generation for d in (first, second, third)], [2, 3, 3])
        self.assertEqual(len(calls), 2)


class WatcherPollingTests(unittest.TestCase):
    """The polling fallback, driven by a task.Clock."""

    def test_change_triggers_one_debounced_reload(self):
        """A change seen by the poller fires the trigger once, after the debounce delay."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"zones/a.test.zone": ZONE_V1})
        clock = task.Clock()
        fired = []
        watcher = Watcher(clock, fired.append, use_inotify=False)
        watcher.set_paths([os.path.join(base, "zones")], [])
        watcher.start()
        self.addCleanup(watcher.stop)
        clock.advance(1.0)
        self.assertEqual(fired, [])
        write_tree(base, {"zones/a.test.zone": ZONE_V2, "zones/.a.swp": "x"})
        clock.advance(1.0)
        clock.advance(0.2)
        self.assertEqual(len(fired), 1)
        clock.advance(5.0)
        self.assertEqual(len(fired), 1)


class LiveReloadTests(unittest.TestCase):
    """The real service on loopback, reloaded while it serves."""

    timeout = 60

    def start(self, watch: bool) -> tuple[str, SmartDNSService, str, int]:
        base, service = start_live(self, CONFIG.replace("watch = false", f"watch = {str(watch).lower()}"))
        host, port = service.addresses()[0]
        return base, service, host, port

    @defer.inlineCallbacks
    def test_inotify_edit_takes_effect(self):
        """Saving a zone file makes the server serve the new data without any command."""
        base, service, host, port = self.start(watch=True)
        swapped: defer.Deferred[None] = defer.Deferred()
        original = service.apply

        def apply(config, snapshot):
            original(config, snapshot)
            if not swapped.called:
                swapped.callback(None)

        service.apply = apply
        service.reloader.apply = apply
        write_tree(base, {"zones/example.test.zone": ZONE_V2})
        yield swapped
        reply = yield threads.deferToThread(
            dns.query.udp, dns.message.make_query("www.example.test", "A"), host, port=port, timeout=2)
        self.assertEqual(addresses(reply), ["192.0.2.20"])

    @defer.inlineCallbacks
    def test_queries_during_reloads_see_old_or_new_never_a_mix(self):
        """Continuous UDP queries across 20 reloads: every one answered, each wholly old or new."""
        base, service, host, port = self.start(watch=False)
        stop = threading.Event()
        seen: list[tuple[str, ...] | str] = []

        def client() -> None:
            query = dns.message.make_query("www.example.test", "A")
            while not stop.is_set():
                try:
                    reply = dns.query.udp(query, host, port=port, timeout=2)
                    seen.append(tuple(addresses(reply)))
                except Exception as e:  # any error is a failure of the test, recorded for the assert
                    seen.append(f"error: {e!r}")

        worker = threads.deferToThread(client)
        for i in range(20):
            before = len(seen)
            while len(seen) <= before:          # let the client get at least one answer per generation
                yield task.deferLater(reactor, 0.005, lambda: None)
            write_tree(base, {"zones/example.test.zone": ZONE_V2 if i % 2 == 0 else ZONE_V1})
            zone = os.path.join(base, "zones/example.test.zone")
            st = os.stat(zone)
            os.utime(zone, ns=(st.st_atime_ns, st.st_mtime_ns + (i + 1) * 1_000_000))
            result = yield service.reload("test")
            self.assertTrue(result.ok)
        stop.set()
        yield worker
        self.assertGreaterEqual(len(seen), 20)
        self.assertEqual(set(seen) - {("192.0.2.10",), ("192.0.2.20",)}, set())


class ReloadCommandTests(unittest.TestCase):
    """``smartdns reload`` over the control socket."""

    timeout = 30

    @defer.inlineCallbacks
    def test_reload_command_prints_the_result(self):
        """The command reports success with the generation, and failure with file:line."""
        import io
        import tempfile
        from contextlib import redirect_stderr, redirect_stdout

        from smartdns import cli

        short = tempfile.mkdtemp(prefix="sd")          # AF_UNIX paths must stay short
        self.addCleanup(lambda: __import__("shutil").rmtree(short, ignore_errors=True))
        sock = os.path.join(short, "ctl.sock")
        base, service = start_live(self, CONFIG.replace('control_socket = ""', f'control_socket = "{sock}"'))
        path = os.path.join(base, "smartdns.toml")

        def run() -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = cli.main(["reload", "--config", path])
            return code, out.getvalue(), err.getvalue()

        code, out, _ = yield threads.deferToThread(run)
        self.assertEqual(code, 0)
        self.assertIn("reload OK: generation 2", out)
        write_tree(base, {"zones/example.test.zone": ZONE_V1 + "oops A not-an-address\n"})
        code, _, err = yield threads.deferToThread(run)
        self.assertEqual(code, 1)
        self.assertIn("reload FAILED, still serving generation 2", err)
        self.assertIn("zones/example.test.zone:6:", err)


class StatsCommandTests(unittest.TestCase):
    """``smartdns stats`` over the control socket."""

    timeout = 30

    @defer.inlineCallbacks
    def test_stats_command_prints_counters(self):
        """After three identical queries and one for a missing name, the counters say so: every
        answer is counted by source, two came from the fast paths, one replay entry exists."""
        import io
        import tempfile
        from contextlib import redirect_stderr, redirect_stdout


        from smartdns import cli

        short = tempfile.mkdtemp(prefix="sd")
        self.addCleanup(lambda: __import__("shutil").rmtree(short, ignore_errors=True))
        sock = os.path.join(short, "ctl.sock")
        base, service = start_live(self, CONFIG.replace('control_socket = ""', f'control_socket = "{sock}"'))
        host, port = service.addresses()[0]
        data = dns.message.make_query("www.example.test", "A").to_wire()
        for _ in range(3):
            yield raw_udp(host, port, data)
        yield raw_udp(host, port, dns.message.make_query("nope.example.test", "A").to_wire())

        def run() -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = cli.main(["stats", "--config", os.path.join(base, "smartdns.toml")])
            return code, out.getvalue(), err.getvalue()

        code, out, err = yield threads.deferToThread(run)
        self.assertEqual(code, 0, err)
        counters = dict(line.split(" ", 1) for line in out.strip().splitlines())
        self.assertEqual(counters["queries"], "4")
        self.assertEqual(counters["answers.local"], "4")
        self.assertEqual(counters["fast.memo_or_replay"], "2")
        self.assertEqual(counters["fast.replay_entries"], "1")
        self.assertEqual(counters["generation"], "1")
        self.assertIn("upstream.in_flight", counters)

    def test_stats_without_a_control_socket(self):
        import io
        from contextlib import redirect_stderr

        from smartdns import cli

        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": CONFIG, "zones/example.test.zone": ZONE_V1})
        err = io.StringIO()
        with redirect_stderr(err):
            code = cli.main(["stats", "--config", os.path.join(base, "smartdns.toml")])
        self.assertEqual(code, 1)
        self.assertIn("no [server] control_socket", err.getvalue())

    def test_stats_and_reload_with_a_bad_config_print_its_problems(self):
        """An invalid config is reported as file:line, not a traceback, by both commands."""
        import io
        from contextlib import redirect_stderr

        from smartdns import cli

        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": "[server]\nworkers = 0\n"})
        for command in ("stats", "reload"):
            err = io.StringIO()
            with redirect_stderr(err):
                code = cli.main([command, "--config", os.path.join(base, "smartdns.toml")])
            self.assertEqual(code, 1, command)
            self.assertIn("smartdns.toml:2:", err.getvalue(), command)


class SignalTests(unittest.TestCase):
    """SIGHUP reloads a service started the way twistd starts it."""

    timeout = 30

    @defer.inlineCallbacks
    def test_sighup_reloads(self):
        """Sending SIGHUP to the process reloads the zones; the handler is removed at stop."""
        import signal as signal_module

        before = signal_module.getsignal(signal_module.SIGHUP)
        base, service = start_live(self, install_signals=True)
        swapped: defer.Deferred[None] = defer.Deferred()
        original = service.reloader.apply

        def apply(config, snapshot):
            original(config, snapshot)
            swapped.callback(None)

        service.reloader.apply = apply
        write_tree(base, {"zones/example.test.zone": ZONE_V2})
        os.kill(os.getpid(), signal_module.SIGHUP)
        yield swapped
        self.assertEqual(addresses(ask(service, "www.example.test")), ["192.0.2.20"])
        yield service.stopService()
        self.assertEqual(signal_module.getsignal(signal_module.SIGHUP), before)


class ForwardingReloadTests(unittest.TestCase):
    """Upstream changes take effect on reload; the old forwarder is retired cleanly."""

    def test_new_upstreams_apply_and_old_forwarder_is_closed_at_stop(self):
        """A changed [forward] gives a fresh forwarder and cache; stopping closes the retired one."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": CONFIG, "zones/example.test.zone": ZONE_V1})
        path = os.path.join(base, "smartdns.toml")
        clock = task.Clock()
        files = ZoneFileCache()
        config, snapshot = load(path, files)
        service = SmartDNSService(config, snapshot, clock, files=files)
        service.reloader._run = sync_run
        old = service.forwarder
        write_tree(base, {"smartdns.toml": CONFIG.replace("127.0.0.1:9", "127.0.0.1:10")})
        self.assertTrue(self.successResultOf(service.reload("test")).ok)
        self.assertIsNot(service.forwarder, old)
        self.assertEqual([str(u) for u in service.forwarder.config.upstreams], ["127.0.0.1:10"])
        self.assertIs(service.handler.chains().cache, service.cache_stage)
        self.assertFalse(old.closed)
        service.stopService()
        self.assertTrue(old.closed)
        self.assertEqual(clock.getDelayedCalls(), [])


class ConfigMapTests(unittest.TestCase):
    """A Kubernetes ConfigMap mount: files are symlinks through ``..data``, swapped atomically."""

    timeout = 30

    @defer.inlineCallbacks
    def test_configmap_swap_is_picked_up(self):
        """Replacing the ``..data`` symlink (as the kubelet does) reloads the new zone data."""
        base = os.path.abspath(self.mktemp())
        zones = os.path.join(base, "zones")
        write_tree(base, {"smartdns.toml": CONFIG.replace("watch = false", "watch = true"),
                          "zones/..2026_01/example.test.zone": ZONE_V1})
        os.symlink("..2026_01", os.path.join(zones, "..data"))
        os.symlink("..data/example.test.zone", os.path.join(zones, "example.test.zone"))
        files = ZoneFileCache()
        config, snapshot = load(os.path.join(base, "smartdns.toml"), files)
        service = SmartDNSService(config, snapshot, reactor, files=files)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(addresses(ask(service, "www.example.test")), ["192.0.2.10"])
        swapped: defer.Deferred[None] = defer.Deferred()
        original = service.reloader.apply

        def apply(config, snapshot):
            original(config, snapshot)
            if not swapped.called:
                swapped.callback(None)

        service.reloader.apply = apply
        write_tree(base, {"zones/..2026_02/example.test.zone": ZONE_V2})
        os.symlink("..2026_02", os.path.join(zones, "..data_tmp"))
        os.rename(os.path.join(zones, "..data_tmp"), os.path.join(zones, "..data"))
        yield swapped
        self.assertEqual(addresses(ask(service, "www.example.test")), ["192.0.2.20"])


class ReplacedSnapshotTests(unittest.SynchronousTestCase):
    """A reload freezes what it built out of the collector's sight (smartdns.background.frozen_after),
    so what it replaces must be freed by reference counting alone, and its large dictionaries are
    emptied a node at a time (smartdns.reload.Retirement)."""

    NAMES = 3000

    def setUp(self) -> None:
        self.patch(background, "FREEZE_MIN_OBJECTS", 0)      # freeze these small builds too
        start_service(self, {"zones/example.test.zone": self.zone(1),
                             "zones/office/example.test.zone": "www 60 A 10.1.1.1\n"})
        self.origin = wire.from_text("example.test")

    def zone(self, version: int) -> str:
        return ZONE_V1 + "".join(f"h{i} A 10.{version}.{i >> 8}.{i & 255}\n" for i in range(self.NAMES))

    def edit(self, rel: str, text: str) -> None:
        write_tree(self.base, {rel: text})
        path = os.path.join(self.base, rel)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    def reload_base(self, version: int) -> None:
        self.edit("zones/example.test.zone", self.zone(version))
        frozen = background._Quiet.frozen
        self.assertTrue(self.successResultOf(self.service.reload("test")).ok)
        self.assertEqual(background._Quiet.frozen, frozen + 1)          # the build was frozen
        for client in ("127.0.0.1", "127.0.0.5"):                      # the handler composes chains for it
            self.assertEqual(addresses(ask(self.service, "h7.example.test", client)), [f"10.{version}.0.7"])
        self.assertEqual(addresses(ask(self.service, "www.example.test", "127.0.0.5")), ["10.1.1.1"])

    def test_a_replaced_snapshot_is_freed_at_the_swap_without_the_collector(self) -> None:
        """The snapshot before a reload is frozen (the reload that built it froze it), so only
        reference counting can free it: it is gone as soon as the swap is done.  With resolver
        chains that are reference cycles (Twisted's ResolverBase) it stayed forever."""
        self.reload_base(2)
        for version in (3, 4, 5):
            replaced = weakref.ref(self.service.current)
            self.reload_base(version)
            self.assertIsNone(replaced())

    def test_frozen_objects_do_not_pile_up_across_reloads(self) -> None:
        """Each reload freezes its new snapshot and frees the one it replaces: after the first
        few, the count of frozen objects stays put instead of growing by a snapshot each time."""
        for version in (2, 3):
            self.reload_base(version)
            self.clock.advance(0)
        settled = gc.get_freeze_count()
        for version in range(4, 12):
            self.reload_base(version)
            self.clock.advance(0)
        grown = gc.get_freeze_count() - settled
        # Leaking a snapshot per reload would add 8 zones of 3,000 names (some 9,000 objects each).
        self.assertLess(grown, self.NAMES, f"frozen objects grew by {grown} over 8 reloads")

    def test_the_replaced_zones_nodes_are_emptied_a_node_at_a_time(self) -> None:
        """At the swap the replaced zone's node dictionary and the replaced line view's merged
        nodes are handed to the retirement, emptied (in the thread ``run`` gives) once nothing
        else holds them; the zone that stays is left alone."""
        retirement = self.service.reloader.retirement
        self.reload_base(2)
        self.clock.advance(0)
        emptied, entries = retirement.emptied, retirement.entries
        self.reload_base(3)
        self.assertEqual(retirement.emptied, emptied)                  # not before the check
        self.clock.advance(0)
        self.assertEqual(retirement.emptied, emptied + 2)               # base nodes, office's merged view
        self.assertEqual(retirement.entries, entries + self.NAMES + 3 + 1)   # h*, @, ns1, www; www
        self.assertEqual(retirement.waiting, [])
        self.assertEqual(addresses(ask(self.service, "h9.example.test")), ["10.3.0.9"])

    def test_data_still_held_elsewhere_is_never_emptied(self) -> None:
        """A dictionary someone still holds (a query in flight on the old snapshot) waits; one
        still held after the last check is let go whole, never emptied."""
        retirement = self.service.reloader.retirement
        self.reload_base(2)
        held = self.service.current.zones[self.origin].nodes
        size = len(held)
        self.reload_base(3)
        for delay in retirement.CHECK_DELAYS:
            self.clock.advance(delay)
        self.assertEqual(len(held), size)
        self.assertEqual(retirement.let_go, 1)
        self.assertEqual(retirement.waiting, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
