"""Encrypted listeners: DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484).

Both answer through the same ``QueryHandler`` as UDP and TCP, with TCP-shaped responses (no
UDP size limit), and choose the client's line from the connection's peer address: the TLS
client for DoT, the HTTP client for DoH.  ``X-Forwarded-For`` is read only when the HTTP peer
is in ``[server] trusted_proxies`` (a reverse proxy in front of smartdns): the client is then
the right-most address in it that is not itself a trusted proxy, so a client cannot pick its
own line by sending the header.

- DoT is the TCP listener's protocol (``server.DNSStreamProtocol``: RFC 7766 framing,
  pipelining, idle timeout, connection cap) inside TLS.  It has its own connection count,
  limited like TCP by ``[server] tcp_max_connections`` and ``tcp_idle_timeout``.
- DoH serves ``/dns-query`` with twisted.web: GET with ``?dns=`` (base64url, no padding) and
  POST with an ``application/dns-message`` body.  HTTP/1.1 always; HTTP/2 is offered by ALPN
  when Twisted's HTTP/2 support (the ``h2`` package) is installed.  ``Cache-Control: max-age``
  is the smallest TTL in the answer (RFC 8484 §5.1).

The certificate is read by ``smartdns.certs`` (the same check as the configuration's).
``EncryptedListeners.apply`` takes a new ``[server]`` on reload: new limits, and the certificate
files read again, so a renewed certificate is used for new connections without a restart.
"""
from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any, Callable

from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import http, resource, server as web
from zope.interface import implementer  # type: ignore[import-untyped]

from smartdns import wire
from smartdns.certs import CertificatePair, CertificateProblem, load_certificate_pair
from smartdns.config import ServerConfig
from smartdns.errors import ListenError
from smartdns.lines import AddressSet
from smartdns.server import QueryHandler, SmartDNSServerFactory

log = Logger()

DOH_PATH = b"dns-query"
DOH_CONTENT_TYPE = b"application/dns-message"
MAX_MESSAGE_BYTES = 65535           # the largest DNS message (RFC 8484 §6 allows no more)
LISTEN_BACKLOG = 1024
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*\Z")


def _normalise(host: str) -> str:
    """An IPv6 peer's scope (``fe80::1%eth0``) is not part of its address for lines."""
    return host.split("%", 1)[0]


# -- TLS ------------------------------------------------------------------------------------------

def _server_context(pair: CertificatePair, alpn: tuple[bytes, ...]) -> SSL.Context:
    """A server TLS context for a key and chain, with Twisted's defaults (TLS 1.2 and later,
    its cipher list), preferring the first of ``alpn`` the client offers.

    A client offering none of them still gets a connection, without ALPN: Twisted's own select
    callback would abort the handshake instead (kdig offers "dot"; a DoT listener that knew no
    ALPN would refuse it)."""
    from twisted.internet import ssl

    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(pair.key),
        certificate=crypto.X509.from_cryptography(pair.chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in pair.chain[1:]],
    )
    context: SSL.Context = options.getContext()     # built for this listener alone

    def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
        for protocol in alpn:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    context.set_alpn_select_callback(select)
    return context


@implementer(IOpenSSLServerConnectionCreator)
class ServerCertificate:
    """The TLS settings a listener serves with; ``replace`` changes them for new connections
    only (connections already open keep the certificate they were given)."""

    def __init__(self, pair: CertificatePair, alpn: tuple[bytes, ...]) -> None:
        self.alpn = alpn
        self._context = _server_context(pair, alpn)

    def replace(self, pair: CertificatePair) -> None:
        """Serve new connections with this key and chain."""
        self._context = _server_context(pair, self.alpn)

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:  # noqa: N802 (Twisted API)
        return SSL.Connection(self._context, None)


# -- DNS over HTTPS ---------------------------------------------------------------------------------

def decode_dns_parameter(value: bytes) -> bytes:
    """The message in a GET ``dns`` parameter: base64url without padding (RFC 8484 §4.1);
    ValueError otherwise."""
    if not _BASE64URL.match(value) or len(value) % 4 == 1:
        raise ValueError("the dns parameter is not base64url without padding")
    return base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))


def max_age(response: bytes) -> int:
    """Seconds a DoH answer may be cached: the smallest TTL among its records (RFC 8484 §5.1),
    0 for an answer with none."""
    try:
        message = wire.parse_message(response)
    except wire.FormError:
        return 0
    ttls = [r.ttl for section in (message.answer, message.authority, message.additional) for r in section]
    return min(ttls, default=0)


