"""Unit tests for smartdns.zones: zone files through dnspython, errors, and line overlay views."""
from __future__ import annotations

import os
import struct

from twisted.trial import unittest

from smartdns import wire, zones
from smartdns.errors import Problem
from tests.unit_support import ipv4, name, rrset_texts, temp_tree

HEAD = """\
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.1
"""

FULL = """\
$ORIGIN example.com.
$TTL 600
@   IN SOA ns1 hostmaster (
        2024010101 ; serial
        3600       ; refresh
        600 86400
        120 )      ; minimum
    NS  ns1
ns1 A   192.0.2.1
txt TXT "semi;colon" "(paren" "quote\\"d" ; a comment
@   CAA 0 issue "letsencrypt.org"
svc HTTPS 1 . alpn="h2,h3" port=8443
short 60 A 192.0.2.60
$TTL 900
late A 192.0.2.90
$ORIGIN sub.example.com.
deep AAAA 2001:db8::1
$INCLUDE inc/hosts.inc
$INCLUDE inc/other.inc other.example.com.
"""


def node(zone: zones.Zone | zones.ZoneView, text: str) -> dict[int, wire.RRset]:
    """The node at a presentation name (key form lookup)."""
    key = name(text).lower()
    found = zone.node(key) if isinstance(zone, zones.ZoneView) else zone.nodes.get(key)
    assert found is not None, f"no node at {text}"
    return dict(found)


