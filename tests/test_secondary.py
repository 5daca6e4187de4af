"""Tests for smartdns.secondary: AXFR from BIND named as the primary with a TSIG key, atomic save;
and the running server as BIND's secondary (smartdns.refresh): per-line views, NOTIFY, expire, restart."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from typing import Any

import dns.rcode
import dns.zone
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial import unittest

from smartdns.config import SecondaryZone, parse_config
from smartdns.secondary import TransferError, save, saved_path, transfer
from smartdns.service import SmartDNSService
from smartdns.snapshot import build_snapshot
from smartdns.tsig import TsigKey, parse_secret
from tests.support import query, write_tree

SECRET = "cHJpbWFyeS1zZWNyZXQtZm9yLXRlc3Rz"      # "primary-secret-for-tests"
KEY = TsigKey("fleet-key", "hmac-sha256", parse_secret(SECRET))
ZONE = """\
$TTL 300
@    IN SOA ns1 hostmaster 7 3600 600 86400 60
@    NS  ns1
ns1  A   192.0.2.1
www  A   192.0.2.10
"""
NAMED = shutil.which("named") or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)


class TransferFromBindTests(unittest.TestCase):
    """smartdns pulls a zone from BIND named (allow-transfer by key only) and saves it."""

    def setUp(self) -> None:
        if NAMED is None:
            raise unittest.SkipTest("BIND named is not installed (apt-get install bind9)")
        from tests.oracle_harness import ServerProcess, free_port, wait_for_soa

        workdir = tempfile.mkdtemp(prefix="secondary-named-")
        self.port = free_port()
        write_tree(workdir, {"fleet.test.zone": ZONE, "named.conf": textwrap.dedent(f"""\
            options {{ directory "{workdir}"; listen-on port {self.port} {{ 127.0.0.1; }};
                      listen-on-v6 {{ none; }}; recursion no; notify no; dnssec-validation no; pid-file none; }};
            controls {{ }};
            key "fleet-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
            zone "fleet.test" {{ type primary; file "fleet.test.zone"; allow-transfer {{ key fleet-key; }}; }};
            """)})
        log_path = os.path.abspath(self.mktemp()) + "-named.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", os.path.join(workdir, "named.conf")],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
        self.named = ServerProcess("named", proc, self.port, workdir, log_path)
        self.addCleanup(self.named.stop)
        wait_for_soa(self.named, "fleet.test.")
        self.secondary = SecondaryZone("fleet.test", (("127.0.0.1", self.port),), "fleet-key", None)

    async def test_transfer_and_save(self) -> None:
        """The signed AXFR gives BIND's zone with its timers; the saved file reads back equal."""
        got = await threads.deferToThread(transfer, self.secondary, KEY)
        self.assertEqual((got.timers.serial, got.timers.refresh, got.timers.retry, got.timers.expire),
                         (7, 3600, 600, 86400))
        directory = os.path.abspath(self.mktemp())
        path = save(directory, self.secondary, got.text)
        self.assertEqual(path, os.path.join(directory, "fleet.test.zone"))
        self.assertEqual(os.listdir(directory), ["fleet.test.zone"])        # no temp file left
        saved = dns.zone.from_file(path, origin="fleet.test.", relativize=False)
        primary = dns.zone.from_text(ZONE, origin="fleet.test.", relativize=False)
        self.assertEqual(saved, primary)

    async def test_same_serial_is_nothing_to_do(self) -> None:
        """A primary whose serial equals ours: None, nothing to save."""
        self.assertIsNone(await threads.deferToThread(transfer, self.secondary, KEY, 7))

    async def test_older_serial_and_bad_key_fail(self) -> None:
        """A serial that went back, a wrong key, a primary that is down: TransferError naming each."""
        with self.assertRaisesRegex(TransferError, "serial 7 is older than ours \\(8\\)"):
            await threads.deferToThread(transfer, self.secondary, KEY, 8)
        wrong = TsigKey("fleet-key", "hmac-sha256", b"not the secret")
        with self.assertRaisesRegex(TransferError, f"127.0.0.1:{self.port}: "):
            await threads.deferToThread(transfer, self.secondary, wrong, None, 3)
        self.named.stop()
        with self.assertRaisesRegex(TransferError, "transfer of fleet.test failed"):
            await threads.deferToThread(transfer, self.secondary, KEY, None, 2)


