"""Tests for smartdns.secondary: AXFR from BIND named as the primary with a TSIG key, atomic save."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap

import dns.zone
from twisted.internet import threads
from twisted.trial import unittest

from smartdns.config import SecondaryZone
from smartdns.secondary import TransferError, save, saved_path, transfer
from smartdns.tsig import TsigKey, parse_secret
from tests.support import write_tree

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
