"""Tests for smartdns.lines: longest-prefix line lookup and address sets."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

from twisted.trial.unittest import TestCase

from smartdns.lines import AddressSet, LineTable, Network, normalize_address

net = ipaddress.ip_network

#: Fixed so the randomised comparison is the same on every run.
RANDOM_SEED = 20240531
RANDOM_NETWORKS = 5000
RANDOM_ADDRESSES = 2000
RANDOM_LINES = 7


class ReferenceTable:
    """The spec spelled out: scan every network, keep the longest prefix, first listed on a tie."""

    def __init__(self, lines: Sequence[tuple[str, Sequence[Network]]]) -> None:
        self.entries = [
            (network.version, int(network.netmask), int(network.network_address), network.prefixlen, name)
            for name, networks in lines
            for network in networks
        ]

    def lookup(self, address: str) -> str | None:
        ip = ipaddress.ip_address(address.partition("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        best: str | None = None
        best_length = -1
        for version, mask, network, length, name in self.entries:
            if version == ip.version and value & mask == network and length > best_length:
                best, best_length = name, length
        return best


class LineTableTests(TestCase):
    """LineTable picks the line of the longest matching prefix."""

    def test_longest_prefix_beats_listing_order(self) -> None:
        """A more specific network wins even when its line is listed after a broader one."""
        table = LineTable([("wide", [net("10.0.0.0/8")]), ("narrow", [net("10.1.2.0/24")])])
        self.assertEqual(table.lookup("10.1.2.3"), "narrow")
        self.assertEqual(table.lookup("10.1.3.3"), "wide")

    def test_tie_goes_to_first_listed(self) -> None:
        """The same network in two lines belongs to the line listed first."""
        table = LineTable([("a", [net("192.168.0.0/16")]), ("b", [net("192.168.0.0/16")])])
        self.assertEqual(table.lookup("192.168.7.7"), "a")
        table = LineTable([("b", [net("192.168.0.0/16")]), ("a", [net("192.168.0.0/16")])])
        self.assertEqual(table.lookup("192.168.7.7"), "b")

    def test_nested_prefixes_and_gaps(self) -> None:
        """Nested /8 /16 /24 /32: each address gets its innermost network, gaps fall back out."""
        table = LineTable(
            [
                ("host", [net("10.1.1.1/32")]),
                ("net24", [net("10.1.1.0/24")]),
                ("net16", [net("10.1.0.0/16")]),
                ("net8", [net("10.0.0.0/8")]),
            ]
        )
        cases = {
            "9.255.255.255": None,
            "10.0.0.0": "net8",
            "10.0.255.255": "net8",
            "10.1.0.0": "net16",
            "10.1.0.255": "net16",
            "10.1.1.0": "net24",
            "10.1.1.1": "host",
            "10.1.1.2": "net24",
            "10.1.1.255": "net24",
            "10.1.2.0": "net16",
            "10.1.255.255": "net16",
            "10.2.0.0": "net8",
            "10.255.255.255": "net8",
            "11.0.0.0": None,
        }
        for address, line in cases.items():
            self.assertEqual(table.lookup(address), line, address)

    def test_network_ending_at_top_of_address_space(self) -> None:
        """Networks touching 255.255.255.255 and 0.0.0.0 are matched at both ends."""
        table = LineTable([("top", [net("255.255.255.0/24")]), ("bottom", [net("0.0.0.0/24")])])
        self.assertEqual(table.lookup("255.255.255.255"), "top")
        self.assertEqual(table.lookup("0.0.0.0"), "bottom")
        self.assertIsNone(table.lookup("128.0.0.1"))

    def test_default_route_is_a_catch_all(self) -> None:
        """0.0.0.0/0 catches every IPv4 address that nothing longer matches."""
        table = LineTable([("rest", [net("0.0.0.0/0")]), ("lan", [net("192.168.0.0/16")])])
        self.assertEqual(table.lookup("8.8.8.8"), "rest")
        self.assertEqual(table.lookup("192.168.1.1"), "lan")
        self.assertIsNone(table.lookup("2001:db8::1"))

    def test_ipv6(self) -> None:
        """IPv6 networks nest and match like IPv4 ones, in their own table."""
        table = LineTable([("site", [net("2001:db8::/32")]), ("office", [net("2001:db8:1::/48"), net("10.0.0.0/8")])])
        self.assertEqual(table.lookup("2001:db8:1::5"), "office")
        self.assertEqual(table.lookup("2001:db8:2::5"), "site")
        self.assertEqual(table.lookup("10.9.9.9"), "office")
        self.assertIsNone(table.lookup("2001:db9::1"))

    def test_ipv4_mapped_address_is_ipv4(self) -> None:
        """A dual-stack peer ::ffff:a.b.c.d is looked up as the IPv4 address a.b.c.d."""
        table = LineTable([("v4", [net("192.0.2.0/24")])])
        self.assertEqual(table.lookup("::ffff:192.0.2.9"), "v4")
        self.assertEqual(table.lookup("::FFFF:c000:0209"), "v4")

    def test_ipv4_mapped_network_matches_ipv4_clients(self) -> None:
        """A network written in IPv4-mapped form covers the plain IPv4 clients."""
        table = LineTable([("mapped", [net("::ffff:192.0.2.0/120")])])
        self.assertEqual(table.lookup("192.0.2.1"), "mapped")
        self.assertEqual(table.lookup("::ffff:192.0.2.1"), "mapped")

    def test_scope_id_is_ignored(self) -> None:
        """A link-local peer with a scope id matches by its address alone."""
        table = LineTable([("link", [net("fe80::/10")])])
        self.assertEqual(table.lookup("fe80::1%eth0"), "link")

    def test_no_match_and_garbage(self) -> None:
        """No matching network, an empty table or an unparsable address give None."""
        table = LineTable([("a", [net("10.0.0.0/8")])])
        self.assertIsNone(table.lookup("192.0.2.1"))
        self.assertIsNone(table.lookup("not an address"))
        self.assertIsNone(table.lookup(""))
        self.assertIsNone(LineTable([]).lookup("10.0.0.1"))

    def test_matches(self) -> None:
        """matches() says whether the address is in any line."""
        table = LineTable([("a", [net("10.0.0.0/8")])])
        self.assertTrue(table.matches("10.1.1.1"))
        self.assertFalse(table.matches("11.1.1.1"))

    def test_names_keep_configuration_order(self) -> None:
        """names lists every line in the order given, including lines with no networks."""
        table = LineTable([("z", [net("10.0.0.0/8")]), ("a", []), ("m", [net("::1/128")])])
        self.assertEqual(table.names, ("z", "a", "m"))

    def test_duplicate_names_rejected(self) -> None:
        """Two lines with the same name are a programming error."""
        self.assertRaises(ValueError, LineTable, [("a", []), ("a", [])])

    def test_normalize_address(self) -> None:
        """Addresses normalise to (version, int), mapped IPv4 as IPv4, junk as None."""
        self.assertEqual(normalize_address("1.2.3.4"), (4, 0x01020304))
        self.assertEqual(normalize_address("::ffff:1.2.3.4"), (4, 0x01020304))
        self.assertEqual(normalize_address("::1"), (6, 1))
        self.assertEqual(normalize_address("fe80::1%lo"), (6, (0xFE80 << 112) | 1))
        self.assertIsNone(normalize_address("1.2.3"))

    def test_matches_brute_force_reference(self) -> None:
        """On thousands of random, heavily nested CIDRs the table agrees with a linear scan."""
        rng = random.Random(RANDOM_SEED)
        lines: list[tuple[str, list[Network]]] = [(f"line{i}", []) for i in range(RANDOM_LINES)]
        all_networks: list[Network] = []
        for _ in range(RANDOM_NETWORKS):
            if rng.random() < 0.8:
                # Few /8s so prefixes pile up inside each other, and duplicates happen.
                value = (rng.choice((10, 172, 192)) << 24) | rng.getrandbits(24)
                length = rng.randint(8, 32)
                network: Network = ipaddress.IPv4Network((value >> (32 - length) << (32 - length), length))
            else:
                value = (0x20010DB8 << 96) | rng.getrandbits(96)
                length = rng.randint(32, 128)
                network = ipaddress.IPv6Network((value >> (128 - length) << (128 - length), length))
            rng.choice(lines)[1].append(network)
            all_networks.append(network)
        table = LineTable(lines)
        reference = ReferenceTable(lines)
        matched = 0
        for _ in range(RANDOM_ADDRESSES):
            network = rng.choice(all_networks)
            roll = rng.random()
            if roll < 0.6:  # inside a known network
                value = int(network.network_address) + rng.randrange(network.num_addresses)
            elif roll < 0.8:  # just outside one
                value = int(network.broadcast_address) + 1
            else:  # anywhere in the family
                value = rng.getrandbits(network.max_prefixlen)
            value &= (1 << network.max_prefixlen) - 1
            address = str(ipaddress.ip_address(value) if network.version == 6 else ipaddress.IPv4Address(value))
            expected = reference.lookup(address)
            self.assertEqual(table.lookup(address), expected, address)
            matched += expected is not None
        # The comparison means little unless most addresses land in some line.
        self.assertGreater(matched, RANDOM_ADDRESSES // 2)


class AddressSetTests(TestCase):
    """AddressSet answers membership with the same address handling as LineTable."""

    def test_contains(self) -> None:
        """Addresses inside any network are members; others and junk are not."""
        networks = [net("127.0.0.0/8"), net("10.0.0.0/8"), net("::1/128"), net("fc00::/7")]
        members = AddressSet(networks)
        self.assertTrue(members.contains("127.0.0.1"))
        self.assertTrue(members.contains("10.200.0.1"))
        self.assertTrue(members.contains("::1"))
        self.assertTrue(members.contains("fd12:3456::1"))
        self.assertTrue(members.contains("::ffff:10.0.0.1"))
        self.assertFalse(members.contains("192.0.2.1"))
        self.assertFalse(members.contains("2001:db8::1"))
        self.assertFalse(members.contains("garbage"))

    def test_empty_set(self) -> None:
        """An empty set contains nothing."""
        self.assertFalse(AddressSet([]).contains("127.0.0.1"))
