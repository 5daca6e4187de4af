"""``smartdns explain``: why a client gets the answer it gets, without sending anything upstream.

One question (name, type, client address) is explained as a JSON-ready dict:

- ``line``: the line the address falls in, the CIDR that chose it, and the prefixes that also
  contain it but lost (longest prefix wins; ties go to the line listed first);
- ``recursion``: whether the client may have names forwarded, and which ``[access] recursion``
  network allows it;
- ``policy``: the ``[[policy]]`` rules (and records.json deny entries) whose names match, with
  ``file:line``, which of them apply, and the action taken;
- ``steps``: the chain stages that answered, in the order the chain asked them: local data
  (zone, the line's view, each RRset with its file and line and whether it came from the base
  zone or the line's overlay, wildcard, CNAME and DNAME steps), hosts files, cached forwarded
  answers (with their remaining TTL), and the upstream pool a real query would go to;
- ``answer``: the response as the server would send it (dnspython's ``Message.to_text``).

The answer comes from the server's own `smartdns.server.QueryHandler` code run on a
synthesized query from the client's address, over a copy of the client's chain whose stages
only look: the cache stage reads entries without counting hits, reordering the LRU or starting
a prefetch, and the upstream stage notes the pool it would ask instead of asking it.  When a
real query would be forwarded, there is no answer to show and ``forward`` says what would
happen.  The explaining handler has counters of its own, so the server's stay as they are.

The same function serves the control socket (``explain`` command, run on the live handler)
and ``smartdns explain`` with no server running (a handler built from the files, whose cache
is empty), so both print the same thing.
"""
from __future__ import annotations

import errno
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import dns.exception
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from twisted.internet import defer

from smartdns import wire
from smartdns.articlejson import read_records_json
from smartdns.authority import WILDCARD_LABEL, _closest_encloser
from smartdns.chain import CacheStage, ChainSet, HostsFiles, LineAuthority, LineChain, UpstreamStage
from smartdns.control import exchange
from smartdns.lines import contains
from smartdns.response import RequestShape, Result
from smartdns.server import QueryHandler, Stats
from smartdns.snapshot import Snapshot
from smartdns.zones import ZoneView, overlay_default_ttl, record_lines

EXPLAIN_QUERY_ID = 0                  # a fixed ID, so the same question explains the same way
EXPLAIN_EDNS_PAYLOAD = 1232           # what dig sends by default
CONTROL_TIMEOUT_SECONDS = 10.0
LINE_UNKNOWN = "line unknown"


class ExplainError(Exception):
    """The question cannot be explained (bad name, type or address)."""


@dataclass(frozen=True, slots=True)
class Question:
    """What to explain: a name, a type and the client address asking."""

    name: str
    rtype: int
    client: str

    @classmethod
    def parse(cls, name: str, rtype: str, client: str) -> "Question":
        """Check the three parts; ExplainError says which one is wrong."""
        try:
            wire.from_text(name)
        except ValueError as e:
            raise ExplainError(f"bad name {name!r}: {e}") from None
        try:
            code = int(dns.rdatatype.from_text(rtype))
        except (dns.rdatatype.UnknownRdatatype, ValueError):
            raise ExplainError(f"{rtype!r} is not a DNS record type") from None
        try:
            address = ipaddress.ip_address(client.partition("%")[0])
        except ValueError:
            raise ExplainError(f"--from {client!r} is not an IP address") from None
        return cls(name if name.endswith(".") else name + ".", code, str(address))

    def to_json(self) -> dict[str, str]:
        """The question as the control command carries it."""
        return {"name": self.name, "type": type_text(self.rtype), "from": self.client}


def type_text(rtype: int) -> str:
    """A type as dig names it (``A``, ``TYPE65534``)."""
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))


def rcode_text(rcode: int) -> str:
    """A response code as dig names it (``NXDOMAIN``)."""
    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))


def rrset_lines(rrset: wire.RRset) -> list[str]:
    """An RRset in presentation form, one record a line, as dig prints it."""
    owner = wire.to_text(rrset.name)
    out = []
    for parts in rrset.rdatas:
        raw = b"".join(parts)
        try:
            text = dns.rdata.from_wire(dns.rdataclass.RdataClass.make(rrset.rclass),
                                       dns.rdatatype.RdataType.make(rrset.rtype), raw, 0, len(raw)).to_text()
        except dns.exception.DNSException:
            text = f"\\# {len(raw)} {raw.hex()}"
        out.append(f"{owner} {rrset.ttl} {dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(rrset.rclass))} {type_text(rrset.rtype)} {text}")
    return out


