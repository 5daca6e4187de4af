"""Dynamic updates (RFC 2136) signed with a ``[[update]]`` key, written back to the zone files.

An UPDATE signed (RFC 8945) with a key some ``[[update]]`` names for the zone is processed as
RFC 2136 §3 and BIND 9.18 do, against exactly what that rule's line sees (``Snapshot.view``):

1. zone section: a name that is not one of our zone apexes gets NOTAUTH; a key that no
   ``[[update]]`` names for the zone, REFUSED (both signed, as BIND);
2. update section prescan (§3.4.1): a record outside the zone is NOTZONE, a malformed one
   FORMERR, NSEC/NSEC3 (and RRSIG below the apex) REFUSED, before any prerequisite (BIND's order);
3. prerequisites (§3.2): name in use (NXDOMAIN), name not in use (YXDOMAIN), RRset exists
   (NXRRSET), RRset does not exist (YXRRSET), RRset exists with exactly these records (NXRRSET);
4. the update section, record by record in order (§3.4.2), with BIND's silent refusals: no
   non-CNAME data beside a CNAME nor a CNAME beside other data, the SOA and apex NS RRsets are
   never deleted (nor the last apex NS record), an SOA only replaces the apex SOA and only with a
   greater serial, no NS or DNAME at a wildcard, no DS at the apex; an added record whose TTL
   differs from its RRset's sets the RRset's TTL (BIND);
5. when anything changed, the SOA serial goes up by one (§3.6; unless the update set a greater
   one itself); an update that changes nothing writes nothing and keeps the serial, as BIND.

The new data is written to the files it comes from (``write_back``): the base zone file, or,
for a rule with a line, that line's overlay file (created when the line has none yet).  The
overlay holds what the line sees differently from the base zone, so an RRset that only the base
has cannot be removed for a single line (answered REFUSED, logged).  The line's SOA lives where
the line's view takes it from: its overlay when that holds an SOA, else the base zone file.

Files are edited in place, line by line (comments, layout and untouched records stay as they
are; removed records' lines go, new records are appended with absolute names and explicit TTLs,
the SOA serial is rewritten where it stands).  Every new file is first written to a temporary
file in the same directory and read back with smartdns's own reader; only when that reading
gives exactly the intended data is it fsynced and renamed over the old file (if the in-place
edit does not read back right, the file is written in canonical form instead, which must).
The reply is sent after the reload that serves the new data (``UpdateHandler``).
"""
from __future__ import annotations

import os
import stat
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.ttl
from twisted.internet import defer, threads
from twisted.logger import Logger

from smartdns import wire
from smartdns.config import UpdateRule
from smartdns.serial import serial_gte
from smartdns.snapshot import Snapshot
from smartdns.tsig import config_keyring
from smartdns.xfr import BADKEY, BADSIG, BADTIME, PASS, HookResult, tsig_error_answer
from smartdns.zones import Node, Zone, ZoneView, make_view, overlay_default_ttl, read_zone_file

log = Logger()

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED = 0, 1, 2, 3, 5
YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE = 6, 7, 8, 9, 10

CLASS_ANY, CLASS_NONE = dns.rdataclass.ANY, dns.rdataclass.NONE
ZONE_SECTION, PREREQUISITE_SECTION, UPDATE_SECTION = 0, 1, 2   # RFC 2136 §2: dnspython's section order
#: Types BIND never adds by update (RFC 1123 §5.2.6: MD and MF are obsolete).
OBSOLETE_TYPES = frozenset({3, 4})
#: Types that may stand beside a CNAME (BIND's dns_rdatatype_atcname: DNSSEC data).
AT_CNAME_TYPES = frozenset({46, 47, 25})          # RRSIG, NSEC, KEY
SERIAL_MODULUS = 1 << 32

Rdata = Any                  # a dnspython rdata
NodeData = dict[int, "RRData"]
Normal = dict[int, tuple[int, frozenset[bytes]]]


@dataclass
class RRData:
    """One RRset being edited: TTL and records (dnspython rdatas, in order)."""

    ttl: int
    rdatas: list[Rdata]

    def wires(self) -> list[bytes]:
        return [_rdata_wire(rd) for rd in self.rdatas]

    def normal(self) -> tuple[int, frozenset[bytes]]:
        return self.ttl, frozenset(self.wires())


class UpdateFailed(Exception):
    """The update is answered with ``rcode`` and changes nothing (``why`` goes to the log)."""

    def __init__(self, rcode: int, why: str) -> None:
        super().__init__(why)
        self.rcode = rcode
        self.why = why


class Stale(Exception):
    """A file on disk no longer holds what is served (edited by hand since the last reload)."""


# -- the data of one view while an update is applied -------------------------------------------

class Working:
    """A view's data as the update section changes it: nodes are copied from the view when
    first touched (a large zone is not converted as a whole)."""

    def __init__(self, view: ZoneView) -> None:
        self.view = view
        self.origin = view.origin
        self.nodes: dict[bytes, NodeData] = {}
        self.spelled: dict[bytes, bytes] = {}

    def node(self, key: bytes) -> NodeData:
        """The mutable node at ``key`` (empty if the name has no data)."""
        found = self.nodes.get(key)
        if found is None:
            found = self.nodes[key] = {rtype: _to_rrdata(rrset) for rtype, rrset in (self.view.node(key) or {}).items()}
            source = self.view.node(key)
            if source:
                self.spelled[key] = next(iter(source.values())).name
        return found

    def peek(self, key: bytes) -> NodeData | Node:
        """The node at ``key`` without copying it (read only)."""
        found = self.nodes.get(key)
        return found if found is not None else (self.view.node(key) or {})

    def changed(self) -> dict[bytes, NodeData]:
        """The touched names whose data now differs from the view's."""
        out = {}
        for key, node in self.nodes.items():
            if normal_node(node) != normal_node(self.view.node(key) or {}):
                out[key] = node
        return out


def _to_rrdata(rrset: wire.RRset) -> RRData:
    rdatas = []
    for parts in rrset.rdatas:
        data = b"".join(parts)
        rdatas.append(dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType(rrset.rtype), data, 0, len(data)))
    return RRData(rrset.ttl, rdatas)


def _rdata_wire(rdata: Rdata) -> bytes:
    data = rdata.to_wire()
    assert data is not None
    return bytes(data)


