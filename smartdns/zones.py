"""Zone files (BIND master format, via dnspython) → immutable in-memory zones and line views.

Layout on disk: ``<dir>/<origin>.zone`` is a base zone, ``<dir>/<line>/<origin>.zone`` is that
line's overlay holding only what differs.  dnspython does the parsing ($ORIGIN, $TTL, $INCLUDE,
parentheses, quoted TXT, every type it knows); this module turns its output into wire-ready
RRsets and checks what dnspython lets through (CNAME beside other data, missing SOA/NS).
"""
from __future__ import annotations

import builtins
import os
import re
import threading
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Iterable, Iterator, Mapping

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.ttl
import dns.zone
import dns.zonefile

from smartdns import wire
from smartdns.errors import Problem

Node = Mapping[int, wire.RRset]

ZONE_SUFFIX = ".zone"

_include_base = threading.local()


def _open_relative(file: Any, *args: Any, **kwargs: Any) -> Any:
    """``open`` for dnspython's $INCLUDE: relative names resolve against the including zone's
    directory, like BIND's ``directory`` option, instead of the process's working directory."""
    base = getattr(_include_base, "directory", None)
    if base and isinstance(file, str) and not os.path.isabs(file):
        file = os.path.join(base, file)
    opened = getattr(_include_base, "opened", None)
    if opened is not None and isinstance(file, str):
        opened.append(os.path.abspath(file))
    return builtins.open(file, *args, **kwargs)


# dnspython opens $INCLUDE files with the module-global name ``open``; point it at ours.
dns.zonefile.open = _open_relative  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Zone:
    """One zone's data: nodes by name (key form), every existing name, and where it came from."""

    origin: bytes
    nodes: Mapping[bytes, Node]
    names: AbstractSet[bytes]         # names with data plus empty non-terminals (see all_names)
    sources: tuple[str, ...] = ()
    # Names below the apex with NS (zone cuts) and names with DNAME: where RFC 1034 §4.3.2's
    # walk can end above a name.  Derived from ``nodes``; usually empty.
    cuts: frozenset[bytes] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cuts", cuts_of(self.origin, self.nodes))

    @property
    def soa(self) -> wire.RRset | None:
        """The SOA RRset at the apex, if any."""
        node = self.nodes.get(self.origin)
        return node.get(wire.SOA) if node else None


@dataclass(frozen=True, slots=True)
class ZoneView:
    """A zone as one line sees it: the line's overlay nodes win per (name, type) over the base."""

    origin: bytes
    base: Zone
    merged: Mapping[bytes, Node] = field(default_factory=dict)   # names the overlay touches
    extra_names: frozenset[bytes] = frozenset()                   # names only the overlay has
    overlay_sources: tuple[str, ...] = ()
    cuts: frozenset[bytes] = frozenset()                          # Zone.cuts, as this line sees them

    def node(self, name: bytes) -> Node | None:
        """The node at ``name`` for this line, or None."""
        node = self.merged.get(name)
        return node if node is not None else self.base.nodes.get(name)

    def exists(self, name: bytes) -> bool:
        """Whether ``name`` exists for this line (data or empty non-terminal, RFC 4592 §2.2.2)."""
        return name in self.base.names or name in self.extra_names

    @property
    def soa(self) -> wire.RRset:
        """The SOA this line sees (an overlay may carry its own)."""
        node = self.node(self.origin)
        assert node is not None and wire.SOA in node
        return node[wire.SOA]


def all_names(origin: bytes, names: Iterable[bytes]) -> AbstractSet[bytes]:
    """Every name with data plus each ancestor up to the origin (the empty non-terminals).

    When ``names`` is the zone's dictionary of nodes and already holds every such name (no
    empty non-terminals: the usual zone), its keys view is the answer: a set of a million names
    costs 30-60 MB and, built in a reload's thread, C calls of 20-40 ms (its resizes) that the
    reactor waits for.  Otherwise the set is built from a generator, in bytecode, so the
    reactor gets the GIL in between."""
    if isinstance(names, dict) and _complete(origin, names):
        return names.keys()
    return frozenset(_with_ancestors(origin, names))


