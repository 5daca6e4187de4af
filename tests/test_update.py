"""Tests for smartdns.update: RFC 2136 dynamic updates signed with [[update]] keys, written back to
the zone files; nsupdate and dig against the real service on loopback, BIND named as the oracle."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone
from twisted.internet import defer, threads
from twisted.trial import unittest

from smartdns import wire
from smartdns.config import ConfigError, UpdateRule, parse_config
from smartdns.update import statements
from tests.support import dig, dig_available, start_server, write_tree

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
        """Each invalid row gives exactly its problem, at its line."""
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
        ]
        mismatches = []
        for text, expected in rows:
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
        self.assertIn("[[update]] zone 'example.test' is a [[secondary]]: update it at its primary",
                      str(caught.exception))


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

    @defer.inlineCallbacks
    def test_line_update_with_key_file(self) -> None:
        """nsupdate -k with line1's key: only line1's clients see the change, the overlay file
        holds it (its comment kept), the base file only got its serial raised (the line's SOA
        comes from it), and both serve the new serial."""
        before = self.read(self.base_file)
        out, err, status = yield run_nsupdate(self.port, """
            zone example.test
            update add line-only.example.test. 120 A 10.0.0.99
            update add www.example.test. 300 A 10.0.0.11
            """, "-k", self.key_file)
        self.assertEqual(status, 0, err.decode())
        self.assertEqual((yield ask(self.port, "line-only.example.test", "A", "127.0.0.3")), ("NOERROR", ["120 10.0.0.99"]))
        self.assertEqual((yield ask(self.port, "line-only.example.test", "A")), ("NXDOMAIN", []))
        if dig_available():
            seen = yield dig(self.host, self.port, "-b", "127.0.0.3", "+short", "line-only.example.test", "A")
            self.assertEqual(seen.decode().split(), ["10.0.0.99"])
            seen = yield dig(self.host, self.port, "+short", "line-only.example.test", "A")
            self.assertEqual(seen.decode().split(), [])
        self.assertEqual((yield ask(self.port, "www.example.test", "A", "127.0.0.3")),
                         ("NOERROR", ["300 10.0.0.10", "300 10.0.0.11"]))
        self.assertEqual((yield ask(self.port, "www.example.test", "A")), ("NOERROR", ["300 192.0.2.10", "300 192.0.2.11"]))
        overlay = self.read(self.line_file)
        self.assertEqual(overlay, OVERLAY_ZONE + "line-only.example.test. 120 IN A 10.0.0.99\n"
                                                 "www.example.test. 300 IN A 10.0.0.11\n")
        self.assertEqual(self.read(self.base_file), before.replace("2024010101 ; serial", "2024010102 ; serial"))
        for source in ("127.0.0.1", "127.0.0.3"):
            self.assertEqual((yield ask(self.port, "example.test", "SOA", source))[1][0].split()[3], "2024010102")

    @defer.inlineCallbacks
    def test_line_cannot_remove_base_data(self) -> None:
        """A line's key may delete what its overlay holds, not an RRset it takes from the base
        (REFUSED, nothing written); a CNAME may replace base data for the line."""
        before = (self.read(self.base_file), self.read(self.line_file))
        for script in ("update delete multi.example.test. A",            # a base RRset
                       "update delete www.example.test. A 10.0.0.10"):    # the line's only www A (the base has www A)
            out, err, status = yield run_nsupdate(self.port, f"zone example.test\n{script}\n", "-k", self.key_file)
            self.assertIn("update failed: REFUSED", err.decode() + out.decode(), script)
        self.assertEqual((self.read(self.base_file), self.read(self.line_file)), before)
        out, err, status = yield run_nsupdate(self.port, """
            zone example.test
            update delete multi.example.test.
            update add multi.example.test. 60 CNAME www.example.test.
            """, "-k", self.key_file)
        self.assertEqual(status, 0, err.decode())
        self.assertEqual((yield ask(self.port, "multi.example.test", "CNAME", "127.0.0.3")),
                         ("NOERROR", ["60 www.example.test."]))
        self.assertEqual((yield ask(self.port, "multi.example.test", "A")), ("NOERROR", ["300 192.0.2.20"]))
        self.assertEqual(self.read(self.line_file), OVERLAY_ZONE + "multi.example.test. 60 IN CNAME www.example.test.\n")
        out, err, status = yield run_nsupdate(self.port, """
            zone example.test
            update delete multi.example.test. CNAME
            update add multi.example.test. 300 A 192.0.2.20
            update add multi.example.test. 300 TXT "kept"
            """, "-k", self.key_file)
        self.assertEqual(status, 0, err.decode())       # back to the base's data: the overlay node goes
        self.assertEqual(self.read(self.line_file), OVERLAY_ZONE)
        self.assertEqual((yield ask(self.port, "multi.example.test", "A", "127.0.0.3")), ("NOERROR", ["300 192.0.2.20"]))

    @defer.inlineCallbacks
    def test_prerequisites(self) -> None:
        """Prerequisites that fail get their rcode and change nothing; ones that hold let the
        update through (nsupdate's prereq commands, over UDP and TCP)."""
        before = self.read(self.base_file)
        failing = [("prereq nxdomain www.example.test.", "YXDOMAIN"),
                   ("prereq yxdomain nothere.example.test.", "NXDOMAIN"),
                   ("prereq nxrrset www.example.test. A", "YXRRSET"),
                   ("prereq yxrrset www.example.test. MX", "NXRRSET"),
                   ("prereq yxrrset www.example.test. A 192.0.2.10", "NXRRSET")]   # value-dependent: both records
        for prereq, rcode in failing:
            out, err, status = yield run_nsupdate(
                self.port, f"zone example.test\n{prereq}\nupdate add x.example.test. 60 A 192.0.2.1\n", *self.base_key())
            self.assertNotEqual(status, 0, prereq)
            self.assertIn(f"update failed: {rcode}", err.decode() + out.decode(), prereq)
        self.assertEqual(self.read(self.base_file), before)
        self.assertEqual((yield ask(self.port, "x.example.test", "A")), ("NXDOMAIN", []))
        out, err, status = yield run_nsupdate(self.port, """
            zone example.test
            prereq nxdomain x.example.test.
            prereq yxdomain www.example.test.
            prereq yxrrset www.example.test. A
            prereq nxrrset www.example.test. MX
            prereq yxrrset www.example.test. A 192.0.2.10
            prereq yxrrset www.example.test. A 192.0.2.11
            update add x.example.test. 60 A 192.0.2.1
            """, *self.base_key(), tcp=True)
        self.assertEqual(status, 0, err.decode())
        self.assertEqual((yield ask(self.port, "x.example.test", "A")), ("NOERROR", ["60 192.0.2.1"]))

    @defer.inlineCallbacks
    def test_prerequisites_see_the_keys_view(self) -> None:
        """Prerequisites are checked against what the key's line is served: line1's www is its
        overlay's record, the base's www are the base file's two."""
        script = "zone example.test\nprereq yxrrset www.example.test. A 10.0.0.10\nupdate add p.example.test. 60 TXT ok\n"
        out, err, status = yield run_nsupdate(self.port, script, *self.base_key())
        self.assertIn("update failed: NXRRSET", err.decode() + out.decode())
        out, err, status = yield run_nsupdate(self.port, script, "-k", self.key_file)
        self.assertEqual(status, 0, err.decode())
        self.assertEqual((yield ask(self.port, "p.example.test", "TXT", "127.0.0.3")), ("NOERROR", ['60 "ok"']))

    @defer.inlineCallbacks
    def test_refused_updates_change_nothing(self) -> None:
        """Unsigned, unknown key, wrong secret, a key with no [[update]] for the zone, another
        zone, a record outside the zone: BIND's answers, and the files stay byte for byte."""
        before = (self.read(self.base_file), self.read(self.line_file))
        ring = keyring()
        wrong = dns.tsigkeyring.from_text({"base-key": SECRET_NONE, "stranger": SECRET_NONE})
        cases = [(None, None, "example.test", "a.example.test.", "REFUSED", "unsigned"),
                 (wrong, "stranger", "example.test", "a.example.test.", "NOTAUTH", "unverifiable"),
                 (wrong, "base-key", "example.test", "a.example.test.", "NOTAUTH", "unverifiable"),
                 (ring, "other-key", "example.test", "a.example.test.", "REFUSED", "signed"),
                 (ring, "base-key", "nothere.test", "a.nothere.test.", "NOTAUTH", "signed"),
                 (ring, "base-key", "www.example.test", "www.example.test.", "NOTAUTH", "signed"),
                 (ring, "base-key", "example.test", "a.elsewhere.test.", "NOTZONE", "signed"),
                 (None, None, "nothere.test", "a.nothere.test.", "NOTAUTH", "unsigned")]
        for key_ring, key, zone, name, rcode, signed in cases:
            update = dns.update.UpdateMessage(zone)
            update.add(name, 60, "A", "192.0.2.1")
            if key is not None:
                update.use_tsig(key_ring, key, algorithm=KEYS.get(key, ("hmac-sha256",))[0])
            got = yield threads.deferToThread(exchange, update, self.port)
            self.assertEqual(got, (rcode, signed + " QR"), (key, zone, name))
        self.assertEqual((self.read(self.base_file), self.read(self.line_file)), before)
        self.assertEqual(self.service.updates.applied, 0)


def exchange_all(messages: list[dns.message.Message], port: int) -> list[tuple[str, str]]:
    """Send every message over UDP from its own socket, then read each answer (as `exchange`)."""
    import socket
    sockets = []
    for message in messages:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(10)
        sock.sendto(message.to_wire(), ("127.0.0.1", port))
        sockets.append(sock)
    out = []
    for message, sock in zip(messages, sockets):
        with sock:
            reply = dns.message.from_wire(sock.recv(65535), keyring=message.keyring, request_mac=message.mac)
        out.append((dns.rcode.to_text(reply.rcode()), ("signed " if reply.had_tsig else "unsigned ")
                    + dns.flags.to_text(reply.flags)))
    return out


def exchange(message: dns.message.Message, port: int, opt: bool = False) -> tuple[str, str]:
    """Send over UDP; (rcode, 'signed' | 'unsigned' | 'unverifiable' and the flags) of the answer."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(message.to_wire(), ("127.0.0.1", port))
        data = sock.recv(65535)
    try:
        reply = dns.message.from_wire(data, keyring=message.keyring, request_mac=message.mac)
        signed = "signed" if reply.had_tsig else "unsigned"
    except dns.exception.DNSException:
        reply, signed = dns.message.from_wire(data, keyring=False), "unverifiable"
    shown = signed + " " + dns.flags.to_text(reply.flags)
    if opt:                          # the OPT record and the zone section echoed, as BIND does
        shown += f" edns={reply.edns} payload={reply.payload if reply.edns >= 0 else 0} zone={len(reply.question)}"
    return dns.rcode.to_text(reply.rcode()), shown


def oracle_messages() -> list[tuple[str, dns.message.Message]]:
    """Update messages for BIND and smartdns alike, in order (each may change what the next sees)."""
    ring = keyring()
    wrong = dns.tsigkeyring.from_text({"base-key": SECRET_NONE, "stranger": SECRET_NONE})
    out: list[tuple[str, dns.message.Message]] = []

    def update(label: str, *steps: tuple[str, tuple[Any, ...]], zone: str = "example.test", key: str | None = "base-key",
               key_ring: Any = None) -> None:
        message = dns.update.UpdateMessage(zone)
        for method, args in steps:
            if method == "last ttl":             # a TTL where RFC 2136 §2.5 wants 0 (FORMERR)
                message.update[-1].ttl = args[0]
            else:
                getattr(message, method)(*args)
        if key is not None:
            message.use_tsig(key_ring or ring, key)
        out.append((label, message))

    update("with EDNS", ("add", ("edns", 60, "A", "192.0.2.70")), ("use_edns", (0,)))
    update("add", ("add", ("new", 600, "A", "192.0.2.50")), ("add", ("new", 600, "TXT", '"one"')),
           ("add", ("a.b.c", 300, "A", "192.0.2.60")))
    update("duplicate add", ("add", ("new", 600, "A", "192.0.2.50")))
    update("add with another TTL", ("add", ("new", 60, "A", "192.0.2.51")))
    update("same record, another TTL", ("add", ("www", 900, "A", "192.0.2.10")))
    update("A beside a CNAME", ("add", ("alias", 300, "A", "192.0.2.1")))
    update("CNAME beside an A", ("add", ("www", 300, "CNAME", "alias.example.test.")))
    update("CNAME replaces CNAME", ("add", ("alias", 120, "CNAME", "ns1.example.test.")))
    update("SOA with a lower serial", ("add", ("@", 300, "SOA", "ns1 hostmaster 5 3600 600 86400 60")))
    update("SOA with a higher serial", ("add", ("@", 300, "SOA", "ns1 hostmaster 2024020100 3600 600 86400 60")))
    update("SOA below the apex", ("add", ("www", 300, "SOA", "ns1 hostmaster 2024030100 1 1 1 1")))
    update("delete the apex NS RRset", ("delete", ("@", "NS")))
    update("delete the last apex NS", ("delete", ("@", "NS", "ns1.example.test.")))
    update("delete the SOA", ("delete", ("@", "SOA")))
    update("apex data", ("add", ("@", 300, "TXT", '"apex"')), ("add", ("@", 300, "MX", "10 ns1.example.test.")))
    update("delete everything at the apex", ("delete", ("@",)))
    update("delete a name", ("delete", ("multi",)))
    update("delete what is not there", ("delete", ("nothere",)), ("delete", ("www", "MX")))
    update("NS at a wildcard", ("add", ("*.wild", 300, "NS", "ns1.example.test.")))
    update("delete one record", ("delete", ("new", "TXT", '"one"')))
    update("add, delete, add", ("add", ("n2", 300, "A", "192.0.2.2")), ("delete", ("n2", "A")),
           ("add", ("n2", 300, "A", "192.0.2.3")))
    update("a delegation and a DNAME", ("add", ("sub", 300, "NS", "ns.sub.example.test.")),
           ("add", ("ns.sub", 300, "A", "192.0.2.53")), ("add", ("dn", 300, "DNAME", "elsewhere.test.")))
    update("MX to a name without address", ("add", ("m1", 300, "MX", "10 noaddr.example.test.")))
    update("MX to a deleted name", ("add", ("m2", 300, "MX", "10 multi.example.test.")))
    update("MX to a CNAME", ("add", ("m3", 300, "MX", "10 alias.example.test.")))
    update("MX below a DNAME", ("add", ("m4", 300, "MX", "10 x.dn.example.test.")))
    update("MX below a delegation", ("add", ("m5", 300, "MX", "10 host.sub.example.test.")))
    update("MX to an empty non-terminal", ("add", ("m6", 300, "MX", "10 b.c.example.test.")))
    update("MX to a wildcard", ("add", ("*.wc", 300, "A", "192.0.2.61")), ("add", ("m7", 300, "MX", "10 x.wc.example.test.")))
    update("MX outside the zone", ("add", ("m8", 300, "MX", "10 mail.example.net.")))
    update("MX to a name added with it", ("add", ("m9", 300, "MX", "10 mx9.example.test.")),
           ("add", ("mx9", 300, "AAAA", "2001:db8::9")))
    update("apex NS without address", ("add", ("@", 300, "NS", "ns2.example.test.")))
    update("apex NS to an empty non-terminal", ("add", ("@", 300, "NS", "c.example.test.")))
    update("apex NS to a CNAME", ("add", ("@", 300, "NS", "alias.example.test.")))
    update("apex NS with an address", ("add", ("ns3", 300, "A", "192.0.2.3")), ("add", ("@", 300, "NS", "ns3.example.test.")))
    update("apex NS outside", ("add", ("@", 300, "NS", "ns.example.net.")))
    update("NS below the apex without address", ("add", ("sub2", 300, "NS", "ns.sub2.example.test.")))
    update("DS where there is no delegation", ("add", ("www", 300, "DS", "12345 8 2 " + "ab" * 32)))
    update("DS at a delegation", ("add", ("sub", 300, "DS", "12345 8 2 " + "ab" * 32)))
    update("the delegation's NS deleted", ("delete", ("sub", "NS")))
    update("check-names: A owner with _", ("add", ("bad_name", 300, "A", "192.0.2.80")))
    update("check-names: AAAA owner with a leading -", ("add", ("-lead", 300, "AAAA", "2001:db8::80")))
    update("check-names: A below an _ label", ("add", ("x._tcp", 300, "A", "192.0.2.80")))
    update("check-names: A at a wildcard", ("add", ("*.w2", 300, "A", "192.0.2.80")))
    update("check-names: A, digits first and inner -", ("add", ("1a-b", 300, "A", "192.0.2.80")))
    update("check-names: TXT owner with _", ("add", ("_dmarc", 300, "TXT", '"v=DMARC1"')))
    update("check-names: MX target with _", ("add", ("m20", 300, "MX", "10 bad_mx.example.net.")))
    update("check-names: null MX", ("add", ("m21", 300, "MX", "0 .")))
    update("check-names: SRV target with _", ("add", ("_sip._tcp", 300, "SRV", "0 0 5060 bad_srv.example.net.")))
    update("check-names: HTTPS target with _", ("add", ("h1", 300, "HTTPS", "1 bad_t.example.net.")))
    update("check-names: SVCB alias target with _", ("add", ("s0", 300, "SVCB", "0 bad_t.example.net.")))
    update("check-names: CNAME target with _", ("add", ("cn9", 300, "CNAME", "bad_cn.example.net.")))
    update("check-names: RP mailbox", ("add", ("rp3", 300, "RP", "box.bad_d.example.test. txt.example.test.")))
    update("check-names: RP text name", ("add", ("rp4", 300, "RP", "box.example.test. bad_t.example.test.")))
    update("check-names: SOA mname", ("add", ("@", 300, "SOA", "bad_ns.example.test. h.example.test. 2030000000 1 1 1 1")))
    update("prerequisite: name in use fails", ("present", ("nothere",)), ("add", ("p", 300, "A", "192.0.2.9")))
    update("prerequisite: name not in use fails", ("absent", ("www",)), ("add", ("p", 300, "A", "192.0.2.9")))
    update("prerequisite: RRset exists fails", ("present", ("www", "MX")), ("add", ("p", 300, "A", "192.0.2.9")))
    update("prerequisite: RRset does not exist fails", ("absent", ("www", "A")), ("add", ("p", 300, "A", "192.0.2.9")))
    update("prerequisite: value-dependent fails", ("present", ("www", "A", "192.0.2.11")),
           ("add", ("p", 300, "A", "192.0.2.9")))
    update("prerequisite: empty non-terminal is not in use", ("present", ("b.c",)))
    update("prerequisites hold", ("present", ("www",)), ("absent", ("p",)), ("present", ("www", "A")),
           ("absent", ("www", "MX")), ("present", ("www", "A", "192.0.2.10")), ("present", ("www", "A", "192.0.2.11")),
           ("add", ("p", 300, "A", "192.0.2.9")))
    update("prerequisite outside the zone", ("present", ("x.elsewhere.test.",)))
    update("update outside the zone after a failing prerequisite", ("present", ("nothere",)),
           ("add", ("x.elsewhere.test.", 300, "A", "192.0.2.9")))
    update("NSEC", ("add", ("www", 300, "NSEC", "zzz.example.test. A")))
    update("delete an RRset with a TTL", ("delete", ("www", "A")), ("last ttl", (5,)))
    update("delete a record with a TTL", ("delete", ("www", "A", "192.0.2.10")), ("last ttl", (5,)))
    update("unsigned", ("add", ("u", 300, "A", "192.0.2.9")), key=None)
    update("unsigned, another zone", ("add", ("u", 300, "A", "192.0.2.9")), zone="nothere.test", key=None)
    update("a key no rule names", ("add", ("u", 300, "A", "192.0.2.9")), key="other-key")
    update("an unknown key", ("add", ("u", 300, "A", "192.0.2.9")), key="stranger", key_ring=wrong)
    update("a wrong secret", ("add", ("u", 300, "A", "192.0.2.9")), key_ring=wrong)
    update("an unknown key, EDNS", ("add", ("u", 300, "A", "192.0.2.9")), ("use_edns", (0,)), key="stranger",
           key_ring=wrong)
    update("unsigned, EDNS", ("add", ("u", 300, "A", "192.0.2.9")), ("use_edns", (0,)), key=None)
    update("a key no rule names, EDNS", ("add", ("u", 300, "A", "192.0.2.9")), ("use_edns", (0,)), key="other-key")
    update("prerequisite fails, EDNS", ("present", ("nothere",)), ("use_edns", (0,)))
    update("not a local zone", ("add", ("u", 300, "A", "192.0.2.9")), zone="nothere.test")
    update("not an apex", ("add", ("www", 300, "A", "192.0.2.9")), zone="www.example.test")
    return out


class BindOracleTests(unittest.TestCase):
    """The same update messages to BIND named 9.18 (``allow-update { key base-key; }``) and to
    smartdns: the same rcodes, signed or not alike, and the same zone in the end."""

    def setUp(self) -> None:
        if NAMED is None:
            raise unittest.SkipTest("BIND named is not installed (apt-get install bind9)")
        from tests.oracle_harness import ServerProcess, free_port, wait_for_soa

        self.service, self.host, self.port = start_server(
            self, CONFIG, files={"line1.key": LINE_KEY_FILE}, zones={"example.test.zone": BASE_ZONE})
        workdir = tempfile.mkdtemp(prefix="update-named-")
        self.named_port = free_port()
        write_tree(workdir, {"example.test.zone": BASE_ZONE, "named.conf": textwrap.dedent(f"""\
            options {{ directory "{workdir}"; listen-on port {self.named_port} {{ 127.0.0.1; }};
                      listen-on-v6 {{ none; }}; recursion no; notify no; dnssec-validation no; pid-file none; }};
            controls {{ }};
            key "base-key" {{ algorithm hmac-sha256; secret "{SECRET_BASE}"; }};
            key "other-key" {{ algorithm hmac-sha256; secret "{SECRET_NONE}"; }};
            zone "example.test" {{ type primary; file "example.test.zone"; allow-update {{ key base-key; }};
                                  allow-transfer {{ key base-key; }}; }};
            """)})
        log_path = os.path.abspath(self.mktemp()) + "-named.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", os.path.join(workdir, "named.conf")],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
        self.named = ServerProcess("named", proc, self.named_port, workdir, log_path)
        self.addCleanup(self.named.stop)
        wait_for_soa(self.named, "example.test.")

    @defer.inlineCallbacks
    def test_same_answers_and_zone(self) -> None:
        differences = []
        for label, message in oracle_messages():
            bind = yield threads.deferToThread(exchange, message, self.named_port, True)
            ours = yield threads.deferToThread(exchange, message, self.port, True)
            if bind != ours:
                differences.append(f"{label}: BIND {bind}, smartdns {ours}")
        self.assertEqual(differences, [])
        ring = keyring()
        transferred = yield threads.deferToThread(lambda: dns.zone.from_xfr(dns.query.xfr(
            "127.0.0.1", "example.test", port=self.named_port, keyring=ring, keyname="base-key", timeout=5,
            relativize=False), relativize=False))
        bind_records = sorted((name.to_text().lower(), rdataset.ttl, dns.rdatatype.to_text(rdataset.rdtype),
                               rdata.to_text().lower())
                              for name, rdataset in transferred.iterate_rdatasets() for rdata in rdataset)
        path = os.path.join(self.service.config.zones.directory, "example.test.zone")
        ours_zone = dns.zone.from_file(path, origin="example.test.", relativize=False)
        our_records = sorted((name.to_text().lower(), rdataset.ttl, dns.rdatatype.to_text(rdataset.rdtype),
                              rdata.to_text().lower())
                             for name, rdataset in ours_zone.iterate_rdatasets() for rdata in rdataset)
        self.assertEqual(our_records, bind_records)
        view = self.service.current.view(wire.from_text("example.test").lower(), None)
        self.assertEqual(int(transferred.get_soa().serial), struct_serial(view.soa))


def struct_serial(soa: wire.RRset) -> int:
    data = b"".join(soa.rdatas[0])
    return int.from_bytes(data[-20:-16], "big")


MORE_CONFIG = f"""
[zones]
watch = false
[forward]
upstreams = []
[lines]
line1 = ["127.0.0.3/32"]
line2 = ["127.0.0.4/32"]
[[tsig]]
name = "base-key"
secret = "{SECRET_BASE}"
[[tsig]]
name = "line1-key"
algorithm = "hmac-sha512"
secret = "{SECRET_LINE}"
[[tsig]]
name = "line2-key"
secret = "{SECRET_NONE}"
[[update]]
zone = "example.test"
key = "base-key"
[[update]]
zone = "other.test"
key = "line1-key"
line = "line1"
[[update]]
zone = "example.test"
key = "line2-key"
line = "line2"
"""
OTHER_ZONE = """\
$TTL 600
@   SOA ns1.other.test. hostmaster.other.test. 7 3600 600 86400 60
    NS  ns1.other.test.
ns1 A   192.0.2.1
"""
#: line2's overlay carries its own SOA: line2's serial is raised there, not in the base file.
LINE2_OVERLAY = """\
@   SOA ns1 hostmaster 500 3600 600 86400 60
www A   10.2.0.10
"""
#: No $TTL: a record without a TTL takes the last one written (RFC 1035 §5.1), so deleting the
#: line that gave it changes another record's TTL if edited in place; the file is then canonical.
NO_TTL_ZONE = """\
; no $TTL here
@   300 SOA ns1 hostmaster 1 3600 600 86400 60
    NS  ns1
ns1 A   192.0.2.1
a   900 A 192.0.2.2
b   A   192.0.2.3
"""


class MoreUpdateTests(unittest.TestCase):
    """Overlay files created, an overlay with its own SOA, hand edits, several clients at once,
    the canonical fallback."""

    def setUp(self) -> None:
        if NSUPDATE is None:
            raise unittest.SkipTest("nsupdate is not installed (apt-get install bind9-dnsutils)")
        self.service, self.host, self.port = start_server(
            self, MORE_CONFIG, zones={"example.test.zone": BASE_ZONE, "other.test.zone": OTHER_ZONE,
                                      "line2/example.test.zone": LINE2_OVERLAY, "nottl.test.zone": NO_TTL_ZONE})
        self.zones = self.service.config.zones.directory

    def path(self, *parts: str) -> str:
        return os.path.join(self.zones, *parts)

    def read(self, *parts: str) -> str:
        with open(self.path(*parts), encoding="utf-8") as handle:
            return handle.read()

    @defer.inlineCallbacks
    def test_first_line_update_creates_the_overlay(self) -> None:
        """line1 has no overlay for other.test: the first update creates zones/line1/other.test.zone
        (and the directory); the line's SOA is the base's, so the base file gets the new serial."""
        self.assertFalse(os.path.exists(self.path("line1")))
        out, err, status = yield run_nsupdate(self.port, "zone other.test\nupdate add www.other.test. 60 A 10.1.0.1\n",
                                              "-y", f"hmac-sha512:line1-key:{SECRET_LINE}")
        self.assertEqual(status, 0, err.decode())
        self.assertEqual(self.read("line1", "other.test.zone"),
                         "; other.test. written by smartdns after a dynamic update (RFC 2136)\n"
                         "www.other.test. 60 IN A 10.1.0.1\n")
        self.assertEqual((yield ask(self.port, "www.other.test", "A", "127.0.0.3")), ("NOERROR", ["60 10.1.0.1"]))
        self.assertEqual((yield ask(self.port, "www.other.test", "A")), ("NXDOMAIN", []))
        self.assertIn("@   SOA ns1.other.test. hostmaster.other.test. 8 3600", self.read("other.test.zone"))

    @defer.inlineCallbacks
    def test_overlay_with_its_own_soa(self) -> None:
        """line2's overlay holds an SOA: its serial goes up there; the base file is untouched."""
        before = self.read("example.test.zone")
        out, err, status = yield run_nsupdate(self.port, "zone example.test\nupdate add www.example.test. 300 A 10.2.0.11\n",
                                              "-y", f"hmac-sha256:line2-key:{SECRET_NONE}")
        self.assertEqual(status, 0, err.decode())
        self.assertEqual(self.read("example.test.zone"), before)
        self.assertEqual(self.read("line2", "example.test.zone"),
                         LINE2_OVERLAY.replace(" 500 ", " 501 ") + "www.example.test. 300 IN A 10.2.0.11\n")
        self.assertEqual((yield ask(self.port, "example.test", "SOA", "127.0.0.4"))[1][0].split()[3], "501")
        self.assertEqual((yield ask(self.port, "example.test", "SOA"))[1][0].split()[3], "2024010101")

    @defer.inlineCallbacks
    def test_owner_written_out_and_hand_edits_kept(self) -> None:
        """Deleting the record whose line names the owner writes the owner into the next line
        that relied on it; a hand edit made since the last reload ([zones] watch = false) is
        read first and kept, not overwritten."""
        with open(self.path("example.test.zone"), "a", encoding="utf-8") as handle:
            handle.write("hand    A   192.0.2.77 ; added by hand\n")
        out, err, status = yield run_nsupdate(self.port, "zone example.test\nupdate delete www.example.test. A 192.0.2.10\n",
                                              "-y", f"hmac-sha256:base-key:{SECRET_BASE}")
        self.assertEqual(status, 0, err.decode())
        text = self.read("example.test.zone")
        self.assertIn("www.example.test.        A   192.0.2.11\n", text)
        self.assertIn("hand    A   192.0.2.77 ; added by hand\n", text)
        self.assertEqual((yield ask(self.port, "www.example.test", "A")), ("NOERROR", ["300 192.0.2.11"]))
        self.assertEqual((yield ask(self.port, "hand.example.test", "A")), ("NOERROR", ["300 192.0.2.77"]))
        if CHECKZONE:
            check = yield threads.deferToThread(subprocess.run, [CHECKZONE, "example.test", self.path("example.test.zone")],
                                                capture_output=True)
            self.assertEqual(check.returncode, 0, check.stdout.decode())

    @defer.inlineCallbacks
    def test_concurrent_updates_serialize(self) -> None:
        """Ten clients at once, each adding its own name: every one is applied, one serial step each."""
        ring = keyring()
        updates = []
        for index in range(10):
            update = dns.update.UpdateMessage("example.test")
            update.add(f"c{index}", 60, "A", f"192.0.2.{100 + index}")
            update.use_tsig(ring, "base-key")
            updates.append(update)
        # One client thread sends all ten before reading any answer (the reactor's thread pool
        # stays free for the updates and reloads).
        results = yield threads.deferToThread(exchange_all, updates, self.port)
        self.assertEqual(results, [("NOERROR", "signed QR")] * 10)
        for index in range(10):
            self.assertEqual((yield ask(self.port, f"c{index}.example.test", "A")), ("NOERROR", [f"60 192.0.2.{100 + index}"]))
        self.assertEqual((yield ask(self.port, "example.test", "SOA"))[1][0].split()[3], "2024010111")
        self.assertEqual(self.service.updates.applied, 10)

    @defer.inlineCallbacks
    def test_canonical_when_in_place_would_not_read_back(self) -> None:
        """Without $TTL, removing 'a 900 A' would give 'b A' the SOA's TTL if edited in place: the
        file is written in canonical form instead, and reads back as the intended data."""
        config_path = self.service.config.path
        assert config_path is not None
        with open(config_path, "a", encoding="utf-8") as handle:
            handle.write('[[update]]\nzone = "nottl.test"\nkey = "line1-key"\n')
        result = yield self.service.reload("test")
        self.assertTrue(result.ok, result.summary())
        update = dns.update.UpdateMessage("nottl.test")
        update.delete("a", "A")
        update.use_tsig(keyring(), "line1-key")
        got = yield threads.deferToThread(exchange, update, self.port)
        self.assertEqual(got, ("NOERROR", "signed QR"))
        self.assertEqual(self.read("nottl.test.zone"), textwrap.dedent("""\
            ; nottl.test. written by smartdns after a dynamic update (RFC 2136)
            nottl.test. 300 IN SOA ns1.nottl.test. hostmaster.nottl.test. 2 3600 600 86400 60
            nottl.test. 300 IN NS ns1.nottl.test.
            b.nottl.test. 900 IN A 192.0.2.3
            ns1.nottl.test. 300 IN A 192.0.2.1
            """))
        self.assertEqual((yield ask(self.port, "b.nottl.test", "A")), ("NOERROR", ["900 192.0.2.3"]))

    @defer.inlineCallbacks
    def test_origin_and_relative_names_kept(self) -> None:
        """$ORIGIN, relative owners and a multi-line record: a deletion below a second $ORIGIN
        removes exactly that line, and the file is edited in place (not canonical)."""
        text = textwrap.dedent("""\
            $TTL 300
            @   SOA ns1 hostmaster 1 3600 600 86400 60
                NS  ns1
            ns1 A   192.0.2.1
            $ORIGIN sub.orig.test.
            a   A   192.0.2.5     ; stays
            b   TXT ( "one"
                      "two" )     ; goes
            c   A   192.0.2.6
            """)
        with open(self.path("orig.test.zone"), "w", encoding="utf-8") as handle:
            handle.write(text)
        assert self.service.config.path is not None
        with open(self.service.config.path, "a", encoding="utf-8") as handle:
            handle.write('[[update]]\nzone = "orig.test"\nkey = "base-key"\n')
        result = yield self.service.reload("test")
        self.assertTrue(result.ok, result.summary())
        out, err, status = yield run_nsupdate(self.port, "zone orig.test\nupdate delete b.sub.orig.test. TXT\n"
                                                         "update add d.sub.orig.test. 60 A 192.0.2.7\n",
                                              "-y", f"hmac-sha256:base-key:{SECRET_BASE}")
        self.assertEqual(status, 0, err.decode())
        self.assertEqual(self.read("orig.test.zone"),
                         text.replace("@   SOA ns1 hostmaster 1 ", "@   SOA ns1 hostmaster 2 ")
                             .replace('b   TXT ( "one"\n          "two" )     ; goes\n', "")
                         + "d.sub.orig.test. 60 IN A 192.0.2.7\n")
        self.assertEqual((yield ask(self.port, "c.sub.orig.test", "A")), ("NOERROR", ["300 192.0.2.6"]))
        self.assertEqual((yield ask(self.port, "b.sub.orig.test", "TXT")), ("NXDOMAIN", []))


class JournalTests(unittest.TestCase):
    """Updates go through the reload, so the [[transfer]] journal sees them like a file edit:
    a line view whose serial the serial-bump rule raised is updated from that served serial."""

    def setUp(self) -> None:
        if NSUPDATE is None:
            raise unittest.SkipTest("nsupdate is not installed (apt-get install bind9-dnsutils)")
        config = CONFIG.replace("[forward]", "[zones]\nwatch = false\n[forward]") + \
            '[[transfer]]\nkey = "line1-key"\nline = "line1"\n'
        self.service, self.host, self.port = start_server(
            self, config, files={"line1.key": LINE_KEY_FILE},
            zones={"example.test.zone": BASE_ZONE, "line1/example.test.zone": OVERLAY_ZONE})
        self.zones = self.service.config.zones.directory

    @defer.inlineCallbacks
    def test_update_after_a_stamped_serial(self) -> None:
        with open(os.path.join(self.zones, "line1", "example.test.zone"), "a", encoding="utf-8") as handle:
            handle.write("hand A 10.0.0.77\n")                 # an overlay-only edit: no serial in the file moves
        result = yield self.service.reload("test")
        self.assertTrue(result.ok, result.summary())
        stamped = int((yield ask(self.port, "example.test", "SOA", "127.0.0.3"))[1][0].split()[3])
        self.assertEqual(stamped, 2024010102)                  # served, not in any file
        out, err, status = yield run_nsupdate(self.port, "zone example.test\nupdate add u.example.test. 60 A 10.0.0.5\n",
                                              "-k", os.path.join(os.path.dirname(self.zones), "line1.key"))
        self.assertEqual(status, 0, err.decode())
        for source in ("127.0.0.3", "127.0.0.1"):
            self.assertEqual(int((yield ask(self.port, "example.test", "SOA", source))[1][0].split()[3]), stamped + 1)
        self.assertEqual((yield ask(self.port, "u.example.test", "A", "127.0.0.3")), ("NOERROR", ["60 10.0.0.5"]))
        self.assertEqual((yield ask(self.port, "hand.example.test", "A", "127.0.0.3")), ("NOERROR", ["300 10.0.0.77"]))
        steps = self.service.journal.steps(wire.from_text("example.test").lower(), "line1")
        self.assertEqual(steps[-1].new_serial, stamped + 1)
        self.assertEqual([wire.to_text(rrset.name) for rrset in steps[-1].added], ["u.example.test."])


class PrepareTests(unittest.TestCase):
    """A file that would not load is never written: both rewrites are read back first."""

    def test_unloadable_result_is_not_written(self) -> None:
        from smartdns.update import FileChange, UpdateFailed, prepare
        from smartdns.zones import read_zone_file

        directory = os.path.abspath(self.mktemp())
        write_tree(directory, {"example.test.zone": BASE_ZONE})
        path = os.path.join(directory, "example.test.zone")
        zone, problems = read_zone_file(path, "example.test.")
        assert zone is not None, problems
        www = wire.from_text("www.example.test")
        change = FileChange(path, "example.test.", False, None, zone.nodes)
        node = {rtype: (rrset.name, rrset.ttl, [b"".join(p) for p in rrset.rdatas]) for rtype, rrset in zone.nodes[www].items()}
        node[wire.CNAME] = (www, 300, [wire.from_text("alias.example.test")])    # CNAME and other data
        change.changes[www] = node
        with self.assertRaises(UpdateFailed) as caught:
            prepare(change, wire.from_text("example.test"))
        self.assertEqual(caught.exception.rcode, 2)                                # SERVFAIL
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), textwrap.dedent(BASE_ZONE).lstrip("\n"))
        self.assertEqual(os.listdir(directory), ["example.test.zone"])             # no temp file left


