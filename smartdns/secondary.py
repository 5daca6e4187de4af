"""Secondary zones (``[[secondary]]``): pull a zone from its primaries and save it.

This module holds the parts that do not touch the served snapshot yet: one transfer (AXFR
with the table's TSIG key, run in a thread so the reactor keeps answering), the SOA timers
(RFC 1035 §3.3.13) and serial comparison (RFC 1982, ``smartdns.xfr.serial_gte``), and the
atomic save under ``[zones] secondary_directory`` (temp file + rename, one file per zone and
line: ``<origin>.zone`` or ``<line>/<origin>.zone``; only files written here).  Scheduling,
NOTIFY and loading the saved files into the snapshot are not wired in yet.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import dns.name
import dns.query
import dns.rdatatype
import dns.xfr
import dns.zone

from smartdns.config import SecondaryZone
from smartdns.errors import SmartDNSError
from smartdns.tsig import TsigKey
from smartdns.xfr import serial_gte

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


@dataclass(frozen=True, slots=True)
class Transferred:
    """One transferred zone: its text (master-file form) and timers."""

    origin: str
    text: str
    timers: SoaTimers


def timers_of(zone: dns.zone.Zone) -> SoaTimers:
    """The SOA timers of a zone."""
    soa = zone.find_rdataset(zone.origin, dns.rdatatype.SOA)[0]   # type: ignore[arg-type]
    return SoaTimers(int(soa.serial), int(soa.refresh), int(soa.retry), int(soa.expire))


def transfer(secondary: SecondaryZone, key: TsigKey | None, current_serial: int | None = None,
             timeout: float = TRANSFER_TIMEOUT_SECONDS) -> Transferred | None:
    """AXFR ``secondary.zone`` from its primaries in turn (blocking: run it in a thread).

    Returns None when the primary's serial is not newer than ``current_serial`` (nothing to
    do); raises TransferError naming each primary's failure, including a serial that went back."""
    origin = dns.name.from_text(secondary.zone)
    problems: list[str] = []
    for host, port in secondary.primaries:
        try:
            zone = dns.zone.Zone(origin, relativize=False)
            keyring = None if key is None else {key.dns_name: key.dnspython_key()}
            query, _serial = dns.xfr.make_query(zone, keyring=keyring, keyname=None if key is None else key.dns_name)
            dns.query.inbound_xfr(host, zone, query, port=port, timeout=timeout, lifetime=timeout)
            timers = timers_of(zone)
            if current_serial is not None and serial_gte(current_serial, timers.serial):
                if timers.serial == current_serial:
                    return None
                problems.append(f"{host}:{port}: serial {timers.serial} is older than ours ({current_serial})")
                continue
            return Transferred(secondary.zone + ".", zone.to_text(relativize=False), timers)
        except Exception as e:   # noqa: BLE001 — any failure of one primary: try the next, report all
            problems.append(f"{host}:{port}: {type(e).__name__}: {e}")
    raise TransferError(f"transfer of {secondary.zone} failed: " + "; ".join(problems))


def saved_path(directory: str, secondary: SecondaryZone) -> str:
    """Where a secondary zone is saved: ``<line>/<origin>.zone`` or ``<origin>.zone``."""
    name = secondary.zone + "." + SAVED_SUFFIX.lstrip(".")
    return os.path.join(directory, secondary.line, name) if secondary.line else os.path.join(directory, name)


def save(directory: str, secondary: SecondaryZone, text: str) -> str:
    """Write the zone text atomically (temp file in the same directory, fsync, rename)."""
    path = saved_path(directory, secondary)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".xfr-", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return path
