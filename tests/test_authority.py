"""Unit tests for smartdns.authority: RFC 1034 §4.3.2 lookup over snapshots built from zone files.

Snapshots come from ``snapshot.build_snapshot`` over a config parsed by ``config.parse_config``
and zone files written from the strings below.  Names are compared in lowercase: case is not data.
"""
from __future__ import annotations

from twisted.trial import unittest

import dns.flags

from smartdns import wire
from smartdns.authority import Answer, Authority
from smartdns.snapshot import Snapshot
from tests.unit_support import decode, make_snapshot, name, rrset_texts, texts

CONFIG = """
[lines]
office = ["10.1.0.0/16"]
vpn = ["10.2.0.0/16"]
"""

# SOA TTL 3600, MINIMUM 300: negative answers carry the SOA with TTL 300.
EXAMPLE_COM = """
$TTL 3600
@          SOA   ns1 hostmaster 1 3600 600 86400 300
@          NS    ns1
@          NS    ns2.example.net.
ns1        A     192.0.2.1
ns1        AAAA  2001:db8::1
www        A     192.0.2.10
www        TXT   "hello"
a.b.c      A     192.0.2.11
*.wild     A     192.0.2.20
*.wild     MX    10 mx1
host.wild  A     192.0.2.21
*.wc       CNAME www
alias      CNAME alias2
alias2     CNAME www
loop1      CNAME loop2
loop2      CNAME loop1
out        CNAME www.elsewhere.test.
cross      CNAME www.example.org.
mail       MX    10 mx1
mail       MX    20 mx.elsewhere.test.
mx1        A     192.0.2.25
_sip._tcp  SRV   0 5 5060 sipserver
sipserver  A     192.0.2.26
sipserver  AAAA  2001:db8::26
dn         DNAME tgt.example.com.
www.tgt    A     192.0.2.30
sub        NS    ns.sub
sub        NS    ns.other.test.
sub        DS    12345 8 1 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE
ns.sub     A     192.0.2.53
MiXeD      A     192.0.2.40
""" + "".join(f"n{i} CNAME n{i + 1}\n" for i in range(1, 11)) + "n11 CNAME www\n" \
    + "".join(f"m{i} CNAME m{i + 1}\n" for i in range(1, 12)) + "m12 CNAME www\n"

# SOA TTL 120 below MINIMUM 3600: negative answers carry TTL 120.
EXAMPLE_ORG = """
$TTL 600
@    120 SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 3600
@    NS    ns1.example.com.
www  A     198.51.100.1
"""

OFFICE = """
a.x.wild   A     10.1.9.9
www        A     10.1.0.10
secret     A     10.1.0.99
*.wild     A     10.1.0.20
mx1        A     10.1.0.25
"""

VPN = """
www        CNAME vpn-gw
vpn-gw     A     10.2.0.1
"""

ZONES = {
    "example.com.zone": EXAMPLE_COM,
    "example.org.zone": EXAMPLE_ORG,
    "office/example.com.zone": OFFICE,
    "vpn/example.com.zone": VPN,
}


def sections(answer: Answer) -> tuple[list[str], list[str], list[str]]:
    """The three sections as sorted record strings."""
    return rrset_texts(answer.answer), rrset_texts(answer.authority), rrset_texts(answer.additional)


def soa_line(origin: str, ttl: int) -> str:
    """The record string of a zone's SOA with ``ttl``."""
    if origin == "example.com.":
        return f"example.com. {ttl} SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 300"
    return f"example.org. {ttl} SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 3600"


class AuthorityCase(unittest.SynchronousTestCase):
    """Shared snapshot and lookup helper."""

    snap: Snapshot

    def setUp(self) -> None:
        self.snap = make_snapshot(self, CONFIG, zones=ZONES)
        self.authority = Authority()

    def ask(self, qname: str, qtype: int = wire.A, line: str | None = None, rd: bool = True) -> Answer:
        """Look a name up as a client of ``line``; it must be in a local zone."""
        answer = self.authority.lookup(self.snap, line, name(qname), qtype, rd)
        assert answer is not None, f"{qname} is not local"
        return answer