def normal_node(node: Mapping[int, Any]) -> Normal:
    """A node (ours or the wire's) as {type: (ttl, records)}, for comparing."""
    out: Normal = {}
    for rtype, rrset in node.items():
        if isinstance(rrset, RRData):
            if rrset.rdatas:
                out[rtype] = rrset.normal()
        else:
            out[rtype] = (rrset.ttl, frozenset(b"".join(parts) for parts in rrset.rdatas))
    return out


def _key(name: dns.name.Name) -> bytes:
    data = name.canonicalize().to_wire()
    assert data is not None
    return bytes(data)


def _spelled(name: dns.name.Name) -> bytes:
    data = name.to_wire()
    assert data is not None
    return bytes(data)


def _below(key: bytes, origin: bytes) -> bool:
    """Whether a name (key form) is at or below ``origin``."""
    return key == origin or (key.endswith(origin) and _is_label_boundary(key, len(key) - len(origin)))


def _is_label_boundary(key: bytes, offset: int) -> bool:
    pos = 0
    while pos < offset:
        pos += 1 + key[pos]
    return pos == offset


# -- RFC 2136 §3.2 to §3.4 -------------------------------------------------------------------

def prescan(message: dns.message.Message, origin: bytes) -> None:
    """§3.4.1: every update record in the zone and well formed (BIND's checks and order)."""
    for rrset in message.sections[UPDATE_SECTION]:
        if not _below(_key(rrset.name), origin):
            raise UpdateFailed(NOTZONE, f"update record {rrset.name} is outside the zone")
        rtype, deleting = int(rrset.rdtype), rrset.deleting
        if deleting is None:
            if rrset.rdclass != dns.rdataclass.IN:
                raise UpdateFailed(FORMERR, f"update record has class {rrset.rdclass}")
            if dns.rdatatype.is_metatype(rrset.rdtype):
                raise UpdateFailed(FORMERR, "meta type in update")
            for rdata in rrset:
                bad = bad_name(rrset.name, rdata)
                if bad is not None:
                    raise UpdateFailed(REFUSED, f"check-names: {rrset.name}/{dns.rdatatype.to_text(rrset.rdtype)}: "
                                                f"{bad} is not a valid host name or mailbox")
        elif deleting == CLASS_ANY:
            if rrset.ttl != 0 or len(rrset) or (dns.rdatatype.is_metatype(rrset.rdtype) and rtype != dns.rdatatype.ANY):
                raise UpdateFailed(FORMERR, "malformed class ANY update record")
        elif rrset.ttl != 0 or dns.rdatatype.is_metatype(rrset.rdtype):
            raise UpdateFailed(FORMERR, "malformed class NONE update record")
        if rtype in (dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.RRSIG):
            # BIND refuses NSEC, NSEC3 and RRSIG below the apex; smartdns serves no RRSIG at all
            # (the zone reader drops them), so an apex RRSIG is refused too.
            raise UpdateFailed(REFUSED, f"{dns.rdatatype.to_text(rrset.rdtype)} is not updated by clients")


#: Types whose owner must be a host name (BIND's check-names for a primary zone: fail).
HOSTNAME_OWNERS = frozenset({1, 11, 28, 38})                       # A, WKS, AAAA, A6
REVERSE_ZONES = tuple(dns.name.from_text(text) for text in ("in-addr.arpa.", "ip6.arpa.", "ip6.int."))


def bad_name(owner: dns.name.Name, rdata: Rdata) -> dns.name.Name | None:
    """The name of an added record that BIND's ``check-names`` (``fail`` for a primary zone)
    rejects, or None: the owner of an address record, and the host names (RFC 952/1123 letters,
    digits, inner hyphens) and mailboxes in the RDATA of MX, NS, SRV, AFSDB, RT, SVCB/HTTPS
    (service form), SOA, RP and MINFO, and of PTR in reverse zones."""
    rtype = int(rdata.rdtype)
    if rtype in HOSTNAME_OWNERS and not is_hostname(owner, wildcard=True):
        return owner
    hosts: list[dns.name.Name] = []
    mailboxes: list[dns.name.Name] = []
    if rtype in (wire.MX, 21):                                      # MX, RT
        hosts.append(rdata.exchange)
    elif rtype in (wire.NS, wire.SRV):
        hosts.append(rdata.target)
    elif rtype == 18:                                               # AFSDB
        hosts.append(rdata.hostname)
    elif rtype in (64, 65) and rdata.priority > 0:                  # SVCB, HTTPS (not the alias form)
        hosts.append(rdata.target)
    elif rtype == wire.PTR and any(owner.is_subdomain(zone) for zone in REVERSE_ZONES):
        hosts.append(rdata.target)
    elif rtype == wire.SOA:
        hosts.append(rdata.mname)
        mailboxes.append(rdata.rname)
    elif rtype == 17:                                               # RP
        mailboxes.append(rdata.mbox)
    elif rtype == 14:                                               # MINFO
        mailboxes += [rdata.rmailbx, rdata.emailbx]
    for name in hosts:
        if not is_hostname(name, wildcard=False):
            return name
    for name in mailboxes:
        if not is_hostname(name.parent() if len(name.labels) > 1 else name, wildcard=False):
            return name
    return None


def is_hostname(name: dns.name.Name, *, wildcard: bool) -> bool:
    """BIND's dns_name_ishostname: every label letters, digits and hyphens, a letter or digit at
    each end (a leading ``*`` label allowed for an owner)."""
    labels = [label for label in name.labels if label]
    if wildcard and labels and labels[0] == b"*":
        labels = labels[1:]
    for label in labels:
        if not (label[:1].isalnum() and label[-1:].isalnum() and label.isascii()):
            return False
        inner = label[1:-1].replace(b"-", b"")
        if inner and not inner.isalnum():                           # bytes.isalnum: ASCII only
            return False
    return True


