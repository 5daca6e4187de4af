"""NOTIFY out (RFC 1996) to each ``[[transfer]] also_notify`` address, signed with the rule's key.

smartdns tells a rule's secondaries when the zones that rule's key would transfer changed: at
start (as BIND notifies on load) and after every reload whose snapshot changed that line's view
of a zone (``smartdns.journal``: a difference was recorded).  The message is BIND's: opcode
NOTIFY, AA, the zone's SOA question and the served SOA in the answer section (RFC 1996 §3.7),
TSIG-signed (RFC 8945) with the ``[[transfer]]`` key, so a secondary that matches views by key
(``match-clients { key line1-key; }``) files it under the right view.

Sent over UDP through the reactor (nothing blocks), from a socket bound to a ``[server] listen``
address (any port): the first of the target's family that is a loopback address when the target
is one, else the first that is not; a wildcard listen address, or none that fits, leaves the
choice to the system.  So a secondary that takes NOTIFY only from its primaries' addresses sees
the address it transfers from (what BIND's ``notify-source`` is set to).  With
no answer a NOTIFY is sent again after 2, 4, 8 and 16 seconds (5 tries, as BIND retries); an
answer — NOERROR, or an error such as REFUSED or NOTAUTH, which is logged — ends the retries.
A newer NOTIFY for the same zone, target and key replaces one still being retried.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from smartdns import wire
from smartdns.journal import soa_serial
from smartdns.tsig import TsigKey

log = Logger()

NOTIFY_TRIES = 5                       # BIND's notify retries: 5 sends in all
NOTIFY_FIRST_TIMEOUT_SECONDS = 2.0     # wait before the second try; doubles each time

Target = tuple[str, int]


@dataclass
class Outgoing:
    """One NOTIFY being sent to one target until it is answered or the tries run out."""

    target: Target
    origin: bytes
    soa: wire.RRset
    key: TsigKey
    tries: int = 0
    request: dns.message.Message | None = None
    timer: Any = None
    ids: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        host, port = self.target
        return f"NOTIFY {wire.to_text(self.origin)} serial {soa_serial(self.soa)} to {host}#{port} with key {self.key.name}"


@dataclass
class NotifyCounters:
    """What ``smartdns stats`` and the metrics say about NOTIFY out."""

    sent: int = 0          # messages sent (retries included)
    answered: int = 0      # NOTIFYs answered NOERROR
    refused: int = 0       # answered with an error rcode
    failed: int = 0        # all tries went unanswered


class _Socket(DatagramProtocol):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        self.notifier.received(datagram, (str(addr[0]), int(addr[1])))


class Notifier:
    """Sends NOTIFY and retries; ``clock`` (default: the reactor) runs the retry timers."""

    def __init__(self, reactor: Any, *, clock: Any = None, tries: int = NOTIFY_TRIES,
                 first_timeout: float = NOTIFY_FIRST_TIMEOUT_SECONDS) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.tries = tries
        self.first_timeout = first_timeout
        self.counters = NotifyCounters()
        self._ports: dict[str, Any] = {}                        # source address → UDP port
        self._listen: tuple[str, ...] = ()                      # [server] listen hosts
        self._outgoing: dict[tuple[Target, bytes, str], Outgoing] = {}
        self._by_id: dict[tuple[Target, int], tuple[Target, bytes, str]] = {}

    def notify(self, origin: bytes, soa: wire.RRset, key: TsigKey, targets: tuple[Target, ...]) -> None:
        """Tell each target that ``origin`` now has ``soa`` (for ``key``'s view)."""
        for target in targets:
            ident = (target, origin, key.name)
            self._forget(ident)
            outgoing = Outgoing(target, origin, soa, key)
            self._outgoing[ident] = outgoing
            self._send(ident, outgoing)

    def pending(self) -> list[str]:
        """The NOTIFYs still waiting for an answer, for logs and tests."""
        return [outgoing.label for outgoing in self._outgoing.values()]

    def set_sources(self, listen: tuple[tuple[str, int], ...]) -> None:
        """The ``[server] listen`` addresses NOTIFY may be sent from (sockets on addresses no
        longer listed are closed)."""
        self._listen = tuple(host for host, _port in listen)
        for source in [source for source in self._ports if source not in self._listen]:
            self._ports.pop(source).stopListening()

    def source(self, target: str) -> str:
        """The address NOTIFY to ``target`` is sent from (a wildcard: the system chooses)."""
        address = ipaddress.ip_address(target)
        wildcard = "::" if address.version == 6 else "0.0.0.0"
        for host in self._listen:
            mine = ipaddress.ip_address(host)
            if mine.version == address.version and mine.is_loopback == address.is_loopback:
                return wildcard if mine.is_unspecified else host
        return wildcard

    def _port(self, target: str) -> Any:
        source = self.source(target)
        port = self._ports.get(source)
        if port is None:
            port = self.reactor.listenUDP(0, _Socket(self), interface=source)
            self._ports[source] = port
        return port

    def _send(self, ident: tuple[Target, bytes, str], outgoing: Outgoing) -> None:
        origin = dns.name.from_wire(outgoing.origin, 0)[0]
        request = dns.message.make_query(origin, dns.rdatatype.SOA)
        request.flags = (request.flags & ~dns.flags.RD) | dns.flags.AA    # (before the opcode: it is in flags)
        request.set_opcode(dns.opcode.NOTIFY)
        soa = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        rdata = b"".join(outgoing.soa.rdatas[0])
        soa.add(dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.SOA, rdata, 0, len(rdata)), outgoing.soa.ttl)
        request.answer.append(soa)
        key = outgoing.key.dnspython_key()
        request.use_tsig({key.name: key}, key.name)
        outgoing.tries += 1
        outgoing.request = request
        outgoing.ids.add(request.id)
        self._by_id[(outgoing.target, request.id)] = ident
        try:
            self._port(outgoing.target[0]).write(request.to_wire(), outgoing.target)
            self.counters.sent += 1
        except (OSError, CannotListenError) as e:
            log.warn("{label}: not sent: {error}", label=outgoing.label, error=e)
        delay = self.first_timeout * 2 ** (outgoing.tries - 1)
        outgoing.timer = self.clock.callLater(delay, self._timed_out, ident, outgoing)

    def _timed_out(self, ident: tuple[Target, bytes, str], outgoing: Outgoing) -> None:
        outgoing.timer = None
        if self._outgoing.get(ident) is not outgoing:
            return
        if outgoing.tries < self.tries:
            self._send(ident, outgoing)
            return
        log.warn("{label}: no answer after {tries} tries", label=outgoing.label, tries=outgoing.tries)
        self.counters.failed += 1
        self._forget(ident)

    def received(self, data: bytes, source: Target) -> None:
        """An answer to one of our NOTIFYs (anything else is dropped)."""
        if len(data) < 12:
            return
        ident = self._by_id.get((source, data[0] << 8 | data[1]))
        outgoing = self._outgoing.get(ident) if ident is not None else None
        if ident is None or outgoing is None or outgoing.request is None:
            return
        key = outgoing.key.dnspython_key()
        try:
            answer = dns.message.from_wire(data, keyring={key.name: key}, request_mac=outgoing.request.mac)
        except (dns.exception.DNSException, ValueError) as e:
            # dnspython reads a later try's MAC; an answer to an earlier try is checked unsigned.
            try:
                answer = dns.message.from_wire(data, keyring=False)
            except (dns.exception.DNSException, ValueError):
                log.warn("{label}: unreadable answer: {error}", label=outgoing.label, error=e)
                return
            if answer.rcode() == dns.rcode.NOERROR:
                log.warn("{label}: answer not verified: {error}", label=outgoing.label, error=e)
                return
        if not answer.flags & dns.flags.QR or answer.opcode() != dns.opcode.NOTIFY:
            return
        rcode = answer.rcode()
        if rcode == dns.rcode.NOERROR:
            self.counters.answered += 1
            log.info("{label}: answered", label=outgoing.label)
        else:
            self.counters.refused += 1
            log.warn("{label}: answered {rcode}", label=outgoing.label, rcode=dns.rcode.to_text(rcode))
        self._forget(ident)

    def _forget(self, ident: tuple[Target, bytes, str]) -> None:
        outgoing = self._outgoing.pop(ident, None)
        if outgoing is None:
            return
        if outgoing.timer is not None and outgoing.timer.active():
            outgoing.timer.cancel()
        for message_id in outgoing.ids:
            self._by_id.pop((outgoing.target, message_id), None)

    def stop(self) -> defer.Deferred[Any]:
        """Cancel every retry and close the sockets."""
        for ident in list(self._outgoing):
            self._forget(ident)
        ports, self._ports = list(self._ports.values()), {}
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])
