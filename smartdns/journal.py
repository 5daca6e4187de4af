"""What each transfer view served before: the serial-bump rule and the IXFR journal (RFC 1995).

A *transfer view* is a zone as one ``[[transfer]]`` rule's line sees it (``Snapshot.view``: base
and overlay merged), or the base zone for a rule without line.  When a reload swaps one snapshot
for another, `stamp` compares every transfer view of the old snapshot with the new one:

- the **difference** (records deleted, records added) is found by comparing the two views name by
  name and RRset by RRset.  Zone files that did not change are reused by the reload
  (``ZoneFileCache``), so an unchanged base costs one identity check and only the names of the
  overlays are looked at; a re-read base is compared node by node (for 100,000 records, see
  README.rst ``[[transfer]]`` for the measured time).  This runs in the reload's worker thread,
  with the snapshot build, so answers keep flowing.
- the **serial-bump rule**: when the content changed but the file's SOA serial did not advance
  (RFC 1982) past the serial served before — only a line's overlay changed, or the base file was
  edited without raising its serial — the view serves the previous serial plus one (RFC 1982
  addition, modulo 2**32); a file serial newer than the one served wins.  Unchanged content
  keeps the serial served before.  The stamped SOA replaces the view's SOA in the snapshot
  itself, so SOA queries from the line's clients, negative answers, transfers and the journal
  all see one serial.
- each difference whose serial moved goes into the view's bounded **journal** (`Journal`), which
  IXFR answers come from (`Journal.chain`).

Served serials are remembered across restarts when ``[zones] serial_state_file`` is set: the
file holds each view's served serial and a digest of its content (SOA serial left out); at start
a view whose content digest matches serves the saved serial (when newer than the file's), a view
whose content changed while smartdns was down serves the saved serial plus one.  Without the
file a restart serves the zone files' serials (see README.rst for why that can hold a secondary
back).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from smartdns import wire
from smartdns.serial import serial_gte
from smartdns.snapshot import Snapshot
from smartdns.zones import Node, Zone, ZoneView

log = Logger()

SERIAL_MODULUS = 2**32
DEFAULT_JOURNAL_SIZE = 32          # differences kept per transfer view ([[transfer]] journal_size)
#: The differences kept for a view hold at most this many times its records (the oldest go
#: first), so memory stays in proportion to the zone (BIND bounds its journal by size).
JOURNAL_RECORDS_RATIO = 2
SOA_FIXED_BYTES = 20               # serial, refresh, retry, expire, minimum (RFC 1035 §3.3.13)
STATE_VERSION = 1

ViewKey = tuple[bytes, "str | None"]     # (origin key, line or None for the base)


@dataclass(frozen=True, slots=True)
class Difference:
    """One step of a view's history: ``old_soa`` → ``new_soa``, with the records deleted and
    added (RFC 1995 §4: the apex SOA is never among them, the SOAs frame them)."""

    origin: bytes
    line: str | None
    old_soa: wire.RRset
    new_soa: wire.RRset
    deleted: tuple[wire.RRset, ...]
    added: tuple[wire.RRset, ...]
    view_records: int = 0          # records the view holds after this difference
    records: int = 0               # records deleted and added (SOAs not counted): see `difference`

    @property
    def old_serial(self) -> int:
        return soa_serial(self.old_soa)

    @property
    def new_serial(self) -> int:
        return soa_serial(self.new_soa)


@dataclass(frozen=True, slots=True)
class Stamped:
    """What `stamp` made: the snapshot to serve and the differences of its transfer views."""

    snapshot: Snapshot
    differences: tuple[Difference, ...]


def soa_serial(soa: wire.RRset) -> int:
    """The serial of an SOA RRset."""
    rdata = b"".join(soa.rdatas[0])
    return int(struct.unpack_from("!I", rdata, len(rdata) - SOA_FIXED_BYTES)[0])


def with_serial(soa: wire.RRset, serial: int) -> wire.RRset:
    """The same SOA with another serial."""
    rdata = b"".join(soa.rdatas[0])
    cut = len(rdata) - SOA_FIXED_BYTES
    return wire.make_rrset(soa.name, wire.SOA, soa.ttl, [rdata[:cut] + struct.pack("!I", serial) + rdata[cut + 4:]],
                           soa.rclass)


def serial_after(serial: int) -> int:
    """``serial`` plus one, RFC 1982 §3.1 (modulo 2**32)."""
    return (serial + 1) % SERIAL_MODULUS


def transfer_lines(snap: Snapshot) -> set[str | None]:
    """The lines (None: the base) some ``[[transfer]]`` rule transfers."""
    return {rule.line for rule in snap.config.transfers}


def transfer_views(snap: Snapshot) -> list[ViewKey]:
    """Every (origin, line) a ``[[transfer]]`` rule would transfer now, base views first."""
    lines = sorted(transfer_lines(snap), key=lambda line: (line is not None, line or ""))
    return [(origin, line) for line in lines for origin in sorted(snap.zones)
            if (origin, line) not in snap.servfail]


def _same_soa_but_serial(a: wire.RRset, b: wire.RRset) -> bool:
    """Whether two SOAs differ in nothing but the serial (owner, TTL, names, timers)."""
    if a.ttl != b.ttl or a.name != b.name:
        return False
    ra, rb = b"".join(a.rdatas[0]), b"".join(b.rdatas[0])
    return ra[:-SOA_FIXED_BYTES] == rb[:-SOA_FIXED_BYTES] and ra[-16:] == rb[-16:]


NameDiffs = dict[bytes, tuple[list[wire.RRset], list[wire.RRset]]]   # name → (deleted, added)


def _node_difference(origin: bytes, name: bytes, before: Node | None, after: Node | None, out: NameDiffs) -> None:
    """What changed at one name (the apex SOA left out), into ``out`` when anything did."""
    if before is after:
        return
    empty: Node = {}
    before, after = before or empty, after or empty
    deleted: list[wire.RRset] = []
    added: list[wire.RRset] = []
    for rtype in sorted(set(before) | set(after)):
        if name == origin and rtype == wire.SOA:
            continue
        _rrset_difference(before.get(rtype), after.get(rtype), deleted, added)
    if deleted or added:
        out[name] = (deleted, added)


def _zone_difference(old: Zone, new: Zone) -> NameDiffs:
    """Per name, what changed between two base zones (only looked at when the zone was re-read:
    an unchanged file gives the same Zone object back)."""
    out: NameDiffs = {}
    if old is new:
        return out
    old_nodes, new_nodes = old.nodes, new.nodes
    for name, node in new_nodes.items():
        before = old_nodes.get(name)
        if before is not node and before != node:
            _node_difference(new.origin, name, before, node, out)
    for name, before in old_nodes.items():
        if name not in new_nodes:
            _node_difference(new.origin, name, before, None, out)
    return out


def _rrset_difference(before: wire.RRset | None, after: wire.RRset | None,
                      deleted: list[wire.RRset], added: list[wire.RRset]) -> None:
    """Records of ``before`` not in ``after`` go to ``deleted``, the reverse to ``added``; a
    changed TTL or owner spelling replaces the whole RRset."""
    if before == after:
        return
    if (before is None or after is None or before.ttl != after.ttl or before.name != after.name
            or len(before.rdatas) == len(after.rdatas) == 1):     # (one record each: it changed)
        if before is not None:
            deleted.append(before)
        if after is not None:
            added.append(after)
        return
    kept = set(after.rdatas)
    gone = tuple(rdata for rdata in before.rdatas if rdata not in kept)
    had = set(before.rdatas)
    new = tuple(rdata for rdata in after.rdatas if rdata not in had)
    if gone:
        deleted.append(wire.RRset(before.name, before.rtype, before.ttl, gone, before.rclass))
    if new:
        added.append(wire.RRset(after.name, after.rtype, after.ttl, new, after.rclass))


def view_difference(old: ZoneView, new: ZoneView, base: NameDiffs | None = None
                    ) -> tuple[tuple[wire.RRset, ...], tuple[wire.RRset, ...]]:
    """(deleted, added) between two views of one zone, the apex SOA left out, in name order.

    Names outside both views' overlays read the base zone, so their part is the base zones'
    difference (``base``: `_zone_difference` of the two bases, when the caller has it already:
    it is the same for every line of the zone)."""
    if base is None:
        base = _zone_difference(old.base, new.base)
    overlaid = set(old.merged) | set(new.merged)
    found: NameDiffs = {name: diff for name, diff in base.items() if name not in overlaid}
    for name in overlaid:
        _node_difference(new.origin, name, old.node(name), new.node(name), found)
    deleted: list[wire.RRset] = []
    added: list[wire.RRset] = []
    for name in sorted(found):
        deleted += found[name][0]
        added += found[name][1]
    return tuple(deleted), tuple(added)


def _record_hash(rrset: wire.RRset, rdata: bytes) -> int:
    """One record's share of a view digest."""
    h = hashlib.blake2b(digest_size=16)
    h.update(rrset.name.lower() + struct.pack("!HHIH", rrset.rtype, rrset.rclass, rrset.ttl, len(rdata)) + rdata)
    return int.from_bytes(h.digest(), "big")