class ExactAndNegativeTests(AuthorityCase):
    """Exact matches, NXDOMAIN and NODATA (RFC 1034 §4.3.2, RFC 2308)."""

    def test_exact_match(self) -> None:
        """An existing name and type is answered authoritatively with its RRset."""
        answer = self.ask("www.example.com")
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, True))
        self.assertEqual(sections(answer)[0], ["www.example.com. 3600 A 192.0.2.10"])
        self.assertEqual(sections(answer)[1], [])

    def test_query_case_does_not_matter(self) -> None:
        """A query spelled in mixed case finds the same data (RFC 4343)."""
        answer = self.ask("WwW.ExAmPlE.CoM")
        self.assertEqual(sections(answer)[0], ["www.example.com. 3600 A 192.0.2.10"])

    def test_owner_keeps_zone_file_case(self) -> None:
        """Owner names are served in the zone file's spelling, whatever the query's (README)."""
        answer = self.ask("mixed.example.com")
        self.assertEqual(answer.answer[0].name, name("MiXeD.example.com"))

    def test_no_recursion_desired_adds_ns(self) -> None:
        """Without RD a positive answer carries the zone's NS in authority (BIND's default)."""
        answer = self.ask("www.example.com", rd=False)
        self.assertEqual(sections(answer)[1], ["example.com. 3600 NS ns1.example.com.",
                                               "example.com. 3600 NS ns2.example.net."])

    def test_not_local(self) -> None:
        """A name outside every local zone gives None (forwarding decides)."""
        self.assertIsNone(self.authority.lookup(self.snap, None, name("www.example.net"), wire.A, True))
        self.assertIsNone(self.authority.lookup(self.snap, None, name("com"), wire.A, True))

    def test_nodata_soa_ttl_is_minimum(self) -> None:
        """NODATA: empty answer, NOERROR, SOA with TTL min(SOA TTL 3600, MINIMUM 300)."""
        answer = self.ask("www.example.com", wire.AAAA)
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, True))
        self.assertEqual(sections(answer), ([], [soa_line("example.com.", 300)], []))

    def test_nxdomain(self) -> None:
        """A missing name: NXDOMAIN with the SOA at TTL min(SOA TTL, MINIMUM)."""
        answer = self.ask("nope.example.com")
        self.assertEqual((answer.rcode, answer.aa), (wire.NXDOMAIN, True))
        self.assertEqual(sections(answer), ([], [soa_line("example.com.", 300)], []))

    def test_negative_ttl_when_soa_ttl_is_lower(self) -> None:
        """When the SOA's own TTL (120) is below MINIMUM (3600), the negative TTL is 120."""
        answer = self.ask("nope.example.org")
        self.assertEqual(answer.rcode, wire.NXDOMAIN)
        self.assertEqual(sections(answer)[1], [soa_line("example.org.", 120)])

    def test_empty_non_terminal_is_nodata(self) -> None:
        """A name with only descendants (b.c, c) exists: NODATA, not NXDOMAIN."""
        for qname in ("b.c.example.com", "c.example.com"):
            answer = self.ask(qname)
            self.assertEqual(answer.rcode, wire.NOERROR, qname)
            self.assertEqual(sections(answer), ([], [soa_line("example.com.", 300)], []), qname)

    def test_below_empty_non_terminal_is_nxdomain(self) -> None:
        """A missing name under an empty non-terminal is NXDOMAIN."""
        self.assertEqual(self.ask("x.b.c.example.com").rcode, wire.NXDOMAIN)

    def test_apex_soa(self) -> None:
        """The SOA itself is answered with its real TTL."""
        answer = self.ask("example.com", wire.SOA)
        self.assertEqual(sections(answer)[0], [soa_line("example.com.", 3600)])


