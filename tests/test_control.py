"""The control socket cannot hurt: nothing but a stale socket is replaced, a running server keeps
its socket, it is made before twistd drops privileges and belongs to the ``--uid`` user.

Real Unix sockets throughout; the startup behaviour is checked on real ``twistd`` processes
(each with a timeout), polled (``deferLater``, never sleeping) until they answer.
"""
from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Callable

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from smartdns import cli
from smartdns.control import ControlService, claim, stats_report
from smartdns.errors import ControlSocketError
from smartdns.watch import ControlFactory
from tests.support import write_tree
from tests.test_startup import ROOT, TWISTD, run

ZONE = "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n"
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
control_socket = "{control}"
[zones]
directory = "zones"
watch = false
[forward]
upstreams = []
"""
POLL_STEP_SECONDS = 0.05
POLL_LIMIT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0


@defer.inlineCallbacks
def poll(condition: Callable[[], Any], what: str) -> Any:
    """``condition()``'s first truthy value, checked every POLL_STEP_SECONDS while the reactor
    runs (``deferLater``: the test's process is never put to sleep); AssertionError after
    POLL_LIMIT_SECONDS."""
    deadline = time.monotonic() + POLL_LIMIT_SECONDS
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield task.deferLater(reactor, POLL_STEP_SECONDS, lambda: None)


def socket_directory(case: unittest.TestCase) -> str:
    """A fresh directory with a short path, for sockets (AF_UNIX paths are limited to 107
    bytes, which trial's temp paths exceed); removed at cleanup."""
    directory = tempfile.mkdtemp(prefix="smartdns-test-")
    os.chmod(directory, 0o755)
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def listening_socket(path: str) -> socket.socket:
    """A Unix socket listening at ``path`` (a stand-in for a running server)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock


def stale_socket(path: str) -> None:
    """A socket file at ``path`` with nobody listening (a killed server's)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


def as_user(user: pwd.struct_passwd, path: str, command: bytes) -> bytes:
    """What the control socket at ``path`` replies to ``command``, asked by a forked child
    running as ``user`` (a fork, not a new interpreter: this one may live where ``user`` cannot
    read, such as under /root)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child: never returns
        code = 1
        try:
            os.close(read_end)
            os.setgid(user.pw_gid)
            os.setgroups([])
            os.setuid(user.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(POLL_LIMIT_SECONDS)
                sock.connect(path)
                sock.sendall(command)
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    os.write(write_end, data)
            code = 0
        except BaseException as e:  # anything: report it through the pipe, then leave
            os.write(write_end, f"child failed: {e!r}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        chunks.append(pipe.read())
    os.waitpid(pid, 0)
    return b"".join(chunks)


class ClaimTests(unittest.TestCase):
    """`claim`: what may be at the path before the control socket is made."""

    def setUp(self) -> None:
        self.path = os.path.join(socket_directory(self), "control.sock")

    def test_nothing_there(self) -> None:
        """A free path is fine."""
        claim(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_regular_file_is_kept(self) -> None:
        """A regular file: refused with one line, and the file is untouched."""
        with open(self.path, "w") as f:
            f.write("important data\n")
        with self.assertRaises(ControlSocketError) as caught:
            claim(self.path)
        self.assertEqual(str(caught.exception),
                         f"control socket {self.path} exists and is not a socket; not touching it")
        with open(self.path) as f:
            self.assertEqual(f.read(), "important data\n")

    def test_directory_is_kept(self) -> None:
        """A directory is not a socket either."""
        os.makedirs(self.path)
        self.assertRaises(ControlSocketError, claim, self.path)
        self.assertTrue(os.path.isdir(self.path))

    def test_live_socket_is_kept(self) -> None:
        """A socket something answers on: refused, and the socket stays."""
        sock = listening_socket(self.path)
        self.addCleanup(sock.close)
        with self.assertRaises(ControlSocketError) as caught:
            claim(self.path)
        self.assertEqual(str(caught.exception), f"control socket {self.path} is in use by a running smartdns")
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))

    def test_stale_socket_is_replaced(self) -> None:
        """A socket nobody listens on (connect refused) is removed."""
        stale_socket(self.path)
        claim(self.path)
        self.assertFalse(os.path.exists(self.path))


class ControlServiceTests(unittest.TestCase):
    """The control socket's life in one process, on the real reactor."""

    def setUp(self) -> None:
        self.path = os.path.join(socket_directory(self), "control.sock")

    def service(self) -> ControlService:
        control = ControlService(reactor, self.path, ControlFactory(lambda reason: None))
        control.startService()
        return control

    @defer.inlineCallbacks
    def test_owner_only_and_removed_on_stop(self):
        """The socket is mode 0600, and stopping removes it."""
        control = self.service()
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o600)
        yield control.stopService()
        self.assertFalse(os.path.exists(self.path))

    @defer.inlineCallbacks
    def test_someone_elses_socket_is_not_removed_on_stop(self):
        """If the path was taken over meanwhile, stopping leaves the new socket alone."""
        control = self.service()
        os.unlink(self.path)
        other = listening_socket(self.path)
        self.addCleanup(other.close)
        inode = os.lstat(self.path).st_ino
        yield control.stopService()
        self.assertEqual(os.lstat(self.path).st_ino, inode)

    @defer.inlineCallbacks
    def test_a_file_put_there_is_not_removed_on_stop(self):
        """A regular file put at the path after start survives the stop."""
        control = self.service()
        os.unlink(self.path)
        with open(self.path, "w") as f:
            f.write("keep\n")
        yield control.stopService()
        with open(self.path) as f:
            self.assertEqual(f.read(), "keep\n")

    def test_second_service_is_refused(self):
        """A second service on the same path is refused while the first runs."""
        control = self.service()
        self.addCleanup(control.stopService)
        second = ControlService(reactor, self.path, ControlFactory(lambda reason: None))
        self.assertRaises(ControlSocketError, second.privilegedStartService)


class StatsReportTests(unittest.TestCase):
    """`stats_report`: every process's counters, summed and one by one."""

    def test_sums_and_processes(self) -> None:
        """Counters add up; generation is the first process's; a silent worker is listed."""
        report = stats_report([
            (0, 100, [("generation", 3), ("queries", 5), ("cache.hits", 1)]),
            (1, 101, [("generation", 1), ("queries", 7), ("cache.hits", 0), ("new.counter", 2)]),
            (2, 0, None),
        ])
        self.assertEqual(report["counters"], {"generation": 3, "queries": 12, "cache.hits": 1, "new.counter": 2})
        self.assertEqual([p["worker"] for p in report["processes"]], [0, 1])
        self.assertEqual(report["processes"][1], {"worker": 1, "pid": 101, "counters": {
            "generation": 1, "queries": 7, "cache.hits": 0, "new.counter": 2}})
        self.assertEqual(report["missing_workers"], [2])

    def test_serials_are_not_summed(self) -> None:
        """serial.ZONE and serial.ZONE/LINE are the first process's; each process keeps its own."""
        report = stats_report([
            (0, 100, [("generation", 2), ("serial.a.test", 7), ("serial.a.test/line1", 8)]),
            (1, 101, [("generation", 2), ("serial.a.test", 7), ("serial.a.test/line1", 8)]),
        ])
        self.assertEqual(report["counters"], {"generation": 2, "serial.a.test": 7, "serial.a.test/line1": 8})
        self.assertEqual(report["processes"][1]["counters"]["serial.a.test/line1"], 8)


class CheckTests(unittest.TestCase):
    """``smartdns check`` and the control socket."""

    def test_missing_directory(self) -> None:
        """A control socket in a directory that does not exist is reported, exit 1."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": CONFIG.format(control="run/missing/control.sock"),
                          "zones/a.test.zone": ZONE})
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["check", "--config", os.path.join(base, "smartdns.toml")])
        self.assertEqual(code, 1)
        self.assertEqual(err.getvalue().splitlines(), [
            f"{base}/smartdns.toml:3: [server] control_socket: directory '{base}/run/missing' does not exist"])


class TwistdControlSocketTests(unittest.TestCase):
    """Real twistd processes and the control socket."""

    timeout = 180

    def setUp(self) -> None:
        if not os.path.exists(TWISTD):
            raise unittest.SkipTest("twistd is not installed next to this Python")
        # Not under trial's temp directory: the socket path must be short, and the --uid test's
        # user must be able to reach the config and the socket.
        self.base = socket_directory(self)
        self.control = os.path.join(self.base, "control.sock")
        self.config = self.write_config("smartdns.toml")

    def write_config(self, name: str) -> str:
        write_tree(self.base, {name: CONFIG.format(control=self.control), "zones/a.test.zone": ZONE})
        return os.path.join(self.base, name)

    def twistd_args(self, config: str, *extra: str) -> list[str]:
        return [TWISTD, "-n", "--pidfile=", f"--logfile={config}.log", *extra, "smartdns", "--config", config]

    def start(self, config: str, *extra: str) -> subprocess.Popen[str]:
        """twistd in the foreground, stopped (SIGTERM, then waited for) at cleanup."""
        process = subprocess.Popen(self.twistd_args(config, *extra), cwd=self.base, text=True,
                                   env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self.stop, process)
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=STOP_TIMEOUT_SECONDS)

    def answers(self, process: subprocess.Popen[str]) -> bool:
        """Whether the control socket answers ``stats`` (fails the test if twistd ended)."""
        if process.poll() is not None:
            out, err = process.communicate()
            self.fail(f"twistd ended with {process.returncode}: {out}{err}")
        return self.cli("stats").returncode == 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "smartdns", *args, "--config", self.config], self.base)

    def assert_refused(self, result: subprocess.CompletedProcess[str], line: str) -> None:
        self.assertEqual((result.returncode, result.stderr.splitlines()), (1, [line]), result.stdout)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_regular_file_stops_the_start(self) -> None:
        """A regular file at the path: one line, exit 1, with and without -n; the file is kept."""
        with open(self.control, "w") as f:
            f.write("important data\n")
        line = f"control socket {self.control} exists and is not a socket; not touching it"
        self.assert_refused(run(self.twistd_args(self.config), self.base), line)
        daemon = [TWISTD, f"--logfile={self.base}/daemon.log", f"--pidfile={self.base}/daemon.pid", "smartdns",
                  "--config", self.config]
        self.assert_refused(run(daemon, self.base), line)
        with open(self.control) as f:
            self.assertEqual(f.read(), "important data\n")

    @defer.inlineCallbacks
    def test_second_instance_is_refused_and_the_first_keeps_its_socket(self):
        """A second server with the same control socket does not start; the first one's socket
        still answers, and goes away when the first one stops."""
        first = self.start(self.config)
        yield poll(lambda: self.answers(first), "the first server's control socket")
        inode = os.lstat(self.control).st_ino
        second = run(self.twistd_args(self.write_config("second.toml")), self.base)
        self.assert_refused(second, f"control socket {self.control} is in use by a running smartdns")
        self.assertEqual(os.lstat(self.control).st_ino, inode)
        reloaded = self.cli("reload")
        self.assertEqual(reloaded.returncode, 0, reloaded.stderr)
        self.assertIn("reload OK: generation 2", reloaded.stdout)
        self.stop(first)
        self.assertIn(first.returncode, (0, -signal.SIGTERM))    # twistd ends by its stop signal
        self.assertFalse(os.path.exists(self.control))

    @defer.inlineCallbacks
    def test_stats_show_served_serials(self):
        """``smartdns stats`` prints the serial served per zone and line, and --json holds it per
        process with the generation; after a reload that changes only line1's overlay (a
        [[transfer]] line) line1's serial is one more, the base's unchanged."""
        write_tree(self.base, {"zones/line1/a.test.zone": "www A 10.0.0.1\n"})
        with open(self.config, "a", encoding="utf-8") as handle:
            handle.write('[lines]\nline1 = ["10.1.0.0/16"]\n[[tsig]]\nname = "k1"\nsecret = "c2VjcmV0"\n'
                         '[[transfer]]\nkey = "k1"\nline = "line1"\n')
        server = self.start(self.config)
        yield poll(lambda: self.answers(server), "the control socket")
        text = self.cli("stats").stdout.splitlines()
        self.assertIn("serial.a.test 1", text)
        self.assertIn("serial.a.test/line1 1", text)
        write_tree(self.base, {"zones/line1/a.test.zone": "www A 10.0.0.2\n"})
        reloaded = self.cli("reload")
        self.assertIn("reload OK: generation 2", reloaded.stdout)
        report = json.loads(self.cli("stats", "--json").stdout)
        self.assertEqual([report["counters"][name] for name in ("generation", "serial.a.test", "serial.a.test/line1")],
                         [2, 1, 2])
        own = report["processes"][0]["counters"]
        self.assertEqual((own["generation"], own["serial.a.test/line1"]), (2, 2))

    @defer.inlineCallbacks
    def test_stale_socket_is_replaced(self):
        """A socket left by a killed server is replaced at start."""
        stale_socket(self.control)
        server = self.start(self.config)
        yield poll(lambda: self.answers(server), "the control socket")

    @defer.inlineCallbacks
    def test_uid_owns_the_socket_and_reload_works(self):
        """With ``--uid nobody --gid nogroup`` the socket is made before privileges are dropped,
        belongs to nobody, and nobody's ``smartdns reload`` gets the result."""
        if os.getuid() != 0:
            raise unittest.SkipTest("needs root, to switch to nobody")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user nobody") from None
        directory = ROOT
        while directory != "/":
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                raise unittest.SkipTest(f"{directory} is not searchable by nobody")
            directory = os.path.dirname(directory)
        server = self.start(self.config, "--uid", "nobody", "--gid", "nogroup")
        yield poll(lambda: self.answers(server), "the control socket")
        st = os.lstat(self.control)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (nobody.pw_uid, 0o600))
        self.assertTrue(as_user(nobody, self.control, b"reload\n").startswith(b"ok reload OK: generation 2"))
        self.stop(server)
        # nobody may not write the directory: the socket stays, stale, and the next start replaces it.
        again = self.start(self.config)
        yield poll(lambda: self.answers(again), "the restarted server's control socket")
