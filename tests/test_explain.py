"""``smartdns explain``: the line and the prefixes that lost, recursion, policy rules with
file:line, where each local RRset comes from (base or overlay, file and line, wildcard, CNAME
steps), cached and forwarded names — from the files with no server running, and from a running
service over its control socket, which must give the same explanation and send nothing upstream.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any

from twisted.internet import defer, threads, utils
from twisted.trial import unittest

from smartdns import explain as explain_mod
from smartdns.config import parse_config
from smartdns.explain import Question, ServerAbsent, ask_server, explain_from_files, render_text
from smartdns.service import SmartDNSService
from smartdns.snapshot import build_snapshot
from tests.support import FakeUpstream, answer_a, query, write_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE_ZONE = """\
$TTL 300
@       IN SOA ns1 hostmaster 1 3600 600 86400 60
        IN NS  ns1
ns1     IN A   192.0.2.1
www     IN A   192.0.2.10
*.wild  IN A   192.0.2.20
alias   IN CNAME www.example.org.
chain   IN CNAME www
"""
OVERLAY_ZONE = """\
www     IN A   10.1.2.10
"""
CONFIG = """\
[server]
listen = ["127.0.0.1:0"]
control_socket = "{control}"

[zones]
watch = false

[lines]
vpn = ["10.0.0.0/8", "127.0.0.0/8"]
office = ["10.1.2.0/24", "127.0.0.2/32"]

[forward]
upstreams = ["{upstream}"]

[access]
recursion = ["10.0.0.0/8", "127.0.0.0/8"]

[[policy]]
names = ["blocked.example.com"]
action = "refuse"

[[policy]]
names = ["*.ads.example.com"]
action = "nxdomain"
lines = ["office"]
"""
POLICY_LINE = [n for n, text in enumerate(CONFIG.splitlines(), start=1) if text == "[[policy]]"][1]


def write_fixture(case: unittest.TestCase, upstream: str = "127.0.0.1:5399", control: str = "") -> str:
    """The config and zones in a fresh directory; the config's path."""
    base = os.path.abspath(case.mktemp())
    write_tree(base, {
        "smartdns.toml": CONFIG.format(control=control, upstream=upstream),
        "zones/example.com.zone": BASE_ZONE,
        "zones/office/example.com.zone": OVERLAY_ZONE,
    })
    return os.path.join(base, "smartdns.toml")


def from_files(config_path: str, name: str, rtype: str, client: str) -> dict[str, Any]:
    """The explanation with no server, through JSON as the command prints it."""
    report = explain_from_files(config_path, Question.parse(name, rtype, client))
    return dict(json.loads(json.dumps(report)))


def short_socket_path(case: unittest.TestCase) -> str:
    """A control socket path short enough for AF_UNIX (trial's temp paths are too long)."""
    directory = tempfile.mkdtemp(prefix="smartdns-explain-")
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, "control.sock")