def check_prerequisites(message: dns.message.Message, view: ZoneView) -> None:
    """§3.2, against what the view serves; raises UpdateFailed with the first failure's rcode."""
    origin = view.origin
    wanted: dict[tuple[bytes, int], set[bytes]] = {}
    for rrset in message.sections[PREREQUISITE_SECTION]:
        key, rtype = _key(rrset.name), int(rrset.rdtype)
        if rrset.ttl != 0:
            raise UpdateFailed(FORMERR, "prerequisite TTL is not zero")
        if not _below(key, origin):
            raise UpdateFailed(NOTZONE, f"prerequisite {rrset.name} is outside the zone")
        node = view.node(key) or {}
        if rrset.deleting == CLASS_ANY:
            if rtype == dns.rdatatype.ANY:
                if not node:
                    raise UpdateFailed(NXDOMAIN, f"'name in use' prerequisite not satisfied: {rrset.name}")
            elif rtype not in node:
                raise UpdateFailed(NXRRSET, f"'RRset exists' prerequisite not satisfied: {rrset.name}/"
                                            f"{dns.rdatatype.to_text(rrset.rdtype)}")
        elif rrset.deleting == CLASS_NONE:
            if rtype == dns.rdatatype.ANY:
                if node:
                    raise UpdateFailed(YXDOMAIN, f"'name not in use' prerequisite not satisfied: {rrset.name}")
            elif rtype in node:
                raise UpdateFailed(YXRRSET, f"'RRset does not exist' prerequisite not satisfied: {rrset.name}/"
                                            f"{dns.rdatatype.to_text(rrset.rdtype)}")
        elif rrset.rdclass == dns.rdataclass.IN:
            wanted.setdefault((key, rtype), set()).update(_rdata_wire(rd) for rd in rrset)
        else:
            raise UpdateFailed(FORMERR, "malformed prerequisite")
    for (key, rtype), records in wanted.items():
        served = (view.node(key) or {}).get(rtype)
        have = {b"".join(parts) for parts in served.rdatas} if served is not None else set()
        if {_canonical(rtype, r) for r in have} != {_canonical(rtype, r) for r in records}:
            raise UpdateFailed(NXRRSET, f"'RRset exists (value dependent)' prerequisite not satisfied: "
                                        f"{wire.to_text(key)}/{dns.rdatatype.to_text(dns.rdatatype.RdataType(rtype))}")


def _canonical(rtype: int, data: bytes) -> bytes:
    """RDATA in RFC 4034 §6.2 canonical form (names lowercased where the type says so)."""
    rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType(rtype), data, 0, len(data))
    out = rdata.to_digestable()
    return bytes(out)


def apply_updates(message: dns.message.Message, work: Working) -> bool:
    """§3.4.2, record by record; True when the update set the SOA serial itself."""
    origin = work.origin
    serial_set = False
    for rrset in message.sections[UPDATE_SECTION]:
        key, rtype = _key(rrset.name), int(rrset.rdtype)
        if rrset.deleting is None:
            for rdata in rrset:
                serial_set |= _add(work, rrset.name, key, rtype, rrset.ttl, rdata)
        elif rrset.deleting == CLASS_ANY:
            node = work.node(key)
            if rtype == dns.rdatatype.ANY:
                for present in list(node):
                    if key != origin or present not in (wire.SOA, wire.NS):
                        del node[present]
            elif key == origin and rtype in (wire.SOA, wire.NS):
                continue                           # BIND: "attempt to delete all SOA or NS records ignored"
            else:
                node.pop(rtype, None)
        else:
            node = work.node(key)
            for rdata in rrset:
                existing = node.get(rtype)
                if existing is None:
                    continue
                if key == origin and (rtype == wire.SOA or (rtype == wire.NS and len(existing.rdatas) == 1)):
                    continue                       # the SOA, and the last apex NS, stay
                existing.rdatas = [rd for rd in existing.rdatas if rd != rdata]
                if not existing.rdatas:
                    del node[rtype]
    return serial_set


def _add(work: Working, name: dns.name.Name, key: bytes, rtype: int, ttl: int, rdata: Rdata) -> bool:
    """Add one record as BIND does (§3.4.2.2); True when it set a greater SOA serial."""
    origin = work.origin
    if rtype in OBSOLETE_TYPES:
        return False
    if rtype in (wire.NS, wire.DNAME) and name.is_wild():
        return False
    present = work.peek(key)
    if rtype == wire.CNAME:
        if any(t != wire.CNAME and t not in AT_CNAME_TYPES for t in present):
            return False                           # "attempt to add CNAME alongside non-CNAME ignored"
    elif wire.CNAME in present and rtype not in AT_CNAME_TYPES:
        return False                               # "attempt to add non-CNAME alongside CNAME ignored"
    serial_set = False
    if rtype == wire.SOA:
        if wire.SOA not in present:
            return False                           # "attempt to create 2nd SOA ignored"
        node = work.node(key)
        if serial_gte(_soa_serial(node[wire.SOA].rdatas[0]), int(rdata.serial)):
            return False                           # "SOA update failed to increment serial"
        serial_set = True
    if rtype == wire.DS and key == origin:
        return False
    node = work.node(key)
    if key not in work.spelled:
        work.spelled[key] = _spelled(name)
    existing = node.get(rtype)
    if existing is None:
        node[rtype] = RRData(ttl, [rdata])
        return serial_set
    if rtype in (wire.SOA, wire.CNAME) or (rtype == wire.DNAME):
        node[rtype] = RRData(ttl, [rdata])         # singletons: the new record replaces the old
        return serial_set
    if rdata in existing.rdatas and existing.ttl == ttl:
        return serial_set                          # a duplicate: nothing to do
    existing.ttl = ttl                             # the RRset takes the new record's TTL (BIND)
    if rdata not in existing.rdatas:
        existing.rdatas.append(rdata)
    return serial_set


def check_targets(work: Working) -> None:
    """BIND's checks after an update that changed something (``check-integrity``, on by default
    for a primary zone): every apex NS target inside the zone must have an address (A or AAAA)
    and not be a CNAME, an empty name or below a DNAME ("post update name server sanity check
    failed"), and so must every MX target added by this update (an empty name passes there,
    as in BIND); else REFUSED and nothing changes."""
    apex = work.peek(work.origin).get(wire.NS)
    for rdata in _records(apex):
        state = target_state(work, _key(rdata.target))
        if state in ("none", "empty", "cname", "dname"):
            raise UpdateFailed(REFUSED, f"post update name server sanity check failed: NS {rdata.target} ({state})")
    for key, node in work.changed().items():
        mx = node.get(wire.MX)
        if mx is None:
            continue
        before = {b"".join(parts) for parts in ((work.view.node(key) or {}).get(wire.MX) or _NO_RRSET).rdatas}
        for rdata in mx.rdatas:
            if _rdata_wire(rdata) in before:
                continue
            state = target_state(work, _key(rdata.exchange))
            if state in ("none", "cname", "dname"):
                raise UpdateFailed(REFUSED, f"{wire.to_text(key)}/MX {rdata.exchange}: "
                                            f"{'has no address records (A or AAAA)' if state == 'none' else 'is a ' + state}")


