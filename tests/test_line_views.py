"""Per-line answers from live sockets: overlays, wildcards, CNAME targets and glue never leak."""
from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

import dns.rcode

from tests.support import query, rrs, start_server

CONFIG = """
[lines]
office = ["127.0.0.1/32"]
vpn = ["127.0.0.2/32", "127.0.0.0/30"]
[forward]
upstreams = []
"""
ZONES = {
    "corp.test.zone": """
        $TTL 300
        @        SOA ns1 h 1 2 3 4 60
        @        NS  ns1
        ns1      A   192.0.2.1
        app      A   192.0.2.10
        alias    CNAME app
        *.svc    A   192.0.2.20
        mail     MX  10 mx
        mx       A   192.0.2.30
        dept     NS  ns.dept
        ns.dept  A   192.0.2.40
    """,
    # office: its own app address, its own wildcard, and a name only it can see
    "office/corp.test.zone": """
        app      A   10.1.0.10
        *.svc    A   10.1.0.20
        secret   A   10.1.0.99
        mx       A   10.1.0.30
    """,
    # vpn: app is a CNAME elsewhere, glue for the delegation differs
    "vpn/corp.test.zone": """
        app      CNAME vpn-gw
        vpn-gw   A   10.2.0.1
        ns.dept  A   10.2.0.40
    """,
}
OFFICE, VPN, NOBODY = "127.0.0.1", "127.0.0.2", "127.0.0.5"


class LineViewTests(unittest.TestCase):
    """Three clients, three views of one zone."""

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(self, CONFIG, zones=ZONES)

    def ask(self, source: str, name: str, rdtype: str = "A", tcp: bool = False):
        return query(self.host, self.port, name, rdtype, source=source, tcp=tcp)

    @defer.inlineCallbacks
    def test_overlay_rrsets_per_line(self):
        """Each line sees its own app address; 127.0.0.3 (in vpn's /30) is vpn; others see the base."""
        office = yield self.ask(OFFICE, "app.corp.test")
        vpn = yield self.ask(VPN, "app.corp.test", tcp=True)
        also_vpn = yield self.ask("127.0.0.3", "app.corp.test")
        nobody = yield self.ask(NOBODY, "app.corp.test")
        self.assertEqual(rrs(office), ["app.corp.test. 300 A 10.1.0.10"])
        self.assertEqual(rrs(vpn), ["app.corp.test. 300 CNAME vpn-gw.corp.test.", "vpn-gw.corp.test. 300 A 10.2.0.1"])
        self.assertEqual(rrs(also_vpn), rrs(vpn))
        self.assertEqual(rrs(nobody), ["app.corp.test. 300 A 192.0.2.10"])

    @defer.inlineCallbacks
    def test_cname_target_resolved_in_the_clients_view(self):
        """alias → app is followed through the client's own overlay."""
        office = yield self.ask(OFFICE, "alias.corp.test")
        vpn = yield self.ask(VPN, "alias.corp.test")
        nobody = yield self.ask(NOBODY, "alias.corp.test")
        self.assertIn("app.corp.test. 300 A 10.1.0.10", rrs(office))
        self.assertIn("vpn-gw.corp.test. 300 A 10.2.0.1", rrs(vpn))
        self.assertIn("app.corp.test. 300 A 192.0.2.10", rrs(nobody))
        self.assertNotIn("10.", " ".join(rrs(nobody)))

    @defer.inlineCallbacks
    def test_wildcards_per_line(self):
        """The office wildcard answers office clients only."""
        office = yield self.ask(OFFICE, "x.svc.corp.test")
        vpn = yield self.ask(VPN, "x.svc.corp.test")
        self.assertEqual(rrs(office), ["x.svc.corp.test. 300 A 10.1.0.20"])
        self.assertEqual(rrs(vpn), ["x.svc.corp.test. 300 A 192.0.2.20"])

    @defer.inlineCallbacks
    def test_overlay_only_names_do_not_exist_elsewhere(self):
        """A name only in office's overlay is NXDOMAIN for everyone else."""
        office = yield self.ask(OFFICE, "secret.corp.test")
        vpn = yield self.ask(VPN, "secret.corp.test")
        nobody = yield self.ask(NOBODY, "secret.corp.test")
        self.assertEqual(rrs(office), ["secret.corp.test. 300 A 10.1.0.99"])
        self.assertEqual((vpn.rcode(), nobody.rcode()), (dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN))

    @defer.inlineCallbacks
    def test_additional_and_glue_per_line(self):
        """MX target addresses and referral glue come from the client's view."""
        office = yield self.ask(OFFICE, "mail.corp.test", "MX")
        nobody = yield self.ask(NOBODY, "mail.corp.test", "MX")
        self.assertEqual(rrs(office, "additional"), ["mx.corp.test. 300 A 10.1.0.30"])
        self.assertEqual(rrs(nobody, "additional"), ["mx.corp.test. 300 A 192.0.2.30"])
        vpn = yield self.ask(VPN, "host.dept.corp.test")
        nobody = yield self.ask(NOBODY, "host.dept.corp.test")
        self.assertEqual(rrs(vpn, "additional"), ["ns.dept.corp.test. 300 A 10.2.0.40"])
        self.assertEqual(rrs(nobody, "additional"), ["ns.dept.corp.test. 300 A 192.0.2.40"])

    @defer.inlineCallbacks
    def test_no_leak_through_the_fast_path(self):
        """Alternating clients, repeated queries (memoized answers): each line keeps its own answer."""
        expected = {OFFICE: ["app.corp.test. 300 A 10.1.0.10"], NOBODY: ["app.corp.test. 300 A 192.0.2.10"]}
        for _ in range(5):
            for source, answer in expected.items():
                reply = yield self.ask(source, "app.corp.test")
                self.assertEqual(rrs(reply), answer)
