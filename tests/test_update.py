"""Tests for smartdns.update: RFC 2136 dynamic updates signed with [[update]] keys, written back to
the zone files; nsupdate and dig against the real service on loopback, BIND named as the oracle."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone
from twisted.internet import defer, threads, utils
from twisted.trial import unittest

from smartdns import wire
from smartdns.config import ConfigError, UpdateRule, parse_config
from smartdns.update import canonical_text, statements
from tests.support import start_server, write_tree

SECRET_BASE = "YmFzZS11cGRhdGUtc2VjcmV0"          # "base-update-secret"
SECRET_LINE = "bGluZTEtdXBkYXRlLXNlY3JldA=="      # "line1-update-secret"
SECRET_NONE = "bm8tdXBkYXRlLXNlY3JldA=="          # "no-update-secret"
KEYS = {"base-key": ("hmac-sha256", SECRET_BASE), "line1-key": ("hmac-sha512", SECRET_LINE),
        "other-key": ("hmac-sha256", SECRET_NONE)}

NSUPDATE = shutil.which("nsupdate")
NAMED = shutil.which("named") or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)
CHECKZONE = shutil.which("named-checkzone")

CONFIG = f"""
[forward]
upstreams = []
[lines]
line1 = ["127.0.0.3/32"]
[[tsig]]
name = "base-key"
secret = "{SECRET_BASE}"
[[tsig]]
name = "line1-key"
algorithm = "hmac-sha512"
key_file = "line1.key"
[[tsig]]
name = "other-key"
secret = "{SECRET_NONE}"
[[update]]
zone = "example.test"
key = "base-key"
[[update]]
zone = "example.test"
key = "line1-key"
line = "line1"
"""
LINE_KEY_FILE = f'key "line1-key" {{\n\talgorithm hmac-sha512;\n\tsecret "{SECRET_LINE}";\n}};\n'

BASE_ZONE = """\
; example.test: the base zone (this comment must survive updates)
$TTL 300
@       IN SOA ns1 hostmaster (
                2024010101 ; serial
                3600 600 86400 60 )
@       NS  ns1
ns1     A   192.0.2.1
www     A   192.0.2.10   ; the web server
        A   192.0.2.11
multi   A   192.0.2.20
        TXT "kept"
alias   CNAME www
"""
OVERLAY_ZONE = """\
; line1's view of example.test
www     A   10.0.0.10
"""


def keyring() -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({name: value for name, value in KEYS.items()})


class UpdateConfigTests(unittest.TestCase):
    """[[update]] rows: valid ones parse to UpdateRules, invalid ones to one exact file:line problem."""

    KEYS = '[[tsig]]\nname = "k1"\nsecret = "c2VjcmV0"\n'                           # lines 1-3
    ZONES = '[zones]\ndirectory = "zones"\n[lines]\nline1 = ["10.1.0.0/16"]\n'       # lines 4-7

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        write_tree(self.directory, {"zones/example.test.zone": BASE_ZONE, "secondary/.keep": ""})
        self.path = os.path.join(self.directory, "smartdns.toml")

    def parse(self, text: str) -> Any:
        return parse_config(self.KEYS + self.ZONES + text, self.path, resolv_conf=os.path.join(self.directory, "none"))

    def test_valid(self) -> None:
        """zone normalised, key and line kept; one zone may have a rule per key; default none."""
        self.assertEqual(self.parse("").updates, ())
        config = self.parse('[[update]]\nzone = "Example.TEST."\nkey = "K1"\n'
                            '[[tsig]]\nname = "k2"\nsecret = "c2VjcmV0"\n'
                            '[[update]]\nzone = "example.test"\nkey = "k2"\nline = "line1"\n')
        self.assertEqual(config.updates, (UpdateRule("example.test", "k1", None),
                                          UpdateRule("example.test", "k2", "line1")))

    def test_invalid(self) -> None:
        rows = [
            ('[[update]]\nkey = "k1"', "smartdns.toml:8: [[update]] zone is required"),
            ('[[update]]\nzone = "example.test"', "smartdns.toml:8: [[update]] key is required (the name of a [[tsig]] key)"),
            ('[[update]]\nzone = "example.test"\nkey = "k9"',
             "smartdns.toml:10: [[update]] key 'k9' is not a [[tsig]] key (configured: 'k1')"),
            ('[[update]]\nzone = "example.test"\nkey = "k1"\nline = "line9"',
             "smartdns.toml:11: [[update]] line 'line9' is not a configured line (configured: line1)"),
            ('[[update]]\nzone = "nothere.test"\nkey = "k1"',
             "smartdns.toml:9: [[update]] zone 'nothere.test' has no zone file '{dir}/zones/nothere.test.zone' "
             "(an update edits that file)"),
            ('[[update]]\nzone = "example.test"\nkey = "k1"\n[[update]]\nzone = "example.test."\nkey = "k1"\nline = "line1"',
             "smartdns.toml:13: [[update]] key 'k1' is listed twice for zone 'example.test' "
             "(a key updates one line's view of a zone)"),
            ('[[update]]\nzone = "example.test"\nkey = "k1"\nzones = []', "smartdns.toml:11: unknown key 'zones' in [[update]]"),
            ('[server]\nworkers = 2\n[[update]]\nzone = "example.test"\nkey = "k1"',
             "smartdns.toml:10: [[update]] is not supported with [server] workers above 1 "
             "(one process must write the zone files; set workers = 1)"),
            ('[zones.x]\n', None),
        ]
        mismatches = []
        for text, expected in rows:
            if expected is None:
                continue
            try:
                self.parse(text)
            except ConfigError as e:
                got = str(e).replace(self.directory, "{dir}").replace(os.path.dirname(self.path) + "/", "")
                if "{dir}/" + expected not in got.splitlines():
                    mismatches.append(f"{text!r}: got {got!r}, expected {expected!r}")
                continue
            mismatches.append(f"{text!r}: parsed, expected {expected!r}")
        if mismatches:
            self.fail("\n".join(mismatches))

    def test_secondary_zone_refused(self) -> None:
        """A zone that is a [[secondary]] is updated at its primary, not here."""
        with self.assertRaises(ConfigError) as caught:
            self.parse('[[secondary]]\nzone = "example.test"\nprimaries = ["192.0.2.1"]\n'
                       '[[update]]\nzone = "example.test"\nkey = "k1"\n')
        self.assertIn("[[update]] zone 'example.test' is a [[secondary]]: update it at its primary", str(e_text(caught)))


def e_text(caught: Any) -> str:
    return str(caught.exception)


class StatementTests(unittest.TestCase):
    """The zone-file statement splitter the in-place editor relies on."""

    def test_parentheses_quotes_comments(self) -> None:
        lines = ["; c\n", "@ SOA a b (\n", " 1 ; (\n", " 2 3 4 5 )\n", 'x TXT "(" ; )\n', "\n", "  A 1.2.3.4\n"]
        self.assertEqual(statements(lines), {1: 3, 4: 4, 6: 6})


def run_nsupdate(port: int, script: str, *auth: str, tcp: bool = False) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """nsupdate (BIND's client) with ``auth`` (-y or -k) and ``script`` on stdin: (out, err, status)."""
    assert NSUPDATE is not None
    text = f"server 127.0.0.1 {port}\n" + textwrap.dedent(script).lstrip("\n") + "send\n"
    args = [*auth, *(["-v"] if tcp else [])]

    def run() -> tuple[bytes, bytes, int]:
        done = subprocess.run([NSUPDATE, *args], input=text.encode(), capture_output=True, timeout=20)
        return done.stdout, done.stderr, done.returncode

    return threads.deferToThread(run)


def ask(port: int, name: str, rdtype: str, source: str = "127.0.0.1") -> defer.Deferred[tuple[str, list[str]]]:
    """(rcode, sorted 'ttl rdata') of a dnspython query from ``source``."""
    def run() -> tuple[str, list[str]]:
        reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3, source=source)
        return (dns.rcode.to_text(reply.rcode()),
                sorted(f"{rrset.ttl} {rd}" for rrset in reply.answer if rrset.rdtype == dns.rdatatype.from_text(rdtype)
                       for rd in rrset))
    return threads.deferToThread(run)