_NO_RRSET = wire.make_rrset(wire.ROOT, 0, 0, [])


def _records(rrset: Any) -> list[Rdata]:
    """The dnspython records of an RRset being edited or served (none for None)."""
    if rrset is None:
        return []
    if isinstance(rrset, RRData):
        return list(rrset.rdatas)
    return _to_rrdata(rrset).rdatas


def target_state(work: Working, target: bytes) -> str:
    """What an address lookup of ``target`` finds in the updated view, as BIND's zone database
    answers it: "outside" the zone, "cut" (at or below a delegation), "dname" (below a DNAME),
    "ok" (an A or AAAA, a wildcard's included), "cname", "empty" (an empty non-terminal) or
    "none" (no such name, or no address at it)."""
    origin = work.origin
    if not _below(target, origin):
        return "outside"
    above = []
    name = target
    while name != origin:
        name = wire.parent(name)
        above.append(name)
    for name in reversed(above):                   # from the apex down to the target's parent
        node = work.peek(name)
        if wire.DNAME in node:
            return "dname"
        if name != origin and wire.NS in node:
            return "cut"
    node = work.peek(target)
    if target != origin and wire.NS in node:
        return "cut"
    if wire.A in node or wire.AAAA in node:
        return "ok"
    if wire.CNAME in node:
        return "cname"
    if node:
        return "none"
    if _exists(work, target):
        return "empty"
    encloser = wire.parent(target)
    while encloser != origin and not _exists(work, encloser):
        encloser = wire.parent(encloser)
    wild = work.peek(b"\x01*" + encloser)
    if wire.A in wild or wire.AAAA in wild:
        return "ok"
    return "cname" if wire.CNAME in wild else "none"


def _exists(work: Working, name: bytes) -> bool:
    """Whether ``name`` has data or names below it in the updated view (a name whose data the
    update removed counts as gone, even if it had names below it: BIND would call it empty)."""
    node = work.nodes.get(name)
    if node is not None and node:
        return True
    if any(key != name and _below(key, name) and data for key, data in work.nodes.items()):
        return True
    return node is None and work.view.exists(name)


def remove_orphaned_ds(work: Working) -> None:
    """RFC 4035 §2.4 as BIND applies it after an update: DS belongs at a delegation only, so a DS
    added where there is no NS (or at the apex), and the DS of a name whose NS the update
    removed, are deleted (after the serial was raised, as BIND does)."""
    for key, node in work.changed().items():
        before = work.view.node(key) or {}
        added_ds = wire.DS in node and normal_node(node).get(wire.DS) != normal_node(before).get(wire.DS)
        lost_ns = wire.NS in before and wire.NS not in node
        if (added_ds or lost_ns) and wire.DS in node and (wire.NS not in node or key == work.origin):
            del node[wire.DS]


def _soa_serial(rdata: Rdata) -> int:
    return int(rdata.serial)


def bump_serial(work: Working) -> None:
    """RFC 2136 §3.6 as BIND's ``serial-update-method increment``: one more, skipping 0."""
    soa = work.node(work.origin)[wire.SOA]
    serial = (_soa_serial(soa.rdatas[0]) + 1) % SERIAL_MODULUS or 1
    soa.rdatas = [soa.rdatas[0].replace(serial=serial)]


# -- from a changed view to the files it is made of --------------------------------------------

NodeContent = dict[int, tuple[bytes, int, list[bytes]]]        # type → (owner spelled, ttl, RDATA)


@dataclass
class FileChange:
    """One file an update rewrites: what it holds now and the nodes it must hold instead."""

    path: str
    origin_text: str
    overlay: bool
    default_ttl: int | None
    current: Mapping[bytes, Node]                    # what the file holds (as read)
    changes: dict[bytes, NodeContent] = field(default_factory=dict)   # name → new node ({}: none)
    exists: bool = True


def _content(work: Working, key: bytes, node: Mapping[int, RRData]) -> NodeContent:
    spelled = work.spelled.get(key, key)
    return {rtype: (spelled, rr.ttl, rr.wires()) for rtype, rr in node.items() if rr.rdatas}


def _content_of(node: Node) -> NodeContent:
    return {rtype: (rrset.name, rrset.ttl, [b"".join(p) for p in rrset.rdatas]) for rtype, rrset in node.items()}


def _normal_content(node: Mapping[int, tuple[bytes, int, list[bytes]]]) -> Normal:
    return {rtype: (ttl, frozenset(rdatas)) for rtype, (_name, ttl, rdatas) in node.items()}


def plan_base(work: Working, base: Zone, path: str, origin_text: str) -> list[FileChange]:
    """A base-zone rule: the changed names go to the zone file as they are."""
    change = FileChange(path, origin_text, False, None, base.nodes)
    for key, node in work.changed().items():
        change.changes[key] = _content(work, key, node)
    return [change]


def plan_line(work: Working, base: Zone, base_path: str, overlay: Zone | None, overlay_path: str,
              origin_text: str) -> list[FileChange]:
    """A line's rule: the overlay that makes the line see the changed view (RFC 1034 §3.6.2's
    CNAME rule as ``zones.merge_nodes`` applies it); the SOA where the line's SOA comes from."""
    origin = work.origin
    overlay_nodes: Mapping[bytes, Node] = overlay.nodes if overlay is not None else {}
    overlay_change = FileChange(overlay_path, origin_text, True,
                                overlay_default_ttl(base_path, base), overlay_nodes, exists=overlay is not None)
    base_change = FileChange(base_path, origin_text, False, None, base.nodes)
    for key, node in work.changed().items():
        desired = _content(work, key, node)
        below = _content_of(base.nodes.get(key, {}))
        if key == origin:
            soa = desired.pop(wire.SOA)
            below.pop(wire.SOA, None)
            own_soa = wire.SOA in overlay_nodes.get(origin, {})
            if _normal_content({wire.SOA: soa}) != normal_node({wire.SOA: work.view.soa}):
                if own_soa:
                    pass                               # kept in the overlay node below
                else:
                    base_apex = dict(_content_of(base.nodes.get(origin, {})))
                    base_apex[wire.SOA] = soa
                    base_change.changes[origin] = base_apex
        new = _overlay_node(key, desired, below)
        if key == origin and wire.SOA in overlay_nodes.get(origin, {}):
            new = dict(new or {})
            new[wire.SOA] = soa
        overlay_change.changes[key] = new or {}
    changes = [overlay_change]
    if base_change.changes:
        changes.append(base_change)
    return changes


