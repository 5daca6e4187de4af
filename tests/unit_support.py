"""Shared helpers for the unit tests: fixture trees, snapshots built from strings, decoding.

Nothing here opens a socket or touches the global reactor; fixtures are written into a
``mktemp()`` directory of the calling test, and rendered messages are decoded with dnspython,
the independent oracle for our codec.
"""
from __future__ import annotations

import os
import struct
import textwrap
from typing import Iterable

import dns.message
import dns.rdatatype
import dns.rrset
from twisted.trial import unittest

from smartdns import wire
from tests.support import write_tree
from smartdns.config import Config, parse_config
from smartdns.snapshot import Snapshot, build_snapshot

# Upstreams are given explicitly so no test reads the host's /etc/resolv.conf.
NO_RESOLV_CONF = "/nonexistent/resolv.conf"


def temp_tree(testcase: unittest.SynchronousTestCase, files: dict[str, str]) -> str:
    """A fresh directory for ``testcase`` holding ``files``; its absolute path."""
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    write_tree(base, files)
    return base


def make_config(testcase: unittest.SynchronousTestCase, config: str = "",
                zones: dict[str, str] | None = None, files: dict[str, str] | None = None) -> Config:
    """A parsed config from TOML text, with ``zones`` written under ``zones/`` beside it."""
    tree = dict(files or {})
    for rel, text in (zones or {}).items():
        tree[os.path.join("zones", rel)] = text
    text = textwrap.dedent(config)
    if "[forward]" not in text:
        text += '\n[forward]\nupstreams = ["127.0.0.1:5399"]\n'
    tree["smartdns.toml"] = text
    base = temp_tree(testcase, tree)
    os.makedirs(os.path.join(base, "zones"), exist_ok=True)
    path = os.path.join(base, "smartdns.toml")
    return parse_config(text, path, resolv_conf=NO_RESOLV_CONF)


def make_snapshot(testcase: unittest.SynchronousTestCase, config: str = "",
                  zones: dict[str, str] | None = None, files: dict[str, str] | None = None) -> Snapshot:
    """A snapshot built by ``build_snapshot`` from a config and zone files given as strings."""
    return build_snapshot(make_config(testcase, config, zones, files))


def name(text: str) -> bytes:
    """Wire form of a presentation name."""
    return wire.from_text(text)


def ipv4(text: str) -> bytes:
    """RDATA of an A record."""
    return bytes(int(x) for x in text.split("."))


def soa_rdata(origin: str, serial: int = 1, refresh: int = 3600, retry: int = 600,
              expire: int = 86400, minimum: int = 60) -> bytes:
    """Uncompressed SOA RDATA for ``origin`` with the given timers."""
    return (wire.from_text("ns." + origin) + wire.from_text("hostmaster." + origin)
            + struct.pack("!5I", serial, refresh, retry, expire, minimum))


def decode(data: bytes) -> dns.message.Message:
    """Decode with dnspython, refusing trailing junk (so a wrong count shows up as an error)."""
    return dns.message.from_wire(data, ignore_trailing=False, raise_on_truncation=False)


def texts(rrsets: Iterable[dns.rrset.RRset]) -> list[str]:
    """RRsets as sorted ``name ttl TYPE rdata`` strings, names lowercased (case is not data)."""
    out = []
    for rrset in rrsets:
        for rd in rrset:
            out.append(f"{rrset.name.to_text().lower()} {rrset.ttl} "
                       f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text().lower()}")
    return sorted(out)


def rrset_texts(rrsets: Iterable[wire.RRset]) -> list[str]:
    """Our RRsets as the same sorted strings as ``texts`` (RDATA decoded by dnspython)."""
    import dns.rdata
    import dns.rdataclass

    out = []
    for rrset in rrsets:
        for parts in rrset.rdatas:
            rd = dns.rdata.from_wire(dns.rdataclass.IN, rrset.rtype, b"".join(parts), 0, len(b"".join(parts)))
            out.append(f"{wire.to_text(rrset.name).lower()} {rrset.ttl} "
                       f"{dns.rdatatype.to_text(rrset.rtype)} {rd.to_text().lower()}")
    return sorted(out)


def record_count(message: dns.message.Message, section: str) -> int:
    """How many records a decoded section holds (not RRsets)."""
    return sum(len(rrset) for rrset in getattr(message, section))