class SavePathTests(unittest.TestCase):
    """Saved files are named like the zone directory's: <origin>.zone, <line>/<origin>.zone."""

    def test_paths(self) -> None:
        """A line's transferred view goes in the line's subdirectory."""
        self.assertEqual(saved_path("/s", SecondaryZone("a.test", (("192.0.2.1", 53),))), "/s/a.test.zone")
        self.assertEqual(saved_path("/s", SecondaryZone("a.test", (("192.0.2.1", 53),), None, "line1")),
                         "/s/line1/a.test.zone")


# -- the running server as a secondary of BIND named (two views keyed by TSIG) ------------------

LINE_SECRET = "bGluZTEtc2VjcmV0LWZvci10ZXN0cw=="     # "line1-secret-for-tests"
PRIMARY_ZONE = """\
$TTL 300
@    IN SOA ns1 hostmaster {serial} {timers}
@    NS  ns1
ns1  A   192.0.2.1
www  A   {www}
"""
LONG_TIMERS = "3600 600 86400 60"      # only NOTIFY makes smartdns refresh within a test
SHORT_TIMERS = "1 1 3 60"              # refresh 1 s, retry 1 s, expire 3 s


def primary_zone(serial: int, www: str, timers: str) -> str:
    return PRIMARY_ZONE.format(serial=serial, www=www, timers=timers)


