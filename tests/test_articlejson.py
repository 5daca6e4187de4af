"""Unit tests for smartdns.articlejson: the Pipy article's records.json and smart-line.json, read
on their own and served through build_snapshot and the authority."""
from __future__ import annotations

import os
import struct

from twisted.trial import unittest

from smartdns import articlejson, policy, wire
from smartdns.authority import Authority
from smartdns.errors import ZoneError
from smartdns.snapshot import Snapshot
from tests.unit_support import make_config, make_snapshot, name, rrset_texts, temp_tree

# The article's records.json (examples/records.json), one record per line.
ARTICLE_RECORDS = """\
[
  {"name": "example.com", "type": "A", "ttl": 60, "rdata": "192.168.139.10", "labels": ["line1"]},
  {"name": "example.com", "type": "A", "ttl": 60, "rdata": "192.168.139.11", "labels": ["line2"]},
  {"name": "example.com", "type": "MX", "ttl": 600, "rdata": {"preference": 10, "exchange": "mail1.example.com"}},
  {"name": "example.com", "type": "MX", "ttl": 600, "rdata": {"preference": 10, "exchange": "mail2.example.com"}},
  {"name": "example.com", "type": "TXT", "ttl": 600, "rdata": "hi.pipy!"},
  {"name": "example.com", "type": "NS", "ttl": 600, "rdata": "ns1.example.com"},
  {"name": "example.com", "type": "AAAA", "ttl": 60, "rdata": "20010db8000000000000000000000010"},
  {"name": "www.example.com", "type": "CNAME", "ttl": 600, "rdata": "example.com"},
  {"name": "deny.example.com", "type": "A", "status": "deny"},
  {"name": "mix.example.com", "type": "A", "ttl": 30, "rdata": "192.0.2.1"},
  {"name": "mix.example.com", "type": "A", "ttl": 30, "rdata": "192.0.2.2", "labels": ["line1"]},
  {"name": "lab.example.com", "type": "A", "status": "deny", "labels": ["line2"]}
]
"""

SMART_LINE = """\
{
  "line1": ["192.168.1.110/32"],
  "line2": ["127.0.0.1/32"]
}
"""

CONFIG = """
[zones]
records_json = ["records.json"]
lines_json = "smart-line.json"

[lines]
line3 = ["10.3.0.0/16"]
"""


def write(testcase: unittest.SynchronousTestCase, text: str, filename: str = "records.json") -> str:
    """Write a JSON file into a fresh directory; its path."""
    return os.path.join(temp_tree(testcase, {filename: text}), filename)


