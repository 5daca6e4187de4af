"""CNAME/DNAME chains that leave a local zone, answered as BIND 9.18 does in a recursive view.

Setup (``tests/oracle/chain``):

- ``upstream/fwd.test.zone`` is served by a first ``named`` (authoritative only, the harness's
  ``NAMED_OPTIONS``); its ``broken.test.`` zone has no file, so it answers SERVFAIL there, and
  it answers REFUSED for ``refused.test.`` (no such zone, ``recursion no``).
- ``local/`` holds the local zones example.com. and example.org. and line1's overlay
  ``local/line1/example.com.zone`` (``ext CNAME alt.fwd.test.`` instead of ``www.fwd.test.``).
- BIND under test: ``recursion yes; forward only; forwarders { 127.0.0.1 port P; };
  allow-recursion { 127.0.0.1; 127.0.0.2; }; dnssec-validation no;
  minimal-responses no-auth-recursive;`` (BIND 9.18's default, spelled out), plus the
  harness's other settings (1232-byte EDNS, ``answer-cookie no``, ...).  Two views:
  ``line1`` (``match-clients { 127.0.0.1/32; }``) serving base + overlay merged into one
  file, and ``default`` (``any``) serving the base files.  ``allow-query-cache`` is left
  at its default, which follows ``allow-recursion``.
- smartdns: the same zone directory, ``[lines] line1 = ["127.0.0.1/32"]``,
  ``[forward] upstreams = ["127.0.0.1:P"]``, ``[access] recursion = ["127.0.0.1/32",
  "127.0.0.2/32"]``.
- Clients: 127.0.0.1 (line1, may recurse), 127.0.0.2 (no line, may recurse), 127.0.0.3 (no
  line, may not recurse).

What BIND 9.18 answers (observed with 9.18.49; ``BIND_FACTS`` pins the main cases)
---------------------------------------------------------------------------
Clients allowed recursion, RD=1 (with or without EDNS, UDP or TCP: the same sections):

- The chain is followed wherever it goes: through the local zones, out to the forwarder,
  and back into a local zone (``back CNAME back.fwd.test.``, upstream ``back.fwd.test.
  CNAME loc.example.com.``: 4 CNAMEs + the final A).  Every step is looked up in the
  client's own view (line1's chain goes through its ``ext``).  Into the second local zone
  (``other CNAME www.example.org.``) the chain is followed as well.
- Flags: aa=1 whenever the answer starts with local data, even when its end came from the
  forwarder (loc A: aa, rd, ra); ra=1.  A name outside the local zones (``www.fwd.test.``)
  is aa=0.
- TTLs: local records keep their zone TTLs; forwarded records carry the cache's remaining
  TTL (the upstream's TTL on a miss, then counting down).
- Upstream NXDOMAIN (``nx CNAME missing.fwd.test.``): NXDOMAIN, the local CNAME in
  answer, the upstream zone's SOA in authority with TTL min(SOA TTL, MINIMUM) = 90.
  Upstream NODATA (``nodata AAAA``): NOERROR, CNAME, the same SOA.
- Upstream SERVFAIL (``fail CNAME x.broken.test.``) or REFUSED (``refused CNAME
  x.refused.test.``): SERVFAIL with *empty* sections (the local CNAME is dropped) and
  aa=0; no EDE option.  An upstream that does not answer at all gives the same SERVFAIL
  after the 10 s resolver timeout (studied, not part of the test: too slow).
- A loop across zones (``loop CNAME loop.fwd.test.``, upstream ``loop.fwd.test. CNAME
  loop.example.com.``): SERVFAIL, aa=1, answer = the two CNAMEs once each, and for EDNS
  clients an EDE option ``0 (Other): "max. restarts reached"``.
- DNAME out (``dn DNAME fwd.test.``): DNAME + synthesized CNAME (TTL of the DNAME) + the
  forwarded answer; a forwarded NXDOMAIN gives NXDOMAIN + DNAME + CNAME + the upstream SOA.
- A forwarded MX reached through a CNAME brings the upstream's additional data along
  (``mail CNAME mx.fwd.test.``: CNAME + MX in answer, ``mail.fwd.test. A`` in additional).
- qtype CNAME / DNAME at the owner: just that record (no chasing), empty authority.

Clients allowed recursion, RD=0: no recursion is started, but the cache is used.

- Where the out-of-zone part is in the view's cache, the answer is the same as for RD=1
  (minus rd).  Where it is not (never asked, or a failure: ``fail``/``refused``): NOERROR,
  aa=1, the CNAMEs up to the last local one, and a referral to the root from BIND's built-in
  hints in authority (``. 518400 NS a..m.root-servers.net.``).
- The chain is *not* followed into the second local zone: ``other A`` is the CNAME alone,
  ``out A`` (example.com -> example.org -> fwd.test) stops at ``out.example.org.``.
- A purely local answer gets the zone's NS RRset and its address (``no-auth-recursive``):
  ``loc CNAME``, ``dn DNAME``; an answer that ends in cached data gets no NS.

Clients not allowed recursion (any RD; ``allow-query-cache`` follows ``allow-recursion``):

- NOERROR, aa=1, ra=0, the CNAMEs (and DNAME) up to the last local one; never REFUSED for a
  name in a local zone, never cached data, never the second local zone (``other A``: the
  CNAME alone), and a loop is just its first CNAME.  For EDNS clients, if the chain left the
  local zones, an EDE option ``18 (Prohibited)`` without text; a chain pointing into the
  other local zone carries no EDE.  A name outside the local zones is REFUSED (aa=0, empty
  sections; EDE 18 with EDNS).

What is compared, and the few allowances (``_comparable``)
------------------------------------------------------------
Everything ``oracle_harness.diff_responses`` compares (rcode, opcode, flags, question bytes,
OPT and its options, every section with TTLs and name case), plus RA, which matters here.
Allowed:

- TTLs of records outside the local zones may differ by up to ``TTL_SLACK_SECONDS``: they
  count down in each server's cache, and the two servers may see the second change
  between their answers.  Local records' TTLs must match exactly.
- BIND's RD=0 referral to the root servers (from its compiled-in hints) is dropped before
  comparing: smartdns has no root hints and must not invent them; the rest of that answer
  (rcode, aa, the CNAMEs) is still compared.
- Additional records outside the local zones are not compared: smartdns caches only the
  answer section of a forwarded positive answer (``smartdns/resolver.py``), so the upstream's
  ``mail.fwd.test. A`` behind a forwarded MX is not repeated.
- RD=0 from a client allowed recursion, for a name in a local zone: smartdns gives the answer a client without recursion
  gets (the chain ends with the last local CNAME, NOERROR; README.rst, "CNAME chains"), where
  BIND also splices in whatever its cache holds.  BIND's answer is cut to its local part
  before comparing (``_local_part``): the answer records before the first one outside the
  local zones, local authority and additional records, NOERROR and no EDE when anything was
  cut.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import oracle_harness as harness

CHAIN_DIR = os.path.join(harness.ORACLE_DIR, "chain")
#: smartdns's zone directory: base zones + ``line1/`` overlay.
LOCAL_DIR = os.path.join(CHAIN_DIR, "local")
#: The upstream named's zone directory (``broken.test.zone`` is missing on purpose).
UPSTREAM_DIR = os.path.join(CHAIN_DIR, "upstream")
LOCAL_ZONES = ["example.com.", "example.org."]
LINE = "line1"
LINE_CLIENT, NO_LINE_CLIENT, NO_RECURSION_CLIENT = "127.0.0.1", "127.0.0.2", "127.0.0.3"
CLIENTS = {LINE_CLIENT: "line1", NO_LINE_CLIENT: "no line", NO_RECURSION_CLIENT: "no recursion"}
RECURSION_CLIENTS = (LINE_CLIENT, NO_LINE_CLIENT)
TTL_SLACK_SECONDS = 2

#: (qname, qtype, what it exercises)
QUERIES: list[tuple[str, str, str]] = [
    ("loc.example.com.", "A", "local -> local -> fwd.test A (line1: via alt.fwd.test)"),
    ("ext.example.com.", "A", "local -> fwd.test A"),
    ("ext.example.com.", "CNAME", "the CNAME itself, not chased"),
    ("loc.example.com.", "CNAME", "the CNAME itself, not chased"),
    ("nx.example.com.", "A", "upstream NXDOMAIN"),
    ("nodata.example.com.", "AAAA", "upstream NODATA"),
    ("fail.example.com.", "A", "upstream SERVFAIL"),
    ("refused.example.com.", "A", "upstream REFUSED"),
    ("other.example.com.", "A", "into the second local zone"),
    ("out.example.com.", "A", "example.com -> example.org -> fwd.test"),
    ("back.example.com.", "A", "out to fwd.test and back into example.com"),
    ("loop.example.com.", "A", "a loop across the local zone and fwd.test"),
    ("www.dn.example.com.", "A", "DNAME into fwd.test"),
    ("nothere.dn.example.com.", "A", "DNAME into fwd.test, NXDOMAIN there"),
    ("dn.example.com.", "DNAME", "the DNAME itself"),
    ("mail.example.com.", "MX", "CNAME to an upstream MX: additional data from upstream"),
    ("BaCk.ExAmPlE.cOm.", "A", "0x20 through a chain that leaves and returns"),
    ("www.fwd.test.", "A", "plain forwarded name (REFUSED without recursion)"),
]

#: Without and with EDNS (1232 bytes).  RD=0 queries run after RD=1 ones (warm caches; see doc).
EDNS_MODES = (False, True)


def _named_binary() -> str:
    if os.access(harness.NAMED_PATH, os.X_OK):
        return harness.NAMED_PATH
    found = shutil.which("named")
    if found is None:
        raise SkipTest(
            f"BIND named not installed ({harness.NAMED_PATH} missing); "
            "apt-get install bind9 to run the chain oracle tests"
        )
    return found


# ---------------------------------------------------------------------------
# Processes


def _spawn(
    name: str,
    argv: Callable[[str], list[str]],
    write_config: Callable[[int, str], str],
    zones: Sequence[str],
    env: dict[str, str] | None = None,
) -> harness.ServerProcess:
    """Start a server on a free loopback port and wait until it serves every origin in ``zones``.

    ``write_config(port, workdir)`` writes the config and returns its path; ``argv(path)`` is
    the command line.  Retries on a new port if the port was taken meanwhile.
    """
    last_error: Exception | None = None
    for _ in range(3):
        workdir = tempfile.mkdtemp(prefix=f"oracle-chain-{name}-")
        port = harness.free_port()
        conf = write_config(port, workdir)
        log_path = os.path.join(workdir, f"{name}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv(conf), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=workdir, env=env,
            )
        server = harness.ServerProcess(name, proc, port, workdir, log_path)
        try:
            harness.wait_until_answers(server, zones[0])
            for origin in zones:
                harness.wait_for_soa(server, origin)
        except RuntimeError as e:
            last_error = e
            server.stop()
            continue
        return server
    raise RuntimeError(f"{name} did not start: {last_error}")


def _options_head(port: int, workdir: str, directory: str) -> str:
    return (
        "options {\n"
        f'    directory "{directory}";\n'
        f'    pid-file "{workdir}/named.pid";\n'
        f'    session-keyfile "{workdir}/session.key";\n'
        f'    managed-keys-directory "{workdir}";\n'
        f'    dump-file "{workdir}/named_dump.db";\n'
        f'    statistics-file "{workdir}/named.stats";\n'
        f'    memstatistics-file "{workdir}/named.memstats";\n'
        f"    listen-on port {port} {{ 127.0.0.1; }};\n"
        "    listen-on-v6 { none; };\n"
    )


def start_upstream() -> harness.ServerProcess:
    """The forwarders' target: authoritative fwd.test., SERVFAIL for broken.test."""
    named = _named_binary()

    def write(port: int, workdir: str) -> str:
        path = os.path.join(workdir, "named.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                _options_head(port, workdir, UPSTREAM_DIR)
                + harness.NAMED_OPTIONS.format(payload=harness.EDNS_PAYLOAD_BYTES)
                + "};\ncontrols { };\n"
                'zone "fwd.test." { type primary; file "fwd.test.zone"; };\n'
                # No such file: the zone does not load and named answers SERVFAIL for it.
                'zone "broken.test." { type primary; file "broken.test.zone"; };\n'
            )
        return path

    return _spawn("upstream", lambda c: [named, "-g", "-4", "-n", "1", "-c", c], write, ["fwd.test."])