class OneFileOnlyTests(unittest.TestCase):
    """A zone read from more than one file ($INCLUDE, records_json) is REFUSED: an update could
    not say which file to edit; nothing is written."""

    def setUp(self) -> None:
        config = CONFIG.replace("[forward]", '[zones]\nrecords_json = ["records.json"]\n[forward]') + \
            '[[update]]\nzone = "inc.test"\nkey = "base-key"\n'
        self.service, self.host, self.port = start_server(
            self, config, files={"line1.key": LINE_KEY_FILE, "records.json":
                                 '[{"name": "json.example.test", "type": "A", "ttl": 60, "rdata": "192.0.2.8"}]'},
            zones={"example.test.zone": BASE_ZONE, "inc.test.zone": "$TTL 60\n@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\n"
                                                                     "$INCLUDE part.db\n", "part.db": "ns1 A 192.0.2.1\n"})
        self.zones = self.service.config.zones.directory

    @defer.inlineCallbacks
    def test_refused(self) -> None:
        before = {name: read_bytes(os.path.join(self.zones, name)) for name in ("example.test.zone", "inc.test.zone")}
        for zone in ("example.test", "inc.test"):
            update = dns.update.UpdateMessage(zone)
            update.add("new", 60, "A", "192.0.2.1")
            update.use_tsig(keyring(), "base-key")
            got = yield threads.deferToThread(exchange, update, self.port)
            self.assertEqual(got, ("REFUSED", "signed QR"), zone)
        self.assertEqual({name: read_bytes(os.path.join(self.zones, name)) for name in before}, before)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