def _complete(origin: bytes, nodes: Mapping[bytes, Any]) -> bool:
    """Whether ``nodes`` has the origin, and every name in it lies below the origin with each
    ancestor below the origin in ``nodes`` too."""
    if origin not in nodes:
        return False
    size = len(origin)
    parent = wire.parent
    for name in nodes:
        if len(name) > size:
            above = parent(name)
            if len(above) > size and above not in nodes:
                return False
        elif name != origin:
            return False
    return True


def _with_ancestors(origin: bytes, names: Iterable[bytes]) -> Iterator[bytes]:
    """``origin``, each name below it, and each name's ancestors below the origin."""
    yield origin
    size = len(origin)
    climbed: set[bytes] = set()
    parent = wire.parent
    for name in names:
        if len(name) > size:
            yield name
            name = parent(name)
            while len(name) > size and name not in climbed:
                climbed.add(name)
                yield name
                name = parent(name)


def merge_nodes(base: Node | None, overlay: Node) -> Node:
    """Overlay rule per (name, type); a CNAME on either side takes the whole name (RFC 1034 §3.6.2)."""
    if base is None or wire.CNAME in overlay or wire.CNAME in base:
        return overlay
    merged = dict(base)
    merged.update(overlay)
    return merged


def cuts_of(origin: bytes, nodes: Mapping[bytes, Node]) -> frozenset[bytes]:
    """The names of ``nodes`` with NS below the apex, or with DNAME (see ``Zone.cuts``)."""
    ns, dname = wire.NS, wire.DNAME
    found = [name for name, node in nodes.items() if (ns in node and name != origin) or dname in node]
    return frozenset(found) if found else frozenset()


def make_view(base: Zone, overlay: Zone | None) -> ZoneView:
    """The view of ``base`` for a line with ``overlay`` (None: the base itself)."""
    if overlay is None:
        return ZoneView(base.origin, base, cuts=base.cuts)
    merged = {name: merge_nodes(base.nodes.get(name), node) for name, node in overlay.nodes.items()}
    extra = frozenset(n for n in overlay.names if n not in base.names)
    cuts = (base.cuts - merged.keys()) | cuts_of(base.origin, merged)
    return ZoneView(base.origin, base, merged, extra, overlay.sources, cuts)


def origin_from_filename(filename: str) -> str:
    """``example.com.zone`` → ``example.com.``; ``root.zone`` → ``.``."""
    stem = filename[: -len(ZONE_SUFFIX)]
    return "." if stem in ("root", ".") else stem.rstrip(".") + "."


class _FirstTTL:
    """A transaction proxy remembering the TTL of the first record of each RRset: BIND serves an
    RRset whose records disagree (RFC 2181 §5.2) with the first TTL, dnspython keeps the lowest.

    In strict mode (``smartdns check``) it also refuses a second, different record of a
    singleton type (CNAME, SOA), which dnspython would silently let replace the first."""

    def __init__(self, txn: Any, strict: bool = False) -> None:
        self._txn = txn
        self.first: dict[tuple[dns.name.Name, int], int] = {}
        self.strict = strict
        self.singletons: dict[tuple[dns.name.Name, int], Any] = {}
        self.reader: _Reader | None = None

    def add(self, name: dns.name.Name, ttl: int, rdata: Any) -> None:
        rdtype = int(rdata.rdtype)
        if self.strict and rdtype in _SINGLETON_TYPES:
            seen = self.singletons.setdefault((name, rdtype), rdata)
            if seen != rdata and self.reader is not None:
                type_text = dns.rdatatype.to_text(dns.rdatatype.RdataType(rdtype))
                self.reader.report(f"multiple {type_text} records at {name} (a {type_text} RRset holds "
                                   "one record, RFC 2181 §10.1)")
                return
        self.first.setdefault((name, rdtype), ttl)
        self._txn.add(name, ttl, rdata)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._txn, attr)


_SINGLETON_TYPES = frozenset({wire.CNAME, wire.SOA})


