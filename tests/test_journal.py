"""smartdns.journal: the serial-bump rule, the IXFR journal and the answers made from it.

Snapshots are built from real zone files with the reload's own zone file cache, then swapped
the way the service swaps them (``Journal.prepare`` and ``Journal.commit``); IXFR answers come
from the real ``TransferHook`` and are read back and verified with dnspython.
"""
from __future__ import annotations

import json
import os
import textwrap
from typing import Any

import dns.message
import dns.rdatatype
from twisted.internet import defer, task
from twisted.trial import unittest

from smartdns import wire
from smartdns.config import parse_config
from smartdns.journal import Journal, SerialState, serial_after, soa_serial, stamp, view_difference
from smartdns.reload import ZoneFileCache
from smartdns.serial import serial_gte
from smartdns.snapshot import Snapshot, build_snapshot
from smartdns.xfr import TransferHook
from tests.support import write_tree
from tests.test_xfr import KEYS, SECRET_BASE, SECRET_LINE, read_stream, signed

ORIGIN = wire.from_text("example.test.").lower()
SERIAL = 2024010101

CONFIG = f"""
[forward]
upstreams = []
[lines]
line1 = ["127.0.0.3/32"]
line2 = ["127.0.0.4/32"]
[[tsig]]
name = "base-key"
secret = "{SECRET_BASE}"
[[tsig]]
name = "line1-key"
algorithm = "hmac-sha512"
secret = "{SECRET_LINE}"
[[transfer]]
key = "base-key"
journal_size = {{size}}
[[transfer]]
key = "line1-key"
line = "line1"
journal_size = {{size}}
"""


def base_zone(serial: int = SERIAL, www: str = "192.0.2.10", mail: str = "10 www") -> str:
    return textwrap.dedent(f"""\
        $TTL 300
        @       IN SOA ns1 hostmaster {serial} 3600 600 86400 60
        @       NS  ns1
        ns1     A   192.0.2.1
        www     A   {www}
        Mail    MX  {mail}
        """)


def overlay(www: str = "10.0.0.10", extra: str = '"only line1"') -> str:
    return f"$TTL 60\nwww A {www}\nextra TXT {extra}\n"


class Tree:
    """A config and zone directory on disk, rebuilt into snapshots the way a reload builds them."""

    def __init__(self, testcase: unittest.TestCase, size: int = 32, extra: str = "") -> None:
        self.base = os.path.abspath(testcase.mktemp())
        self.config_text = (CONFIG.replace("{size}", str(size))
                            .replace("[forward]", f'[zones]\ndirectory = "{self.base}/zones"\n{extra}[forward]'))
        write_tree(self.base, {"zones/example.test.zone": base_zone(), "zones/line1/example.test.zone": overlay(),
                               "zones/line2/example.test.zone": overlay("10.2.2.2")})
        self.files = ZoneFileCache()
        self.generation = 0
        self.stamp_ns = 1_700_000_000 * 10**9

    def write(self, rel: str, text: str) -> None:
        """Change a file (its mtime moves on, so the zone file cache reads it again)."""
        path = os.path.join(self.base, "zones", rel)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.stamp_ns += 10**9
        os.utime(path, ns=(self.stamp_ns, self.stamp_ns))

    def build(self) -> Snapshot:
        self.generation += 1
        config = parse_config(self.config_text, os.path.join(self.base, "smartdns.toml"))
        return build_snapshot(config, self.generation, read_zone=self.files.read)


def served(snap: Snapshot, line: str | None) -> int:
    return soa_serial(snap.view(ORIGIN, line).soa)


def texts(rrsets: tuple[wire.RRset, ...]) -> list[str]:
    """RRsets as ``owner type rdata`` lines, e.g. ``www.example.test. A 10.0.0.10``."""
    out = []
    for rrset in rrsets:
        for parts in rrset.rdatas:
            rdata = b"".join(parts)
            out.append(f"{wire.to_text(rrset.name)} {dns.rdatatype.to_text(rrset.rtype)} "
                       f"{dns.rdata.from_wire('IN', rrset.rtype, rdata, 0, len(rdata)).to_text()}")
    return out


