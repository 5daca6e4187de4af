"""A fast reader for the everyday shapes of zone files, giving exactly what dnspython's gives.

Why: dnspython's zone reader costs about 80 µs of CPU a record here (a character-at-a-time
tokenizer, an Rdata object per record, a transaction that re-checks the node on every add), so
a zone of 100,000 records took 8 s of CPU to load (the target is 5 s), and every reload as
long.  This module reads the common forms itself, line by line with string operations, and
builds the same ``zones.Zone`` in about a tenth of that (``bench/zone_load.py``).

The contract is strict: ``read_zone_fast`` returns the Zone that the dnspython path of
``zones.read_zone_file`` would build — same names, same RRsets, byte-identical RDATA, same TTLs —
or None, and then the caller runs dnspython.  It returns None for anything it does not reproduce
exactly and for every error (bad data, CNAME beside other data, a base zone without SOA or NS),
so problems are always dnspython's, with the lines ``zones`` reports.

Handled here: owners (absolute, relative, ``@``, blank = the previous owner), TTLs with units,
class IN, ``$TTL``, ``$ORIGIN``, comments, parentheses after the type, quoted strings with
escapes; A, AAAA, NS, CNAME, PTR, MX, TXT, SRV and SOA parsed natively; other ordinary types
(CAA, DS, TLSA, HTTPS, ...) parsed by dnspython's own rdata parser from the rest of the line.
Declined (the dnspython path runs): ``$INCLUDE``, ``$GENERATE``, ``$UNICODE``, classes other than
a plain ``IN``, escapes or quotes in owners, a parenthesis before the type, non-ASCII or
control characters (in a comment too when the line has quotes, escapes or parentheses), DNSSEC
and other types with special node rules (RRSIG, SIG, NSEC, NSEC3, KEY, DNAME, NXT,
meta-types), and anything dnspython would reject.

dnspython behaviour reproduced (zonefile.Reader, transaction, rdataset):
- TTL of a record without one: ``$TTL`` (or the caller's default) wins; else the last explicit
  TTL; else the SOA MINIMUM of the SOA read before any ``$TTL`` (RFC 2308 §4 ordering, as the
  installed dnspython implements it).
- Duplicate RDATA (compared in DNSSEC canonical form, names case-folded) keeps the first copy;
  CNAME and SOA keep the last record.  As ``zones`` serves them: an RRset has the TTL of its
  first record, and a name the spelling (case) of its first record's owner.
- Owners outside the zone are skipped silently, but still become the "previous owner".
- CNAME beside other data is an error at the record that makes the clash.
"""
from __future__ import annotations

import contextlib
import gc
import os
import re
import struct
import sys
from typing import IO, Any, Iterator, Sequence

import dns.exception
import dns.ipv6
import dns.name
import dns.node
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA

from smartdns import wire
from smartdns.zones import Zone, all_names

MAX_TTL_SECONDS = 2**32 - 1          # dns.ttl.MAX_TTL: dnspython accepts the full 32 bits
MAX_LABEL_OCTETS = 63
MAX_NAME_OCTETS = 255
MAX_STRING_OCTETS = 255              # one TXT character-string (RFC 1035 §3.3)

# Types parsed here without dnspython.  None of these mnemonics is also a class mnemonic, so
# seeing one where dnspython tries the class is unambiguous.
_NATIVE_TYPES: dict[str, int] = {
    "A": wire.A, "AAAA": wire.AAAA, "NS": wire.NS, "CNAME": wire.CNAME, "PTR": wire.PTR,
    "MX": wire.MX, "TXT": wire.TXT, "SRV": wire.SRV, "SOA": wire.SOA,
}
_NATIVE_CODES = frozenset(_NATIVE_TYPES.values())
# Types whose rdataset keeps only the last record added (dns.rdatatype._singletons ∩ ours).
_SINGLETON_TYPES = frozenset({wire.CNAME, wire.SOA})

