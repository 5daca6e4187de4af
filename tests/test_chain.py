"""The resolver chain through the stock Twisted Names API, and chains that leave a zone.

Each stage is used the way any Twisted Names program would use it: ``lookupAddress`` and
friends, a stock ``ResolverChain``, a stock ``DNSServerFactory`` on a loopback port asked by
dnspython, and the upstream stage as a plain client of a fake upstream on loopback.  The
server-level tests then check what the chain adds: CNAMEs followed out of a zone for clients
allowed recursion, hosts files, resolvers of your own, and counters that survive reloads.
"""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import weakref

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
from twisted.internet import defer, reactor, threads
from twisted.names import common, dns as tdns, error as dns_error, hosts, resolve, server as names_server
from twisted.trial import unittest

from smartdns import wire
from smartdns.chain import HostsFiles, LineAuthority, LineChain, ask
from smartdns.response import Shaper, shape_of
from smartdns.snapshot import read_hosts_files
from tests.support import FakeUpstream, answer_a, answer_negative, query, rrs, start_server, write_tree
from tests.unit_support import make_snapshot

ZONE = """
$TTL 300
@      IN SOA ns1 hostmaster 1 3600 600 86400 60
@      IN NS  ns1
ns1    IN A   192.0.2.53
www    IN A   192.0.2.1
loc    IN CNAME ext
ext    IN CNAME www.fwd.test.
nx     IN CNAME missing.fwd.test.
other  IN CNAME www.example.org.
loop   IN CNAME loop.fwd.test.
h      IN CNAME myhost.lan.
"""
OVERLAY = """
$TTL 300
www    IN A   10.1.1.1
ext    IN CNAME alt.fwd.test.
"""
ORG = """
$TTL 300
@      IN SOA ns1 hostmaster 1 3600 600 86400 60
@      IN NS  ns1
ns1    IN A   192.0.2.54
www    IN A   192.0.2.2
"""
ZONES = {"example.com.zone": ZONE, "office/example.com.zone": OVERLAY, "example.org.zone": ORG}
OFFICE, OTHER, STRANGER = "127.0.0.3", "127.0.0.1", "127.0.0.4"   # office line, no line, no recursion
LINES = """
[lines]
office = ["127.0.0.3/32"]
[access]
recursion = ["127.0.0.1/32", "127.0.0.3/32"]
"""
UPSTREAM_DATA = {
    "www.fwd.test.": ["198.51.100.10"], "alt.fwd.test.": ["198.51.100.11"], "www.ext.test.": ["198.51.100.12"],
}


def upstream_answer(q: wire.Query, _transport: str) -> bytes | None:
    """The fake upstream: fixed A records, NXDOMAIN elsewhere, SERVFAIL under broken.test,
    and ``loop.fwd.test`` pointing back into example.com."""
    name = wire.to_text(q.qkey)
    if name.endswith("broken.test."):
        return answer_a(q, [], rcode=wire.SERVFAIL)
    if name == "loop.fwd.test.":
        rrset = wire.make_rrset(q.qkey, wire.CNAME, 600, [wire.from_text("loop.example.com")])
        return wire.render(q.id, wire.FLAG_QR | wire.FLAG_RA | wire.FLAG_RD, q.question, ((rrset,), (), ()))[0]
    if name in UPSTREAM_DATA and q.qtype == wire.A:
        return answer_a(q, UPSTREAM_DATA[name], ttl=600)
    if name in UPSTREAM_DATA:
        return answer_negative(q, wire.NOERROR, zone="fwd.test")
    return answer_negative(q, wire.NXDOMAIN, zone="fwd.test")


def texts(section: list) -> list[str]:
    """Twisted RRHeaders as ``name TYPE rdata`` strings."""
    return sorted(f"{rr.name} {tdns.QUERY_TYPES.get(rr.type, rr.type)} {rr.payload.dottedQuad() if rr.type == tdns.A else rr.payload.name}"
                  for rr in section)