class SerialBumpTests(unittest.TestCase):
    """The served serial of a transfer view moves on exactly when its content does."""

    def setUp(self) -> None:
        self.tree = Tree(self)
        self.journal = Journal()
        self.snap = self.journal.first(self.tree.build())

    def swap(self, threaded: bool = True) -> tuple[Snapshot, Any]:
        """One reload: prepare (the build thread's part) and commit (the swap), as the service does."""
        new = self.tree.build()
        if threaded:
            new = self.journal.prepare(self.snap, new)
        self.snap, differences = self.journal.commit(self.snap, new)
        return self.snap, differences

    def test_overlay_change_bumps_that_line_only(self) -> None:
        """Only line1's overlay changes, its SOA does not: line1 serves serial + 1; the base and
        line2 (no [[transfer]]) keep the file's serial; one difference, line1's."""
        self.tree.write("line1/example.test.zone", overlay("10.0.0.11"))
        snap, differences = self.swap()
        self.assertEqual((served(snap, "line1"), served(snap, None), served(snap, "line2")),
                         (SERIAL + 1, SERIAL, SERIAL))
        self.assertEqual([(d.line, d.old_serial, d.new_serial) for d in differences], [("line1", SERIAL, SERIAL + 1)])
        self.assertEqual((texts(differences[0].deleted), texts(differences[0].added)),
                         (["www.example.test. A 10.0.0.10"], ["www.example.test. A 10.0.0.11"]))
        # Every path reads the snapshot's view: the SOA node itself carries the new serial.
        node = snap.view(ORIGIN, "line1").node(ORIGIN)
        assert node is not None
        self.assertEqual(soa_serial(node[wire.SOA]), SERIAL + 1)

    def test_unchanged_reload_keeps_the_bumped_serial(self) -> None:
        """A reload that changes nothing keeps serving the bumped serial, with no difference."""
        self.tree.write("line1/example.test.zone", overlay("10.0.0.11"))
        self.swap()
        snap, differences = self.swap()
        self.assertEqual((served(snap, "line1"), differences), (SERIAL + 1, ()))
        self.tree.write("line1/example.test.zone", overlay("10.0.0.11"))     # rewritten, same content
        snap, differences = self.swap()
        self.assertEqual((served(snap, "line1"), differences), (SERIAL + 1, ()))

    def test_base_change_without_serial(self) -> None:
        """The base file changes without a new serial: the base is bumped; line1 is bumped only
        when what it sees changed (its overlay hides the base's www)."""
        self.tree.write("example.test.zone", base_zone(www="192.0.2.11"))
        snap, differences = self.swap()
        self.assertEqual((served(snap, None), served(snap, "line1")), (SERIAL + 1, SERIAL))
        self.assertEqual([d.line for d in differences], [None])
        self.tree.write("example.test.zone", base_zone(www="192.0.2.11", mail="20 www"))
        snap, differences = self.swap()
        self.assertEqual((served(snap, None), served(snap, "line1")), (SERIAL + 2, SERIAL + 1))
        line1 = next(d for d in differences if d.line == "line1")
        self.assertEqual((texts(line1.deleted), texts(line1.added)),
                         (["Mail.example.test. MX 10 www.example.test."], ["Mail.example.test. MX 20 www.example.test."]))

    def test_newer_file_serial_wins(self) -> None:
        """A file serial newer than the served one is served as it is, for every view that sees it."""
        self.tree.write("line1/example.test.zone", overlay("10.0.0.11"))
        self.swap()
        self.tree.write("example.test.zone", base_zone(serial=SERIAL + 5, www="192.0.2.12"))
        snap, differences = self.swap()
        self.assertEqual((served(snap, None), served(snap, "line1")), (SERIAL + 5, SERIAL + 5))
        # line1 sees only the new SOA (its overlay hides www): a difference with nothing in it.
        line1 = next(d for d in differences if d.line == "line1")
        self.assertEqual((line1.old_serial, line1.deleted, line1.added), (SERIAL + 1, (), ()))

    def test_soa_timers_change_is_a_change(self) -> None:
        """An SOA whose timers changed but not its serial is new content too."""
        self.tree.write("example.test.zone", base_zone().replace("3600 600", "7200 600"))
        snap, differences = self.swap()
        self.assertEqual(served(snap, None), SERIAL + 1)
        self.assertEqual([(d.deleted, d.added) for d in differences if d.line is None], [((), ())])

    def test_commit_without_prepare_stamps_on_the_spot(self) -> None:
        """A snapshot swapped in without the build thread's part gets the same serials."""
        self.tree.write("line1/example.test.zone", overlay("10.0.0.11"))
        snap, differences = self.swap(threaded=False)
        self.assertEqual((served(snap, "line1"), len(differences)), (SERIAL + 1, 1))

    def test_wrap_around(self) -> None:
        """At 2**32 - 1 the next serial is 0 (RFC 1982), which counts as newer."""
        self.tree.write("example.test.zone", base_zone(serial=2**32 - 1, www="192.0.2.30"))
        self.snap = self.journal.first(self.tree.build())
        self.tree.write("line1/example.test.zone", overlay("10.0.0.12"))
        snap, _ = self.swap()
        self.assertEqual(served(snap, "line1"), 0)
        self.assertEqual(serial_after(2**32 - 1), 0)
        self.assertTrue(serial_gte(0, 2**32 - 1))
        self.assertIsNotNone(self.journal.chain(ORIGIN, "line1", 2**32 - 1, 0))

    def test_no_transfer_rule_no_stamping(self) -> None:
        """Without [[transfer]] the snapshot is served as built (nothing compared)."""
        tree = Tree(self)
        tree.config_text = tree.config_text.split("[[transfer]]")[0]
        first = tree.build()
        tree.write("line1/example.test.zone", overlay("10.0.0.11"))
        second = tree.build()
        stamped = stamp(first, second)
        self.assertIs(stamped.snapshot, second)
        self.assertEqual(stamped.differences, ())


