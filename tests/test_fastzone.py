"""Tests for smartdns.fastzone: the fast zone reader gives exactly the dnspython path's Zone.

Each differential test writes a zone file and loads it twice: with ``fastzone.read_zone_fast``
and with ``zones.read_zone_file`` forced onto dnspython.  The two Zones must be equal (nodes,
RRsets with their owner spelling and TTL, byte-identical RDATA, names, sources).  Constructs the
fast reader does not reproduce must be declined, and ``read_zone_file`` must then give the
dnspython result, problems and lines included.  Speed is shown by ``bench/zone_load.py``, never
asserted here.
"""

from __future__ import annotations

import gc
import os
import random
import textwrap
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from twisted.trial.unittest import TestCase

from smartdns import fastzone, zones
from smartdns.errors import Problem

ORIGIN = "example.com."

HEADER = """\
$TTL 3600
@ IN SOA ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300
@ IN NS ns1
ns1 IN A 192.0.2.53
"""

#: Forms the fast reader must accept, by what they exercise (each follows HEADER).
ACCEPTED: dict[str, str] = {
    "owners": """\
        www.example.com.  A 192.0.2.1
        www               A 192.0.2.2
        @                 TXT "apex"
                          TXT "blank owner: still the apex"
        a.b.c             A 192.0.2.3
                          AAAA 2001:db8::3
        *.wild            A 192.0.2.4
        _dmarc            TXT "v=DMARC1; p=none"
        host-1_x          A 192.0.2.5
        Mixed.Case        A 192.0.2.6
        mixed.case        A 192.0.2.7
        MIXED.CASE.example.com. A 192.0.2.8
        """,
    "ttls": """\
        t1 300 IN A 192.0.2.1
        t2 IN 300 A 192.0.2.2
        t3 1h30m A 192.0.2.3
        t4 1W IN A 192.0.2.4
        t5 2d3h4m5s A 192.0.2.5
        t6 10M A 192.0.2.6
        t7 A 192.0.2.7
        $TTL 60
        t8 A 192.0.2.8
        $ttl 1D
        t9 A 192.0.2.9
        t10 0 A 192.0.2.10
        t11 4294967295 A 192.0.2.11
        rr 100 A 192.0.2.12
        rr 200 A 192.0.2.13
        rr A 192.0.2.14
        """,
    "class and type spelling": """\
        lc1 in a 192.0.2.1
        lc2 300 in txt "lower"
        lc3 Mx 10 mail
        lc4 IN aaaa ::1
        lc5 srv 1 2 3 target
        lc6 TYPE1 192.0.2.6
        lc7 IN TYPE16 "txt by number"
        """,
    "txt": r"""
        t1 TXT "hello world"
        t2 TXT "a;b" "semi;colons; everywhere"
        t3 TXT "quote \" inside" "back\\slash" "\059\032\255\000"
        t4 TXT "several" "strings" "in" "one"
        t5 TXT plain words unquoted
        t6 TXT ""
        t7 TXT "tab	inside" "(paren) inside"
        t8 TXT "a""b" "c"d
        t9 TXT "x"  ; trailing comment with "quotes" and (parens)
        t10 TXT "01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123"
        t11 TXT unquoted\032escape \"q\"
        t12 TXT "same"
        t12 TXT "same"
        t12 TXT "SAME"
        """,
    "aaaa": """\
        v1 AAAA ::1
        v2 AAAA ::
        v3 AAAA 2001:DB8::1
        v4 AAAA 2001:0db8:0000:0000:0000:0000:0000:0002
        v5 AAAA 2001:db8:0:0:1::
        v6 AAAA ::ffff:192.0.2.1
        v7 AAAA 64:ff9b::192.0.2.33
        v8 AAAA fe80::1:2:3:4:5
        v9 AAAA 1:2:3:4:5:6:7:8
        v9 AAAA 0001:0002:0003:0004:0005:0006:0007:0008
        """,
    "names in rdata": """\
        mx1 MX 10 mail
        mx1 MX 20 Mail2.Example.COM.
        mx1 MX 30 @
        null MX 0 .
        ns2 NS ns.other.net.
        ns2 NS NS.OTHER.NET.
        ns2 NS ns.Other.net.
        ns2 NS ns.b
        cname CNAME Target.Example.com.
        rel CNAME sub.target
        _sip._tcp SRV 10 60 5060 sip.example.com.
                  SRV 20 0 5061 sip2
        _x._udp SRV 0 0 0 .
        ptr PTR host.example.net.
        soa-like TXT "@ is only special alone"
        """,
    "origin changes": """\
        $ORIGIN sub.example.com.
        x A 192.0.2.1
        @ TXT "at sub"
          TXT "still sub"
        $ORIGIN deeper
        y A 192.0.2.2
        z MX 5 x
        $ORIGIN Example.COM.
        back A 192.0.2.3
        $ORIGIN other.org.
        skipped A 192.0.2.4
        www.example.com. A 192.0.2.5
                         A 192.0.2.6
        $ORIGIN example.com.
        last CNAME www
        """,
    "out-of-zone records": """\
        a 100 A 192.0.2.1
        other.org. 999 A 1.1.1.1
                   A 1.1.1.2
                   BOGUS but skipped
        example.org. TXT "skipped"
        com. NS a.gtld-servers.net.
        b A 192.0.2.2
        """,
    "duplicates and singletons": """\
        dup A 192.0.2.1
        dup A 192.0.2.1
        dup 60 A 192.0.2.2
        c CNAME one
        c 100 CNAME Two
        c CNAME two
        spelled A 192.0.2.3
        SPELLED TXT "first spelling wins"
        """,
    "parentheses": """\
        multi TXT ( "one"
                    "two" ) ; end
        dkim._domainkey TXT "v=DKIM1; k=rsa; " (
            "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC" ; part 1
            "AB12" )
        srvp SRV ( 1 2
                   3 target )
        inline A (192.0.2.9)
        """,
    "types dnspython parses": r"""
        caa CAA 0 issue "letsencrypt.org"
        caa CAA 128 iodef "mailto:security@example.com"
        sshfp SSHFP 1 1 123456789abcdef67890123456789abcdef67890
        _443._tcp TLSA 3 1 1 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
        child DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
        child NS ns.child
        hinfo HINFO "PC" "Linux"
        naptr NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp.example.com.
        https HTTPS 1 . alpn=h2,h3 port=443
        svcb SVCB 0 svc.example.net.
        spf SPF "v=spf1 -all"
        uri URI 10 1 "https://example.com/"
        gen TYPE65534 \# 4 0a000001
        agen A \# 4 c0000201
        tgen TXT \# 3 026869
        tgen2 TXT "\#" 3
        esc CNAME foo\.bar
        escmx MX 10 a\032b
        escsrv SRV 1 1 1 t\@x
        loc LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m
        rp RP admin.example.com. txt.example.com.
        """,
    "comments and whitespace": """\
        ; a comment line
        ;; another ; with ; semicolons

        \t
        c1\tA\t192.0.2.1\t; tab separated
        c2    IN    A    192.0.2.2;no space before comment
           ; indented comment
        c3 A 192.0.2.3 ; comment with "quotes", (parens) and \\ backslash
        c4 A 192.0.2.4 ; café, naïve: non-ASCII in a comment
        """,
}