class ReadRecordsTests(unittest.SynchronousTestCase):
    """read_records_json: records, deny entries and located problems."""

    def test_article_records(self) -> None:
        """Every article record parses: A with labels, MX objects, TXT, NS, AAAA as 32 hex digits,
        CNAME; the deny entries become JsonDeny."""
        path = write(self, ARTICLE_RECORDS)
        records, denies, problems = articlejson.read_records_json(path)
        self.assertEqual(problems, [])
        self.assertEqual(len(records), 10)
        first = records[0]
        self.assertEqual((first.name, first.rtype, first.ttl, first.rdata, first.labels),
                         (name("example.com"), wire.A, 60, bytes([192, 168, 139, 10]), ("line1",)))
        self.assertEqual((first.where.path, first.where.line), (path, 2))
        mx = records[2]
        self.assertEqual(mx.rdata, b"\x00\x0a" + name("mail1.example.com"))
        txt = records[4]
        self.assertEqual(txt.rdata, b"\x08hi.pipy!")
        aaaa = records[6]
        self.assertEqual(aaaa.rtype, wire.AAAA)
        self.assertEqual(aaaa.rdata, bytes.fromhex("20010db8000000000000000000000010"))
        cname = records[7]
        self.assertEqual(cname.rdata, name("example.com"))
        self.assertEqual(denies, [articlejson.JsonDeny(name("deny.example.com"), wire.A, ()),
                                  articlejson.JsonDeny(name("lab.example.com"), wire.A, ("line2",))])

    def test_names_lowercased_and_ttl_default(self) -> None:
        """Names become lowercase keys; a record without ttl gets 300."""
        path = write(self, '[{"name": "WWW.Example.COM.", "type": "a", "rdata": "192.0.2.1"}]')
        records, _, problems = articlejson.read_records_json(path)
        self.assertEqual(problems, [])
        self.assertEqual((records[0].name, records[0].rtype, records[0].ttl), (name("www.example.com"), wire.A, 300))

    def test_txt_with_quotes(self) -> None:
        """A TXT string with quotes and backslashes is taken literally."""
        path = write(self, r'[{"name": "t.example.com", "type": "TXT", "rdata": "say \"hi\" \\ bye"}]')
        records, _, problems = articlejson.read_records_json(path)
        self.assertEqual(problems, [])
        self.assertEqual(records[0].rdata, b'\x0esay "hi" \\ bye')

    def test_bad_records_located(self) -> None:
        """Each bad record is reported with the file, the line it starts on and its number;
        good records around it are still read."""
        text = """\
[
  {"name": "a.example.com", "type": "A", "rdata": "192.0.2.1"},
  {"name": "b.example.com", "type": "A", "rdata": "300.1.1.1"},
  {"name": "c.example.com", "type": "BOGUS", "rdata": "x"},
  {"name": "d.example.com", "type": "A", "rdata": "192.0.2.4", "colour": "red"},
  {"name": "e.example.com", "type": "A", "ttl": -1, "rdata": "192.0.2.5"},
  {"name": "f.example.com", "type": "A"},
  {"name": "g.example.com", "type": "A", "rdata": "192.0.2.7", "status": "allow"},
  {"name": "h.example.com", "type": "AAAA", "rdata": "2001:db8::zz"},
  "just a string",
  {
    "name": "j.example.com",
    "type": "MX",
    "rdata": {"preference": 10}
  },
  {"name": "k.example.com", "type": "A", "rdata": "192.0.2.11"}
]
"""
        path = write(self, text)
        records, denies, problems = articlejson.read_records_json(path)
        self.assertEqual([r.name for r in records], [name("a.example.com"), name("k.example.com")])
        self.assertEqual([(p.path, p.line) for p in problems], [(path, line) for line in (3, 4, 5, 6, 7, 8, 9, 10, 11)])
        prefixes = [p.message.split(":")[0] for p in problems]
        self.assertEqual(prefixes, ["record 2 (b.example.com A)", "record 3 (c.example.com BOGUS)",
                                    "record 4 (d.example.com A)", "record 5 (e.example.com A)",
                                    "record 6 (f.example.com A)", "record 7 (g.example.com A)",
                                    "record 8 (h.example.com AAAA)", "record 9", "record 10 (j.example.com MX)"])
        self.assertIn("colour", problems[2].message)
        self.assertIn("ttl", problems[3].message)
        self.assertIn("rdata is missing", problems[4].message)
        self.assertIn("allow", problems[5].message)
        self.assertIn("exchange", problems[8].message)
        self.assertTrue(str(problems[0]).startswith(f"{path}:3: record 2 (b.example.com A): "))

    def test_leading_zeros_rejected(self) -> None:
        """An A address with leading zeros is rejected (ambiguous octal)."""
        path = write(self, '[{"name": "a.example.com", "type": "A", "rdata": "192.0.02.1"}]')
        _, _, problems = articlejson.read_records_json(path)
        self.assertEqual(len(problems), 1)

    def test_json_syntax_error_line(self) -> None:
        """A JSON syntax error is reported at its line."""
        path = write(self, '[\n  {"name": "a.example.com", "type": "A", "rdata": "192.0.2.1"},\n  {"name": ,}\n]\n')
        records, _, problems = articlejson.read_records_json(path)
        self.assertEqual(len(records), 1)
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 3)])

    def test_missing_comma_line(self) -> None:
        """Two records without a comma between them: reported where the second starts."""
        path = write(self, '[\n  {"name": "a.example.com", "type": "A", "rdata": "192.0.2.1"}\n  {"name": "b"}\n]\n')
        _, _, problems = articlejson.read_records_json(path)
        self.assertEqual([(p.line, p.message) for p in problems], [(3, "expected ',' or ']' between records")])

    def test_not_an_array(self) -> None:
        """A top level that is not an array is one problem."""
        path = write(self, '{"name": "a"}')
        _, _, problems = articlejson.read_records_json(path)
        self.assertEqual([(p.line, p.message) for p in problems], [(1, "expected a JSON array of records")])

    def test_trailing_data(self) -> None:
        """Data after the array is a problem at its line."""
        path = write(self, '[{"name": "a.example.com", "type": "A", "rdata": "192.0.2.1"}]\n\nxyz\n')
        records, _, problems = articlejson.read_records_json(path)
        self.assertEqual([(p.line, p.message) for p in problems], [(3, "trailing data after the array")])

    def test_trailing_data_after_empty_array(self) -> None:
        """Data after an empty array is a problem too."""
        path = write(self, '[]\n\nxyz\n')
        _, _, problems = articlejson.read_records_json(path)
        self.assertEqual([(p.line, p.message) for p in problems], [(3, "trailing data after the array")])


    def test_empty_array(self) -> None:
        """An empty array is no records and no problems."""
        self.assertEqual(articlejson.read_records_json(write(self, " [ ] ")), ([], [], []))

    def test_missing_file(self) -> None:
        """A file that cannot be read is one problem at line 0."""
        missing = os.path.join(os.path.abspath(self.mktemp()), "records.json")
        _, _, problems = articlejson.read_records_json(missing)
        self.assertEqual([(p.path, p.line) for p in problems], [(missing, 0)])