class WildcardTests(AuthorityCase):
    """RFC 4592 wildcards."""

    def test_wildcard_match_owner_rewritten(self) -> None:
        """A name under *.wild gets the wildcard's data with the query name as owner."""
        answer = self.ask("foo.wild.example.com")
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, True))
        self.assertEqual(sections(answer)[0], ["foo.wild.example.com. 3600 A 192.0.2.20"])

    def test_wildcard_matches_several_labels(self) -> None:
        """The wildcard covers names several labels below its parent."""
        answer = self.ask("a.b.wild.example.com")
        self.assertEqual(sections(answer)[0], ["a.b.wild.example.com. 3600 A 192.0.2.20"])

    def test_wildcard_nodata(self) -> None:
        """A wildcard without the asked type gives NODATA with the SOA."""
        answer = self.ask("foo.wild.example.com", wire.AAAA)
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual(sections(answer), ([], [soa_line("example.com.", 300)], []))

    def test_existing_name_blocks_wildcard(self) -> None:
        """host.wild exists, so it is answered itself, and its children are not covered by *.wild
        (the closest encloser is host.wild, which has no wildcard child): NXDOMAIN."""
        self.assertEqual(sections(self.ask("host.wild.example.com"))[0], ["host.wild.example.com. 3600 A 192.0.2.21"])
        self.assertEqual(self.ask("host.wild.example.com", wire.MX).rcode, wire.NOERROR)
        answer = self.ask("x.host.wild.example.com")
        self.assertEqual(answer.rcode, wire.NXDOMAIN)
        self.assertEqual(sections(answer)[0], [])

    def test_wildcard_parent_itself_not_synthesised(self) -> None:
        """The wildcard's parent (an empty non-terminal) is NODATA, not wildcard data."""
        answer = self.ask("wild.example.com")
        self.assertEqual((answer.rcode, sections(answer)[0]), (wire.NOERROR, []))

    def test_wildcard_cname_followed(self) -> None:
        """A wildcard CNAME is synthesised with the query name as owner and then followed."""
        answer = self.ask("anything.wc.example.com")
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual(sections(answer)[0], ["anything.wc.example.com. 3600 CNAME www.example.com.",
                                               "www.example.com. 3600 A 192.0.2.10"])

    def test_wildcard_mx_gets_additional(self) -> None:
        """A wildcard MX answer carries the exchange's address in additional."""
        answer = self.ask("foo.wild.example.com", wire.MX)
        self.assertEqual(sections(answer)[0], ["foo.wild.example.com. 3600 MX 10 mx1.example.com."])
        self.assertEqual(sections(answer)[2], ["mx1.example.com. 3600 A 192.0.2.25"])