def _dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


class FastZoneMixin:
    """Write zone text, load it both ways, compare."""

    def write(self: Any, text: str, name: str = "example.com.zone",
              directory: str | None = None) -> str:
        """``text`` written to a fresh file (bytes as given: line endings are part of a test)."""
        directory = directory or os.path.abspath(self.mktemp())
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        return path

    def slow(self, path: str, origin: str = ORIGIN, **kwargs: Any) -> tuple[Any, list[Problem]]:
        """``zones.read_zone_file`` on its dnspython path only."""
        with dnspython_only():
            return zones.read_zone_file(path, origin, **kwargs)

    def assert_same(self: Any, text: str, origin: str = ORIGIN, **kwargs: Any) -> zones.Zone:
        """The fast reader accepts ``text`` and builds exactly the dnspython path's Zone."""
        path = self.write(text)
        fast = fastzone.read_zone_fast(path, origin, **kwargs)
        self.assertIsNone(fastzone.decline_reason(path, origin, **kwargs))
        slow, problems = self.slow(path, origin, **kwargs)
        self.assertEqual(problems, [])
        assert fast is not None and slow is not None
        self.assertEqual(set(fast.nodes), set(slow.nodes))
        for key in slow.nodes:
            self.assertEqual(fast.nodes[key], slow.nodes[key], key)
        self.assertEqual(fast, slow)
        self.assertEqual(zones.read_zone_file(path, origin, **kwargs), (fast, []))
        return fast

    def assert_declined(self: Any, text: str, reason: str, origin: str = ORIGIN,
                        path: str | None = None, **kwargs: Any) -> tuple[Any, list[Problem]]:
        """The fast reader declines ``text`` for ``reason`` and ``read_zone_file`` gives the
        dnspython path's result."""
        path = path or self.write(text)
        found = fastzone.decline_reason(path, origin, **kwargs)
        self.assertIsNotNone(found)
        self.assertIn(reason, found)
        self.assertIsNone(fastzone.read_zone_fast(path, origin, **kwargs))
        result = zones.read_zone_file(path, origin, **kwargs)
        self.assertEqual(result, self.slow(path, origin, **kwargs))
        return result


