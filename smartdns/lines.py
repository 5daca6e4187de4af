"""Client address → line (split horizon), by longest matching prefix.

This runs once per query, so the CIDRs are flattened when the table is built: every CIDR
pair is either nested or disjoint, which lets a single sweep turn them into sorted,
non-overlapping intervals that each carry the line owning them. A lookup is then one
`bisect` over integers, O(log n), whatever the number or nesting of networks.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Generic, TypeVar

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Distinct client address strings remembered by `normalize_address`.
ADDRESS_CACHE_ENTRIES = 65536

_IPV4_MAX = (1 << 32) - 1
_IPV6_MAX = (1 << 128) - 1
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_Owner = TypeVar("_Owner")


@lru_cache(maxsize=ADDRESS_CACHE_ENTRIES)
def normalize_address(address: str) -> tuple[int, int] | None:
    """Return ``(4 or 6, address as int)`` for a peer address string, or None if unparsable.

    Peers on a dual-stack socket arrive as ``::ffff:a.b.c.d``; they are the IPv4 client, so
    they are returned as IPv4. A scope id (``fe80::1%eth0``) says which interface, not who,
    and is dropped. Cached because the same clients ask again and again.
    """
    if not isinstance(address, str):
        return None
    host = address.partition("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return 4, int(mapped)
        return 6, int(ip)
    return 4, int(ip)


def _canonical_network(network: Network) -> Network:
    """An IPv4-mapped IPv6 network covers IPv4 clients, so it is stored as IPv4."""
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= _IPV4_MAPPED.prefixlen
        and network.subnet_of(_IPV4_MAPPED)
    ):
        start = ipaddress.IPv4Address(int(network.network_address) & _IPV4_MAX)
        return ipaddress.IPv4Network((start, network.prefixlen - _IPV4_MAPPED.prefixlen))
    return network


class _Intervals(Generic[_Owner]):
    """Sorted interval starts of one address family, each with its owner (None = unowned)."""

    __slots__ = ("starts", "owners")

    def __init__(self, spans: list[tuple[int, int, int, _Owner]], max_value: int) -> None:
        """Flatten ``(start, end, listing order, owner)`` spans of CIDRs.

        Sorting by (start, larger first, listed first) visits every network after the ones
        containing it, so a stack of open networks always has the innermost on top; when it
        is popped, ownership falls back to its parent. A network identical to the previous
        one is skipped: the one listed first keeps it.
        """
        self.starts: list[int] = []
        self.owners: list[_Owner | None] = []
        stack: list[tuple[int, _Owner]] = []
        previous: tuple[int, int] | None = None
        for start, end, _order, owner in sorted(spans, key=lambda s: (s[0], -s[1], s[2])):
            if previous == (start, end):
                continue
            previous = (start, end)
            while stack and stack[-1][0] < start:
                self._close(stack, max_value)
            self._emit(start, owner)
            stack.append((end, owner))
        while stack:
            self._close(stack, max_value)

    def _close(self, stack: list[tuple[int, _Owner]], max_value: int) -> None:
        """Pop the innermost open network; past its end the enclosing one owns again."""
        end, _owner = stack.pop()
        if end < max_value:
            self._emit(end + 1, stack[-1][1] if stack else None)

    def _emit(self, start: int, owner: _Owner | None) -> None:
        """Start a new interval, replacing one that began at the same address, merging equals."""
        if self.starts and self.starts[-1] == start:
            self.starts.pop()
            self.owners.pop()
        if self.owners and self.owners[-1] == owner:
            return
        if not self.owners and owner is None:
            return
        self.starts.append(start)
        self.owners.append(owner)

    def find(self, value: int) -> _Owner | None:
        """The owner of the interval holding ``value``."""
        index = bisect_right(self.starts, value) - 1
        if index < 0:
            return None
        return self.owners[index]


class _PrefixTable(Generic[_Owner]):
    """Longest-prefix match over IPv4 and IPv6 CIDRs, ties to the entry given first."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, entries: Iterable[tuple[_Owner, Iterable[Network]]]) -> None:
        v4: list[tuple[int, int, int, _Owner]] = []
        v6: list[tuple[int, int, int, _Owner]] = []
        order = 0
        for owner, networks in entries:
            for network in networks:
                network = _canonical_network(network)
                span = (int(network.network_address), int(network.broadcast_address), order, owner)
                (v4 if network.version == 4 else v6).append(span)
                order += 1
        self._v4: _Intervals[_Owner] = _Intervals(v4, _IPV4_MAX)
        self._v6: _Intervals[_Owner] = _Intervals(v6, _IPV6_MAX)

    def find(self, address: str) -> _Owner | None:
        """The owner of the longest prefix containing ``address``, or None."""
        key = normalize_address(address)
        if key is None:
            return None
        version, value = key
        return (self._v4 if version == 4 else self._v6).find(value)