class _LineTokenizer(dns.tokenizer.Tokenizer):
    """A tokenizer that remembers the line each statement (record or directive) starts on, so a
    bad ``$TTL`` or a missing ``$INCLUDE`` file is reported at its own line, not the next; and
    the words of the statement so far, so an error can name the word it is about."""

    statement_line = 1
    _fresh = True
    at_line_end = False            # the last token read ended the statement (EOL or EOF)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.words: list[str] = []
        self.leading_blank = False   # the statement began with blanks: no owner, the last one's

    def get(self, want_leading: bool = False, want_comment: bool = False) -> Any:
        token = super().get(want_leading, want_comment)
        self.at_line_end = token.is_eol_or_eof()
        if token.is_eol_or_eof():
            self._fresh = True
        elif token.is_whitespace():
            if self._fresh:
                self.leading_blank = True
        elif self._fresh and not token.is_comment():
            self.statement_line = self.line_number
            self._fresh = False
            self.words = []
        if not self._fresh and (token.is_identifier() or token.is_quoted_string()):
            self.words.append(str(token.value))
        return token

    def unget(self, token: Any) -> None:
        super().unget(token)
        if (token.is_identifier() or token.is_quoted_string()) and self.words:
            self.words.pop()
        self.at_line_end = False


class _Reader(dns.zonefile.Reader):
    """dnspython's reader, remembering where each record starts so errors name its first line
    (dnspython reports the line after the one it has just consumed).

    It reads on past a bad record, so every error in a file is reported (as named-checkzone
    does), each naming the word it is about where that helps.  In strict mode records outside
    the zone are errors too (dnspython skips them silently; named-checkzone warns)."""

    rr_where: tuple[str, int] | None = None
    base_directory = ""
    strict = False
    overlay = False

    def _rr_line(self) -> None:
        self.rr_where = self.tok.where()
        try:
            super()._rr_line()
        except (dns.exception.SyntaxError, dns.zonefile.CNAMEAndOtherData, dns.name.NameTooLong,
                dns.name.LabelTooLong, dns.name.EmptyLabel, ValueError) as e:
            self.report(self._describe(e))
            if not getattr(self.tok, "at_line_end", True):
                self._skip_statement()
        self.rr_where = None

    def _eat_line(self) -> None:
        """dnspython calls this only to skip a record whose owner is outside the zone."""
        if self.strict:
            self.report(f"out-of-zone data: {self.last_name} is not in zone {self.zone_origin}")
        super()._eat_line()  # type: ignore[no-untyped-call]

    def _skip_statement(self) -> None:
        """Read to the end of a bad record (a tokenizer error there, e.g. an unclosed
        parenthesis, ends the file's reading: nothing after it can be placed)."""
        try:
            while True:
                token = self.tok.get()
                if token.is_eol_or_eof():
                    return
        except dns.exception.SyntaxError:
            raise _Rejected() from None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.problems: list[Problem] = []

    def report(self, message: str) -> None:
        """Record a problem at the record being read."""
        self.problems.append(Problem(*self.where(), message))

    def _describe(self, error: Exception) -> str:
        """The error in words a zone author can act on, naming the offending word."""
        if isinstance(error, dns.zonefile.CNAMEAndOtherData):
            return "CNAME and other data at the same name"
        detail = str(error)
        if detail == "Missing default TTL value":
            where = ("an overlay takes its base zone file's $TTL; " if self.overlay else "")
            return ("no TTL: the record has none and no $TTL comes before it "
                    f"({where}add a line such as '$TTL 3600' at the top of the file)")
        words: list[str] = list(getattr(self.tok, "words", []))
        word = words[-1] if words else ""
        rdtype = _statement_type(words, bool(getattr(self.tok, "leading_blank", False)))
        if rdtype == dns.rdatatype.A and word:
            return f"bad IPv4 address {word!r}"
        if rdtype == dns.rdatatype.AAAA and word:
            return f"bad IPv6 address {word!r}"
        if not detail or detail in ("Text input is malformed.", "syntax error"):
            detail = "syntax error"
        return f"{detail} near {word!r}" if word else detail

    def where(self) -> tuple[str, int]:
        """File and line of the record or directive being read (file names made absolute: an
        ``$INCLUDE`` name is relative to the including zone's directory)."""
        if self.rr_where is not None:
            file, line = self.rr_where
        elif isinstance(self.tok, _LineTokenizer):
            file, line = self.tok.where()[0], self.tok.statement_line
        else:
            file, line = self.tok.where()
        file = str(file)
        if not os.path.isabs(file) and self.base_directory:
            file = os.path.join(self.base_directory, file)
        return file, int(line)