@contextmanager
def dnspython_only() -> Iterator[None]:
    """Make ``zones.read_zone_file`` skip the fast reader."""
    original = fastzone.read_zone_fast
    fastzone.read_zone_fast = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        fastzone.read_zone_fast = original  # type: ignore[assignment]


class DifferentialTests(FastZoneMixin, TestCase):
    """Accepted forms give the dnspython path's Zone, byte for byte."""

    def check(self, case: str) -> None:
        self.assert_same(HEADER + _dedent(ACCEPTED[case]))

    def test_owners(self) -> None:
        """Absolute, relative, @, blank, wildcard and mixed-case owners; first spelling kept."""
        self.check("owners")

    def test_ttls(self) -> None:
        """TTL numbers and units, before or after IN, $TTL changes; an RRset keeps its first TTL."""
        self.check("ttls")

    def test_class_and_type_spelling(self) -> None:
        """Class and type mnemonics in any case, and TYPEnn for a known type."""
        self.check("class and type spelling")

    def test_txt(self) -> None:
        """TXT strings with spaces, semicolons, escapes, several strings, unquoted words, ""."""
        self.check("txt")

    def test_aaaa(self) -> None:
        """AAAA in compressed, full, upper-case and IPv4-embedded forms."""
        self.check("aaaa")

    def test_names_in_rdata(self) -> None:
        """MX, NS, CNAME, SRV and PTR targets: relative, absolute, @, root; case kept; duplicates
        compared case-insensitively."""
        self.check("names in rdata")

    def test_origin_changes(self) -> None:
        """$ORIGIN absolute and relative mid-file, out of the zone and back; blank owners keep
        the last owner across $ORIGIN."""
        self.check("origin changes")

    def test_out_of_zone_records(self) -> None:
        """Records outside the zone are skipped with their blank-owner followers, unparsed."""
        self.check("out-of-zone records")

    def test_plain_address_lines(self) -> None:
        """The short path for ``owner [IN] A address`` lines agrees with dnspython around its
        edges: case in owners, a label of 63 octets, lowercase keywords and dotted owners (the
        general path), a TTL from the SOA before any $TTL, an $ORIGIN outside the zone."""
        long_label = "x" * 63
        self.assert_same(HEADER + _dedent(f"""\
            a IN A 192.0.2.1
            B A 192.0.2.2
            b A 192.0.2.3
            c in a 192.0.2.4
            d.e IN A 192.0.2.5
            {long_label} A 192.0.2.6
            f IN A 192.0.2.7
            f A 192.0.2.7
            $ORIGIN other.org.
            g A 192.0.2.8
            $ORIGIN example.com.
            h A 192.0.2.9
            """))
        self.assert_same(_dedent("""\
            @ 300 IN SOA ns1 hostmaster 1 7200 3600 1209600 60
            @ IN NS ns1
            a IN A 192.0.2.1
            b A 192.0.2.2
            """))
        self.assert_declined(HEADER + "x" * 64 + " A 192.0.2.1\n", "long label")
        self.assert_declined(HEADER + "a IN A 192.0.2.256\n", "IPv4")

    def test_duplicates_and_singletons(self) -> None:
        """Duplicate RDATA kept once; the last CNAME wins with the first TTL."""
        self.check("duplicates and singletons")

    def test_parentheses(self) -> None:
        """Records continued over lines in parentheses, with comments inside."""
        self.check("parentheses")

    def test_types_dnspython_parses(self) -> None:
        """Other ordinary types, generic \\# syntax and escaped names go through dnspython's rdata
        parser on the rest of the line."""
        self.check("types dnspython parses")

    def test_comments_and_whitespace(self) -> None:
        """Comment lines, trailing comments (any characters), tabs, blank and space-only lines."""
        self.check("comments and whitespace")

    def test_line_endings(self) -> None:
        """CRLF and CR line endings and a last line without a newline read like LF."""
        text = HEADER + _dedent(ACCEPTED["owners"])
        self.assert_same(text.replace("\n", "\r\n"))
        self.assert_same(text.replace("\n", "\r"))
        self.assert_same(text.rstrip("\n"))

    def test_multiline_soa(self) -> None:
        """The usual SOA over several lines with a comment per timer, timers with units."""
        self.assert_same(_dedent("""\
            $TTL 1h
            @   IN  SOA ns1.example.com. hostmaster.example.com. (
                    2024010101 ; serial
                    3h         ; refresh
                    1H30m      ; retry
                    2W         ; expire
                    300 )      ; minimum
                IN  NS  ns1
            ns1     A   192.0.2.53
            """))

    def test_ttl_without_ttl_directive(self) -> None:
        """Without $TTL: the SOA gives its MINIMUM as default, the last explicit TTL wins over it
        (RFC 2308 §4 as dnspython reads it), and a later $TTL takes over."""
        self.assert_same(_dedent("""\
            @ 7200 IN SOA ns1 hostmaster 1 2 3 4 600
              NS ns1
            ns1 A 192.0.2.53
            a 100 A 192.0.2.1
            b A 192.0.2.2
            $TTL 50
            c A 192.0.2.3
            """))
        self.assert_same(_dedent("""\
            @ IN SOA ns1 hostmaster 1 2 3 4 600
              NS ns1
            ns1 A 192.0.2.53
            """))

    def test_reverse_zone(self) -> None:
        """A reverse zone of PTRs with numeric relative owners."""
        self.assert_same(_dedent("""\
            $TTL 1d
            @ SOA ns1.example.com. hostmaster.example.com. 1 2 3 4 5
              NS ns1.example.com.
            1 PTR one.example.com.
            2 PTR Two.Example.com.
            255 PTR broadcast.example.com.
            """), origin="2.0.192.in-addr.arpa.")

    def test_overlay(self) -> None:
        """An overlay needs no SOA or NS and takes the caller's default TTL before any $TTL."""
        fast = self.assert_same("www A 10.0.0.1\nvpn 30 A 10.0.0.2\nx CNAME www\n",
                                overlay=True, default_ttl=120)
        self.assertEqual(fast.nodes[b"\x03www\x07example\x03com\x00"][1].ttl, 120)
        self.assert_same("", overlay=True)

    def test_root_origin(self) -> None:
        """The root zone's origin (file root.zone) works like any other."""
        self.assert_same(_dedent("""\
            $TTL 1d
            . SOA a.root-servers.net. nstld.verisign-grs.com. 1 2 3 4 5
            . NS a.root-servers.net.
            com. NS a.gtld-servers.net.
            a.root-servers.net. A 198.41.0.4
            """), origin=".")


