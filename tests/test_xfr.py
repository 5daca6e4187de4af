"""Tests for smartdns.xfr: AXFR out to [[transfer]] keys, the line's view, BIND's answers to bad requests."""
from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.zone
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from smartdns import wire
from smartdns.config import parse_config
from smartdns.snapshot import Snapshot, build_snapshot
from smartdns.xfr import PASS, TransferHook, classify, serial_gte, view_rrsets
from tests.support import dig, dig_available, query, start_server, write_tree

SECRET_BASE = "YmFzZS1zZWNyZXQtZm9yLXRlc3Rz"          # "base-secret-for-tests"
SECRET_LINE = "bGluZTEtc2VjcmV0LWZvci10ZXN0cw=="      # "line1-secret-for-tests"
SECRET_NONE = "bm8tdHJhbnNmZXItc2VjcmV0"              # "no-transfer-secret"

CONFIG = f"""
[forward]
upstreams = []
[lines]
line1 = ["127.0.0.3/32"]
[[tsig]]
name = "base-key"
secret = "{SECRET_BASE}"
[[tsig]]
name = "line1-key"
algorithm = "hmac-sha512"
secret = "{SECRET_LINE}"
[[tsig]]
name = "no-transfer-key"
secret = "{SECRET_NONE}"
[[transfer]]
key = "base-key"
[[transfer]]
key = "line1-key"
line = "line1"
"""

BASE_ZONE = """\
$TTL 300
@       IN SOA ns1 hostmaster 2024010101 3600 600 86400 60
@       NS  ns1
ns1     A   192.0.2.1
www     A   192.0.2.10
Mail    MX  10 www
alias   CNAME www
gone    A   192.0.2.99
"""
#: line1's overlay: changes www, adds a name, turns gone into a CNAME (which takes the whole name).
OVERLAY_ZONE = """\
$TTL 60
www     A   10.0.0.10
extra   TXT "only line1"
gone    CNAME www
"""
MANY = "".join(f"h{i} A 192.0.2.{i % 250 + 1}\n" for i in range(3000))

KEYS = {"base-key": ("hmac-sha256", SECRET_BASE), "line1-key": ("hmac-sha512", SECRET_LINE),
        "no-transfer-key": ("hmac-sha256", SECRET_NONE)}


def keyring() -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({name: value for name, value in KEYS.items()})


def signed(qname: str, rdtype: str, key: str, *, serial: int | None = None,
           ring: Any = None) -> dns.message.Message:
    """A transfer request signed with ``key``; IXFR carries an SOA with ``serial``."""
    query = dns.message.make_query(qname, rdtype)
    if serial is not None:
        query.authority.append(dns.rrset.from_text(qname.rstrip(".") + ".", 0, "IN", "SOA", f". . {serial} 0 0 0 0"))
    query.use_tsig(ring or keyring(), key, algorithm=KEYS[key][0] if key in KEYS else "hmac-sha256")
    return query


def read_stream(query: dns.message.Message, messages: list[bytes]) -> list[dns.message.Message]:
    """Parse and verify a signed AXFR stream the way dns.query.inbound_xfr does (MACs chained)."""
    out, ctx = [], None
    for data in messages:
        message = dns.message.from_wire(data, keyring=query.keyring, request_mac=query.mac, xfr=True,
                                        tsig_ctx=ctx, multi=True)
        ctx = message.tsig_ctx
        out.append(message)
    return out