def _statement_type(words: list[str], leading_blank: bool) -> int | None:
    """The record type among a statement's words (after the owner, TTL and class), if any."""
    for word in words[0 if leading_blank else 1:]:
        try:
            return int(dns.rdatatype.from_text(word))
        except (dns.rdatatype.UnknownRdatatype, ValueError):
            continue
    return None


_TTL_DIRECTIVE = re.compile(r"^\$TTL[ \t]+(\S+)", re.MULTILINE | re.IGNORECASE)
_TTL_SCAN_CHARS = 1 << 20


def file_default_ttl(path: str) -> int | None:
    """The first ``$TTL`` of a zone file, or None: what its line overlays inherit.

    Read a megabyte at a time, whole lines only, and no further than that first ``$TTL``
    (usually the first line): reading a large base zone whole for each of its overlays was a C
    call of 20-30 ms each time, which a reload's thread made the reactor wait for."""
    match = None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            rest = ""
            while match is None:
                chunk = handle.read(_TTL_SCAN_CHARS)
                text = rest + chunk
                if chunk:
                    cut = text.rfind("\n") + 1
                    text, rest = text[:cut], text[cut:]
                match = _TTL_DIRECTIVE.search(text)
                if not chunk:
                    break
    except OSError:
        return None
    if match is None:
        return None
    try:
        return int(dns.ttl.from_text(match.group(1)))
    except dns.ttl.BadTTL:
        return None


def overlay_default_ttl(base_path: str | None, base: Zone | None) -> int | None:
    """The TTL of overlay records that give none: the base zone file's first ``$TTL``, else its
    SOA's TTL (when the base loaded), else none (each record must then carry one)."""
    ttl = file_default_ttl(base_path) if base_path else None
    if ttl is None and base is not None and base.soa is not None:
        ttl = base.soa.ttl
    return ttl


def check_zone_file(path: str, origin_text: str, *, overlay: bool = False,
                    default_ttl: int | None = None) -> list[Problem]:
    """Every problem in one zone file, as strictly as named-checkzone: what loading reports,
    plus records outside the zone and a second CNAME at one name (which loading, like
    dnspython, skips or lets replace the first).  For ``smartdns check``: it always takes
    dnspython's slower path."""
    return _read_with_dnspython(path, origin_text, overlay=overlay, default_ttl=default_ttl, strict=True)[1]


def read_zone_file(path: str, origin_text: str, *, overlay: bool = False,
                   default_ttl: int | None = None) -> tuple[Zone | None, list[Problem]]:
    """Parse one zone file; return the zone or the problems (``file:line: message``).

    ``default_ttl`` applies to records before any $TTL (an overlay inherits its base zone
    file's $TTL, so a one-line overlay needs none)."""
    from smartdns import fastzone   # imported here: fastzone builds this module's Zone
    fast = fastzone.read_zone_fast(path, origin_text, overlay=overlay, default_ttl=default_ttl)
    if fast is not None:            # None: dnspython reads it (and reports any problem)
        return fast, []
    return _read_with_dnspython(path, origin_text, overlay=overlay, default_ttl=default_ttl, strict=False)


def _read_with_dnspython(path: str, origin_text: str, *, overlay: bool, default_ttl: int | None,
                         strict: bool) -> tuple[Zone | None, list[Problem]]:
    """dnspython's reading of a zone file, reporting every problem in it."""
    try:
        origin = dns.name.from_text(origin_text)
    except dns.exception.DNSException as e:
        return None, [Problem(path, 0, f"file name does not give a valid origin: {e}")]
    zone = dns.zone.Zone(origin, rdclass=dns.rdataclass.IN, relativize=False)
    _include_base.directory = os.path.dirname(os.path.abspath(path))
    _include_base.opened = []
    reader: _Reader | None = None
    try:
        with open(path, encoding="utf-8") as handle:
            with zone.writer(replacement=True) as txn:
                tok = _LineTokenizer(handle, os.path.abspath(path))
                recorder = _FirstTTL(txn, strict)
                reader = _Reader(tok, dns.rdataclass.IN, recorder, allow_include=True,
                                 default_ttl=default_ttl)
                recorder.reader = reader
                reader.strict = strict
                reader.overlay = overlay
                reader.base_directory = os.path.dirname(os.path.abspath(path))
                reader.read()
                if reader.problems:
                    raise _Rejected()
    except _Rejected:
        assert reader is not None
        return None, reader.problems
    except dns.exception.SyntaxError as e:
        problem = _syntax_problem(path, str(e))
        if reader is not None:
            problem = Problem(*reader.where(), problem.message)
        return None, (reader.problems if reader is not None else []) + [problem]
    except dns.zonefile.CNAMEAndOtherData:
        where = reader.where() if reader else (path, 0)
        return None, [Problem(*where, "CNAME and other data at the same name")]
    except (dns.exception.DNSException, UnicodeDecodeError, ValueError) as e:
        where = reader.where() if reader else (path, 0)
        return None, [Problem(*where, str(e) or type(e).__name__)]
    except OSError as e:
        where = reader.where() if reader else (path, 0)
        return None, [Problem(*where, f"{e.strerror or e}: {e.filename or path}")]
    finally:
        _include_base.directory = None
        included, _include_base.opened = _include_base.opened, None
    return convert_zone(zone, path, overlay=overlay, included=tuple(included), first_ttl=recorder.first)