def _overlay_node(key: bytes, desired: NodeContent, below: NodeContent) -> NodeContent | None:
    """The overlay node under which the base node ``below`` reads as ``desired`` (None: no
    overlay node needed); UpdateFailed when an overlay cannot say it (removing base data)."""
    want, base = _normal_content(desired), _normal_content(below)
    if want == base:
        return None
    if wire.CNAME in want or wire.CNAME in base:
        if not want:
            raise UpdateFailed(REFUSED, f"{wire.to_text(key)} comes from the base zone and cannot be removed "
                                        "for one line (an overlay only adds or replaces RRsets)")
        return desired
    missing = [t for t in base if t not in want]
    if missing:
        names = ", ".join(dns.rdatatype.to_text(dns.rdatatype.RdataType(t)) for t in missing)
        raise UpdateFailed(REFUSED, f"{wire.to_text(key)} {names} comes from the base zone and cannot be "
                                    "removed for one line (an overlay only adds or replaces RRsets)")
    return {t: desired[t] for t in desired if base.get(t) != want[t]}


# -- writing a file back ----------------------------------------------------------------------

def reads_back(got: Mapping[bytes, Node], change: FileChange) -> bool:
    """Whether a file read back holds what it held, with the changed names replaced."""
    keys = {key for key in change.current if key not in change.changes}
    keys |= {key for key, node in change.changes.items() if node}
    if got.keys() != keys:
        return False
    for key, node in got.items():
        new = change.changes.get(key)
        if new is not None:
            if normal_node(node) != _normal_content(new):
                return False
        elif node != change.current[key] and normal_node(node) != normal_node(change.current[key]):
            return False
    return True


def _record_text(owner: bytes, rtype: int, ttl: int, data: bytes) -> str:
    rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType(rtype), data, 0, len(data))
    return f"{wire.to_text(owner)} {ttl} IN {dns.rdatatype.to_text(dns.rdatatype.RdataType(rtype))} {rdata.to_text()}"


def statements(lines: list[str]) -> dict[int, int]:
    """First line → last line (0-based) of each statement of a zone file: a record or directive
    runs on while a parenthesis is open (quoted strings and ``;`` comments skipped)."""
    out: dict[int, int] = {}
    depth, start = 0, None
    for index, line in enumerate(lines):
        if depth == 0 and "(" not in line and '"' not in line:       # the usual one-line record, fast
            if line.split(";", 1)[0].strip():
                out[index] = index
            continue
        content = False
        quoted = escaped = False
        for char in line:
            if quoted:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    quoted = False
                continue
            if char == ";":
                break
            if char == '"':
                quoted = content = True
            elif char == "(":
                depth += 1
                content = True
            elif char == ")":
                depth = max(depth - 1, 0)
            elif not char.isspace():
                content = True
        if start is None and content:
            start = index
        if start is not None and depth == 0:
            out[start] = index
            start = None
    return out


def _tokens(lines: list[str], first: int, last: int) -> list[tuple[int, int, int, str]]:
    """(line, start, end, text) of the words of a statement (no comments or parentheses)."""
    out = []
    for index in range(first, last + 1):
        line = lines[index]
        pos = 0
        while pos < len(line):
            char = line[pos]
            if char == ";":
                break
            if char.isspace() or char in "()":
                pos += 1
                continue
            end = pos
            if char == '"':
                end += 1
                while end < len(line) and line[end] != '"':
                    end += 2 if line[end] == "\\" else 1
                end += 1
            else:
                while end < len(line) and not line[end].isspace() and line[end] not in "();":
                    end += 1
            out.append((index, pos, end, line[pos:end]))
            pos = end
    return out


class CannotEdit(Exception):
    """The file uses what the in-place editor does not follow (``$INCLUDE``, ``$GENERATE``, a
    statement it cannot read): it is written in canonical form instead."""


CLASS_WORDS = frozenset({"IN", "CH", "CS", "HS", "ANY", "NONE"})


def locate(lines: list[str], spans: Mapping[int, int], origin_text: str, wanted: set[bytes]) -> tuple[
        dict[tuple[bytes, int], list[tuple[int, bytes]]], dict[int, str]]:
    """Where the records of the ``wanted`` names are: (name, type) → [(first line, RDATA)], and
    the owner of every record statement (first line → absolute owner text, lowercase).

    A light reading of the file (owner words, ``$ORIGIN``; the type and RDATA only at the wanted
    names), not the whole zone reader, so a 100,000-record zone is located in well under a
    second.  Anything it misreads is caught when the edited file is read back (``prepare``)."""
    try:
        current = dns.name.from_text(origin_text)
        suffix = current.to_text().lower()
        targets = {dns.name.from_wire(key, 0)[0].to_text().lower() for key in wanted}
        last_owner: str | None = None
        where: dict[tuple[bytes, int], list[tuple[int, bytes]]] = {}
        owners: dict[int, str] = {}
        for start in sorted(spans):
            line = lines[start]
            blank = line[:1] in (" ", "\t")
            if not blank:
                word = line.split(None, 1)[0]
                if word.startswith("$"):
                    tokens = _tokens(lines, start, spans[start])
                    if word.upper() == "$ORIGIN":
                        current = dns.name.from_text(tokens[1][3], origin=current)
                        suffix = current.to_text().lower()
                    elif word.upper() != "$TTL":
                        raise CannotEdit(f"{word} is not followed by in-place edits")
                    continue
                if "\\" in word or ";" in word or "(" in word or '"' in word:
                    owner = dns.name.from_text(word, origin=current).to_text().lower()
                elif word == "@":
                    owner = suffix
                elif word.endswith("."):
                    owner = word.lower()
                else:
                    owner = word.lower() + "." + suffix if suffix != "." else word.lower() + "."
                last_owner = owner
            elif last_owner is None:
                raise CannotEdit("a record without owner comes first")
            owners[start] = last_owner
            if last_owner not in targets:
                continue
            tokens = _tokens(lines, start, spans[start])
            rest = tokens if blank else tokens[1:]
            index = 0
            while index < len(rest) and (rest[index][3].upper() in CLASS_WORDS or _is_ttl(rest[index][3])):
                index += 1
            rtype = dns.rdatatype.from_text(rest[index][3])
            text = " ".join(token[3] for token in rest[index + 1:])
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, text, origin=current, relativize=False)
            key = _key(dns.name.from_text(last_owner))
            where.setdefault((key, int(rtype)), []).append((start, _rdata_wire(rdata)))
        return where, owners
    except (dns.exception.DNSException, IndexError, ValueError) as e:
        raise CannotEdit(str(e)) from None