_TTL_UNITS = re.compile(r"(?:[0-9]+[wdhmsWDHMS])+")
_TTL_UNIT_PART = re.compile(r"([0-9]+)([wdhmsWDHMS])")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DIGITS = frozenset("0123456789")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPECIAL = re.compile(r'["\\()]')

# One token of dnspython's tokenizer, for lines with quotes, escapes or parentheses.  A backslash
# takes the next character into the token (never a newline); quoted strings cannot span lines.
_TOKEN = re.compile(r"""[ \t]*(?:
      (?P<comment>;[^\n]*)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<newline>\n)
    | "(?P<quoted>(?:[^"\\\n]|\\[^\n])*)"
    | (?P<word>(?:[^ \t\n;()"\\]|\\[^\n])+)
    )""", re.X)

PLAIN, ESCAPED, QUOTED = 0, 1, 2     # token kinds

# Text read at a time: each C call on it (decode, split, the character checks) is short, so a
# reload building in a thread holds the GIL only briefly at a time (smartdns.reload).
CHUNK_CHARS = 1 << 18
# Zone files from this size up (some 40,000 records) are frozen out of the collector's sight
# once loaded (see _collector_paused); small ones, the tests' among them, are left to it.
FREEZE_MIN_BYTES = 1 << 20

_SOA_TIMERS = struct.Struct("!IIIII")
_SRV_NUMBERS = struct.Struct("!HHH")
_PREFERENCE = struct.Struct("!H")


class _Decline(Exception):
    """This file needs the dnspython path (unsupported construct or an error to report)."""


def read_zone_fast(path: str, origin_text: str, *, overlay: bool = False,
                   default_ttl: int | None = None) -> Zone | None:
    """The zone in ``path`` as ``zones.read_zone_file`` would load it, or None to use dnspython.

    None means "not reproduced here": the file uses something this reader declines, or it has
    an error, which the dnspython path then reports with its file and line."""
    result = _attempt(path, origin_text, overlay, default_ttl)
    return result if isinstance(result, Zone) else None


def decline_reason(path: str, origin_text: str, *, overlay: bool = False,
                   default_ttl: int | None = None) -> str | None:
    """Why ``read_zone_fast`` leaves this file to dnspython, or None if it does not."""
    result = _attempt(path, origin_text, overlay, default_ttl)
    return None if isinstance(result, Zone) else result


def _attempt(path: str, origin_text: str, overlay: bool, default_ttl: int | None) -> Zone | str:
    """The zone, or the reason for declining it."""
    try:
        origin = dns.name.from_text(origin_text)
        handle = open(path, encoding="utf-8")    # universal newlines, as the slow path
    except (dns.exception.DNSException, OSError, UnicodeError, ValueError) as e:
        return f"cannot read: {e!r}"
    loader = _Loader(origin, default_ttl)
    try:
        large = os.fstat(handle.fileno()).st_size >= FREEZE_MIN_BYTES and _may_freeze()
        with handle, _collector_paused(freeze=large):
            loader.feed(_Lines(handle))
            return loader.zone(path, overlay)
    except _Decline as e:
        reason = str(e)
    except (OSError, UnicodeError) as e:
        return f"cannot read: {e!r}"
    except (IndexError, ValueError, struct.error) as e:
        reason = repr(e)
    return f"line {loader.line}: {reason}" if loader.line else reason