class _Rejected(Exception):
    """Ends the zone transaction without committing when records had problems."""


RecordLines = dict[tuple[bytes, int], list[tuple[str, int, bytes]]]


class _Positions:
    """A transaction proxy noting the file and line of every record the reader adds."""

    def __init__(self, txn: Any, found: RecordLines) -> None:
        self._txn = txn
        self.found = found
        self.reader: _Reader | None = None

    def add(self, name: dns.name.Name, ttl: int, rdata: Any) -> None:
        if self.reader is not None:
            file, line = self.reader.where()
            self.found.setdefault((name_wire(name).lower(), int(rdata.rdtype)), []).append(
                (file, line, rdata_wire(rdata)))
        self._txn.add(name, ttl, rdata)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._txn, attr)


def record_lines(path: str, origin_text: str, *, overlay: bool = False,
                 default_ttl: int | None = None) -> RecordLines:
    """Where each record of a zone file is: (owner key, type) → [(file, line, RDATA wire)] in
    file order, ``$INCLUDE``d files named as themselves.

    For ``smartdns explain`` only: loaded zones keep no positions (the fast reader has none, and
    a position per record would cost memory on every server), so the file is read again here
    with dnspython's reader.  Nothing is committed; a record the reader rejects is skipped, and
    a file that cannot be read gives what was read before the problem."""
    found: RecordLines = {}
    try:
        origin = dns.name.from_text(origin_text)
    except dns.exception.DNSException:
        return found
    zone = dns.zone.Zone(origin, rdclass=dns.rdataclass.IN, relativize=False)
    directory = os.path.dirname(os.path.abspath(path))
    _include_base.directory = directory
    _include_base.opened = []
    try:
        with open(path, encoding="utf-8") as handle:
            with zone.writer(replacement=True) as txn:
                recorder = _Positions(txn, found)
                reader = _Reader(_LineTokenizer(handle, os.path.abspath(path)), dns.rdataclass.IN, recorder,
                                 allow_include=True, default_ttl=default_ttl)
                recorder.reader = reader
                reader.overlay = overlay
                reader.base_directory = directory
                reader.read()
                raise _Rejected()       # positions only: never commit
    except (_Rejected, dns.exception.DNSException, OSError, UnicodeDecodeError, ValueError):
        pass
    finally:
        _include_base.directory = None
        _include_base.opened = None
    return found


def _syntax_problem(path: str, text: str) -> Problem:
    """dnspython writes ``file:line: detail``; split it back into a Problem."""
    head, sep, detail = text.partition(": ")
    file_part, _, line_part = head.rpartition(":")
    if sep and line_part.isdigit():
        return Problem(file_part, int(line_part), detail)
    return Problem(path, 0, text)


def name_wire(name: dns.name.Name | None) -> bytes:
    """The uncompressed wire form of a dnspython name (typed: ``to_wire`` may say None)."""
    assert name is not None
    data = name.to_wire()
    assert data is not None
    return data


def rdata_wire(rdata: Any) -> bytes:
    """The uncompressed wire form of a dnspython rdata."""
    data = rdata.to_wire()
    assert data is not None
    return bytes(data)