class ReadLinesTests(unittest.SynchronousTestCase):
    """read_lines_json: smart-line.json."""

    def test_article_lines(self) -> None:
        """Line names map to their CIDR lists, in file order."""
        entries, problems = articlejson.read_lines_json(write(self, SMART_LINE, "smart-line.json"))
        self.assertEqual(problems, [])
        self.assertEqual(entries, [("line1", ["192.168.1.110/32"]), ("line2", ["127.0.0.1/32"])])

    def test_bad_lines(self) -> None:
        """A value that is not a list of strings is reported; a non-object is reported."""
        entries, problems = articlejson.read_lines_json(write(self, '{"a": "10.0.0.0/8", "b": ["10.1.0.0/16"]}',
                                                              "smart-line.json"))
        self.assertEqual(entries, [("b", ["10.1.0.0/16"])])
        self.assertEqual(len(problems), 1)
        self.assertIn("'a'", problems[0].message)
        _, problems = articlejson.read_lines_json(write(self, "[1]", "smart-line.json"))
        self.assertEqual(len(problems), 1)
        _, problems = articlejson.read_lines_json(write(self, '{\n"a": [\n', "smart-line.json"))
        self.assertEqual(len(problems), 1)


def rec(rdata: bytes, *labels: str, rname: str = "x.example.com") -> articlejson.JsonRecord:
    """A JsonRecord for group_for_lines."""
    from smartdns.errors import Problem
    return articlejson.JsonRecord(name(rname), wire.A, 60, rdata, labels, Problem("r.json", 1, "record"))


class GroupTests(unittest.SynchronousTestCase):
    """group_for_lines: base gets every record, overlays only what differs."""

    def test_grouping(self) -> None:
        """Labelled-only sets differ per line; a line with nothing of its own gets no overlay."""
        a, b, c = rec(b"\x01\x01\x01\x01", "l1"), rec(b"\x02\x02\x02\x02", "l2"), rec(b"\x03\x03\x03\x03")
        base, overlays = articlejson.group_for_lines([a, b, c], ["l1", "l2", "l3"])
        self.assertEqual(base, [a, b, c])
        self.assertEqual(overlays, {"l1": [a, c], "l2": [b, c], "l3": [c]})

    def test_no_overlay_when_same(self) -> None:
        """Unlabelled-only data needs no overlay; labelled-only data falls back to all for others."""
        a = rec(b"\x01\x01\x01\x01")
        self.assertEqual(articlejson.group_for_lines([a], ["l1"]), ([a], {}))
        b = rec(b"\x02\x02\x02\x02", "l1")
        self.assertEqual(articlejson.group_for_lines([b], ["l1", "l2"]), ([b], {}))


