"""Secondary zones (``[[secondary]]``): pull a zone from its primaries and save it.

This module holds the parts that do not touch the served snapshot yet: one transfer (IXFR or
AXFR with the table's TSIG key, run in a thread so the reactor keeps answering), the SOA timers
(RFC 1035 §3.3.13) and serial comparison (RFC 1982, ``smartdns.serial``), and the atomic save
under ``[zones] secondary_directory`` (temp file + rename, one file per zone and line:
``<origin>.zone`` or ``<line>/<origin>.zone``; only files written here).  A refresh first asks
each primary for its SOA (signed) and transfers only when the serial is newer; the zone is read
back by smartdns's own zone reader before it replaces the saved file, so a file that would not
load is never saved.  Scheduling, NOTIFY and the snapshot are ``smartdns.refresh``'s.

The transfer is incremental when it can be (RFC 1995): the saved file, when it holds the serial
we serve, is loaded and the primary's differences are applied to it, so an edit of one name
costs a few records on the wire instead of the whole zone.  A primary that answers IXFR with the
whole zone (RFC 1995 §4, what BIND does without a journal) is followed too.  The transfer falls
back to AXFR when there is no such local copy, when the primary answers IXFR with an error rcode
(NOTIMP, FORMERR, REFUSED, ...), or when the differences do not apply (a base serial that is not
ours, a deletion of a record we do not hold: dnspython raises, and nothing of it is kept).  A
transport failure (cut connection, timeout) is not retried by AXFR: the primary counts as failed
for this refresh, as for AXFR.

The refresh thread shares the GIL with the reactor, and a transfer of a large zone made the
reactor wait for it (bench/secondary_stall.py: local answers at 2,000 a second while a
100,000-record zone is transferred by AXFR and saved had p50 2.8 ms, p99 35-110 ms and pauses
of up to 0.2 s, enough to lose queries; with what follows, p50 0.6 ms, p99 about 6 ms):

- The GIL: a thread that wants it waits for the holder's switch interval (5 ms by default) and
  the reactor wants it for every datagram.  While a refresh runs the interval is
  ``smartdns.background.SWITCH_INTERVAL_SECONDS`` (0.5 ms), as during a reload.
- The cyclic garbage collector: dnspython builds a few objects per record and keeps them, so
  collections of the oldest generation ran again and again, each one C call that walks every
  object in the process (up to 160 ms near the end of a 100,000-record AXFR).  It is off while a
  refresh runs; nothing a transfer makes holds a reference cycle that outlives it.
- Freeing: the last reference to a zone of 100,000 nodes going away frees them all in one C
  call; the transferred zone, the IXFR base (and the copy an IXFR answered with the whole zone
  replaces), and the zone read back to check the saved file are emptied a node at a time
  instead (``_dismantle``), so the GIL changes hands as it goes.
- Two CPUs: with the refresh thread running on another CPU, it took the GIL back each time the
  reactor let go of it for a system call (receive, send, epoll) and the reactor waited out the
  interval again, for every datagram (unpinned, the same bench: p50 120 ms, 15 % of queries lost
  with the short interval; p99 1.3 s and two thirds lost without it).  While a refresh runs, the
  main thread (the reactor's) and the refresh threads are kept on the CPU the main thread was
  on (Linux thread affinity; nothing changes where the process has one CPU already); the GIL
  lets the process use one CPU at a time anyway.  Afterwards each thread gets its CPUs back.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import dns.exception
import dns.message
import dns.name
import dns.node
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.xfr
import dns.zone

from smartdns.background import quiet
from smartdns.config import SecondaryZone
from smartdns.errors import SmartDNSError
from smartdns.tsig import TsigKey
from smartdns.fastzone import read_zone_fast
from smartdns.zones import Zone, read_zone_file
from smartdns.serial import serial_gte

#: How long one transfer may take before it counts as failed (a cut or stalled connection).
TRANSFER_TIMEOUT_SECONDS = 60.0
SAVED_SUFFIX = ".zone"


class TransferError(SmartDNSError):
    """A transfer from every primary failed; the old data stays (the message says why)."""


@dataclass(frozen=True, slots=True)
class SoaTimers:
    """The SOA fields a secondary follows (seconds, serial as on the wire)."""

    serial: int
    refresh: int
    retry: int
    expire: int


#: How a zone came: by increments, by an IXFR answered with the whole zone, by AXFR.
IXFR = "IXFR"
IXFR_FULL = "IXFR (whole zone)"
AXFR = "AXFR"


@dataclass(frozen=True, slots=True)
class Transferred:
    """One transferred zone: its text (master-file form) and timers, and how it came (for the
    log: ``IXFR``, ``IXFR (whole zone)`` or ``AXFR``, from which serial, why not IXFR)."""

    origin: str
    text: str
    timers: SoaTimers
    primary: str = ""          # host:port it came from
    how: str = AXFR
    from_serial: int | None = None
    why_axfr: str = ""         # why an AXFR was made where IXFR was possible ("" when it was not)


class LocalZone(dns.zone.Zone):
    """A dnspython zone that notes when a transfer replaced it whole: dnspython's IXFR reader
    asks for a replacing writer when the primary answers IXFR with the full zone."""

    replaced = False

    def writer(self, replacement: bool = False) -> dns.zone.Transaction:
        if replacement:
            self.replaced = True
        return super().writer(replacement)

    def _commit_version(self, txn: Any, version: Any, origin: Any) -> None:
        """dnspython puts the transaction's node dictionary in place at commit; the one it
        replaces (the whole local copy, when the IXFR answer was the whole zone) is emptied a
        node at a time rather than freed in one C call (a 55 ms pause for 100,000 nodes)."""
        old = self.nodes
        super()._commit_version(txn, version, origin)   # type: ignore[no-untyped-call]
        if old is not self.nodes:
            _dismantle(old)


LoadLocal = Callable[[], "dns.zone.Zone | None"]


def timers_of(zone: dns.zone.Zone) -> SoaTimers:
    """The SOA timers of a zone."""
    soa = zone.find_rdataset(zone.origin, dns.rdatatype.SOA)[0]   # type: ignore[arg-type]
    return SoaTimers(int(soa.serial), int(soa.refresh), int(soa.retry), int(soa.expire))


def transfer(secondary: SecondaryZone, key: TsigKey | None, current_serial: int | None = None,
             timeout: float = TRANSFER_TIMEOUT_SECONDS, local: LoadLocal | None = None) -> Transferred | None:
    """Transfer ``secondary.zone`` from its primaries in turn (blocking: run it in a thread):
    IXFR from ``current_serial`` onto the zone ``local()`` returns (our data at that serial;
    None when there is no such copy), else AXFR.

    Returns None when the primary's serial is not newer than ``current_serial`` (nothing to
    do); raises TransferError naming each primary's failure, including a serial that went back."""
    origin = dns.name.from_text(secondary.zone)
    problems: list[str] = []
    for host, port in secondary.primaries:
        try:
            if current_serial is not None:
                serial = primary_serial(origin, host, port, key, timeout)
                if serial == current_serial:
                    return None
                if serial_gte(current_serial, serial):
                    problems.append(f"{host}:{port}: serial {serial} is older than ours ({current_serial})")
                    continue
            base = local() if local is not None and current_serial is not None else None
            zone = None
            try:
                zone, how, why_axfr = pull(origin, host, port, key, current_serial, base, timeout)
                timers = timers_of(zone)
                if current_serial is not None and serial_gte(current_serial, timers.serial):
                    if timers.serial == current_serial:
                        return None
                    problems.append(f"{host}:{port}: serial {timers.serial} is older than ours ({current_serial})")
                    continue
                return Transferred(secondary.zone + ".", zone.to_text(relativize=False), timers, f"{host}:{port}",
                                   how, current_serial, why_axfr)
            finally:
                for done in (zone, base):
                    if done is not None:
                        _dismantle(done.nodes)
        except Exception as e:   # noqa: BLE001 — any failure of one primary: try the next, report all
            problems.append(f"{host}:{port}: {type(e).__name__}: {e}")
    raise TransferError(f"transfer of {secondary.zone} failed: " + "; ".join(problems))