class BindPrimary(unittest.TestCase):
    """named as the primary (two views: line1's by line1-key, the base for the rest, transfers
    by fleet-key) and the real smartdns service as its secondary for both, on loopback."""

    timers = LONG_TIMERS

    def setUp(self) -> None:
        if NAMED is None:
            raise unittest.SkipTest("BIND named is not installed (apt-get install bind9)")
        from tests.oracle_harness import free_port
        self.named_port, self.port = free_port(), free_port()
        self.workdir = tempfile.mkdtemp(prefix="secondary-named-")
        self.base = os.path.abspath(self.mktemp())
        write_tree(self.base, {"zones/.keep": "", "secondary/.keep": "", "smartdns.toml": f"""\
            [server]
            listen = ["127.0.0.1:{self.port}"]
            control_socket = ""
            [forward]
            upstreams = []
            [zones]
            directory = "zones"
            secondary_directory = "secondary"
            [lines]
            line1 = ["127.0.0.2/32"]
            [[tsig]]
            name = "fleet-key"
            secret = "{SECRET}"
            [[tsig]]
            name = "line1-key"
            secret = "{LINE_SECRET}"
            [[secondary]]
            zone = "fleet.test"
            primaries = ["127.0.0.1:{self.named_port}"]
            key = "fleet-key"
            [[secondary]]
            zone = "fleet.test"
            primaries = ["127.0.0.1:{self.named_port}"]
            key = "line1-key"
            line = "line1"
            """})
        self.write_primary(7, "192.0.2.10", "198.51.100.10", age=60)
        self.start_named()

    def write_primary(self, serial: int, base_www: str, line_www: str, age: float = 0) -> None:
        write_tree(self.workdir, {"base.zone": primary_zone(serial, base_www, self.timers),
                                  "line1.zone": primary_zone(serial, line_www, self.timers)})
        stamp = time.time() - age           # named reloads a file whose time changed
        for name in ("base.zone", "line1.zone"):
            os.utime(os.path.join(self.workdir, name), (stamp, stamp))

    def start_named(self) -> None:
        from tests.oracle_harness import ServerProcess, wait_for_soa
        write_tree(self.workdir, {"named.conf": textwrap.dedent(f"""\
            options {{ directory "{self.workdir}"; listen-on port {self.named_port} {{ 127.0.0.1; }};
                      listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; pid-file none;
                      notify explicit; also-notify {{ 127.0.0.1 port {self.port}; }}; }};
            controls {{ }};
            key "fleet-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
            key "line1-key" {{ algorithm hmac-sha256; secret "{LINE_SECRET}"; }};
            view "line1" {{
              match-clients {{ key line1-key; }};
              server 127.0.0.1 {{ keys {{ line1-key; }}; }};
              zone "fleet.test" {{ type primary; file "line1.zone"; allow-transfer {{ key line1-key; }}; }};
            }};
            view "base" {{
              match-clients {{ any; }};
              server 127.0.0.1 {{ keys {{ fleet-key; }}; }};
              zone "fleet.test" {{ type primary; file "base.zone"; allow-transfer {{ key fleet-key; }}; }};
            }};
            """)})
        log_path = os.path.abspath(self.mktemp()) + "-named.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", os.path.join(self.workdir, "named.conf")],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.named = ServerProcess("named", proc, self.named_port, self.workdir, log_path)
        self.addCleanup(self.named.stop)
        wait_for_soa(self.named, "fleet.test.")

    def start_smartdns(self) -> Any:
        path = os.path.join(self.base, "smartdns.toml")
        with open(path, encoding="utf-8") as handle:
            config = parse_config(handle.read(), path)
        service = SmartDNSService(config, build_snapshot(config), reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    async def ask(self, source: str = "127.0.0.1") -> tuple[int, list[str]]:
        reply = await query("127.0.0.1", self.port, "www.fleet.test.", "A", source=source)
        return reply.rcode(), [rr.to_text() for rrset in reply.answer for rr in rrset]

    async def wait_for(self, source: str, want: tuple[int, list[str]], seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        got = None
        while time.monotonic() < deadline:
            got = await self.ask(source)
            if got == want:
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"from {source}: still {got}, wanted {want}")


class SecondaryOfBindTests(BindPrimary):
    """smartdns follows BIND named: the base zone with one key, line1's zone (another view) with
    another; named's NOTIFY brings new serials; a restart serves the saved files."""

    async def test_transfer_notify_and_restart(self) -> None:
        """The first transfer is served per line; named's signed NOTIFY after an edit brings the
        new serial within seconds; a restart with named down serves the saved files at once."""
        service = self.start_smartdns()
        await self.wait_for("127.0.0.1", (dns.rcode.NOERROR, ["192.0.2.10"]))
        await self.wait_for("127.0.0.2", (dns.rcode.NOERROR, ["198.51.100.10"]))
        self.assertTrue(os.path.exists(os.path.join(self.base, "secondary", "line1", "fleet.test.zone")))
        self.write_primary(8, "192.0.2.20", "198.51.100.20")
        self.named.proc.send_signal(signal.SIGHUP)   # named reloads, then sends NOTIFY (SOA refresh is 1 h)
        await self.wait_for("127.0.0.1", (dns.rcode.NOERROR, ["192.0.2.20"]))
        await self.wait_for("127.0.0.2", (dns.rcode.NOERROR, ["198.51.100.20"]))
        await service.stopService()
        self.named.stop()
        self.start_smartdns()
        self.assertEqual(await self.ask("127.0.0.1"), (dns.rcode.NOERROR, ["192.0.2.20"]))
        self.assertEqual(await self.ask("127.0.0.2"), (dns.rcode.NOERROR, ["198.51.100.20"]))


class ExpireOfBindTests(BindPrimary):
    """Short SOA timers: a stopped primary keeps the old data, then SERVFAIL after expire."""

    timers = SHORT_TIMERS

    async def test_primary_down_then_expire(self) -> None:
        """With named stopped, refreshes fail and the old data stays; 3 s (SOA expire) after the
        last good refresh every client gets SERVFAIL, as BIND answers."""
        self.start_smartdns()
        await self.wait_for("127.0.0.2", (dns.rcode.NOERROR, ["198.51.100.10"]))
        self.named.stop()
        self.assertEqual(await self.ask("127.0.0.1"), (dns.rcode.NOERROR, ["192.0.2.10"]))
        await self.wait_for("127.0.0.1", (dns.rcode.SERVFAIL, []), seconds=6)
        await self.wait_for("127.0.0.2", (dns.rcode.SERVFAIL, []), seconds=1)


class BrokenZoneTests(unittest.TestCase):
    """A transferred zone smartdns's reader would not load is never saved."""

    def test_broken_zone_keeps_the_saved_file(self) -> None:
        """CNAME beside other data: TransferError naming the primary; the old file and no temp file stay."""
        directory = os.path.abspath(self.mktemp())
        spec = SecondaryZone("fleet.test", (("127.0.0.1", 53),))
        path = save(directory, spec, "$ORIGIN fleet.test.\n" + ZONE)
        broken = "$ORIGIN fleet.test.\n" + ZONE + "www  CNAME ns1\n"
        with self.assertRaisesRegex(TransferError, "transfer of fleet.test failed: 127.0.0.1:53: broken zone: "):
            save(directory, spec, broken, primary="127.0.0.1:53")
        self.assertEqual(os.listdir(directory), ["fleet.test.zone"])
        with open(path, encoding="utf-8") as handle:
            self.assertNotIn("CNAME", handle.read())