class ReadZoneFileTests(unittest.SynchronousTestCase):
    """read_zone_file: BIND master files into wire-ready RRsets."""

    def load(self, text: str, origin: str = "example.com.", extra: dict[str, str] | None = None,
             **kwargs: object) -> tuple[zones.Zone | None, list[Problem], str]:
        """Write ``text`` as ``<origin>zone`` in a fresh directory and read it."""
        files = {f"{origin}zone": text, **(extra or {})}
        base = temp_tree(self, files)
        path = os.path.join(base, f"{origin}zone")
        zone, problems = zones.read_zone_file(path, origin, **kwargs)  # type: ignore[arg-type]
        return zone, problems, path

    def load_ok(self, text: str, **kwargs: object) -> zones.Zone:
        """A zone that must load without problems."""
        zone, problems, _ = self.load(text, **kwargs)  # type: ignore[arg-type]
        self.assertEqual([str(p) for p in problems], [])
        assert zone is not None
        return zone

    def test_directives_and_parentheses(self) -> None:
        """$ORIGIN, $TTL (and a per-record TTL) and a parenthesised SOA are read as BIND does."""
        zone = self.load_ok(FULL, extra={"inc/hosts.inc": "www A 192.0.2.80\n",
                                         "inc/other.inc": "x A 192.0.2.81\n"})
        self.assertEqual(zone.origin, name("example.com"))
        soa = zone.soa
        assert soa is not None
        self.assertEqual(rrset_texts([soa]), [
            "example.com. 600 SOA ns1.example.com. hostmaster.example.com. 2024010101 3600 600 86400 120"])
        self.assertEqual(node(zone, "short.example.com")[wire.A].ttl, 60)
        self.assertEqual(node(zone, "late.example.com")[wire.A].ttl, 900)
        self.assertEqual(rrset_texts([node(zone, "deep.sub.example.com")[wire.AAAA]]),
                         ["deep.sub.example.com. 900 AAAA 2001:db8::1"])

    def test_quoted_txt_keeps_specials(self) -> None:
        """Quoted TXT strings keep ';', '(' and escaped quotes; the comment after them is dropped."""
        zone = self.load_ok(FULL, extra={"inc/hosts.inc": "", "inc/other.inc": ""})
        txt = node(zone, "txt.example.com")[wire.TXT]
        self.assertEqual(b"".join(txt.rdatas[0]), b'\x0asemi;colon\x06(paren\x07quote"d')

    def test_caa_and_https(self) -> None:
        """CAA and HTTPS records load into their RFC wire forms."""
        zone = self.load_ok(FULL, extra={"inc/hosts.inc": "", "inc/other.inc": ""})
        caa = node(zone, "example.com")[257]
        self.assertEqual(b"".join(caa.rdatas[0]), b"\x00\x05issueletsencrypt.org")
        https = node(zone, "svc.example.com")[65]
        self.assertEqual(rrset_texts([https]), ['svc.example.com. 600 HTTPS 1 . alpn="h2,h3" port="8443"'])

    def test_include_relative_to_zone_directory(self) -> None:
        """$INCLUDE paths resolve against the zone file's directory, not the working directory,
        take the current $ORIGIN (or the one given), and are listed as sources."""
        zone, problems, path = self.load(FULL, extra={"inc/hosts.inc": "www A 192.0.2.80\n",
                                                      "inc/other.inc": "x A 192.0.2.81\n"})
        self.assertEqual(problems, [])
        assert zone is not None
        self.assertNotEqual(os.getcwd(), os.path.dirname(path))
        self.assertEqual(rrset_texts([node(zone, "www.sub.example.com")[wire.A]]),
                         ["www.sub.example.com. 900 A 192.0.2.80"])
        self.assertEqual(rrset_texts([node(zone, "x.other.example.com")[wire.A]]),
                         ["x.other.example.com. 900 A 192.0.2.81"])
        base = os.path.dirname(path)
        self.assertEqual(zone.sources, (path, os.path.join(base, "inc", "hosts.inc"),
                                        os.path.join(base, "inc", "other.inc")))

    def test_names_and_empty_non_terminals(self) -> None:
        """Zone.names holds every name with data plus the empty non-terminals up to the origin."""
        zone = self.load_ok(HEAD + "a.b.c A 192.0.2.9\n")
        self.assertIn(name("a.b.c.example.com"), zone.names)
        self.assertIn(name("b.c.example.com"), zone.names)
        self.assertIn(name("c.example.com"), zone.names)
        self.assertNotIn(name("b.c.example.com"), zone.nodes)
        self.assertNotIn(name("x.example.com"), zone.names)

    def test_lookup_keys_are_lowercase(self) -> None:
        """Nodes are keyed by the lowercased name whatever the zone file's case."""
        zone = self.load_ok(HEAD + "MiXeD A 192.0.2.9\n")
        self.assertIn(name("mixed.example.com"), zone.nodes)
        self.assertNotIn(name("MiXeD.example.com"), zone.nodes)

    def test_rdata_names_uncompressed_and_compressible(self) -> None:
        """Name-bearing RDATA is split so the renderer can compress the names."""
        zone = self.load_ok(HEAD + "@ MX 10 mail\nmail A 192.0.2.25\n")
        mx = node(zone, "example.com")[wire.MX]
        self.assertEqual(mx.rdatas[0], (b"\x00\x0a", name("mail.example.com")))
        self.assertIsInstance(mx.rdatas[0][1], wire.CompressedName)

    def test_syntax_error_names_its_line(self) -> None:
        """A bad record after a multi-line record is reported at its own line."""
        text = "$TTL 60\n@ SOA ns h (\n 1 2 3\n 4 5 )\n@ NS ns\nns A 192.0.2.1\nbad A 999.1.1.1\nok A 1.1.1.1\n"
        zone, problems, path = self.load(text)
        self.assertIsNone(zone)
        self.assertEqual(len(problems), 1)
        self.assertEqual((problems[0].path, problems[0].line), (path, 7))

    def test_syntax_error_on_last_line_without_newline(self) -> None:
        """A bad record on a last line lacking its newline is reported at that line."""
        zone, problems, path = self.load(HEAD + "bad A 1.2.3")
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 5)])

    def test_error_after_comments_and_blank_lines(self) -> None:
        """Comments and blank lines do not shift the reported line."""
        zone, problems, path = self.load(HEAD + "; comment\n\nwww A 1.1.1.1 ; fine\nbad MX 10\n")
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 8)])

    def test_unterminated_quote(self) -> None:
        """A quoted string running to the end of the line is an error at that line."""
        zone, problems, path = self.load(HEAD + 't TXT "unterminated\n')
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 5)])
        self.assertIn("quoted", problems[0].message)

    def test_unknown_type(self) -> None:
        """An unknown type is reported with its line and the type's name."""
        zone, problems, path = self.load(HEAD + "www FOO 1\n")
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 5)])
        self.assertIn("FOO", problems[0].message)

    def test_bad_ttl_directive_line(self) -> None:
        """A bad $TTL directive is reported at the directive's own line."""
        zone, problems, path = self.load(HEAD + "$TTL abc\nwww A 192.0.2.1\n")
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 5)])

    def test_missing_include_line(self) -> None:
        """A $INCLUDE of a missing file is reported at the $INCLUDE line, naming the file."""
        zone, problems, path = self.load(HEAD + "$INCLUDE inc/missing.inc\nwww A 192.0.2.1\n")
        self.assertEqual(len(problems), 1)
        self.assertEqual((problems[0].path, problems[0].line), (path, 5))
        self.assertIn(os.path.join(os.path.dirname(path), "inc", "missing.inc"), problems[0].message)

    def test_error_in_included_file(self) -> None:
        """An error inside an included file names that file by the path opened, and its line."""
        zone, problems, path = self.load(HEAD + "$INCLUDE inc/bad.inc\n",
                                         extra={"inc/bad.inc": "a A 192.0.2.1\nb A nope\n"})
        included = os.path.join(os.path.dirname(path), "inc", "bad.inc")
        self.assertEqual([(p.line, p.message != "") for p in problems], [(2, True)])
        self.assertEqual(os.path.abspath(problems[0].path), included)

    def test_cname_and_other_data(self) -> None:
        """CNAME beside other data is rejected at the line of the record that conflicts."""
        zone, problems, path = self.load(HEAD + "www A 192.0.2.1\n\nwww CNAME other\n")
        self.assertIsNone(zone)
        self.assertEqual([str(p) for p in problems], [f"{path}:7: CNAME and other data at the same name"])
        zone, problems, path = self.load(HEAD + "www CNAME other\nwww A 192.0.2.1\n")
        self.assertEqual([str(p) for p in problems], [f"{path}:6: CNAME and other data at the same name"])

    def test_missing_soa(self) -> None:
        """A base zone without an SOA at its origin is an error naming the zone."""
        zone, problems, path = self.load("$TTL 60\n@ NS ns\nns A 192.0.2.1\n")
        self.assertIsNone(zone)
        self.assertEqual([str(p) for p in problems], [f"{path}: zone example.com. has no SOA record at its origin"])

    def test_missing_ns(self) -> None:
        """A base zone without NS at its origin is an error naming the zone."""
        zone, problems, path = self.load("$TTL 60\n@ SOA ns h 1 2 3 4 5\n")
        self.assertEqual([str(p) for p in problems], [f"{path}: zone example.com. has no NS records at its origin"])

    def test_overlay_needs_no_soa_and_inherits_ttl(self) -> None:
        """An overlay may hold a single record, without SOA, NS or $TTL (TTL from the base SOA)."""
        zone, problems, _ = self.load("www A 10.0.0.1\n", overlay=True, default_ttl=1234)
        self.assertEqual(problems, [])
        assert zone is not None
        self.assertEqual(node(zone, "www.example.com")[wire.A].ttl, 1234)

    def test_missing_file(self) -> None:
        """A zone file that does not exist is a problem, not an exception."""
        zone, problems = zones.read_zone_file(os.path.join(os.path.abspath(self.mktemp()), "x.zone"), "x.")
        self.assertIsNone(zone)
        self.assertEqual(len(problems), 1)

    def test_rrsig_and_other_classes_ignored(self) -> None:
        """Only class IN data is kept."""
        zone = self.load_ok(HEAD + "www A 192.0.2.5\n")
        self.assertEqual(set(node(zone, "www.example.com")), {wire.A})


