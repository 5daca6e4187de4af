"""TSIG keys (RFC 8945): the ``[[tsig]]`` value object, BIND ``tsig-keygen`` key files, keyrings.

Signing and verifying is dnspython's (``dns.tsig``, ``dns.message`` with a keyring); this
module only reads keys and turns them into dnspython's ``dns.tsig.Key``.  Pure: no sockets.
"""
from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass

import dns.name
import dns.tsig

DEFAULT_ALGORITHM = "hmac-sha256"

#: Algorithm names as BIND's ``tsig-keygen -a`` and named.conf spell them → dnspython's names.
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}


@dataclass(frozen=True, slots=True)
class TsigKey:
    """One ``[[tsig]]`` key: its name (lowercase, no final dot), algorithm and secret bytes."""

    name: str
    algorithm: str
    secret: bytes

    @property
    def dns_name(self) -> dns.name.Name:
        """The key name as it appears on the wire (owner of the TSIG record)."""
        return dns.name.from_text(self.name)

    def dnspython_key(self) -> dns.tsig.Key:
        """The key for ``dns.message`` (keyring entries, ``use_tsig``)."""
        return dns.tsig.Key(self.dns_name, self.secret, ALGORITHMS[self.algorithm])


def keyring(keys: tuple[TsigKey, ...] | list[TsigKey]) -> dict[dns.name.Name, dns.tsig.Key]:
    """A dnspython keyring (key name → key) for verifying signed messages."""
    return {key.dns_name: key.dnspython_key() for key in keys}


@functools.lru_cache(maxsize=8)
def config_keyring(keys: tuple[TsigKey, ...]) -> dict[dns.name.Name, dns.tsig.Key]:
    """``keyring`` of a configuration's ``[[tsig]]`` keys, built once per set of keys (the
    transfer, NOTIFY and UPDATE hooks ask for it with every signed message).  Shared: read only."""
    return keyring(keys)


def parse_secret(text: str) -> bytes:
    """A base64 secret → bytes; ValueError (without repeating the secret) if it is not one."""
    cleaned = "".join(text.split())
    if not cleaned:
        raise ValueError("is empty")
    try:
        secret = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if not secret:
        raise ValueError("is empty")
    return secret


@dataclass(frozen=True, slots=True)
class KeyFileEntry:
    """One ``key "name" { algorithm …; secret "…"; };`` statement, with its first line."""

    name: str
    algorithm: str | None
    secret: str | None
    line: int


class KeyFileError(ValueError):
    """A key file that is not in the format BIND's ``tsig-keygen`` writes (``line`` is 1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_TOKEN = re.compile(r'\s+|#[^\n]*|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[{};]|[^\s{};"#]+', re.S)


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, line) pairs of named.conf syntax; comments and blanks dropped."""
    out: list[tuple[str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise KeyFileError(line, f"unexpected {text[pos]!r}")
        token = match.group()
        if not (token.isspace() or token.startswith(("#", "//", "/*"))):
            out.append((token, line))
        line += token.count("\n")
        pos = match.end()
    return out


def _unquote(token: str) -> str:
    return token[1:-1] if token.startswith('"') else token


def parse_key_file(text: str) -> list[KeyFileEntry]:
    """Every ``key`` statement of a named.conf fragment such as ``tsig-keygen`` writes.

    Raises KeyFileError at the line of the first problem."""
    tokens = _tokens(text)
    entries: list[KeyFileEntry] = []
    i = 0

    def take(expected: str | None = None, what: str = "more") -> tuple[str, int]:
        """The next token; ``expected``: it must be this punctuation."""
        nonlocal i
        if i >= len(tokens):
            last = tokens[-1][1] if tokens else 1
            raise KeyFileError(last, f"unexpected end of file (expected {expected or what!r})")
        token = tokens[i]
        if expected is not None and token[0] != expected:
            raise KeyFileError(token[1], f"expected {expected!r}, found {token[0]!r}")
        i += 1
        return token

    while i < len(tokens):
        word, line = take()
        if word != "key":
            raise KeyFileError(line, f"expected 'key', found {word!r}")
        name, _ = take(what="key name")
        if name in "{};":
            raise KeyFileError(line, "the key needs a name: key \"name\" { ... };")
        take("{")
        algorithm: str | None = None
        secret: str | None = None
        while True:
            option, option_line = take(what="}")
            if option == "}":
                break
            value, _ = take()
            take(";")
            if option == "algorithm":
                algorithm = _unquote(value).lower()
            elif option == "secret":
                secret = _unquote(value)
            else:
                raise KeyFileError(option_line, f"unknown key option {option!r} (expected algorithm or secret)")
        take(";")
        if secret is None:
            raise KeyFileError(line, f"key {_unquote(name)!r} has no secret")
        entries.append(KeyFileEntry(_unquote(name).lower().rstrip("."), algorithm, secret, line))
    if not entries:
        raise KeyFileError(1, "holds no key statement (expected the output of tsig-keygen)")
    return entries
