"""smartdns.notify: NOTIFY out (RFC 1996) to [[transfer]] also_notify, over real UDP sockets.

A loopback responder reads what smartdns sends (verifying the TSIG with the rule's key) and
answers as told; the retry timers run on a task.Clock so no test waits for them.
"""
from __future__ import annotations

import os
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from smartdns import wire
from smartdns.notify import Notifier
from smartdns.tsig import TsigKey
from tests.support import start_server
from tests.test_journal import base_zone, overlay
from tests.test_xfr import SECRET_BASE, SECRET_LINE

KEY = TsigKey("line1-key", "hmac-sha512", b"line1-secret-for-tests")
RING = dns.tsigkeyring.from_text({"line1-key": ("hmac-sha512", SECRET_LINE),
                                  "base-key": ("hmac-sha256", SECRET_BASE)})
ORIGIN = wire.from_text("example.test.")


class Responder(protocol.DatagramProtocol):
    """A secondary's NOTIFY port: records each NOTIFY (verified), answers with ``rcode`` unless
    it is told to stay silent for the next ``silent`` messages."""

    def __init__(self, rcode: int = dns.rcode.NOERROR, silent: int = 0) -> None:
        self.rcode = rcode
        self.silent = silent
        self.got: list[dns.message.Message] = []
        self.sources: list[str] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        message = dns.message.from_wire(datagram, keyring=RING)
        self.got.append(message)
        self.sources.append(addr[0])
        if self.silent > 0:
            self.silent -= 1
            return
        answer = dns.message.make_response(message)
        answer.set_rcode(self.rcode)
        self.transport.write(answer.to_wire(), addr)


def soa(serial: int) -> wire.RRset:
    import struct
    rdata = wire.from_text("ns1.example.test.") + wire.from_text("hostmaster.example.test.") + struct.pack(
        "!5I", serial, 3600, 600, 86400, 60)
    return wire.make_rrset(ORIGIN, wire.SOA, 300, [rdata])


