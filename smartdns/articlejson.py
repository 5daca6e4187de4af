"""The Pipy article's data files: ``records.json`` (flat records with labels and deny status) and
``smart-line.json`` (line name → CIDRs), read with every record located by file and line.

Meaning (README.rst, "Zones and lines"): a client in no line gets every record; a client in line L gets unlabelled
records plus those labelled L, and where that leaves nothing, what a no-line client gets.  That
maps exactly onto the zone model: the base holds every record, L's overlay holds the (name, type)
sets that differ for L.  ``"status": "deny"`` becomes a refuse rule for that (name, type).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from smartdns import wire
from smartdns.errors import Problem
from smartdns.zones import name_wire, rdata_wire

_OBJECT_RDATA = {
    "MX": ("preference", "exchange"),
    "SRV": ("priority", "weight", "port", "target"),
    "SOA": ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum"),
    "CAA": ("flags", "tag", "value"),
}


@dataclass(frozen=True, slots=True)
class JsonRecord:
    """One usable record from records.json."""

    name: bytes          # key form
    rtype: int
    ttl: int
    rdata: bytes         # uncompressed wire
    labels: tuple[str, ...]
    where: Problem       # file and line, with the record's description as message


@dataclass(frozen=True, slots=True)
class JsonDeny:
    """A ``"status": "deny"`` entry: REFUSED for this name and type (for these lines, if labelled)."""

    name: bytes
    rtype: int
    labels: tuple[str, ...]


def _elements(text: str, path: str) -> tuple[list[tuple[int, Any]], list[Problem]]:
    """The top-level array's elements with the line each starts on."""
    decoder = json.JSONDecoder()
    pos = 0
    length = len(text)

    def skip(p: int) -> int:
        while p < length and text[p] in " \t\r\n":
            p += 1
        return p

    def line_of(p: int) -> int:
        return text.count("\n", 0, p) + 1

    pos = skip(pos)
    if pos >= length or text[pos] != "[":
        return [], [Problem(path, line_of(pos), "expected a JSON array of records")]
    pos = skip(pos + 1)
    out: list[tuple[int, Any]] = []
    if pos < length and text[pos] == "]":
        rest = skip(pos + 1)
        if rest != length:
            return out, [Problem(path, line_of(rest), "trailing data after the array")]
        return out, []
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            return out, [Problem(path, e.lineno, e.msg)]
        out.append((line_of(pos), value))
        pos = skip(end)
        if pos < length and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < length and text[pos] == "]":
            if skip(pos + 1) != length:
                return out, [Problem(path, line_of(skip(pos + 1)), "trailing data after the array")]
            return out, []
        return out, [Problem(path, line_of(pos), "expected ',' or ']' between records")]


def _rdata_text(rtype: str, rdata: Any) -> str:
    """Presentation-format RDATA from the article's string or object form."""
    if isinstance(rdata, dict):
        fields = _OBJECT_RDATA.get(rtype)
        if fields is None:
            raise ValueError(f"object rdata is not supported for type {rtype}")
        missing = [f for f in fields if f not in rdata]
        if missing:
            raise ValueError(f"rdata is missing {', '.join(missing)}")
        unknown = sorted(set(rdata) - set(fields))
        if unknown:
            raise ValueError(f"unknown rdata field {unknown[0]!r}")
        values = [str(rdata[f]) for f in fields]
        if rtype == "CAA":
            values[2] = json.dumps(values[2])
        return " ".join(values)
    if not isinstance(rdata, str):
        raise ValueError("rdata must be a string or an object")
    if rtype in ("TXT", "SPF"):
        return '"' + rdata.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = rdata                     # a str from here on (rdata itself is declared Any)
    if rtype == "AAAA" and len(text) == 32 and ":" not in text:
        # Pipy's codec writes AAAA as 32 hex digits without colons.
        text = ":".join(text[i:i + 4] for i in range(0, 32, 4))
    if rtype in ("A", "AAAA"):
        ipaddress.ip_address(text)  # stricter than dnspython about leading zeros and the like
    return text


def read_records_json(path: str) -> tuple[list[JsonRecord], list[JsonDeny], list[Problem]]:
    """Parse records.json; every bad record is a problem naming the file, line and record."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as e:
        return [], [], [Problem(path, 0, f"cannot read records file: {e.strerror}")]
    elements, problems = _elements(text, path)
    records: list[JsonRecord] = []
    denies: list[JsonDeny] = []
    for index, (line, item) in enumerate(elements, start=1):
        if not isinstance(item, dict):
            problems.append(Problem(path, line, f"record {index}: must be an object"))
            continue
        label = f"record {index} ({item.get('name', '?')} {item.get('type', '?')})"
        try:
            unknown = sorted(set(item) - {"name", "type", "ttl", "rdata", "labels", "status"})
            if unknown:
                raise ValueError(f"unknown field {unknown[0]!r}")
            name_text, type_text = item.get("name"), item.get("type")
            if not isinstance(name_text, str) or not isinstance(type_text, str):
                raise ValueError("name and type must be strings")
            name = name_wire(dns.name.from_text(name_text)).lower()
            rdtype = dns.rdatatype.from_text(type_text)
            rtype = int(rdtype)
            type_text = dns.rdatatype.to_text(rdtype)
            labels = item.get("labels", [])
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise ValueError("labels must be a list of line names")
            status = item.get("status")
            if status is not None:
                if status != "deny":
                    raise ValueError(f"unknown status {status!r} (only 'deny')")
                denies.append(JsonDeny(name, rtype, tuple(labels)))
                continue
            ttl = item.get("ttl", 300)
            if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 0x7FFFFFFF:
                raise ValueError("ttl must be an integer from 0 to 2147483647")
            if "rdata" not in item:
                raise ValueError("rdata is missing")
            rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, _rdata_text(type_text, item["rdata"]),
                                     origin=dns.name.root, relativize=False)
            records.append(JsonRecord(name, rtype, ttl, rdata_wire(rd), tuple(labels),
                                      Problem(path, line, label)))
        except (ValueError, dns.exception.DNSException) as e:
            problems.append(Problem(path, line, f"{label}: {e}"))
    return records, denies, problems


def read_lines_json(path: str) -> tuple[list[tuple[str, list[str]]], list[Problem]]:
    """Parse smart-line.json: an object of line name → list of CIDR strings (checked later)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as e:
        return [], [Problem(path, 0, f"cannot read lines file: {e.strerror}")]
    except json.JSONDecodeError as e:
        return [], [Problem(path, e.lineno, e.msg)]
    if not isinstance(data, dict):
        return [], [Problem(path, 1, "expected an object of line name → list of CIDRs")]
    out: list[tuple[str, list[str]]] = []
    problems: list[Problem] = []
    for name, cidrs in data.items():
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            problems.append(Problem(path, 0, f"line {name!r}: must be a list of CIDR strings"))
            continue
        out.append((name, cidrs))
    return out, problems


def group_for_lines(records: list[JsonRecord], line_names: list[str]) -> tuple[
        list[JsonRecord], dict[str, list[JsonRecord]]]:
    """Split records into the base (every record) and per-line overlays (only what differs)."""
    by_key: dict[tuple[bytes, int], list[JsonRecord]] = {}
    for rec in records:
        by_key.setdefault((rec.name, rec.rtype), []).append(rec)
    overlays: dict[str, list[JsonRecord]] = {}
    for line in line_names:
        for group in by_key.values():
            chosen = [r for r in group if not r.labels or line in r.labels]
            if chosen and len(chosen) != len(group):
                overlays.setdefault(line, []).extend(chosen)
    return records, overlays
