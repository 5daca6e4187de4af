"""The twistd plugin, the service composition and the ``smartdns check`` command."""
from __future__ import annotations

import io
import os
import sys
import tomllib
from contextlib import redirect_stderr, redirect_stdout

from twisted.application.service import IServiceMaker
from twisted.internet import defer, utils
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from smartdns import cli, service
from tests.support import write_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD_ZONE = """
$TTL 300
@ SOA ns1 h 1 2 3 4 5
@ NS ns1
www A 192.0.2.1
www CNAME elsewhere.example.
"""


class PluginTests(unittest.TestCase):
    """twistd finds the plugin and refuses bad input with a clear message."""

    def test_plugin_is_discoverable(self):
        """``smartdns`` is among twistd's service makers."""
        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertIn("smartdns", names)

    def test_bad_zone_is_a_usage_error_naming_file_and_line(self):
        """A zone with CNAME beside other data stops startup with ``file:line: message``."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": '[zones]\ndirectory = "zones"\n[forward]\nupstreams = []\n',
                          "zones/bad.test.zone": BAD_ZONE})
        options = service.Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--config", os.path.join(base, "smartdns.toml")])
        self.assertIn(f"{base}/zones/bad.test.zone:5: CNAME and other data at the same name", str(caught.exception))

    def test_shipped_config_builds_a_service(self):
        """The shipped smartdns.toml and zones load, and makeService composes a service."""
        options = service.Options()
        options.parseOptions(["--config", os.path.join(ROOT, "smartdns.toml")])
        svc = service.makeService(options)
        with open(os.path.join(ROOT, "smartdns.toml"), "rb") as handle:
            shipped = tomllib.load(handle)["server"]["listen"]
        self.assertEqual([f"{host}:{port}" for host, port in svc.config.server.listen], shipped)
        self.assertEqual(len(svc.current.zones), 1)

    @defer.inlineCallbacks
    def test_twistd_exits_with_the_message_not_a_traceback(self):
        """``twistd smartdns`` with a bad config exits non-zero printing the problem, no traceback."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": '[cache]\nmax_entries = "many"\n'})
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            raise unittest.SkipTest("twistd is not installed next to this Python")
        env = dict(os.environ, PYTHONPATH=ROOT)
        out, err, code = yield utils.getProcessOutputAndValue(
            twistd, ("-n", "--pidfile=", "smartdns", "--config", os.path.join(base, "smartdns.toml")), env=env,
            path=base)
        text = (out + err).decode()
        self.assertNotEqual(code, 0)
        self.assertIn(f"{base}/smartdns.toml:2:", text)
        self.assertNotIn("Traceback", text)


class CheckCommandTests(unittest.TestCase):
    """``smartdns check`` validates without serving."""

    def run_check(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["check", *args])
        return code, out.getvalue(), err.getvalue()

    def test_good_config(self):
        """The shipped config passes and the summary counts zones and lines."""
        code, out, _ = self.run_check("--config", os.path.join(ROOT, "smartdns.toml"))
        self.assertEqual(code, 0)
        self.assertIn("OK, 1 zones", out)
        self.assertIn("2 lines", out)

    def test_every_error_is_printed(self):
        """Problems in two zone files are both reported, one per line, and the exit code is 1."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {
            "smartdns.toml": '[zones]\ndirectory = "zones"\n[forward]\nupstreams = []\n',
            "zones/bad.test.zone": BAD_ZONE,
            "zones/worse.test.zone": "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nwww A 300.1.2.3\n",
        })
        code, _, err = self.run_check("--config", os.path.join(base, "smartdns.toml"))
        self.assertEqual(code, 1)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith(f"{base}/zones/bad.test.zone:5: "))
        self.assertTrue(lines[1].startswith(f"{base}/zones/worse.test.zone:4: "))

    def test_overlay_for_unknown_line(self):
        """An overlay directory that names no configured line is an error, not silently ignored."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {
            "smartdns.toml": '[zones]\ndirectory = "zones"\n[forward]\nupstreams = []\n',
            "zones/ok.test.zone": "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n",
            "zones/office/ok.test.zone": "www A 192.0.2.1\n",
        })
        code, _, err = self.run_check("--config", os.path.join(base, "smartdns.toml"))
        self.assertEqual(code, 1)
        self.assertIn("overlay directory for unknown line 'office'", err)