class FileNameTests(unittest.SynchronousTestCase):
    """Where zone files are found and what origin their names give."""

    def test_origin_from_filename(self) -> None:
        """The file name minus .zone is the origin; root.zone is the root."""
        self.assertEqual(zones.origin_from_filename("example.com.zone"), "example.com.")
        self.assertEqual(zones.origin_from_filename("example.com..zone"), "example.com.")
        self.assertEqual(zones.origin_from_filename("root.zone"), ".")

    def test_scan_directory(self) -> None:
        """Base files and per-line overlays are found; an overlay directory of an unknown line is an
        error, but a directory without zone files (include fragments) is not."""
        base = temp_tree(self, {"a.test.zone": HEAD, "b.test.zone": HEAD, "notes.txt": "x",
                                "office/a.test.zone": "www A 10.0.0.1\n",
                                "ghost/a.test.zone": "www A 10.0.0.2\n",
                                "fragments/hosts.inc": "www A 10.0.0.3\n"})
        bases, overlays, problems = zones.scan_zone_directory(base, ["office", "vpn"])
        self.assertEqual(bases, {"a.test.": os.path.join(base, "a.test.zone"),
                                 "b.test.": os.path.join(base, "b.test.zone")})
        self.assertEqual(overlays, {"office": {"a.test.": os.path.join(base, "office", "a.test.zone")}})
        self.assertEqual([(p.path, p.message) for p in problems],
                         [(os.path.join(base, "ghost"), "overlay directory for unknown line 'ghost' "
                                                         "(add it to [lines]; configured lines: office, vpn)")])

    def test_scan_missing_directory(self) -> None:
        """A zones directory that cannot be read is one problem."""
        missing = os.path.join(os.path.abspath(self.mktemp()), "nope")
        _, _, problems = zones.scan_zone_directory(missing, [])
        self.assertEqual(problems, [Problem(missing, 0, "the zones directory does not exist")])

    def test_scan_missing_default_directory(self) -> None:
        """The default zones directory may be missing (an empty config serves no local zones)."""
        missing = os.path.join(os.path.abspath(self.mktemp()), "nope")
        self.assertEqual(zones.scan_zone_directory(missing, [], missing_ok=True), ({}, {}, []))