def records_sum(rrsets: Iterable[wire.RRset]) -> int:
    """The sum of the records' hashes: what the records add to a view digest."""
    return sum(_record_hash(rrset, b"".join(parts)) for rrset in rrsets for parts in rrset.rdatas)


def view_sum(view: ZoneView) -> int:
    """The hash sum of every record a view serves but its apex SOA.  A sum of per-record
    hashes does not depend on the order names are stored in, and a difference updates it
    (`advance_sum`) without reading the whole zone again."""
    seen = set(view.merged)
    nodes = [*view.merged.items(), *((name, node) for name, node in view.base.nodes.items() if name not in seen)]
    return records_sum(rrset for name, node in nodes for rtype, rrset in node.items()
                       if not (name == view.origin and rtype == wire.SOA))


def advance_sum(total: int, difference: Difference) -> int:
    """A view's `view_sum` after ``difference``."""
    return total - records_sum(difference.deleted) + records_sum(difference.added)


def view_digest(view: ZoneView, total: int | None = None) -> str:
    """A digest of what a view serves, its SOA's serial left out (``total``: its `view_sum`,
    when known)."""
    if total is None:
        total = view_sum(view)
    return f"{(total + records_sum([with_serial(view.soa, 0)])) % 2**128:032x}"


def difference(origin: bytes, line: str | None, old_soa: wire.RRset, new_soa: wire.RRset,
               deleted: tuple[wire.RRset, ...], added: tuple[wire.RRset, ...], view: ZoneView) -> Difference:
    """A Difference with its counts made now (in the reload's thread, not at the swap)."""
    records = sum(len(rrset.rdatas) for rrset in deleted) + sum(len(rrset.rdatas) for rrset in added)
    return Difference(origin, line, old_soa, new_soa, deleted, added, view_records(view), records)