class NsupdateTests(unittest.TestCase):
    """The real service on loopback, updated by nsupdate with each key, read by dnspython and dig."""

    def setUp(self) -> None:
        if NSUPDATE is None:
            raise unittest.SkipTest("nsupdate is not installed (apt-get install bind9-dnsutils)")
        self.service, self.host, self.port = start_server(
            self, CONFIG, files={"line1.key": LINE_KEY_FILE},
            zones={"example.test.zone": BASE_ZONE, "line1/example.test.zone": OVERLAY_ZONE})
        self.zones = self.service.config.zones.directory
        self.base_file = os.path.join(self.zones, "example.test.zone")
        self.line_file = os.path.join(self.zones, "line1", "example.test.zone")
        self.key_file = os.path.join(os.path.dirname(self.service.config.path), "line1.key")

    def read(self, path: str) -> str:
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def base_key(self) -> tuple[str, ...]:
        return ("-y", f"hmac-sha256:base-key:{SECRET_BASE}")

    @defer.inlineCallbacks
    def test_base_add_delete_and_file(self) -> None:
        """Add and delete with the base key: both clients see it, the file keeps its comments and
        layout, the serial went up by one, named-checkzone accepts the file."""
        out, err, status = yield run_nsupdate(self.port, """
            zone example.test
            update add new.example.test. 600 A 192.0.2.50
            update add new.example.test. 600 TXT "hello world"
            update delete www.example.test. A 192.0.2.11
            update delete multi.example.test. TXT
            """, *self.base_key())
        self.assertEqual(status, 0, err.decode())
        for source in ("127.0.0.1", "127.0.0.3"):
            got = yield ask(self.port, "new.example.test", "A", source)
            self.assertEqual(got, ("NOERROR", ["600 192.0.2.50"]))
        self.assertEqual((yield ask(self.port, "www.example.test", "A")), ("NOERROR", ["300 192.0.2.10"]))
        self.assertEqual((yield ask(self.port, "www.example.test", "A", "127.0.0.3")), ("NOERROR", ["300 10.0.0.10"]))
        self.assertEqual((yield ask(self.port, "multi.example.test", "TXT")), ("NOERROR", []))
        self.assertEqual((yield ask(self.port, "example.test", "SOA"))[1][0].split()[3], "2024010102")
        text = self.read(self.base_file)
        self.assertIn("; example.test: the base zone (this comment must survive updates)\n", text)
        self.assertIn("www     A   192.0.2.10   ; the web server\n", text)
        self.assertIn("                2024010102 ; serial\n", text)
        self.assertNotIn("192.0.2.11", text)
        self.assertNotIn('"kept"', text)
        self.assertIn("new.example.test. 600 IN A 192.0.2.50\n", text)
        self.assertEqual([name for name in os.listdir(self.zones) if name.startswith(".")], [])   # no temp left
        if CHECKZONE:
            check = yield threads.deferToThread(subprocess.run, [CHECKZONE, "example.test", self.base_file],
                                                capture_output=True)
            self.assertEqual(check.returncode, 0, check.stdout.decode())
