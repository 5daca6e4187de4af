"""DNS Cookies against BIND ``named`` (9.18) as the oracle: with one shared secret and
``cookie-algorithm siphash24``, named accepts the server cookies smartdns makes and smartdns
accepts named's (RFC 9018 interoperability).  Skipped where named is not installed."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import dns.edns
import dns.message
import dns.query
import dns.rcode
from twisted.trial import unittest

from smartdns import cookies
from tests.oracle_harness import ZONE_DIR, ZONES, ServerProcess, free_port, named_conf, wait_until_answers

SECRET = "e5e973e5a6b2a43f48e7dc849e37bfcf"
CLIENT_COOKIE = bytes.fromhex("2464c4abcf10c957")
COOKIE_OPTIONS = (f'    answer-cookie yes;\n    cookie-algorithm siphash24;\n    cookie-secret "{SECRET}";\n'
                  "    require-server-cookie yes;\n")


def start_cookie_named(testcase: unittest.TestCase) -> ServerProcess:
    """named for the oracle zones, answering cookies with ``SECRET`` and requiring them."""
    named = shutil.which("named") or "/usr/sbin/named"
    if not os.access(named, os.X_OK):
        raise unittest.SkipTest("BIND named not installed (apt-get install bind9)")
    workdir = tempfile.mkdtemp(prefix="cookie-named-")
    port = free_port()
    conf = os.path.join(workdir, "named.conf")
    text = named_conf(ZONE_DIR, ZONES, port, workdir)
    assert "    answer-cookie no;\n" in text
    with open(conf, "w", encoding="utf-8") as f:
        f.write(text.replace("    answer-cookie no;\n", COOKIE_OPTIONS))
    log_path = os.path.join(workdir, "named.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([named, "-g", "-4", "-n", "1", "-c", conf], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = ServerProcess("named", proc, port, workdir, log_path)
    testcase.addCleanup(server.stop)
    wait_until_answers(server, ZONES[0])
    return server


def ask(server: ServerProcess, body: bytes) -> dns.message.Message:
    """A UDP query for the first oracle zone's SOA with a COOKIE option, from 127.0.0.1."""
    query = dns.message.make_query(ZONES[0], "SOA", use_edns=0,
                                   options=[dns.edns.GenericOption(cookies.COOKIE_OPTION, body)])
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3, source="127.0.0.1")


def reply_cookie(message: dns.message.Message) -> bytes:
    """The COOKIE option data of a reply."""
    for option in message.options:
        if option.otype == cookies.COOKIE_OPTION:
            return option.to_wire()
    raise AssertionError(f"no COOKIE in {message}")


class CookieOracleTests(unittest.TestCase):
    """smartdns's and named's server cookies are interchangeable under one secret."""

    def setUp(self) -> None:
        self.named = start_cookie_named(self)
        self.address = cookies.address_bytes("127.0.0.1")

    def test_named_accepts_smartdns_cookies(self) -> None:
        """A cookie smartdns made is answered NOERROR by named, which requires a good one;
        a made-up one gets BADCOOKIE (so named really checks)."""
        made = cookies.make(bytes.fromhex(SECRET), CLIENT_COOKIE, self.address, int(time.time()))
        self.assertEqual(ask(self.named, CLIENT_COOKIE + made).rcode(), dns.rcode.NOERROR)
        self.assertEqual(ask(self.named, CLIENT_COOKIE + bytes(16)).rcode(), dns.rcode.BADCOOKIE)

    def test_smartdns_accepts_named_cookies(self) -> None:
        """named's server cookie (from its BADCOOKIE answer to a client cookie alone) is good
        by smartdns's check, and is exactly what smartdns makes for the same timestamp."""
        reply = ask(self.named, CLIENT_COOKIE)
        self.assertEqual(reply.rcode(), dns.rcode.BADCOOKIE)
        cookie = reply_cookie(reply)
        self.assertEqual(cookie[:8], CLIENT_COOKIE)
        server_cookie = cookie[8:]
        self.assertTrue(cookies.is_valid(bytes.fromhex(SECRET), CLIENT_COOKIE, server_cookie, self.address,
                                         int(time.time())))
        stamp = int.from_bytes(server_cookie[4:8], "big")
        self.assertEqual(cookies.make(bytes.fromhex(SECRET), CLIENT_COOKIE, self.address, stamp), server_cookie)