def view_records(view: ZoneView) -> int:
    """How many records a view serves (an overlay's names counted as merged)."""
    merged = view.merged
    total = sum(len(rrset.rdatas) for node in merged.values() for rrset in node.values())
    return total + sum(len(rrset.rdatas) for name, node in view.base.nodes.items() if name not in merged
                       for rrset in node.values())


def _stamped_view(view: ZoneView, serial: int) -> ZoneView:
    """``view`` serving ``serial`` in its apex SOA (the apex node replaced in ``merged``)."""
    origin = view.origin
    node = dict(view.node(origin) or {})
    node[wire.SOA] = with_serial(view.soa, serial)
    merged = dict(view.merged)
    merged[origin] = node
    return dataclasses.replace(view, merged=merged)


@dataclass(frozen=True, slots=True)
class Saved:
    """A view's served serial and content digest, as `SerialState` keeps them across restarts."""

    serial: int
    digest: str


def stamp(old: Snapshot | None, new: Snapshot, saved: Mapping[ViewKey, Saved] | None = None,
          digests: Mapping[ViewKey, str] | None = None) -> Stamped:
    """``new`` with the serial-bump rule applied to its transfer views, and the differences
    from ``old`` (the snapshot served until now; None at start, where ``saved`` may hold what
    the last run served and ``digests`` the `view_digest` of each view now)."""
    base_views = dict(new.base_views)
    views = dict(new.views)
    differences: list[Difference] = []
    zone_differences: dict[tuple[int, int], NameDiffs] = {}    # (old base, new base) → per name, once
    replaced = False
    for origin, line in transfer_views(new):
        view = views.get((origin, line)) if line is not None else None
        if view is None:
            view = base_views[origin]
        previous: ZoneView | None = None
        if old is not None and origin in old.zones and (origin, line) not in old.servfail:
            previous = old.view(origin, line)
        file_serial = soa_serial(view.soa)
        served = file_serial
        if previous is not None:
            before = soa_serial(previous.soa)
            pair = (id(previous.base), id(view.base))     # both alive for the whole call
            if pair not in zone_differences:
                zone_differences[pair] = _zone_difference(previous.base, view.base)
            deleted, added = view_difference(previous, view, zone_differences[pair])
            changed = bool(deleted or added) or not _same_soa_but_serial(previous.soa, view.soa)
            if not serial_gte(before, file_serial):
                served = file_serial
            else:
                served = serial_after(before) if changed else before
            if served != before:
                new_soa = with_serial(view.soa, served)
                differences.append(difference(origin, line, previous.soa, new_soa, deleted, added, view))
        elif saved is not None and (origin, line) in saved and digests is not None:
            remembered = saved[(origin, line)]
            newer = not serial_gte(remembered.serial, file_serial)
            if remembered.digest == digests.get((origin, line)):
                served = file_serial if newer else remembered.serial
            else:
                served = file_serial if newer else serial_after(remembered.serial)
        if served == file_serial:
            if line is not None and (origin, line) not in views:
                continue               # the line shares the base view, and serves what it serves
            if line is None or soa_serial(view.soa) == served:
                continue
        stamped = _stamped_view(view, served)
        if line is None:
            base_views[origin] = stamped
        else:
            views[(origin, line)] = stamped
        replaced = True
    if not replaced:
        return Stamped(new, tuple(differences))
    return Stamped(dataclasses.replace(new, base_views=base_views, views=views), tuple(differences))


