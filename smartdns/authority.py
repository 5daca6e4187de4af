"""Answers from local zones: RFC 1034 §4.3.2 over the client's line view, shaped like BIND 9's.

Every step of the algorithm — delegation check, exact match, CNAME and DNAME restarts,
wildcard synthesis, additional-section addresses — reads the zone through the client's
``ZoneView``, so a line's overlay data can only ever reach that line's clients.

Where the RFCs leave room, smartdns does what BIND 9 (as an authoritative server, default
``minimal-responses no-auth-recursive``) does, so a resolver cannot tell the two apart
(``tests/test_oracle.py`` checks this against a live ``named``):
- CNAME and DNAME chains are followed inside the zone where they start; a chain that leaves it
  ends here with the last CNAME (NOERROR, aa=1), and ``smartdns.chain`` continues it through
  the other stages for clients allowed recursion.  A loop, or a 12th CNAME, is SERVFAIL with
  the CNAMEs found so far.
- Positive answers carry the zone's NS RRset in the authority section only when the query did
  not ask for recursion (RD=0), with those servers' addresses.
- Additional addresses are added for NS, MX, SRV, SVCB/HTTPS and NAPTR targets in the same
  zone (wildcards included); referrals carry only glue (addresses at or below a zone cut).
- Names keep the zone file's case; only the question echoes the client's spelling.
- ANY gets no additional section (a referral keeps its glue).  Over UDP it is answered with one RRset (RFC 8482 §4.1; BIND's
  ``minimal-any``, which also leaves out the NS RRset for RD=0); over TCP with every RRset at the
  name, as BIND does.  After a DNAME, ANY ends with the synthesised CNAME, as a CNAME node does.
"""
from __future__ import annotations

import struct
from smartdns import wire
from smartdns.response import Result
from smartdns.snapshot import Snapshot
from smartdns.zones import Node, ZoneView

MAX_CNAMES = 11                  # BIND follows 11 CNAMEs; the 12th ends the answer with SERVFAIL
WILDCARD_LABEL = b"\x01*"
YXDOMAIN = 6                     # RFC 6672 §2.2: DNAME substitution overflowed 255 bytes
NAPTR = 35
SVCB = 64
HTTPS = 65
ADDITIONAL_FOR = frozenset({wire.NS, wire.MX, wire.SRV, SVCB, HTTPS, NAPTR})
ADDRESS_TYPES = (wire.A, wire.AAAA)
EDE_OTHER = 0


Answer = Result          # a local answer is a chain result with aa=1 (see smartdns.response)


def negative_soa(view: ZoneView) -> wire.RRset:
    """The SOA for a negative answer, TTL min(SOA TTL, MINIMUM) (RFC 2308 §3)."""
    soa = view.soa
    minimum = struct.unpack("!I", soa.rdatas[0][-1])[0]
    return soa.with_ttl(min(soa.ttl, minimum))


def _cut_or_dname(view: ZoneView, skey: bytes, qtype: int) -> tuple[bytes, Node, int] | None:
    """The highest zone cut or DNAME on the way from the origin down to ``skey``.

    A cut at the name itself counts unless the query is for DS, which the parent side answers
    (RFC 4035 §3.1.4.1); a DNAME counts only strictly above the name (RFC 6672 §2.3).
    """
    origin = view.origin
    path = []
    name = skey
    while len(name) > len(origin):
        path.append(name)
        name = name[1 + name[0]:]
    if skey != origin:
        apex = view.node(origin)
        if apex is not None and wire.DNAME in apex:
            return origin, apex, wire.DNAME
    for name in reversed(path):
        node = view.node(name)
        if node is None:
            continue
        if wire.NS in node and not (name == skey and qtype == wire.DS):
            return name, node, wire.NS
        if wire.DNAME in node and name != skey:
            return name, node, wire.DNAME
    return None