# -- where the data came from ------------------------------------------------------------------


class _Locator:
    """Files and lines of served records, read again from the files (once per file per explain)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.json_paths = frozenset(snap.config.zones.records_json)
        self._zone_files: dict[str, Any] = {}
        self._json_rows: dict[str, list[tuple[bytes, int, bytes, int]]] = {}

    def _zone_lines(self, path: str, origin: bytes, overlay: bool) -> Any:
        found = self._zone_files.get(path)
        if found is None:
            ttl = None
            if overlay:
                base = self.snap.zones.get(origin)
                base_path = base.sources[0] if base is not None and base.sources else None
                ttl = overlay_default_ttl(base_path, base)
            found = self._zone_files[path] = record_lines(path, wire.to_text(origin), overlay=overlay,
                                                          default_ttl=ttl)
        return found

    def _json(self, path: str) -> list[tuple[bytes, int, bytes, int]]:
        rows = self._json_rows.get(path)
        if rows is None:
            records, _denies, _problems = read_records_json(path)
            rows = self._json_rows[path] = [(r.name, r.rtype, r.rdata, r.where.line) for r in records]
        return rows

    def find(self, sources: Iterable[str], origin: bytes, owner: bytes, rtype: int, rrset: wire.RRset,
             overlay: bool) -> dict[str, Any]:
        """``{"file", "line"}`` of the first record of ``rrset`` (``line`` None, with a ``note``,
        when the file no longer holds these records)."""
        wanted = {b"".join(parts) for parts in rrset.rdatas}
        sources = list(sources)
        for path in sources:
            if path in self.json_paths:
                hits = [(path, line) for name, t, rdata, line in self._json(path)
                        if name == owner and t == rtype and rdata in wanted]
            elif path == sources[0]:          # a zone file; the ones after it are its $INCLUDEs
                hits = [(file, line) for file, line, rdata in self._zone_lines(path, origin, overlay).get((owner, rtype), ())
                        if rdata in wanted]
            else:
                continue
            if hits:
                return {"file": hits[0][0], "line": hits[0][1]}
        return {"file": sources[0] if sources else None, "line": None,
                "note": f"{LINE_UNKNOWN}: the file no longer holds these records (changed since it was loaded?)"}

    def hosts_line(self, name: bytes, rtype: int) -> dict[str, Any]:
        """The first hosts file line giving ``name`` an address of ``rtype``."""
        for path in self.snap.config.hosts.files:
            try:
                with open(path, "rb") as handle:
                    lines = handle.read().splitlines()
            except OSError:
                continue
            for number, raw in enumerate(lines, start=1):
                fields = raw.split(b"#", 1)[0].split()
                if len(fields) < 2:
                    continue
                try:
                    version = ipaddress.ip_address(fields[0].decode("ascii")).version
                    names = {wire.from_text(f.decode("ascii")).lower() for f in fields[1:]}
                except (UnicodeDecodeError, ValueError):
                    continue
                if (version == 4) == (rtype == wire.A) and name.lower() in names:
                    return {"file": path, "line": number}
        return {"file": None, "line": None, "note": LINE_UNKNOWN}


def _describe_local(snap: Snapshot, line: str | None, qname: bytes, qtype: int, result: Result,
                    locator: _Locator) -> dict[str, Any]:
    """One answer of the local zones: each RRset's origin, and the steps the lookup took."""
    origin = snap.find_zone(qname.lower())
    assert origin is not None
    view = snap.view(origin, line)
    # The line's own data: an overlay, or a zone transferred for the line ([[secondary]] line);
    # a view made only to serve a bumped SOA serial (smartdns.journal) still shows the base.
    uses_overlay = line is not None and (origin, line) in snap.views and (
        bool(view.overlay_sources) or view.base is not snap.zones.get(origin))
    records: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for section, rrsets in zip(("answer", "authority", "additional"), result.sections):
        previous: wire.RRset | None = None
        for rrset in rrsets:
            entry = _describe_rrset(snap, line, rrset, previous if section == "answer" else None, locator)
            entry["section"] = section
            records.append(entry)
            if section == "answer":
                steps.extend(_steps_of(rrset, entry))
            previous = rrset
    if result.rcode == wire.NXDOMAIN:
        steps.append({"kind": "nxdomain", "text": "the name does not exist in this view (no wildcard covers it)"})
    elif result.rcode == wire.NOERROR and not result.answer and not result.referral:
        steps.append({"kind": "nodata", "text": "the name exists with no data of this type"})
    if result.referral:
        steps.append({"kind": "referral", "text": "a zone cut: referral to the delegated servers"})
    last = result.answer[-1] if result.answer else None
    if last is not None and last.rtype == wire.CNAME and qtype not in (wire.CNAME, wire.ANY) and not result.rcode:
        target = b"".join(last.rdatas[0])
        if snap.find_zone(target.lower()) != origin:
            steps.append({"kind": "leaves-zone", "target": wire.to_text(target),
                          "text": f"the chain leaves {wire.to_text(origin)} at {wire.to_text(target)}"})
    return {"stage": "local", "name": wire.to_text(qname), "type": type_text(qtype), "zone": wire.to_text(origin),
            "view": f"line {line}" if uses_overlay else "base", "rcode": rcode_text(result.rcode),
            "records": records, "steps": steps}