class FallbackTests(FastZoneMixin, TestCase):
    """What the fast reader does not reproduce goes to dnspython, with dnspython's result."""

    def test_include(self) -> None:
        """$INCLUDE is left to dnspython (relative names, origin argument, sources)."""
        directory = self.mktemp()
        self.write("extra A 192.0.2.9\n", name="extra.records", directory=directory)
        path = self.write(HEADER + "$INCLUDE extra.records\n", directory=directory)
        zone, problems = self.assert_declined("", "$INCLUDE", path=path)
        self.assertEqual(problems, [])
        self.assertEqual(len(zone.sources), 2)

    def test_directives(self) -> None:
        """$GENERATE, $UNICODE and unknown directives are declined."""
        self.assert_declined(HEADER + "$GENERATE 1-3 h$ A 192.0.2.$\n", "$GENERATE")
        self.assert_declined(HEADER + "$UNICODE 2008\n", "$UNICODE")
        self.assert_declined(HEADER + "$FOO bar\n", "$FOO")
        self.assert_declined(HEADER + "$TTL 1h extra\n", "directive form")

    def test_classes(self) -> None:
        """Any class spelling but a plain IN is declined (CH is an error, CLASS1 is IN)."""
        self.assert_declined(HEADER + "x CH TXT \"chaos\"\n", "class")
        self.assert_declined(HEADER + "x CLASS1 A 192.0.2.1\n", "class")

    def test_special_types(self) -> None:
        """Types with node or rdataset rules of their own are declined."""
        self.assert_declined(HEADER + "d DNAME example.net.\n", "type DNAME")
        self.assert_declined(
            HEADER + "n NSEC next.example.com. A RRSIG\n", "type NSEC")
        self.assert_declined(
            HEADER + "s RRSIG A 13 3 3600 20300101000000 20200101000000 12345 example.com. "
            "AAAA\n", "type RRSIG")

    def test_owner_forms(self) -> None:
        """Escaped, quoted and non-ASCII owners are declined."""
        self.assert_declined(HEADER + "a\\.b A 192.0.2.1\n", "owner")
        self.assert_declined(HEADER + "\"q\" A 192.0.2.1\n", "owner")
        self.assert_declined(HEADER + "bücher A 192.0.2.1\n", "non-ASCII")

    def test_parenthesis_before_type(self) -> None:
        """Parentheses must come after the type to be read here."""
        self.assert_declined(HEADER + "x ( IN A ) 192.0.2.1\n", "parenthesis")
        self.assert_declined(HEADER + "(x) A 192.0.2.1\n", "parenthesis")

    def test_unknown_type(self) -> None:
        """An unknown type mnemonic is dnspython's error."""
        _, problems = self.assert_declined(HEADER + "x FOO bar\n", "type FOO")
        self.assertEqual([p.line for p in problems], [5])

    def test_errors_are_dnspython_s(self) -> None:
        """Bad data of every kind is declined and reported by dnspython at its line."""
        cases = [
            ("x A 192.0.2.256\n", "bad IPv4"),
            ("x A 192.0.2.01\n", "bad IPv4"),
            ("x A 192.0.2.1 extra\n", "one address"),
            ("x AAAA 2001:db8::1::2\n", "IPv6"),
            ("x MX 65536 mail\n", "out of range"),
            ("x TXT \"unterminated\n", "unsupported token"),
            ("x TXT \"" + "a" * 256 + "\"\n", "too long"),
            ("x TXT \"\\256\"\n", "escape"),
            ("a..b A 192.0.2.1\n", "label"),
            ("x SOA ns1 host 1 2 3 4 5\n", "SOA away"),
            ("x SRV 1 2 mail\n", "SRV"),
            ("x A ( 192.0.2.1\n", "unbalanced"),
            ("x A 192.0.2.1 )\n", "unbalanced"),
            ("x CAA 0 issue\n", "rdata"),
            (" A\n", "one address"),
            ("x 99999999999 A 192.0.2.1\n", "TTL"),
        ]
        for body, reason in cases:
            _, problems = self.assert_declined(HEADER + body, reason)
            self.assertEqual(len(problems), 1, body)
            self.assertEqual(problems[0].line, 5, body)

    def test_missing_ttl(self) -> None:
        """A record before any TTL is known is dnspython's error."""
        _, problems = self.assert_declined("x A 192.0.2.1\n", "missing TTL")
        self.assertEqual([p.line for p in problems], [1])