def _closest_encloser(view: ZoneView, skey: bytes) -> bytes:
    """The longest existing ancestor of a name that does not exist (RFC 4592 §3.3.1)."""
    name = skey
    while name != view.origin:
        name = name[1 + name[0]:]
        if view.exists(name):
            return name
    return name


def _wildcard(view: ZoneView, skey: bytes) -> Node | None:
    """The wildcard node that would synthesise ``skey``, if the name does not exist."""
    return view.node(WILDCARD_LABEL + _closest_encloser(view, skey))


def _synthesised_owner(skey: bytes, wildcard_owner: bytes) -> bytes:
    """The owner of a wildcard answer: the query name's labels, the encloser in zone case."""
    encloser = wildcard_owner[2:]
    return skey[: len(skey) - len(encloser)] + encloser


def _name_at(raw: bytes, offset: int) -> bytes:
    """An uncompressed name inside RDATA."""
    return wire.read_name(raw, offset)[0]


def _targets(rrset: wire.RRset) -> list[bytes]:
    """The host names an RRset points at, for additional-section processing (zone spelling)."""
    out = []
    for parts in rrset.rdatas:
        raw = b"".join(parts)
        if rrset.rtype == wire.NS:
            out.append(raw)
        elif rrset.rtype == wire.MX:
            out.append(raw[2:])
        elif rrset.rtype == wire.SRV:
            out.append(raw[6:])
        elif rrset.rtype in (SVCB, HTTPS):
            target = _name_at(raw, 2)
            out.append(rrset.name if target == wire.ROOT else target)   # "." means the owner
        elif rrset.rtype == NAPTR:
            pos = 4
            for _ in range(3):                                           # flags, services, regexp
                pos += 1 + raw[pos]
            out.append(_name_at(raw, pos))
    return out


def _below_cut(view: ZoneView, tkey: bytes) -> bool:
    """Whether a name is at or below a zone cut of this zone (so its addresses are glue)."""
    name = tkey
    while len(name) > len(view.origin):
        node = view.node(name)
        if node is not None and wire.NS in node:
            return True
        name = name[1 + name[0]:]
    return False


#: Types whose answer is the RRset alone: no names in RDATA (nothing to compress or to add
#: addresses for) and no special node rules.
PLAIN_TYPES = frozenset({wire.A, wire.AAAA, wire.TXT})


def plain_answer(snap: Snapshot, line: str | None, qkey: bytes, qtype: int) -> wire.RRset | Answer | None:
    """The whole local answer to a recursive (RD=1) query for a ``PLAIN_TYPES`` type, in a zone
    with no cut or DNAME at or above the name: the RRset of that type (RFC 1034 §4.3.2 step 3a);
    NODATA with the zone's SOA (RFC 2308 §2.2) when the name has other data and no CNAME, or is
    an empty non-terminal; NXDOMAIN with the SOA when the name does not exist and no wildcard
    covers it (step 3c, RFC 4592).  BIND adds nothing else for RD=1 (``minimal-responses
    no-auth-recursive``, and no additional processing for these types); all are authoritative.

    The positive answer is returned as the bare RRset (a ``Result`` costs more to make than
    the lane's whole answer), negative ones as a ``Result``.  ``Authority.lookup`` asks this
    first, and the query handler's first-sight lane asks it for names not answered before;
    None means "run the whole algorithm" (anything else:
    another type, a CNAME at the name, a wildcard to synthesise from, a cut or DNAME on the
    way, a zone answering SERVFAIL)."""
    if qtype not in PLAIN_TYPES:
        return None
    origin = snap.find_zone(qkey)
    if origin is None or (snap.servfail and (origin, line) in snap.servfail):
        return None
    view = snap.view(origin, line)
    cuts = view.cuts
    if cuts:
        name = qkey
        while True:
            if name in cuts:
                return None
            if len(name) <= len(origin):
                break
            name = name[1 + name[0]:]
    node = view.node(qkey)
    if node is None:
        if view.exists(qkey):                      # an empty non-terminal: NODATA
            return Result(aa=True, authority=[negative_soa(view)])
        if _wildcard(view, qkey) is not None:
            return None                            # synthesis (RFC 4592): the walk's
        return Result(rcode=wire.NXDOMAIN, aa=True, authority=[negative_soa(view)])
    rrset = node.get(qtype)
    if rrset is not None:
        return rrset                               # the answer, authoritative (no Result: it is the hot case)
    if wire.CNAME in node:
        return None
    return Result(aa=True, authority=[negative_soa(view)])