#: The recursive BIND's options (see the module doc).
RECURSIVE_OPTIONS = """\
    recursion yes;
    forward only;
    forwarders {{ 127.0.0.1 port {upstream_port}; }};
    allow-recursion {{ {recursion_clients} }};
    dnssec-validation no;
    minimal-responses no-auth-recursive;
    edns-udp-size {payload};
    max-udp-size {payload};
    answer-cookie no;
    notify no;
    empty-zones-enable no;
    version none;
    hostname none;
    server-id none;
    automatic-interface-scan no;
"""


def merge_overlay(origin: str, line: str, out_dir: str) -> str:
    """Write base + ``line``'s overlay of ``origin`` as one zone file BIND can load.

    smartdns's overlay rule, for this data: per (name, type) the overlay's RRset replaces the
    base's, and a CNAME on either side takes the whole name.  Returns the file's path.
    """
    file_name = harness.zone_file_name(origin)
    zone = dns.zone.from_file(os.path.join(LOCAL_DIR, file_name), origin, relativize=False)
    overlay = dns.zone.from_file(
        os.path.join(LOCAL_DIR, line, file_name), origin, relativize=False, check_origin=False
    )
    cname = dns.rdatatype.CNAME
    for name, node in overlay.nodes.items():
        base = zone.get_node(name)
        if node.get_rdataset(dns.rdataclass.IN, cname) is not None or (
            base is not None and base.get_rdataset(dns.rdataclass.IN, cname) is not None
        ):
            zone.nodes[name] = node
        else:
            target = zone.find_node(name, create=True)
            for rdataset in node.rdatasets:
                target.replace_rdataset(rdataset)
    path = os.path.join(out_dir, file_name)
    zone.to_file(path, relativize=False)
    return path


