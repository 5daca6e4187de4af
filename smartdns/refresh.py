"""Secondary zones at run time: the SOA timers, NOTIFY, and swapping transfers in.

One ``Secondary`` service per ``[[secondary]]`` follows RFC 1035 §3.3.13 and RFC 1996: it
refreshes at start, then every SOA refresh seconds; after a failed refresh it retries every SOA
retry seconds; when no refresh has succeeded for SOA expire seconds the zone is expired and its
clients get SERVFAIL (as BIND answers) until a transfer succeeds.  Time comes from the reactor
only; the transfer itself (``smartdns.secondary.refresh``: SOA query, IXFR or AXFR, check, save)
runs in a worker thread, so answers never wait for it.  Each new serial is logged with how it came
(``serial 7 -> 8 by IXFR from 192.0.2.53:53``; an AXFR where IXFR was possible says why).

A refresh that brings a new serial (or ends an expiry) calls ``reload("transfer")``: the saved
file is read by the same reload as a file edit, and swapped in as one snapshot with the same
cache flush.  Expiry calls ``reload("expire")``; the reload asks ``Secondaries.expired`` which
zones are past expire (``smartdns.snapshot.build_snapshot`` marks them SERVFAIL).

``Secondaries.notify`` is the transfer hook's NOTIFY handler (``smartdns.xfr.TransferHook``).
Measured with BIND 9.18 as a secondary: NOTIFY for a zone it follows, from a primary's
address, gets NOERROR with AA, opcode NOTIFY and the question echoed (signed when the request
was); from any other address REFUSED; a bad MAC or unknown key NOTAUTH (BADSIG, BADKEY).
smartdns is stricter than BIND where the secondary has a ``key``: the NOTIFY must be signed
with that key, else REFUSED.  NOTIFY for zones that are not secondaries is not ours (PASS).
"""
from __future__ import annotations

import ipaddress
import os
import struct
from typing import Any, Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartdns import wire
from smartdns.config import Config, SecondaryZone
from smartdns.secondary import SoaTimers, TransferError, Transferred, refresh, saved_path
from smartdns.snapshot import Snapshot
from smartdns.tsig import TsigKey, config_keyring
from smartdns.txtyping import TypedMultiService
from smartdns.xfr import PASS, HookResult, parse_signed, signed_error

log = Logger()

#: Before any SOA is known (nothing saved, no primary answered yet): retry this often.
DEFAULT_RETRY_SECONDS = 60.0
#: SOA refresh and retry below this are read as this (a zero would refresh in a loop).
MIN_TIMER_SECONDS = 1.0

Run = Callable[..., "defer.Deferred[Any]"]
Reload = Callable[[str], Any]
Refresh = Callable[..., "Transferred | None"]


def soa_timers(snap: Snapshot, secondary: SecondaryZone) -> SoaTimers | None:
    """The SOA timers of the secondary's zone as the snapshot holds it, or None when it holds
    only the stand-in for a zone not transferred yet."""
    origin = wire.from_text(secondary.zone + ".").lower()
    if origin not in snap.zones:
        return None
    view = snap.view(origin, secondary.line)
    if (origin, secondary.line) in snap.servfail and not view.base.sources:
        return None                        # the stand-in: no saved file was read
    rdata = b"".join(view.soa.rdatas[0])
    serial, refresh_s, retry, expire, _minimum = struct.unpack("!5I", rdata[-20:])
    return SoaTimers(serial, refresh_s, retry, expire)


