"""The TOML configuration: text → frozen dataclasses, or every problem as ``file:line: message``.

Pure apart from reading files it is pointed at (the config itself, resolv.conf, and checking
that ``tls_ca_file`` exists). Nothing here opens sockets or reads zone data: the zone loader
reports missing zone files itself.

tomllib gives values without positions, so `_SourceMap` rescans the text (already known to be
valid TOML) to find the line of each table, key and array element; a problem is reported at the
most precise of those it can find.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import dns.rdatatype

from smartdns.errors import ConfigError, Problem
from smartdns.lines import Network
from smartdns.tsig import ALGORITHMS as TSIG_ALGORITHMS
from smartdns.tsig import DEFAULT_ALGORITHM as DEFAULT_TSIG_ALGORITHM
from smartdns.tsig import KeyFileError, TsigKey, parse_key_file, parse_secret

# [server]
DEFAULT_LISTEN: tuple[tuple[str, int], ...] = (("127.0.0.1", 5300),)
DEFAULT_WORKERS = 1
MAX_WORKERS = 64
DEFAULT_MAX_UDP_PAYLOAD_BYTES = 1232  # DNS flag day 2020: fits a 1280-byte IPv6 MTU
MIN_UDP_PAYLOAD_BYTES = 512  # RFC 1035 limit without EDNS
MAX_UDP_PAYLOAD_BYTES = 4096
DEFAULT_TCP_IDLE_TIMEOUT_SECONDS = 10.0
MAX_TCP_IDLE_TIMEOUT_SECONDS = 3600.0
DEFAULT_TCP_MAX_CONNECTIONS = 1000
MAX_TCP_MAX_CONNECTIONS = 100_000
MAX_PORT = 65535
DEFAULT_CONTROL_SOCKET = ""  # off unless configured; relative paths are beside the config file

# [zones]
DEFAULT_ZONES_DIRECTORY = "zones"

#: Without ``--config``, this file in the working directory is read if it exists.
DEFAULT_CONFIG_NAME = "smartdns.toml"

# [forward]
DNS_PORT = 53
DNS_OVER_TLS_PORT = 853  # RFC 7858
UPSTREAM_SCHEMES = ("udp", "tcp", "tls")
DEFAULT_FORWARD_TIMEOUT_SECONDS = 2.0
MIN_FORWARD_TIMEOUT_SECONDS = 0.05
MAX_FORWARD_TIMEOUT_SECONDS = 30.0
DEFAULT_FORWARD_TOTAL_TIMEOUT_SECONDS = 5.0
MAX_FORWARD_TOTAL_TIMEOUT_SECONDS = 60.0
FORWARD_POLICIES = ("sequential", "round_robin", "random")
DEFAULT_FORWARD_POLICY = "sequential"
DEFAULT_EDNS_UDP_SIZE_BYTES = 1232
DEFAULT_MAX_OUTSTANDING = 10_000  # a random-name flood cannot queue more upstream queries than this
MAX_MAX_OUTSTANDING = 1_000_000

# [access]
DEFAULT_RECURSION: tuple[Network, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

# [cache]
DEFAULT_CACHE_MAX_ENTRIES = 100_000
MAX_CACHE_MAX_ENTRIES = 10_000_000
DEFAULT_CACHE_MIN_TTL_SECONDS = 0
MAX_CACHE_MIN_TTL_SECONDS = 86_400
DEFAULT_CACHE_MAX_TTL_SECONDS = 86_400
MAX_CACHE_MAX_TTL_SECONDS = 604_800
DEFAULT_NEGATIVE_MAX_TTL_SECONDS = 3600
MAX_NEGATIVE_MAX_TTL_SECONDS = 86_400
DEFAULT_SERVFAIL_TTL_SECONDS = 5
MAX_SERVFAIL_TTL_SECONDS = 300  # RFC 9520 §3.2: at most five minutes
DEFAULT_SERVE_STALE_SECONDS = 0
MAX_SERVE_STALE_SECONDS = 604_800  # RFC 8767 suggests 1 to 3 days; allow up to a week
DEFAULT_PREFETCH = True

# [[policy]]
POLICY_ACTIONS = ("refuse", "nxdomain", "nodata", "drop")

# [[secondary]]
MAX_SECONDARY_PRIMARIES = 16

# [[transfer]]: differences kept per view for IXFR, and NOTIFY targets (smartdns.journal, smartdns.notify)
DEFAULT_JOURNAL_SIZE = 32
MAX_JOURNAL_SIZE = 10_000
MAX_ALSO_NOTIFY = 64

# [[update]]: the base zone file of zone Z is <[zones] directory>/Z.zone (smartdns.zones)
ZONE_FILE_SUFFIX = ".zone"

#: A line name becomes a directory name under zones/, so keep it to a safe alphabet.
LINE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

_MAX_NAME_TEXT_LENGTH = 253  # 255 octets on the wire, without the final dot
_MAX_LABEL_LENGTH = 63
_LABEL_PATTERN = re.compile(r"[a-z0-9_/-]+\Z")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream server, always an IP literal so that forwarding never needs DNS itself."""

    scheme: str  # "udp" (TCP on truncation), "tcp" or "tls"
    host: str  # IPv4 or IPv6 literal, no brackets
    port: int
    server_name: str | None = None  # tls only: the name the certificate must match

    def __str__(self) -> str:
        """The config spelling; `parse_upstream` reads it back to an equal value."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        prefix = "" if self.scheme == "udp" else f"{self.scheme}://"
        suffix = f"#{self.server_name}" if self.server_name is not None else ""
        return f"{prefix}{host}:{self.port}{suffix}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where and how the server listens."""

    listen: tuple[tuple[str, int], ...] = DEFAULT_LISTEN
    workers: int = DEFAULT_WORKERS
    max_udp_payload: int = DEFAULT_MAX_UDP_PAYLOAD_BYTES
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT_SECONDS
    tcp_max_connections: int = DEFAULT_TCP_MAX_CONNECTIONS
    chaos_version: str = ""  # "" = CH TXT version.bind / id.server are REFUSED
    control_socket: str | None = None  # absolute path of the `smartdns reload` socket; None = off
    trusted_proxies: tuple[Network, ...] = ()  # DoH peers whose X-Forwarded-For is believed
    tls_listen: tuple[tuple[str, int], ...] = ()  # DNS over TLS (RFC 7858) addresses; () = none
    https_listen: tuple[tuple[str, int], ...] = ()  # DNS over HTTPS (RFC 8484) addresses; () = none
    tls_cert_file: str | None = None  # absolute path of the PEM chain both serve; None = unset
    tls_key_file: str | None = None  # absolute path of its PEM private key


@dataclass(frozen=True, slots=True)
class ZonesConfig:
    """``[zones]``: where local data lives; every path is absolute."""

    directory: str
    records_json: tuple[str, ...] = ()
    lines_json: str | None = None
    watch: bool = True
    secondary_directory: str | None = None   # where transferred zones are saved; None = unset
    serial_state_file: str | None = None     # served serials of [[transfer]] views, kept across restarts
    # True when ``directory`` was not set: then a missing directory means no local zones (the
    # forward-only server of an empty config), not an error.
    directory_optional: bool = False