def start_recursive_named(upstream_port: int) -> harness.ServerProcess:
    """BIND in the recursive-view configuration, views ``line1`` and ``default``."""
    named = _named_binary()

    def write(port: int, workdir: str) -> str:
        line_dir = os.path.join(workdir, LINE)
        os.makedirs(line_dir)
        line_files = {LOCAL_ZONES[0]: merge_overlay(LOCAL_ZONES[0], LINE, line_dir)}

        def zones(files: dict[str, str]) -> str:
            return "".join(
                f'    zone "{o}" {{ type primary; file '
                f'"{files.get(o, os.path.join(LOCAL_DIR, harness.zone_file_name(o)))}"; }};\n'
                for o in LOCAL_ZONES
            )

        path = os.path.join(workdir, "named.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                _options_head(port, workdir, LOCAL_DIR)
                + RECURSIVE_OPTIONS.format(
                    upstream_port=upstream_port,
                    recursion_clients="".join(f"{c}; " for c in RECURSION_CLIENTS),
                    payload=harness.EDNS_PAYLOAD_BYTES,
                )
                + "};\ncontrols { };\n"
                + f'view "{LINE}" {{\n    match-clients {{ {LINE_CLIENT}/32; }};\n'
                + zones(line_files) + "};\n"
                + 'view "default" {\n    match-clients { any; };\n' + zones({}) + "};\n"
            )
        return path

    return _spawn("named", lambda c: [named, "-g", "-4", "-n", "1", "-c", c], write, LOCAL_ZONES)