class ServedTests(unittest.SynchronousTestCase):
    """records.json served through build_snapshot and the authority."""

    def setUp(self) -> None:
        self.snap = make_snapshot(self, CONFIG, files={"records.json": ARTICLE_RECORDS,
                                                       "smart-line.json": SMART_LINE})

    def ask(self, qname: str, qtype: int = wire.A, line: str | None = None, snap: Snapshot | None = None) -> list[str]:
        """The answer section for a client of ``line``."""
        answer = Authority().lookup(snap or self.snap, line, name(qname), qtype, True)
        assert answer is not None
        return rrset_texts(answer.answer)

    def test_lines_from_smart_line_json(self) -> None:
        """smart-line.json lines are added after [lines]."""
        self.assertEqual(self.snap.line_names, ("line3", "line1", "line2"))
        self.assertEqual(self.snap.lines.lookup("192.168.1.110"), "line1")
        self.assertEqual(self.snap.lines.lookup("127.0.0.1"), "line2")

    def test_no_line_gets_every_record(self) -> None:
        """A client in no line gets both labelled A records."""
        self.assertEqual(self.ask("example.com"), ["example.com. 60 A 192.168.139.10", "example.com. 60 A 192.168.139.11"])

    def test_line_gets_its_labelled_records(self) -> None:
        """line1 gets the line1 record, line2 the line2 record."""
        self.assertEqual(self.ask("example.com", line="line1"), ["example.com. 60 A 192.168.139.10"])
        self.assertEqual(self.ask("example.com", line="line2"), ["example.com. 60 A 192.168.139.11"])

    def test_line_with_nothing_falls_back(self) -> None:
        """line3 has no labelled records and there are no unlabelled ones: it gets all records."""
        self.assertEqual(self.ask("example.com", line="line3"),
                         ["example.com. 60 A 192.168.139.10", "example.com. 60 A 192.168.139.11"])

    def test_unlabelled_plus_own(self) -> None:
        """mix: line1 gets unlabelled + its own; line2 only the unlabelled one; no line gets both."""
        self.assertEqual(self.ask("mix.example.com", line="line1"),
                         ["mix.example.com. 30 A 192.0.2.1", "mix.example.com. 30 A 192.0.2.2"])
        self.assertEqual(self.ask("mix.example.com", line="line2"), ["mix.example.com. 30 A 192.0.2.1"])
        self.assertEqual(self.ask("mix.example.com"), ["mix.example.com. 30 A 192.0.2.1", "mix.example.com. 30 A 192.0.2.2"])

    def test_unlabelled_types_for_everyone(self) -> None:
        """Unlabelled MX, TXT and AAAA are served to every client alike."""
        for line in (None, "line1", "line2", "line3"):
            self.assertEqual(self.ask("example.com", wire.MX, line), ["example.com. 600 MX 10 mail1.example.com.",
                                                                      "example.com. 600 MX 10 mail2.example.com."])
            self.assertEqual(self.ask("example.com", wire.AAAA, line), ["example.com. 60 AAAA 2001:db8::10"])

    def test_cname_followed(self) -> None:
        """www is a CNAME to example.com, followed in the client's view."""
        self.assertEqual(self.ask("www.example.com", line="line2"),
                         ["example.com. 60 A 192.168.139.11", "www.example.com. 600 CNAME example.com."])

    def test_synthetic_soa_for_negatives(self) -> None:
        """A zone made only of records.json names answers NXDOMAIN with a synthetic SOA."""
        answer = Authority().lookup(self.snap, None, name("nope.example.com"), wire.A, True)
        assert answer is not None
        self.assertEqual(answer.rcode, wire.NXDOMAIN)
        self.assertEqual([r.rtype for r in answer.authority], [wire.SOA])
        soa = answer.authority[0]
        minimum = struct.unpack("!I", b"".join(soa.rdatas[0])[-4:])[0]
        self.assertLessEqual(soa.ttl, minimum)

    def test_deny_entries_refuse(self) -> None:
        """A deny entry is a REFUSE rule for its name and type (and its labels' lines only)."""
        policies = self.snap.policies
        self.assertEqual(policies.match(name("deny.example.com"), wire.A, None), policy.REFUSE)
        self.assertEqual(policies.match(name("deny.example.com"), wire.A, "line1"), policy.REFUSE)
        self.assertIsNone(policies.match(name("deny.example.com"), wire.AAAA, None))
        self.assertIsNone(policies.match(name("x.deny.example.com"), wire.A, None))
        self.assertEqual(policies.match(name("lab.example.com"), wire.A, "line2"), policy.REFUSE)
        self.assertIsNone(policies.match(name("lab.example.com"), wire.A, "line1"))
        self.assertIsNone(policies.match(name("lab.example.com"), wire.A, None))

    def test_json_beside_zone_file(self) -> None:
        """Records for a name under a zone file join that zone; line2 does not see line1's record
        where the zone file gives an unlabelled one."""
        zone = """
            $TTL 300
            @    SOA ns1 hostmaster 1 3600 600 86400 60
            @    NS  ns1
            ns1  A   192.0.2.53
            app  A   192.0.2.80
        """
        records = '[{"name": "app.example.com", "type": "A", "ttl": 300, "rdata": "10.0.0.80", "labels": ["line1"]},\n' \
                  ' {"name": "api.example.com", "type": "A", "ttl": 300, "rdata": "10.0.0.81"}]\n'
        snap = make_snapshot(self, CONFIG, zones={"example.com.zone": zone},
                             files={"records.json": records, "smart-line.json": SMART_LINE})
        self.assertEqual(self.ask("api.example.com", snap=snap), ["api.example.com. 300 A 10.0.0.81"])
        self.assertEqual(self.ask("ns1.example.com", snap=snap), ["ns1.example.com. 300 A 192.0.2.53"])
        self.assertIn("app.example.com. 300 A 10.0.0.80", self.ask("app.example.com", line="line1", snap=snap))
        self.assertEqual(self.ask("app.example.com", line="line2", snap=snap), ["app.example.com. 300 A 192.0.2.80"])