class ProblemLineTests(FastZoneMixin, TestCase):
    """The problems ``read_zone_file`` reports for files the fast reader declines."""

    def test_bad_a_record(self) -> None:
        """A bad address is reported at its own line."""
        path = self.write(HEADER + "ok A 192.0.2.1\n\n; comment\nbad A 10.0.0.256\nlater A 192.0.2.2\n")
        self.assertIsNone(fastzone.read_zone_fast(path, ORIGIN))
        zone, problems = zones.read_zone_file(path, ORIGIN)
        self.assertIsNone(zone)
        self.assertEqual([(p.path, p.line) for p in problems], [(path, 8)])

    def test_cname_and_other_data(self) -> None:
        """CNAME beside other data is reported at the record that makes the clash."""
        for body, line in [("x CNAME ns1\nx A 192.0.2.1\n", 6),
                           ("x A 192.0.2.1\n\nx CNAME ns1\n", 7),
                           ("x CNAME ns1\n  TXT \"blank owner\"\n", 6)]:
            path = self.write(HEADER + body)
            self.assertIn("CNAME and other data", fastzone.decline_reason(path, ORIGIN) or "")
            self.assertEqual(zones.read_zone_file(path, ORIGIN),
                             (None, [Problem(path, line, "CNAME and other data at the same name")]))

    def test_cname_and_other_data_in_overlay(self) -> None:
        """Overlays are checked for CNAME beside other data too."""
        path = self.write("x CNAME www\nx A 192.0.2.1\n")
        self.assertEqual(zones.read_zone_file(path, ORIGIN, overlay=True, default_ttl=60),
                         (None, [Problem(path, 2, "CNAME and other data at the same name")]))

    def test_missing_soa_and_ns(self) -> None:
        """A base zone without SOA or NS at its origin is rejected; an overlay is not."""
        path = self.write("$TTL 60\n@ NS ns1\nns1 A 192.0.2.1\n")
        self.assertEqual(zones.read_zone_file(path, ORIGIN), (None, [
            Problem(path, 0, "zone example.com. has no SOA record at its origin")]))
        path = self.write("$TTL 60\n@ SOA ns1 host 1 2 3 4 5\nns1 A 192.0.2.1\n")
        self.assertEqual(zones.read_zone_file(path, ORIGIN), (None, [
            Problem(path, 0, "zone example.com. has no NS records at its origin")]))
        path = self.write("$TTL 60\nns1 A 192.0.2.1\n")
        self.assertEqual(len(zones.read_zone_file(path, ORIGIN)[1]), 2)
        zone, problems = zones.read_zone_file(path, ORIGIN, overlay=True)
        self.assertEqual(problems, [])
        self.assertIsNotNone(zone)

    def test_unreadable(self) -> None:
        """A missing file or one that is not UTF-8 is declined and reported by the slow path."""
        missing = os.path.join(os.path.abspath(self.mktemp()), "nope.zone")
        self.assertIsNone(fastzone.read_zone_fast(missing, ORIGIN))
        self.assertEqual(zones.read_zone_file(missing, ORIGIN)[1][0].path, missing)
        path = self.write("")
        with open(path, "wb") as handle:
            handle.write(HEADER.encode() + b"x TXT \"\xff\"\n")
        self.assert_declined("", "cannot read", path=path)