@defer.inlineCallbacks
def until(check: Any, seconds: float = 5.0) -> Any:
    """Poll ``check`` on the real reactor (real datagrams take real time to arrive)."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition not met in time")


class NotifierTests(unittest.TestCase):

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.notifier = Notifier(reactor, clock=self.clock)
        self.addCleanup(self.notifier.stop)

    def listen(self, responder: Responder) -> tuple[str, int]:
        port = reactor.listenUDP(0, responder, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return ("127.0.0.1", port.getHost().port)

    @defer.inlineCallbacks
    def test_message_is_signed_notify_with_soa(self) -> None:
        """Opcode NOTIFY, AA, the zone's SOA question and the served SOA, signed with the key."""
        responder = Responder()
        self.notifier.notify(ORIGIN, soa(7), KEY, (self.listen(responder),))
        yield until(lambda: self.notifier.counters.answered == 1)
        (got,) = responder.got
        self.assertEqual((got.opcode(), bool(got.flags & dns.flags.AA), got.had_tsig, got.keyname.to_text()),
                         (dns.opcode.NOTIFY, True, True, "line1-key."))
        self.assertEqual((got.question[0].name.to_text(), got.question[0].rdtype), ("example.test.", dns.rdatatype.SOA))
        self.assertEqual([rdata.serial for rrset in got.answer for rdata in rrset], [7])
        self.assertEqual(self.notifier.pending(), [])

    @defer.inlineCallbacks
    def test_retries_until_answered(self) -> None:
        """Two sends go unanswered: the third (after 2 s and 4 s more) is answered; no more."""
        responder = Responder(silent=2)
        self.notifier.notify(ORIGIN, soa(7), KEY, (self.listen(responder),))
        yield until(lambda: len(responder.got) == 1)
        self.clock.advance(1.9)
        self.assertEqual(self.notifier.counters.sent, 1)
        self.clock.advance(0.1)
        yield until(lambda: len(responder.got) == 2)
        self.clock.advance(4)
        yield until(lambda: self.notifier.counters.answered == 1)
        self.clock.advance(100)
        self.assertEqual((self.notifier.counters.sent, len(responder.got), self.notifier.counters.failed), (3, 3, 0))

    @defer.inlineCallbacks
    def test_gives_up_after_five_tries(self) -> None:
        """Never answered: five sends (0, 2, 6, 14, 30 s), then it counts as failed."""
        responder = Responder(silent=99)
        self.notifier.notify(ORIGIN, soa(7), KEY, (self.listen(responder),))
        for sends in range(1, 6):
            yield until(lambda sends=sends: len(responder.got) == sends)
            self.clock.advance(2 * 2 ** (sends - 1))
        self.assertEqual((self.notifier.counters.sent, self.notifier.counters.failed), (5, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_refused_ends_retries(self) -> None:
        responder = Responder(rcode=dns.rcode.REFUSED)
        self.notifier.notify(ORIGIN, soa(7), KEY, (self.listen(responder),))
        yield until(lambda: self.notifier.counters.refused == 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_newer_notify_replaces_pending(self) -> None:
        """A second NOTIFY for the same zone, target and key while the first is retried: only
        the newer one is retried."""
        responder = Responder(silent=99)
        target = self.listen(responder)
        self.notifier.notify(ORIGIN, soa(7), KEY, (target,))
        self.notifier.notify(ORIGIN, soa(8), KEY, (target,))
        yield until(lambda: len(responder.got) == 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        yield until(lambda: len(responder.got) == 3)
        self.assertEqual([rdata.serial for rrset in responder.got[-1].answer for rdata in rrset], [8])


    def test_source_address_choice(self) -> None:
        """From the first listen address of the target's family and kind (loopback or not);
        a wildcard or no fitting address leaves it to the system."""
        self.notifier.set_sources((("127.0.0.2", 53), ("192.0.2.53", 53), ("2001:db8::53", 53)))
        self.assertEqual([self.notifier.source(t) for t in ("127.0.0.1", "198.51.100.1", "2001:db8::1", "::1")],
                         ["127.0.0.2", "192.0.2.53", "2001:db8::53", "::"])
        self.notifier.set_sources((("0.0.0.0", 53),))
        self.assertEqual(self.notifier.source("198.51.100.1"), "0.0.0.0")

    @defer.inlineCallbacks
    def test_sent_from_the_listen_address(self) -> None:
        """Listening on 127.0.0.2, NOTIFY to a loopback secondary comes from 127.0.0.2."""
        self.notifier.set_sources((("127.0.0.2", 5300),))
        responder = Responder()
        self.notifier.notify(ORIGIN, soa(7), KEY, (self.listen(responder),))
        yield until(lambda: self.notifier.counters.answered == 1)
        self.assertEqual(responder.sources, ["127.0.0.2"])


class ServiceNotifyTests(unittest.TestCase):
    """The service notifies also_notify at start and after a reload that changes the rule's view."""

    @defer.inlineCallbacks
    def test_start_and_reload(self) -> None:
        line1, base = Responder(), Responder()
        ports = [reactor.listenUDP(0, r, interface="127.0.0.1") for r in (line1, base)]
        for port in ports:
            self.addCleanup(port.stopListening)
        config = f"""
            [forward]
            upstreams = []
            [zones]
            watch = false
            [lines]
            line1 = ["127.0.0.3/32"]
            [[tsig]]
            name = "base-key"
            secret = "{SECRET_BASE}"
            [[tsig]]
            name = "line1-key"
            algorithm = "hmac-sha512"
            secret = "{SECRET_LINE}"
            [[transfer]]
            key = "base-key"
            also_notify = ["127.0.0.1:{ports[1].getHost().port}"]
            [[transfer]]
            key = "line1-key"
            line = "line1"
            also_notify = ["127.0.0.1:{ports[0].getHost().port}"]
            """
        service, _host, _port = start_server(self, config, zones={"example.test.zone": base_zone(),
                                                                  "line1/example.test.zone": overlay()})
        yield until(lambda: len(line1.got) == 1 and len(base.got) == 1)
        self.assertEqual([m.keyname.to_text() for m in line1.got + base.got], ["line1-key.", "base-key."])
        directory = service.config.zones.directory
        with open(os.path.join(directory, "line1", "example.test.zone"), "w", encoding="utf-8") as handle:
            handle.write(overlay("10.0.0.99"))
        result = yield service.reload("test")
        self.assertTrue(result.ok)
        yield until(lambda: len(line1.got) == 2)
        self.assertEqual([rdata.serial for rrset in line1.got[-1].answer for rdata in rrset], [2024010102])
        self.assertEqual(len(base.got), 1)                  # the base view did not change
        yield until(lambda: service.notifier.counters.answered == 3)
        counters = dict(service.stats())
        self.assertEqual((counters["notify.sent"], counters["notify.answered"]), (3, 3))
        # A zone file added: both rules' secondaries hear of the new zone (as BIND on load).
        with open(os.path.join(directory, "new.test.zone"), "w", encoding="utf-8") as handle:
            handle.write(base_zone().replace("SOA ns1", "SOA ns1.new.test."))
        result = yield service.reload("test")
        self.assertTrue(result.ok, result.summary())
        yield until(lambda: len(line1.got) == 3 and len(base.got) == 2)
        self.assertEqual([m.question[0].name.to_text() for m in (line1.got[-1], base.got[-1])], ["new.test."] * 2)