def smartdns_toml(port: int, upstream_port: int) -> str:
    """smartdns configured like ``start_recursive_named``."""
    return (
        "[server]\n"
        f'listen = ["127.0.0.1:{port}"]\n'
        "[zones]\n"
        f'directory = "{LOCAL_DIR}"\n'
        "watch = false\n"
        "[lines]\n"
        f'{LINE} = ["{LINE_CLIENT}/32"]\n'
        "[forward]\n"
        f'upstreams = ["127.0.0.1:{upstream_port}"]\n'
        "[access]\n"
        f"recursion = {json.dumps([c + '/32' for c in RECURSION_CLIENTS])}\n"
    )


def start_smartdns(upstream_port: int) -> harness.ServerProcess:
    """``twistd -n smartdns`` from the working tree, configured by ``smartdns_toml``."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(twistd):
        raise SkipTest(f"twistd not found next to {sys.executable}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (harness.PROJECT_ROOT, env.get("PYTHONPATH", "")) if p
    )

    def write(port: int, workdir: str) -> str:
        path = os.path.join(workdir, "smartdns.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(smartdns_toml(port, upstream_port))
        return path

    return _spawn(
        "smartdns", lambda c: [twistd, "-n", "--pidfile=", "smartdns", "--config", c],
        write, LOCAL_ZONES, env,
    )


# ---------------------------------------------------------------------------
# Asking and comparing


def ask(address: harness.Address, query: dns.message.Message, transport: str,
        source: str) -> harness.Outcome:
    """``harness.ask`` from a chosen loopback source address (the client decides the view)."""
    host, port = address
    try:
        if transport == "udp":
            r = dns.query.udp(
                query, host, timeout=harness.QUERY_TIMEOUT_SECONDS, port=port, source=source,
                one_rr_per_rrset=True, raise_on_truncation=False,
            )
        else:
            r = dns.query.tcp(
                query, host, timeout=harness.QUERY_TIMEOUT_SECONDS, port=port, source=source,
                one_rr_per_rrset=True,
            )
    except (dns.exception.DNSException, OSError) as e:
        return harness.Outcome(None, f"{type(e).__name__}: {e}")
    return harness.Outcome(r, None)


_LOCAL_ORIGINS = [dns.name.from_text(o) for o in LOCAL_ZONES]
_ROOT = dns.name.root


def _is_local(name: dns.name.Name) -> bool:
    return any(name.is_subdomain(o) for o in _LOCAL_ORIGINS)


def _local_part(m: dns.message.Message) -> None:
    """Cut an answer to what comes from the local zones (see the module doc), in place."""
    cut = False
    answer = []
    for rrset in m.answer:
        if not _is_local(rrset.name):
            cut = True
            break
        answer.append(rrset)
    for section in ("authority", "additional"):
        kept = [r for r in getattr(m, section) if _is_local(r.name)]
        cut = cut or len(kept) != len(getattr(m, section))
        setattr(m, section, kept)
    if cut:
        m.answer = answer
        m.set_rcode(dns.rcode.NOERROR)
        if m.edns >= 0:
            m.use_edns(0, 0, m.payload, options=[])


def _comparable(a: dns.message.Message, b: dns.message.Message) -> None:
    """Apply the module doc's allowances in place: TTL slack, no root referral, no additional
    records from outside the local zones."""
    for m in (a, b):
        m.authority = [
            r for r in m.authority if not (r.name == _ROOT and r.rdtype == dns.rdatatype.NS)
        ]
        m.additional = [r for r in m.additional if _is_local(r.name)]
    for section in ("answer", "authority", "additional"):
        ttls: dict[tuple[str, int, str], int] = {}
        for rrset in getattr(a, section):
            for rdata in rrset:
                ttls[(rrset.name.to_text(), rrset.rdtype, rdata.to_text())] = rrset.ttl
        for rrset in getattr(b, section):
            if _is_local(rrset.name):
                continue
            for rdata in rrset:
                ttl = ttls.get((rrset.name.to_text(), rrset.rdtype, rdata.to_text()))
                if ttl is not None and abs(ttl - rrset.ttl) <= TTL_SLACK_SECONDS:
                    rrset.ttl = ttl


def compare(a: harness.Address, b: harness.Address, qname: str, qtype: str, transport: str,
            edns: bool, flags: int, source: str, names: tuple[str, str],
            local_part: bool = False) -> list[str]:
    """One query from ``source`` to both servers; the differences a client could see.
    ``local_part``: compare with ``a``'s answer cut to its local part when RD=0 is asked by a
    client allowed recursion."""
    query = harness.make_query(qname, qtype, edns, flags)
    oa, ob = ask(a, query, transport, source), ask(b, query, transport, source)
    if local_part and not flags & dns.flags.RD and source in RECURSION_CLIENTS and oa.response is not None \
            and _is_local(dns.name.from_text(qname)):
        _local_part(oa.response)
    if oa.response is None or ob.response is None:
        if oa.error is not None and ob.error is not None:
            return []
        return [f"response: {names[0]}={oa.error or 'answered'} {names[1]}={ob.error or 'answered'}"]
    ra, rb = oa.response, ob.response
    diffs = []
    if (ra.flags ^ rb.flags) & dns.flags.RA:
        diffs.append(f"flags: ra {names[0]}={bool(ra.flags & dns.flags.RA)} "
                     f"{names[1]}={bool(rb.flags & dns.flags.RA)}")
    _comparable(ra, rb)
    return diffs + harness.diff_responses(ra, rb, names)


def run_corpus(
    a: harness.Address,
    b: harness.Address,
    names: tuple[str, str],
    rd_modes: Sequence[int] = (dns.flags.RD, 0),
    transports: Sequence[str] = ("udp", "tcp"),
    clients: Sequence[str] = tuple(CLIENTS),
    queries: Sequence[tuple[str, str, str]] = QUERIES,
    local_part: bool = False,
) -> tuple[int, int, list[str]]:
    """Every query from every client, RD=1 first (so RD=0 meets warm caches).

    Returns ``(matches, total, diffs)`` like ``harness.run_corpus``; gives up sending after
    ``harness.MAX_CONSECUTIVE_FAILURES`` unanswered queries in a row.
    """
    matches = total = silent = 0
    diffs: list[str] = []
    for flags in rd_modes:
        for transport in transports:
            for edns in EDNS_MODES:
                for source in clients:
                    for qname, qtype, _why in queries:
                        total += 1
                        if silent >= harness.MAX_CONSECUTIVE_FAILURES:
                            continue
                        d = compare(a, b, qname, qtype, transport, edns, flags, source, names, local_part)
                        silent = silent + 1 if d and d[0].startswith("response:") else 0
                        if silent == harness.MAX_CONSECUTIVE_FAILURES:
                            diffs.append("aborted: too many unanswered queries in a row")
                        if d:
                            diffs.append(
                                f"{qname} {qtype} {transport} edns={edns} "
                                f"rd={int(bool(flags))} client={source} ({CLIENTS[source]}):\n  "
                                + "\n  ".join(d)
                            )
                        else:
                            matches += 1
    return matches, total, diffs


def _report(matches: int, total: int, diffs: list[str]) -> str:
    return f"{matches}/{total} matched\n\n" + "\n".join(diffs)


# ---------------------------------------------------------------------------
# Tests


class ChainZoneDataTests(SynchronousTestCase):
    """The chain zone files load in BIND and dnspython; the line1 merge is what smartdns sees."""

    def test_zones_pass_named_checkzone(self) -> None:
        """Each local zone, line1's merged example.com and the upstream zone pass named-checkzone."""
        checkzone = shutil.which("named-checkzone") or "/usr/bin/named-checkzone"
        if not os.path.exists(checkzone):
            raise SkipTest("named-checkzone not installed (apt-get install bind9-utils)")
        out = tempfile.mkdtemp(prefix="oracle-chain-merge-")
        self.addCleanup(shutil.rmtree, out, True)
        files = [(o, os.path.join(LOCAL_DIR, harness.zone_file_name(o))) for o in LOCAL_ZONES]
        files.append(("example.com.", merge_overlay("example.com.", LINE, out)))
        files.append(("fwd.test.", os.path.join(UPSTREAM_DIR, "fwd.test.zone")))
        for origin, path in files:
            result = subprocess.run([checkzone, origin, path], capture_output=True, text=True,
                                    check=False)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_merge_changes_only_the_overlay_record(self) -> None:
        """line1's merged zone differs from the base in ``ext`` alone."""
        out = tempfile.mkdtemp(prefix="oracle-chain-merge-")
        self.addCleanup(shutil.rmtree, out, True)
        base = dns.zone.from_file(os.path.join(LOCAL_DIR, "example.com.zone"), "example.com.",
                                  relativize=False)
        merged = dns.zone.from_file(merge_overlay("example.com.", LINE, out), "example.com.",
                                    relativize=False)
        changed = {n.to_text() for n in set(base.nodes) | set(merged.nodes)
                   if base.get_node(n) != merged.get_node(n)}
        self.assertEqual(changed, {"ext.example.com."})
        self.assertEqual(merged.find_rdataset("ext.example.com.", "CNAME")[0].target.to_text(),
                         "alt.fwd.test.")

    def test_corpus_names_are_distinct(self) -> None:
        """Each (qname, qtype) is asked once per mode (a 0x20 spelling counts as its own)."""
        keys = [(q, t) for q, t, _ in QUERIES]
        self.assertEqual(len(set(keys)), len(keys))