def _is_ttl(word: str) -> bool:
    try:
        dns.ttl.from_text(word)
    except dns.ttl.BadTTL:
        return False
    return True


def edit_in_place(text: str, change: FileChange) -> str:
    """The file with the change made line by line: removed records' statements dropped (a
    following record that took its owner from one gets the owner written out), new records
    appended, an SOA whose serial alone changed rewritten at that one word."""
    lines = text.splitlines(keepends=True)
    spans = statements(lines)
    where, owner_at = locate(lines, spans, change.origin_text, set(change.changes))
    removed: set[int] = set()
    appended: list[str] = []
    serial_edits: dict[int, int] = {}
    for key, new_node in change.changes.items():
        old_node = change.current.get(key, {})
        for rtype in sorted(set(old_node) | set(new_node)):
            old = old_node.get(rtype)
            new = new_node.get(rtype)
            old_normal = normal_node({rtype: old}).get(rtype) if old is not None else None
            new_normal = (new[1], frozenset(new[2])) if new is not None else None
            if old_normal == new_normal:
                continue
            positions = where.get((key, rtype), [])
            if (rtype == wire.SOA and old is not None and new is not None and len(positions) == 1
                    and old.ttl == new[1] and _without_serial(b"".join(old.rdatas[0])) == _without_serial(new[2][0])):
                serial_edits[positions[0][0]] = struct.unpack_from("!I", new[2][0], len(new[2][0]) - 20)[0]
                continue
            keep = set(new[2]) if new is not None and old is not None and old.ttl == new[1] else set()
            for line, data in positions:
                if data not in keep:
                    removed.add(line)
            have = {data for _line, data in positions if data in keep}
            if new is not None:
                owner, ttl, rdatas = new
                appended += [_record_text(owner, rtype, ttl, data) + "\n" for data in rdatas if data not in have]
    out: list[str] = []
    previous_removed_owner: str | None = None
    spelled = {key: next(iter(node.values())).name for key, node in change.current.items() if node}
    index = 0
    while index < len(lines):
        last = spans.get(index)
        if last is None:
            out.append(lines[index])
            index += 1
            continue
        block = lines[index:last + 1]
        first = block[0]
        directive = first.lstrip().startswith("$")
        if index in removed:
            previous_removed_owner = owner_at.get(index)
            index = last + 1
            continue
        if not directive and first[:1] in (" ", "\t") and previous_removed_owner is not None:
            key = _key(dns.name.from_text(previous_removed_owner))
            block = [wire.to_text(spelled.get(key, key)) + first] + block[1:]
        if not directive:
            previous_removed_owner = None
        if index in serial_edits:
            block = _set_serial(block, serial_edits[index])
        out += block
        index = last + 1
    if appended:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out += appended
    return "".join(out)


def _without_serial(soa: bytes) -> bytes:
    return soa[:-20] + soa[-16:]


def _set_serial(block: list[str], serial: int) -> list[str]:
    """The SOA statement with its serial (the third word after ``SOA``) replaced."""
    tokens = _tokens(block, 0, len(block) - 1)
    for position, (_line, _start, _end, word) in enumerate(tokens):
        if word.upper() == "SOA" and position + 3 < len(tokens):
            line, start, end, _word = tokens[position + 3]
            block = list(block)
            block[line] = block[line][:start] + str(serial) + block[line][end:]
            return block
    return block


def canonical_text(change: FileChange, origin: bytes) -> str:
    """The file's intended data in canonical form: the apex SOA first, then names in RFC 4034
    §6.1 order, every record on one line with an absolute owner and an explicit TTL."""
    nodes: dict[bytes, NodeContent] = {key: _content_of(node) for key, node in change.current.items()}
    for key, node in change.changes.items():
        if node:
            nodes[key] = node
        else:
            nodes.pop(key, None)
    lines = [f"; {change.origin_text} written by smartdns after a dynamic update (RFC 2136)\n"]
    apex = nodes.get(origin, {})
    if wire.SOA in apex:
        owner, ttl, rdatas = apex[wire.SOA]
        lines += [_record_text(owner, wire.SOA, ttl, rdatas[0]) + "\n"]
    for key in sorted(nodes, key=_canonical_name):
        for rtype in sorted(nodes[key]):
            if key == origin and rtype == wire.SOA:
                continue
            owner, ttl, rdatas = nodes[key][rtype]
            lines += [_record_text(owner, rtype, ttl, data) + "\n" for data in rdatas]
    return "".join(lines)


def _canonical_name(key: bytes) -> tuple[bytes, ...]:
    labels = []
    pos = 0
    while key[pos]:
        labels.append(key[pos + 1:pos + 1 + key[pos]])
        pos += 1 + key[pos]
    return tuple(reversed(labels))


@dataclass
class Prepared:
    """A new file written and read back, waiting to be renamed over ``path``."""

    path: str
    temp: str
    old: bytes | None          # the file's content before (None: it did not exist)
    new: bytes