def pull(origin: dns.name.Name, host: str, port: int, key: TsigKey | None, current_serial: int | None,
         base: dns.zone.Zone | None, timeout: float) -> tuple[dns.zone.Zone, str, str]:
    """One primary's zone: IXFR applied to ``base`` (our data at ``current_serial``) when there is
    one, else, or when the IXFR is refused or does not apply, AXFR.  Returns the zone, how it came
    and why it was not IXFR ("" when IXFR was not possible: the first transfer).  A transport
    failure raises (no AXFR after a cut connection: the primary failed this time)."""
    keyring = None if key is None else {key.dns_name: key.dnspython_key()}
    keyname = None if key is None else key.dns_name
    why_axfr = "" if current_serial is None else f"no local copy at serial {current_serial}"
    if base is not None and current_serial is not None:
        query, _serial = dns.xfr.make_query(base, serial=current_serial, keyring=keyring, keyname=keyname)
        try:
            dns.query.inbound_xfr(host, base, query, port=port, timeout=timeout, lifetime=timeout)
        except dns.exception.Timeout:
            raise
        except dns.xfr.TransferError as e:
            why_axfr = f"IXFR answered {dns.rcode.to_text(e.rcode)}"
        except dns.exception.DNSException as e:     # the differences do not apply to our copy
            why_axfr = f"IXFR failed: {type(e).__name__}: {e}"
        else:
            return base, IXFR_FULL if isinstance(base, LocalZone) and base.replaced else IXFR, ""
    zone = dns.zone.Zone(origin, relativize=False)
    query, _serial = dns.xfr.make_query(zone, serial=None, keyring=keyring, keyname=keyname)
    try:
        dns.query.inbound_xfr(host, zone, query, port=port, timeout=timeout, lifetime=timeout)
    except Exception as e:
        if base is None:
            raise
        raise TransferError(f"{why_axfr}, then AXFR: {type(e).__name__}: {e}") from e
    return zone, AXFR, why_axfr