def served_serials(snap: Snapshot) -> list[tuple[str, str | None, int]]:
    """(zone, line or None, serial served) of every zone for clients in no line and for each
    line with a view of its own (the other lines are served the base's)."""
    out: list[tuple[str, str | None, int]] = [
        (wire.to_text(origin).rstrip(".") or ".", None, soa_serial(view.soa)) for origin, view in sorted(snap.base_views.items())]
    out += [(wire.to_text(origin).rstrip(".") or ".", line, soa_serial(view.soa))
            for (origin, line), view in sorted(snap.views.items())]
    return out


class Journal:
    """Each transfer view's last differences (at most its ``journal_size``), for IXFR.

    `prepare` runs in the reload's worker thread (it only reads the two immutable snapshots);
    `commit` runs on the reactor when the snapshot is swapped in and keeps what `prepare` found,
    or stamps there when the snapshot did not come through `prepare`."""

    def __init__(self, state: SerialState | None = None) -> None:
        self._steps: dict[ViewKey, deque[Difference]] = {}
        self._prepared: tuple[Snapshot | None, Snapshot, tuple[Difference, ...], dict[ViewKey, int]] | None = None
        self.state = state
        self.sums: dict[ViewKey, int] = {}      # each transfer view's view_sum (with a state file only)

    def first(self, snap: Snapshot) -> Snapshot:
        """The snapshot to serve at start: saved serials (``[zones] serial_state_file``) applied."""
        if self.state is None:
            return stamp(None, snap).snapshot
        self.sums = {key: view_sum(snap.view(*key)) for key in transfer_views(snap)}
        digests = {key: view_digest(snap.view(*key), total) for key, total in self.sums.items()}
        stamped = stamp(None, snap, self.state.load(), digests)
        self.state.save(stamped.snapshot, self.sums)
        return stamped.snapshot

    def prepare(self, old: Snapshot | None, new: Snapshot) -> Snapshot:
        """Stamp ``new`` against ``old`` (the snapshot served while it was built)."""
        stamped = stamp(old, new)
        sums = self._advance(stamped) if self.state is not None else {}
        self._prepared = (old, stamped.snapshot, stamped.differences, sums)
        return stamped.snapshot

    def _advance(self, stamped: Stamped) -> dict[ViewKey, int]:
        """Every transfer view's sum after ``stamped``: the differences applied, a view that
        was not there before read whole."""
        sums: dict[ViewKey, int] = {}
        moved = {(d.origin, d.line): d for d in stamped.differences}
        for key in transfer_views(stamped.snapshot):
            before = self.sums.get(key)
            if before is None:
                sums[key] = view_sum(stamped.snapshot.view(*key))
            elif key in moved:
                sums[key] = advance_sum(before, moved[key])
            else:
                sums[key] = before
        return sums

    def commit(self, old: Snapshot, new: Snapshot) -> tuple[Snapshot, tuple[Difference, ...]]:
        """The snapshot to swap in for ``new`` and its differences, now kept in the journal."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] is old and prepared[1] is new:
            differences, sums = prepared[2], prepared[3]
        else:
            stamped = stamp(old, new)
            new, differences = stamped.snapshot, stamped.differences
            sums = self._advance(stamped) if self.state is not None else {}
        sizes = journal_sizes(new)
        for difference in differences:
            key = (difference.origin, difference.line)
            size = sizes.get(difference.line, 0)
            steps = self._steps.get(key)
            if steps is None or steps.maxlen != size:
                steps = self._steps[key] = deque(steps or (), maxlen=size)
            steps.append(difference)
            held = sum(step.records for step in steps)
            while len(steps) > 1 and held > JOURNAL_RECORDS_RATIO * max(difference.view_records, 1):
                held -= steps.popleft().records
            log.info("{zone} (line {line}): serving serial {new} (was {old}), {records} records changed; "
                     "IXFR journal holds {steps}", zone=wire.to_text(difference.origin), line=difference.line or "-",
                     new=difference.new_serial, old=difference.old_serial, records=difference.records,
                     steps=len(steps))
        live = set(transfer_views(new))
        for key in [key for key in self._steps if key not in live]:
            del self._steps[key]                  # the zone, line or rule is gone: so is its history
        if self.state is not None:
            changed = sums.keys() != self.sums.keys() or bool(differences)
            self.sums = sums
            if changed:
                self.state.save(new, sums)
        return new, differences

    def steps(self, origin: bytes, line: str | None) -> tuple[Difference, ...]:
        """The view's differences kept, oldest first."""
        return tuple(self._steps.get((origin, line), ()))

    def chain(self, origin: bytes, line: str | None, since: int, current: int) -> tuple[Difference, ...] | None:
        """The differences leading from serial ``since`` to ``current``, one after the other with
        no gap; None when the journal does not reach back to ``since``."""
        steps = list(self._steps.get((origin, line), ()))
        for start, step in enumerate(steps):
            if step.old_serial != since:
                continue
            found = steps[start:]
            if all(a.new_serial == b.old_serial for a, b in zip(found, found[1:])) and found[-1].new_serial == current:
                return tuple(found)
        return None