class ChainTests(AuthorityCase):
    """CNAME and DNAME restarts (RFC 1034 §4.3.2 step 3a, RFC 6672)."""

    def test_cname_chain(self) -> None:
        """alias → alias2 → www is followed to the address, in order."""
        answer = self.ask("alias.example.com")
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual([r.rtype for r in answer.answer], [wire.CNAME, wire.CNAME, wire.A])
        self.assertEqual(sections(answer)[0], ["alias.example.com. 3600 CNAME alias2.example.com.",
                                               "alias2.example.com. 3600 CNAME www.example.com.",
                                               "www.example.com. 3600 A 192.0.2.10"])

    def test_cname_asked_for(self) -> None:
        """A query for the CNAME type itself gets the CNAME and is not followed."""
        answer = self.ask("alias.example.com", wire.CNAME)
        self.assertEqual(sections(answer)[0], ["alias.example.com. 3600 CNAME alias2.example.com."])

    def test_chain_ending_in_nodata(self) -> None:
        """A chain whose target lacks the type ends in NODATA with the CNAMEs and the SOA."""
        answer = self.ask("alias.example.com", wire.AAAA)
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual(len(answer.answer), 2)
        self.assertIn(soa_line("example.com.", 300), sections(answer)[1])

    def test_cname_loop_terminates(self) -> None:
        """A CNAME loop ends (no hang) in SERVFAIL with each CNAME of the loop once (as BIND)."""
        answer = self.ask("loop1.example.com")
        self.assertEqual(sections(answer)[0], ["loop1.example.com. 3600 CNAME loop2.example.com.",
                                               "loop2.example.com. 3600 CNAME loop1.example.com."])
        self.assertEqual(answer.rcode, wire.SERVFAIL)

    def test_eleven_cnames_followed(self) -> None:
        """A chain of eleven CNAMEs is followed to the data."""
        answer = self.ask("n1.example.com")
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual([r.rtype for r in answer.answer], [wire.CNAME] * 11 + [wire.A])

    def test_twelfth_cname_is_servfail(self) -> None:
        """A twelfth CNAME ends the answer with SERVFAIL and the CNAMEs found (BIND's limit)."""
        answer = self.ask("m1.example.com")
        self.assertEqual(answer.rcode, wire.SERVFAIL)
        self.assertEqual([r.rtype for r in answer.answer], [wire.CNAME] * 12)

    def test_chain_leaving_local_zones(self) -> None:
        """A CNAME to a name we do not hold ends the answer there: NOERROR, aa=1, no SOA."""
        answer = self.ask("out.example.com")
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, True))
        self.assertEqual(sections(answer), (["out.example.com. 3600 CNAME www.elsewhere.test."], [], []))

    def test_cname_into_second_local_zone(self) -> None:
        """A chain stays in the zone where it starts (README, BIND parity): a CNAME into another
        local zone ends the answer with that CNAME, NOERROR, aa=1; the client's resolver goes on."""
        answer = self.ask("cross.example.com")
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, True))
        self.assertEqual(sections(answer), (["cross.example.com. 3600 CNAME www.example.org."], [], []))

    def test_dname_synthesis(self) -> None:
        """A name below a DNAME gets the DNAME, a synthesised CNAME, and the target's data."""
        answer = self.ask("www.dn.example.com")
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual([r.rtype for r in answer.answer], [wire.DNAME, wire.CNAME, wire.A])
        self.assertEqual(sections(answer)[0], ["dn.example.com. 3600 DNAME tgt.example.com.",
                                               "www.dn.example.com. 3600 CNAME www.tgt.example.com.",
                                               "www.tgt.example.com. 3600 A 192.0.2.30"])

    def test_dname_cname_owner_spelled_as_asked(self) -> None:
        """The synthesised CNAME's owner is the query name as the client spelled it (as BIND)."""
        answer = self.ask("WwW.dn.example.com")
        self.assertEqual(answer.answer[1].name, name("WwW.dn.example.com"))

    def test_dname_owner_not_redirected(self) -> None:
        """The DNAME's owner itself is not redirected: A there is NODATA, DNAME there is the DNAME."""
        answer = self.ask("dn.example.com")
        self.assertEqual(answer.rcode, wire.NOERROR)
        self.assertEqual(sections(answer), ([], [soa_line("example.com.", 300)], []))
        answer = self.ask("dn.example.com", wire.DNAME)
        self.assertEqual(sections(answer)[0], ["dn.example.com. 3600 DNAME tgt.example.com."])

    def test_dname_target_missing(self) -> None:
        """A DNAME whose synthesised target does not exist ends in NXDOMAIN for the target."""
        answer = self.ask("nope.dn.example.com")
        self.assertEqual(answer.rcode, wire.NXDOMAIN)
        self.assertEqual([r.rtype for r in answer.answer], [wire.DNAME, wire.CNAME])