class StageAPITests(unittest.TestCase):
    """Each stage through the Twisted Names API alone."""

    def setUp(self) -> None:
        self.snap = make_snapshot(self, LINES, ZONES)

    def test_line_authority_lookup_address_per_line(self):
        """lookupAddress on a line's authority gives that line's view; others see the base."""
        office = LineAuthority(reactor, self.snap, "office")
        base = LineAuthority(reactor, self.snap, None)
        ans, auth, add = self.successResultOf(office.lookupAddress("www.example.com"))
        self.assertEqual(texts(ans), ["www.example.com A 10.1.1.1"])
        self.assertTrue(all(rr.auth for rr in ans))
        ans, _, _ = self.successResultOf(base.lookupAddress("www.example.com"))
        self.assertEqual(texts(ans), ["www.example.com A 192.0.2.1"])

    def test_line_authority_failures_are_twisted_errors(self):
        """NXDOMAIN is AuthoritativeDomainError; a name in no local zone is DomainError (the
        chain moves on); NODATA is an empty answer with the SOA in authority."""
        auth = LineAuthority(reactor, self.snap, None)
        self.failureResultOf(auth.lookupAddress("nope.example.com"), dns_error.AuthoritativeDomainError)
        self.failureResultOf(auth.lookupAddress("www.elsewhere.test"), dns_error.DomainError)
        ans, authority, _ = self.successResultOf(auth.lookupMailExchange("www.example.com"))
        self.assertEqual(ans, [])
        self.assertEqual([rr.type for rr in authority], [tdns.SOA])

    def test_query_and_lookup_methods_agree(self):
        """``query`` dispatches to the same answers as the lookup methods."""
        auth = LineAuthority(reactor, self.snap, None)
        by_query = self.successResultOf(auth.query(tdns.Query("ns1.example.com", tdns.A)))
        by_lookup = self.successResultOf(auth.lookupAddress("ns1.example.com"))
        self.assertEqual(texts(by_query[0]), texts(by_lookup[0]))

    def test_a_stage_asked_through_query_answers_as_through_resolve(self):
        """A stage without the fast method (asked through ``query``, its RRHeaders converted)
        gives the same positive answers, byte for byte once shaped, as through ``resolve``."""
        auth = LineAuthority(reactor, self.snap, "office")

        class OnlyQuery:
            def query(self, q: tdns.Query, timeout: object = None) -> defer.Deferred:
                return auth.query(q, timeout)

        shaper = Shaper(1232)
        shape = shape_of(wire.FLAG_RD, None, True)
        for text, qtype in [("www.example.com", wire.A), ("example.com", wire.NS), ("example.com", wire.SOA),
                            ("other.example.com", wire.A), ("ns1.example.com", wire.A), ("example.com", wire.MX)]:
            qname = wire.from_text(text)
            question = qname + bytes([0, qtype, 0, 1])
            fast = ask(auth, qname, qtype, wire.IN, shape, reactor)
            slow = self.successResultOf(ask(OnlyQuery(), qname, qtype, wire.IN, shape, reactor))
            if not fast.answer:
                self.assertEqual(slow.answer, [], text)      # NODATA: Twisted's API has no SOA to give
                continue
            self.assertEqual(shaper.shape(shape, 1, question, slow, 0), shaper.shape(shape, 1, question, fast, 0),
                             (text, qtype))

    def test_stock_resolver_chain_over_the_stages(self):
        """A stock ResolverChain over a line authority and the hosts stage: local zones win,
        hosts answer the rest, and NXDOMAIN in a zone ends the walk."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"hosts": "10.9.9.9 myhost.lan www.example.com\n"})
        table = read_hosts_files([os.path.join(base, "hosts")], [])
        chain = resolve.ResolverChain([LineAuthority(reactor, self.snap, None), HostsFiles(table)])
        ans, _, _ = self.successResultOf(chain.lookupAddress("www.example.com"))
        self.assertEqual(texts(ans), ["www.example.com A 192.0.2.1"])
        ans, _, _ = self.successResultOf(chain.lookupAddress("myhost.lan"))
        self.assertEqual(texts(ans), ["myhost.lan A 10.9.9.9"])
        self.failureResultOf(chain.lookupAddress("nope.example.com"), dns_error.AuthoritativeDomainError)

    def test_hosts_stage_is_the_stock_resolver(self):
        """HostsFiles is a twisted.names.hosts.Resolver and answers as the stock one reading the
        same file does, through the Twisted API and through its fast method."""
        base = os.path.abspath(self.mktemp())
        path = os.path.join(base, "hosts")
        write_tree(base, {"hosts": "# comment\n10.0.0.1 a.lan A2.lan\n10.0.0.2 a.lan\n::1 a.lan v6only.lan\n"})
        mine = HostsFiles(read_hosts_files([path], []))
        stock = hosts.Resolver(file=path.encode())
        self.assertIsInstance(mine, hosts.Resolver)
        def outcome(d: defer.Deferred) -> object:
            results: list = []
            d.addBoth(results.append)
            result = results[0]
            if hasattr(result, "value"):
                return type(result.value)
            return [(str(rr.name), rr.type, rr.ttl, rr.payload.dottedQuad() if rr.type == tdns.A
                     else rr.payload._address) for rr in result[0]]

        for name in ("a.lan", "A2.LAN", "v6only.lan", "nothere.lan"):
            for method in ("lookupAddress", "lookupIPV6Address", "lookupAllRecords", "lookupMailExchange"):
                self.assertEqual(outcome(getattr(mine, method)(name)), outcome(getattr(stock, method)(name)),
                                 (name, method))
        fast = mine.resolve(wire.from_text("a.lan"), wire.A, wire.IN, None)
        self.assertEqual([b"".join(p) for p in fast.answer[0].rdatas], [bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])])
        self.assertIsNone(mine.resolve(wire.from_text("a.lan"), wire.MX, wire.IN, None))

    def test_stages_and_chains_hold_no_reference_cycles(self):
        """A reload freezes everything alive out of the collector's sight, so a replaced
        snapshot's chains must be freed by reference counting alone: with the collector off,
        each stage and chain (and the snapshot a chain holds) is gone the moment it is let go.
        Twisted's ResolverBase.__init__ stores bound methods of the resolver on it, a cycle;
        ``typeToMethod`` is per class here and still answers the stock ``query``."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"hosts": "10.9.9.9 myhost.lan\n"})
        table = read_hosts_files([os.path.join(base, "hosts")], [])
        collecting = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if collecting else None)
        authority = LineAuthority(reactor, self.snap, "office")
        hosts_stage = HostsFiles(table)
        chain = LineChain(reactor, [authority, hosts_stage], False, self.snap)
        ans, _, _ = self.successResultOf(chain.query(tdns.Query("www.example.com", tdns.A)))
        self.assertEqual(texts(ans), ["www.example.com A 10.1.1.1"])
        ans, _, _ = self.successResultOf(hosts_stage.query(tdns.Query("myhost.lan", tdns.A)))
        self.assertEqual(texts(ans), ["myhost.lan A 10.9.9.9"])
        self.assertEqual(chain.typeToMethod[tdns.MX], chain.lookupMailExchange)
        self.assertEqual(sorted(chain.typeToMethod), sorted(common.typeToMethod))
        refs = [weakref.ref(x) for x in (authority, hosts_stage, chain)]
        del authority, hosts_stage, chain
        self.assertEqual([ref() for ref in refs], [None, None, None])
        with self.assertRaises(AttributeError):
            common.ResolverBase.__init__(LineAuthority(reactor, self.snap, None))

    def test_line_authority_behind_a_stock_dns_server_factory(self):
        """A stock DNSServerFactory serving a line authority on loopback answers dnspython."""
        factory = names_server.DNSServerFactory(authorities=[LineAuthority(reactor, self.snap, "office")])
        udp = reactor.listenUDP(0, tdns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        port = udp.getHost().port

        def ask() -> dns.message.Message:
            return dns.query.udp(dns.message.make_query("www.example.com", "A"), "127.0.0.1", port=port, timeout=5)

        def check(reply: dns.message.Message) -> None:
            self.assertEqual(rrs(reply), ["www.example.com. 300 A 10.1.1.1"])
            self.assertTrue(reply.flags & dns.flags.AA)
        return threads.deferToThread(ask).addCallback(check)

    @defer.inlineCallbacks
    def test_upstream_stage_as_a_plain_client(self):
        """The upstream stage answers lookupAddress from a fake upstream on loopback, fails
        with DNSNameError for NXDOMAIN, and caches what it got."""
        up = FakeUpstream(upstream_answer).start(self)
        service, _, _ = start_server(self, f'[forward]\nupstreams = ["{up.address}"]\n')
        stage = service.upstream_stage
        self.assertIsInstance(stage, common.ResolverBase)
        ans, _, _ = yield stage.lookupAddress("www.fwd.test")
        self.assertEqual(texts(ans), ["www.fwd.test A 198.51.100.10"])
        yield self.assertFailure(stage.lookupAddress("nothing.fwd.test"), dns_error.DNSNameError)
        cached = yield service.cache_stage.lookupAddress("www.fwd.test")
        self.assertEqual(texts(cached[0]), ["www.fwd.test A 198.51.100.10"])
        self.assertEqual(len(up.queries), 2)
        yield self.assertFailure(service.cache_stage.lookupAddress("uncached.fwd.test"), dns_error.DomainError)

    @defer.inlineCallbacks
    def test_the_whole_chain_is_an_iresolver(self):
        """The server's chain for a line answers the Twisted API with the CNAME chain followed."""
        up = FakeUpstream(upstream_answer).start(self)
        service, _, _ = start_server(self, LINES + f'[forward]\nupstreams = ["{up.address}"]\n', zones=ZONES)
        chain = service.handler.chains().for_client("office", True)
        self.assertIsInstance(chain, LineChain)
        ans, _, _ = yield chain.lookupAddress("loc.example.com")
        self.assertEqual([str(rr.name) for rr in ans], ["loc.example.com", "ext.example.com", "alt.fwd.test"])


class ChainLeavesTheZoneTests(unittest.TestCase):
    """A CNAME out of a local zone, through the server (real sockets, a fake upstream)."""

    def setUp(self) -> None:
        self.up = FakeUpstream(upstream_answer).start(self)
        self.service, self.host, self.port = start_server(
            self, LINES + f'[forward]\nupstreams = ["{self.up.address}"]\n', zones=ZONES)

    def ask(self, name: str, source: str = OTHER, **kwargs) -> defer.Deferred[dns.message.Message]:
        return query(self.host, self.port, name, "A", source=source, **kwargs)

    @defer.inlineCallbacks
    def test_local_cname_to_forwarded_name_carries_the_whole_chain(self):
        """loc -> ext -> www.fwd.test: every record, aa=1 (the answer starts local), ra=1; the
        office line's overlay changes the middle of the chain, over UDP and TCP."""
        for tcp in (False, True):
            reply = yield self.ask("loc.example.com", tcp=tcp)
            self.assertEqual(rrs(reply), ["ext.example.com. 300 CNAME www.fwd.test.",
                                          "loc.example.com. 300 CNAME ext.example.com.",
                                          "www.fwd.test. 600 A 198.51.100.10"])
            self.assertTrue(reply.flags & dns.flags.AA and reply.flags & dns.flags.RA)
            office = yield self.ask("loc.example.com", source=OFFICE, tcp=tcp)
            self.assertIn("alt.fwd.test. 600 A 198.51.100.11", rrs(office))

    @defer.inlineCallbacks
    def test_into_another_local_zone(self):
        """A CNAME into a second local zone is answered from it, with that zone's data."""
        reply = yield self.ask("other.example.com")
        self.assertEqual(rrs(reply), ["other.example.com. 300 CNAME www.example.org.",
                                      "www.example.org. 300 A 192.0.2.2"])

    @defer.inlineCallbacks
    def test_who_gets_only_the_cname(self):
        """RD=0, a client not allowed recursion (plus EDE 18 for EDNS), and nothing else."""
        plain = ["ext.example.com. 300 CNAME www.fwd.test.", "loc.example.com. 300 CNAME ext.example.com."]
        reply = yield self.ask("loc.example.com", rd=False)
        self.assertEqual(rrs(reply), plain)
        reply = yield self.ask("loc.example.com", source=STRANGER, edns=True)
        self.assertEqual(rrs(reply), plain)
        self.assertEqual(reply.rcode(), dns.rcode.NOERROR)
        self.assertFalse(reply.flags & dns.flags.RA)
        self.assertEqual([o.code for o in reply.options], [dns.edns.EDECode.PROHIBITED])
        refused = yield self.ask("www.fwd.test", source=STRANGER, edns=True)
        self.assertEqual(refused.rcode(), dns.rcode.REFUSED)
        self.assertEqual([o.code for o in refused.options], [dns.edns.EDECode.PROHIBITED])

    @defer.inlineCallbacks
    def test_negative_and_failed_tails(self):
        """Upstream NXDOMAIN: NXDOMAIN with the CNAME and the upstream's SOA; upstream SERVFAIL
        through a CNAME: SERVFAIL with no records and no AA (BIND's answer)."""
        reply = yield self.ask("nx.example.com")
        self.assertEqual(reply.rcode(), dns.rcode.NXDOMAIN)
        self.assertEqual(rrs(reply), ["nx.example.com. 300 CNAME missing.fwd.test."])
        self.assertEqual([r.split()[0] for r in rrs(reply, "authority")], ["fwd.test."])

    @defer.inlineCallbacks
    def test_loop_through_the_upstream_is_servfail(self):
        """loop -> loop.fwd.test -> loop (back in the zone): SERVFAIL with the two CNAMEs once,
        and EDE 0 "max. restarts reached" for EDNS clients."""
        reply = yield self.ask("loop.example.com", edns=True)
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertEqual(rrs(reply), ["loop.example.com. 300 CNAME loop.fwd.test.",
                                      "loop.fwd.test. 600 CNAME loop.example.com."])
        self.assertEqual([(o.code, o.text) for o in reply.options], [(dns.edns.EDECode.OTHER, "max. restarts reached")])


class FailedTailTests(unittest.TestCase):
    """The forwarded part of a chain fails."""

    @defer.inlineCallbacks
    def test_servfail_tail(self):
        """SERVFAIL from the upstream for the target: SERVFAIL, empty sections, aa=0."""
        zone = ZONE + "fail IN CNAME x.broken.test.\n"
        up = FakeUpstream(upstream_answer).start(self)
        _, host, port = start_server(self, LINES + f'[forward]\nupstreams = ["{up.address}"]\n'
                                     'timeout = 0.5\ntotal_timeout = 1.0\n',
                                     zones={"example.com.zone": zone})
        reply = yield query(host, port, "fail.example.com", source=OTHER)
        self.assertEqual(reply.rcode(), dns.rcode.SERVFAIL)
        self.assertEqual((reply.answer, reply.authority), ([], []))
        self.assertFalse(reply.flags & dns.flags.AA)


class RecordsJsonSiblingTests(unittest.TestCase):
    """records.json names that land in separate synthetic zones still chain."""

    @defer.inlineCallbacks
    def test_sibling_cname_is_followed(self):
        """d.example.org CNAME a.example.org (two synthetic zones): the A comes along for a
        client allowed recursion; a client without it gets the CNAME alone."""
        up = FakeUpstream(upstream_answer).start(self)
        records = ('[{"name": "a.example.org", "type": "A", "ttl": 60, "rdata": "192.0.2.7"},'
                   ' {"name": "d.example.org", "type": "CNAME", "ttl": 60, "rdata": "a.example.org"}]')
        _, host, port = start_server(
            self, '[zones]\nrecords_json = ["records.json"]\n[access]\nrecursion = ["127.0.0.1/32"]\n'
                  f'[forward]\nupstreams = ["{up.address}"]\n', files={"records.json": records})
        reply = yield query(host, port, "d.example.org", source="127.0.0.1")
        self.assertEqual([(r.split()[0], r.split()[2]) for r in rrs(reply)],
                         [("a.example.org.", "A"), ("d.example.org.", "CNAME")])
        alone = yield query(host, port, "d.example.org", source="127.0.0.2")
        self.assertEqual([r.split()[2] for r in rrs(alone)], ["CNAME"])


class HostsStageTests(unittest.TestCase):
    """``[hosts] files`` through the server: after the zones, before the upstreams."""

    @defer.inlineCallbacks
    def test_hosts_files_answer_every_client_and_reload(self):
        """A hosts name answers clients with and without recursion; a local zone wins over it;
        a CNAME to it is followed; an edit is served after a reload, even for a name the cache
        held before."""
        up = FakeUpstream(upstream_answer).start(self)
        service, host, port = start_server(
            self, LINES + f'[forward]\nupstreams = ["{up.address}"]\n[hosts]\nfiles = ["hosts"]\n',
            files={"hosts": "10.9.9.9 myhost.lan www.example.com\n"}, zones=ZONES)
        for source in (OTHER, STRANGER):
            reply = yield query(host, port, "myhost.lan", source=source)
            self.assertEqual(rrs(reply), ["myhost.lan. 3600 A 10.9.9.9"])
        reply = yield query(host, port, "www.example.com", source=STRANGER)
        self.assertEqual(rrs(reply), ["www.example.com. 300 A 192.0.2.1"])
        reply = yield query(host, port, "h.example.com", source=OTHER)
        self.assertEqual(rrs(reply)[-1], "myhost.lan. 3600 A 10.9.9.9")
        cached = yield query(host, port, "www.ext.test", source=OTHER)
        self.assertEqual(rrs(cached), ["www.ext.test. 600 A 198.51.100.12"])
        hosts_path = os.path.join(os.path.dirname(service.config.path), "hosts")
        with open(hosts_path, "a", encoding="utf-8") as handle:
            handle.write("10.8.8.8 www.ext.test\n")
        result = yield service.reload("test")
        self.assertTrue(result.ok, result.summary())
        reply = yield query(host, port, "www.ext.test", source=OTHER)
        self.assertEqual(rrs(reply), ["www.ext.test. 3600 A 10.8.8.8"])

    def test_bad_hosts_line_is_reported(self):
        """A hosts line whose first field is not an address is a file:line problem."""
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"hosts": "10.0.0.1 ok.lan\nnot-an-ip bad.lan\n"})
        problems: list = []
        read_hosts_files([os.path.join(base, "hosts")], problems)
        self.assertEqual([str(p) for p in problems], [f"{base}/hosts:2: 'not-an-ip' is not an IP address"])