def prepare(change: FileChange, origin: bytes) -> Prepared:
    """Write the changed file to a temporary file beside it and read it back; the in-place
    edit when it reads back as intended, else the canonical form; UpdateFailed(SERVFAIL) when
    neither does (nothing is renamed)."""
    old: bytes | None = None
    if change.exists:
        with open(change.path, "rb") as handle:
            old = handle.read()
    directory = os.path.dirname(change.path)
    os.makedirs(directory, exist_ok=True)
    attempts: list[tuple[str, Callable[[], str]]] = []
    if old is not None:
        current = old.decode("utf-8")
        attempts.append(("in place", lambda: edit_in_place(current, change)))
    attempts.append(("canonical", lambda: canonical_text(change, origin)))
    why = ""                       # why the in-place edit was not used
    for how, make in attempts:
        try:
            text: str = make()
        except CannotEdit as e:
            why = str(e)
            continue
        temp = _write_temp(change.path, text.encode("utf-8"), old is not None)
        zone, problems = read_zone_file(temp, change.origin_text, overlay=change.overlay, default_ttl=change.default_ttl)
        if zone is not None and reads_back(zone.nodes, change):
            if how != "in place" and old is not None:
                log.warn("update: {path} written in canonical form, comments and layout not kept ({why})",
                         path=change.path, why=why)
            return Prepared(change.path, temp, old, text.encode("utf-8"))
        os.unlink(temp)
        why = "; ".join(str(p) for p in problems) or "it would not read back as the intended data"
        log.warn("update: {how} rewrite of {path} does not read back as intended: {why}", how=how,
                 path=change.path, why=why)
    raise UpdateFailed(SERVFAIL, f"could not write {change.path}")


def _write_temp(path: str, data: bytes, keep_mode: bool) -> str:
    """A temporary file beside ``path`` (a dot name: the zone directory scan skips it), fsynced,
    with ``path``'s permissions."""
    directory, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".update", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        mode = stat.S_IMODE(os.stat(path).st_mode) if keep_mode else 0o644
        os.chmod(temp, mode)
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def commit(prepared: list[Prepared]) -> None:
    """Rename each temporary file over its file, then fsync the directories; first, Stale (and
    nothing renamed) if a file changed since it was read (a hand edit in the meantime)."""
    for item in prepared:
        try:
            with open(item.path, "rb") as handle:
                now: bytes | None = handle.read()
        except FileNotFoundError:
            now = None
        if now != item.old:
            discard(prepared)
            raise Stale(item.path)
    for item in prepared:
        os.replace(item.temp, item.path)
    for directory in {os.path.dirname(item.path) for item in prepared}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def discard(prepared: list[Prepared]) -> None:
    for item in prepared:
        if os.path.exists(item.temp):
            os.unlink(item.temp)


def roll_back(prepared: list[Prepared]) -> None:
    """Put back each file's old content, where it still holds what the update wrote."""
    for item in prepared:
        try:
            with open(item.path, "rb") as handle:
                if handle.read() != item.new:
                    continue
            if item.old is None:
                os.unlink(item.path)
                continue
            temp = _write_temp(item.path, item.old, True)
            os.replace(temp, item.path)
        except OSError as e:
            log.error("update: could not put back {path}: {error}", path=item.path, error=e)


# -- one update, start to end ---------------------------------------------------------------

@dataclass
class Outcome:
    """What processing an update gave: the rcode, and the files to commit (none: no change)."""

    rcode: int
    prepared: list[Prepared] = field(default_factory=list)
    summary: str = ""


def origin_text_of(rule: UpdateRule) -> str:
    return rule.zone + "."


def process(message: dns.message.Message, snap: Snapshot, rule: UpdateRule) -> Outcome:
    """Check and apply one update against the snapshot, and prepare the files it changes.

    Runs in a thread: it reads only the immutable snapshot and the files."""
    origin = wire.from_text(rule.zone).lower()
    try:
        base = snap.zones[origin]
        view = snap.view(origin, rule.line)
        prescan(message, origin)
        check_prerequisites(message, view)
        work = Working(view)
        serial_set = apply_updates(message, work)
        if not work.changed():
            return Outcome(NOERROR, summary="no change")
        check_targets(work)
        if not serial_set:
            bump_serial(work)
        remove_orphaned_ds(work)
        base_path = _single_source(base.sources, "zone")
        _check_current(base_path, origin_text_of(rule), base.nodes, overlay=False, default_ttl=None)
        if rule.line is None:
            changes = plan_base(work, base, base_path, origin_text_of(rule))
        else:
            overlay_path, overlay = _overlay(snap, rule, base, base_path, view)
            changes = plan_line(work, base, base_path, overlay, overlay_path, origin_text_of(rule))
        prepared: list[Prepared] = []
        try:
            for change in changes:
                prepared.append(prepare(change, origin))
        except BaseException:
            discard(prepared)
            raise
        serial = _soa_serial(work.node(origin)[wire.SOA].rdatas[0])
        names = ", ".join(wire.to_text(key) for key in sorted(work.changed(), key=_canonical_name))
        return Outcome(NOERROR, prepared, f"serial {serial}, changed {names}")
    except UpdateFailed as e:
        return Outcome(e.rcode, summary=e.why)


def _single_source(sources: tuple[str, ...], what: str) -> str:
    """The one file a zone (or overlay) was read from; REFUSED when it also has ``$INCLUDE``d
    files or records.json records (an update could not say which file to edit)."""
    if len(sources) != 1:
        raise UpdateFailed(REFUSED, f"the {what} is read from several files ({', '.join(sources)}): "
                                    "updates edit zones read from one file only")
    return sources[0]


def _check_current(path: str, origin_text: str, served: Mapping[bytes, Node], *, overlay: bool,
                   default_ttl: int | None) -> Zone | None:
    """The file as it is now, which must hold what is served (else Stale: reload first)."""
    if not os.path.exists(path):
        if served:
            raise Stale(path)
        return None
    zone, _problems = read_zone_file(path, origin_text, overlay=overlay, default_ttl=default_ttl)
    if zone is None or len(zone.sources) != 1:
        raise Stale(path)
    if not same_nodes(zone.nodes, served):
        raise Stale(path)
    return zone


def same_nodes(a: Mapping[bytes, Node], b: Mapping[bytes, Node]) -> bool:
    """Whether two zones' nodes hold the same data (equal objects first: the same reader made
    both; record order and owner case aside only where they differ)."""
    if a.keys() != b.keys():
        return False
    return all(node == b[key] or normal_node(node) == normal_node(b[key]) for key, node in a.items())