def contains(network: Network, address: str) -> bool:
    """Whether a peer address string is in ``network``, as the tables decide it (IPv4-mapped
    addresses and networks count as IPv4; False if unparsable)."""
    key = normalize_address(address)
    if key is None:
        return False
    canonical = _canonical_network(network)
    version, value = key
    return (canonical.version == version
            and int(canonical.network_address) <= value <= int(canonical.broadcast_address))


class LineTable:
    """Which line a client address belongs to: the line of its longest matching prefix.

    Built from ``(line name, networks)`` in configuration order; that order breaks ties when
    the same network is listed in two lines.
    """

    __slots__ = ("names", "networks", "_table", "_scoped")

    def __init__(self, lines: Iterable[tuple[str, Sequence[Network]]]) -> None:
        """Flatten the lines' networks; O(n log n) in the number of networks."""
        lines = list(lines)
        names = tuple(name for name, _networks in lines)
        if len(set(names)) != len(names):
            raise ValueError("line names must be unique")
        self.names: tuple[str, ...] = names
        self.networks: tuple[tuple[str, tuple[Network, ...]], ...] = tuple(
            (name, tuple(networks)) for name, networks in lines)
        self._table: _PrefixTable[str] = _PrefixTable(lines)
        self._scoped: _PrefixTable[tuple[str, int]] | None = None

    def lookup(self, address: str) -> str | None:
        """The line for a peer address string, or None (no match, or not an IP address)."""
        return self._table.find(address)

    def lookup_scoped(self, address: str) -> tuple[str | None, int]:
        """(line, prefix length of the CIDR that decided it) for an address, (None, 0) when no
        line matches: the scope an ECS reply carries (RFC 7871 §7.2.1).  The table with
        prefix lengths is built on first use: only servers with ``[ecs] trusted`` need it."""
        scoped = self._scoped
        if scoped is None:
            scoped = self._scoped = _PrefixTable(
                ((name, _canonical_network(network).prefixlen), (network,))
                for name, networks in self.networks for network in networks)
        found = scoped.find(address)
        return found if found is not None else (None, 0)

    def matches(self, address: str) -> bool:
        """Whether the address belongs to any line."""
        return self._table.find(address) is not None

    def candidates(self, address: str) -> list[tuple[str, Network]]:
        """Every (line, network) containing the address, the winner first: longest prefix, then
        the line listed first (``smartdns explain`` shows the ones that lost).  O(n): not for
        the query path, which uses `lookup`."""
        found = [(order, name, network)
                 for order, (name, network) in enumerate((n, net) for n, nets in self.networks for net in nets)
                 if contains(network, address)]
        found.sort(key=lambda item: (-_canonical_network(item[2]).prefixlen, item[0]))
        return [(name, network) for _order, name, network in found]

    def __repr__(self) -> str:
        return f"LineTable(names={self.names!r})"


class AddressSet:
    """Membership of client addresses in a set of CIDRs (e.g. who may use recursion)."""

    __slots__ = ("_table",)

    def __init__(self, networks: Iterable[Network]) -> None:
        """Flatten the networks; O(n log n)."""
        self._table: _PrefixTable[bool] = _PrefixTable([(True, networks)])

    def contains(self, address: str) -> bool:
        """Whether a peer address string falls in any of the networks; False if unparsable."""
        return self._table.find(address) is not None