class CountersAcrossReloadsTests(unittest.TestCase):
    """``smartdns stats`` counters run from process start."""

    @defer.inlineCallbacks
    def test_counters_survive_reloads_that_replace_forwarding(self):
        """Cache and upstream counters keep counting across reloads that change upstreams and
        cache settings (which build a new cache and forwarder)."""
        up = FakeUpstream(upstream_answer).start(self)
        service, host, port = start_server(self, f'[forward]\nupstreams = ["{up.address}"]\n')
        yield query(host, port, "www.fwd.test")
        yield query(host, port, "www.fwd.test")
        before = dict(service.stats())
        self.assertEqual((before["cache.misses"], before["upstream.sent"], before["cache.hits"]), (1, 1, 1))
        text = open(service.config.path, encoding="utf-8").read()
        for edit in ("[cache]\nmax_entries = 500\n", "timeout = 1.5\n"):
            text = text.replace("[forward]\n", "[forward]\n" + edit) if edit.startswith("timeout") else text + edit
            with open(service.config.path, "w", encoding="utf-8") as handle:
                handle.write(text)
            forwarder = service.forwarder
            result = yield service.reload("test")
            self.assertTrue(result.ok, result.summary())
            self.assertIsNot(service.forwarder, forwarder, "the reload built a new forwarder and cache")
            yield query(host, port, "www.fwd.test")
        after = dict(service.stats())
        self.assertEqual((after["cache.misses"], after["upstream.sent"], after["cache.hits"]), (3, 3, 1))
        self.assertEqual(after["answers.upstream"], 3)
        self.assertEqual(after["queries"], 4)