def load_local(directory: str, secondary: SecondaryZone, serial: int) -> dns.zone.Zone | None:
    """The saved file as a dnspython zone to apply an IXFR to, or None when it is missing, does
    not read, or holds another serial than ``serial`` (the one we serve and ask IXFR from).

    Read by smartdns's fast reader and converted when it takes the file (about half the CPU of
    dnspython's reader, which is most of an IXFR's cost for a large zone), else by dnspython's
    (DNSSEC records and other forms the fast reader declines: the copy must hold every record
    the primary's differences may delete)."""
    path = saved_path(directory, secondary)
    try:
        fast = read_zone_fast(path, secondary.zone + ".")
        zone = (dnspython_zone(fast) if fast is not None else
                dns.zone.from_file(path, origin=secondary.zone + ".", relativize=False, zone_factory=LocalZone))
        if fast is not None:
            _dismantle(fast.nodes)
        if timers_of(zone).serial != serial:
            return None
    except Exception:   # noqa: BLE001 — any reason it does not read: transfer it whole
        return None
    if isinstance(zone, LocalZone):
        zone.replaced = False          # reading the file wrote it whole; only the transfer counts
    return zone


def dnspython_zone(zone: Zone) -> LocalZone:
    """smartdns's zone (wire RRsets) as a dnspython zone with the same records, built node by
    node without a transaction: the names are the zone's own, so dnspython's per-add checks
    (name in zone, node rules) are skipped; each RDATA is still parsed by dnspython."""
    converted = LocalZone(dns.name.from_wire(zone.origin, 0)[0], relativize=False)
    for node in zone.nodes.values():
        dnode: dns.node.Node | None = None
        for number, rrset in node.items():
            rtype = dns.rdatatype.RdataType.make(number)
            rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, rtype)
            for parts in rrset.rdatas:
                data = b"".join(parts)
                rdataset.add(dns.rdata.from_wire(dns.rdataclass.IN, rtype, data, 0, len(data)), rrset.ttl)
            if dnode is None:
                dnode = converted.node_factory()
                converted.nodes[dns.name.Name(_labels(rrset.name))] = dnode
            dnode.replace_rdataset(rdataset)
    return converted