class WiringTests(FastZoneMixin, TestCase):
    """``read_zone_file`` uses the fast reader first."""

    def test_fast_result_used(self) -> None:
        """When the fast reader returns a zone, read_zone_file returns it without problems."""
        sentinel = zones.Zone(b"\x00", {}, frozenset({b"\x00"}))
        self.patch(fastzone, "read_zone_fast", lambda *args, **kwargs: sentinel)
        self.assertEqual(zones.read_zone_file("/nonexistent", ORIGIN), (sentinel, []))

    def test_collector_restored(self) -> None:
        """The garbage collector is paused only during a load, and left off if it was off."""
        path = self.write(HEADER)
        self.assertTrue(gc.isenabled())
        fastzone.read_zone_fast(path, ORIGIN)
        self.assertTrue(gc.isenabled())
        gc.disable()
        try:
            fastzone.read_zone_fast(path, ORIGIN)
            self.assertFalse(gc.isenabled())
        finally:
            gc.enable()

    def test_large_zones_frozen(self) -> None:
        """Before the reactor runs, a zone file of FREEZE_MIN_BYTES or more is moved out of the
        collector's sight once loaded (the next collection would otherwise walk all of it),
        after garbage is collected (a freeze would keep it forever); a smaller one is left alone."""
        path = self.write(HEADER + "".join(f"h{i} A 192.0.2.{i}\n" for i in range(10)))
        self.addCleanup(gc.unfreeze)
        before = gc.get_freeze_count()
        self.assertIsNotNone(fastzone.read_zone_fast(path, ORIGIN))
        self.assertEqual(gc.get_freeze_count(), before)
        self.patch(fastzone, "FREEZE_MIN_BYTES", os.path.getsize(path))
        self.patch(fastzone, "_may_freeze", lambda: True)
        cycle = _Cycle()
        cycle.me = cycle                  # garbage once the name goes, freed only by the collector
        gone = weakref.ref(cycle)
        del cycle
        thresholds = gc.get_threshold()
        gc.set_threshold(10**9)           # no collection but the loader's own
        try:
            zone = fastzone.read_zone_fast(path, ORIGIN)
        finally:
            gc.set_threshold(*thresholds)
        assert zone is not None
        self.assertGreater(gc.get_freeze_count(), before)
        self.assertFalse(any(found is zone.nodes for found in gc.get_objects()))   # not in any generation
        self.assertIsNone(gone())         # collected before the freeze, not kept forever


class _Reactor:
    """Stands in for the global reactor in sys.modules."""

    def __init__(self, running: bool) -> None:
        self.running = running