def _overlay(snap: Snapshot, rule: UpdateRule, base: Zone, base_path: str,
             view: ZoneView) -> tuple[str, Zone | None]:
    """The line's overlay file for the zone (its path when it has none yet) and what it holds."""
    assert rule.line is not None
    if view.overlay_sources:
        path = _single_source(view.overlay_sources, "overlay")
    else:
        path = os.path.join(snap.config.zones.directory, rule.line, rule.zone + ".zone")
    served = _merged_data(view)
    if view.base is not base or (served and not view.overlay_sources):
        raise UpdateFailed(REFUSED, f"line {rule.line}'s {rule.zone} is not a zone file overlay")
    default_ttl = overlay_default_ttl(base_path, base)
    if not os.path.exists(path):
        if served:
            raise Stale(path)
        return path, None
    zone, _problems = read_zone_file(path, origin_text_of(rule), overlay=True, default_ttl=default_ttl)
    if zone is None or len(zone.sources) != 1 or _merged_data(make_view(base, zone)) != served:
        raise Stale(path)
    return path, zone


def _merged_data(view: ZoneView) -> dict[bytes, Normal]:
    """What a line's overlay makes the line see, the apex SOA left out (the served serial may be
    stamped by the journal's serial-bump rule, smartdns.journal)."""
    out = {}
    for key, node in view.merged.items():
        data = normal_node(node)
        if key == view.origin:
            data.pop(wire.SOA, None)
            below = normal_node(view.base.nodes.get(key, {}))
            data = {t: v for t, v in data.items() if below.get(t) != v}   # a stamped apex copies the base's
        if data:
            out[key] = data
    return out


# -- the handler the transfer hook hands signed UPDATEs to -------------------------------------

Run = Callable[..., "defer.Deferred[Any]"]


class UpdateHandler:
    """Signed UPDATE messages: checked as BIND does, applied one at a time (a DeferredLock),
    written back, and answered once the reload that serves the new data has swapped it in."""

    def __init__(self, reactor: Any, current: Callable[[], Snapshot], reload: Callable[[str], "defer.Deferred[Any]"],
                 run: Run | None = None) -> None:
        self.reactor = reactor
        self.current = current
        self.reload = reload
        self._run = run or (lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        self.lock = defer.DeferredLock()
        self.applied = 0               # updates that changed data (for tests and logs)


    def answer(self, data: bytes, client: str, tcp: bool, snap: Snapshot) -> HookResult:
        """PASS for an unsigned UPDATE (the normal path answers it as BIND: REFUSED/NOTAUTH),
        the TSIG error answer for a bad signature, else (a Deferred of) the signed answer."""
        if data[10:12] == b"\x00\x00":
            return PASS
        now, payload = int(self.reactor.seconds()), snap.config.server.max_udp_payload
        try:
            message = dns.message.from_wire(data, keyring=config_keyring(snap.config.tsig), one_rr_per_rrset=True)
        except dns.message.UnknownTSIGKey:
            return tsig_error_answer(data, BADKEY, now, payload)
        except dns.tsig.BadSignature:
            return tsig_error_answer(data, BADSIG, now, payload)
        except dns.tsig.BadTime:
            return tsig_error_answer(data, BADTIME, now, payload)
        except (dns.exception.DNSException, ValueError, struct.error):
            return PASS                  # unreadable (e.g. a zone section that is not SOA): the normal path's FORMERR
        if not message.had_tsig:
            return PASS
        zone = message.sections[ZONE_SECTION][0]
        origin = _key(zone.name)
        key_name = str(message.keyname.to_text(omit_final_dot=True)).lower() if message.keyname else ""
        if zone.rdclass != dns.rdataclass.IN or origin not in snap.zones:
            return self._reply(message, NOTAUTH)
        rule = _rule_for(snap, origin, key_name)
        if rule is None:
            log.info("update of {zone} refused to {client}: key {key} is in no [[update]] for it",
                     zone=zone.name, client=client, key=key_name)
            return self._reply(message, REFUSED)
        return self.lock.run(self._update, message, origin, key_name, client)

    @defer.inlineCallbacks
    def _update(self, message: dns.message.Message, origin: bytes, key_name: str,
                client: str) -> Any:
        """Under the lock: process against the current snapshot (reloading first once if a file
        was edited by hand since), commit, reload, answer."""
        for attempt in (1, 2):
            snap = self.current()
            rule = _rule_for(snap, origin, key_name)
            if origin not in snap.zones or rule is None:
                return self._reply(message, NOTAUTH if origin not in snap.zones else REFUSED)
            outcome: Outcome | None = None
            try:
                outcome = yield self._run(process, message, snap, rule)
                assert outcome is not None
                if outcome.rcode == NOERROR and outcome.prepared:
                    yield self._run(commit, outcome.prepared)
            except Stale as e:
                if attempt == 2:
                    log.error("update of {zone}: {path} changed on disk and does not reload", zone=rule.zone,
                              path=str(e))
                    return self._reply(message, SERVFAIL)
                yield self.reload("zone file changed before an update")
                continue
            except Exception:
                if outcome is not None:
                    discard(outcome.prepared)
                log.failure("update of {zone} failed", zone=rule.zone)
                return self._reply(message, SERVFAIL)
            break
        assert rule is not None and outcome is not None
        where = f"{rule.zone}" + (f" (line {rule.line})" if rule.line else "")
        if outcome.rcode != NOERROR or not outcome.prepared:
            log.info("update of {where} from {client} with key {key}: {rcode} ({summary})", where=where,
                     client=client, key=key_name, rcode=dns.rcode.to_text(dns.rcode.Rcode(outcome.rcode)),
                     summary=outcome.summary)
            return self._reply(message, outcome.rcode)
        result = yield self.reload(f"update of {where}")
        if not getattr(result, "ok", False):
            roll_back(outcome.prepared)
            log.error("update of {where}: the new data does not load; files put back", where=where)
            return self._reply(message, SERVFAIL)
        self.applied += 1
        log.info("update of {where} from {client} with key {key}: {summary}", where=where, client=client,
                 key=key_name, summary=outcome.summary)
        return self._reply(message, NOERROR)


    def _reply(self, message: dns.message.Message, rcode: int) -> bytes:
        """The answer: the zone section echoed, no AA, an OPT advertising ``[server]
        max_udp_payload`` when the update had one, signed with the update's key (as BIND)."""
        response = dns.message.make_response(message, our_payload=self.current().config.server.max_udp_payload)
        response.set_rcode(dns.rcode.Rcode(rcode))
        response.flags &= ~dns.flags.AA
        return response.to_wire()


def _rule_for(snap: Snapshot, origin: bytes, key_name: str) -> UpdateRule | None:
    return next((rule for rule in snap.config.updates
                 if rule.key == key_name and wire.from_text(rule.zone).lower() == origin), None)