class BindAgainstBindChainTests(SynchronousTestCase):
    """The corpus and comparison are deterministic: two recursive BINDs agree on everything."""

    def test_bind_matches_bind(self) -> None:
        """Same upstream, two recursive BINDs: every case, client, transport, RD and EDNS mode."""
        upstream = start_upstream()
        self.addCleanup(upstream.stop)
        a = start_recursive_named(upstream.port)
        self.addCleanup(a.stop)
        b = start_recursive_named(upstream.port)
        self.addCleanup(b.stop)
        matches, total, diffs = run_corpus(a.address, b.address, ("bind1", "bind2"))
        self.assertEqual(matches, total, _report(matches, total, diffs))


def summary(response: dns.message.Message) -> str:
    """rcode, flags, EDE and sections on one line (a root referral counted, not listed)."""
    def rrs(section: list[dns.rrset.RRset]) -> str:
        roots = [r for r in section if r.name == _ROOT and r.rdtype == dns.rdatatype.NS]
        text = [rr for r in section if r not in roots for rr in r.to_text().splitlines()]
        if roots:
            text.append(f"<root referral, {sum(len(r) for r in roots)} NS>")
        return "; ".join(text) or "-"
    options = [o.to_text() for o in response.options]
    return (f"{dns.rcode.to_text(response.rcode())} {dns.flags.to_text(response.flags)}"
            f"{' ' + ', '.join(options) if options else ''}"
            f" | AN: {rrs(response.answer)} | NS: {rrs(response.authority)}"
            f" | AR: {rrs(response.additional)}")


