"""``[[policy]]`` rules and records.json deny entries: names that must not resolve normally."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from smartdns import wire

REFUSE = "refuse"
NXDOMAIN = "nxdomain"
NODATA = "nodata"
DROP = "drop"


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule; ``order`` is its position, and the first matching rule wins."""

    order: int
    action: str
    lines: frozenset[str]      # empty: every client
    types: frozenset[int]      # empty: every type

    def applies(self, qtype: int, line: str | None) -> bool:
        """Whether the rule covers this query type and client line."""
        return (not self.types or qtype in self.types) and (not self.lines or line in self.lines)


@dataclass(frozen=True, slots=True)
class PolicyTable:
    """Rules indexed by exact name and by wildcard suffix (``*.ads.example``: strictly below)."""

    exact: dict[bytes, tuple[Rule, ...]]
    below: dict[bytes, tuple[Rule, ...]]

    def match(self, qkey: bytes, qtype: int, line: str | None) -> str | None:
        """The action for this query, or None; costs one dict probe per label of the name."""
        if not self.exact and not self.below:
            return None
        best: Rule | None = None
        for rule in self.exact.get(qkey, ()):
            if rule.applies(qtype, line):
                best = rule
                break
        name = qkey
        while name != wire.ROOT:
            name = wire.parent(name)
            for rule in self.below.get(name, ()):
                if rule.applies(qtype, line) and (best is None or rule.order < best.order):
                    best = rule
                    break
        return best.action if best else None


def compile_rules(entries: Iterable[tuple[Iterable[str], str, Iterable[str], Iterable[int]]]) -> PolicyTable:
    """Build the table from (names, action, lines, types) entries in priority order."""
    exact: dict[bytes, list[Rule]] = {}
    below: dict[bytes, list[Rule]] = {}
    for order, (names, action, lines, types) in enumerate(entries):
        rule = Rule(order, action, frozenset(lines), frozenset(types))
        for name in names:
            if name.startswith("*."):
                below.setdefault(wire.from_text(name[2:]).lower(), []).append(rule)
            else:
                exact.setdefault(wire.from_text(name).lower(), []).append(rule)
    return PolicyTable({k: tuple(v) for k, v in exact.items()}, {k: tuple(v) for k, v in below.items()})
