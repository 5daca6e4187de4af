"""EDNS Client Subnet (RFC 7871): parse a query's option, render a reply's.

The server trusts the option only from ``[ecs] trusted`` addresses (resolvers that speak for
their clients); what it changes is which line answers, decided in ``smartdns.server``.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ECS_OPTION = 8                           # EDNS option code (RFC 7871 §6)
FAMILY_BITS = {1: 32, 2: 128}            # address family (IANA) → address length in bits


class SubnetFormatError(ValueError):
    """An ECS option RFC 7871 §7.1.2 says to answer with FORMERR."""


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """A query's ECS option: family, source prefix length and the address bytes as sent."""

    family: int
    source: int
    address: bytes

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The subnet as a network (the address padded with zero bytes)."""
        size = FAMILY_BITS[self.family] // 8
        padded = self.address + bytes(size - len(self.address))
        if self.family == 1:
            return ipaddress.IPv4Network((padded, self.source))
        return ipaddress.IPv6Network((padded, self.source))

    def option(self, scope: int) -> bytes:
        """The option for a reply: family, source prefix and address echoed, ``scope`` set."""
        body = struct.pack("!HBB", self.family, self.source, scope) + self.address
        return struct.pack("!HH", ECS_OPTION, len(body)) + body


def parse(body: bytes) -> ClientSubnet:
    """The option data of a query's ECS, checked as RFC 7871 §6 and §7.1.2 say: a known family,
    a source prefix no longer than the address, SCOPE PREFIX-LENGTH 0, exactly as many address
    bytes as the source prefix needs, and no bits set beyond it."""
    if len(body) < 4:
        raise SubnetFormatError("ECS option shorter than 4 bytes")
    family, source, scope = struct.unpack_from("!HBB", body)
    bits = FAMILY_BITS.get(family)
    if bits is None:
        raise SubnetFormatError(f"ECS family {family}")
    if source > bits:
        raise SubnetFormatError(f"ECS source prefix {source} longer than {bits} bits")
    if scope:
        raise SubnetFormatError("ECS scope prefix set in a query")
    address = body[4:]
    if len(address) != (source + 7) // 8:
        raise SubnetFormatError(f"ECS address of {len(address)} bytes for a /{source}")
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise SubnetFormatError("ECS address has bits set beyond its source prefix")
    return ClientSubnet(family, source, address)
