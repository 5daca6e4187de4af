"""Response rate limiting (``[rate_limit]``), as BIND 9's ``rate-limit``.

A reflection attacker spoofs a victim's address and asks for large answers; the answers flood
the victim.  BIND's defence, copied here: count UDP responses per (client prefix, response
identity) in an account that earns ``rate`` credits a second, holds at most ``rate`` of them,
and sinks at most ``window × rate`` into debt.  A response sent while the account is in debt
is *limited*: of the limited ones, every ``slip``-th is replaced by an empty truncated (TC=1)
reply, so a real client behind the prefix retries over TCP (never limited), and the rest are
not sent at all.  Since debt is paid back at ``rate`` a second, a flood that does not stop is
answered for its first second and then only by slips.

Identities (BIND's ``rrl.c``): a positive answer is its question name and type; an empty
NOERROR (NODATA, referral) and NXDOMAIN are their domain (the owner of the authority
section's first record, usually the zone's SOA), so random names under one zone share an
account; every other rcode is one "error" account per prefix.  NXDOMAIN and errors have their
own rates (``nxdomains_per_second``, ``errors_per_second``; omitted, they take
``responses_per_second``; 0 is no limit).

One deviation, to keep the reply volume to a flood bounded (at most
``rate × seconds × (1 + 1/slip)`` replies to a flood): an account slips at most ``rate / slip``
TC replies a second (a bucket of its own, no debt).  BIND slips every ``slip``-th limited
response however many there are; here that holds until the limited responses of one account
exceed ``rate`` a second, that is under a sustained flood, when the TC replies stay at
``rate / slip`` a second instead of ``queries / slip``.

Time is ``reactor.seconds()``.  Accounts idle for longer than ``window`` are back at full
credit, so forgetting them changes nothing; the table keeps at most ``max_entries`` accounts,
least recently used first out, so a flood from many prefixes cannot grow it without bound.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

from smartdns import wire
from smartdns.config import RateLimitConfig

DEFAULT_MAX_ENTRIES = 100_000          # accounts kept (BIND's max-table-size is 20,000 by default)
CLIENT_CACHE_ENTRIES = 65_536          # client address → prefix, remembered

PASS, DROP, SLIP = 0, 1, 2             # verdicts

RESPONSE, EMPTY, NXDOMAIN, ERROR = "r", "e", "nx", "err"   # identity kinds
ERROR_IDENTITY: tuple[Any, ...] = (ERROR,)


def identity(result: Any, question: bytes) -> tuple[Any, ...]:
    """The account a response counts in, besides the client prefix (see the module docstring).

    ``result`` is a ``smartdns.response.Result``; ``question`` the raw question section."""
    rcode = result.rcode
    if rcode != wire.NOERROR and rcode != wire.NXDOMAIN:
        return ERROR_IDENTITY
    answer, authority = result.answer, result.authority
    entry = result.entry
    if entry is not None and not answer:
        if rcode == wire.NOERROR and entry.wire[6:8] != b"\x00\x00":
            return (RESPONSE, question[:-4].lower(), question[-4:-2])   # no need to decode it
        answer, authority, _additional = entry.sections
    if rcode == wire.NOERROR and answer:
        return (RESPONSE, question[:-4].lower(), question[-4:-2])
    domain = authority[0].name.lower() if authority else question[:-4].lower()
    return (NXDOMAIN if rcode == wire.NXDOMAIN else EMPTY, domain)


class _Account:
    """One (prefix, identity): credit balance, last debit time, slip counter and slip credit."""

    __slots__ = ("balance", "at", "slips", "slip_credit")

    def __init__(self, balance: float, at: float, slip_credit: float) -> None:
        self.balance = balance
        self.at = at
        self.slips = 0
        self.slip_credit = slip_credit


class RateLimiter:
    """Decides, per UDP response, whether it is sent, slipped (TC) or dropped."""

    def __init__(self, reactor: Any, settings: RateLimitConfig, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.reactor = reactor
        self.settings = settings
        self.max_entries = max_entries
        self._rates = {RESPONSE: settings.responses_per_second, EMPTY: settings.responses_per_second,
                       NXDOMAIN: settings.nxdomains_per_second, ERROR: settings.errors_per_second}
        self._exempt = [(n.version, int(n.network_address), n.prefixlen) for n in settings.exempt]
        self._accounts: OrderedDict[tuple[Any, ...], _Account] = OrderedDict()
        self._prefixes: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def check(self, client: str, ident: tuple[Any, ...], *, server_cookie: bool = False) -> int:
        """PASS, DROP or SLIP for one UDP response of identity ``ident`` to ``client``.

        ``server_cookie``: the query carried a valid server cookie (RFC 7873); such clients
        cannot be spoofed and are never limited, as in BIND."""
        if server_cookie:
            return PASS
        rate = self._rates[ident[0]]
        if not rate:
            return PASS
        prefix = self._prefix(client)
        if prefix is None:
            return PASS
        now = self.reactor.seconds()
        key = (prefix, ident)
        accounts = self._accounts
        account = accounts.get(key)
        slip = self.settings.slip
        if account is None:
            if len(accounts) >= self.max_entries:
                accounts.popitem(last=False)
            account = accounts[key] = _Account(float(rate), now, rate / slip if slip else 0.0)
        else:
            accounts.move_to_end(key)
            elapsed = now - account.at
            if elapsed > 0:
                account.balance = min(float(rate), account.balance + elapsed * rate)
                if slip:
                    account.slip_credit = min(rate / slip, account.slip_credit + elapsed * rate / slip)
            account.at = now
        account.balance -= 1
        if account.balance >= 0:
            return PASS
        floor = -self.settings.window * rate
        if account.balance < floor:
            account.balance = floor
        if not slip:
            return DROP
        turn = account.slips
        account.slips = (turn + 1) % slip
        if turn == 0 and account.slip_credit >= 1:
            account.slip_credit -= 1
            return SLIP
        return DROP

    def _prefix(self, client: str) -> Any:
        """The client's prefix as (family, masked int), None when exempt or not an address."""
        cached = self._prefixes.get(client, False)
        if cached is not False:
            return cached
        prefix = self._compute_prefix(client)
        if len(self._prefixes) >= CLIENT_CACHE_ENTRIES:
            self._prefixes.clear()
        self._prefixes[client] = prefix
        return prefix

    def _compute_prefix(self, client: str) -> Any:
        try:
            address = ipaddress.ip_address(client.partition("%")[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        version, value = address.version, int(address)
        bits = 32 if version == 4 else 128
        for exempt_version, network, length in self._exempt:
            if exempt_version == version and value >> (bits - length) << (bits - length) == network:
                return None
        length = self.settings.ipv4_prefix_length if version == 4 else self.settings.ipv6_prefix_length
        return (version, value >> (bits - length))