def _describe_rrset(snap: Snapshot, line: str | None, rrset: wire.RRset, previous: wire.RRset | None,
                    locator: _Locator) -> dict[str, Any]:
    """Where one served RRset comes from: base or overlay, file and line, wildcard or DNAME."""
    entry: dict[str, Any] = {"records": rrset_lines(rrset)}
    key = rrset.name.lower()
    if (rrset.rtype == wire.CNAME and previous is not None and previous.rtype == wire.DNAME
            and wire.is_subdomain(key, previous.name.lower()) and key != previous.name.lower()):
        entry.update(origin="synthesized", by=f"DNAME at {wire.to_text(previous.name)}")
        return entry
    origin = snap.find_zone(key)
    if origin is None:
        entry.update(origin="unknown")
        return entry
    view = snap.view(origin, line)
    owner = key
    node = view.node(key)
    served = node.get(rrset.rtype) if node is not None else None
    if served is None and not view.exists(key):
        owner = WILDCARD_LABEL + _closest_encloser(view, key)
        node = view.node(owner)
        served = node.get(rrset.rtype) if node is not None else None
        entry["wildcard"] = wire.to_text(owner)
    if served is None:
        entry.update(origin="unknown")
        return entry
    base_node = view.base.nodes.get(owner)
    from_base = base_node is not None and base_node.get(rrset.rtype) is served
    entry["origin"] = "base" if from_base else "overlay"
    sources = view.base.sources if from_base else view.overlay_sources
    entry.update(locator.find(sources, origin, owner, rrset.rtype, served, overlay=not from_base))
    return entry