def convert_zone(zone: dns.zone.Zone, path: str, *, overlay: bool = False, included: tuple[str, ...] = (),
                 first_ttl: Mapping[tuple[dns.name.Name, int], int] | None = None) -> tuple[Zone | None, list[Problem]]:
    """dnspython zone → our immutable Zone with wire-ready RRsets."""
    origin = name_wire(zone.origin).lower()
    nodes: dict[bytes, dict[int, wire.RRset]] = {}
    for name, dnode in zone.nodes.items():
        spelled = name_wire(name)         # owners keep the zone file's case, as BIND serves them
        key = spelled.lower()
        node: dict[int, wire.RRset] = {}
        for rds in dnode.rdatasets:
            if rds.rdclass != dns.rdataclass.IN or rds.rdtype == dns.rdatatype.RRSIG:
                continue  # IN only; RRSIGs are per covered type and signing is out of scope
            ttl = first_ttl.get((name, int(rds.rdtype)), rds.ttl) if first_ttl else rds.ttl
            node[int(rds.rdtype)] = wire.make_rrset(spelled, int(rds.rdtype), ttl, [rdata_wire(rd) for rd in rds])
        if node:
            nodes.setdefault(key, {}).update(node)
    problems: list[Problem] = []
    apex = nodes.get(origin, {})
    if not overlay:
        if wire.SOA not in apex:
            problems.append(Problem(path, 0, f"zone {zone.origin} has no SOA record at its origin"))
        if wire.NS not in apex:
            problems.append(Problem(path, 0, f"zone {zone.origin} has no NS records at its origin"))
    if problems:
        return None, problems
    return Zone(origin, nodes, all_names(origin, nodes), (path, *included)), []


def zone_from_records(origin: bytes, records: Iterable[tuple[bytes, int, int, bytes]], sources: tuple[str, ...]) -> Zone:
    """A zone from (owner, type, ttl, rdata) rows, grouped into RRsets by owner key; the first
    spelling and the first TTL of each RRset win (RFC 2181 §5.2, as BIND)."""
    grouped: dict[bytes, dict[int, tuple[bytes, int, list[bytes]]]] = {}
    for name, rtype, ttl, rdata in records:
        entry = grouped.setdefault(name.lower(), {}).setdefault(rtype, (name, ttl, []))
        if rdata not in entry[2]:
            entry[2].append(rdata)
    nodes = {
        key: {rtype: wire.make_rrset(name, rtype, ttl, rdatas) for rtype, (name, ttl, rdatas) in types.items()}
        for key, types in grouped.items()
    }
    return Zone(origin, nodes, all_names(origin, nodes), sources)


def scan_zone_directory(directory: str, line_names: Iterable[str], *, missing_ok: bool = False) -> tuple[
        dict[str, str], dict[str, dict[str, str]], list[Problem]]:
    """Find base zone files and per-line overlay files.

    Returns ({origin text: path}, {line: {origin text: path}}, problems).  A subdirectory holding
    zone files that is not a configured line is an error: its data would otherwise silently never
    be served.  With ``missing_ok`` (the directory is the default, not configured), a directory
    that does not exist holds no zones.
    """
    bases: dict[str, str] = {}
    overlays: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    lines = set(line_names)
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        if missing_ok:
            return bases, overlays, problems
        return bases, overlays, [Problem(directory, 0, "the zones directory does not exist")]
    except OSError as e:
        return bases, overlays, [Problem(directory, 0, f"cannot read zones directory: {e.strerror}")]
    for entry in entries:
        if entry.startswith("."):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            try:
                files = [sub for sub in sorted(os.listdir(path)) if sub.endswith(ZONE_SUFFIX) and not sub.startswith(".")]
            except OSError as e:
                problems.append(Problem(path, 0, f"cannot read overlay directory: {e.strerror}"))
                continue
            if entry not in lines:
                # Directories without zone files ($INCLUDE fragments, say) are not overlays.
                if files:
                    known = ", ".join(sorted(lines)) or "none"
                    problems.append(Problem(path, 0, f"overlay directory for unknown line {entry!r} "
                                                     f"(add it to [lines]; configured lines: {known})"))
                continue
            for sub in files:
                overlays.setdefault(entry, {})[origin_from_filename(sub)] = os.path.join(path, sub)
        elif entry.endswith(ZONE_SUFFIX):
            bases[origin_from_filename(entry)] = path
    return bases, overlays, problems
