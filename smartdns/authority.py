"""Answers from local zones: RFC 1034 §4.3.2 over the client's line view.

Every step of the algorithm — delegation check, exact match, CNAME and DNAME restarts,
wildcard synthesis, additional-section addresses — reads the zone through the client's
``ZoneView``, so a line's overlay data can only ever reach that line's clients.

Choices, made to match BIND 9 as an authoritative server:
- A CNAME (or DNAME-synthesised CNAME) chain is followed through every zone we hold; where it
  leaves our zones the answer ends with the last CNAME, NOERROR, and the client's resolver
  continues it (we never mix forwarded data into an authoritative answer).
- Positive answers carry the zone's NS RRset in the authority section only when the query did
  not ask for recursion (BIND's default ``minimal-responses no-auth-recursive``).
- ANY is answered with one RRset (RFC 8482 §4.1).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from smartdns import wire
from smartdns.snapshot import Snapshot
from smartdns.zones import Node, ZoneView

MAX_CHAIN_LENGTH = 16            # CNAME/DNAME restarts before we stop (BIND: max-restarts 11..16)
WILDCARD_LABEL = b"\x01*"
YXDOMAIN = 6                     # RFC 6672 §2.2: DNAME substitution overflowed 255 bytes
ADDITIONAL_FOR = (wire.NS, wire.MX, wire.SRV)
ADDRESS_TYPES = (wire.A, wire.AAAA)


@dataclass(slots=True)
class Answer:
    """A local answer before rendering."""

    rcode: int = wire.NOERROR
    aa: bool = True
    answer: list[wire.RRset] = field(default_factory=list)
    authority: list[wire.RRset] = field(default_factory=list)
    additional: list[wire.RRset] = field(default_factory=list)

    @property
    def sections(self) -> tuple[list[wire.RRset], list[wire.RRset], list[wire.RRset]]:
        """Answer, authority and additional, in rendering order."""
        return self.answer, self.authority, self.additional


def negative_soa(view: ZoneView) -> wire.RRset:
    """The SOA for a negative answer, TTL min(SOA TTL, MINIMUM) (RFC 2308 §3)."""
    soa = view.soa
    minimum = struct.unpack("!I", soa.rdatas[0][-1])[0]
    return soa.with_ttl(min(soa.ttl, minimum))


def _cut_or_dname(view: ZoneView, sname: bytes, qtype: int) -> tuple[bytes, Node, int] | None:
    """The highest zone cut or DNAME on the way from the origin down to ``sname``.

    A cut at ``sname`` itself counts unless the query is for DS, which the parent side answers
    (RFC 4035 §3.1.4.1); a DNAME counts only strictly above ``sname`` (RFC 6672 §2.3).
    """
    origin = view.origin
    path = []
    name = sname
    while len(name) > len(origin):
        path.append(name)
        name = name[1 + name[0]:]
    for name in reversed(path):
        node = view.node(name)
        if node is None:
            continue
        if wire.NS in node and not (name == sname and qtype == wire.DS):
            return name, node, wire.NS
        if wire.DNAME in node and name != sname:
            return name, node, wire.DNAME
    if sname != origin:
        apex = view.node(origin)
        if apex is not None and wire.DNAME in apex:
            return origin, apex, wire.DNAME
    return None


def _closest_encloser(view: ZoneView, sname: bytes) -> bytes:
    """The longest existing ancestor of a name that does not exist (RFC 4592 §3.3.1)."""
    name = sname
    while name != view.origin:
        name = name[1 + name[0]:]
        if view.exists(name):
            return name
    return name


def _dname_target(sname: bytes, owner: bytes, target: bytes) -> bytes | None:
    """RFC 6672 §2.2 substitution: replace the ``owner`` suffix of ``sname`` with ``target``."""
    prefix = sname[: len(sname) - len(owner)]
    result = prefix + target
    return result if len(result) <= wire.MAX_NAME_LENGTH else None


def _target_name(rtype: int, parts: tuple[bytes, ...]) -> bytes:
    """The host name an NS, MX or SRV record points at, in key form."""
    if rtype == wire.NS:
        return parts[0].lower()
    if rtype == wire.MX:
        return parts[1].lower()
    return b"".join(parts)[6:].lower()   # SRV: priority, weight, port, then the target


class Authority:
    """Answers queries for names in local zones, for one snapshot at a time."""

    def lookup(self, snap: Snapshot, line: str | None, qkey: bytes, qtype: int, rd: bool) -> Answer | None:
        """The local answer for (qname, qtype) as ``line`` sees it, or None if no local zone holds it."""
        origin = snap.find_zone(qkey)
        if origin is None:
            return None
        result = Answer()
        sname = qkey
        seen: set[bytes] = set()
        view = snap.view(origin, line)
        while True:
            seen.add(sname)
            next_name = self._step(view, sname, qtype, result)
            if next_name is None:
                break
            if next_name in seen or len(seen) >= MAX_CHAIN_LENGTH:
                break  # a loop or an over-long chain: answer with what we have, as BIND does
            next_origin = snap.find_zone(next_name)
            if next_origin is None:
                break  # the chain leaves our zones; the client's resolver continues it
            view = snap.view(next_origin, line)
            sname = next_name
        if result.aa and result.rcode == wire.NOERROR and not rd and not result.authority \
                and self._positive(result, qtype):
            apex = view.node(view.origin)
            if apex is not None and wire.NS in apex:
                result.authority.append(apex[wire.NS])
        self._additional(snap, line, result)
        return result

    @staticmethod
    def _positive(result: Answer, qtype: int) -> bool:
        """Whether the answer ends in data of the asked type (not a dangling CNAME)."""
        return bool(result.answer) and (result.answer[-1].rtype == qtype or qtype == wire.ANY
                                        or result.answer[-1].rtype not in (wire.CNAME, wire.DNAME))

    def _step(self, view: ZoneView, sname: bytes, qtype: int, result: Answer) -> bytes | None:
        """Answer ``sname`` in one zone; return the name to restart with (CNAME/DNAME) or None."""
        found = _cut_or_dname(view, sname, qtype)
        if found is not None:
            owner, node, kind = found
            if kind == wire.NS:
                # Referral (RFC 1034 §4.3.2 step 3b): not authoritative, NS in authority, glue.
                if not result.answer:
                    result.aa = False
                result.authority.append(node[wire.NS])
                return None
            dname = node[wire.DNAME]
            result.answer.append(dname)
            target = _dname_target(sname, owner, b"".join(dname.rdatas[0]).lower())
            if target is None:
                result.rcode = YXDOMAIN
                return None
            result.answer.append(wire.make_rrset(sname, wire.CNAME, dname.ttl, [target]))
            return target
        node = view.node(sname)
        owner = sname
        if node is None and not view.exists(sname):
            encloser = _closest_encloser(view, sname)
            node = view.node(WILDCARD_LABEL + encloser)
            if node is None:
                result.rcode = wire.NXDOMAIN
                result.authority.append(negative_soa(view))
                return None
        if node is None:
            result.authority.append(negative_soa(view))   # empty non-terminal: NODATA
            return None
        if qtype == wire.ANY:
            rtype = wire.CNAME if wire.CNAME in node else min(node)
            result.answer.append(node[rtype].with_name(owner))
            return None
        rrset = node.get(qtype)
        if rrset is not None:
            result.answer.append(rrset.with_name(owner) if rrset.name != owner else rrset)
            return None
        cname = node.get(wire.CNAME)
        if cname is not None:
            result.answer.append(cname.with_name(owner) if cname.name != owner else cname)
            return b"".join(cname.rdatas[0]).lower()
        result.authority.append(negative_soa(view))
        return None

    def _additional(self, snap: Snapshot, line: str | None, result: Answer) -> None:
        """A/AAAA we hold for NS, MX and SRV targets (RFC 1034 §4.3.2 step 6; glue for referrals)."""
        present = {(r.name, r.rtype) for r in result.answer}
        added: set[tuple[bytes, int]] = set()
        for rrset in (*result.answer, *result.authority):
            if rrset.rtype not in ADDITIONAL_FOR:
                continue
            for parts in rrset.rdatas:
                target = _target_name(rrset.rtype, parts)
                origin = snap.find_zone(target)
                if origin is None:
                    continue
                node = snap.view(origin, line).node(target)
                if node is None:
                    continue
                for rtype in ADDRESS_TYPES:
                    addr = node.get(rtype)
                    key = (target, rtype)
                    if addr is not None and key not in added and key not in present:
                        added.add(key)
                        result.additional.append(addr)