@contextlib.contextmanager
def _collector_paused(freeze: bool = False) -> Iterator[None]:
    """Keep the cyclic garbage collector out of a bulk load.

    A load allocates a few objects per record and frees none, so the collector would run
    again and again over an ever larger heap for nothing (it roughly doubled the load time);
    nothing built here forms reference cycles.  It is restored only if it was on, so
    overlapping loads in two threads never leave it off.

    With ``freeze`` (a large file) the objects are then frozen (``gc.freeze``: moved where
    collections never look).  Left young, the next collection after the load, in whatever
    thread allocates next, would walk every one of them at once, and later ones again: 1.5 s
    each for a million names, stalls of the reactor when a reload built them in a thread.
    Frozen objects are still freed by reference counting when a later reload drops the zone.
    A freeze also freezes whatever garbage cycles exist at that moment, which would then never
    be freed, so garbage is collected first, while the young objects are few; and it freezes
    long-lived cycles that become garbage later (answers in flight), so it is done here only
    before the reactor runs (``_may_freeze``): when the server starts.  When the collector is
    off already, whoever turned it off decides for the whole build: a reload's build runs
    under ``smartdns.background.quiet`` and is frozen as a whole once it is done
    (``smartdns.background.frozen_after``)."""
    enabled = gc.isenabled()
    if freeze and enabled:
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def _may_freeze() -> bool:
    """Whether no reactor runs yet (the server starting, ``smartdns check``): no answer is in
    flight then whose reference cycles a freeze could keep forever."""
    reactor = sys.modules.get("twisted.internet.reactor")
    return reactor is None or not getattr(reactor, "running", False)


def _ttl(token: str) -> int | None:
    """dns.ttl.from_text for a plain token: seconds, or None if it is not a TTL."""
    if token.isdigit():
        value = int(token)
    elif token[0] in _DIGITS and _TTL_UNITS.fullmatch(token):
        value = sum(int(n) * _UNIT_SECONDS[u.lower()] for n, u in _TTL_UNIT_PART.findall(token))
    else:
        return None
    if value > MAX_TTL_SECONDS:
        raise _Decline("TTL out of range")
    return value


def _uint(token: str, limit: int) -> int:
    """An unsigned decimal no larger than ``limit`` (dns.tokenizer.as_uint16/as_uint32)."""
    if not token.isdigit():
        raise _Decline("not an integer")
    value = int(token)
    if value > limit:
        raise _Decline("integer out of range")
    return value


_OCTETS = {str(value): value for value in range(256)}   # exactly the spellings dnspython takes


def _ipv4(token: str) -> bytes:
    """dns.ipv4.inet_aton: four decimal octets 0-255, no leading zeros."""
    parts = token.split(".")
    if len(parts) != 4:
        raise _Decline("bad IPv4 address")
    try:
        return bytes(map(_OCTETS.__getitem__, parts))
    except KeyError as e:
        raise _Decline("bad IPv4 address") from e


def _unescape(value: str) -> bytes:
    """dns.tokenizer.Token.unescape_to_bytes for ASCII text: ``\\DDD`` and ``\\X``."""
    if "\\" not in value:
        return value.encode("ascii")
    out = bytearray()
    i, end = 0, len(value)
    while i < end:
        c = value[i]
        i += 1
        if c == "\\":
            c = value[i]
            i += 1
            if c.isdigit():
                digits = value[i - 1:i + 2]
                i += 2
                if len(digits) != 3 or not digits.isdigit() or int(digits) > 255:
                    raise _Decline("bad escape")
                out.append(int(digits))
                continue
        out += c.encode("ascii")
    return bytes(out)


def _generic_ok(rdtype: int) -> bool:
    """Types dnspython may parse for us: ordinary data with no special node or rdataset rules."""
    return (rdtype != 0 and not dns.rdatatype.is_metatype(dns.rdatatype.RdataType.make(rdtype))
            and not dns.rdatatype.is_singleton(dns.rdatatype.RdataType.make(rdtype))
            and rdtype not in (dns.rdatatype.RRSIG, dns.rdatatype.SIG)
            and dns.node.NodeKind.classify(dns.rdatatype.RdataType.make(rdtype), dns.rdatatype.NONE)
            is dns.node.NodeKind.REGULAR)


def _to_wire(item: dns.name.Name | dns.rdata.Rdata) -> bytes:
    """Uncompressed wire form; dnspython types ``to_wire`` as Optional for its write-to-file mode."""
    data = item.to_wire()
    assert data is not None         # no file given: the bytes are returned
    return data