class DelegationTests(AuthorityCase):
    """Zone cuts: referrals with glue (RFC 1034 §4.3.2 step 3b) and DS at the parent."""

    def test_referral_below_cut(self) -> None:
        """A name below a delegation gets a referral: aa=0, NS in authority, glue in additional."""
        answer = self.ask("host.sub.example.com")
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, False))
        self.assertEqual(sections(answer), ([], ["sub.example.com. 3600 NS ns.other.test.",
                                                 "sub.example.com. 3600 NS ns.sub.example.com."],
                                            ["ns.sub.example.com. 3600 A 192.0.2.53"]))

    def test_referral_at_cut(self) -> None:
        """A query at the cut itself (not DS) is a referral too."""
        answer = self.ask("sub.example.com", wire.A)
        self.assertFalse(answer.aa)
        self.assertEqual(len(sections(answer)[1]), 2)

    def test_glue_name_is_referred(self) -> None:
        """The glue's own name is below the cut: a referral, never an authoritative answer."""
        answer = self.ask("ns.sub.example.com")
        self.assertFalse(answer.aa)
        self.assertEqual(sections(answer)[0], [])

    def test_ds_at_cut_answered_from_parent(self) -> None:
        """DS at the cut is the parent's data: aa=1 with the DS RRset (RFC 4035 §3.1.4.1)."""
        answer = self.ask("sub.example.com", wire.DS)
        self.assertEqual((answer.rcode, answer.aa), (wire.NOERROR, True))
        self.assertEqual(sections(answer)[0],
                         ["sub.example.com. 3600 DS 12345 8 1 49fd46e6c4b45c55d4ac69cbd3cd34ac1afe51de"])

    def test_ds_below_cut_is_referral(self) -> None:
        """DS for a name below the cut belongs to the child: a referral."""
        self.assertFalse(self.ask("x.sub.example.com", wire.DS).aa)

    def test_referral_renders_for_dnspython(self) -> None:
        """The referral renders to a message dnspython reads: AA clear, NS and glue present."""
        answer = self.ask("host.sub.example.com")
        flags = wire.FLAG_QR | (wire.FLAG_AA if answer.aa else 0) | answer.rcode
        question = name("host.sub.example.com") + b"\x00\x01\x00\x01"
        message, _ = wire.render(1, flags, question, answer.sections)
        msg = decode(message)
        self.assertFalse(msg.flags & dns.flags.AA)
        self.assertEqual(texts(msg.additional), ["ns.sub.example.com. 3600 A 192.0.2.53"])


class AdditionalTests(AuthorityCase):
    """Additional-section addresses for NS, MX and SRV targets we hold."""

    def test_mx_targets(self) -> None:
        """MX gets the A of the local exchange; the foreign exchange gets nothing."""
        answer = self.ask("mail.example.com", wire.MX)
        self.assertEqual(sections(answer)[2], ["mx1.example.com. 3600 A 192.0.2.25"])

    def test_ns_targets(self) -> None:
        """An NS query gets A and AAAA of the in-zone server."""
        answer = self.ask("example.com", wire.NS)
        self.assertEqual(sections(answer)[0], ["example.com. 3600 NS ns1.example.com.",
                                               "example.com. 3600 NS ns2.example.net."])
        self.assertEqual(sections(answer)[2], ["ns1.example.com. 3600 A 192.0.2.1",
                                               "ns1.example.com. 3600 AAAA 2001:db8::1"])

    def test_srv_targets(self) -> None:
        """SRV gets A and AAAA of its target."""
        answer = self.ask("_sip._tcp.example.com", wire.SRV)
        self.assertEqual(sections(answer)[2], ["sipserver.example.com. 3600 A 192.0.2.26",
                                               "sipserver.example.com. 3600 AAAA 2001:db8::26"])

    def test_nothing_for_a_queries(self) -> None:
        """An A answer has no additional records."""
        self.assertEqual(sections(self.ask("www.example.com"))[2], [])


