"""DNS-over-TLS upstream connections (RFC 7858): the ``connect`` callable for ``tls://`` upstreams.

``StreamClient`` (forwarder.py) owns reuse, pipelining and reconnects; this module only opens
a connection it may trust.  The certificate must chain to the configured trust root (the system
store, or only the CAs in ``[forward] tls_ca_file``) and must name the upstream's
``server_name`` (RFC 8310 strict privacy profile: no opportunistic fallback).

The connection is handed over only after the TLS handshake has succeeded.  Twisted's
``connectProtocol`` fires at TCP connect, before the handshake; handing the connection over then
would let queries queue on a connection whose certificate is later rejected.  Waiting for the
handshake means that a bad certificate fails the connect itself: every waiting query errbacks at
once with ``UpstreamError``, the forwarder moves on to the next upstream, and not one query byte
is ever given to the TLS layer of an unverified connection (nor sent in plaintext: there is no
plaintext path here at all).  The TCP connect and the handshake together are bounded by
``timeout``, so a server that accepts but never completes the handshake cannot hold the
upstream's connection slot forever.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from service_identity import VerificationError
from twisted.internet import defer, endpoints, error as ierror, protocol, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from smartdns.errors import UpstreamError
from smartdns.forwarder import StreamClient, _StreamConnection

log = Logger()

Connect = Callable[[StreamClient], "defer.Deferred[_StreamConnection]"]


def load_trust_root(ca_file: str | None) -> Any:
    """An ``IOpenSSLTrustRoot``: the system store for None, else exactly the CAs in the PEM file.

    Raises OSError when the file cannot be read and ValueError when it holds no certificate.
    """
    if not ca_file:
        return ssl.platformTrust()  # type: ignore[no-untyped-call]
    with open(ca_file, "rb") as handle:
        data = handle.read()
    certificates = x509.load_pem_x509_certificates(data)   # ValueError when there are none
    return ssl.trustRootFromCertificates(  # type: ignore[no-untyped-call]
        [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates])


@implementer(IHandshakeListener)
class _TLSStreamConnection(_StreamConnection):
    """A stream connection that reports when its TLS handshake (and certificate check) is done."""

    def __init__(self, owner: StreamClient) -> None:
        super().__init__(owner)
        self.handshake: defer.Deferred[_StreamConnection] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()   # fires once the connection is gone

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted API)
        # Older Twisted releases check the hostname in an info callback once OpenSSL has finished
        # the handshake: a mismatch aborts the connection yet completion is still reported.  The
        # connectionLost that follows fails the handshake instead.
        if getattr(self.transport, "disconnecting", False):
            return
        if not self.handshake.called:
            self.handshake.callback(self)

    def fail_handshake(self, reason: Failure) -> None:
        """The connection will never be usable: report why to whoever waits for it."""
        if not self.handshake.called:
            self.handshake.errback(reason)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802 (Twisted API)
        super().connectionLost(reason)
        self.fail_handshake(reason)
        if not self.closed.called:
            self.closed.callback(None)


def _tcp_endpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """An endpoint for the upstream's address; IP literals never go through name resolution."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 6:
        return endpoints.TCP6ClientEndpoint(reactor, host, port, timeout=timeout)  # type: ignore[no-untyped-call]
    return endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


def _describe(reason: Failure, server_name: str) -> str:
    """A one-line cause for a connection that never became usable."""
    if isinstance(reason.value, VerificationError):
        return f"TLS certificate is not valid for {server_name}"
    if isinstance(reason.value, ierror.ConnectError):
        return f"connect failed: {reason.getErrorMessage()}"
    return f"TLS handshake failed: {reason.getErrorMessage()}"


def _establish(reactor: Any, endpoint: Any, conn: _TLSStreamConnection, server_name: str,
               timeout: float) -> defer.Deferred[_StreamConnection]:
    """TCP connect plus a verified handshake within ``timeout``; the connection, or UpstreamError."""
    result: defer.Deferred[_StreamConnection] = defer.Deferred()
    connecting = endpoints.connectProtocol(endpoint, conn)  # type: ignore[no-untyped-call]
    state = {"timed_out": False}

    def expire() -> None:
        state["timed_out"] = True
        if not connecting.called:
            connecting.cancel()                 # errbacks ``connecting``, which fails the handshake
        elif conn.transport is not None and conn.connected:
            conn.transport.abortConnection()    # connectionLost fails the handshake
        else:
            conn.fail_handshake(Failure(ierror.TimeoutError()))  # type: ignore[no-untyped-call]

    timer = reactor.callLater(timeout, expire)
    connecting.addErrback(conn.fail_handshake)

    def settle(outcome: Any) -> None:
        if timer.active():
            timer.cancel()
        if isinstance(outcome, Failure):
            if state["timed_out"]:
                message = f"TLS connection not established in {timeout:g}s"
            else:
                message = _describe(outcome, server_name)
            result.errback(UpstreamError(message))
        else:
            result.callback(outcome)

    conn.handshake.addBoth(settle)
    return result


def tls_connector(reactor: Any, timeout: float, ca_file: str | None) -> Connect:
    """The ``connect`` callable for ``tls://`` upstreams (``Forwarder(tls_connector=...)``).

    Certificates are checked against ``client.upstream.server_name`` (its IP address when no
    name is given) and the trust root from ``ca_file`` (None: the system store).  A CA file that
    cannot be loaded is logged once and makes every DoT connect fail; it never weakens the check.
    """
    try:
        trust = load_trust_root(ca_file)
    except (OSError, ValueError) as e:
        problem = f"tls_ca_file {ca_file!r} unusable: {e}"
        log.error("DNS-over-TLS upstreams cannot be used: {problem}", problem=problem)

        def refuse(client: StreamClient) -> defer.Deferred[_StreamConnection]:
            return defer.fail(UpstreamError(problem))

        return refuse

    creators: dict[str, Any] = {}   # one TLS context per server name, built on first use

    def connect(client: StreamClient) -> defer.Deferred[_StreamConnection]:
        upstream = client.upstream
        name = upstream.server_name or upstream.host
        creator = creators.get(name)
        if creator is None:
            creator = creators[name] = ssl.optionsForClientTLS(name, trustRoot=trust)
        endpoint = endpoints.wrapClientTLS(creator, _tcp_endpoint(reactor, upstream.host, upstream.port, timeout))
        return _establish(reactor, endpoint, _TLSStreamConnection(client), name, timeout)

    return connect
