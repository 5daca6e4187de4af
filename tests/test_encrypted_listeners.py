"""DoT (RFC 7858) and DoH (RFC 8484) listeners: the real service on loopback, asked by real
clients (dig +tls, dig +https, kdig, dnspython, Python's HTTP client) that check the server's
certificate against a private CA made for each test."""
from __future__ import annotations

import base64
import datetime
import http.client
import io
import ipaddress
import os
import shutil
import socket
import ssl
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import dns.message
import dns.query
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, threads, utils
from twisted.trial import unittest
from twisted.web import http as web_http

from smartdns import cli, wire
from smartdns.config import parse_config
from smartdns.encrypted import decode_dns_parameter, max_age
from smartdns.errors import ListenError
from smartdns.service import SmartDNSService
from smartdns.snapshot import build_snapshot
from tests.support import CLIENT_TIMEOUT_SECONDS, rrs, write_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_ZONES = os.path.join(ROOT, "zones")
SERVER_NAME = "dns.test"
LINE1_SOURCE, LINE2_SOURCE = "127.0.0.3", "127.0.0.1"
LINE1_ANSWER, LINE2_ANSWER = "192.168.139.10", "192.168.139.11"   # example.com A in the shipped zones

# The shipped zones' two lines on loopback addresses a client can send from.
CONFIG = f"""
[server]
listen = ["127.0.0.1:0"]
tls_listen = ["127.0.0.1:0"]
https_listen = ["127.0.0.1:0"]
tls_cert_file = "server.pem"
tls_key_file = "server.key"
control_socket = ""
{{extra}}
[zones]
directory = "{SHIPPED_ZONES}"
[lines]
line1 = ["{LINE1_SOURCE}/32"]
line2 = ["{LINE2_SOURCE}/32"]
[forward]
upstreams = []
"""


# -- a private CA ---------------------------------------------------------------------------------