class Secondary(service.Service):
    """One ``[[secondary]]``: its timers, its refreshes (one at a time), its expiry."""

    def __init__(self, reactor: Any, secondary: SecondaryZone, key: TsigKey | None, directory: str,
                 reload: Reload, saved: SoaTimers | None, *, run: Run | None = None,
                 do_refresh: Refresh = refresh) -> None:
        self.reactor = reactor
        self.secondary = secondary
        self.key = key
        self.directory = directory
        self.reload = reload
        self.timers = saved
        self.serial = saved.serial if saved is not None else None
        self.expired = False
        self.last: Transferred | None = None     # the last transfer that brought a serial (how it came)
        self._run = run or (lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        self._do_refresh = do_refresh
        self._refresh_call: Any = None
        self._expire_call: Any = None
        self._busy = False
        self._again = False             # a NOTIFY came during a refresh: one more right after

    @property
    def label(self) -> str:
        """``zone`` or ``zone (line L)``, for the log."""
        return self.secondary.zone + (f" (line {self.secondary.line})" if self.secondary.line else "")

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Expire counts from the saved file's time (when its data was last confirmed, as BIND
        counts after a restart); the first refresh starts at once."""
        super().startService()  # type: ignore[no-untyped-call]
        if self.timers is not None:
            try:
                confirmed = os.stat(saved_path(self.directory, self.secondary)).st_mtime
            except OSError:
                confirmed = self.reactor.seconds()
            left = confirmed + self.timers.expire - self.reactor.seconds()
            if left <= 0:
                self.reactor.callLater(0, self._expire)
            else:
                self._expire_call = self.reactor.callLater(left, self._expire)
        self._schedule(0)

    def stopService(self) -> None:  # noqa: N802 (Twisted API)
        """Cancel the timers; a transfer still running in its thread is ignored when it ends."""
        super().stopService()  # type: ignore[no-untyped-call]
        for call in (self._refresh_call, self._expire_call):
            if call is not None and call.active():
                call.cancel()
        self._refresh_call = self._expire_call = None

    def notified(self) -> None:
        """A NOTIFY from a primary: refresh now, or right after the refresh running now."""
        if self._busy:
            self._again = True
        else:
            self._schedule(0)

    def _schedule(self, seconds: float) -> None:
        if not self.running:
            return
        if self._refresh_call is not None and self._refresh_call.active():
            self._refresh_call.cancel()
        self._refresh_call = self.reactor.callLater(seconds, self.refresh_now)

    def refresh_now(self) -> defer.Deferred[Any]:
        """Ask the primaries (in a thread); fires when the outcome has been acted on."""
        self._busy = True
        d = self._run(self._do_refresh, self.directory, self.secondary, self.key, self.serial)
        d.addCallbacks(self._refreshed, self._failed)

        def finished(result: Any) -> Any:
            self._busy = False
            if self._again:
                self._again = False
                self._schedule(0)
            return result

        return d.addBoth(finished)

    def _refreshed(self, got: Transferred | None) -> None:
        if not self.running:
            return
        was_expired, self.expired = self.expired, False
        if got is not None:
            self.timers, self.serial, self.last = got.timers, got.timers.serial, got
            log.info("secondary {zone}: serial {old} -> {serial} by {how} from {primary}{why}", zone=self.label,
                     old=got.from_serial if got.from_serial is not None else "none", serial=got.timers.serial,
                     how=got.how, primary=got.primary, why=f" ({got.why_axfr})" if got.why_axfr else "")
        timers = self.timers
        if timers is not None:
            if self._expire_call is not None and self._expire_call.active():
                self._expire_call.cancel()
            self._expire_call = self.reactor.callLater(max(timers.expire, MIN_TIMER_SECONDS), self._expire)
            self._schedule(max(timers.refresh, MIN_TIMER_SECONDS))
        if got is not None or was_expired:
            self.reload("transfer")

    def _failed(self, reason: Failure) -> None:
        if isinstance(reason.value, TransferError):
            log.warn("secondary {zone}: keeping serial {serial}: {why}", zone=self.label,
                     serial=self.serial if self.serial is not None else "none", why=str(reason.value))
        else:
            log.failure("secondary {zone}: refresh crashed; keeping the old data", reason, zone=self.label)
        retry = self.timers.retry if self.timers is not None else DEFAULT_RETRY_SECONDS
        self._schedule(max(retry, MIN_TIMER_SECONDS))

    def _expire(self) -> None:
        self._expire_call = None
        if not self.running or self.expired:
            return
        self.expired = True
        log.warn("secondary {zone}: expired (no refresh for SOA expire {expire} s): answering SERVFAIL "
                 "until a transfer succeeds", zone=self.label,
                 expire=self.timers.expire if self.timers is not None else "?")
        self.reload("expire")


class Secondaries(TypedMultiService):
    """Every ``[[secondary]]`` of the config: a ``Secondary`` each, the expired ones for the
    reload, and NOTIFY routed to the ones it concerns."""

    def __init__(self, reactor: Any, reload: Reload, *, run: Run | None = None,
                 do_refresh: Refresh = refresh) -> None:
        super().__init__()
        self.reactor = reactor
        self.reload = reload
        self._run = run
        self._do_refresh = do_refresh
        self.by_spec: dict[tuple[SecondaryZone, TsigKey | None, str], Secondary] = {}

    def configure(self, config: Config, snap: Snapshot) -> None:
        """Follow the config's ``[[secondary]]`` tables: keep the unchanged ones (with their
        timers), stop the removed ones, start the new ones from what ``snap`` holds."""
        directory = config.zones.secondary_directory
        keys = {key.name: key for key in config.tsig}
        wanted: dict[tuple[SecondaryZone, TsigKey | None, str], None] = {}
        if directory is not None:
            for secondary in config.secondaries:
                wanted[(secondary, keys.get(secondary.key) if secondary.key else None, directory)] = None
        for spec in [spec for spec in self.by_spec if spec not in wanted]:
            child = self.by_spec.pop(spec)
            child.disownServiceParent()      # type: ignore[no-untyped-call]
        for spec in wanted:
            if spec not in self.by_spec:
                secondary, key, where = spec
                child = Secondary(self.reactor, secondary, key, where, self.reload, soa_timers(snap, secondary),
                                  run=self._run, do_refresh=self._do_refresh)
                self.by_spec[spec] = child
                child.setServiceParent(self)   # type: ignore[no-untyped-call]

    def expired(self) -> frozenset[tuple[str, str | None]]:
        """(zone, line) of each secondary past expire (read by every reload)."""
        return frozenset((c.secondary.zone, c.secondary.line) for c in self.by_spec.values() if c.expired)

    def notify(self, data: bytes, client: str, tcp: bool, snap: Snapshot) -> HookResult:
        """The answer to a NOTIFY (RFC 1996 §3.7), and a refresh of the secondaries it names."""
        try:
            plain = dns.message.from_wire(data, keyring=False)
        except (dns.exception.DNSException, ValueError, struct.error):
            return PASS
        if len(plain.question) != 1 or plain.question[0].rdtype != dns.rdatatype.SOA:
            return PASS                              # the normal path answers FORMERR and the like
        zone = plain.question[0].name.to_text(omit_final_dot=True).lower()
        candidates = [c for c in self.by_spec.values() if c.secondary.zone == zone]
        if not candidates:
            return PASS
        key_name = None
        if plain.had_tsig:
            query, error = parse_signed(data, config_keyring(snap.config.tsig), int(self.reactor.seconds()))
            if error is not None or query is None:
                return error if error is not None else PASS
            assert query.keyname is not None
            key_name = str(query.keyname.to_text(omit_final_dot=True)).lower()
        else:
            query = plain
        from_primary = [c for c in candidates if _is_primary(client, c.secondary)]
        if not from_primary:
            log.warn("NOTIFY for {zone} from {client} refused: not a primary of it", zone=zone, client=client)
            return signed_error(query, dns.rcode.REFUSED)
        accepted = [c for c in from_primary if c.secondary.key is None or c.secondary.key == key_name]
        if not accepted:
            log.warn("NOTIFY for {zone} from {client} refused: not signed with the zone's key (got {key})",
                     zone=zone, client=client, key=key_name or "no key")
            return signed_error(query, dns.rcode.REFUSED)
        for child in accepted:
            log.info("NOTIFY for {zone} from {client}: refreshing", zone=child.label, client=client)
            child.notified()
        response = dns.message.make_response(query)
        response.flags = dns.flags.QR | dns.flags.AA       # as BIND: no RD echoed to NOTIFY
        response.set_opcode(dns.opcode.NOTIFY)
        return response.to_wire()



def _is_primary(client: str, secondary: SecondaryZone) -> bool:
    """Whether the NOTIFY's source address is one of the zone's primaries (any source port, as
    BIND compares them; an IPv4-mapped IPv6 peer counts as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(ipaddress.ip_address(host) == address for host, _port in secondary.primaries)