#: What BIND 9.18 answers, pinned (the module doc in executable form), in this order:
#: (client, qname, qtype, RD, EDNS, summary).  RD=0 cases come after RD=1 ones for the same
#: names, so they meet a warm cache.
BIND_FACTS: list[tuple[str, str, str, bool, bool, str]] = [
    (LINE_CLIENT, "back.example.com.", "A", True, False,
     "NOERROR QR AA RD RA | AN: back.example.com. 300 IN CNAME back.fwd.test.; "
     "back.fwd.test. 700 IN CNAME loc.example.com.; loc.example.com. 120 IN CNAME ext.example.com.; "
     "ext.example.com. 200 IN CNAME alt.fwd.test.; alt.fwd.test. 500 IN A 198.51.100.11 | NS: - | AR: -"),
    (NO_LINE_CLIENT, "loc.example.com.", "A", True, True,
     "NOERROR QR AA RD RA | AN: loc.example.com. 120 IN CNAME ext.example.com.; "
     "ext.example.com. 200 IN CNAME www.fwd.test.; www.fwd.test. 600 IN A 198.51.100.10 | NS: - | AR: -"),
    (NO_LINE_CLIENT, "www.fwd.test.", "A", True, True,
     "NOERROR QR RD RA | AN: www.fwd.test. 600 IN A 198.51.100.10 | NS: - | AR: -"),
    (NO_LINE_CLIENT, "nx.example.com.", "A", True, False,
     "NXDOMAIN QR AA RD RA | AN: nx.example.com. 300 IN CNAME missing.fwd.test. | "
     "NS: fwd.test. 90 IN SOA ns.fwd.test. hostmaster.fwd.test. 1 3600 900 604800 90 | AR: -"),
    (NO_LINE_CLIENT, "fail.example.com.", "A", True, True, "SERVFAIL QR RD RA | AN: - | NS: - | AR: -"),
    (NO_LINE_CLIENT, "refused.example.com.", "A", True, False, "SERVFAIL QR RD RA | AN: - | NS: - | AR: -"),
    (NO_LINE_CLIENT, "loop.example.com.", "A", True, True,
     "SERVFAIL QR AA RD RA EDE 0 (Other): max. restarts reached | AN: loop.example.com. 300 IN CNAME "
     "loop.fwd.test.; loop.fwd.test. 600 IN CNAME loop.example.com. | NS: - | AR: -"),
    (NO_LINE_CLIENT, "other.example.com.", "A", True, False,
     "NOERROR QR AA RD RA | AN: other.example.com. 300 IN CNAME www.example.org.; "
     "www.example.org. 400 IN A 192.0.2.20 | NS: - | AR: -"),
    (NO_LINE_CLIENT, "mail.example.com.", "MX", True, False,
     "NOERROR QR AA RD RA | AN: mail.example.com. 300 IN CNAME mx.fwd.test.; mx.fwd.test. 600 IN MX "
     "10 mail.fwd.test. | NS: - | AR: mail.fwd.test. 600 IN A 198.51.100.25"),
    (NO_LINE_CLIENT, "loc.example.com.", "A", False, False,
     "NOERROR QR AA RA | AN: loc.example.com. 120 IN CNAME ext.example.com.; "
     "ext.example.com. 200 IN CNAME www.fwd.test.; www.fwd.test. 600 IN A 198.51.100.10 | NS: - | AR: -"),
    (NO_LINE_CLIENT, "fail.example.com.", "A", False, False,
     "NOERROR QR AA RA | AN: fail.example.com. 300 IN CNAME x.broken.test. | "
     "NS: <root referral, 13 NS> | AR: -"),
    (NO_LINE_CLIENT, "other.example.com.", "A", False, False,
     "NOERROR QR AA RA | AN: other.example.com. 300 IN CNAME www.example.org. | NS: - | AR: -"),
    (NO_LINE_CLIENT, "loc.example.com.", "CNAME", False, False,
     "NOERROR QR AA RA | AN: loc.example.com. 120 IN CNAME ext.example.com. | "
     "NS: example.com. 3600 IN NS ns1.example.com. | AR: ns1.example.com. 300 IN A 192.0.2.1"),
    (NO_RECURSION_CLIENT, "loc.example.com.", "A", True, True,
     "NOERROR QR AA RD EDE 18 (Prohibited) | AN: loc.example.com. 120 IN CNAME ext.example.com.; "
     "ext.example.com. 200 IN CNAME www.fwd.test. | NS: - | AR: -"),
    (NO_RECURSION_CLIENT, "loop.example.com.", "A", True, False,
     "NOERROR QR AA RD | AN: loop.example.com. 300 IN CNAME loop.fwd.test. | NS: - | AR: -"),
    (NO_RECURSION_CLIENT, "other.example.com.", "A", True, True,
     "NOERROR QR AA RD | AN: other.example.com. 300 IN CNAME www.example.org. | NS: - | AR: -"),
    (NO_RECURSION_CLIENT, "www.fwd.test.", "A", True, True,
     "REFUSED QR RD EDE 18 (Prohibited) | AN: - | NS: - | AR: -"),
]