class MayFreezeTests(TestCase):
    """Zones are frozen only while no reactor runs."""

    def test_only_before_the_reactor_runs(self) -> None:
        """No global reactor, or one not running yet: freeze; a running one: never."""
        import sys
        for module, expected in ((None, True), (_Reactor(False), True), (_Reactor(True), False)):
            self.patch(sys, "modules", {**sys.modules, "twisted.internet.reactor": module})
            if module is None:
                del sys.modules["twisted.internet.reactor"]
            self.assertEqual(fastzone._may_freeze(), expected)


class _Cycle:
    """An object that can be part of a reference cycle and be watched with a weak reference."""

    me: Any = None


def random_zone(rng: random.Random, records: int) -> str:
    """A valid zone mixing the forms the fast reader handles, for path-vs-path comparison."""
    lines = ["$TTL 3600" if rng.random() < 0.8 else "",
             "@ IN SOA ns1 hostmaster ( 1 7200 3600 1209600 300 )", "  NS ns1", "ns1 A 192.0.2.53"]
    owners: list[str] = ["ns1"]
    cnames: set[str] = set()
    data: set[str] = {"ns1.example.com."}
    origin = ""

    def owner() -> str:
        roll = rng.random()
        if roll < 0.3 and owners:
            name = rng.choice(owners)
        else:
            name = rng.choice(["h", "www", "mail", "_srv._tcp", "*.w", "a.b"]) + str(rng.randrange(60))
            owners.append(name)
        spelled = "".join(c.upper() if rng.random() < 0.2 else c for c in name)
        if rng.random() < 0.2:
            return spelled + "." + (origin or "example.com.")
        return spelled

    def ttl_class() -> str:
        return rng.choice(["", "", "300 ", "1h ", "2d3h ", "0 ", "IN ", "in ", "IN 60 ",
                           "60 IN ", "1W in "])

    def rdata(rtype: str) -> str:
        target = rng.choice(["ns1", "mail.example.net.", "@", "Www", "x.y"])
        return {
            "A": lambda: ".".join(str(rng.randrange(256)) for _ in range(4)),
            "AAAA": lambda: rng.choice(["2001:db8::", "::ffff:", "fe80::1:"]) + format(rng.randrange(65536), "x"),
            "MX": lambda: f"{rng.randrange(100)} {target}",
            "NS": lambda: target,
            "PTR": lambda: target,
            "SRV": lambda: f"{rng.randrange(10)} {rng.randrange(10)} {rng.randrange(65536)} {target}",
            "TXT": lambda: " ".join(rng.choice(['"a b"', '"x;y"', 'word', '"q\\"q"', '"\\065"', '""'])
                                    for _ in range(rng.randrange(1, 4))),
            "CAA": lambda: '0 issue "ca.example"',
        }[rtype]()

    for _ in range(records):
        roll = rng.random()
        if roll < 0.03:
            lines.append(f"$TTL {rng.choice(['60', '1h', '1d'])}")
            continue
        if roll < 0.05:
            origin = rng.choice(["sub.example.com.", "example.com.", "z.Example.COM."])
            lines.append(f"$ORIGIN {origin}")
            continue
        if roll < 0.07:
            lines.append(rng.choice(["; comment", "", "   ", "outside.org. A 10.0.0.1"]))
            continue
        name = owner()
        key = (name if name.endswith(".") else name + "." + (origin or "example.com.")).lower()
        rtype = rng.choice(["A", "A", "A", "AAAA", "MX", "TXT", "SRV", "PTR", "NS", "CAA", "CNAME"])
        if rtype == "CNAME":
            if key in data:
                rtype = "A"
            else:
                cnames.add(key)
                lines.append(f"{name} {ttl_class()}CNAME {rng.choice(['ns1', 'www.example.net.'])}")
                continue
        if key in cnames:
            continue
        data.add(key)
        if rtype == "TXT" and rng.random() < 0.2:
            lines.append(f"{name} {ttl_class()}TXT ( {rdata(rtype)}\n    {rdata(rtype)} ) ; split")
        else:
            lines.append(f"{name} {ttl_class()}{rtype} {rdata(rtype)}")
        if rng.random() < 0.15:
            lines.append(f"    {ttl_class()}{rtype} {rdata(rtype)}")
    return "\n".join(lines) + "\n"


