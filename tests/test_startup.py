"""Starting smartdns: versions, and every startup failure as the lines a person acts on.

These run the real ``twistd`` (and ``python -m smartdns``) in subprocesses, each with a timeout:
what twistd prints around a plugin's failure is the behaviour under test.
"""
from __future__ import annotations

import configparser
import errno
import io
import os
import shutil
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial import unittest

import smartdns
from smartdns import cli
from smartdns.errors import ListenError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
SUBPROCESS_TIMEOUT_SECONDS = 60

ZONE = "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n"


def run(args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    """Run a command with this checkout first on the import path; no stdin, output captured."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_SECONDS, check=False)


def twistd(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    """``twistd ARGS`` from this Python's environment (skip where twistd is not installed)."""
    if not os.path.exists(TWISTD):
        raise unittest.SkipTest("twistd is not installed next to this Python")
    return run([TWISTD, *args], cwd)


class VersionTests(unittest.TestCase):
    """Every way of starting smartdns can say which version it is."""

    def test_package_version(self) -> None:
        """smartdns.__version__ is the distribution's version in setup.cfg."""
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        self.assertEqual(parser["metadata"]["version"], "attr: smartdns.__version__")
        self.assertRegex(smartdns.__version__, r"\A\d+\.\d+\.\d+\Z")

    def test_distribution_name(self) -> None:
        """The distribution is not called smartdns (an unrelated project on PyPI has that name);
        the command and the twistd plugin still are."""
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        self.assertEqual(parser["metadata"]["name"], smartdns.DISTRIBUTION_NAME)
        self.assertNotEqual(smartdns.DISTRIBUTION_NAME, "smartdns")
        self.assertIn("smartdns = smartdns.cli:main", parser["options.entry_points"]["console_scripts"])

    def test_cli_version(self) -> None:
        """``smartdns --version`` prints the version and exits 0."""
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            cli.main(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(out.getvalue(), f"smartdns {smartdns.__version__} ({smartdns.DISTRIBUTION_NAME})\n")

    def test_python_m_smartdns(self) -> None:
        """``python -m smartdns`` is the smartdns command."""
        result = run([sys.executable, "-m", "smartdns", "--version"], ROOT)
        self.assertEqual((result.returncode, result.stdout.split()[:2]), (0, ["smartdns", smartdns.__version__]))

    def test_twistd_plugin_version(self) -> None:
        """``twistd smartdns --version`` prints smartdns's version, not Twisted's."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        result = twistd("smartdns", "--version", cwd=directory)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split()[:2], ["smartdns", smartdns.__version__])


class ListenErrorTests(unittest.TestCase):
    """The text of a failed bind."""

    def test_text(self) -> None:
        """Address (IPv6 in brackets), port, protocol and the system's reason, lowercased."""
        reason = OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        self.assertEqual(str(ListenError("127.0.0.1", 5300, "udp", reason)),
                         "cannot listen on 127.0.0.1:5300/udp: address already in use")
        self.assertEqual(str(ListenError("::1", 53, "tcp", OSError(errno.EACCES, os.strerror(errno.EACCES)))),
                         "cannot listen on [::1]:53/tcp: permission denied")


class StartupFailureTests(unittest.TestCase):
    """A failed start prints only the problem, on stderr, exit status 1, with or without -n."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.base, "zones"))
        with open(os.path.join(self.base, "zones", "start.test.zone"), "w") as f:
            f.write(ZONE)

    def write_config(self, text: str) -> str:
        path = os.path.join(self.base, "smartdns.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, config: str, *, daemon: bool) -> subprocess.CompletedProcess[str]:
        """twistd in the foreground (-n) or daemonising, with its pid and log files in the temp dir."""
        mode = [f"--logfile={os.path.join(self.base, 'twistd.log')}"] if daemon else ["-n"]
        return twistd(*mode, f"--pidfile={os.path.join(self.base, 'twistd.pid')}", "smartdns",
                      "--config", config, cwd=self.base)

    def busy(self, kind: int) -> int:
        """Hold a loopback port of this kind for the test; return its number."""
        sock = socket.socket(socket.AF_INET, kind)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)
        port: int = sock.getsockname()[1]
        return port

    def assert_one_line(self, result: subprocess.CompletedProcess[str], expected: list[str]) -> None:
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(result.stderr.splitlines(), expected)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertNotIn("Usage:", result.stdout)

    def test_config_errors_are_the_only_lines(self) -> None:
        """Config problems: one ``file:line: message`` each, and nothing of twistd's usage text."""
        path = self.write_config('[cache]\nmax_entries = "many"\n[server]\nworkers = 0\n')
        for daemon in (False, True):
            self.assert_one_line(self.start(path, daemon=daemon), [
                f"{path}:2: [cache] max_entries must be an integer, not a string",
                f"{path}:4: [server] workers must be between 1 and 64, not 0",
            ])

    def test_busy_udp_port(self) -> None:
        """A UDP port in use: one line naming address, port and protocol, in both modes."""
        port = self.busy(socket.SOCK_DGRAM)
        path = self.write_config(f'[server]\nlisten = ["127.0.0.1:{port}"]\n[forward]\nupstreams = []\n')
        for daemon in (False, True):
            self.assert_one_line(self.start(path, daemon=daemon),
                                 [f"cannot listen on 127.0.0.1:{port}/udp: address already in use"])

    def test_busy_tcp_port(self) -> None:
        """A TCP port in use (UDP free) is reported as such."""
        port = self.busy(socket.SOCK_STREAM)
        path = self.write_config(f'[server]\nlisten = ["127.0.0.1:{port}"]\n[forward]\nupstreams = []\n')
        self.assert_one_line(self.start(path, daemon=False),
                             [f"cannot listen on 127.0.0.1:{port}/tcp: address already in use"])


class WithoutConfigTests(unittest.TestCase):
    """No ``--config``: ./smartdns.toml when there is one, else a forward-only default."""

    def check_in(self, directory: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["check"])
        return code, out.getvalue(), err.getvalue()

    def test_empty_directory(self) -> None:
        """In a directory with no config and no zones/, the default loads: no local zones."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        code, out, err = self.check_in(directory)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("<defaults>: OK, 0 zones", out)

    def test_shipped_layout(self) -> None:
        """In a copy of the repository's root, the shipped smartdns.toml is the one read."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        shutil.copy(os.path.join(ROOT, "smartdns.toml"), directory)
        shutil.copytree(os.path.join(ROOT, "zones"), os.path.join(directory, "zones"))
        code, out, err = self.check_in(directory)
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"{os.path.join(directory, 'smartdns.toml')}: OK, 1 zones", out)


class OpenResolverWarningTests(unittest.TestCase):
    """Recursion for everyone is allowed, but said out loud: by check, and in the log at start."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.path = os.path.join(self.base, "smartdns.toml")
        with open(self.path, "w") as f:
            f.write('[access]\nrecursion = ["0.0.0.0/0"]\n[forward]\nupstreams = []\n[zones]\nwatch = false\n')

    def test_check_prints_a_warning_and_passes(self) -> None:
        """``smartdns check`` exits 0 and prints ``file:line: warning: ...``."""
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["check", "--config", self.path])
        self.assertEqual(code, 0)
        self.assertEqual(err.getvalue().splitlines(), [
            f"{self.path}:2: warning: [access] recursion: '0.0.0.0/0' makes this an open resolver: anyone who "
            "can reach it can have names forwarded, and use it in reflection attacks (RFC 5358); list your "
            "clients' networks instead"])

    def test_start_logs_the_warning(self) -> None:
        """The twistd entry logs each config warning once the service is composed."""
        from twisted.logger import capturedLogs

        from smartdns import tap
        from smartdns.config import load_config

        with capturedLogs() as events:
            tap.warn_about(load_config(self.path))
        self.assertEqual([e["log_level"].name for e in events], ["warn"])
        self.assertIn("open resolver", events[0]["problem"])