def journal_sizes(snap: Snapshot) -> dict[str | None, int]:
    """Differences kept per line (None: base): the largest ``journal_size`` of the rules for it."""
    sizes: dict[str | None, int] = {}
    for rule in snap.config.transfers:
        sizes[rule.line] = max(sizes.get(rule.line, 0), rule.journal_size)
    return sizes


class SerialState:
    """``[zones] serial_state_file``: each transfer view's served serial and content digest,
    written (temp file, rename) whenever a served serial changes, read once at start."""

    def __init__(self, path: str, *, write: bool = True) -> None:
        self.path = path
        self.write = write        # False in the worker processes of [server] workers: they only read

    def load(self) -> dict[ViewKey, Saved]:
        """What the file holds; nothing when it is missing or unreadable (logged)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            rows = data["views"] if data.get("version") == STATE_VERSION else []
            return {(wire.from_text(row["zone"]).lower(), row["line"]): Saved(int(row["serial"]) % SERIAL_MODULUS,
                                                                              str(row["digest"]))
                    for row in rows}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warn("serial state {path} not read ({error}); serving the zone files' serials",
                     path=self.path, error=e)
            return {}

    def save(self, snap: Snapshot, sums: Mapping[ViewKey, int]) -> None:
        """Write every transfer view's served serial and digest (from its kept sum)."""
        if not self.write:
            return
        rows: list[dict[str, Any]] = []
        for key in transfer_views(snap):
            view = snap.view(*key)
            rows.append({"zone": wire.to_text(key[0]), "line": key[1], "serial": soa_serial(view.soa),
                         "digest": view_digest(view, sums.get(key))})
        try:
            directory = os.path.dirname(self.path) or "."
            fd, temp = tempfile.mkstemp(prefix=".serials-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": STATE_VERSION, "views": rows}, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as e:
            log.warn("serial state {path} not written: {error}", path=self.path, error=e.strerror or e)