class RandomizedTests(FastZoneMixin, TestCase):
    """Seeded random zones: the fast reader and dnspython agree."""

    def test_random_zones(self) -> None:
        """Forty seeded random zones of simple forms load identically both ways."""
        for seed in range(40):
            self.assert_same(random_zone(random.Random(seed), 150))

    def test_small_reads(self) -> None:
        """Files read a few characters at a time (so lines, and records in parentheses, are
        split across reads) load exactly as when read whole."""
        for size in (1, 7, 64):
            self.patch(fastzone, "CHUNK_CHARS", size)
            for name in ACCEPTED:
                self.assert_same(HEADER + _dedent(ACCEPTED[name]))
            for seed in range(5):
                self.assert_same(random_zone(random.Random(seed), 150))


#: Fragments spliced into zones by the mutation test: delimiters, escapes, directives, types
#: with special rules, numbers at their limits, names in and out of the zone.
MUTATIONS = [
    " ", "\t", "\n", ";", '"', "(", ")", "\\", ".", "@", "$", "*", "0", "9", "a", "Z", ":", "\r",
    "\\#", " \\# 3 026869 ", " TYPE1 ", " TYPE16 ", " CLASS1 ", " CH ", " ANY ", " 4294967296 ",
    " 01 ", "\\0", "\\255", "\\256", "\\.", "\\ ", " DNAME ", " NSEC ", " CAA ", " HTTPS ",
    "$INCLUDE ", "$GENERATE ", " @ ", " ( ", " ) ", '""', " ; ", '\\"', " 65535 ", " 65536 ",
    " 1w2d ", " 1h30 ", " MX ", " SRV ", " PTR ", " AAAA ", " CNAME ", " NS ", " SOA ", " IN ",
    " ::ffff:1.2.3.4 ", " 1::2::3 ", " 10.0.0.1 ", " 010.0.0.1 ", " sub.example.com. ",
    " other.org. ", "\n$TTL 5\n", "\n$ORIGIN sub\n", "\n  ", "\x0b", "é", "x" * 64,
]


def mutate(rng: random.Random, text: str) -> str:
    """``text`` with one to three random edits."""
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        pos = rng.randrange(len(text) + 1)
        if roll < 0.15:
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines)), rng.choice(lines))
            text = "\n".join(lines)
        elif roll < 0.5:
            text = text[:pos] + rng.choice(MUTATIONS) + text[pos:]
        elif roll < 0.75:
            text = text[:pos] + text[pos + 1:]
        else:
            text = text[:pos] + rng.choice(MUTATIONS) + text[pos + 1:]
    return text


class MutationTests(FastZoneMixin, TestCase):
    """Damaged zones: the fast reader declines or agrees, never anything in between."""

    def test_mutated_zones_agree_or_decline(self) -> None:
        """Seeded random edits of valid zones: the fast reader either declines (and the slow
        path's result stands) or builds exactly dnspython's Zone, never a zone dnspython
        rejects or builds differently."""
        rng = random.Random(5)
        corpus = [HEADER + _dedent(text) for text in ACCEPTED.values()]
        accepted = 0
        for _ in range(300):
            base = rng.choice(corpus) if rng.random() < 0.5 else random_zone(rng, 30)
            text = mutate(rng, base)
            path = self.write(text)
            overlay = rng.random() < 0.2
            fast = fastzone.read_zone_fast(path, ORIGIN, overlay=overlay)
            slow = self.slow(path, ORIGIN, overlay=overlay)
            if fast is not None:
                accepted += 1
                self.assertEqual(slow, (fast, []), text)
        # Both outcomes must be exercised for the test to mean anything.
        self.assertGreater(accepted, 30)
        self.assertLess(accepted, 270)

    def test_mutated_zones_read_in_small_pieces(self) -> None:
        """The same with the file read 5 characters at a time: a decline, or dnspython's Zone."""
        self.patch(fastzone, "CHUNK_CHARS", 5)
        rng = random.Random(6)
        corpus = [HEADER + _dedent(text) for text in ACCEPTED.values()]
        accepted = 0
        for _ in range(100):
            text = mutate(rng, rng.choice(corpus) if rng.random() < 0.5 else random_zone(rng, 30))
            path = self.write(text)
            fast = fastzone.read_zone_fast(path, ORIGIN)
            if fast is not None:
                accepted += 1
                self.assertEqual(self.slow(path, ORIGIN), (fast, []), text)
        self.assertGreater(accepted, 10)