class DNSQueryResource(resource.Resource):
    """``/dns-query``: GET and POST (and HEAD, as GET without a body); 405 for other methods."""

    isLeaf = True

    def __init__(self, handler: QueryHandler, trusted_proxies: AddressSet | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.handler = handler
        self.trusted_proxies = trusted_proxies

    def client_of(self, request: Any) -> str:
        """The address the answer is for (it chooses the line): the HTTP peer, or for a trusted
        proxy the right-most ``X-Forwarded-For`` address that is not a trusted proxy."""
        peer = _normalise(request.getClientAddress().host)
        trusted = self.trusted_proxies
        if trusted is None or not trusted.contains(peer):
            return peer
        header = b",".join(request.requestHeaders.getRawHeaders(b"x-forwarded-for", []))
        for item in reversed(header.decode("latin-1").split(",")):
            text = item.strip()
            try:
                address = str(ipaddress.ip_address(text))
            except ValueError:
                return peer                       # a garbled header: the proxy itself answers for it
            if not trusted.contains(address):
                return address
        return peer

    def render(self, request: Any) -> Any:
        """405 with ``Allow`` for any other method (twisted.web would say 501 to PUT or DELETE)."""
        if request.method not in (b"GET", b"HEAD", b"POST"):
            request.setHeader(b"allow", b"GET, HEAD, POST")
            return _refuse(request, http.NOT_ALLOWED, "use GET or POST")
        return super().render(request)  # type: ignore[no-untyped-call]

    def render_GET(self, request: Any) -> Any:  # noqa: N802 (twisted.web API)
        values = request.args.get(b"dns")
        if values is None or len(values) != 1:
            return _refuse(request, http.BAD_REQUEST, "a GET needs exactly one dns parameter")
        try:
            data = decode_dns_parameter(values[0])
        except ValueError as e:
            return _refuse(request, http.BAD_REQUEST, str(e))
        return self._answer(request, data)

    def render_POST(self, request: Any) -> Any:  # noqa: N802 (twisted.web API)
        content_type = request.getHeader(b"content-type") or b""
        if content_type.split(b";", 1)[0].strip().lower() != DOH_CONTENT_TYPE:
            return _refuse(request, http.UNSUPPORTED_MEDIA_TYPE, "the body must be application/dns-message")
        data = request.content.read(MAX_MESSAGE_BYTES + 1)
        if len(data) > MAX_MESSAGE_BYTES:
            return _refuse(request, http.REQUEST_ENTITY_TOO_LARGE, "a DNS message is at most 65535 bytes")
        return self._answer(request, data)

    def _answer(self, request: Any, data: bytes) -> Any:
        """Hand the message to the handler as a TCP query from the HTTP peer; reply when ready."""
        if len(data) < wire.HEADER.size or data[2] & 0x80:
            return _refuse(request, http.BAD_REQUEST, "not a DNS query message")
        client = self.client_of(request)
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        handle: Callable[[bytes, str, bool], Any] = self.handler.handle
        answered: defer.Deferred[bytes | None] = defer.maybeDeferred(handle, data, client, True)
        answered.addErrback(self._servfail, data, client)
        answered.addCallback(self._respond, request, gone)
        answered.addErrback(lambda f: log.failure("sending a DoH answer failed", f))
        return web.NOT_DONE_YET

    def _servfail(self, reason: Failure, data: bytes, client: str) -> bytes | None:
        """A bug on the answer path: SERVFAIL, never a hung request (as ``server.dispatch``)."""
        log.failure("unexpected error answering a DoH query from {client}", reason, client=client)
        return self.handler.servfail(data, True)

    def _respond(self, answer: bytes | None, request: Any, gone: list[Failure]) -> None:
        if gone:
            return                                  # the client went away meanwhile
        if answer is None:
            # What UDP would drop (an unreadable message, a "drop" policy) cannot go unanswered
            # over HTTP without stalling the connection.
            request.write(_refuse(request, http.BAD_REQUEST, "the query was not answered"))
            request.finish()
            return
        request.setHeader(b"content-type", DOH_CONTENT_TYPE)
        request.setHeader(b"cache-control", b"max-age=%d" % max_age(answer))
        request.setHeader(b"content-length", b"%d" % len(answer))
        request.write(answer)
        request.finish()


def _refuse(request: Any, code: int, reason: str) -> bytes:
    """An HTTP error with a one-line plain-text body saying why."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    body = reason.encode("utf-8") + b"\n"
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class _DoHSite(web.Site):
    """The DoH site: no access log line per request (UDP and TCP queries are not logged one by
    one either; twisted.web would write each to the twistd log)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class _ConnectionCap(policies.WrappingFactory):
    """Wraps the TLS factory of the HTTP site: refuses connections beyond ``max_connections``
    open at once (before any TLS work), and sets the idle timeout of each new HTTP connection
    (read when it opens, so a reload applies to new connections)."""

    noisy = False

    def __init__(self, tls: TLSMemoryBIOFactory, site: web.Site, idle_timeout: float, max_connections: int) -> None:
        super().__init__(tls)  # type: ignore[no-untyped-call]
        self.site = site
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (Twisted API)
        if len(self.protocols) >= self.max_connections:
            log.info("DoH connection limit {limit} reached; closing {client}",
                     limit=self.max_connections, client=getattr(addr, "host", addr))
            return None                                 # the reactor closes the connection
        self.site.timeOut = self.idle_timeout
        return super().buildProtocol(addr)


# -- the listeners -------------------------------------------------------------------------------

class EncryptedListeners:
    """The DoT and DoH listeners of one process, bound before privileges are dropped."""

    def __init__(self, reactor: Any, handler: QueryHandler, server: ServerConfig) -> None:
        self.reactor = reactor
        self.server = server
        pair = _pair(server)
        self.dot_certificate = ServerCertificate(pair, (b"dot",))       # the ALPN id of RFC 7858 DoT
        # ALPN: HTTP/2 only where Twisted can speak it (BIND's dig needs h2; curl takes either).
        self.doh_certificate = ServerCertificate(pair, (b"h2", b"http/1.1") if http.H2_ENABLED else (b"http/1.1",))
        self.dot_factory = SmartDNSServerFactory(handler, server.tcp_idle_timeout, server.tcp_max_connections)
        root = resource.Resource()  # type: ignore[no-untyped-call]
        self.doh_resource = DNSQueryResource(handler, AddressSet(server.trusted_proxies) if server.trusted_proxies
                                             else None)
        root.putChild(DOH_PATH, self.doh_resource)  # type: ignore[arg-type]
        site = _DoHSite(root, reactor=reactor)  # type: ignore[no-untyped-call]
        self.doh_factory = _ConnectionCap(_tls_factory(self.doh_certificate, site), site,
                                          server.tcp_idle_timeout, server.tcp_max_connections)
        self.dot_tls_factory = _tls_factory(self.dot_certificate, self.dot_factory)
        self.ports: list[tuple[str, Any]] = []            # ("tls" or "https", listening port)

    def listen(self) -> None:
        """Bind every ``tls_listen`` and ``https_listen`` address; ListenError for a busy one."""
        for kind, addresses, factory in (("tls", self.server.tls_listen, self.dot_tls_factory),
                                         ("https", self.server.https_listen, self.doh_factory)):
            for host, port in addresses:
                try:
                    bound = self.reactor.listenTCP(port, factory, interface=host, backlog=LISTEN_BACKLOG)
                except CannotListenError as e:
                    raise ListenError(host, port, kind, e) from None
                self.ports.append((kind, bound))
                log.info("smartdns listening on {host} port {port} ({kind})", host=host,
                         port=bound.getHost().port, kind="DNS over TLS" if kind == "tls" else "DNS over HTTPS")

    def addresses(self, kind: str) -> list[tuple[str, int]]:
        """(host, port) of each listener of a kind ("tls" or "https"), for tests and logs."""
        return [(p.getHost().host, p.getHost().port) for k, p in self.ports if k == kind]

    def apply(self, server: ServerConfig) -> None:
        """A reloaded ``[server]``: limits for new connections, and the certificate files read
        again.  Addresses are only bound at start.  A pair that no longer loads (changed between
        the check and now) is logged and the old one kept."""
        if (server.tls_listen, server.https_listen) != (self.server.tls_listen, self.server.https_listen):
            log.warn("[server] tls_listen/https_listen changed: listeners are only bound at start, restart to apply")
        self.doh_resource.trusted_proxies = AddressSet(server.trusted_proxies) if server.trusted_proxies else None
        self.dot_factory.idle_timeout = self.doh_factory.idle_timeout = server.tcp_idle_timeout
        self.dot_factory.max_connections = self.doh_factory.max_connections = server.tcp_max_connections
        try:
            pair = _pair(server)
        except CertificateProblem as e:
            log.error("keeping the old TLS certificate: {key} {problem}", key=e.key, problem=e.message)
        else:
            self.dot_certificate.replace(pair)
            self.doh_certificate.replace(pair)
        self.server = server

    def stop(self) -> defer.Deferred[Any]:
        """Stop listening (open connections are not cut)."""
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for _kind, p in ports])