def records(messages: list[dns.message.Message]) -> list[tuple[str, int, str, str]]:
    """(owner, ttl, type, rdata) of every answer record of a stream, in order."""
    return [(rrset.name.to_text(), rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
            for message in messages for rrset in message.answer for rdata in rrset]


def view_records(snap: Snapshot, origin: str, line: str | None) -> list[tuple[str, int, str, str]]:
    """What the transfer for ``line`` must hold: the records of ``Snapshot.view``, SOA last too."""
    view = snap.view(wire.from_text(origin).lower(), line)
    found = []
    for rrset in [*view_rrsets(view), view.soa]:
        for parts in rrset.rdatas:
            rdata = b"".join(parts)
            found.append((wire.to_text(rrset.name), rrset.ttl, dns.rdatatype.to_text(rrset.rtype),
                          dns.rdata.from_wire("IN", rrset.rtype, rdata, 0, len(rdata)).to_text()))
    return found


class TransferHookTests(unittest.TestCase):
    """TransferHook answers signed transfer requests as BIND does, with the key's line's view."""

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        write_tree(base, {"smartdns.toml": CONFIG, "zones/example.test.zone": BASE_ZONE,
                          "zones/line1/example.test.zone": OVERLAY_ZONE,
                          "zones/big.test.zone": BASE_ZONE + MANY})
        path = os.path.join(base, "smartdns.toml")
        config = parse_config(CONFIG.replace("[forward]", f'[zones]\ndirectory = "{base}/zones"\n[forward]'), path)
        self.snap = build_snapshot(config)
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.hook = TransferHook(self.clock, run=lambda f, *a: defer.succeed(f(*a)))

    def ask(self, query: dns.message.Message, tcp: bool = True) -> Any:
        return self.hook.answer(query.to_wire(), "127.0.0.9", tcp, self.snap)

    def stream(self, query: dns.message.Message) -> list[dns.message.Message]:
        return read_stream(query, self.successResultOf(self.ask(query)))

    def test_unsigned_transfers_and_queries_pass(self) -> None:
        """Unsigned AXFR/IXFR and ordinary queries are left to the normal path (REFUSED there)."""
        for rdtype in ("AXFR", "IXFR", "A", "SOA"):
            self.assertIs(self.ask(dns.message.make_query("example.test", rdtype)), PASS)
        self.assertIs(self.hook.answer(b"\x00" * 5, "127.0.0.9", True, self.snap), PASS)

    def test_base_key_gets_the_base_zone(self) -> None:
        """The key of a [[transfer]] without line gets the base zone, SOA first and last, signed."""
        query = signed("example.test", "AXFR", "base-key")
        messages = self.stream(query)
        self.assertTrue(all(m.had_tsig for m in messages))
        got = records(messages)
        self.assertEqual(got, view_records(self.snap, "example.test.", None))
        self.assertEqual((got[0][2], got[-1][2]), ("SOA", "SOA"))
        self.assertIn(("www.example.test.", 300, "A", "192.0.2.10"), got)
        self.assertIn(("Mail.example.test.", 300, "MX", "10 www.example.test."), got)   # the file's case

    def test_line_key_gets_the_lines_merged_view(self) -> None:
        """line1's key gets base and overlay merged: overlay RRsets win, its CNAME takes the name."""
        got = records(self.stream(signed("example.test", "AXFR", "line1-key")))
        self.assertEqual(got, view_records(self.snap, "example.test.", "line1"))
        self.assertIn(("www.example.test.", 60, "A", "10.0.0.10"), got)
        self.assertNotIn(("www.example.test.", 300, "A", "192.0.2.10"), got)
        self.assertIn(("extra.example.test.", 60, "TXT", '"only line1"'), got)
        self.assertIn(("gone.example.test.", 60, "CNAME", "www.example.test."), got)
        self.assertNotIn("gone.example.test.", [r[0] for r in got if r[2] == "A"])

    def test_big_zone_is_several_chained_messages(self) -> None:
        """A zone larger than one message is split; every message verifies against the chain."""
        messages = self.stream(signed("big.test", "AXFR", "base-key"))
        self.assertGreater(len(messages), 3)
        self.assertEqual(len(records(messages)), 3000 + 7 + 1)

    def test_bad_tsig_is_notauth_unsigned(self) -> None:
        """An unknown key: NOTAUTH with TSIG error BADKEY; a wrong secret: BADSIG (BIND's answers)."""
        unknown = signed("example.test", "AXFR", "other-key",
                         ring=dns.tsigkeyring.from_text({"other-key": SECRET_BASE}))
        wrong = signed("example.test", "AXFR", "base-key",
                       ring=dns.tsigkeyring.from_text({"base-key": SECRET_NONE}))
        for query, error in ((unknown, dns.rcode.BADKEY), (wrong, dns.rcode.BADSIG)):
            answer = dns.message.from_wire(self.ask(query), keyring=False)
            self.assertEqual(answer.rcode(), dns.rcode.NOTAUTH)
            self.assertEqual(answer.tsig_error, error)
            self.assertEqual((answer.tsig[0].mac, answer.tsig[0].time_signed, answer.tsig[0].fudge),
                             (b"", 1_700_000_000, 300))

    def test_bind_answers_to_signed_requests(self) -> None:
        """Signed, as BIND answers: not a zone apex NOTAUTH, key in no [[transfer]] REFUSED, AXFR
        over UDP FORMERR, IXFR without SOA FORMERR."""
        cases = [
            (signed("www.example.test", "AXFR", "base-key"), True, dns.rcode.NOTAUTH),
            (signed("nowhere.test", "AXFR", "base-key"), True, dns.rcode.NOTAUTH),
            (signed("example.test", "AXFR", "no-transfer-key"), True, dns.rcode.REFUSED),
            (signed("example.test", "AXFR", "base-key"), False, dns.rcode.FORMERR),
            (signed("example.test", "IXFR", "base-key"), True, dns.rcode.FORMERR),
        ]
        for query, tcp, rcode in cases:
            answer = dns.message.from_wire(self.ask(query, tcp), keyring=query.keyring, request_mac=query.mac)
            self.assertEqual((answer.rcode(), answer.had_tsig, answer.answer), (rcode, True, []), query.question)

    def test_ixfr(self) -> None:
        """IXFR: a current serial gets the single SOA; an older one the whole zone (RFC 1995 §4);
        over UDP an older one gets the single SOA too (come back over TCP)."""
        current = signed("example.test", "IXFR", "base-key", serial=2024010101)
        answer = dns.message.from_wire(self.ask(current), keyring=current.keyring, request_mac=current.mac)
        self.assertEqual([rrset.rdtype for rrset in answer.answer], [dns.rdatatype.SOA])
        old = signed("example.test", "IXFR", "base-key", serial=2023)
        self.assertEqual(records(self.stream(old)), view_records(self.snap, "example.test.", None))
        answer = dns.message.from_wire(self.ask(old, False), keyring=old.keyring, request_mac=old.mac)
        self.assertEqual(len(answer.answer), 1)

    def test_signed_soa_query(self) -> None:
        """A secondary's signed SOA query gets the key's view's SOA, signed; other names pass."""
        query = signed("example.test", "SOA", "line1-key")
        answer = dns.message.from_wire(self.ask(query, False), keyring=query.keyring, request_mac=query.mac)
        self.assertTrue(answer.had_tsig)
        self.assertEqual([rdata.serial for rrset in answer.answer for rdata in rrset], [2024010101])
        self.assertIs(self.ask(signed("www.example.test", "SOA", "base-key")), PASS)

    def test_serial_arithmetic(self) -> None:
        """RFC 1982: serials compare modulo 2**32, across the wrap."""
        self.assertTrue(serial_gte(5, 5))
        self.assertTrue(serial_gte(6, 5))
        self.assertFalse(serial_gte(5, 6))
        self.assertTrue(serial_gte(1, 2**32 - 1))
        self.assertFalse(serial_gte(2**32 - 1, 1))

    def test_classify(self) -> None:
        """classify reads opcode and qtype without parsing; responses and junk are None."""
        self.assertEqual(classify(dns.message.make_query("a.b", "AXFR").to_wire()), (0, 252))
        notify = dns.message.make_query("a.b", "SOA")
        notify.set_opcode(4)
        self.assertEqual(classify(notify.to_wire()), (4, 6))
        self.assertIsNone(classify(dns.message.make_response(notify).to_wire()))
        self.assertIsNone(classify(b"\x00" * 12))


class TransferOverTCPTests(unittest.TestCase):
    """The real service on loopback: dig and dnspython transfer a line's view with its key."""

    def setUp(self) -> None:
        self.service, self.host, self.port = start_server(
            self, CONFIG, zones={"example.test.zone": BASE_ZONE, "line1/example.test.zone": OVERLAY_ZONE,
                                 "big.test.zone": BASE_ZONE + MANY})

    def expected(self, origin: str, line: str | None) -> list[tuple[str, int, str, str]]:
        return sorted(set(view_records(self.service.current, origin, line)))

    @defer.inlineCallbacks
    def test_dnspython_xfr(self) -> None:
        """dns.query.xfr with each key gets exactly that key's line's view (TSIG verified)."""
        for key, line in (("base-key", None), ("line1-key", "line1")):
            for origin in ("example.test.", "big.test."):
                messages = yield threads.deferToThread(
                    lambda o=origin, k=key: list(dns.query.xfr(self.host, o, port=self.port, keyring=keyring(),
                                                               keyname=k, keyalgorithm=KEYS[k][0], timeout=5,
                                                               relativize=False)))
                self.assertEqual(sorted(set(records(messages))), self.expected(origin, line))

    @defer.inlineCallbacks
    def test_dig_axfr_with_key(self) -> None:
        """dig axfr -y gets the view; without a key it gets 'Transfer failed' (REFUSED)."""
        if not dig_available():
            raise unittest.SkipTest("dig is not installed (apt install bind9-dnsutils)")
        out = yield dig(self.host, self.port, "-y", f"hmac-sha512:line1-key:{SECRET_LINE}", "+nocmd", "+nostats",
                        "axfr", "example.test")
        text = out.decode()
        zone = dns.zone.from_text("\n".join(l for l in text.splitlines() if l and not l.startswith(";")
                                            and " TSIG " not in l and "\tTSIG\t" not in l),
                                  origin="example.test.", relativize=False, check_origin=False)
        got = sorted({(name.to_text(), rdataset.ttl, dns.rdatatype.to_text(rdataset.rdtype), rdata.to_text())
                      for name, rdataset in zone.iterate_rdatasets() for rdata in rdataset})
        self.assertEqual(got, self.expected("example.test.", "line1"))
        self.assertNotIn("Couldn't verify", text)
        refused = yield dig(self.host, self.port, "axfr", "example.test")
        self.assertIn("Transfer failed", refused.decode())

    @defer.inlineCallbacks
    def test_unsigned_axfr_refused_over_udp_and_tcp(self) -> None:
        """Without a key, AXFR is REFUSED over UDP and TCP, as before."""
        for tcp in (False, True):
            query = dns.message.make_query("example.test", "AXFR")
            send = dns.query.tcp if tcp else dns.query.udp
            answer = yield threads.deferToThread(send, query, self.host, port=self.port, timeout=3)
            self.assertEqual(answer.rcode(), dns.rcode.REFUSED)


NAMED = shutil.which("named") or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)


