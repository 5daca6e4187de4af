"""Shared integration fixtures: the real service on loopback, fake upstreams, real clients.

Everything here uses real sockets on 127.0.0.0/8.  Clients are dnspython (run in a thread so
the reactor serving the answers keeps running) and ``dig`` (run as a child process).
"""
from __future__ import annotations

import os
import shutil
import struct
import textwrap
from typing import Any, Callable

import dns.message
import dns.query
import dns.rdatatype
from twisted.internet import defer, protocol, reactor, threads, utils
from twisted.internet.error import CannotListenError
from twisted.protocols.basic import Int16StringReceiver
from twisted.trial import unittest

from smartdns import wire
from smartdns.config import parse_config
from smartdns.service import SmartDNSService
from smartdns.snapshot import build_snapshot

CLIENT_TIMEOUT_SECONDS = 5.0

Answerer = Callable[[wire.Query, str], "bytes | None"]


def write_tree(base: str, files: dict[str, str]) -> None:
    """Write ``{relative path: text}`` under ``base`` (text is dedented)."""
    for rel, text in files.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(text).lstrip("\n"))


def answer_a(query: wire.Query, addresses: list[str], ttl: int = 300, rcode: int = wire.NOERROR,
             flags: int = 0) -> bytes:
    """A response to ``query`` with A records (the fake upstream's usual reply)."""
    rrset = wire.make_rrset(query.qkey, wire.A, ttl, [bytes(int(x) for x in a.split(".")) for a in addresses])
    sections = ((rrset,) if addresses else (), (), ())
    opt = wire.opt_record(1232, False) if query.edns else None
    return wire.render(query.id, wire.FLAG_QR | wire.FLAG_RA | (query.flags & wire.FLAG_RD) | flags | rcode,
                       query.question, sections, opt=opt)[0]


def answer_negative(query: wire.Query, rcode: int, soa_ttl: int = 3600, minimum: int = 60,
                    zone: str = "example.net") -> bytes:
    """NXDOMAIN or NODATA with the zone's SOA in the authority section (RFC 2308)."""
    origin = wire.from_text(zone)
    soa = wire.make_rrset(origin, wire.SOA, soa_ttl, [
        wire.from_text("ns." + zone) + wire.from_text("host." + zone) + struct.pack("!5I", 1, 2, 3, 4, minimum)])
    opt = wire.opt_record(1232, False) if query.edns else None
    return wire.render(query.id, wire.FLAG_QR | wire.FLAG_RA | (query.flags & wire.FLAG_RD) | rcode,
                       query.question, ((), (soa,), ()), opt=opt)[0]