class RejectedTests(unittest.SynchronousTestCase):
    """Invalid JSON data stops build_snapshot with file:line problems."""

    def problems(self, records: str, zones: dict[str, str] | None = None) -> tuple[str, list[str]]:
        """The problems build_snapshot raises for this records.json; (records path, messages)."""
        from smartdns.snapshot import build_snapshot
        config = make_config(self, CONFIG, zones=zones, files={"records.json": records,
                                                                 "smart-line.json": SMART_LINE})
        path = config.zones.records_json[0]
        error = self.assertRaises(ZoneError, build_snapshot, config)
        return path, [str(p) for p in error.problems]

    def test_cname_beside_other_data(self) -> None:
        """A CNAME and an A at one name are rejected, naming the CNAME record's file and line."""
        path, problems = self.problems(
            '[\n {"name": "www.example.com", "type": "A", "rdata": "192.0.2.1"},\n'
            ' {"name": "www.example.com", "type": "CNAME", "rdata": "example.com"}\n]\n')
        self.assertIn(f"{path}:3: record 2 (www.example.com CNAME): CNAME and other data at www.example.com.",
                      problems)

    def test_cname_beside_zone_file_data(self) -> None:
        """A JSON CNAME at a name the zone file gives data is rejected too."""
        zone = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.53\nwww A 192.0.2.80\n"
        path, problems = self.problems('[\n {"name": "www.example.com", "type": "CNAME", "rdata": "ns1.example.com"}\n]\n',
                                       zones={"example.com.zone": zone})
        self.assertEqual(problems, [f"{path}:2: record 1 (www.example.com CNAME): CNAME and other data at www.example.com."])

    def test_unknown_label(self) -> None:
        """A label that is not a configured line is rejected with the record's location."""
        path, problems = self.problems('[\n {"name": "a.example.com", "type": "A", "rdata": "192.0.2.1", "labels": ["nope"]}\n]\n')
        self.assertEqual(problems, [f"{path}:2: record 1 (a.example.com A): label 'nope' is not a configured line"])

    def test_bad_address(self) -> None:
        """A bad address stops the snapshot with the record named."""
        path, problems = self.problems('[{"name": "a.example.com", "type": "A", "rdata": "192.0.2"}]')
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith(f"{path}:1: record 1 (a.example.com A): "))