def _pem_key(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_certificate(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def make_pki(serial: int = 2) -> dict[str, str]:
    """PEM texts: a CA (``ca.pem``), a server certificate it signed for ``dns.test`` and
    127.0.0.1 (``server.pem``, serial ``serial``), its key, and a key of no certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartdns test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial)
              .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    return {"ca.pem": _pem_certificate(ca), "server.pem": _pem_certificate(server), "server.key": _pem_key(key),
            "other.key": _pem_key(ec.generate_private_key(ec.SECP256R1()))}


# -- clients --------------------------------------------------------------------------------------

def tls_context(ca: str) -> ssl.SSLContext:
    """A client context that trusts only the test's CA (hostname checked)."""
    return ssl.create_default_context(cafile=ca)


def https_request(port: int, ca: str, method: str, target: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None,
                  source: str = LINE2_SOURCE) -> defer.Deferred[tuple[int, dict[str, str], bytes]]:
    """One HTTP/1.1 request over TLS from ``source``: (status, headers in lower case, body)."""
    def run() -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls_context(ca),
                                                 timeout=CLIENT_TIMEOUT_SECONDS, source_address=(source, 0))
        try:
            connection.request(method, target, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    return threads.deferToThread(run)


def get_target(message: bytes) -> str:
    """``/dns-query?dns=...`` for a message (base64url without padding, RFC 8484 §4.1)."""
    return "/dns-query?dns=" + base64.urlsafe_b64encode(message).decode().rstrip("=")


def query_bytes(name: str = "example.com", rdtype: str = "A", qid: int = 0) -> bytes:
    message = dns.message.make_query(name, rdtype)
    message.id = qid
    return bytes(message.to_wire())


def run_client(name: str, *args: str) -> defer.Deferred[str]:
    """A client binary's output (stdout and stderr), text."""
    path = shutil.which(name)
    assert path is not None
    d = utils.getProcessOutput(path, args, env=os.environ, errortoo=True)
    return d.addCallback(lambda out: out.decode(errors="replace"))


def needs(name: str, package: str) -> None:
    if shutil.which(name) is None:
        raise unittest.SkipTest(f"{name} is not installed (apt install {package})")


class EncryptedListenerTests(unittest.TestCase):
    """The service with DoT and DoH listeners on 127.0.0.1, port 0 each."""

    def start(self, extra: str = "") -> None:
        self.base = os.path.abspath(self.mktemp())
        write_tree(self.base, {**make_pki(), "smartdns.toml": CONFIG.replace("{extra}", extra)})
        self.ca = os.path.join(self.base, "ca.pem")
        path = os.path.join(self.base, "smartdns.toml")
        with open(path, encoding="utf-8") as handle:
            config = parse_config(handle.read(), path)
        self.service = SmartDNSService(config, build_snapshot(config), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.dot_port = self.service.encrypted.addresses("tls")[0][1]
        self.doh_port = self.service.encrypted.addresses("https")[0][1]

    def setUp(self) -> None:
        self.start()

    # -- DNS over TLS ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_dnspython_tls_lines_by_peer(self):
        """dnspython over TLS (certificate and name checked): each source address gets its line's
        answer, TCP-shaped (AA, no truncation)."""
        for source, expected in ((LINE1_SOURCE, LINE1_ANSWER), (LINE2_SOURCE, LINE2_ANSWER)):
            answer = yield threads.deferToThread(
                dns.query.tls, dns.message.make_query("example.com", "A"), "127.0.0.1", port=self.dot_port,
                timeout=CLIENT_TIMEOUT_SECONDS, source=source, ssl_context=tls_context(self.ca),
                server_hostname=SERVER_NAME)
            self.assertEqual(rrs(answer), [f"example.com. 60 A {expected}"])
            self.assertTrue(answer.flags & dns.flags.AA)

    @defer.inlineCallbacks
    def test_dig_tls(self):
        """dig +tls (BIND 9.18), verifying the certificate: the line follows the source address."""
        needs("dig", "bind9-dnsutils")
        for source, expected in ((LINE1_SOURCE, LINE1_ANSWER), (LINE2_SOURCE, LINE2_ANSWER)):
            out = yield run_client("dig", "@127.0.0.1", "-p", str(self.dot_port), "-b", source, "+tls",
                                   f"+tls-ca={self.ca}", f"+tls-hostname={SERVER_NAME}", "+time=3", "+tries=1",
                                   "+short", "A", "example.com")
            self.assertEqual(out.split(), [expected], out)

    @defer.inlineCallbacks
    def test_kdig_tls(self):
        """kdig +tls (Knot; offers ALPN "dot"), verifying the certificate, from both lines."""
        needs("kdig", "knot-dnsutils")
        for source, expected in ((LINE1_SOURCE, LINE1_ANSWER), (LINE2_SOURCE, LINE2_ANSWER)):
            out = yield run_client("kdig", "@127.0.0.1", "-p", str(self.dot_port), "-b", source,
                                   f"+tls-ca={self.ca}", f"+tls-hostname={SERVER_NAME}", "+time=3", "+retry=0",
                                   "+short", "A", "example.com")
            self.assertEqual(out.split(), [expected], out)

    @defer.inlineCallbacks
    def test_dig_rejects_another_ca(self):
        """The server presents its chain only: a client trusting another CA refuses it (the check
        in the tests above is real)."""
        needs("dig", "bind9-dnsutils")
        other = os.path.join(self.base, "other-ca.pem")
        write_tree(self.base, {"other-ca.pem": make_pki()["ca.pem"]})
        out = yield run_client("dig", "@127.0.0.1", "-p", str(self.dot_port), "+tls", f"+tls-ca={other}",
                               f"+tls-hostname={SERVER_NAME}", "+time=2", "+tries=1", "+short", "A", "example.com")
        self.assertNotIn(LINE2_ANSWER, out)

    @defer.inlineCallbacks
    def test_tls_pipelined_queries(self):
        """Several queries on one TLS connection are each answered (RFC 7766 framing, as TCP)."""
        def run() -> list[int]:
            with socket.create_connection(("127.0.0.1", self.dot_port), timeout=CLIENT_TIMEOUT_SECONDS) as raw:
                with tls_context(self.ca).wrap_socket(raw, server_hostname=SERVER_NAME) as sock:
                    for qid in (1, 2, 3):
                        message = query_bytes(qid=qid)
                        sock.sendall(len(message).to_bytes(2, "big") + message)
                    ids = []
                    buffer = b""
                    while len(ids) < 3:
                        chunk = sock.recv(65535)
                        if not chunk:
                            break
                        buffer += chunk
                        while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                            size = int.from_bytes(buffer[:2], "big")
                            ids.append(int.from_bytes(buffer[2:4], "big"))
                            buffer = buffer[2 + size:]
                    return sorted(ids)

        ids = yield threads.deferToThread(run)
        self.assertEqual(ids, [1, 2, 3])

    # -- DNS over HTTPS -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_dig_https_post_and_get(self):
        """dig +https (POST) and +https-get (BIND 9.18 speaks HTTP/2 only): lines by source address."""
        needs("dig", "bind9-dnsutils")
        if not web_http.H2_ENABLED:
            raise unittest.SkipTest("Twisted's HTTP/2 support (h2) is not installed, and dig +https needs HTTP/2")
        for mode in ("+https", "+https-get"):
            for source, expected in ((LINE1_SOURCE, LINE1_ANSWER), (LINE2_SOURCE, LINE2_ANSWER)):
                out = yield run_client("dig", "@127.0.0.1", "-p", str(self.doh_port), "-b", source, mode,
                                       f"+tls-ca={self.ca}", f"+tls-hostname={SERVER_NAME}", "+time=3",
                                       "+tries=1", "+short", "A", "example.com")
                self.assertEqual(out.split(), [expected], f"{mode} from {source}: {out}")

    @defer.inlineCallbacks
    def test_http11_get_and_post(self):
        """HTTP/1.1 GET and POST: application/dns-message, max-age the smallest TTL, the line by
        the HTTP peer (X-Forwarded-For is not believed), the GET's ID 0 echoed."""
        for source, expected in ((LINE1_SOURCE, LINE1_ANSWER), (LINE2_SOURCE, LINE2_ANSWER)):
            status, headers, body = yield https_request(
                self.doh_port, self.ca, "GET", get_target(query_bytes()), source=source,
                headers={"X-Forwarded-For": LINE1_SOURCE if source == LINE2_SOURCE else LINE2_SOURCE})
            self.assertEqual((status, headers["content-type"], headers["cache-control"]),
                             (200, "application/dns-message", "max-age=60"))
            answer = dns.message.from_wire(body)
            self.assertEqual(answer.id, 0)
            self.assertEqual(rrs(answer), [f"example.com. 60 A {expected}"])
            status, headers, body = yield https_request(
                self.doh_port, self.ca, "POST", "/dns-query", body=query_bytes(qid=4242), source=source,
                headers={"Content-Type": "application/dns-message"})
            self.assertEqual(status, 200)
            answer = dns.message.from_wire(body)
            self.assertEqual(answer.id, 4242)
            self.assertEqual(rrs(answer), [f"example.com. 60 A {expected}"])

    @defer.inlineCallbacks
    def test_x_forwarded_for_from_a_trusted_proxy(self):
        """With the peer in trusted_proxies, the right-most X-Forwarded-For address that is not
        a trusted proxy chooses the line; a garbled header leaves the proxy's own line."""
        yield self.service.stopService()
        self.start(f'trusted_proxies = ["{LINE2_SOURCE}/32", "10.0.0.0/8"]')
        cases = [(f"{LINE1_SOURCE}", LINE1_ANSWER),                    # the proxy forwards for line1
                 (f"198.51.100.7, {LINE1_SOURCE}, 10.1.2.3", LINE1_ANSWER),  # past another trusted hop
                 ("not-an-address", LINE2_ANSWER)]
        for header, expected in cases:
            status, _headers, body = yield https_request(
                self.doh_port, self.ca, "GET", get_target(query_bytes()), source=LINE2_SOURCE,
                headers={"X-Forwarded-For": header})
            self.assertEqual(status, 200)
            self.assertEqual(rrs(dns.message.from_wire(body)), [f"example.com. 60 A {expected}"], header)
        # A peer that is not a trusted proxy is never believed.
        status, _headers, body = yield https_request(
            self.doh_port, self.ca, "GET", get_target(query_bytes()), source=LINE1_SOURCE,
            headers={"X-Forwarded-For": LINE2_SOURCE})
        self.assertEqual(rrs(dns.message.from_wire(body)), [f"example.com. 60 A {LINE1_ANSWER}"])

    @defer.inlineCallbacks
    def test_negative_answer_max_age(self):
        """An NXDOMAIN is cacheable for its SOA's TTL (the only record in it)."""
        status, headers, body = yield https_request(self.doh_port, self.ca, "GET",
                                                    get_target(query_bytes("nothing.example.com")))
        answer = dns.message.from_wire(body)
        self.assertEqual((status, answer.rcode()), (200, dns.rcode.NXDOMAIN))
        ttl = min(rrset.ttl for rrset in answer.authority)
        self.assertEqual(headers["cache-control"], f"max-age={ttl}")

    @defer.inlineCallbacks
    def test_dnspython_https(self):
        """dnspython's DoH client, where httpx is installed (not a dependency of smartdns)."""
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("httpx is not installed (dnspython's DoH client needs it)")
        answer = yield threads.deferToThread(
            dns.query.https, dns.message.make_query("example.com", "A"), "127.0.0.1", port=self.doh_port,
            timeout=CLIENT_TIMEOUT_SECONDS, source=LINE1_SOURCE, verify=self.ca)
        self.assertEqual(rrs(answer), [f"example.com. 60 A {LINE1_ANSWER}"])

    @defer.inlineCallbacks
    def test_malformed_requests(self):
        """400 for no or bad ``dns`` parameter and for what is not a query, 415 for another body
        type, 413 for a body too long for DNS, 405 for other methods, 404 for other paths; each
        with a plain-text reason."""
        response = dns.message.make_response(dns.message.make_query("example.com", "A"))
        cases = [
            ("GET", "/dns-query", None, {}, 400),
            ("GET", "/dns-query?dns=", None, {}, 400),
            ("GET", "/dns-query?dns=not*base64", None, {}, 400),
            ("GET", "/dns-query?dns=" + base64.urlsafe_b64encode(query_bytes()).decode(), None, {},
             200 if len(query_bytes()) % 3 == 0 else 400),                   # padding is not allowed
            ("GET", get_target(b"\x00\x01\x02"), None, {}, 400),
            ("GET", get_target(response.to_wire()), None, {}, 400),          # QR set: not a query
            ("POST", "/dns-query", query_bytes(), {"Content-Type": "application/json"}, 415),
            ("POST", "/dns-query", query_bytes(), {}, 415),
            ("POST", "/dns-query", b"", {"Content-Type": "application/dns-message"}, 400),
            ("POST", "/dns-query", bytes(65536), {"Content-Type": "application/dns-message"}, 413),
            ("PUT", "/dns-query", query_bytes(), {"Content-Type": "application/dns-message"}, 405),
            ("DELETE", "/dns-query", None, {}, 405),
            ("GET", "/other" + get_target(query_bytes())[len("/dns-query"):], None, {}, 404),
        ]
        for method, target, body, headers, expected in cases:
            status, _headers, text = yield https_request(self.doh_port, self.ca, method, target, body, headers)
            self.assertEqual(status, expected, f"{method} {target}: {text!r}")
        status, headers, text = yield https_request(self.doh_port, self.ca, "POST", "/dns-query", query_bytes(),
                                                    {"Content-Type": "text/plain"})
        self.assertEqual((headers["content-type"], text), ("text/plain; charset=utf-8",
                                                           b"the body must be application/dns-message\n"))

    # -- limits, reload, stop -----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_reload_serves_a_renewed_certificate(self):
        """A reload reads the certificate files again: new connections get the new certificate."""
        def serial() -> int:
            with socket.create_connection(("127.0.0.1", self.dot_port), timeout=CLIENT_TIMEOUT_SECONDS) as raw:
                with tls_context(self.ca).wrap_socket(raw, server_hostname=SERVER_NAME) as sock:
                    der = sock.getpeercert(binary_form=True)
            assert der is not None
            return int(x509.load_der_x509_certificate(der).serial_number)

        self.assertEqual((yield threads.deferToThread(serial)), 2)
        renewed = make_pki(serial=3)
        write_tree(self.base, {name: renewed[name] for name in ("ca.pem", "server.pem", "server.key")})
        result = yield self.service.reload("test")
        self.assertTrue(result.ok, result)
        self.assertEqual((yield threads.deferToThread(serial)), 3)

    @defer.inlineCallbacks
    def test_stop_closes_the_ports(self):
        """stopService stops listening on the DoT and DoH ports."""
        yield self.service.stopService()
        for port in (self.dot_port, self.doh_port):
            probe = socket.socket()
            self.addCleanup(probe.close)
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", port)), 0)


class LimitTests(unittest.TestCase):
    """``tcp_idle_timeout`` and ``tcp_max_connections`` hold for DoT and DoH connections too."""

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        write_tree(base, {**make_pki(), "smartdns.toml": CONFIG.replace(
            "{extra}", "tcp_idle_timeout = 0.5\ntcp_max_connections = 1")})
        path = os.path.join(base, "smartdns.toml")
        with open(path, encoding="utf-8") as handle:
            config = parse_config(handle.read(), path)
        self.service = SmartDNSService(config, build_snapshot(config), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def closed_after(self, port: int, seconds: float) -> defer.Deferred[tuple[bool, bool]]:
        """Open a plain TCP connection and a second one; (second closed, first closed within
        ``seconds``).  A reset counts as closed."""
        def closed(sock: socket.socket) -> bool:
            try:
                return sock.recv(1) == b""
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False

        def run() -> tuple[bool, bool]:
            with socket.create_connection(("127.0.0.1", port), timeout=seconds) as first:
                try:
                    second = socket.create_connection(("127.0.0.1", port), timeout=seconds)
                except ConnectionResetError:
                    second_closed = True
                else:
                    with second:
                        second_closed = closed(second)
                return second_closed, closed(first)

        return threads.deferToThread(run)

    @defer.inlineCallbacks
    def test_connection_cap_and_idle_timeout(self):
        """With a cap of 1 a second connection is closed at once; an idle one closes after 0.5 s."""
        for kind in ("tls", "https"):
            port = self.service.encrypted.addresses(kind)[0][1]
            second_closed, first_closed = yield self.closed_after(port, 3)
            self.assertEqual((second_closed, first_closed), (True, True), kind)


class StartupErrorTests(unittest.TestCase):
    """Problems with the listeners are the one-line errors of any other listener or config key."""

    def write(self, extra: str, key: str = "server.key") -> str:
        base = os.path.abspath(self.mktemp())
        config = CONFIG.replace("{extra}", extra).replace('"server.key"', f'"{key}"')
        write_tree(base, {**make_pki(), "smartdns.toml": config})
        return os.path.join(base, "smartdns.toml")

    def test_key_of_another_certificate(self):
        """``smartdns check`` with a key that is not the certificate's: exactly one line, at the key."""
        path = self.write("", key="other.key")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["check", "--config", path])
        base = os.path.dirname(path)
        self.assertEqual((code, err.getvalue().splitlines()), (1, [
            f"{path}:6: [server] tls_key_file: '{base}/other.key' is not the key of the certificate "
            f"in '{base}/server.pem'"]))

    def test_busy_port(self):
        """A DoT port in use is ``cannot listen on 127.0.0.1:PORT/tls: address already in use``."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        path = self.write("")
        with open(path, encoding="utf-8") as handle:
            text = handle.read().replace('tls_listen = ["127.0.0.1:0"]', f'tls_listen = ["127.0.0.1:{port}"]')
        config = parse_config(text, path)
        service = SmartDNSService(config, build_snapshot(config), reactor)
        self.addCleanup(lambda: [p.stopListening() for p in service.ports])
        with self.assertRaises(ListenError) as caught:
            service.privilegedStartService()
        self.assertEqual(str(caught.exception), f"cannot listen on 127.0.0.1:{port}/tls: address already in use")


class WireTests(unittest.TestCase):
    """The DoH helpers on their own."""

    def test_decode_dns_parameter(self):
        """base64url without padding decodes; padding, other alphabets and impossible lengths do not."""
        self.assertEqual(decode_dns_parameter(b"AAABAA"), b"\x00\x00\x01\x00")
        for bad in (b"AAABAA==", b"AA+/", b"AAAAA", b"AA AA"):
            self.assertRaises(ValueError, decode_dns_parameter, bad)

    def test_max_age(self):
        """The smallest TTL of any record (OPT is not a record here); 0 with none or unreadable."""
        question = wire.from_text("a.test")
        answer = wire.make_rrset(question, wire.A, 300, [b"\x01\x02\x03\x04"])
        authority = wire.make_rrset(wire.from_text("test"), wire.NS, 90, [wire.from_text("ns.test")])
        q = question + b"\x00\x01\x00\x01"
        full = wire.render(1, wire.FLAG_QR, q, ((answer,), (authority,), ()), opt=wire.opt_record(1232, False))[0]
        self.assertEqual(max_age(full), 90)
        self.assertEqual(max_age(wire.render(1, wire.FLAG_QR | wire.REFUSED, q, ((), (), ()))[0]), 0)
        self.assertEqual(max_age(b"\x00"), 0)