class BindSecondaryOfSmartdnsTests(unittest.TestCase):
    """BIND named as a secondary of smartdns with line1's key: it serves line1's data, and a
    change of line1's overlay reaches it by NOTIFY and IXFR (with the bumped serial)."""

    def setUp(self) -> None:
        if NAMED is None:
            raise unittest.SkipTest("BIND named is not installed (apt-get install bind9)")
        from tests.oracle_harness import free_port

        self.named_port = free_port()
        config = CONFIG.replace('line = "line1"\n', f'line = "line1"\nalso_notify = ["127.0.0.1:{self.named_port}"]\n')
        self.service, self.host, self.port = start_server(
            self, config, zones={"example.test.zone": BASE_ZONE, "line1/example.test.zone": OVERLAY_ZONE})

    @defer.inlineCallbacks
    def ask_named(self, name: str, rdtype: str) -> Any:
        answer = yield threads.deferToThread(dns.query.udp, dns.message.make_query(name, rdtype), "127.0.0.1",
                                             port=self.named_port, timeout=3)
        return [rdata.to_text() for rrset in answer.answer for rdata in rrset]

    @defer.inlineCallbacks
    def test_named_transfers_line1(self) -> None:
        """named pulls example.test with line1-key and answers line1's www and extra; after
        smartdns reloads a changed line1 overlay, named is notified, asks IXFR, gets the
        incremental answer (its log says IXFR, the request smartdns logs was answered from the
        journal) and serves the new www with serial + 1; the base serial is unchanged."""
        from tests.oracle_harness import ServerProcess, wait_for_soa

        workdir = tempfile.mkdtemp(prefix="xfr-named-")
        self.addCleanup(shutil.rmtree, workdir, True)
        port = self.named_port
        write_tree(workdir, {"named.conf": textwrap.dedent(f"""\
            options {{ directory "{workdir}"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
                      recursion no; notify no; dnssec-validation no; pid-file none; }};
            controls {{ }};
            key "line1-key" {{ algorithm hmac-sha512; secret "{SECRET_LINE}"; }};
            server 127.0.0.1 {{ keys {{ line1-key; }}; }};
            zone "example.test" {{ type secondary; file "example.test.db";
                                  primaries {{ 127.0.0.1 port {self.port}; }}; }};
            """)})
        import subprocess

        log_path = os.path.abspath(self.mktemp()) + "-named.log"   # kept after stop() removes workdir
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-d", "3", "-c", os.path.join(workdir, "named.conf")],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
        server = ServerProcess("named", proc, port, workdir, log_path)
        self.addCleanup(server.stop)
        yield threads.deferToThread(wait_for_soa, server, "example.test.")
        for name, rdtype, want in (("www.example.test", "A", "10.0.0.10"), ("extra.example.test", "TXT", '"only line1"')):
            got = yield self.ask_named(name, rdtype)
            self.assertEqual(got, [want])

        # line1's overlay changes (its file has no SOA; the base serial stays 2024010101).
        with open(os.path.join(self.service.config.zones.directory, "line1", "example.test.zone"), "w") as handle:
            handle.write(OVERLAY_ZONE.replace("10.0.0.10", "10.0.0.77"))
        result = yield self.service.reload("test")
        self.assertTrue(result.ok)
        for _ in range(200):                                   # NOTIFY, SOA query, IXFR: well under 10 s
            got = yield self.ask_named("www.example.test", "A")
            if got == ["10.0.0.77"]:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(got, ["10.0.0.77"], server.log()[-3000:])
        soa = yield self.ask_named("example.test", "SOA")
        self.assertEqual(soa[0].split()[2], "2024010102")
        # smartdns's own clients: line1's see the bumped serial, clients in no line the file's.
        for source, serial in (("127.0.0.3", 2024010102), ("127.0.0.1", 2024010101)):
            answer = yield query(self.host, self.port, "example.test", "SOA", source=source)
            self.assertEqual([rdata.serial for rrset in answer.answer for rdata in rrset], [serial])
        self.assertEqual(self.service.journal.steps(b"\x07example\x04test\x00", "line1")[0].new_serial, 2024010102)
        # named -d 3 logs the request and whether the answer was incremental: the first
        # transfer is AXFR (no copy yet), the second IXFR answered with the six records of one
        # difference (new SOA; old SOA, www deleted; new SOA, www added; new SOA).
        log = server.log()
        self.assertIn("received notify for zone 'example.test': TSIG 'line1-key'", log)
        self.assertIn("notify from 127.0.0.1", log)
        self.assertIn("requesting IXFR for serial 2024010101", log)
        self.assertEqual(log.count("got nonincremental response"), 1)
        self.assertEqual(log.count("got incremental response"), 1)
        self.assertIn("Transfer completed: 1 messages, 6 records", log)
        self.assertIn("transferred serial 2024010102: TSIG 'line1-key'", log)