class ExplainFromFilesTests(unittest.TestCase):
    """No server running: the explanation comes from the files."""

    def setUp(self) -> None:
        self.config = write_fixture(self)
        self.zone_file = os.path.join(os.path.dirname(self.config), "zones", "example.com.zone")
        self.overlay_file = os.path.join(os.path.dirname(self.config), "zones", "office", "example.com.zone")

    def test_longest_prefix_wins_and_the_shorter_one_is_shown_as_lost(self) -> None:
        """10.1.2.3 is in office by 10.1.2.0/24; vpn's 10.0.0.0/8 also contains it and lost."""
        report = from_files(self.config, "www.example.com", "A", "10.1.2.3")
        self.assertEqual(report["line"], {"name": "office", "cidr": "10.1.2.0/24",
                                          "lost": [{"line": "vpn", "cidr": "10.0.0.0/8", "why": "shorter prefix"}]})
        self.assertEqual(report["recursion"], {"allowed": True, "network": "10.0.0.0/8", "offered": True})

    def test_client_in_no_line_sees_the_base_and_may_not_recurse(self) -> None:
        """A client outside every line gets the base zone's record and no recursion."""
        report = from_files(self.config, "www.example.com", "A", "192.0.2.99")
        self.assertEqual(report["line"], {"name": None, "cidr": None, "lost": []})
        self.assertEqual(report["recursion"]["allowed"], False)
        (step,) = report["steps"]
        self.assertEqual((step["stage"], step["view"]), ("local", "base"))
        (record,) = step["records"]
        self.assertEqual((record["origin"], record["file"], record["line"]), ("base", self.zone_file, 5))
        self.assertIn("www.example.com. 300 IN A 192.0.2.10", report["answer"])
        self.assertIn("flags QR AA RD\n", report["answer"])

    def test_overlay_rrset_names_the_overlay_file_and_line(self) -> None:
        """An office client's www comes from the office overlay, line 1."""
        report = from_files(self.config, "www.example.com", "A", "10.1.2.3")
        (step,) = report["steps"]
        self.assertEqual(step["view"], "line office")
        (record,) = step["records"]
        self.assertEqual((record["origin"], record["file"], record["line"]), ("overlay", self.overlay_file, 1))
        self.assertIn("www.example.com. 300 IN A 10.1.2.10", report["answer"])

    def test_a_view_made_only_for_a_bumped_serial_shows_the_base(self) -> None:
        """A line with no overlay whose view exists only to serve a bumped SOA serial (the
        journal's rule for [[transfer]] views) is explained as the base, file and line."""
        import dataclasses

        from smartdns import wire
        from smartdns.authority import Authority
        from smartdns.config import load_config
        from smartdns.journal import _stamped_view
        snap = build_snapshot(load_config(self.config))
        origin = wire.from_text("example.com.")
        stamped = _stamped_view(snap.base_views[origin], 2)
        snap = dataclasses.replace(snap, views={**snap.views, (origin, "vpn"): stamped})
        qname = wire.from_text("www.example.com.")
        result = Authority().lookup(snap, "vpn", qname, wire.A, True)
        assert result is not None
        described = explain_mod._describe_local(snap, "vpn", qname, wire.A, result, explain_mod._Locator(snap))
        self.assertEqual(described["view"], "base")
        self.assertEqual([(r["origin"], r["file"], r["line"]) for r in described["records"]],
                         [("base", self.zone_file, 5)])
        office = explain_mod._describe_local(snap, "office", qname, wire.A, Authority().lookup(
            snap, "office", qname, wire.A, True), explain_mod._Locator(snap))   # type: ignore[arg-type]
        self.assertEqual(office["view"], "line office")

    def test_policy_match_names_its_file_and_line(self) -> None:
        """A wildcard policy for the office line answers NXDOMAIN; the chain is not asked."""
        report = from_files(self.config, "x.ads.example.com", "A", "10.1.2.3")
        self.assertEqual(report["policy"]["action"], "nxdomain")
        (rule,) = report["policy"]["matched"]
        self.assertEqual(rule["where"], f"{self.config}:{POLICY_LINE}")
        self.assertEqual((rule["applies"], rule["wins"], rule["names"]), (True, True, ["*.ads.example.com"]))
        self.assertEqual(report["steps"], [])
        self.assertIn("rcode NXDOMAIN", report["answer"])

    def test_policy_for_another_line_is_shown_as_not_applying(self) -> None:
        """The same name from a vpn client: the rule matches by name but not by line."""
        report = from_files(self.config, "x.ads.example.com", "A", "10.5.0.1")
        (rule,) = report["policy"]["matched"]
        self.assertEqual((rule["applies"], rule["wins"]), (False, False))
        self.assertEqual(rule["why_not"], "line vpn not in ['office']")
        self.assertIsNone(report["policy"]["action"])

    def test_wildcard_step(self) -> None:
        """A name under *.wild is answered by the wildcard, owner rewritten, file line 6."""
        report = from_files(self.config, "a.b.wild.example.com", "A", "10.9.9.9")
        (step,) = report["steps"]
        (record,) = step["records"]
        self.assertEqual((record["wildcard"], record["line"]), ("*.wild.example.com.", 6))
        self.assertEqual([s["kind"] for s in step["steps"]], ["wildcard"])
        self.assertIn("a.b.wild.example.com. 300 IN A 192.0.2.20", report["answer"])

    def test_cname_inside_the_zone_to_overlay_data(self) -> None:
        """chain → www (base CNAME, line 8), then www from the office overlay."""
        report = from_files(self.config, "chain.example.com", "A", "10.1.2.3")
        (step,) = report["steps"]
        origins = [(r["origin"], r["line"]) for r in step["records"]]
        self.assertEqual(origins, [("base", 8), ("overlay", 1)])
        self.assertEqual([(s["kind"], s["target"]) for s in step["steps"]], [("cname", "www.example.com.")])

    def test_cname_leaving_the_zone_would_be_forwarded(self) -> None:
        """alias → www.example.org.: the local CNAME, then the upstream that would be asked; no
        answer is made up."""
        report = from_files(self.config, "alias.example.com", "A", "10.1.2.3")
        local, upstream = report["steps"]
        self.assertEqual([s["kind"] for s in local["steps"]], ["cname", "leaves-zone"])
        self.assertEqual((upstream["stage"], upstream["name"], upstream["upstreams"], upstream["cache"]),
                         ("upstream", "www.example.org.", ["127.0.0.1:5399"], "not cached"))
        self.assertIsNone(report["answer"])
        self.assertEqual(report["forward"], upstream)

    def test_cname_leaving_the_zone_for_a_client_without_recursion(self) -> None:
        """Without recursion the chain ends with the CNAME, and that is the answer."""
        report = from_files(self.config, "alias.example.com", "A", "192.0.2.99")
        self.assertEqual([s["stage"] for s in report["steps"]], ["local"])
        self.assertIsNone(report["forward"])
        self.assertIn("alias.example.com. 300 IN CNAME www.example.org.", report["answer"])

    def test_forwarded_name_not_cached(self) -> None:
        """A name outside the zones: the default pool would be asked."""
        report = from_files(self.config, "example.net", "AAAA", "127.0.0.1")
        (step,) = report["steps"]
        self.assertEqual((step["stage"], step["pool"], step["type"]), ("upstream", "default", "AAAA"))
        self.assertIsNone(report["answer"])

    def test_bad_question_parts_are_reported(self) -> None:
        """A bad address or type is one clear error."""
        self.assertRaises(explain_mod.ExplainError, Question.parse, "x.example", "A", "10.0.0.300")
        self.assertRaises(explain_mod.ExplainError, Question.parse, "x.example", "NOPE", "10.0.0.1")

    def test_text_rendering(self) -> None:
        """The text form shows the line, the lost prefix, the file:line and the answer."""
        text = render_text(from_files(self.config, "www.example.com", "A", "10.1.2.3"))
        self.assertIn("line:       office, chosen by 10.1.2.0/24", text)
        self.assertIn("  lost:     vpn 10.0.0.0/8 (shorter prefix)", text)
        self.assertIn(f"overlay, {self.overlay_file}:1", text)
        self.assertIn("  www.example.com. 300 IN A 10.1.2.10", text)

    def test_same_prefix_in_two_lines_goes_to_the_line_listed_first(self) -> None:
        """A tie: the line listed first wins, the other is shown as lost for that reason."""
        base = os.path.dirname(self.config)
        text = CONFIG.format(control="", upstream="127.0.0.1:5399").replace(
            'office = ["10.1.2.0/24", "127.0.0.2/32"]', 'office = ["10.1.2.0/24", "127.0.0.2/32"]\nlab = ["10.1.2.0/24"]')
        write_tree(base, {"tie.toml": text})
        report = from_files(os.path.join(base, "tie.toml"), "www.example.com", "A", "10.1.2.3")
        self.assertEqual(report["line"]["name"], "office")
        self.assertEqual(report["line"]["lost"], [{"line": "lab", "cidr": "10.1.2.0/24", "why": "same prefix, listed after it"},
                                                  {"line": "vpn", "cidr": "10.0.0.0/8", "why": "shorter prefix"}])

    def test_no_server_on_the_socket_is_absent(self) -> None:
        """A socket path with nothing there means: answer from the files."""
        self.assertRaises(ServerAbsent, ask_server, short_socket_path(self),
                          Question.parse("x.example", "A", "10.0.0.1"))