class TacTests(unittest.TestCase):
    """README's .tac example, run by twistd."""

    timeout = 60

    def test_tac_with_a_resolver_of_your_own(self):
        """twistd -ny examples/custom-resolver.tac serves the resolver's name, local zones and
        refusals as usual."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            raise unittest.SkipTest(f"twistd not found next to {sys.executable}")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        base = os.path.abspath(self.mktemp())
        port = _free_port()
        write_tree(base, {"smartdns.toml": f'[server]\nlisten = ["127.0.0.1:{port}"]\ncontrol_socket = ""\n'
                                           '[zones]\ndirectory = "zones"\n[forward]\nupstreams = []\n',
                          "zones/example.com.zone": ZONE})
        shutil.copy(os.path.join(root, "examples", "custom-resolver.tac"), os.path.join(base, "custom.tac"))
        env = dict(os.environ, PYTHONPATH=root)
        proc = subprocess.Popen([twistd, "-ny", "custom.tac", "--pidfile=", "--logfile=twistd.log"], cwd=base,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.terminate)
        answer = None
        for _ in range(200):
            try:
                answer = dns.query.udp(dns.message.make_query("canary.internal", "A"), "127.0.0.1",
                                       port=port, timeout=0.1)
                break
            except (dns.exception.Timeout, OSError):
                if proc.poll() is not None:
                    self.fail("twistd exited: " + open(os.path.join(base, "twistd.log")).read())
        self.assertIsNotNone(answer, "no answer from the .tac service")
        self.assertEqual(rrs(answer), ["canary.internal. 60 A 192.0.2.99"])
        local = dns.query.udp(dns.message.make_query("www.example.com", "A"), "127.0.0.1", port=port, timeout=2)
        self.assertEqual(rrs(local), ["www.example.com. 300 A 192.0.2.1"])
        other = dns.query.udp(dns.message.make_query("nothing.internal", "A"), "127.0.0.1", port=port, timeout=2)
        self.assertEqual(other.rcode(), dns.rcode.REFUSED)


def _free_port() -> int:
    """A UDP and TCP port number free on 127.0.0.1 right now."""
    import socket
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            p = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise RuntimeError("no free port")
