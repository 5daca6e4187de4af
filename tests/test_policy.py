"""Unit tests for smartdns.policy: which rule (if any) decides a query."""
from __future__ import annotations

from twisted.trial import unittest

from smartdns import policy, wire
from tests.unit_support import make_snapshot, name

Entry = tuple[list[str], str, list[str], list[int]]


def table(*entries: Entry) -> policy.PolicyTable:
    """A table from (names, action, lines, types) entries in priority order."""
    return policy.compile_rules(entries)


def match(tab: policy.PolicyTable, qname: str, qtype: int = wire.A, line: str | None = None) -> str | None:
    """The action for a query."""
    return tab.match(name(qname).lower(), qtype, line)


class MatchTests(unittest.SynchronousTestCase):
    """Names, wildcards, lines, types and priority."""

    def test_empty_table(self) -> None:
        """No rules: nothing matches."""
        self.assertIsNone(match(table(), "www.example.com"))

    def test_exact_name_only(self) -> None:
        """An exact name matches itself only, not its children or parent."""
        tab = table((["blocked.example.com"], policy.REFUSE, [], []))
        self.assertEqual(match(tab, "blocked.example.com"), policy.REFUSE)
        self.assertIsNone(match(tab, "www.blocked.example.com"))
        self.assertIsNone(match(tab, "example.com"))
        self.assertIsNone(match(tab, "notblocked.example.com"))

    def test_case_insensitive(self) -> None:
        """Rule names and query names match whatever their case."""
        tab = table((["Blocked.Example.COM"], policy.NXDOMAIN, [], []))
        self.assertEqual(match(tab, "BLOCKED.example.com"), policy.NXDOMAIN)

    def test_wildcard_strictly_below(self) -> None:
        """``*.ads.example`` covers every name below ads.example but not ads.example itself."""
        tab = table((["*.ads.example"], policy.NXDOMAIN, [], []))
        self.assertEqual(match(tab, "x.ads.example"), policy.NXDOMAIN)
        self.assertEqual(match(tab, "a.b.c.ads.example"), policy.NXDOMAIN)
        self.assertIsNone(match(tab, "ads.example"))
        self.assertIsNone(match(tab, "badads.example"))
        self.assertIsNone(match(tab, "x.ads.example.com"))

    def test_wildcard_and_exact_together(self) -> None:
        """Listing both the name and its wildcard covers the name and everything below."""
        tab = table((["ads.example", "*.ads.example"], policy.DROP, [], []))
        self.assertEqual(match(tab, "ads.example"), policy.DROP)
        self.assertEqual(match(tab, "x.ads.example"), policy.DROP)

    def test_lines_filter(self) -> None:
        """A rule with lines applies only to clients of those lines (never to clients in no line)."""
        tab = table((["www.example.com"], policy.REFUSE, ["office", "lab"], []))
        self.assertEqual(match(tab, "www.example.com", line="office"), policy.REFUSE)
        self.assertEqual(match(tab, "www.example.com", line="lab"), policy.REFUSE)
        self.assertIsNone(match(tab, "www.example.com", line="vpn"))
        self.assertIsNone(match(tab, "www.example.com", line=None))

    def test_types_filter(self) -> None:
        """A rule with types applies only to those query types."""
        tab = table((["*.example.com"], policy.NODATA, [], [wire.AAAA, 65]))
        self.assertEqual(match(tab, "www.example.com", wire.AAAA), policy.NODATA)
        self.assertEqual(match(tab, "www.example.com", 65), policy.NODATA)
        self.assertIsNone(match(tab, "www.example.com", wire.A))

    def test_first_rule_wins_exact_after_wildcard(self) -> None:
        """An earlier wildcard rule beats a later exact rule."""
        tab = table((["*.example.com"], policy.NXDOMAIN, [], []),
                    (["www.example.com"], policy.REFUSE, [], []))
        self.assertEqual(match(tab, "www.example.com"), policy.NXDOMAIN)

    def test_first_rule_wins_exact_before_wildcard(self) -> None:
        """An earlier exact rule beats a later wildcard rule."""
        tab = table((["www.example.com"], policy.REFUSE, [], []),
                    (["*.example.com"], policy.NXDOMAIN, [], []))
        self.assertEqual(match(tab, "www.example.com"), policy.REFUSE)
        self.assertEqual(match(tab, "mail.example.com"), policy.NXDOMAIN)

    def test_first_rule_wins_between_wildcards(self) -> None:
        """An earlier, shorter wildcard beats a later, longer one; a later longer one loses even
        though it is closer to the name."""
        tab = table((["*.example.com"], policy.NXDOMAIN, [], []),
                    (["*.ads.example.com"], policy.DROP, [], []))
        self.assertEqual(match(tab, "x.ads.example.com"), policy.NXDOMAIN)
        tab = table((["*.ads.example.com"], policy.DROP, [], []),
                    (["*.example.com"], policy.NXDOMAIN, [], []))
        self.assertEqual(match(tab, "x.ads.example.com"), policy.DROP)
        self.assertEqual(match(tab, "x.example.com"), policy.NXDOMAIN)

    def test_non_applying_rule_skipped(self) -> None:
        """An earlier rule that does not apply (wrong type or line) lets a later one decide."""
        tab = table((["www.example.com"], policy.REFUSE, [], [wire.AAAA]),
                    (["www.example.com"], policy.NODATA, ["office"], []),
                    (["*.example.com"], policy.NXDOMAIN, [], []))
        self.assertEqual(match(tab, "www.example.com", wire.AAAA), policy.REFUSE)
        self.assertEqual(match(tab, "www.example.com", wire.A, "office"), policy.NODATA)
        self.assertEqual(match(tab, "www.example.com", wire.A), policy.NXDOMAIN)

    def test_rule_applies(self) -> None:
        """Rule.applies: empty lines and types mean every client and type."""
        rule = policy.Rule(0, policy.REFUSE, frozenset(), frozenset())
        self.assertTrue(rule.applies(wire.MX, None))
        rule = policy.Rule(0, policy.REFUSE, frozenset({"office"}), frozenset({wire.A}))
        self.assertTrue(rule.applies(wire.A, "office"))
        self.assertFalse(rule.applies(wire.MX, "office"))
        self.assertFalse(rule.applies(wire.A, None))


class ConfigPolicyTests(unittest.SynchronousTestCase):
    """[[policy]] tables reach the snapshot's policy table in order."""

    CONFIG = """
    [lines]
    office = ["10.1.0.0/16"]

    [[policy]]
    names = ["blocked.example.com", "*.ads.example"]
    action = "refuse"

    [[policy]]
    names = ["*.example.com"]
    action = "nodata"
    types = ["AAAA"]
    lines = ["office"]
    """

    def test_snapshot_policies(self) -> None:
        """Rules from the config apply with their names, wildcards, types and lines."""
        snap = make_snapshot(self, self.CONFIG)
        policies = snap.policies
        self.assertEqual(policies.match(name("blocked.example.com"), wire.A, None), policy.REFUSE)
        self.assertEqual(policies.match(name("x.ads.example"), wire.TXT, "office"), policy.REFUSE)
        self.assertIsNone(policies.match(name("ads.example"), wire.A, None))
        self.assertEqual(policies.match(name("www.example.com"), wire.AAAA, "office"), policy.NODATA)
        self.assertIsNone(policies.match(name("www.example.com"), wire.AAAA, None))
        self.assertIsNone(policies.match(name("www.example.com"), wire.A, "office"))
        self.assertEqual(policies.match(name("blocked.example.com"), wire.AAAA, "office"), policy.REFUSE)
