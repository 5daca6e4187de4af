"""DNS-over-TLS upstreams (RFC 7858) against real TLS servers on 127.0.0.1.

Every certificate is made here: a test CA with server certificates for ``dns.test.example`` and
for another name, and a second (untrusted) CA.  The servers are Twisted TLS listeners that answer
A queries with replies built by ``smartdns.wire``; the client side is the real ``Forwarder``.
"""
from __future__ import annotations

import datetime
import functools
import os
import textwrap
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from service_identity import VerificationError
from twisted.internet import defer, endpoints, protocol, reactor, ssl, task
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int16StringReceiver
from twisted.python.failure import Failure
from twisted.trial import unittest

from smartdns import wire
from smartdns.config import ForwardConfig, Upstream, parse_config
from smartdns.dot import _TLSStreamConnection, tls_connector
from smartdns.errors import UpstreamError
from smartdns.forwarder import Forwarder, Stats, StreamClient
from smartdns.service import _tls_connector
from tests.support import answer_a, query, rrs, start_server

SERVER_NAME = "dns.test.example"
OTHER_NAME = "other.test.example"
TIMEOUT_SECONDS = 1.0
STALL_TIMEOUT_SECONDS = 0.3
CERT_VALIDITY = datetime.timedelta(days=1)


# --- certificates -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    """A certificate with its key, both PEM."""

    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(subject: str, issuer: Issued | None, *, ca: bool) -> Issued:
    """A CA certificate (self-signed when ``issuer`` is None) or a server certificate for ``subject``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.cert.subject if issuer else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - CERT_VALIDITY)
               .not_valid_after(now + CERT_VALIDITY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem, cert, key)


@functools.cache
def pki() -> dict[str, Issued]:
    """The test CA, a rogue CA, and server certificates (made once per test run)."""
    ca = _issue("smartdns test CA", None, ca=True)
    rogue = _issue("smartdns rogue CA", None, ca=True)
    return {
        "ca": ca,
        "rogue": rogue,
        "good": _issue(SERVER_NAME, ca, ca=False),
        "wrong_name": _issue(OTHER_NAME, ca, ca=False),
        "untrusted": _issue(SERVER_NAME, rogue, ca=False),
    }


# --- a DNS-over-TLS server ------------------------------------------------------------------------

def address_for(query: wire.Query) -> str:
    """The server's A record for a name: 192.0.2.<first label length>, so replies can be told apart."""
    return f"192.0.2.{query.qname[0]}"


class DoTServer:
    """A real DNS-over-TLS server on 127.0.0.1 port 0 that answers A queries.

    ``hold``: keep replies until this many queries are in, then answer them in reverse order
    (proves pipelining and out-of-order matching).  ``drop_on_query``: close the connection
    instead of answering.  ``issued=None``: plain TCP that never speaks TLS (a stalled handshake).
    """

    def __init__(self, issued: Issued | None, *, hold: int = 1, drop_on_query: bool = False) -> None:
        self.issued = issued
        self.hold = hold
        self.drop_on_query = drop_on_query
        self.connections = 0
        self.queries: list[wire.Query] = []
        self.protocols: list[Any] = []
        self.lost: list[defer.Deferred[None]] = []
        self.held: list[tuple[Any, wire.Query]] = []     # (connection, query) not answered yet
        self.port: Any = None

    @property
    def port_number(self) -> int:
        """The kernel-chosen listening port."""
        return int(self.port.getHost().port)

    def upstream(self, server_name: str = SERVER_NAME) -> Upstream:
        """How the forwarder names this server."""
        return Upstream("tls", "127.0.0.1", self.port_number, server_name)

    def drop_all(self) -> None:
        """Close every open connection from the server side."""
        for proto in self.protocols:
            if proto.transport is not None and proto.connected:
                proto.transport.loseConnection()

    @defer.inlineCallbacks
    def start(self, testcase: unittest.TestCase) -> Any:
        """Listen on 127.0.0.1 port 0 (TLS with ``issued``, else plain TCP) until cleanup."""
        if self.issued is None:
            factory = protocol.ServerFactory.forProtocol(_Mute)
            endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        else:
            factory = protocol.ServerFactory.forProtocol(_Answering)
            cert = ssl.PrivateCertificate.loadPEM(self.issued.cert_pem + self.issued.key_pem)
            endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, cert.options(), interface="127.0.0.1")
        factory.noisy = False
        factory.server = self   # type: ignore[attr-defined]
        self.port = yield endpoint.listen(factory)
        testcase.addCleanup(self.stop)
        return self

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop listening once every connection is gone (clients close theirs first)."""
        yield defer.gatherResults(list(self.lost))
        yield self.port.stopListening()


class _Mute(protocol.Protocol):
    """Counts its connection and says nothing: a TLS handshake to it never completes."""

    factory: Any

    def connectionMade(self) -> None:  # noqa: N802
        server = self.factory.server
        server.connections += 1
        server.protocols.append(self)
        self.gone: defer.Deferred[None] = defer.Deferred()
        server.lost.append(self.gone)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        self.gone.callback(None)


class _Answering(_Mute, Int16StringReceiver):
    """Answers length-prefixed queries as the server's options say (RFC 7858 framing)."""

    def stringReceived(self, data: bytes) -> None:  # noqa: N802
        server = self.factory.server
        query = wire.parse_query(data)
        server.queries.append(query)
        if server.drop_on_query:
            self.transport.loseConnection()
            return
        server.held.append((self, query))
        if len(server.held) >= server.hold:
            for proto, q in reversed(server.held):
                proto.sendString(answer_a(q, [address_for(q)]))
            server.held.clear()