@dataclass(frozen=True, slots=True)
class LineConfig:
    """One ``[lines]`` entry: a line name and the client networks in it."""

    name: str
    networks: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class ForwardZone:
    """One ``[[forward.zone]]``: names at or below ``name`` go to these upstreams."""

    name: str  # lowercase, no trailing dot; "" is the root
    upstreams: tuple[Upstream, ...]
    policy: str


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """``[forward]``: the default upstreams and how they are tried."""

    upstreams: tuple[Upstream, ...]
    timeout: float = DEFAULT_FORWARD_TIMEOUT_SECONDS
    total_timeout: float = DEFAULT_FORWARD_TOTAL_TIMEOUT_SECONDS
    policy: str = DEFAULT_FORWARD_POLICY
    tls_ca_file: str | None = None  # None = the system trust store
    edns_udp_size: int = DEFAULT_EDNS_UDP_SIZE_BYTES
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING  # distinct questions waiting on upstreams at once
    zones: tuple[ForwardZone, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """``[access]``: which clients may have names outside local zones forwarded."""

    recursion: tuple[Network, ...] = DEFAULT_RECURSION


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """``[cache]``: bounds and TTL clamps for the cache of forwarded answers."""

    max_entries: int = DEFAULT_CACHE_MAX_ENTRIES  # 0 disables the cache
    min_ttl: int = DEFAULT_CACHE_MIN_TTL_SECONDS
    max_ttl: int = DEFAULT_CACHE_MAX_TTL_SECONDS
    negative_max_ttl: int = DEFAULT_NEGATIVE_MAX_TTL_SECONDS
    servfail_ttl: int = DEFAULT_SERVFAIL_TTL_SECONDS
    serve_stale: int = DEFAULT_SERVE_STALE_SECONDS  # 0 = off
    prefetch: bool = DEFAULT_PREFETCH


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: Prometheus metrics, health and readiness over HTTP (smartdns.metrics)."""

    listen: tuple[str, int] | None = None  # None = no HTTP listener


COOKIE_SECRET_BYTES = 16    # RFC 9018 §4.4: a 128-bit SipHash key


@dataclass(frozen=True, slots=True)
class CookiesConfig:
    """``[cookies]``: DNS Cookies (RFC 7873, server cookies as RFC 9018)."""

    secret: bytes | None = field(default=None, repr=False)  # None: made at start, shared with workers
    require: bool = False     # UDP queries with a client cookie but no valid server cookie get BADCOOKIE


@dataclass(frozen=True, slots=True)
class EcsConfig:
    """``[ecs]``: whose EDNS Client Subnet option (RFC 7871) chooses the line."""

    trusted: tuple[Network, ...] = ()
    forward: bool = False     # send a trusted subnet upstream; those answers bypass the cache


DEFAULT_RATE_LIMIT_WINDOW_SECONDS = 15     # BIND's default
MAX_RATE_LIMIT_WINDOW_SECONDS = 3600       # BIND's limit
DEFAULT_RATE_LIMIT_SLIP = 2                # BIND's default: every other limited response is TC
MAX_RATE_LIMIT_SLIP = 10                   # BIND's limit
MAX_RATE_LIMIT_PER_SECOND = 1000           # BIND's limit for each *-per-second
DEFAULT_RATE_LIMIT_IPV4_PREFIX_LENGTH = 24
DEFAULT_RATE_LIMIT_IPV6_PREFIX_LENGTH = 56


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """``[rate_limit]``: response rate limiting as BIND's ``rate-limit`` (smartdns.ratelimit);
    on when any rate is above 0."""

    responses_per_second: int = 0      # 0: not limited
    nxdomains_per_second: int = 0
    errors_per_second: int = 0
    window: int = DEFAULT_RATE_LIMIT_WINDOW_SECONDS
    slip: int = DEFAULT_RATE_LIMIT_SLIP   # 0: never slip; 1: every limited response slips
    ipv4_prefix_length: int = DEFAULT_RATE_LIMIT_IPV4_PREFIX_LENGTH
    ipv6_prefix_length: int = DEFAULT_RATE_LIMIT_IPV6_PREFIX_LENGTH
    exempt: tuple[Network, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether any response is limited at all."""
        return bool(self.responses_per_second or self.nxdomains_per_second or self.errors_per_second)


LOG_LEVELS = ("debug", "info", "warn", "error")   # least to most severe
DEFAULT_LOG_LEVEL = "info"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: the server log (smartdns.logs)."""

    level: str = DEFAULT_LOG_LEVEL  # one of LOG_LEVELS: events below it are not logged
    queries: str | None = None  # the query log: an absolute path, "-" for stdout, None = off


@dataclass(frozen=True, slots=True)
class HostsConfig:
    """``[hosts]``: hosts(5) files answered after local zones and before forwarding."""

    files: tuple[str, ...] = ()  # absolute paths; read at load and on every reload


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One ``[[policy]]``: what to do with queries for some names (and lines, and types)."""

    names: tuple[str, ...]  # normalised; "*.x" means strictly below x
    action: str
    lines: tuple[str, ...] = ()  # empty = every client
    types: tuple[int, ...] = ()  # empty = every type
    line: int = field(default=0, compare=False)  # where its [[policy]] header is (smartdns explain)


@dataclass(frozen=True, slots=True)
class TransferRule:
    """One ``[[transfer]]``: clients signing with ``key`` may AXFR the zones as ``line`` sees them."""

    key: str                  # a [[tsig]] name
    line: str | None = None   # None: the base zones
    journal_size: int = DEFAULT_JOURNAL_SIZE                  # differences kept per zone for IXFR
    also_notify: tuple[tuple[str, int], ...] = ()             # (IP, port) sent NOTIFY, signed with key


@dataclass(frozen=True, slots=True)
class UpdateRule:
    """One ``[[update]]``: RFC 2136 updates signed with ``key`` edit ``zone``'s file (no line) or
    ``line``'s overlay file for it (smartdns.update)."""

    zone: str                 # lowercase, no final dot
    key: str                  # a [[tsig]] name
    line: str | None = None   # None: the base zone file


@dataclass(frozen=True, slots=True)
class SecondaryZone:
    """One ``[[secondary]]``: ``zone`` transferred from ``primaries`` (for ``line``, or the base)."""

    zone: str                                # lowercase, no final dot
    primaries: tuple[tuple[str, int], ...]   # (IP, port)
    key: str | None = None                   # a [[tsig]] name: transfers and NOTIFY signed with it
    line: str | None = None                  # None: the base zone; else that line's whole view


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; a snapshot that is replaced on reload, never changed."""

    path: str | None  # absolute; None for the built-in default
    server: ServerConfig
    zones: ZonesConfig
    lines: tuple[LineConfig, ...]
    forward: ForwardConfig
    access: AccessConfig
    cache: CacheConfig
    policies: tuple[PolicyRule, ...]
    hosts: HostsConfig = HostsConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    tsig: tuple[TsigKey, ...] = ()
    transfers: tuple[TransferRule, ...] = ()
    secondaries: tuple[SecondaryZone, ...] = ()
    updates: tuple[UpdateRule, ...] = ()
    rate_limit: RateLimitConfig = RateLimitConfig()
    cookies: CookiesConfig = CookiesConfig()
    ecs: EcsConfig = EcsConfig()
    # What is valid but probably not meant (an open resolver); printed by ``smartdns check`` and
    # logged at start, never a reason to refuse the file.
    warnings: tuple[Problem, ...] = field(default=(), compare=False)


# ---------------------------------------------------------------------------------------------
# Value parsers shared by the config file and resolv.conf


def parse_upstream(text: str) -> Upstream:
    """Parse one upstream spelling (``10.0.0.53``, ``[2001:db8::1]:53``, ``tls://ip:853#name``).

    Raises ValueError with a message that does not repeat ``text`` (callers add it).
    """
    rest = text.strip()
    if not rest:
        raise ValueError("upstream is empty")
    scheme = "udp"
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        scheme = scheme.lower()
        if scheme not in UPSTREAM_SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r} (use udp://, tcp:// or tls://)")
    rest, hash_sign, server_name = rest.partition("#")
    if hash_sign and scheme != "tls":
        raise ValueError("'#server-name' is only for tls:// upstreams")
    if scheme == "tls" and not server_name:
        raise ValueError("a tls:// upstream needs the certificate's name after '#', e.g. tls://192.0.2.1#dns.example")
    host, port_text = _split_host_port(rest)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("upstream must be an IP address") from None
    port = DNS_OVER_TLS_PORT if scheme == "tls" else DNS_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
            raise ValueError(f"port must be 1..{MAX_PORT}")
        port = int(port_text)
    name: str | None = None
    if scheme == "tls":
        try:
            name = _normalize_name(server_name, wildcard=False)
        except ValueError as e:
            raise ValueError(f"server name {server_name!r} {e}") from None
        if not name:
            raise ValueError("the server name must not be the root")
    return Upstream(scheme, str(address), port, name)


def _split_host_port(text: str) -> tuple[str, str | None]:
    """``[v6]:port``, ``v4:port``, bare v6 or bare v4 → (host, port text or None)."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError("expected [IPv6]:port")
        if ":" not in host:
            raise ValueError("only IPv6 addresses go in brackets")
        return host, after[1:] if after else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


def read_resolv_conf(path: str) -> tuple[Upstream, ...]:
    """The ``nameserver`` entries of a resolv.conf as UDP upstreams on port 53.

    A missing or unreadable file, comments, other options and entries that are not IP
    literals are skipped: this is only the default when ``[forward] upstreams`` is not set.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ()
    found: list[Upstream] = []
    for line in text.splitlines():
        words = re.split(r"[#;]", line, maxsplit=1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(words[1])
        except ValueError:
            continue
        upstream = Upstream("udp", str(address), DNS_PORT, None)
        if upstream not in found:
            found.append(upstream)
    return tuple(found)


def _parse_listen(text: str) -> tuple[str, int]:
    """``IP:port`` or ``[IPv6]:port`` → (host, port); port 0 means any free port."""
    if text.count(":") > 1 and not text.startswith("["):
        raise ValueError("write IPv6 addresses as [address]:port")
    host, port_text = _split_host_port(text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("listen address must be an IP address") from None
    if port_text is None:
        raise ValueError("needs a port, e.g. '127.0.0.1:53'")
    if not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise ValueError(f"port must be 0..{MAX_PORT}")
    return str(address), int(port_text)


def _parse_network(text: str) -> Network:
    """A CIDR; host bits set is an error (like BIND), since it usually hides a typo."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid network") from None
    raise ValueError(f"{text!r} has host bits set (did you mean '{loose}'?)")


def _normalize_name(text: str, *, wildcard: bool) -> str:
    """A domain name → lowercase without the final dot ("" for the root).

    With ``wildcard``, a leading ``*.`` is kept: it means names strictly below the rest.
    """
    name = text.lower()
    if name in ("", "."):
        return ""
    if not name.isascii():
        raise ValueError("must be ASCII (write internationalised names in their xn-- form)")
    if name.endswith("."):
        name = name[:-1]
    if len(name) > _MAX_NAME_TEXT_LENGTH:
        raise ValueError(f"is longer than {_MAX_NAME_TEXT_LENGTH} characters")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if label == "*":
            if not wildcard:
                raise ValueError("may not contain wildcards")
            if index != 0:
                raise ValueError("may only have '*' as its first label")
            if len(labels) == 1:
                raise ValueError("needs a domain after '*.', as in '*.example.com'")
        elif not label:
            raise ValueError("has an empty label")
        elif len(label) > _MAX_LABEL_LENGTH:
            raise ValueError(f"has a label longer than {_MAX_LABEL_LENGTH} characters")
        elif not _LABEL_PATTERN.match(label):
            raise ValueError("may only contain letters, digits, '-', '_' and '/'")
    return name


# ---------------------------------------------------------------------------------------------
# Where things are in the text

_Where = tuple[str | int, ...]
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\n#]*")  # numbers, booleans, dates: up to the next delimiter


class _SourceMap:
    """Line numbers of tables, keys and array elements in (valid) TOML text.

    A location is a path as the parsed data is indexed: ``("cache", "max_ttl")``,
    ``("forward", "zone", 1, "upstreams", 0)`` (the second ``[[forward.zone]]``, its first
    upstream). Scanning stops quietly at anything unexpected; `line` then falls back to the
    nearest enclosing location it did find.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[_Where, int] = {}
        self._text = text
        self._pos = 0
        self._line = 1
        self._array_table_count: dict[_Where, int] = {}
        try:
            self._document()
        except (IndexError, ValueError):
            pass

    def line(self, where: _Where) -> int:
        """The line of ``where``, else of its nearest recorded parent, else 0."""
        for end in range(len(where), 0, -1):
            found = self._lines.get(where[:end])
            if found is not None:
                return found
        return 0

    def _record(self, where: _Where) -> None:
        self._lines.setdefault(where, self._line)

    def _char(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _skip(self, newlines: bool) -> None:
        """Skip spaces and comments, and line breaks too if ``newlines``."""
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            if char in " \t\r":
                self._pos += 1
            elif char == "#":
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
            elif char == "\n" and newlines:
                self._pos += 1
                self._line += 1
            else:
                return

    def _expect(self, token: str) -> None:
        if not self._text.startswith(token, self._pos):
            raise ValueError(token)
        self._pos += len(token)

    def _document(self) -> None:
        table: _Where = ()
        while True:
            self._skip(newlines=True)
            if self._pos >= len(self._text):
                return
            if self._text.startswith("[[", self._pos):
                self._pos += 2
                table = self._header(self._keys(), array=True)
                self._expect("]]")
            elif self._char() == "[":
                self._pos += 1
                table = self._header(self._keys(), array=False)
                self._expect("]")
            else:
                where = table + self._keys()
                self._record(where)
                self._expect("=")
                self._value(where)

    def _header(self, keys: tuple[str, ...], array: bool) -> _Where:
        """Resolve a table header to a data path, numbering ``[[array]]`` entries."""
        where: _Where = ()
        for index, key in enumerate(keys):
            where += (key,)
            self._record(where)  # a parent first seen here (``[[policy]]`` → policy) is located here
            last = index == len(keys) - 1
            if last and array:
                count = self._array_table_count.get(where, 0)
                self._array_table_count[where] = count + 1
                where += (count,)
            elif where in self._array_table_count:
                where += (self._array_table_count[where] - 1,)
        self._record(where)
        return where

    def _keys(self) -> tuple[str, ...]:
        """A dotted key such as ``a."b.c".d``."""
        keys: list[str] = []
        while True:
            self._skip(newlines=False)
            char = self._char()
            if char in "\"'":
                start = self._pos
                self._string()
                keys.append(tomllib.loads("k = " + self._text[start : self._pos])["k"])
            else:
                match = _BARE_KEY.match(self._text, self._pos)
                if match is None:
                    raise ValueError("key")
                keys.append(match.group())
                self._pos = match.end()
            self._skip(newlines=False)
            if self._char() != ".":
                return tuple(keys)
            self._pos += 1

    def _value(self, where: _Where) -> None:
        self._skip(newlines=False)
        char = self._char()
        if char in "\"'":
            self._string()
        elif char == "[":
            self._pos += 1
            index = 0
            while True:
                self._skip(newlines=True)
                if self._char() == "]":
                    self._pos += 1
                    return
                self._record(where + (index,))
                self._value(where + (index,))
                self._skip(newlines=True)
                if self._char() == ",":
                    self._pos += 1
                index += 1
        elif char == "{":
            self._pos += 1
            while True:
                self._skip(newlines=True)
                if self._char() == "}":
                    self._pos += 1
                    return
                key = where + self._keys()
                self._record(key)
                self._expect("=")
                self._value(key)
                self._skip(newlines=True)
                if self._char() == ",":
                    self._pos += 1
        else:
            match = _SCALAR.match(self._text, self._pos)
            assert match is not None  # the pattern matches the empty string
            if match.end() == self._pos:
                raise ValueError("value")
            self._pos = match.end()

    def _string(self) -> None:
        """Step over any of TOML's four string forms, counting the lines they span."""
        text = self._text
        quote = text[self._pos]
        delimiter = quote * 3 if text.startswith(quote * 3, self._pos) else quote
        escapes = quote == '"'
        pos = self._pos + len(delimiter)
        while True:
            if escapes and text[pos] == "\\":
                pos += 2
            elif text.startswith(delimiter, pos):
                pos += len(delimiter)
                break
            else:
                pos += 1
        while len(delimiter) == 3 and pos < len(text) and text[pos] == quote:
            pos += 1  # '""""' ends with a quote inside the string
        self._line += text.count("\n", self._pos, pos)
        self._pos = pos


# ---------------------------------------------------------------------------------------------
# Typed access to the parsed data, collecting problems

_T = TypeVar("_T")
_MISSING = object()


def _kind(value: object) -> str:
    """A TOML type name with its article, for 'must be X, not Y' messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else format(value, "g")


class _Reader:
    """Reports problems against one file, located through its `_SourceMap`."""

    def __init__(self, file: str, source: _SourceMap) -> None:
        self.file = file
        self.source = source
        self.problems: list[Problem] = []

    def report(self, where: _Where, message: str) -> None:
        self.problems.append(Problem(self.file, self.source.line(where), message))


@dataclass
class _Table:
    """One TOML table being read: typed getters that report problems and return defaults.

    ``bad`` holds the keys that had a problem, so cross-key checks can skip them rather than
    report a second, confusing error.
    """

    reader: _Reader
    data: dict[str, object]
    where: _Where
    label: str
    bad: set[str] = field(default_factory=set)

    def reject_unknown(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.reader.report(self.where + (key,), f"unknown key {key!r} in {self.label}")

    def has(self, key: str) -> bool:
        return key in self.data

    def report(self, key: str, message: str, *more: str | int) -> None:
        self.bad.add(key)
        self.reader.report(self.where + (key,) + more, message)

    def _typed(self, key: str, check: Callable[[object], bool], wanted: str) -> object:
        """The raw value if present and of the wanted type, else `_MISSING` (reported if wrong)."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
        if not check(value):
            self.report(key, f"{self.label} {key} must be {wanted}, not {_kind(value)}")
            return _MISSING
        return value

    def integer(self, key: str, default: int, low: int, high: int, unit: str = "") -> int:
        value = self._typed(key, _is_int, "an integer")
        if value is _MISSING:
            return default
        assert isinstance(value, int)
        if not low <= value <= high:
            self.report(key, f"{self.label} {key} must be between {low} and {high}{unit}, not {value}")
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float, *, above_low: bool = False) -> float:
        """A number of seconds; an integer is fine. ``above_low`` excludes ``low`` itself."""
        value = self._typed(key, _is_number, "a number")
        if value is _MISSING:
            return default
        assert isinstance(value, (int, float))
        if not (low < value <= high if above_low else low <= value <= high):
            if above_low:
                bounds = f"greater than {_number_text(low)} and at most {_number_text(high)} seconds"
            else:
                bounds = f"between {_number_text(low)} and {_number_text(high)} seconds"
            self.report(key, f"{self.label} {key} must be {bounds}, not {_number_text(value)}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, lambda v: isinstance(v, bool), "true or false")
        return default if value is _MISSING else bool(value)

    def string(self, key: str, default: str) -> str:
        value = self._typed(key, lambda v: isinstance(v, str), "a string")
        return default if value is _MISSING else str(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            self.report(key, f"{self.label} {key} must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value

    def strings(self, key: str) -> list[tuple[int, str]] | None:
        """An array of strings as (index, value); None if absent or not an array of strings."""
        value = self._typed(key, lambda v: isinstance(v, list), "an array of strings")
        if value is _MISSING:
            return None
        assert isinstance(value, list)
        items: list[tuple[int, str]] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                items.append((index, item))
            else:
                self.report(key, f"{self.label} {key} entries must be strings, not {_kind(item)}", index)
        return items

    def parsed(self, key: str, items: list[tuple[int, str]], parse: Callable[[str], _T]) -> list[tuple[int, _T]]:
        """Apply ``parse`` to each (index, entry); a ValueError becomes a problem at that entry."""
        results: list[tuple[int, _T]] = []
        for index, text in items:
            try:
                results.append((index, parse(text)))
            except ValueError as e:
                self.report(key, f"{self.label} {key}: {e}", index)
        return results


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quoted(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """Prefix a parser's error with the offending text: ``'x': reason``."""

    def wrapped(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from None

    return wrapped


def _absolute(base_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(base_dir, path))


# ---------------------------------------------------------------------------------------------
# Sections

_TOP_TABLES = ("rate_limit", "server", "zones", "lines", "forward", "access", "cache", "hosts", "metrics", "log", "cookies",
               "ecs")
_ARRAY_TABLES = ("policy", "tsig", "transfer", "secondary", "update")


def _tables(reader: _Reader, data: object, where: _Where, label: str) -> Iterator[_Table]:
    """The entries of an array of tables such as ``[[policy]]``."""
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        reader.report(where, f"{label} must be an array of tables, not {_kind(data)}")
        return
    for index, entry in enumerate(data):
        yield _Table(reader, entry, where + (index,), label)


def _read_server(table: _Table, base_dir: str) -> ServerConfig:
    table.reject_unknown(
        (
            "listen",
            "workers",
            "max_udp_payload",
            "tcp_idle_timeout",
            "tcp_max_connections",
            "chaos_version",
            "control_socket",
            "tls_listen",
            "trusted_proxies",
            "https_listen",
            "tls_cert_file",
            "tls_key_file",
        )
    )
    control = table.string("control_socket", DEFAULT_CONTROL_SOCKET)
    if control:
        parent = os.path.dirname(_absolute(base_dir, control))
        if not os.path.isdir(parent):
            table.report("control_socket", f"[server] control_socket: directory {parent!r} does not exist")
    listen = DEFAULT_LISTEN
    items = table.strings("listen")
    if items is not None:
        addresses = table.parsed("listen", items, _quoted(_parse_listen))
        if not items and "listen" not in table.bad:
            table.report("listen", "[server] listen must not be empty")
        seen: set[tuple[str, int]] = set()
        for index, address in addresses:
            if address in seen and address[1] != 0:  # port 0 picks a fresh port each time
                table.report("listen", f"[server] listen: {dict(items)[index]!r} is listed twice", index)
            seen.add(address)
        listen = tuple(address for _index, address in addresses)

    workers = DEFAULT_WORKERS
    raw_workers = table.data.get("workers")
    if raw_workers == "auto":
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
    elif isinstance(raw_workers, str):
        table.report("workers", f"[server] workers must be an integer or 'auto', not {raw_workers!r}")
    else:
        workers = table.integer("workers", DEFAULT_WORKERS, 1, MAX_WORKERS)

    encrypted = _read_encrypted_listeners(table, base_dir, listen)
    return ServerConfig(
        listen=listen,
        workers=workers,
        max_udp_payload=table.integer(
            "max_udp_payload", DEFAULT_MAX_UDP_PAYLOAD_BYTES, MIN_UDP_PAYLOAD_BYTES, MAX_UDP_PAYLOAD_BYTES, " bytes"
        ),
        tcp_idle_timeout=table.number(
            "tcp_idle_timeout", DEFAULT_TCP_IDLE_TIMEOUT_SECONDS, 0, MAX_TCP_IDLE_TIMEOUT_SECONDS, above_low=True
        ),
        tcp_max_connections=table.integer(
            "tcp_max_connections", DEFAULT_TCP_MAX_CONNECTIONS, 1, MAX_TCP_MAX_CONNECTIONS
        ),
        chaos_version=table.string("chaos_version", ""),
        control_socket=_absolute(base_dir, control) if control else None,
        trusted_proxies=tuple(n for _i, n in table.parsed("trusted_proxies", table.strings("trusted_proxies") or [],
                                                          _parse_network)),
        tls_listen=encrypted[0],
        https_listen=encrypted[1],
        tls_cert_file=encrypted[2],
        tls_key_file=encrypted[3],
    )


_Addresses = tuple[tuple[str, int], ...]


def _read_encrypted_listeners(table: _Table, base_dir: str,
                              listen: _Addresses) -> tuple[_Addresses, _Addresses, str | None, str | None]:
    """``tls_listen``, ``https_listen`` and the certificate pair they serve with (smartdns.encrypted).

    The pair is loaded here, the way the listeners load it, so ``smartdns check`` and a reload
    reject a key that is not the certificate's."""
    taken = {address for address in listen if address[1] != 0}
    found: dict[str, _Addresses] = {}
    for key in ("tls_listen", "https_listen"):
        items = table.strings(key) or []
        addresses = table.parsed(key, items, _quoted(_parse_listen))
        for index, address in addresses:
            if address in taken:
                table.report(key, f"[server] {key}: {dict(items)[index]!r} is already a listen address", index)
            if address[1] != 0:
                taken.add(address)
        found[key] = tuple(address for _index, address in addresses)
    texts = {key: table.string(key, "") for key in ("tls_cert_file", "tls_key_file")}
    paths = {key: _absolute(base_dir, text) if text else None for key, text in texts.items()}
    certificate, private_key = paths["tls_cert_file"], paths["tls_key_file"]
    result = (found["tls_listen"], found["https_listen"], certificate, private_key)
    if certificate is None and private_key is None:
        for key in ("tls_listen", "https_listen"):
            if found[key]:
                table.report(key, f"[server] {key} needs tls_cert_file and tls_key_file")
        return result
    if certificate is None or private_key is None:
        given, missing = "tls_cert_file", "tls_key_file"
        if certificate is None:
            given, missing = missing, given
        table.report(given, f"[server] {given} is set but {missing} is not")
        return result
    problems = {"tls_cert_file": _file_problem(certificate), "tls_key_file": _file_problem(private_key)}
    for key, problem in problems.items():
        if problem:
            table.report(key, f"[server] {key}: {paths[key]!r} {problem}")
    if not any(problems.values()):
        from smartdns.certs import CertificateProblem, load_certificate_pair

        try:
            load_certificate_pair(certificate, private_key)
        except CertificateProblem as e:
            table.report(e.key, f"[server] {e.key}: {paths[e.key]!r} {e.message}")
    return result


def _read_zones(table: _Table, base_dir: str) -> ZonesConfig:
    table.reject_unknown(("directory", "records_json", "lines_json", "watch", "secondary_directory",
                          "serial_state_file"))
    directory = table.string("directory", DEFAULT_ZONES_DIRECTORY)
    if not directory:
        table.report("directory", "[zones] directory must not be empty")
    records: list[str] = []
    for index, path in table.strings("records_json") or []:
        if path:
            records.append(_absolute(base_dir, path))
            problem = _file_problem(records[-1])
            if problem:
                table.report("records_json", f"[zones] records_json: {records[-1]!r} {problem}", index)
        else:
            table.report("records_json", "[zones] records_json entries must not be empty", index)
    lines_json = table.string("lines_json", "")
    if lines_json:
        problem = _file_problem(_absolute(base_dir, lines_json))
        if problem:
            table.report("lines_json", f"[zones] lines_json: {_absolute(base_dir, lines_json)!r} {problem}")
    secondary = table.string("secondary_directory", "")
    secondary_directory = _absolute(base_dir, secondary) if secondary else None
    if secondary_directory is not None:
        if not os.path.isdir(secondary_directory):
            table.report("secondary_directory",
                         f"[zones] secondary_directory: {secondary_directory!r} is not a directory")
        elif directory and secondary_directory == _absolute(base_dir, directory):
            table.report("secondary_directory", "[zones] secondary_directory must not be the zone directory")
    return ZonesConfig(
        directory=_absolute(base_dir, directory),
        records_json=tuple(records),
        lines_json=_absolute(base_dir, lines_json) if lines_json else None,
        watch=table.boolean("watch", True),
        secondary_directory=secondary_directory,
        serial_state_file=_serial_state_file(table, base_dir),
        directory_optional="directory" not in table.data,
    )


def _serial_state_file(table: _Table, base_dir: str) -> str | None:
    """``[zones] serial_state_file``: a file smartdns writes, in a directory that exists."""
    text = table.string("serial_state_file", "")
    if not text:
        return None
    path = _absolute(base_dir, text)
    if os.path.isdir(path):
        table.report("serial_state_file", f"[zones] serial_state_file: {path!r} is a directory")
    elif not os.path.isdir(os.path.dirname(path)):
        table.report("serial_state_file", f"[zones] serial_state_file: {os.path.dirname(path)!r} is not a directory")
    return path


def _file_problem(path: str) -> str | None:
    """Why a data file named in the config cannot be read, or None (its content is checked with
    the zones)."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.R_OK):
        return "cannot be read"
    return None


def _read_lines(table: _Table) -> tuple[LineConfig, ...]:
    lines: list[LineConfig] = []
    for name in table.data:
        if not LINE_NAME_PATTERN.match(name):
            table.report(
                name,
                f"[lines] {name!r} is not a valid line name "
                "(letters, digits, '_', '.' and '-', starting with a letter or digit)",
            )
            continue
        items = table.strings(name)
        if items is None:
            continue
        networks = table.parsed(name, items, _parse_network)
        lines.append(LineConfig(name, tuple(network for _index, network in networks)))
    return tuple(lines)


def _read_upstreams(table: _Table, key: str) -> tuple[Upstream, ...] | None:
    items = table.strings(key)
    if items is None:
        return None
    return tuple(upstream for _index, upstream in table.parsed(key, items, _quoted(parse_upstream)))


def _check_ca_file(path: str) -> str | None:
    """Why a CA file cannot be used (unreadable, or no PEM certificate in it), or None.

    Checked here so ``smartdns check`` catches it, not the first DoT connection."""
    from cryptography import x509

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        return "holds no PEM certificate"
    return None


def _read_forward(table: _Table, reader: _Reader, base_dir: str, resolv_conf: str) -> ForwardConfig:
    table.reject_unknown(("upstreams", "timeout", "total_timeout", "policy", "tls_ca_file", "edns_udp_size",
                          "max_outstanding", "zone"))
    upstreams = _read_upstreams(table, "upstreams")
    if upstreams is None and "upstreams" not in table.bad:
        upstreams = read_resolv_conf(resolv_conf)

    timeout = table.number(
        "timeout", DEFAULT_FORWARD_TIMEOUT_SECONDS, MIN_FORWARD_TIMEOUT_SECONDS, MAX_FORWARD_TIMEOUT_SECONDS
    )
    # Raising only the per-try timeout must not make the default total an error.
    total_default = max(DEFAULT_FORWARD_TOTAL_TIMEOUT_SECONDS, timeout)
    total_timeout = table.number(
        "total_timeout", total_default, MIN_FORWARD_TIMEOUT_SECONDS, MAX_FORWARD_TOTAL_TIMEOUT_SECONDS
    )
    if total_timeout < timeout and not table.bad & {"timeout", "total_timeout"}:
        table.report(
            "total_timeout",
            f"[forward] total_timeout ({_number_text(total_timeout)}) must not be less than "
            f"timeout ({_number_text(timeout)})",
        )
    policy = table.choice("policy", DEFAULT_FORWARD_POLICY, FORWARD_POLICIES)

    tls_ca_file: str | None = None
    ca_text = table.string("tls_ca_file", "")
    if ca_text:
        tls_ca_file = _absolute(base_dir, ca_text)
        if not os.path.exists(tls_ca_file):
            table.report("tls_ca_file", f"[forward] tls_ca_file: {tls_ca_file!r} does not exist")
        elif not os.path.isfile(tls_ca_file):
            table.report("tls_ca_file", f"[forward] tls_ca_file: {tls_ca_file!r} is not a file")
        else:
            problem = _check_ca_file(tls_ca_file)
            if problem:
                table.report("tls_ca_file", f"[forward] tls_ca_file: {tls_ca_file!r} {problem}")

    edns_udp_size = table.integer(
        "edns_udp_size", DEFAULT_EDNS_UDP_SIZE_BYTES, MIN_UDP_PAYLOAD_BYTES, MAX_UDP_PAYLOAD_BYTES, " bytes"
    )
    max_outstanding = table.integer("max_outstanding", DEFAULT_MAX_OUTSTANDING, 1, MAX_MAX_OUTSTANDING)

    zones: list[ForwardZone] = []
    if "zone" in table.data:
        seen: set[str] = set()
        for zone_table in _tables(reader, table.data["zone"], table.where + ("zone",), "[[forward.zone]]"):
            zone = _read_forward_zone(zone_table, policy)
            if zone is None:
                continue
            if zone.name in seen:
                zone_table.report("name", f"[[forward.zone]] {zone.name or '.'!r} is listed twice")
            seen.add(zone.name)
            zones.append(zone)

    return ForwardConfig(
        upstreams=upstreams or (),
        timeout=timeout,
        total_timeout=total_timeout,
        policy=policy,
        tls_ca_file=tls_ca_file,
        edns_udp_size=edns_udp_size,
        max_outstanding=max_outstanding,
        zones=tuple(zones),
    )


def _read_forward_zone(table: _Table, default_policy: str) -> ForwardZone | None:
    table.reject_unknown(("name", "upstreams", "policy"))
    name: str | None = None
    if not table.has("name"):
        table.report("name", "[[forward.zone]] name is required")
    else:
        text = table.string("name", "")
        if "name" not in table.bad:
            try:
                name = _normalize_name(text, wildcard=False)
            except ValueError as e:
                table.report("name", f"[[forward.zone]] name {text!r} {e}")
    upstreams = _read_upstreams(table, "upstreams")
    if upstreams is None and "upstreams" not in table.bad:
        table.report("upstreams", "[[forward.zone]] upstreams is required")
    elif upstreams == () and "upstreams" not in table.bad:
        table.report("upstreams", "[[forward.zone]] upstreams must not be empty")
    policy = table.choice("policy", default_policy, FORWARD_POLICIES)
    if name is None or not upstreams or table.bad:
        return None
    return ForwardZone(name, upstreams, policy)


def _read_access(table: _Table, warnings: list[Problem]) -> AccessConfig:
    table.reject_unknown(("recursion",))
    items = table.strings("recursion")
    if items is None:
        return AccessConfig()
    networks = table.parsed("recursion", items, _parse_network)
    for index, network in networks:
        if network.prefixlen == 0:
            warnings.append(Problem(
                table.reader.file, table.reader.source.line(table.where + ("recursion", index)),
                f"[access] recursion: {str(network)!r} makes this an open resolver: anyone who can reach "
                "it can have names forwarded, and use it in reflection attacks (RFC 5358); "
                "list your clients' networks instead"))
    return AccessConfig(tuple(network for _index, network in networks))


def _read_cookies(table: _Table) -> CookiesConfig:
    table.reject_unknown(("secret", "require"))
    require = table.boolean("require", False)
    text = table.string("secret", "")
    if not text:
        return CookiesConfig(require=require)
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        table.report("secret", f"[cookies] secret must be {COOKIE_SECRET_BYTES * 2} hex digits")
        return CookiesConfig(require=require)
    if len(secret) != COOKIE_SECRET_BYTES:
        table.report("secret", f"[cookies] secret must be {COOKIE_SECRET_BYTES} bytes "
                               f"({COOKIE_SECRET_BYTES * 2} hex digits), not {len(secret)}")
        return CookiesConfig(require=require)
    return CookiesConfig(secret, require)


def _read_ecs(table: _Table) -> EcsConfig:
    table.reject_unknown(("trusted", "forward"))
    forward = table.boolean("forward", False)
    items = table.strings("trusted")
    if items is None:
        return EcsConfig(forward=forward)
    return EcsConfig(tuple(network for _index, network in table.parsed("trusted", items, _parse_network)), forward)


def _read_rate_limit(table: _Table) -> RateLimitConfig:
    """``[rate_limit]``; NXDOMAIN and error rates default to ``responses_per_second``, as in BIND."""
    table.reject_unknown(("responses_per_second", "nxdomains_per_second", "errors_per_second", "window", "slip",
                          "ipv4_prefix_length", "ipv6_prefix_length", "exempt"))
    top = MAX_RATE_LIMIT_PER_SECOND
    responses = table.integer("responses_per_second", 0, 0, top)
    items = table.strings("exempt")
    exempt = () if items is None else tuple(n for _i, n in table.parsed("exempt", items, _parse_network))
    return RateLimitConfig(
        responses_per_second=responses,
        nxdomains_per_second=table.integer("nxdomains_per_second", responses, 0, top),
        errors_per_second=table.integer("errors_per_second", responses, 0, top),
        window=table.integer("window", DEFAULT_RATE_LIMIT_WINDOW_SECONDS, 1, MAX_RATE_LIMIT_WINDOW_SECONDS,
                             " seconds"),
        slip=table.integer("slip", DEFAULT_RATE_LIMIT_SLIP, 0, MAX_RATE_LIMIT_SLIP),
        ipv4_prefix_length=table.integer("ipv4_prefix_length", DEFAULT_RATE_LIMIT_IPV4_PREFIX_LENGTH, 0, 32),
        ipv6_prefix_length=table.integer("ipv6_prefix_length", DEFAULT_RATE_LIMIT_IPV6_PREFIX_LENGTH, 0, 128),
        exempt=exempt,
    )


def _read_cache(table: _Table) -> CacheConfig:
    table.reject_unknown(
        ("max_entries", "min_ttl", "max_ttl", "negative_max_ttl", "servfail_ttl", "serve_stale", "prefetch")
    )
    seconds = " seconds"
    min_ttl = table.integer("min_ttl", DEFAULT_CACHE_MIN_TTL_SECONDS, 0, MAX_CACHE_MIN_TTL_SECONDS, seconds)
    max_ttl = table.integer("max_ttl", DEFAULT_CACHE_MAX_TTL_SECONDS, 0, MAX_CACHE_MAX_TTL_SECONDS, seconds)
    if max_ttl < min_ttl and not table.bad & {"min_ttl", "max_ttl"}:
        table.report("max_ttl", f"[cache] max_ttl ({max_ttl}) must not be less than min_ttl ({min_ttl})")
    return CacheConfig(
        max_entries=table.integer("max_entries", DEFAULT_CACHE_MAX_ENTRIES, 0, MAX_CACHE_MAX_ENTRIES),
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        negative_max_ttl=table.integer(
            "negative_max_ttl", DEFAULT_NEGATIVE_MAX_TTL_SECONDS, 0, MAX_NEGATIVE_MAX_TTL_SECONDS, seconds
        ),
        servfail_ttl=table.integer("servfail_ttl", DEFAULT_SERVFAIL_TTL_SECONDS, 0, MAX_SERVFAIL_TTL_SECONDS, seconds),
        serve_stale=table.integer("serve_stale", DEFAULT_SERVE_STALE_SECONDS, 0, MAX_SERVE_STALE_SECONDS, seconds),
        prefetch=table.boolean("prefetch", DEFAULT_PREFETCH),
    )


def _read_metrics(table: _Table) -> MetricsConfig:
    table.reject_unknown(("listen",))
    text = table.string("listen", "")
    if not text:
        return MetricsConfig()
    try:
        return MetricsConfig(_parse_listen(text))
    except ValueError as e:
        table.report("listen", f"[metrics] listen: {e}")
        return MetricsConfig()


def _read_log(table: _Table, base_dir: str) -> LogConfig:
    table.reject_unknown(("level", "queries"))
    queries = table.string("queries", "")
    if queries and queries != "-":
        queries = _absolute(base_dir, queries)
        if not os.path.isdir(os.path.dirname(queries)):
            table.report("queries", f"[log] queries: directory {os.path.dirname(queries)!r} does not exist")
    return LogConfig(level=table.choice("level", DEFAULT_LOG_LEVEL, LOG_LEVELS), queries=queries or None)


def _read_hosts(table: _Table, base_dir: str) -> HostsConfig:
    table.reject_unknown(("files",))
    files: list[str] = []
    for index, path in table.strings("files") or []:
        if path:
            files.append(_absolute(base_dir, path))
        else:
            table.report("files", "[hosts] files entries must not be empty", index)
    return HostsConfig(tuple(files))


def _parse_policy_name(text: str) -> str:
    try:
        return _normalize_name(text, wildcard=True)
    except ValueError as e:
        raise ValueError(f"{text!r} {e}") from None


def _parse_rr_type(text: str) -> int:
    try:
        return int(dns.rdatatype.from_text(text))
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        raise ValueError(f"{text!r} is not a DNS record type") from None


def _read_policy(table: _Table) -> PolicyRule | None:
    table.reject_unknown(("names", "action", "lines", "types"))
    names: list[str] = []
    items = table.strings("names")
    if items is None and "names" not in table.bad:
        table.report("names", "[[policy]] names is required")
    elif items is not None:
        if not items and "names" not in table.bad:
            table.report("names", "[[policy]] names must not be empty")
        names = [name for _index, name in table.parsed("names", items, _parse_policy_name)]
    action = ""
    if not table.has("action"):
        table.report("action", f"[[policy]] action is required (one of {', '.join(POLICY_ACTIONS)})")
    else:
        action = table.choice("action", "", POLICY_ACTIONS)
    lines = [text for _index, text in table.strings("lines") or []]
    types = [rr_type for _index, rr_type in table.parsed("types", table.strings("types") or [], _parse_rr_type)]
    if table.bad:
        return None
    return PolicyRule(tuple(names), action, tuple(lines), tuple(types), table.reader.source.line(table.where))


def _read_tsig_keys(tables: list[_Table], base_dir: str) -> tuple[TsigKey, ...]:
    """``[[tsig]]``: each key once, its secret given inline (base64) or in a ``tsig-keygen`` file."""
    keys: list[TsigKey] = []
    for table in tables:
        key = _read_tsig_key(table, base_dir)
        if key is None:
            continue
        if any(known.name == key.name for known in keys):
            table.report("name", f"[[tsig]] {key.name!r} is listed twice")
            continue
        keys.append(key)
    return tuple(keys)


def _read_tsig_key(table: _Table, base_dir: str) -> TsigKey | None:
    table.reject_unknown(("name", "algorithm", "secret", "key_file"))
    name = _required_name(table, "name", "[[tsig]]")
    algorithms = tuple(TSIG_ALGORITHMS)
    algorithm = table.choice("algorithm", DEFAULT_TSIG_ALGORITHM, algorithms)
    secret_text = table.string("secret", "")
    key_file = table.string("key_file", "")
    secret: bytes | None = None
    if table.has("secret") and table.has("key_file"):
        table.report("key_file", "[[tsig]] takes secret or key_file, not both")
    elif table.has("secret") and "secret" not in table.bad:
        try:
            secret = parse_secret(secret_text)
        except ValueError as e:
            table.report("secret", f"[[tsig]] secret {e}")
    elif table.has("key_file") and "key_file" not in table.bad and name is not None:
        secret, file_algorithm = _read_key_file(table, _absolute(base_dir, key_file) if key_file else "", name)
        if file_algorithm is not None and "algorithm" not in table.bad:
            if table.has("algorithm") and file_algorithm != algorithm:
                table.report("algorithm", f"[[tsig]] algorithm {algorithm!r} differs from the key file's "
                                          f"{file_algorithm!r}")
            algorithm = file_algorithm
    elif not table.has("secret") and not table.has("key_file"):
        table.reader.report(table.where, "[[tsig]] needs secret (base64) or key_file (as tsig-keygen writes it)")
    if name is None or secret is None or table.bad:
        return None
    return TsigKey(name, algorithm, secret)


def _read_key_file(table: _Table, path: str, name: str) -> tuple[bytes | None, str | None]:
    """(secret, algorithm or None if the file names none) of key ``name`` in a tsig-keygen file;
    (None, None) after reporting why not."""
    if not path:
        table.report("key_file", "[[tsig]] key_file must not be empty")
        return None, None
    problem = _file_problem(path)
    if problem:
        table.report("key_file", f"[[tsig]] key_file: {path!r} {problem}")
        return None, None
    try:
        with open(path, encoding="utf-8") as handle:
            entries = parse_key_file(handle.read())
    except (OSError, UnicodeDecodeError) as e:
        table.report("key_file", f"[[tsig]] key_file: {path!r} cannot be read: {e}")
        return None, None
    except KeyFileError as e:
        table.report("key_file", f"[[tsig]] key_file: {path}:{e.line}: {e.message}")
        return None, None
    found = [entry for entry in entries if entry.name == name]
    if not found:
        names = ", ".join(repr(entry.name) for entry in entries)
        table.report("key_file", f"[[tsig]] key_file: {path!r} holds no key {name!r} (it holds {names})")
        return None, None
    entry = found[0]
    if entry.algorithm is not None and entry.algorithm not in TSIG_ALGORITHMS:
        table.report("key_file", f"[[tsig]] key_file: {path}:{entry.line}: unknown algorithm {entry.algorithm!r} "
                                 f"(one of {', '.join(TSIG_ALGORITHMS)})")
        return None, None
    try:
        secret = parse_secret(entry.secret or "")
    except ValueError as e:
        table.report("key_file", f"[[tsig]] key_file: {path}:{entry.line}: the secret {e}")
        return None, None
    return secret, entry.algorithm


def _required_name(table: _Table, key: str, label: str) -> str | None:
    """A required domain-name key, normalised (lowercase, no final dot), or None if reported."""
    if not table.has(key):
        table.reader.report(table.where, f"{label} {key} is required")
        table.bad.add(key)
        return None
    text = table.string(key, "")
    if key in table.bad:
        return None
    try:
        name = _normalize_name(text, wildcard=False)
    except ValueError as e:
        table.report(key, f"{label} {key} {text!r} {e}")
        return None
    if not name:
        table.report(key, f"{label} {key} must not be the root")
        return None
    return name


def _known_lines(lines: tuple[LineConfig, ...], lines_json: str | None) -> set[str] | None:
    """Line names from ``[lines]`` and ``lines_json``; None when ``lines_json`` cannot be read
    (that is reported by itself, and names of lines are then not checked)."""
    known = {line.name for line in lines}
    if lines_json:
        from smartdns.articlejson import read_lines_json   # reads the JSON only, no zone data

        found, problems = read_lines_json(lines_json)
        if problems:
            return None
        known |= {name for name, _cidrs in found}
    return known


def _key_and_line(table: _Table, key_names: set[str], known_lines: set[str] | None,
                  *, key_required: bool) -> tuple[str | None, str | None]:
    """The ``key`` (a ``[[tsig]]`` name) and ``line`` (a configured line) of a table."""
    label = table.label
    key: str | None = None
    if not table.has("key"):
        if key_required:
            table.reader.report(table.where, f"{label} key is required (the name of a [[tsig]] key)")
            table.bad.add("key")
    else:
        text = table.string("key", "")
        if "key" not in table.bad:
            key = text.lower().rstrip(".")
            if key not in key_names:
                known = ", ".join(sorted(repr(name) for name in key_names)) or "none"
                table.report("key", f"{label} key {text!r} is not a [[tsig]] key (configured: {known})")
    line: str | None = None
    if table.has("line"):
        line = table.string("line", "")
        if "line" not in table.bad and known_lines is not None and line not in known_lines:
            configured = ", ".join(sorted(known_lines)) or "none"
            table.report("line", f"{label} line {line!r} is not a configured line (configured: {configured})")
    return key, line


def _read_transfers(tables: list[_Table], key_names: set[str],
                    known_lines: set[str] | None) -> tuple[TransferRule, ...]:
    """``[[transfer]]``: which key may transfer which line's zones; a key decides one line."""
    rules: list[TransferRule] = []
    for table in tables:
        table.reject_unknown(("key", "line", "journal_size", "also_notify"))
        key, line = _key_and_line(table, key_names, known_lines, key_required=True)
        journal_size = table.integer("journal_size", DEFAULT_JOURNAL_SIZE, 0, MAX_JOURNAL_SIZE)
        items = table.strings("also_notify") or []
        if len(items) > MAX_ALSO_NOTIFY:
            table.report("also_notify", f"[[transfer]] also_notify: at most {MAX_ALSO_NOTIFY} entries")
        targets = table.parsed("also_notify", items, _quoted(_parse_primary))
        if key is None or table.bad:
            continue
        if any(rule.key == key for rule in rules):
            table.report("key", f"[[transfer]] key {key!r} is listed twice (a key gets one line's zones)")
            continue
        rules.append(TransferRule(key, line, journal_size, tuple(dict.fromkeys(a for _i, a in targets))))
    return tuple(rules)


def _parse_primary(text: str) -> tuple[str, int]:
    """``IP``, ``IP:port``, ``[IPv6]:port`` or a bare IPv6 → (IP, port), port 53 by default."""
    host, port_text = _split_host_port(text.strip())
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("must be an IP address") from None
    port = DNS_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
            raise ValueError(f"port must be 1..{MAX_PORT}")
        port = int(port_text)
    return str(address), port


def _read_secondaries(tables: list[_Table], key_names: set[str],
                      known_lines: set[str] | None) -> tuple[SecondaryZone, ...]:
    """``[[secondary]]``: zones this server transfers in, each (zone, line) once."""
    zones: list[SecondaryZone] = []
    for table in tables:
        table.reject_unknown(("zone", "primaries", "key", "line"))
        zone = _required_name(table, "zone", "[[secondary]]")
        items = table.strings("primaries")
        primaries: list[tuple[int, tuple[str, int]]] = []
        if items is None and "primaries" not in table.bad:
            table.reader.report(table.where, "[[secondary]] primaries is required (IP or IP:port of each primary)")
            table.bad.add("primaries")
        elif items is not None:
            if not items and "primaries" not in table.bad:
                table.report("primaries", "[[secondary]] primaries must not be empty")
            elif len(items) > MAX_SECONDARY_PRIMARIES:
                table.report("primaries", f"[[secondary]] primaries: at most {MAX_SECONDARY_PRIMARIES} entries")
            primaries = table.parsed("primaries", items, _quoted(_parse_primary))
        key, line = _key_and_line(table, key_names, known_lines, key_required=False)
        if zone is None or table.bad:
            continue
        if any(other.zone == zone and other.line == line for other in zones):
            where = f" for line {line!r}" if line is not None else ""
            table.report("zone", f"[[secondary]] zone {zone!r}{where} is listed twice")
            continue
        zones.append(SecondaryZone(zone, tuple(address for _index, address in primaries), key, line))
    return tuple(zones)


def _read_updates(tables: list[_Table], key_names: set[str], known_lines: set[str] | None, zones: ZonesConfig,
                  secondaries: tuple[SecondaryZone, ...], workers: int) -> tuple[UpdateRule, ...]:
    """``[[update]]``: which key may update which zone, as which line sees it (RFC 2136).

    The zone must be served from a zone file in ``[zones] directory`` (that file, or the line's
    overlay beside it, is what an update rewrites), not a ``[[secondary]]``; a (zone, key) pair
    is listed once.  One process writes: ``[server] workers`` above 1 is refused."""
    rules: list[UpdateRule] = []
    for table in tables:
        table.reject_unknown(("zone", "key", "line"))
        zone = _required_name(table, "zone", "[[update]]")
        key, line = _key_and_line(table, key_names, known_lines, key_required=True)
        if zone is None or key is None or table.bad:
            continue
        if any(secondary.zone == zone for secondary in secondaries):
            table.report("zone", f"[[update]] zone {zone!r} is a [[secondary]]: update it at its primary")
            continue
        path = os.path.join(zones.directory, zone + ZONE_FILE_SUFFIX)
        if not os.path.isfile(path):
            table.report("zone", f"[[update]] zone {zone!r} has no zone file {path!r} (an update edits that file)")
            continue
        if any(rule.zone == zone and rule.key == key for rule in rules):
            table.report("key", f"[[update]] key {key!r} is listed twice for zone {zone!r} "
                                "(a key updates one line's view of a zone)")
            continue
        rules.append(UpdateRule(zone, key, line))
    if tables and workers > 1:
        tables[0].reader.report(tables[0].where, "[[update]] is not supported with [server] workers above 1 "
                                                 "(one process must write the zone files; set workers = 1)")
    return tuple(rules)


# ---------------------------------------------------------------------------------------------
# Entry points


def _build(
    data: dict[str, object], reader: _Reader, config_path: str | None, base_dir: str, resolv_conf: str
) -> Config:
    """Read every section, then raise one ConfigError holding every problem found."""
    tables: dict[str, _Table] = {}
    arrays: dict[str, list[_Table]] = {key: [] for key in _ARRAY_TABLES}
    for key, value in data.items():
        if key in _TOP_TABLES:
            if isinstance(value, dict):
                tables[key] = _Table(reader, value, (key,), f"[{key}]")
            else:
                reader.report((key,), f"[{key}] must be a table, not {_kind(value)}")
        elif key in _ARRAY_TABLES:
            arrays[key] = list(_tables(reader, value, (key,), f"[[{key}]]"))
        elif isinstance(value, dict):
            reader.report((key,), f"unknown table [{key}]")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            reader.report((key,), f"unknown table [[{key}]]")
        else:
            reader.report((key,), f"unknown key {key!r} at the top level")

    def section(name: str) -> _Table:
        return tables.get(name) or _Table(reader, {}, (name,), f"[{name}]")

    policies = [rule for rule in map(_read_policy, arrays["policy"]) if rule is not None]
    warnings: list[Problem] = []
    zones = _read_zones(section("zones"), base_dir)
    lines = _read_lines(section("lines"))
    _check_policy_lines(reader, data.get("policy"), lines, zones.lines_json)
    known_lines = _known_lines(lines, zones.lines_json)
    keys = _read_tsig_keys(arrays["tsig"], base_dir)
    key_names = {key.name for key in keys}
    transfers = _read_transfers(arrays["transfer"], key_names, known_lines)
    secondaries = _read_secondaries(arrays["secondary"], key_names, known_lines)
    if secondaries and zones.secondary_directory is None:
        reader.report(arrays["secondary"][0].where,
                      "[[secondary]] needs [zones] secondary_directory, where transferred zones are saved")
    server = _read_server(section("server"), base_dir)
    updates = _read_updates(arrays["update"], key_names, known_lines, zones, secondaries, server.workers)
    config = Config(
        path=config_path,
        server=server,
        zones=zones,
        lines=lines,
        forward=_read_forward(section("forward"), reader, base_dir, resolv_conf),
        access=_read_access(section("access"), warnings),
        cache=_read_cache(section("cache")),
        policies=tuple(policies),
        hosts=_read_hosts(section("hosts"), base_dir),
        log=_read_log(section("log"), base_dir),
        metrics=_read_metrics(section("metrics")),
        tsig=keys,
        transfers=transfers,
        secondaries=secondaries,
        updates=updates,
        rate_limit=_read_rate_limit(section("rate_limit")),
        cookies=_read_cookies(section("cookies")),
        ecs=_read_ecs(section("ecs")),
        warnings=tuple(warnings),
    )
    if reader.problems:
        reader.problems.sort(key=lambda p: p.line)
        raise ConfigError(reader.problems)
    return config


def _check_policy_lines(reader: _Reader, entries: object, lines: tuple[LineConfig, ...],
                        lines_json: str | None) -> None:
    """Each ``[[policy]] lines`` entry must name a line from ``[lines]`` or ``lines_json``.

    Checked here, at the entry's own line, so it comes with every other config problem; when
    ``lines_json`` cannot be read, that is reported by itself and the policies are not checked."""
    if not isinstance(entries, list):
        return
    known = {line.name for line in lines}
    if lines_json:
        from smartdns.articlejson import read_lines_json   # reads the JSON only, no zone data

        found, problems = read_lines_json(lines_json)
        if problems:
            return
        known |= {name for name, _cidrs in found}
    for number, entry in enumerate(entries):
        names = entry.get("lines") if isinstance(entry, dict) else None
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            if isinstance(name, str) and name not in known:
                configured = ", ".join(sorted(known)) or "none"
                reader.report(("policy", number, "lines", index),
                              f"[[policy]] lines: {name!r} is not a configured line (configured: {configured})")


_SYNTAX_POSITION = re.compile(r" \(at (?:line (\d+), column \d+|end of document)\)\Z")


def parse_config(text: str, path: str, *, resolv_conf: str = "/etc/resolv.conf") -> Config:
    """Parse TOML text; ``path`` names the file in messages and anchors relative paths.

    Raises ConfigError with every problem, each at the line it concerns.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _SYNTAX_POSITION.search(message)
        line = max(len(text.splitlines()), 1)
        if match is not None:
            message = message[: match.start()]
            if match.group(1) is not None:
                line = int(match.group(1))
        raise ConfigError([Problem(path, line, message)]) from None
    config_path = os.path.abspath(path)
    reader = _Reader(path, _SourceMap(text))
    return _build(data, reader, config_path, os.path.dirname(config_path), resolv_conf)


def load_config(path: str | None, *, resolv_conf: str = "/etc/resolv.conf") -> Config:
    """Read and parse the config file; None reads ``./smartdns.toml`` if there is one, else
    gives the built-in default.

    The default serves ``./zones`` (relative to the working directory; none if it does not
    exist) and forwards to the nameservers in ``resolv_conf``.
    """
    if path is None:
        if os.path.isfile(DEFAULT_CONFIG_NAME):
            return load_config(DEFAULT_CONFIG_NAME, resolv_conf=resolv_conf)
        return _build({}, _Reader("<default>", _SourceMap("")), None, os.getcwd(), resolv_conf)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([Problem(path, 0, f"cannot read the configuration: {e.strerror or e}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([Problem(path, line, "the configuration is not valid UTF-8")]) from None
    return parse_config(text, path, resolv_conf=resolv_conf)