class _Lines:
    """A zone file's lines, read ``CHUNK_CHARS`` at a time into batches of whole lines: the
    whole text and a list of all its lines at once were a third of a large load's peak memory,
    and each pass over them one long C call."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.batch: list[str] = []
        self.index = 0                  # the next line of ``batch`` to read
        self.clean = True               # the batch is ASCII without control characters
        self.plain = True               # ... and has no quote, backslash or parenthesis
        self._rest = ""                 # a line read only in part
        self._ended = False

    def refill(self) -> bool:
        """Read the next batch; False at the end of the file."""
        while not self._ended:
            chunk = self.handle.read(CHUNK_CHARS)
            if chunk:
                text = self._rest + chunk
                cut = text.rfind("\n")
                if cut < 0:
                    self._rest = text
                    continue
                self._rest = text[cut + 1:]
                text = text[:cut]
            else:
                self._ended = True
                text, self._rest = self._rest, ""
                if not text:
                    return False
            self.batch = text.split("\n")
            self.index = 0
            self.clean = text.isascii() and not _CONTROL.search(text)
            self.plain = self.clean and _SPECIAL.search(text) is None
            return True
        return False

    def next_line(self) -> str | None:
        """The next line, or None at the end of the file (``clean`` then describes its batch)."""
        while self.index >= len(self.batch):
            if not self.refill():
                return None
        line = self.batch[self.index]
        self.index += 1
        return line


class _Loader:
    """Reader state (origins, last owner, TTL defaults) and the RRsets built so far.

    The zone's own structures are built as records come (a node per name, an RRset per type),
    so a load holds little besides them: an RRset is made again only in ``zone`` if it got a
    second record (``several``), and canonical forms, for dropping duplicate records, are kept
    only where one differs from the record's wire form (``canonicals``)."""

    def __init__(self, origin: dns.name.Name, default_ttl: int | None) -> None:
        self.origin_name = origin
        self.origin_wire = _to_wire(origin)
        self.origin_key = self.origin_wire.lower()
        self.current_name = origin                 # $ORIGIN, for names dnspython parses
        self.current = self.origin_wire            # the same, as wire with its case
        self.current_in_zone = True
        self.last_owner = self.origin_wire
        self.last_key = self.origin_key
        self.last_in_zone = True
        self.last_ttl: int | None = None
        self.default_ttl = default_ttl
        self.default_from_soa = False
        # name key → type → RRset: each with its first record's TTL and the node's first spelling
        self.nodes: dict[bytes, dict[int, wire.RRset]] = {}
        # (name key, type) → ([rdata wire], {canonical rdata}) of RRsets with more than one record
        self.several: dict[tuple[bytes, int], tuple[list[bytes], set[bytes]]] = {}
        # (name key, type) → canonical form of a one-record RRset's record, where it is not the wire
        self.canonicals: dict[tuple[bytes, int], bytes] = {}
        self.line = 0
        self.generic_types: dict[str, int | None] = {}
        self.non_classes: set[str] = set()

    # -- names ---------------------------------------------------------------------------

    def name(self, text: str) -> bytes:
        """Wire form of a plain (escape-free) name token, relative ones under $ORIGIN."""
        if text[-1] == ".":
            if text == ".":
                return wire.ROOT
            labels = text[:-1].split(".")
            tail = wire.ROOT
        elif text == "@":
            return self.current
        elif "." not in text:               # one relative label: most owners
            if len(text) > MAX_LABEL_OCTETS:
                raise _Decline("empty or long label")
            out = (chr(len(text)) + text).encode("ascii") + self.current
            if len(out) > MAX_NAME_OCTETS:
                raise _Decline("name too long")
            return out
        else:
            labels = text.split(".")
            tail = self.current
        for label in labels:
            if not 0 < len(label) <= MAX_LABEL_OCTETS:
                raise _Decline("empty or long label")
        # Label lengths are at most 63, so chr(length) is one ASCII character.
        out = "".join([chr(len(label)) + label for label in labels]).encode("ascii") + tail
        if len(out) > MAX_NAME_OCTETS:
            raise _Decline("name too long")
        return out

    # -- input ---------------------------------------------------------------------------

    def feed(self, source: _Lines) -> None:
        """Read every line.  ``self.line`` is the line a statement starts on, for decline_reason."""
        while source.index < len(source.batch) or source.refill():
            batch = source.batch
            count = len(batch)
            index = source.index
            clean, plain = source.clean, source.plain
            while index < count:
                line = batch[index]
                index += 1
                self.line += 1
                if not line:
                    continue
                if plain or _SPECIAL.search(line) is None:
                    semi = line.find(";")
                    body = line if semi < 0 else line[:semi]
                    tokens = body.split()
                    if not tokens:
                        continue
                    if not clean and not _printable(body):
                        raise _Decline("non-ASCII or control character")
                    first = body[0]
                    if first == "$":
                        self.directive(tokens, None)
                    elif first == " " or first == "\t":
                        self.record(tokens, None, True, -1, "", ())
                    elif not self.plain_a(tokens):
                        self.record(tokens, None, False, -1, "", ())
                    continue
                source.index = index
                self.line += self.complex_line(line, source, clean)
                if source.batch is not batch:
                    break                   # continuation lines came from the next batch
                index = source.index
            else:
                source.index = index
        self.line = 0

    def complex_line(self, text: str, source: _Lines, clean: bool) -> int:
        """A line with quotes, escapes or parentheses (and its continuation lines, taken from
        ``source``); returns how many continuation lines it took."""
        taken = 0
        if not clean and not _printable(text):
            raise _Decline("non-ASCII or control character")
        tokens: list[str] = []
        kinds: list[int] = []
        ends: list[int] = []
        depth = 0
        paren_at = -1             # tokens read before the first parenthesis
        pos = 0
        while True:
            match = _TOKEN.match(text, pos)
            if match is None:
                if text[pos:].strip(" \t"):
                    raise _Decline("unsupported token")
                if depth == 0:
                    break
                more = source.next_line()
                if more is None:
                    raise _Decline("unbalanced parentheses")
                taken += 1
                if not source.clean and not _printable(more):
                    raise _Decline("non-ASCII or control character")
                text += "\n" + more
                continue
            pos = match.end()
            group = match.lastgroup
            if group == "word":
                value = match.group("word")
                tokens.append(value)
                kinds.append(ESCAPED if "\\" in value else PLAIN)
                ends.append(pos)
            elif group == "quoted":
                tokens.append(match.group("quoted"))
                kinds.append(QUOTED)
                ends.append(pos)
            elif group == "open" or group == "close":
                if paren_at < 0:
                    paren_at = len(tokens)
                depth += 1 if group == "open" else -1
                if depth < 0:
                    raise _Decline("unbalanced parentheses")
            # a comment, or a newline inside parentheses: whitespace
        if not tokens:
            return taken
        first = text[0]
        if first == "$":
            if paren_at >= 0:
                raise _Decline("parenthesis in a directive")
            self.directive(tokens, kinds)
        else:
            self.record(tokens, kinds, first == " " or first == "\t", paren_at, text, ends)
        return taken

    def plain_a(self, tokens: list[str]) -> bool:
        """``owner IN A address`` or ``owner A address`` with a one-label relative owner, the
        TTL from the defaults, under an $ORIGIN in the zone: most lines of a large zone, read
        here as ``record`` reads them, without its general steps.  False: ``record`` reads it."""
        count = len(tokens)
        if not (count == 4 and tokens[2] == "A" and tokens[1] == "IN" or count == 3 and tokens[1] == "A"):
            return False
        text = tokens[0]
        if "." in text or text == "@" or len(text) > MAX_LABEL_OCTETS or not self.current_in_zone:
            return False
        ttl = self.implicit_ttl()
        owner = (chr(len(text)) + text).encode("ascii") + self.current
        if ttl is None or len(owner) > MAX_NAME_OCTETS:
            return False
        key = owner.lower()
        if key == owner:
            owner = key
        self.last_owner = owner
        self.last_key = key
        self.last_in_zone = True
        data = _ipv4(tokens[-1])
        self.add(owner, key, wire.A, ttl, data, data)
        return True

    def directive(self, tokens: list[str], kinds: list[int] | None) -> None:
        """$TTL and $ORIGIN; every other directive is declined."""
        keyword = tokens[0].upper()
        if keyword not in ("$TTL", "$ORIGIN"):
            raise _Decline(f"directive {keyword}")
        if len(tokens) != 2 or (kinds is not None and any(kinds)):
            raise _Decline("unsupported directive form")
        if keyword == "$TTL":
            ttl = _ttl(tokens[1])
            if ttl is None:
                raise _Decline("bad $TTL")
            self.default_ttl = ttl
            self.default_from_soa = False
        else:
            # $ORIGIN is rare: let dnspython build the name, relative to the current origin.
            try:
                origin = dns.name.from_text(tokens[1], self.current_name)
            except dns.exception.DNSException as e:
                raise _Decline("bad $ORIGIN") from e
            self.current_name = origin
            self.current = _to_wire(origin)
            self.current_in_zone = wire.is_subdomain(self.current.lower(), self.origin_key)

    # -- records -------------------------------------------------------------------------

    def record(self, tokens: list[str], kinds: list[int] | None, blank_owner: bool,
               paren_at: int, text: str, ends: Sequence[int]) -> None:
        """One resource record: owner, [TTL] [IN] [TTL] type, RDATA (zonefile.Reader._rr_line).

        ``kinds`` is None when every token is plain (then the tokens are the whole text);
        otherwise ``text`` is the record's text, ``ends`` where each token ends in it, and
        ``paren_at`` how many tokens came before the first parenthesis (-1: none)."""
        at = 0
        if not blank_owner:
            if kinds is not None and kinds[0]:
                raise _Decline("escaped or quoted owner")
            first = tokens[0]
            owner = self.name(first)
            key = owner.lower()
            if key == owner:
                owner = key                 # one object for key and spelling: most names
            self.last_owner = owner
            self.last_key = key
            self.last_in_zone = ((first[-1] != "." and self.current_in_zone)
                                 or wire.is_subdomain(key, self.origin_key))
            at = 1
        if not self.last_in_zone:
            return                # outside the zone: dnspython skips the record
        owner = self.last_owner
        key = self.last_key
        head = at
        token = tokens[at]
        ttl = _ttl(token)
        if ttl is not None:
            self.last_ttl = ttl
            at += 1
            token = tokens[at]
        upper = token.upper()
        if upper == "IN":
            at += 1
            token = tokens[at]
            upper = token.upper()
        elif upper not in _NATIVE_TYPES:
            self.not_a_class(token)
        if ttl is None:
            ttl = _ttl(token)
            if ttl is not None:
                self.last_ttl = ttl
                at += 1
                token = tokens[at]
                upper = token.upper()
            else:
                ttl = self.implicit_ttl()
        if kinds is not None and any(kinds[head:at + 1]):
            # dnspython wants plain identifiers up to the type: a quoted token there is an
            # error, and an escaped one ends up read as an unknown type.
            raise _Decline("quoted or escaped token before the RDATA")
        rdtype = _NATIVE_TYPES.get(upper)
        if rdtype is None:
            rdtype = self.generic_type(token)
        at += 1
        if 0 <= paren_at < at:
            raise _Decline("parenthesis before the type")
        if rdtype not in _NATIVE_CODES:
            native = False
        elif kinds is None or not any(kinds[at:]):
            native = True
        else:   # quotes or escapes in the RDATA: only TXT is read here (bar RFC 3597's \#)
            native = rdtype == wire.TXT and not _generic_syntax(tokens, kinds, at)
        if native:
            rdata, canonical, minimum = self.native(rdtype, tokens[at:], kinds[at:] if kinds else None)
        else:
            rest = " ".join(tokens[at:]) if kinds is None else text[ends[at - 1]:]
            rdata, canonical, minimum = self.generic(rdtype, rest)
        if rdtype == wire.SOA:
            if key != self.origin_key:
                raise _Decline("SOA away from the origin")
            if self.default_ttl is None:
                self.default_ttl = minimum
                self.default_from_soa = True
                if ttl is None:
                    ttl = self.implicit_ttl()
        if ttl is None:
            raise _Decline("missing TTL")
        self.add(owner, key, rdtype, ttl, rdata, canonical)

    def not_a_class(self, token: str) -> None:
        """dnspython tries every token in the class position as a class first."""
        if token in self.non_classes:
            return
        try:
            dns.rdataclass.from_text(token)
        except dns.exception.SyntaxError as e:
            raise _Decline("bad class") from e
        except Exception:
            self.non_classes.add(token)
            return
        raise _Decline("class other than a plain IN")

    def generic_type(self, token: str) -> int:
        """A type parsed by dnspython's rdata code, if it has no special rules."""
        upper = token.upper()
        if upper not in self.generic_types:
            try:
                rdtype: int | None = int(dns.rdatatype.from_text(token))
            except Exception:
                rdtype = None
            if rdtype is not None and rdtype not in _NATIVE_CODES and not _generic_ok(rdtype):
                rdtype = None
            self.generic_types[upper] = rdtype
        found = self.generic_types[upper]
        if found is None:
            raise _Decline(f"type {token}")
        return found

    def implicit_ttl(self) -> int | None:
        """zonefile.Reader._implicit_ttl with rfc2308_ttl on."""
        if self.last_ttl is not None and (self.default_ttl is None or self.default_from_soa):
            return self.last_ttl
        return self.default_ttl

    def native(self, rdtype: int, args: list[str], kinds: list[int] | None) -> tuple[bytes, bytes, int]:
        """RDATA of the types parsed here: (wire, canonical form for duplicates, SOA minimum)."""
        if rdtype == wire.A:
            if len(args) != 1:
                raise _Decline("A takes one address")
            data = _ipv4(args[0])
            return data, data, 0
        if rdtype == wire.TXT:
            if not args:
                raise _Decline("TXT without strings")
            out = bytearray()
            for index, value in enumerate(args):
                raw = _unescape(value) if kinds is not None and kinds[index] else value.encode("ascii")
                if len(raw) > MAX_STRING_OCTETS:
                    raise _Decline("TXT string too long")
                out.append(len(raw))
                out += raw
            data = bytes(out)
            return data, data, 0
        if rdtype == wire.AAAA:
            if len(args) != 1:
                raise _Decline("AAAA takes one address")
            data = _ipv6(args[0])
            return data, data, 0
        if rdtype in (wire.NS, wire.CNAME, wire.PTR):
            if len(args) != 1:
                raise _Decline("one name expected")
            data = self.name(args[0])
            return data, data.lower(), 0
        if rdtype == wire.MX:
            if len(args) != 2:
                raise _Decline("MX takes preference and exchange")
            head = _PREFERENCE.pack(_uint(args[0], 0xFFFF))
            target = self.name(args[1])
            return head + target, head + target.lower(), 0
        if rdtype == wire.SRV:
            if len(args) != 4:
                raise _Decline("SRV takes priority, weight, port and target")
            head = _SRV_NUMBERS.pack(*(_uint(a, 0xFFFF) for a in args[:3]))
            target = self.name(args[3])
            return head + target, head + target.lower(), 0
        # SOA
        if len(args) != 7:
            raise _Decline("SOA takes seven fields")
        mname = self.name(args[0])
        rname = self.name(args[1])
        timers = [_uint(args[2], 0xFFFFFFFF)]
        for value in args[3:]:
            seconds = _ttl(value)
            if seconds is None:
                raise _Decline("bad SOA timer")
            timers.append(seconds)
        tail = _SOA_TIMERS.pack(*timers)
        return mname + rname + tail, mname.lower() + rname.lower() + tail, timers[4]

    def generic(self, rdtype: int, text: str) -> tuple[bytes, bytes, int]:
        """RDATA parsed by dnspython from the rest of the record's text (same tokenizer)."""
        try:
            rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype), text,
                                     self.current_name, False, self.origin_name)
            data = _to_wire(rd)
            canonical = rd.to_digestable()
        except Exception as e:        # dnspython reports every rdata failure as a syntax error
            raise _Decline(f"rdata: {e}") from e
        minimum = rd.minimum if isinstance(rd, dns.rdtypes.ANY.SOA.SOA) else 0
        return data, canonical, minimum

    def add(self, owner: bytes, key: bytes, rdtype: int, ttl: int, rdata: bytes,
            canonical: bytes) -> None:
        """Transaction.add: CNAME-and-other-data check, union with the RRset so far.

        The RRset keeps its first record's TTL and the node its first spelling of the owner,
        as ``zones`` does (BIND serves both that way)."""
        node = self.nodes.get(key)
        if node is None:
            self.nodes[key] = {rdtype: wire.RRset(owner, rdtype, ttl, (wire.rdata_parts(rdtype, rdata),))}
            if canonical != rdata:
                self.canonicals[key, rdtype] = canonical
            return
        if rdtype == wire.CNAME:
            if any(t != wire.CNAME for t in node):
                raise _Decline("CNAME and other data")
        elif wire.CNAME in node:
            raise _Decline("CNAME and other data")
        rrset = node.get(rdtype)
        if rrset is None:
            spelling = next(iter(node.values())).name
            node[rdtype] = wire.RRset(spelling, rdtype, ttl, (wire.rdata_parts(rdtype, rdata),))
            if canonical != rdata:
                self.canonicals[key, rdtype] = canonical
            return
        if rdtype in _SINGLETON_TYPES:      # the last record replaces the one before
            node[rdtype] = wire.RRset(rrset.name, rdtype, rrset.ttl, (wire.rdata_parts(rdtype, rdata),))
            if canonical != rdata:
                self.canonicals[key, rdtype] = canonical
            else:
                self.canonicals.pop((key, rdtype), None)
            return
        more = self.several.get((key, rdtype))
        if more is None:
            first = b"".join(rrset.rdatas[0])
            more = self.several[key, rdtype] = ([first], {self.canonicals.get((key, rdtype), first)})
        if canonical not in more[1]:
            more[0].append(rdata)
            more[1].add(canonical)

    def zone(self, path: str, overlay: bool) -> Zone:
        """The finished zone; a base zone must have SOA and NS at its origin."""
        nodes = self.nodes
        for (key, rdtype), (rdatas, _) in self.several.items():
            if len(rdatas) > 1:
                first = nodes[key][rdtype]
                nodes[key][rdtype] = wire.make_rrset(first.name, rdtype, first.ttl, rdatas)
        self.several.clear()
        self.canonicals.clear()
        if not overlay:
            apex = nodes.get(self.origin_key, {})
            if wire.SOA not in apex or wire.NS not in apex:
                raise _Decline("no SOA or NS at the origin")
        return Zone(self.origin_key, nodes, all_names(self.origin_key, nodes), (path,))


def _generic_syntax(tokens: list[str], kinds: list[int], at: int) -> bool:
    """Whether the RDATA starts with RFC 3597's ``\\#`` (dnspython then reads it as wire)."""
    return kinds[at] == ESCAPED and tokens[at] == "\\#"


def _printable(text: str) -> bool:
    """Printable ASCII and tabs only (dnspython treats other characters differently)."""
    return text.isascii() and text.replace("\t", " ").isprintable()


def _ipv6(token: str) -> bytes:
    """dns.ipv6.inet_aton, as AAAA stores it (text → canonical text → wire)."""
    try:
        return dns.ipv6.inet_aton(dns.ipv6.canonicalize(token))
    except dns.exception.DNSException as e:
        raise _Decline("bad IPv6 address") from e