class Authority:
    """Answers queries for names in local zones, for one snapshot at a time."""

    def lookup(self, snap: Snapshot, line: str | None, qname: bytes, qtype: int, rd: bool,
               tcp: bool = False) -> Answer | None:
        """The local answer for (qname, qtype) as ``line`` sees it, or None if no local zone holds it.

        ``qname`` is the name as the client spelled it (it becomes the owner of DNAME-synthesised
        CNAMEs, as in BIND); ``tcp`` only changes the answer to ANY (see the module doc)."""
        qkey = qname.lower()
        if rd:
            plain = plain_answer(snap, line, qkey, qtype)
            if type(plain) is wire.RRset:
                return Result(aa=True, answer=[plain])
            if plain is not None:
                return plain   # type: ignore[return-value]  # a Result
        return self.walk(snap, line, qname, qkey, qtype, rd, tcp)

    def walk(self, snap: Snapshot, line: str | None, qname: bytes, qkey: bytes, qtype: int, rd: bool,
             tcp: bool = False) -> Answer | None:
        """RFC 1034 §4.3.2 in full (``lookup`` without its shortcut for plain answers)."""
        origin = snap.find_zone(qkey)
        if origin is None:
            return None
        if snap.servfail and (origin, line) in snap.servfail:
            return Result(rcode=wire.SERVFAIL)    # a [[secondary]] zone not transferred yet or past expire, as BIND
        view = snap.view(origin, line)
        result = Result(aa=True)
        sname = qname
        seen = {qkey}
        while True:
            following = self._step(view, sname, qtype, result, tcp)
            if following is None:
                break
            fkey = following.lower()
            if fkey in seen or sum(r.rtype == wire.CNAME for r in result.answer) > MAX_CNAMES:
                result.rcode = wire.SERVFAIL       # a loop, or a chain too long to follow
                result.ede = (EDE_OTHER, "max. restarts reached")
                break
            if snap.find_zone(fkey) != view.origin:
                break                              # the chain leaves this zone; the resolver continues it
            seen.add(fkey)
            sname = following
        if not rd and result.rcode == wire.NOERROR and result.aa and self._positive(result, qtype, view, tcp):
            apex = view.node(view.origin)
            if apex is not None and wire.NS in apex:
                result.authority.append(apex[wire.NS])
        if qtype != wire.ANY or result.referral:
            self._additional(view, result)
        return result

    @staticmethod
    def _positive(result: Answer, qtype: int, view: ZoneView, tcp: bool) -> bool:
        """Whether the answer ends in data of the asked type that is not the apex NS or a DS
        (for ANY: over TCP only, and only when the answer holds no apex NS)."""
        if not result.answer or result.authority:
            return False
        if qtype == wire.ANY:
            return tcp and not any(r.rtype == wire.NS and r.name.lower() == view.origin for r in result.answer)
        last = result.answer[-1]
        if qtype == wire.DS or (last.rtype == wire.NS and last.name.lower() == view.origin):
            return False
        return last.rtype == qtype or qtype == wire.ANY

    def _step(self, view: ZoneView, sname: bytes, qtype: int, result: Answer, tcp: bool = False) -> bytes | None:
        """Answer one name in one zone; return the name to restart with (CNAME/DNAME) or None."""
        skey = sname.lower()
        found = _cut_or_dname(view, skey, qtype)
        if found is not None:
            owner, node, kind = found
            if kind == wire.NS:
                # Referral (RFC 1034 §4.3.2 step 3b): not authoritative, NS in authority, glue.
                if not result.answer:
                    result.aa = False
                result.referral = True
                result.authority.append(node[wire.NS])
                return None
            dname = node[wire.DNAME]
            result.answer.append(dname)
            target = b"".join(dname.rdatas[0])
            synthesised = sname[: len(sname) - len(owner)] + target
            if len(synthesised) > wire.MAX_NAME_LENGTH:
                result.rcode = YXDOMAIN
                return None
            result.answer.append(wire.make_rrset(sname, wire.CNAME, dname.ttl, [synthesised]))
            return None if qtype in (wire.CNAME, wire.ANY) else synthesised
        found_node = view.node(skey)
        synthesised_owner: bytes | None = None
        if found_node is None and not view.exists(skey):
            found_node = _wildcard(view, skey)
            if found_node is None:
                result.rcode = wire.NXDOMAIN
                result.authority.append(negative_soa(view))
                return None
            synthesised_owner = _synthesised_owner(skey, next(iter(found_node.values())).name)
        if found_node is None:
            result.authority.append(negative_soa(view))   # empty non-terminal: NODATA
            return None
        node = found_node

        def placed(rrset: wire.RRset) -> wire.RRset:
            """The RRset under the query name when a wildcard matched (RFC 4592 §3.3.1)."""
            return rrset if synthesised_owner is None else rrset.with_name(synthesised_owner)

        if qtype == wire.ANY:
            if tcp and wire.CNAME not in node:
                result.answer.extend(placed(rrset) for rrset in node.values())
            else:
                result.answer.append(placed(node[wire.CNAME if wire.CNAME in node else min(node)]))
            return None
        rrset = node.get(qtype)
        if rrset is not None:
            result.answer.append(placed(rrset))
            return None
        cname = node.get(wire.CNAME)
        if cname is not None:
            result.answer.append(placed(cname))
            return b"".join(cname.rdatas[0])
        result.authority.append(negative_soa(view))
        return None

    def _additional(self, view: ZoneView, result: Answer) -> None:
        """Addresses (and NAPTR's SRV RRsets) for names the answer points at, from the same zone.

        Referrals carry only glue: addresses at or below a zone cut (RFC 1034 §4.3.2 step 3b)."""
        present = {(r.name.lower(), r.rtype) for r in result.answer}
        added: set[tuple[bytes, int]] = set()
        origin = view.origin
        pending = [(rrset, result.referral and rrset.rtype == wire.NS and section == 1)
                   for section, rrsets in enumerate((result.answer, result.authority)) for rrset in rrsets
                   if rrset.rtype in ADDITIONAL_FOR]
        srv_sets: list[wire.RRset] = []
        for rrset, glue_only in pending:
            for target in _targets(rrset):
                tkey = target.lower()
                if not wire.is_subdomain(tkey, origin):
                    continue
                if glue_only and not _below_cut(view, tkey):
                    continue
                node = view.node(tkey)
                owner = None
                if node is None and not view.exists(tkey):
                    node = _wildcard(view, tkey)
                    owner = target
                if node is None:
                    continue
                wanted = (wire.SRV,) if rrset.rtype == NAPTR else ADDRESS_TYPES
                for rtype in wanted:
                    found = node.get(rtype)
                    key = (tkey, rtype)
                    if found is not None and key not in added and key not in present:
                        added.add(key)
                        found = found if owner is None else found.with_name(owner)
                        if rtype == wire.SRV:
                            srv_sets.append(found)
                        else:
                            result.additional.append(found)
        for srv in srv_sets:
            result.additional.append(srv)
            for target in _targets(srv):
                tkey = target.lower()
                node = view.node(tkey) if wire.is_subdomain(tkey, origin) else None
                for rtype in ADDRESS_TYPES:
                    found = node.get(rtype) if node else None
                    if found is not None and (tkey, rtype) not in added:
                        added.add((tkey, rtype))
                        result.additional.append(found)
        result.additional.sort(key=lambda r: r.rtype != wire.A)     # A before AAAA, as BIND