class LineViewTests(AuthorityCase):
    """Per-line answers: each client sees its own line's view and nothing of another's."""

    def test_overlay_answer(self) -> None:
        """office sees its own address; vpn sees its CNAME; no line sees the base."""
        self.assertEqual(sections(self.ask("www.example.com", line="office"))[0],
                         ["www.example.com. 3600 A 10.1.0.10"])
        self.assertEqual(sections(self.ask("www.example.com", line="vpn"))[0],
                         ["vpn-gw.example.com. 3600 A 10.2.0.1", "www.example.com. 3600 CNAME vpn-gw.example.com."])
        self.assertEqual(sections(self.ask("www.example.com"))[0], ["www.example.com. 3600 A 192.0.2.10"])

    def test_overlay_keeps_other_base_types(self) -> None:
        """office's overlay replaces www's A only; its TXT comes from the base."""
        self.assertEqual(sections(self.ask("www.example.com", wire.TXT, line="office"))[0],
                         ['www.example.com. 3600 TXT "hello"'])

    def test_unknown_line_sees_base(self) -> None:
        """A line without an overlay for the zone sees the base."""
        snap = self.snap
        self.assertIs(snap.view(name("example.org"), "office"), snap.view(name("example.org"), None))

    def test_overlay_only_name(self) -> None:
        """secret exists for office only; everyone else gets NXDOMAIN."""
        self.assertEqual(sections(self.ask("secret.example.com", line="office"))[0],
                         ["secret.example.com. 3600 A 10.1.0.99"])
        self.assertEqual(self.ask("secret.example.com").rcode, wire.NXDOMAIN)
        self.assertEqual(self.ask("secret.example.com", line="vpn").rcode, wire.NXDOMAIN)

    def test_overlay_wildcard(self) -> None:
        """office's *.wild wins for office; others get the base wildcard."""
        self.assertEqual(sections(self.ask("foo.wild.example.com", line="office"))[0],
                         ["foo.wild.example.com. 3600 A 10.1.0.20"])
        self.assertEqual(sections(self.ask("foo.wild.example.com", line="vpn"))[0],
                         ["foo.wild.example.com. 3600 A 192.0.2.20"])

    def test_overlay_empty_non_terminal_hides_wildcard(self) -> None:
        """office's a.x.wild makes x.wild exist for office only: office gets NODATA there and
        NXDOMAIN below it (closest encloser x.wild), others still get the base wildcard."""
        self.assertEqual(sections(self.ask("x.wild.example.com", line="office"))[0], [])
        self.assertEqual(self.ask("x.wild.example.com", line="office").rcode, wire.NOERROR)
        self.assertEqual(self.ask("y.x.wild.example.com", line="office").rcode, wire.NXDOMAIN)
        self.assertEqual(sections(self.ask("y.x.wild.example.com"))[0], ["y.x.wild.example.com. 3600 A 192.0.2.20"])
        self.assertEqual(sections(self.ask("a.x.wild.example.com", line="vpn"))[0],
                         ["a.x.wild.example.com. 3600 A 192.0.2.20"])

    def test_cname_target_in_clients_view(self) -> None:
        """alias → alias2 → www ends at each client's own www; no overlay address leaks."""
        office = sections(self.ask("alias.example.com", line="office"))[0]
        plain = sections(self.ask("alias.example.com"))[0]
        vpn = sections(self.ask("alias.example.com", line="vpn"))[0]
        self.assertIn("www.example.com. 3600 A 10.1.0.10", office)
        self.assertIn("www.example.com. 3600 A 192.0.2.10", plain)
        self.assertIn("vpn-gw.example.com. 3600 A 10.2.0.1", vpn)
        self.assertFalse(any(" 10." in r for r in plain))
        self.assertFalse(any("10.1." in r for r in vpn))

    def test_wildcard_cname_target_in_clients_view(self) -> None:
        """A wildcard CNAME's target is resolved in the client's view."""
        self.assertIn("www.example.com. 3600 A 10.1.0.10",
                      sections(self.ask("x.wc.example.com", line="office"))[0])
        self.assertIn("www.example.com. 3600 A 192.0.2.10", sections(self.ask("x.wc.example.com"))[0])

    def test_additional_from_clients_view(self) -> None:
        """MX additional addresses come from the client's view."""
        self.assertEqual(sections(self.ask("mail.example.com", wire.MX, line="office"))[2],
                         ["mx1.example.com. 3600 A 10.1.0.25"])
        self.assertEqual(sections(self.ask("mail.example.com", wire.MX, line="vpn"))[2],
                         ["mx1.example.com. 3600 A 192.0.2.25"])

    def test_negative_answers_same_soa(self) -> None:
        """A line view without its own SOA answers negatives with the base SOA."""
        answer = self.ask("nope.example.com", line="office")
        self.assertEqual(sections(answer)[1], [soa_line("example.com.", 300)])

    def test_lines_table(self) -> None:
        """The snapshot's line table maps client addresses to the configured lines."""
        self.assertEqual(self.snap.lines.lookup("10.1.2.3"), "office")
        self.assertEqual(self.snap.lines.lookup("10.2.0.1"), "vpn")
        self.assertIsNone(self.snap.lines.lookup("192.0.2.1"))