# --- tests --------------------------------------------------------------------------------------

class DoTForwardingTests(unittest.TestCase):
    """The forwarder's tls:// upstreams: verified, pipelined, reconnecting, never plaintext."""

    timeout = 15

    def setUp(self) -> None:
        self.ca_file = os.path.abspath(self.mktemp())
        with open(self.ca_file, "wb") as handle:
            handle.write(pki()["ca"].cert_pem)
        self.client_connections: list[Any] = []

    @defer.inlineCallbacks
    def server(self, cert: str | None, **options: Any) -> Any:
        """A started DoT server presenting ``pki()[cert]`` (None: plain TCP that never speaks TLS)."""
        server = yield DoTServer(pki()[cert] if cert else None, **options).start(self)
        return server

    def forwarder(self, upstreams: list[Upstream], *, ca_file: str | None = "test-ca",
                  connect_timeout: float = TIMEOUT_SECONDS) -> Forwarder:
        """A Forwarder over ``upstreams`` trusting the test CA; closed, with its connections, at cleanup."""
        if ca_file == "test-ca":
            ca_file = self.ca_file
        config = ForwardConfig(tuple(upstreams), timeout=TIMEOUT_SECONDS, total_timeout=TIMEOUT_SECONDS,
                               tls_ca_file=ca_file)
        connect = tls_connector(reactor, connect_timeout, ca_file)

        def recording(client: Any) -> defer.Deferred[Any]:
            return connect(client).addCallback(lambda conn: self.client_connections.append(conn) or conn)

        forwarder = Forwarder(reactor, config, tls_connector=recording)
        self.addCleanup(self.close, forwarder)
        return forwarder

    def close(self, forwarder: Forwarder) -> defer.Deferred[Any]:
        """Close the forwarder and wait until each of its connections is really gone."""
        forwarder.close()
        return defer.gatherResults([conn.closed for conn in self.client_connections])

    def query(self, forwarder: Forwarder, name: str) -> defer.Deferred[Any]:
        """Ask for the A records of ``name``."""
        return forwarder.query(wire.from_text(name), wire.A)

    def addresses(self, reply: Any) -> list[str]:
        """The A records of an answer, as dotted quads (a ``wire.Message``, or a lazily parsed
        ``wire.Reply`` that holds one)."""
        message = getattr(reply, "message", reply)
        return [".".join(str(b) for b in r.rdata) for r in message.answer if r.rtype == wire.A]

    @defer.inlineCallbacks
    def test_query_over_tls(self):
        """A query to a tls:// upstream with a valid certificate is answered over TLS."""
        server = yield self.server("good")
        forwarder = self.forwarder([server.upstream()])
        reply = yield self.query(forwarder, "www.example.net")
        self.assertEqual(self.addresses(reply), ["192.0.2.3"])
        self.assertEqual(reply.rcode, wire.NOERROR)
        self.assertEqual((server.connections, len(server.queries)), (1, 1))
        self.assertEqual(forwarder.udp.sockets, [])          # nothing went out over plain UDP

    @defer.inlineCallbacks
    def test_concurrent_queries_share_one_connection(self):
        """Three concurrent queries are pipelined on one connection and matched out of order."""
        server = yield self.server("good", hold=3)           # answers only once all three are in, reversed
        forwarder = self.forwarder([server.upstream()])
        names = ["a.example.net", "bb.example.net", "ccc.example.net"]
        replies = yield defer.gatherResults([self.query(forwarder, n) for n in names])
        self.assertEqual([self.addresses(r) for r in replies], [["192.0.2.1"], ["192.0.2.2"], ["192.0.2.3"]])
        self.assertEqual(server.connections, 1)
        self.assertEqual(len(server.queries), 3)
        self.assertEqual(len(self.client_connections), 1)

    @defer.inlineCallbacks
    def test_reconnects_after_server_closes(self):
        """When the server closes an idle connection, the next query opens a new verified one."""
        server = yield self.server("good")
        forwarder = self.forwarder([server.upstream()])
        reply = yield self.query(forwarder, "one.example.net")
        self.assertEqual(self.addresses(reply), ["192.0.2.3"])
        server.drop_all()
        yield self.client_connections[0].closed
        reply = yield self.query(forwarder, "four.example.net")
        self.assertEqual(self.addresses(reply), ["192.0.2.4"])
        self.assertEqual((server.connections, len(server.queries)), (2, 2))

    @defer.inlineCallbacks
    def test_connection_lost_fails_pending_query_at_once(self):
        """A query pending when the server drops the connection fails with UpstreamError at once,
        not at its timeout."""
        server = yield self.server("good", drop_on_query=True)
        forwarder = self.forwarder([server.upstream()])
        start = reactor.seconds()
        failure = yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertLess(reactor.seconds() - start, TIMEOUT_SECONDS / 2)
        self.assertIn("connection lost", str(failure))
        self.assertEqual(len(server.queries), 1)

    @defer.inlineCallbacks
    def test_wrong_name_certificate_fails_without_plaintext(self):
        """A certificate for another name fails the upstream at once; no query reaches the server
        and nothing is retried in plaintext."""
        server = yield self.server("wrong_name")
        forwarder = self.forwarder([server.upstream()])
        start = reactor.seconds()
        failure = yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertLess(reactor.seconds() - start, TIMEOUT_SECONDS / 2)
        self.assertIn(f"not valid for {SERVER_NAME}", str(failure))
        self.assertEqual(server.connections, 1)               # it connected, then refused the handshake
        self.assertEqual(server.queries, [])
        self.assertEqual(forwarder.udp.sockets, [])
        self.assertEqual([u.scheme for u in forwarder.streams], ["tls"])
        self.assertEqual(self.client_connections, [])         # never handed to the forwarder

    @defer.inlineCallbacks
    def test_untrusted_ca_fails(self):
        """A certificate with the right name from a CA outside tls_ca_file is rejected."""
        server = yield self.server("untrusted")
        forwarder = self.forwarder([server.upstream()])
        failure = yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertIn("TLS handshake failed", str(failure))
        self.assertIn("certificate verify failed", str(failure))
        self.assertEqual(server.queries, [])

    @defer.inlineCallbacks
    def test_system_trust_store_does_not_trust_test_ca(self):
        """Without tls_ca_file the system store is used, so the private test CA is not trusted."""
        server = yield self.server("good")
        forwarder = self.forwarder([server.upstream()], ca_file=None)
        yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertEqual(server.queries, [])

    @defer.inlineCallbacks
    def test_bad_certificate_upstream_is_skipped_for_the_next(self):
        """With a bad-certificate DoT upstream first and a good one second, the query succeeds via
        the second and the first is marked down."""
        bad = yield self.server("wrong_name")
        good = yield self.server("good")
        forwarder = self.forwarder([bad.upstream(), good.upstream()])
        reply = yield self.query(forwarder, "www.example.net")
        self.assertEqual(self.addresses(reply), ["192.0.2.3"])
        self.assertEqual((bad.connections, len(bad.queries)), (1, 0))
        self.assertEqual((good.connections, len(good.queries)), (1, 1))
        pool = forwarder.pools[0]
        self.assertEqual(pool.health[bad.upstream()].failures, 1)

    @defer.inlineCallbacks
    def test_stalled_handshake_times_out_and_frees_the_upstream(self):
        """A server that accepts TCP but never completes the handshake fails the query after the
        connect timeout, its connection is closed, and the next query tries a fresh connection."""
        server = yield self.server(None)
        forwarder = self.forwarder([server.upstream()], connect_timeout=STALL_TIMEOUT_SECONDS)
        start = reactor.seconds()
        failure = yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertLess(reactor.seconds() - start, TIMEOUT_SECONDS)
        self.assertIn(f"TLS connection not established in {STALL_TIMEOUT_SECONDS:g}s", str(failure))
        yield defer.gatherResults(list(server.lost))          # the client gave the connection up
        yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertEqual(server.connections, 2)

    @defer.inlineCallbacks
    def test_unusable_ca_file_fails_every_tls_query(self):
        """A tls_ca_file without certificates never falls back to another trust root: DoT fails."""
        empty = os.path.abspath(self.mktemp())
        with open(empty, "w", encoding="utf-8") as handle:
            handle.write("not a certificate\n")
        server = yield self.server("good")
        forwarder = self.forwarder([server.upstream()], ca_file=empty)
        failure = yield self.assertFailure(self.query(forwarder, "www.example.net"), UpstreamError)
        self.assertIn("tls_ca_file", str(failure))
        self.assertEqual(server.connections, 0)

    @defer.inlineCallbacks
    def test_ca_file_with_several_cas(self):
        """Every CA in tls_ca_file is trusted, not only the first."""
        both = os.path.abspath(self.mktemp())
        with open(both, "wb") as handle:
            handle.write(pki()["rogue"].cert_pem + pki()["ca"].cert_pem)
        server = yield self.server("good")
        forwarder = self.forwarder([server.upstream()], ca_file=both)
        reply = yield self.query(forwarder, "www.example.net")
        self.assertEqual(self.addresses(reply), ["192.0.2.3"])