def _labels(name: bytes) -> list[bytes]:
    """The labels of an uncompressed wire name (the root label last)."""
    labels, at = [], 0
    while True:
        size = name[at]
        labels.append(name[at + 1:at + 1 + size])
        at += 1 + size
        if size == 0:
            return labels


def primary_serial(origin: dns.name.Name, host: str, port: int, key: TsigKey | None, timeout: float) -> int:
    """The serial a primary serves now: a signed SOA query over TCP (what BIND's refresh asks
    before it transfers, RFC 1996 §3.11), with an answer that must be authoritative."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    if key is not None:
        query.use_tsig({key.dns_name: key.dnspython_key()}, keyname=key.dns_name)
    response = dns.query.tcp(query, host, port=port, timeout=timeout)
    if response.rcode() != dns.rcode.NOERROR:
        raise TransferError(f"SOA query answered {dns.rcode.to_text(response.rcode())}")
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == origin and len(rrset):
            return int(rrset[0].serial)
    raise TransferError("SOA query answered without the zone's SOA")


def refresh(directory: str, secondary: SecondaryZone, key: TsigKey | None, current_serial: int | None,
            timeout: float = TRANSFER_TIMEOUT_SECONDS) -> Transferred | None:
    """One refresh, blocking (run it in a thread): transfer if the primary is newer (IXFR onto
    the saved file when it holds ``current_serial``, else AXFR) and save the zone, or, when the
    serial is ours, touch the saved file (its time is when the data was last confirmed, which a
    restart reads for expire, as BIND does).  Raises TransferError.

    While it runs the switch interval is short and the garbage collector off (``quiet``)."""
    with quiet():
        return _refresh(directory, secondary, key, current_serial, timeout)


def _refresh(directory: str, secondary: SecondaryZone, key: TsigKey | None, current_serial: int | None,
             timeout: float) -> Transferred | None:
    got = transfer(secondary, key, current_serial, timeout,
                   local=None if current_serial is None else lambda: load_local(directory, secondary, current_serial))
    if got is None:
        try:
            os.utime(saved_path(directory, secondary))
        except OSError:
            pass                      # nothing saved yet, or a read-only file: only a restart cares
        return None
    save(directory, secondary, got.text, primary=got.primary)
    return got


def saved_path(directory: str, secondary: SecondaryZone) -> str:
    """Where a secondary zone is saved: ``<line>/<origin>.zone`` or ``<origin>.zone``."""
    name = secondary.zone + "." + SAVED_SUFFIX.lstrip(".")
    return os.path.join(directory, secondary.line, name) if secondary.line else os.path.join(directory, name)


def save(directory: str, secondary: SecondaryZone, text: str, primary: str = "") -> str:
    """Write the zone text atomically (temp file in the same directory, fsync, rename), after
    smartdns's zone reader has read the temp file without a problem (else TransferError: a
    broken zone, the saved file untouched)."""
    path = saved_path(directory, secondary)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".xfr-", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        checked, problems = read_zone_file(temp, secondary.zone + ".")
        if checked is not None:
            _dismantle(checked.nodes)
        if problems:
            first = problems[0]
            raise TransferError(f"transfer of {secondary.zone} failed: {primary or 'primary'}: broken zone: "
                                f"line {first.line}: {first.message}" + (f" (and {len(problems) - 1} more)"
                                                                         if len(problems) > 1 else ""))
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return path


def _dismantle(nodes: Any) -> None:
    """Empty a zone's node dictionary one node at a time (in the refresh thread), so that its
    memory is freed in small steps between which the reactor can take the GIL, not in the one
    long C call that dropping the last reference to the dictionary would be."""
    if isinstance(nodes, dict):
        while nodes:
            nodes.popitem()