class ExplainCommandTests(unittest.TestCase):
    """The command line, run as a child process."""

    def run_cli(self, *args: str) -> tuple[int, str, str]:
        """``python -m smartdns explain ARGS`` from this checkout: (status, stdout, stderr)."""
        import subprocess
        env = dict(os.environ, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-m", "smartdns", "explain", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr

    def test_json_from_files(self) -> None:
        """``--json`` prints one JSON object; without a running server it says so."""
        config = write_fixture(self)
        code, out, err = self.run_cli("--config", config, "www.example.com", "A", "--from", "10.1.2.3", "--json")
        self.assertEqual((code, err), (0, ""))
        report = json.loads(out)
        self.assertEqual(report["line"]["name"], "office")
        self.assertTrue(report["explained_by"].startswith("files"))

    def test_text_from_files_and_a_bad_address(self) -> None:
        """The text form; a bad --from is exit status 2 with one line."""
        config = write_fixture(self)
        code, out, _err = self.run_cli("--config", config, "x.wild.example.com", "--from", "10.9.9.9")
        self.assertEqual(code, 0)
        self.assertIn("wildcard *.wild.example.com.", out)
        code, out, err = self.run_cli("--config", config, "x.example", "--from", "nowhere")
        self.assertEqual((code, out, err), (2, "", "--from 'nowhere' is not an IP address\n"))


class ExplainRunningServerTests(unittest.TestCase):
    """A running service answers over its control socket, from its own cache, asking nobody."""

    def start(self) -> tuple[SmartDNSService, FakeUpstream, str, str]:
        """The service with a control socket and a fake upstream: (service, upstream, socket, config)."""
        upstream = FakeUpstream(lambda q, _transport: answer_a(q, ["198.51.100.7"], ttl=300)).start(self)
        control = short_socket_path(self)
        config_path = write_fixture(self, upstream=upstream.address, control=control)
        with open(config_path, encoding="utf-8") as handle:
            config = parse_config(handle.read(), config_path)
        from twisted.internet import reactor
        service = SmartDNSService(config, build_snapshot(config), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service, upstream, control, config_path

    def ask(self, control: str, name: str, rtype: str, client: str) -> defer.Deferred[dict[str, Any]]:
        """The server's explanation, asked from a thread so the reactor keeps serving."""
        return threads.deferToThread(ask_server, control, Question.parse(name, rtype, client))

    @defer.inlineCallbacks
    def test_cached_forwarded_name_and_nothing_sent(self) -> Any:
        """After a real query fills the cache, explain shows the entry and its remaining TTL;
        it sends nothing upstream and leaves the server's counters alone."""
        service, upstream, control, _config = self.start()
        host, port = service.addresses()[0]
        yield query(host, port, "cached.example.net", "A")
        self.assertEqual(len(upstream.queries), 1)
        before = dict(service.stats())
        report = yield self.ask(control, "cached.example.net", "A", "127.0.0.1")
        (step,) = report["steps"]
        self.assertEqual((step["stage"], step["rcode"], step["ttl_stored"]), ("cache", "NOERROR", 300))
        self.assertTrue(0 < step["ttl_remaining"] <= 300)
        self.assertEqual(step["records"][0].split()[-1], "198.51.100.7")
        self.assertIn("cached.example.net. ", report["answer"])
        self.assertIn("IN A 198.51.100.7", report["answer"])
        self.assertIsNone(report["forward"])
        self.assertEqual(len(upstream.queries), 1)
        self.assertEqual(dict(service.stats()), before)

    @defer.inlineCallbacks
    def test_uncached_forwarded_name_is_not_sent(self) -> Any:
        """A name nobody asked yet: the upstream that would be asked, and no query sent."""
        _service, upstream, control, _config = self.start()
        report = yield self.ask(control, "fresh.example.net", "A", "10.1.2.3")
        (step,) = report["steps"]
        self.assertEqual((step["stage"], step["upstreams"]), ("upstream", [upstream.address]))
        self.assertIsNone(report["answer"])
        self.assertEqual(upstream.queries, [])

    @defer.inlineCallbacks
    def test_cname_leaving_the_zone_into_the_cache(self) -> Any:
        """alias → www.example.org., cached by an earlier query: the local CNAME, then the
        cache entry, and the joined answer."""
        service, upstream, control, _config = self.start()
        host, port = service.addresses()[0]
        yield query(host, port, "www.example.org", "A")
        report = yield self.ask(control, "alias.example.com", "A", "10.1.2.3")
        self.assertEqual([s["stage"] for s in report["steps"]], ["local", "cache"])
        self.assertIn("alias.example.com. 300 IN CNAME www.example.org.", report["answer"])
        self.assertIn("IN A 198.51.100.7", report["answer"])
        self.assertEqual(len(upstream.queries), 1)

    @defer.inlineCallbacks
    def test_same_explanation_as_from_the_files(self) -> Any:
        """For local data the server and the files explain alike: line, policy, steps, answer."""
        _service, _upstream, control, config = self.start()
        for name, client in (("www.example.com", "10.1.2.3"), ("x.ads.example.com", "10.1.2.3"),
                             ("chain.example.com", "127.0.0.2"), ("q.wild.example.com", "192.0.2.1")):
            served = yield self.ask(control, name, "A", client)
            self.assertEqual(served, from_files(config, name, "A", client))

    @defer.inlineCallbacks
    def test_command_line_against_the_running_server(self) -> Any:
        """``smartdns explain --json`` as a child process reaches the server's socket."""
        service, _upstream, _control, config = self.start()
        host, port = service.addresses()[0]
        yield query(host, port, "cached.example.net", "A")
        env = dict(os.environ, PYTHONPATH=ROOT)
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ("-m", "smartdns", "explain", "--config", config, "cached.example.net", "--from",
                             "127.0.0.1", "--json"), env=env, path=ROOT)
        self.assertEqual((code, err), (0, b""))
        report = json.loads(out)
        self.assertTrue(report["explained_by"].startswith("running server"))
        self.assertEqual(report["steps"][0]["stage"], "cache")

    @defer.inlineCallbacks
    def test_bad_request_is_an_error_line(self) -> Any:
        """A malformed explain request gets ``error ...``, not a crash."""
        _service, _upstream, control, _config = self.start()

        def raw() -> str:
            import socket
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(control)
                sock.sendall(b'explain {"name": "x.example", "type": "A", "from": "no"}\n')
                return sock.makefile().read()

        reply = yield threads.deferToThread(raw)
        self.assertEqual(reply, "error --from 'no' is not an IP address\n")