class ServiceDoTTests(unittest.TestCase):
    """The real service, configured from TOML, forwards over DNS-over-TLS."""

    timeout = 15

    @defer.inlineCallbacks
    def test_service_forwards_to_tls_upstream(self):
        """A client's UDP query is forwarded to the tls:// upstream named in the config, verified
        against [forward] tls_ca_file."""
        server = yield DoTServer(pki()["good"]).start(self)
        connections: list[Any] = []
        self.addCleanup(lambda: defer.gatherResults([c.closed for c in connections]))   # after the service stops
        config = f"""
        [forward]
        upstreams = ["tls://127.0.0.1:{server.port_number}#{SERVER_NAME}"]
        timeout = {TIMEOUT_SECONDS}
        total_timeout = {TIMEOUT_SECONDS}
        tls_ca_file = "ca.pem"
        """
        service, host, port = start_server(self, config, files={"ca.pem": pki()["ca"].cert_pem.decode()})
        reply = yield query(host, port, "www.example.net")
        self.assertEqual(rrs(reply), ["www.example.net. 300 A 192.0.2.3"])
        connections += [c.connection for c in service.forwarder.streams.values() if c.connection is not None]
        self.assertEqual((len(connections), server.connections, len(server.queries)), (1, 1, 1))


class HandshakeGateTests(unittest.TestCase):
    """A connection is handed over only after a handshake that really succeeded."""

    def test_completion_reported_on_an_aborting_connection_is_a_failure(self):
        """Completion reported while the connection is being aborted (older Twisted's late hostname
        check) never makes the connection usable; the loss that follows fails it."""
        upstream = Upstream("tls", "127.0.0.1", 853, SERVER_NAME)
        conn = _TLSStreamConnection(StreamClient(task.Clock(), upstream, Stats(), lambda c: defer.Deferred()))
        transport = StringTransport()
        conn.makeConnection(transport)
        transport.loseConnection()
        conn.handshakeCompleted()
        self.assertNoResult(conn.handshake)
        conn.connectionLost(Failure(VerificationError(errors=[])))
        self.failureResultOf(conn.handshake, VerificationError)
        self.assertIsNone(self.successResultOf(conn.closed))