def _steps_of(rrset: wire.RRset, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The wildcard, CNAME and DNAME steps an answer RRset stands for."""
    steps: list[dict[str, Any]] = []
    name = wire.to_text(rrset.name)
    if "wildcard" in entry:
        steps.append({"kind": "wildcard", "name": name, "wildcard": entry["wildcard"],
                      "text": f"{name} does not exist; {entry['wildcard']} answers for it (RFC 4592)"})
    if rrset.rtype == wire.CNAME:
        target = wire.to_text(b"".join(rrset.rdatas[0]))
        how = f"synthesized from the {entry['by']}" if entry.get("origin") == "synthesized" else "CNAME"
        steps.append({"kind": "cname", "name": name, "target": target, "text": f"{name} → {target} ({how})"})
    elif rrset.rtype == wire.DNAME:
        target = wire.to_text(b"".join(rrset.rdatas[0]))
        steps.append({"kind": "dname", "name": name, "target": target,
                      "text": f"names below {name} are substituted to below {target} (DNAME)"})
    return steps


# -- the chain, looking only -------------------------------------------------------------------


@dataclass
class _Trace:
    """What the looking-only stages saw, in the order the chain asked them."""

    snap: Snapshot
    line: str | None
    locator: _Locator
    now: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    forward: dict[str, Any] | None = None


class _TracedAuthority(LineAuthority):
    """The line's local zones, noting each answer with where its records come from."""

    def __init__(self, clock: Any, snapshot: Snapshot, line: str | None, trace: _Trace) -> None:
        super().__init__(clock, snapshot, line)
        self.trace = trace

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Result | None:
        result = super().resolve(qname, qtype, qclass, shape)
        if result is not None:
            trace = self.trace
            trace.steps.append(_describe_local(trace.snap, trace.line, qname, qtype, result, trace.locator))
        return result


class _TracedHosts(HostsFiles):
    """The hosts files, noting each answer with the file line that gave it."""

    def __init__(self, table: Any, ttl: int, trace: _Trace) -> None:
        super().__init__(table, ttl)
        self.trace = trace

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Result | None:
        result = super().resolve(qname, qtype, qclass, shape)
        if result is not None:
            rrset = result.answer[0]
            self.trace.steps.append({"stage": "hosts", "name": wire.to_text(qname), "type": type_text(qtype),
                                     "records": rrset_lines(rrset),
                                     **self.trace.locator.hosts_line(qname, rrset.rtype)})
        return result


class _PeekingCache(CacheStage):
    """The cache stage, reading entries without counting a hit, touching the LRU order or
    starting a prefetch."""

    def __init__(self, clock: Any, forward: Any, trace: _Trace) -> None:
        super().__init__(clock, forward)
        self.trace = trace

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> Result | None:
        forward = self.forward
        key = forward.key(qname.lower(), qtype, qclass, shape.do)
        entry = forward.cache.peek(key)
        now = self.trace.now
        if entry is None or now >= entry.expires_at:
            return None
        pool = forward.forwarder.pool_for(qname.lower())
        due = forward.prefetch_at(entry)
        answer, authority, additional = entry.sections_at(now)
        self.trace.steps.append({
            "stage": "cache", "name": wire.to_text(qname), "type": type_text(qtype),
            "rcode": rcode_text(entry.rcode), "ttl_remaining": entry.remaining(now),
            "ttl_stored": int(entry.expires_at - entry.stored_at), "age": int(now - entry.stored_at),
            "pool": _pool_name(pool), "prefetch_due": due < entry.expires_at and now > due,
            "records": [r for rrset in (*answer, *authority) for r in rrset_lines(rrset)]})
        return Result(rcode=entry.rcode, entry=entry, source="cache", fixed=False)


class _DryUpstream(UpstreamStage):
    """The upstream stage, noting the pool a real query would go to instead of asking it."""

    def __init__(self, clock: Any, forward: Any, trace: _Trace) -> None:
        super().__init__(clock, forward)
        self.trace = trace

    def resolve(self, qname: bytes, qtype: int, qclass: int, shape: RequestShape) -> None:
        qkey = qname.lower()
        pool = self.forward.forwarder.pool_for(qkey)
        if not pool.upstreams:
            return None
        now = self.trace.now
        held = self.forward.cache.peek(self.forward.key(qkey, qtype, qclass, shape.do))
        if held is None:
            cached = "not cached"
        elif now < held.stale_until:
            cached = (f"expired {int(now - held.expires_at)} s ago; the stale copy is served if every upstream "
                      "fails (serve_stale)")
        else:
            cached = "expired"
        step = {"stage": "upstream", "name": wire.to_text(qname), "type": type_text(qtype), "pool": _pool_name(pool),
                "upstreams": [str(u) for u in pool.upstreams], "order": pool.policy, "cache": cached,
                "backed_off": [str(u) for u, h in pool.health.items() if h.down_until > now]}
        self.trace.steps.append(step)
        if self.trace.forward is None:
            self.trace.forward = step
        return None                    # nothing is sent: the chain goes on as if nobody answered


def _pool_name(pool: Any) -> str:
    return "default" if pool.name == wire.ROOT else f"[[forward.zone]] {wire.to_text(pool.name)}"


def _looking_chain(chain: LineChain, trace: _Trace) -> LineChain:
    """The client's chain with every stage of ours replaced by one that only looks."""
    stages: list[Any] = []
    clock = chain.clock
    for stage in chain.stages:
        if isinstance(stage, LineAuthority):
            stage = _TracedAuthority(clock, stage.snapshot, stage.line, trace)
        elif isinstance(stage, HostsFiles):
            stage = _TracedHosts(stage.table, stage.ttl, trace)
        elif isinstance(stage, CacheStage):
            stage = _PeekingCache(clock, stage.forward, trace)
        elif isinstance(stage, UpstreamStage):
            stage = _DryUpstream(clock, stage.forward, trace)
        stages.append(stage)
    return LineChain(clock, stages, chain.recursive, chain.snapshot, prohibited=chain.prohibited)


# -- the explanation ---------------------------------------------------------------------------


def _line_part(snap: Snapshot, client: str) -> dict[str, Any]:
    candidates = snap.lines.candidates(client)
    chosen = snap.lines.lookup(client)
    part: dict[str, Any] = {"name": chosen, "cidr": None, "lost": []}
    if candidates:
        assert candidates[0][0] == chosen
        part["cidr"] = str(candidates[0][1])
        winner = candidates[0][1]
        for name, network in candidates[1:]:
            why = ("shorter prefix" if network.prefixlen < winner.prefixlen
                   else "same prefix, listed after it")
            part["lost"].append({"line": name, "cidr": str(network), "why": why})
    return part


def _recursion_part(snap: Snapshot, client: str, chains: ChainSet) -> dict[str, Any]:
    networks = sorted((n for n in snap.config.access.recursion if contains(n, client)),
                      key=lambda n: -n.prefixlen)
    allowed = snap.recursion.contains(client)
    return {"allowed": allowed, "network": str(networks[0]) if networks else None,
            "offered": chains.cache is not None}


def _policy_name_matches(pattern: str, qkey: bytes) -> bool:
    if pattern.startswith("*."):
        suffix = wire.from_text(pattern[2:]).lower()
        return qkey != suffix and wire.is_subdomain(qkey, suffix)
    return wire.from_text(pattern).lower() == qkey


def _policy_part(snap: Snapshot, qkey: bytes, qtype: int, line: str | None) -> dict[str, Any]:
    """Every rule whose names match, whether it applies to this type and line, and the winner
    (the first that applies, as `smartdns.policy.PolicyTable.match` decides)."""
    config = snap.config
    matched: list[dict[str, Any]] = []
    rules: list[tuple[str, str, tuple[str, ...], frozenset[str], frozenset[int]]] = [
        (f"{config.path or '<default>'}:{rule.line}", rule.action, rule.names, frozenset(rule.lines),
         frozenset(rule.types)) for rule in config.policies]
    for path in config.zones.records_json:
        _records, denies, _problems = read_records_json(path)
        rules += [(f"{path} ({LINE_UNKNOWN}): deny entry", "refuse", (wire.to_text(d.name),), frozenset(d.labels),
                   frozenset({d.rtype})) for d in denies]
    winner_found = False
    for where, action, names, lines, types in rules:
        hits = [n for n in names if _policy_name_matches(n, qkey)]
        if not hits:
            continue
        reasons = []
        if types and qtype not in types:
            reasons.append(f"type {type_text(qtype)} not in {sorted(type_text(t) for t in types)}")
        if lines and line not in lines:
            reasons.append(f"line {line or '(none)'} not in {sorted(lines)}")
        applies = not reasons
        entry: dict[str, Any] = {"where": where, "action": action, "names": hits, "applies": applies,
                                 "wins": applies and not winner_found}
        if reasons:
            entry["why_not"] = "; ".join(reasons)
        winner_found = winner_found or applies
        matched.append(entry)
    return {"matched": matched, "action": snap.policies.match(qkey, qtype, line)}


def _query_bytes(question: Question) -> bytes:
    message = dns.message.make_query(question.name, dns.rdatatype.RdataType.make(question.rtype), use_edns=0, payload=EXPLAIN_EDNS_PAYLOAD)
    message.id = EXPLAIN_QUERY_ID
    return bytes(message.to_wire())


def explain(handler: QueryHandler, question: Question) -> defer.Deferred[dict[str, Any]]:
    """Explain ``question`` against the data ``handler`` serves now (see the module docstring).

    Fires with the explanation; nothing is sent to an upstream and no counter of ``handler``
    changes.  Usually already fired: only resolvers of your own may answer later."""
    snap = handler.snapshot()
    chains = handler.chains()
    client = question.client
    qname = wire.from_text(question.name)
    qkey = qname.lower()
    line = snap.lines.lookup(client)
    recursion = snap.recursion.contains(client)
    trace = _Trace(snap, line, _Locator(snap), handler.reactor.seconds())
    looking = _looking_chain(chains.for_client(line, recursion), trace)
    explainer = QueryHandler(handler.reactor, lambda: snap,
                             lambda _snap: ChainSet({(line, recursion): looking}, None),
                             handler.max_udp_payload, handler.chaos_version, fast_lanes=False, stats=Stats())
    out: dict[str, Any] = {
        "question": question.to_json(),
        "generation": snap.generation,
        "line": _line_part(snap, client),
        "recursion": _recursion_part(snap, client, chains),
        "policy": _policy_part(snap, qkey, question.rtype, line),
    }
    d: defer.Deferred[Any] = defer.maybeDeferred(explainer.handle, _query_bytes(question), client, True)

    def finish(response: bytes | None) -> dict[str, Any]:
        out["steps"] = trace.steps
        out["forward"] = trace.forward
        if trace.forward is not None:
            out["answer"] = None
            forward = trace.forward
            before = "the records found above, then " if trace.steps[0] is not forward else ""
            out["answer_note"] = (f"not shown: a real query would be forwarded (explain never sends one); the answer "
                                  f"would be {before}the upstream's answer for {forward['name']} {forward['type']}")
        elif response is None:
            out["answer"] = None
            out["answer_note"] = "no answer at all: the query is dropped"
        else:
            out["answer"] = dns.message.from_wire(response).to_text()
        return out

    done: defer.Deferred[dict[str, Any]] = d.addCallback(finish)
    return done


# -- the control command and the command line --------------------------------------------------


def control_command(question: Question) -> bytes:
    """The control socket line asking the server to explain ``question``."""
    return b"explain " + json.dumps(question.to_json(), sort_keys=True).encode("utf-8")


def explain_request(handler: QueryHandler, argument: str) -> defer.Deferred[dict[str, Any]]:
    """The control socket's ``explain {json}``: the question as `control_command` sends it."""
    try:
        fields = json.loads(argument)
        question = Question.parse(str(fields["name"]), str(fields["type"]), str(fields["from"]))
    except (ValueError, KeyError, TypeError) as e:
        return defer.fail(ExplainError(f"bad explain request: {e}"))
    except ExplainError as e:
        return defer.fail(e)
    return explain(handler, question)


class ServerAbsent(Exception):
    """No server answers on the control socket (none configured, no socket, or refused)."""


def ask_server(path: str, question: Question) -> dict[str, Any]:
    """The running server's explanation, over its control socket; ServerAbsent when no server
    runs there, OSError for other trouble reaching it, ExplainError when it says no."""
    try:
        reply = exchange(path, control_command(question), CONTROL_TIMEOUT_SECONDS)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise ServerAbsent(path) from None
        raise
    status, _, text = reply.partition("\n")
    if status != "ok explain":
        raise ExplainError(f"the server at {path} says: {status} {text}".rstrip())
    result: dict[str, Any] = json.loads(text)
    return result


def explain_from_files(config_path: str | None, question: Question) -> dict[str, Any]:
    """The explanation with no server running: the config and data loaded from the files, and
    a handler composed as the service composes it (its cache is empty).  LoadError when the
    files do not load."""
    from twisted.internet.task import Clock

    from smartdns.service import SmartDNSService, load

    config, snapshot = load(config_path)
    service = SmartDNSService(config, snapshot, Clock())     # never started: no socket is opened
    found: list[dict[str, Any]] = []
    failures: list[Any] = []
    explain(service.handler, question).addCallbacks(found.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not found:
        raise ExplainError("a resolver of your own did not answer at once; explain it on the running server")
    return found[0]


def render_text(report: dict[str, Any]) -> str:
    """The explanation for people: one section per part, the answer last, as dig prints it."""
    q = report["question"]
    out = [f"{q['name']} {q['type']} from {q['from']}  (data generation {report['generation']}, "
           f"{report.get('explained_by', 'running server')})", ""]
    line = report["line"]
    if line["name"] is None:
        out.append("line:       none (no [lines] network contains the address; the base zones apply)")
    else:
        out.append(f"line:       {line['name']}, chosen by {line['cidr']}")
    for lost in line["lost"]:
        out.append(f"  lost:     {lost['line']} {lost['cidr']} ({lost['why']})")
    rec = report["recursion"]
    if not rec["offered"]:
        out.append("recursion:  offered to nobody (no upstreams configured)")
    elif rec["allowed"]:
        out.append(f"recursion:  allowed, by {rec['network']} ([access] recursion)")
    else:
        out.append("recursion:  not allowed (no [access] recursion network contains the address)")
    policy = report["policy"]
    if not policy["matched"]:
        out.append("policy:     no rule matches")
    for rule in policy["matched"]:
        verdict = "applies, wins" if rule["wins"] else "applies" if rule["applies"] else f"does not apply: {rule['why_not']}"
        out.append(f"policy:     {rule['where']}: {rule['action']} {', '.join(rule['names'])} ({verdict})")
    out.append("")
    if not report["steps"]:
        out.append("chain:      no stage answers" if policy["action"] is None else
                   f"chain:      not asked (policy: {policy['action']})")
    for number, step in enumerate(report["steps"], start=1):
        out += _render_step(number, step)
    out.append("")
    if report["answer"] is None:
        out.append(f"answer:     {report['answer_note']}")
    else:
        out.append("answer:")
        out += ["  " + text for text in report["answer"].splitlines()]
    return "\n".join(out)


def _where(entry: dict[str, Any]) -> str:
    if entry.get("file") is None:
        return str(entry.get("note", LINE_UNKNOWN))
    if entry.get("line") is None:
        return f"{entry['file']} ({entry.get('note', LINE_UNKNOWN)})"
    return f"{entry['file']}:{entry['line']}"


def _render_step(number: int, step: dict[str, Any]) -> list[str]:
    head = f"{number}. {step['stage']:<9}"
    kind = step["stage"]
    if kind == "local":
        out = [f"{head}{step['name']} {step['type']} in zone {step['zone']}, {step['view']} view: {step['rcode']}"]
        for record in step["records"]:
            where = ""
            if record.get("origin") in ("base", "overlay"):
                where = f"{record['origin']}, {_where(record)}"
                if "wildcard" in record:
                    where += f", wildcard {record['wildcard']}"
            elif record.get("origin") == "synthesized":
                where = f"synthesized from the {record['by']}"
            else:
                where = "origin unknown"
            for text in record["records"]:
                out.append(f"     {record['section']:<10} {text}")
            out.append(f"     {'':<10}   ↳ {where}")
        out += [f"     step       {s['text']}" for s in step["steps"]]
        return out
    if kind == "hosts":
        out = [f"{head}{step['name']} {step['type']} from {_where(step)}"]
        return out + [f"     answer     {text}" for text in step["records"]]
    if kind == "cache":
        out = [f"{head}{step['name']} {step['type']}: cached {step['rcode']}, {step['ttl_remaining']} s left "
               f"of {step['ttl_stored']} (pool {step['pool']})"]
        if step["prefetch_due"]:
            out.append("     a real query now would also refresh it in the background (prefetch)")
        return out + [f"     cached     {text}" for text in step["records"]]
    return [f"{head}{step['name']} {step['type']}: {step['cache']}; would be forwarded to pool {step['pool']}: "
            f"{', '.join(step['upstreams'])} ({step['order']})"
            + (f"; backed off now: {', '.join(step['backed_off'])}" if step["backed_off"] else "")]


def run(config_path: str | None, name: str, rtype: str, client: str, as_json: bool) -> int:
    """``smartdns explain``: ask the running server, else answer from the files; print it."""
    import sys

    from smartdns.config import load_config
    from smartdns.errors import LoadError

    try:
        question = Question.parse(name, rtype, client)
    except ExplainError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        config = load_config(config_path)
    except LoadError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    path = config.server.control_socket
    try:
        if not path:
            raise ServerAbsent("")
        report = ask_server(path, question)
        report["explained_by"] = f"running server, control socket {path}"
    except ServerAbsent:
        try:
            report = explain_from_files(config_path, question)
        except LoadError as e:
            for problem in e.problems:
                print(problem, file=sys.stderr)
            return 1
        except ExplainError as e:
            print(e, file=sys.stderr)
            return 1
        report["explained_by"] = "files (no server running; its cache is not known)"
    except ExplainError as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot reach the server's control socket {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(render_text(report))
    return 0


__all__ = ["ExplainError", "Question", "ServerAbsent", "ask_server", "explain", "explain_from_files",
           "explain_request", "render_text", "run"]