class FakeUpstream:
    """A real UDP+TCP DNS server on a loopback port whose replies a test decides."""

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.queries: list[tuple[str, wire.Query]] = []   # (transport, query)
        self.udp: Any = None
        self.tcp: Any = None
        self.tcp_connections = 0
        self.last_client: Any = None                       # (host, port) of the last UDP query

    @property
    def port(self) -> int:
        return int(self.udp.getHost().port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _respond(self, data: bytes, transport: str) -> bytes | None:
        query = wire.parse_query(data)
        self.queries.append((transport, query))
        return self.answer(query, transport)

    def start(self, testcase: unittest.TestCase) -> "FakeUpstream":
        upstream = self

        class UDP(protocol.DatagramProtocol):
            noisy = False

            def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
                upstream.last_client = addr
                reply = upstream._respond(data, "udp")
                if reply is not None:
                    self.transport.write(reply, addr)

        class TCP(Int16StringReceiver):
            def connectionMade(self) -> None:  # noqa: N802
                upstream.tcp_connections += 1

            def stringReceived(self, data: bytes) -> None:  # noqa: N802
                reply = upstream._respond(data, "tcp")
                if reply is not None:
                    self.sendString(reply)

        factory = protocol.ServerFactory()
        factory.protocol = TCP
        factory.noisy = False
        for _ in range(20):     # one port number free for both UDP and TCP
            self.udp = reactor.listenUDP(0, UDP(), interface="127.0.0.1")
            try:
                self.tcp = reactor.listenTCP(self.port, factory, interface="127.0.0.1")
                break
            except CannotListenError:
                self.udp.stopListening()
        testcase.addCleanup(self.udp.stopListening)
        testcase.addCleanup(self.tcp.stopListening)
        return self


class ShiftedReactor:
    """The real reactor with a clock a test can move forward (TTLs, expiry); sockets and timers are
    the real reactor's, so nothing waits for the shifted time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return float(reactor.seconds()) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


def start_server(testcase: unittest.TestCase, config: str, files: dict[str, str] | None = None,
                 zones: dict[str, str] | None = None, clock: Any = None) -> tuple[SmartDNSService, str, int]:
    """Write a config (``listen`` on 127.0.0.1 port 0 is added when absent) and zone files into a
    temp dir, start the real service on the global reactor, stop it at cleanup."""
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(os.path.join(base, "zones"))
    tree = dict(files or {})
    for rel, text in (zones or {}).items():
        tree[os.path.join("zones", rel)] = text
    text = textwrap.dedent(config)
    if "[server]" not in text:
        text = '[server]\nlisten = ["127.0.0.1:0"]\ncontrol_socket = ""\n' + text
    tree["smartdns.toml"] = text
    write_tree(base, tree)
    path = os.path.join(base, "smartdns.toml")
    with open(path, encoding="utf-8") as handle:
        cfg = parse_config(handle.read(), path)
    service = SmartDNSService(cfg, build_snapshot(cfg), clock or reactor)
    service.startService()
    testcase.addCleanup(service.stopService)
    host, port = service.addresses()[0]
    return service, host, port


def query(host: str, port: int, name: str, rdtype: str | int = "A", *, tcp: bool = False,
          source: str = "127.0.0.1", edns: int | bool = False, payload: int = 1232,
          rd: bool = True, want_dnssec: bool = False) -> defer.Deferred[dns.message.Message]:
    """Ask with dnspython from ``source`` (in a thread, so this reactor keeps serving)."""
    msg = dns.message.make_query(name, rdtype, use_edns=(0 if edns is True else edns),
                                 payload=payload, want_dnssec=want_dnssec)
    if not rd:
        msg.flags &= ~dns.flags.RD
    if tcp:
        return threads.deferToThread(dns.query.tcp, msg, host, port=port, timeout=CLIENT_TIMEOUT_SECONDS,
                                     source=source)
    return threads.deferToThread(dns.query.udp, msg, host, port=port, timeout=CLIENT_TIMEOUT_SECONDS,
                                 source=source, ignore_trailing=False)


def raw_udp(host: str, port: int, data: bytes, *, timeout: float = 1.0,
            source: str = "") -> defer.Deferred[bytes | None]:
    """Send raw bytes over UDP (from ``source`` if given); the reply bytes, or None if nothing
    came back in ``timeout``."""
    import socket

    def run() -> bytes | None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if source:
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.sendto(data, (host, port))
            try:
                return sock.recv(65535)
            except socket.timeout:
                return None

    return threads.deferToThread(run)


def raw_tcp(host: str, port: int, chunks: list[bytes], *, replies: int, timeout: float = 2.0) -> defer.Deferred[list[bytes]]:
    """Send raw bytes on one TCP connection and read up to ``replies`` length-prefixed answers."""
    import socket

    def run() -> list[bytes]:
        out: list[bytes] = []
        with socket.create_connection((host, port), timeout=timeout) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            buf = b""
            try:
                while len(out) < replies:
                    data = sock.recv(65535)
                    if not data:
                        break
                    buf += data
                    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                        size = struct.unpack("!H", buf[:2])[0]
                        out.append(buf[2:2 + size])
                        buf = buf[2 + size:]
            except socket.timeout:
                pass
        return out

    return threads.deferToThread(run)


def dig_available() -> bool:
    """Whether the ``dig`` client is installed."""
    return shutil.which("dig") is not None


def dig(host: str, port: int, *args: str) -> defer.Deferred[str]:
    """Run ``dig`` against the server; its stdout."""
    path = shutil.which("dig")
    assert path is not None
    return utils.getProcessOutput(path, ("@" + host, "-p", str(port), "+time=3", "+tries=1", *args),
                                  env=os.environ, errortoo=True)


def rrs(message: dns.message.Message, section: str = "answer") -> list[str]:
    """A section's records as sorted ``name ttl class type rdata`` strings."""
    out = []
    for rrset in getattr(message, section):
        for rd in rrset:
            out.append(f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rd}")
    return sorted(out)