class BindFactsTests(SynchronousTestCase):
    """The module doc's statements about BIND hold for the installed ``named``."""

    def test_bind_answers_as_documented(self) -> None:
        """Each pinned case gets the documented answer (per-line view, recursion, RD=0, EDE)."""
        upstream = start_upstream()
        self.addCleanup(upstream.stop)
        named = start_recursive_named(upstream.port)
        self.addCleanup(named.stop)
        wrong = []
        for source, qname, qtype, rd, edns, expected in BIND_FACTS:
            query = harness.make_query(qname, qtype, edns, dns.flags.RD if rd else 0)
            outcome = ask(named.address, query, "udp", source)
            got = summary(outcome.response) if outcome.response is not None else str(outcome.error)
            if got != expected:
                wrong.append(f"{source} {qname} {qtype} rd={int(rd)} edns={int(edns)}:\n"
                             f"  expected {expected}\n  got      {got}")
        self.assertEqual(wrong, [], "\n".join(wrong))


class ComparisonTests(SynchronousTestCase):
    """``_comparable``: the two allowances and nothing more."""

    @staticmethod
    def _message(*authority: str, answer: tuple[str, ...] = ()) -> dns.message.Message:
        m = dns.message.Message()
        for section, lines in ((m.answer, answer), (m.authority, authority)):
            for line in lines:
                name, ttl, cls, typ, rdata = line.split(" ", 4)
                section.append(dns.rrset.from_text(name, int(ttl), cls, typ, rdata))
        return m

    def test_forwarded_ttls_may_differ_by_the_slack(self) -> None:
        """Out-of-zone TTLs within the slack are equalised; beyond it, or local, they are not."""
        a = self._message(answer=("www.fwd.test. 600 IN A 198.51.100.10",
                                  "ext.example.com. 200 IN CNAME www.fwd.test."))
        for ttls, same in [((599, 200), True), ((600 - TTL_SLACK_SECONDS - 1, 200), False),
                           ((600, 199), False)]:
            b = self._message(answer=(f"www.fwd.test. {ttls[0]} IN A 198.51.100.10",
                                      f"ext.example.com. {ttls[1]} IN CNAME www.fwd.test."))
            _comparable(a, b)
            self.assertEqual(harness.diff_responses(a, b) == [], same, ttls)

    def test_local_part_cuts_at_the_first_forwarded_record(self) -> None:
        """The RD=0 allowance keeps the local CNAMEs only, and NOERROR once anything is cut."""
        m = self._message("fwd.test. 90 IN SOA ns.fwd.test. h.fwd.test. 1 2 3 4 90",
                          answer=("nx.example.com. 300 IN CNAME missing.fwd.test.",))
        m.set_rcode(dns.rcode.NXDOMAIN)
        _local_part(m)
        self.assertEqual((m.rcode(), len(m.answer), m.authority), (dns.rcode.NOERROR, 1, []))
        local = self._message("example.com. 60 IN SOA ns.example.com. h.example.com. 1 2 3 4 60")
        local.set_rcode(dns.rcode.NXDOMAIN)
        _local_part(local)
        self.assertEqual((local.rcode(), len(local.authority)), (dns.rcode.NXDOMAIN, 1))

    def test_root_referral_is_dropped(self) -> None:
        """BIND's hint-based root NS in authority is not compared; other authority RRs are."""
        a = self._message(". 518400 IN NS a.root-servers.net.")
        _comparable(a, self._message())
        self.assertEqual(list(a.authority), [])
        b = self._message("example.com. 3600 IN NS ns1.example.com.")
        _comparable(b, self._message())
        self.assertEqual(len(b.authority), 1)


class SmartDNSAgainstBindChainTests(SynchronousTestCase):
    """smartdns answers chains that leave its zones exactly as the recursive BIND does."""

    def setUp(self) -> None:
        self.upstream = start_upstream()
        self.addCleanup(self.upstream.stop)
        self.named = start_recursive_named(self.upstream.port)
        self.addCleanup(self.named.stop)
        self.smartdns = start_smartdns(self.upstream.port)
        self.addCleanup(self.smartdns.stop)

    def _assert_matches(self, **kwargs: object) -> None:
        matches, total, diffs = run_corpus(
            self.named.address, self.smartdns.address, ("bind", "smartdns"), local_part=True,
            **kwargs,  # type: ignore[arg-type]
        )
        message = _report(matches, total, diffs)
        if self.smartdns.proc.poll() is not None:
            message += "\n\nsmartdns exited; its log:\n" + self.smartdns.log()
        self.assertEqual(matches, total, message)

    def test_udp(self) -> None:
        """Over UDP: every client, RD=1 then RD=0, with and without EDNS."""
        self._assert_matches(transports=("udp",))

    def test_tcp(self) -> None:
        """Over TCP: every client, RD=1 then RD=0, with and without EDNS."""
        self._assert_matches(transports=("tcp",))