def _tls_factory(certificate: ServerCertificate, wrapped: Any) -> TLSMemoryBIOFactory:
    """TLS (server side) around ``wrapped`` (zope interfaces that mypy cannot see declared)."""
    return TLSMemoryBIOFactory(certificate, False, wrapped)  # type: ignore[arg-type]


def _pair(server: ServerConfig) -> CertificatePair:
    if not server.tls_cert_file or not server.tls_key_file:
        raise CertificateProblem("tls_cert_file", "is not set")
    return load_certificate_pair(server.tls_cert_file, server.tls_key_file)


def listen_encrypted(reactor: Any, handler: QueryHandler, server: ServerConfig) -> EncryptedListeners | None:
    """Bind the DoT and DoH listeners ``server`` asks for (None when it asks for none)."""
    if not server.tls_listen and not server.https_listen:
        return None
    try:
        listeners = EncryptedListeners(reactor, handler, server)
    except CertificateProblem as e:          # the files changed since the configuration was checked
        kind, (host, port) = ("tls", server.tls_listen[0]) if server.tls_listen else ("https", server.https_listen[0])
        raise ListenError(host, port, kind, ValueError(f"{e.key}: {e.message}")) from None
    try:
        listeners.listen()
    except ListenError:
        listeners.stop()
        raise
    return listeners
