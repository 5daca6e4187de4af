"""Everything a query needs, loaded and validated into one immutable snapshot.

A snapshot is built completely (config, lines, zones, overlays, JSON sources, policies) or not
at all: any problem raises ``ZoneError`` listing every ``file:line: message`` found, and the
caller keeps serving its previous snapshot.  Queries read one snapshot reference, so a reload is
one assignment and a query in flight finishes on the data it started with.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

from smartdns import articlejson, wire
from smartdns.config import Config, LineConfig
from smartdns.errors import Problem, ZoneError
from smartdns.lines import AddressSet, LineTable
from smartdns.policy import REFUSE, PolicyTable, compile_rules
from smartdns.secondary import saved_path
from smartdns.zones import (Zone, ZoneView, make_view, overlay_default_ttl, read_zone_file, scan_zone_directory,
                            zone_from_records)

ZoneReader = Callable[..., "tuple[Zone | None, list[Problem]]"]
HostsTable = Mapping[bytes, Mapping[int, tuple[str, ...]]]   # name key → {A or AAAA: addresses}

# records.json names outside every zone file get a zone of their own with this SOA.
SYNTHETIC_SOA_TTL_SECONDS = 60
SYNTHETIC_SOA_TIMERS = (1, 3600, 600, 86400, 60)   # serial, refresh, retry, expire, minimum


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Snapshot:
    """One generation of served data; never mutated, only replaced (and then freed by
    reference counting: nothing it holds refers back to it; tests/test_reload.py checks)."""

    generation: int
    config: Config
    lines: LineTable
    line_names: tuple[str, ...]
    recursion: AddressSet
    zones: Mapping[bytes, Zone]                       # origin key → base zone
    views: Mapping[tuple[bytes, str], ZoneView]       # (origin, line) → that line's view, where it differs
    base_views: Mapping[bytes, ZoneView]              # origin → the view of clients in no line
    policies: PolicyTable
    hosts: HostsTable = field(default_factory=lambda: MappingProxyType({}))   # [hosts] files, read with the rest
    # (origin, line or None) whose clients get SERVFAIL: a [[secondary]] zone not transferred
    # yet or past its SOA expire (RFC 1035 §3.3.13), as BIND answers for such a zone.
    servfail: frozenset[tuple[bytes, str | None]] = frozenset()
    # [ecs] trusted: clients whose EDNS Client Subnet option chooses the line (RFC 7871).
    ecs_trusted: AddressSet = field(default_factory=lambda: AddressSet(()))

    def find_zone(self, qkey: bytes) -> bytes | None:
        """The origin of the closest enclosing local zone, or None (one probe per label)."""
        zones = self.zones
        name = qkey
        while True:
            if name in zones:
                return name
            if name == wire.ROOT:
                return None
            name = name[1 + name[0]:]

    def view(self, origin: bytes, line: str | None) -> ZoneView:
        """The zone ``origin`` as clients of ``line`` see it."""
        if line is not None:
            found = self.views.get((origin, line))
            if found is not None:
                return found
        return self.base_views[origin]


def _parse_lines(config: Config, problems: list[Problem]) -> list[LineConfig]:
    """[lines] from the config, then lines from lines_json (same name: CIDRs appended)."""
    lines = list(config.lines)
    path = config.zones.lines_json
    if not path:
        return lines
    entries, found = articlejson.read_lines_json(path)
    problems.extend(found)
    index = {line.name: i for i, line in enumerate(lines)}
    for name, cidrs in entries:
        nets = []
        for cidr in cidrs:
            try:
                nets.append(ipaddress.ip_network(cidr, strict=True))
            except ValueError as e:
                problems.append(Problem(path, 0, f"line {name!r}: {e}"))
        if name in index:
            old = lines[index[name]]
            lines[index[name]] = LineConfig(name, old.networks + tuple(nets))
        else:
            index[name] = len(lines)
            lines.append(LineConfig(name, tuple(nets)))
    return lines


def _synthetic_soa(origin: bytes) -> tuple[bytes, int, int, bytes]:
    """An SOA for a zone made only of records.json names, so negative answers carry one."""
    import struct
    rdata = b"\x0ahostmaster" + origin
    rdata = origin + rdata + struct.pack("!5I", *SYNTHETIC_SOA_TIMERS)
    return origin, wire.SOA, SYNTHETIC_SOA_TTL_SECONDS, rdata


def _check_cname(rows: list[articlejson.JsonRecord], zone: Zone | None, problems: list[Problem]) -> None:
    """RFC 1034 §3.6.2 for JSON records: a CNAME owns its name alone (file data included)."""
    types: dict[bytes, set[int]] = {}
    for rec in rows:
        types.setdefault(rec.name, set()).add(rec.rtype)
    for rec in rows:
        present = set(types[rec.name])
        if zone is not None and rec.name in zone.nodes:
            present |= set(zone.nodes[rec.name])
        if wire.CNAME in present and len(present) > 1:
            where = rec.where
            problems.append(Problem(where.path, where.line,
                                    f"{where.message}: CNAME and other data at {wire.to_text(rec.name)}"))


def build_snapshot(config: Config, generation: int = 1, read_zone: ZoneReader = read_zone_file,
                   expired: frozenset[tuple[str, str | None]] = frozenset()) -> Snapshot:
    """Load and validate everything; raise ZoneError with every problem, or return the snapshot.

    ``read_zone`` lets a reload reuse zones whose files did not change; ``expired`` names the
    ``[[secondary]]`` (zone, line) pairs past their SOA expire (``smartdns.refresh``)."""
    problems: list[Problem] = []
    line_configs = _parse_lines(config, problems)
    line_names = tuple(line.name for line in line_configs)
    table = LineTable([(line.name, line.networks) for line in line_configs])

    bases, overlays, found = scan_zone_directory(config.zones.directory, line_names,
                                                 missing_ok=config.zones.directory_optional)
    problems.extend(found)
    zones: dict[bytes, Zone] = {}
    for origin_text, path in bases.items():
        zone, found = read_zone(path, origin_text)
        problems.extend(found)
        if zone is not None:
            zones[zone.origin] = zone
    line_secondaries, unavailable = _read_secondaries(config, bases, overlays, zones, read_zone, expired, problems)
    overlay_zones: dict[str, dict[bytes, Zone]] = {}
    for line, files in overlays.items():
        for origin_text, path in files.items():
            base = zones.get(wire.from_text(origin_text).lower())
            zone, found = read_zone(path, origin_text, overlay=True,
                                    default_ttl=overlay_default_ttl(bases.get(origin_text), base))
            problems.extend(found)
            if zone is None:
                continue
            if zone.origin not in zones and origin_text not in bases:
                problems.append(Problem(path, 0, f"overlay for zone {origin_text} which has no base zone file"))
                continue
            overlay_zones.setdefault(line, {})[zone.origin] = zone

    # records.json: records join the zone file that encloses them, or a zone of their own.
    json_records: list[articlejson.JsonRecord] = []
    denies: list[articlejson.JsonDeny] = []
    for path in config.zones.records_json:
        records, deny, found = articlejson.read_records_json(path)
        problems.extend(found)
        json_records.extend(records)
        denies.extend(deny)
    for rec in json_records:
        for label in rec.labels:
            if label not in line_names:
                problems.append(Problem(rec.where.path, rec.where.line,
                                        f"{rec.where.message}: label {label!r} is not a configured line"))
    if json_records:
        _merge_json(json_records, line_names, zones, overlay_zones, problems)

    rules: list[tuple[Iterable[str], str, Iterable[str], Iterable[int]]] = [
        (p.names, p.action, p.lines, p.types) for p in config.policies]
    for policy in config.policies:
        for line in policy.lines:
            if line not in line_names:
                problems.append(Problem(config.path or "<default>", 0,
                                        f"[[policy]] names line {line!r}, which is not configured"))
    rules += [([wire.to_text(d.name)], REFUSE, d.labels, (d.rtype,)) for d in denies]
    hosts = read_hosts_files(config.hosts.files, problems)
    if problems:
        raise ZoneError(problems)

    base_views = {origin: make_view(zone, None) for origin, zone in zones.items()}
    views = {(origin, line): make_view(zones[origin], overlay)
             for line, by_origin in overlay_zones.items() for origin, overlay in by_origin.items()}
    views.update({key: make_view(zone, None) for key, zone in line_secondaries.items()})
    servfail = frozenset((origin, line) for origin, line_or_base in unavailable for line in (
        (None, *(name for name in line_names if (origin, name) not in line_secondaries))
        if line_or_base is None else (line_or_base,)))
    return Snapshot(
        generation=generation,
        config=config,
        lines=table,
        line_names=line_names,
        recursion=AddressSet(config.access.recursion),
        zones=zones,
        views=views,
        base_views=base_views,
        policies=compile_rules(rules),
        hosts=hosts,
        servfail=servfail,
        ecs_trusted=AddressSet(config.ecs.trusted),
    )


def _read_secondaries(config: Config, bases: Mapping[str, str], overlays: Mapping[str, Mapping[str, str]],
                      zones: dict[bytes, Zone], read_zone: ZoneReader, expired: frozenset[tuple[str, str | None]],
                      problems: list[Problem]) -> tuple[dict[tuple[bytes, str], Zone], set[tuple[bytes, str | None]]]:
    """``[[secondary]]`` zones saved under ``[zones] secondary_directory``: a base secondary
    joins ``zones``, a line's is returned as that line's whole zone.  Also returned: the
    (origin, line or None) pairs not transferred yet (no saved file: a stand-in zone holding
    only an SOA takes the place) or past expire, whose clients get SERVFAIL.

    A secondary and a zone file for the same zone (the base file, or the line's overlay for a
    line's secondary) are rejected, and so is a line's secondary with no base zone at all."""
    line_zones: dict[tuple[bytes, str], Zone] = {}
    unavailable: set[tuple[bytes, str | None]] = set()
    directory = config.zones.secondary_directory
    if not config.secondaries or directory is None:
        return line_zones, unavailable
    where = config.path or "<default>"
    if config.server.workers > 1:
        problems.append(Problem(where, 0, "[[secondary]] is not supported with [server] workers above 1 "
                                          "(only one process may follow a primary)"))
    based = {s.zone for s in config.secondaries if s.line is None}
    for secondary in sorted(config.secondaries, key=lambda s: s.line is not None):   # base zones first
        origin_text = secondary.zone + "."
        origin = wire.from_text(origin_text).lower()
        if secondary.line is None and origin_text in bases:
            problems.append(Problem(bases[origin_text], 0, f"zone {secondary.zone} is also a [[secondary]]; "
                                                          "serve it from one of them"))
            continue
        if secondary.line is not None:
            overlay = overlays.get(secondary.line, {}).get(origin_text)
            if overlay is not None:
                problems.append(Problem(overlay, 0, f"zone {secondary.zone} for line {secondary.line} is also a "
                                                    "[[secondary]]; serve it from one of them"))
                continue
            if origin_text not in bases and secondary.zone not in based:
                problems.append(Problem(where, 0, f"[[secondary]] zone {secondary.zone} for line {secondary.line} "
                                                  "needs a base zone (a zone file or a [[secondary]] without line)"))
                continue
        path = saved_path(directory, secondary)
        zone: Zone | None = None
        if os.path.exists(path):
            zone, found = read_zone(path, origin_text)
            problems.extend(found)
        if zone is None:
            zone = zone_from_records(origin, [_synthetic_soa(origin)], ())
            unavailable.add((origin, secondary.line))
        elif (secondary.zone, secondary.line) in expired:
            unavailable.add((origin, secondary.line))
        if secondary.line is None:
            zones[origin] = zone
        else:
            line_zones[(origin, secondary.line)] = zone
    return line_zones, unavailable


def read_hosts_files(paths: Iterable[str], problems: list[Problem]) -> HostsTable:
    """hosts(5) files as a table, read the way ``twisted.names.hosts`` reads them (comments
    after ``#``, address then names, names matched case-insensitively); a line whose first
    field is not an IP address is reported, an unreadable file too."""
    table: dict[bytes, dict[int, list[str]]] = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                lines = handle.read().splitlines()
        except OSError as e:
            problems.append(Problem(path, 0, f"cannot read hosts file: {e.strerror or e}"))
            continue
        for number, raw in enumerate(lines, start=1):
            fields = raw.split(b"#", 1)[0].split()
            if not fields:
                continue
            try:
                address = ipaddress.ip_address(fields[0].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                problems.append(Problem(path, number, f"{fields[0].decode('ascii', 'replace')!r} is not an IP address"))
                continue
            rtype = wire.A if address.version == 4 else wire.AAAA
            for name in fields[1:]:
                try:
                    key = wire.from_text(name.decode("ascii")).lower()
                except (UnicodeDecodeError, ValueError) as e:
                    problems.append(Problem(path, number, f"bad host name {name.decode('ascii', 'replace')!r}: {e}"))
                    continue
                found = table.setdefault(key, {}).setdefault(rtype, [])
                if str(address) not in found:
                    found.append(str(address))
    return MappingProxyType({name: MappingProxyType({t: tuple(a) for t, a in types.items()})
                             for name, types in table.items()})


def _merge_json(records: list[articlejson.JsonRecord], line_names: tuple[str, ...], zones: dict[bytes, Zone],
                overlay_zones: dict[str, dict[bytes, Zone]], problems: list[Problem]) -> None:
    """Fold records.json into base zones and line overlays (see articlejson's module docstring)."""
    file_origins = set(zones)
    by_origin: dict[bytes, list[articlejson.JsonRecord]] = {}
    synthetic: set[bytes] = set()
    for rec in sorted(records, key=lambda r: wire.label_count(r.name)):
        name = rec.name
        origin = None
        while True:
            if name in file_origins or name in synthetic:
                origin = name
                break
            if name == wire.ROOT:
                break
            name = wire.parent(name)
        if origin is None:
            origin = rec.name
            synthetic.add(origin)
        by_origin.setdefault(origin, []).append(rec)
    for origin, rows in by_origin.items():
        base_zone = zones.get(origin)
        _check_cname(rows, base_zone, problems)
        existing = [] if base_zone is None else [
            (rrset.name, rrset.rtype, rrset.ttl, b"".join(rdata))
            for node in base_zone.nodes.values() for rrset in node.values() for rdata in rrset.rdatas]
        if base_zone is None:
            existing.append(_synthetic_soa(origin))
        # Zone-file records count as unlabelled: a line-L client gets them plus L's JSON records.
        unlabelled = [articlejson.JsonRecord(n.lower(), t, ttl, rd, (), Problem("", 0, "")) for n, t, ttl, rd in existing]
        _, per_line = articlejson.group_for_lines(unlabelled + rows, list(line_names))
        sources = (base_zone.sources if base_zone else ()) + tuple(sorted({r.where.path for r in rows}))
        zones[origin] = zone_from_records(origin, existing + [(r.name, r.rtype, r.ttl, r.rdata) for r in rows],
                                          sources)
        for line, line_rows in per_line.items():
            prior = overlay_zones.get(line, {}).get(origin)
            prior_rows = [] if prior is None else [
                (rrset.name, rrset.rtype, rrset.ttl, b"".join(rdata))
                for node in prior.nodes.values() for rrset in node.values() for rdata in rrset.rdatas]
            overlay_zones.setdefault(line, {})[origin] = zone_from_records(
                origin, prior_rows + [(r.name, r.rtype, r.ttl, r.rdata) for r in line_rows], sources)


def watched_paths(config: Config, snapshot: Snapshot | None = None) -> list[str]:
    """The files and directories that feed the server, whose change should trigger a reload:
    the zones directory, the config, the JSON sources, hosts files, and (from ``snapshot``)
    every file a zone was read from, ``$INCLUDE``d files among them."""
    paths = [config.zones.directory, *config.zones.records_json, *config.hosts.files]
    if config.zones.lines_json:
        paths.append(config.zones.lines_json)
    if config.path:
        paths.append(config.path)
    if snapshot is not None:
        for zone in snapshot.zones.values():
            paths += zone.sources
        for view in snapshot.views.values():
            paths += view.overlay_sources
    # Saved [[secondary]] zones are written by this server, which reloads after each save itself.
    saved = config.zones.secondary_directory
    return [p for p in dict.fromkeys(os.path.abspath(p) for p in paths)
            if saved is None or not p.startswith(os.path.join(saved, ""))]