class JournalChainTests(unittest.TestCase):
    """The journal keeps the last N differences per view and finds unbroken chains in them."""

    def setUp(self) -> None:
        self.tree = Tree(self, size=3)
        self.journal = Journal()
        self.snap = self.journal.first(self.tree.build())
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)      # TSIG time checks use the hook's clock
        self.hook = TransferHook(self.clock, run=lambda f, *a: defer.succeed(f(*a)), journal=self.journal)

    def change(self, www: str) -> None:
        self.tree.write("line1/example.test.zone", overlay(www))
        self.snap, _ = self.journal.commit(self.snap, self.journal.prepare(self.snap, self.tree.build()))

    def ask(self, serial: int, tcp: bool = True, key: str = "line1-key", payload: int | None = None) -> Any:
        query = signed("example.test", "IXFR", key, serial=serial)
        if payload is not None:
            query.use_edns(0, payload=payload)
            query.use_tsig(query.keyring, query.keyname, algorithm=KEYS[key][0])
        answer = self.hook.answer(query.to_wire(), "127.0.0.9", tcp, self.snap)
        if tcp and not isinstance(answer, bytes):
            return read_stream(query, self.successResultOf(answer))
        # one_rr_per_rrset: the repeated SOAs and an RRset deleted then added stay apart.
        return [dns.message.from_wire(answer, keyring=query.keyring, request_mac=query.mac, one_rr_per_rrset=True)]

    def test_chains_and_bound(self) -> None:
        """Four changes with journal_size 3: chains from the last three serials, not the first."""
        for i in range(4):
            self.change(f"10.0.1.{i}")
        self.assertEqual([(d.old_serial, d.new_serial) for d in self.journal.steps(ORIGIN, "line1")],
                         [(SERIAL + 1, SERIAL + 2), (SERIAL + 2, SERIAL + 3), (SERIAL + 3, SERIAL + 4)])
        self.assertIsNone(self.journal.chain(ORIGIN, "line1", SERIAL, SERIAL + 4))       # dropped (N = 3)
        self.assertEqual(len(self.journal.chain(ORIGIN, "line1", SERIAL + 1, SERIAL + 4) or ()), 3)
        self.assertEqual(len(self.journal.chain(ORIGIN, "line1", SERIAL + 3, SERIAL + 4) or ()), 1)
        self.assertIsNone(self.journal.chain(ORIGIN, "line1", 12345, SERIAL + 4))
        self.assertIsNone(self.journal.chain(ORIGIN, "line1", SERIAL + 1, SERIAL + 5))   # not where we are
        self.assertEqual(self.journal.steps(ORIGIN, None), ())

    def test_ixfr_incremental_answer(self) -> None:
        """IXFR from a serial in the journal: RFC 1995's incremental form, TSIG-chained, and
        the differences applied to the old zone give exactly the new zone."""
        before = self.records_of("line1")
        self.change("10.0.1.1")
        self.change("10.0.1.2")
        messages = self.ask(SERIAL)
        self.assertTrue(all(m.had_tsig for m in messages))
        rows = [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
                for m in messages for rrset in m.answer for rdata in rrset]
        soas = [(i, int(row[2].split()[2])) for i, row in enumerate(rows) if row[1] == "SOA"]
        self.assertEqual([serial for _i, serial in soas],
                         [SERIAL + 2, SERIAL, SERIAL + 1, SERIAL + 1, SERIAL + 2, SERIAL + 2])
        self.assertEqual(rows[1:], [
            ("example.test.", "SOA", rows[1][2]), ("www.example.test.", "A", "10.0.0.10"),
            ("example.test.", "SOA", rows[2 + 1][2]), ("www.example.test.", "A", "10.0.1.1"),
            ("example.test.", "SOA", rows[5][2]), ("www.example.test.", "A", "10.0.1.1"),
            ("example.test.", "SOA", rows[7][2]), ("www.example.test.", "A", "10.0.1.2"),
            ("example.test.", "SOA", rows[-1][2])])
        # Apply: delete then add, per difference, starting from the old zone's records.
        current = set(before)
        position = 1
        while position < len(rows) - 1:
            position += 1                                   # the old SOA
            while rows[position][1] != "SOA":
                current.discard(rows[position])
                position += 1
            position += 1                                   # the new SOA
            while position < len(rows) - 1 and rows[position][1] != "SOA":
                current.add(rows[position])
                position += 1
        self.assertEqual(current, self.records_of("line1"))

    def records_of(self, line: str | None) -> set[tuple[str, str, str]]:
        """The view's records but the SOA, as an AXFR gives them."""
        query = signed("example.test", "AXFR", "line1-key" if line else "base-key")
        messages = read_stream(query, self.successResultOf(
            self.hook.answer(query.to_wire(), "127.0.0.9", True, self.snap)))
        return {(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
                for m in messages for rrset in m.answer for rdata in rrset if rrset.rdtype != dns.rdatatype.SOA}

    def test_ixfr_current_newer_unknown(self) -> None:
        """Our serial or newer: the single SOA; unknown or dropped serial: AXFR-style."""
        for i in range(4):
            self.change(f"10.0.1.{i}")
        for serial in (SERIAL + 4, SERIAL + 9):
            (answer,) = self.ask(serial)
            self.assertEqual([(rrset.rdtype, rrset[0].serial) for rrset in answer.answer],
                             [(dns.rdatatype.SOA, SERIAL + 4)])
        for serial in (SERIAL, 12345):
            messages = self.ask(serial)
            rows = [(rrset.rdtype, rdata) for m in messages for rrset in m.answer for rdata in rrset]
            self.assertEqual(rows[0][0], dns.rdatatype.SOA)
            self.assertNotEqual(rows[1][0], dns.rdatatype.SOA)           # AXFR-style: the zone follows
            self.assertEqual({(r[0], r[1].to_text()) for r in rows[1:-1]} | {(dns.rdatatype.SOA, rows[0][1].to_text())},
                             {(dns.rdatatype.from_text(t), d) for _n, t, d in self.records_of("line1")}
                             | {(dns.rdatatype.SOA, rows[0][1].to_text())})

    def test_ixfr_over_udp(self) -> None:
        """Over UDP (RFC 1995 §2): the incremental answer when it fits, else the single SOA."""
        self.change("10.0.1.1")
        (answer,) = self.ask(SERIAL, tcp=False)
        self.assertEqual([rrset.rdtype for rrset in answer.answer], [dns.rdatatype.SOA] * 2 + [dns.rdatatype.A]
                         + [dns.rdatatype.SOA, dns.rdatatype.A, dns.rdatatype.SOA])
        (answer,) = self.ask(12345, tcp=False)                         # would need the whole zone
        self.assertEqual([rrset.rdtype for rrset in answer.answer], [dns.rdatatype.SOA])
        for i in range(40):                                             # a long TXT: more than 512 bytes
            self.tree.write("line1/example.test.zone", overlay("10.0.0.10", '"' + "x" * 200 + f'{i}"'))
            self.snap, _ = self.journal.commit(self.snap, self.tree.build())
        current = served(self.snap, "line1")
        (answer,) = self.ask(current - 3, tcp=False)
        self.assertEqual([rrset.rdtype for rrset in answer.answer], [dns.rdatatype.SOA])
        (answer,) = self.ask(current - 3, tcp=False, payload=4096)
        self.assertEqual(len(answer.answer), 2 + 3 * 4)

    def test_records_bound_and_whole_zone_is_smaller(self) -> None:
        """The kept differences hold at most twice the view's records (the oldest go first), and
        a chain holding more records than the zone is answered AXFR-style."""
        journal = Journal()
        tree = Tree(self, size=1000)
        snap = journal.first(tree.build())
        for i in range(12):                                 # 2 records each, the view holds 6
            tree.write("line1/example.test.zone", overlay(f"10.0.2.{i}"))
            snap, _ = journal.commit(snap, tree.build())
        steps = journal.steps(ORIGIN, "line1")
        self.assertEqual((len(steps), steps[-1].view_records), (6, 6))
        self.assertEqual(sum(step.records for step in steps), 12)
        self.snap, self.journal = snap, journal
        self.hook.journal = journal
        current = served(snap, "line1")
        incremental = self.ask(current - 3)                  # 6 records: not more than the zone
        self.assertEqual(sum(len(r) for m in incremental for r in m.answer), 2 + 3 * 4)
        whole = self.ask(current - 4)                        # 8 records: the zone is smaller
        rows = [rrset.rdtype for m in whole for rrset in m.answer for _rdata in rrset]
        self.assertEqual((rows[0], rows[1], rows[-1], rows.count(dns.rdatatype.SOA)),
                         (dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.SOA, 2))

    def test_journal_forgets_views_no_rule_transfers(self) -> None:
        """A view no [[transfer]] transfers any more has no journal."""
        self.change("10.0.1.1")
        self.assertEqual(len(self.journal.steps(ORIGIN, "line1")), 1)
        self.tree.config_text = self.tree.config_text.replace('line = "line1"\n', "")
        self.tree.config_text = self.tree.config_text.replace('key = "line1-key"\n', 'key = "line1-key"\nline = "line2"\n')
        self.snap, _ = self.journal.commit(self.snap, self.tree.build())
        self.assertEqual(self.journal.steps(ORIGIN, "line1"), ())


class DifferenceTests(unittest.TestCase):
    """view_difference compares per name and RRset, and only where something may differ."""

    def test_record_level_and_ttl(self) -> None:
        tree = Tree(self)
        tree.write("example.test.zone", base_zone() + "multi A 192.0.2.50\nmulti A 192.0.2.51\n")
        first = tree.build()
        tree.write("example.test.zone", base_zone() + "multi A 192.0.2.50\nmulti A 192.0.2.52\nnew TXT hi\n")
        second = tree.build()
        deleted, added = view_difference(first.view(ORIGIN, None), second.view(ORIGIN, None))
        self.assertEqual((texts(deleted), sorted(texts(added))),
                         (["multi.example.test. A 192.0.2.51"],
                          ["multi.example.test. A 192.0.2.52", 'new.example.test. TXT "hi"']))
        tree.write("example.test.zone", base_zone() + "multi 60 A 192.0.2.50\nmulti 60 A 192.0.2.52\nnew TXT hi\n")
        third = tree.build()
        deleted, added = view_difference(second.view(ORIGIN, None), third.view(ORIGIN, None))
        self.assertEqual((len(deleted[0].rdatas), len(added[0].rdatas), added[0].ttl), (2, 2, 60))

    def test_big_zone_one_change(self) -> None:
        """A re-read 20,000-record base with one changed record: exactly that record."""
        tree = Tree(self)
        many = "".join(f"h{i} A 198.51.{i // 250}.{i % 250 + 1}\n" for i in range(20_000))
        tree.write("example.test.zone", base_zone() + many)
        first = tree.build()
        tree.write("example.test.zone", base_zone() + many.replace("h777 A", "h777 A 203.0.113.7\nh777x A"))
        second = tree.build()
        self.assertIsNot(first.zones[ORIGIN], second.zones[ORIGIN])
        deleted, added = view_difference(first.view(ORIGIN, "line1"), second.view(ORIGIN, "line1"))
        self.assertEqual(texts(deleted), ["h777.example.test. A 198.51.3.28"])
        self.assertEqual(sorted(texts(added)), ["h777.example.test. A 203.0.113.7", "h777x.example.test. A 198.51.3.28"])


class SerialStateTests(unittest.TestCase):
    """[zones] serial_state_file: served serials survive a restart, and so does the bump rule."""

    def setUp(self) -> None:
        self.tree = Tree(self, extra="serial_state_file = \"{base}/serials.json\"\n")
        self.tree.config_text = self.tree.config_text.replace("{base}", self.tree.base)
        self.path = os.path.join(self.tree.base, "serials.json")

    def start(self) -> tuple[Journal, Snapshot]:
        journal = Journal(SerialState(self.path))
        return journal, journal.first(self.tree.build())

    def test_restart(self) -> None:
        journal, snap = self.start()
        self.tree.write("line1/example.test.zone", overlay("10.0.0.11"))
        snap, _ = journal.commit(snap, journal.prepare(snap, self.tree.build()))
        self.assertEqual(served(snap, "line1"), SERIAL + 1)
        with open(self.path, encoding="utf-8") as handle:
            rows = {(row["zone"], row["line"]): row["serial"] for row in json.load(handle)["views"]}
        self.assertEqual(rows, {("example.test.", None): SERIAL, ("example.test.", "line1"): SERIAL + 1})
        # Restart, nothing changed: the bumped serial is served again.
        _journal, snap = self.start()
        self.assertEqual((served(snap, "line1"), served(snap, None)), (SERIAL + 1, SERIAL))
        # Changed while down, serial not raised: one more.
        self.tree.write("line1/example.test.zone", overlay("10.0.0.12"))
        journal, snap = self.start()
        self.assertEqual(served(snap, "line1"), SERIAL + 2)
        # Saved again at start, so another restart keeps it.
        _journal, snap = self.start()
        self.assertEqual(served(snap, "line1"), SERIAL + 2)
        # A newer file serial wins over the saved one.
        self.tree.write("example.test.zone", base_zone(serial=SERIAL + 10))
        _journal, snap = self.start()
        self.assertEqual(served(snap, "line1"), SERIAL + 10)

    def test_incremental_digest_matches_a_full_one(self) -> None:
        """The digest kept through differences equals the one computed from the whole view."""
        from smartdns.journal import view_sum
        journal, snap = self.start()
        for www in ("10.0.0.11", "10.0.0.12"):
            self.tree.write("line1/example.test.zone", overlay(www))
            snap, _ = journal.commit(snap, journal.prepare(snap, self.tree.build()))
        self.tree.write("example.test.zone", base_zone(mail="30 ns1"))
        snap, _ = journal.commit(snap, journal.prepare(snap, self.tree.build()))
        for key, total in journal.sums.items():
            self.assertEqual(total % 2**128, view_sum(snap.view(*key)) % 2**128, key)

    @defer.inlineCallbacks
    def test_service_restart(self) -> None:
        """The running service: an overlay-only reload serves serial + 1 to line1's clients; a
        new service on the same files and state file (a restart) serves it again."""
        from smartdns.service import SmartDNSService
        from tests.support import query, start_server

        config = textwrap.dedent(CONFIG.replace("{size}", "32")).replace(
            "[forward]", '[zones]\nserial_state_file = "serials.json"\nwatch = false\n[forward]')
        service, host, port = start_server(self, config, zones={"example.test.zone": base_zone(),
                                                                "line1/example.test.zone": overlay()})
        with open(os.path.join(service.config.zones.directory, "line1", "example.test.zone"), "w") as handle:
            handle.write(overlay("10.0.0.11"))
        result = yield service.reload("test")
        self.assertTrue(result.ok, result.summary())
        answer = yield query(host, port, "example.test", "SOA", source="127.0.0.3")
        self.assertEqual(answer.answer[0][0].serial, SERIAL + 1)
        yield service.stopService()
        again = SmartDNSService(service.config, build_snapshot(service.config), service.reactor)
        again.startService()
        self.addCleanup(again.stopService)
        host, port = again.addresses()[0]
        for source, serial in (("127.0.0.3", SERIAL + 1), ("127.0.0.1", SERIAL)):
            answer = yield query(host, port, "example.test", "SOA", source=source)
            self.assertEqual(answer.answer[0][0].serial, serial)

    def test_unreadable_state_serves_file_serials(self) -> None:
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.write("{not json")
        _journal, snap = self.start()
        self.assertEqual(served(snap, "line1"), SERIAL)