class ServiceWiringTests(unittest.TestCase):
    """service.py builds a TLS connector only where a tls:// upstream is configured."""

    def config(self, text: str) -> Any:
        """Parse a TOML config as if it lived in a fresh directory."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return parse_config(textwrap.dedent(text), os.path.join(path, "smartdns.toml"))

    def test_no_tls_upstream_no_connector(self):
        """Plain upstreams only: no TLS connector is built."""
        config = self.config("""
        [forward]
        upstreams = ["127.0.0.1:5399", "tcp://127.0.0.1:5398"]
        """)
        self.assertIsNone(_tls_connector(reactor, config))

    def test_tls_upstream_in_default_pool(self):
        """A tls:// upstream in [forward] upstreams gets a connector."""
        config = self.config("""
        [forward]
        upstreams = ["tls://127.0.0.1:853#dns.test.example"]
        """)
        self.assertTrue(callable(_tls_connector(reactor, config)))

    def test_tls_upstream_in_forward_zone(self):
        """A tls:// upstream only in a [[forward.zone]] gets a connector too."""
        config = self.config("""
        [forward]
        upstreams = ["127.0.0.1:5399"]

        [[forward.zone]]
        name = "corp.example."
        upstreams = ["tls://127.0.0.1:853#dns.test.example"]
        """)
        self.assertTrue(callable(_tls_connector(reactor, config)))