ORIGIN = name("example.com")


def rrset(owner: str, rtype: int, *rdatas: bytes, ttl: int = 300) -> wire.RRset:
    """A test RRset."""
    return wire.make_rrset(name(owner), rtype, ttl, list(rdatas))


def zone_of(*rrsets: wire.RRset) -> zones.Zone:
    """A Zone built from RRsets (same path as records.json zones)."""
    rows = [(r.name, r.rtype, r.ttl, b"".join(parts)) for r in rrsets for parts in r.rdatas]
    return zones.zone_from_records(ORIGIN, rows, ("test",))


SOA = rrset("example.com", wire.SOA, name("ns.example.com") + name("h.example.com") + struct.pack("!5I", 1, 2, 3, 4, 5))
NS = rrset("example.com", wire.NS, name("ns.example.com"))


class OverlayTests(unittest.SynchronousTestCase):
    """make_view: what one line sees of base + overlay."""

    def setUp(self) -> None:
        self.base = zone_of(SOA, NS,
                            rrset("www.example.com", wire.A, ipv4("192.0.2.1")),
                            rrset("www.example.com", wire.AAAA, b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"),
                            rrset("alias.example.com", wire.CNAME, name("www.example.com")),
                            rrset("mail.example.com", wire.MX, b"\x00\x0a" + name("www.example.com")))
        self.overlay = zone_of(rrset("www.example.com", wire.A, ipv4("10.0.0.1")),
                               rrset("alias.example.com", wire.A, ipv4("10.0.0.2")),
                               rrset("mail.example.com", wire.CNAME, name("www.example.com")),
                               rrset("a.b.secret.example.com", wire.TXT, b"\x02hi"))
        self.view = zones.make_view(self.base, self.overlay)
        self.plain = zones.make_view(self.base, None)

    def test_overlay_rrset_wins_per_type(self) -> None:
        """The overlay's A replaces the base's; the base's AAAA at the same name stays."""
        www = node(self.view, "www.example.com")
        self.assertEqual(b"".join(www[wire.A].rdatas[0]), ipv4("10.0.0.1"))
        self.assertIn(wire.AAAA, www)
        self.assertEqual(len(www[wire.A].rdatas), 1)

    def test_base_unchanged_for_others(self) -> None:
        """The base view still has the base data."""
        www = node(self.plain, "www.example.com")
        self.assertEqual(b"".join(www[wire.A].rdatas[0]), ipv4("192.0.2.1"))
        self.assertIn(wire.CNAME, node(self.plain, "alias.example.com"))

    def test_overlay_cname_takes_the_name(self) -> None:
        """A CNAME in the overlay replaces every base type at that name."""
        self.assertEqual(set(node(self.view, "mail.example.com")), {wire.CNAME})

    def test_overlay_data_replaces_base_cname(self) -> None:
        """Overlay data at a name that is a CNAME in the base replaces the CNAME (never both)."""
        self.assertEqual(set(node(self.view, "alias.example.com")), {wire.A})

    def test_overlay_only_names_exist_only_in_that_view(self) -> None:
        """A name only the overlay has exists (with its empty non-terminals) only in that view."""
        for text in ("a.b.secret.example.com", "b.secret.example.com", "secret.example.com"):
            self.assertTrue(self.view.exists(name(text)), text)
            self.assertFalse(self.plain.exists(name(text)), text)
        self.assertIsNotNone(self.view.node(name("a.b.secret.example.com")))
        self.assertIsNone(self.plain.node(name("a.b.secret.example.com")))
        self.assertIsNone(self.view.node(name("b.secret.example.com")))

    def test_base_names_still_exist(self) -> None:
        """Names of the base exist in the line view too."""
        self.assertTrue(self.view.exists(name("alias.example.com")))
        self.assertFalse(self.view.exists(name("nowhere.example.com")))

    def test_soa_from_base(self) -> None:
        """A view whose overlay has no SOA uses the base zone's SOA."""
        self.assertEqual(self.view.soa, SOA)
        self.assertEqual(self.view.origin, ORIGIN)

    def test_merge_nodes_rules(self) -> None:
        """merge_nodes: per-type union without CNAMEs; the overlay alone when either side has one."""
        a = {wire.A: rrset("x.example.com", wire.A, ipv4("1.1.1.1"))}
        txt = {wire.TXT: rrset("x.example.com", wire.TXT, b"\x01t")}
        cname = {wire.CNAME: rrset("x.example.com", wire.CNAME, name("y.example.com"))}
        self.assertEqual(set(zones.merge_nodes(a, txt)), {wire.A, wire.TXT})
        self.assertEqual(set(zones.merge_nodes(None, txt)), {wire.TXT})
        self.assertEqual(set(zones.merge_nodes(cname, txt)), {wire.TXT})
        self.assertEqual(set(zones.merge_nodes(a, cname)), {wire.CNAME})


class ZoneFromRecordsTests(unittest.SynchronousTestCase):
    """zone_from_records: rows grouped into RRsets."""

    def test_first_ttl_wins_and_duplicates_dropped(self) -> None:
        """Rows of one RRset share the first row's TTL (RFC 2181 §5.2); duplicates are dropped."""
        www = name("www.example.com")
        zone = zones.zone_from_records(ORIGIN, [(www, wire.A, 60, ipv4("192.0.2.1")),
                                                (www, wire.A, 90, ipv4("192.0.2.2")),
                                                (www, wire.A, 30, ipv4("192.0.2.1"))], ())
        a = zone.nodes[www][wire.A]
        self.assertEqual(a.ttl, 60)
        self.assertEqual([b"".join(p) for p in a.rdatas], [ipv4("192.0.2.1"), ipv4("192.0.2.2")])