class CommitTests(unittest.TestCase):
    """A file changed between reading it and renaming over it (a hand edit in that moment) is not
    overwritten: commit raises Stale (the handler reloads and starts again) and renames nothing."""

    def test_changed_file_is_not_replaced(self) -> None:
        from smartdns.update import FileChange, Stale, commit, prepare
        from smartdns.zones import read_zone_file

        directory = os.path.abspath(self.mktemp())
        write_tree(directory, {"example.test.zone": BASE_ZONE})
        path = os.path.join(directory, "example.test.zone")
        zone, _problems = read_zone_file(path, "example.test.")
        assert zone is not None
        change = FileChange(path, "example.test.", False, None, zone.nodes)
        new = wire.from_text("new.example.test")
        change.changes[new] = {wire.A: (new, 60, [bytes([192, 0, 2, 1])])}
        prepared = prepare(change, wire.from_text("example.test"))
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("hand A 192.0.2.99\n")
        with self.assertRaises(Stale):
            commit([prepared])
        with open(path, encoding="utf-8") as handle:
            self.assertTrue(handle.read().endswith("hand A 192.0.2.99\n"))
        self.assertEqual(os.listdir(directory), ["example.test.zone"])
        prepared = prepare(FileChange(path, "example.test.", False, None, read_zone_file(path, "example.test.")[0].nodes,
                                      change.changes), wire.from_text("example.test"))
        commit([prepared])
        with open(path, encoding="utf-8") as handle:
            self.assertTrue(handle.read().endswith("hand A 192.0.2.99\nnew.example.test. 60 IN A 192.0.2.1\n"))
