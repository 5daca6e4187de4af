"""DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018): parse, make, check.

A server cookie is version 1, three reserved bytes, a 32-bit timestamp and the SipHash-2-4 of
(client cookie | version | reserved | timestamp | client IP) under a 128-bit secret.  It is
made fresh for every reply (the timestamp from the reactor's clock, passed in), and a
presented one is good when its hash matches and its timestamp is at most an hour old and at
most five minutes ahead (RFC 9018 §4.3).  Nothing here decides what to answer; the server does.
"""
from __future__ import annotations

import hmac
import os
import socket
import struct

from smartdns.siphash import KEY_BYTES, siphash24

COOKIE_OPTION = 10                     # EDNS option code (RFC 7873 §4)
CLIENT_COOKIE_BYTES = 8
SERVER_COOKIE_MIN_BYTES = 8            # RFC 7873 §4: a server cookie is 8 to 32 bytes
SERVER_COOKIE_MAX_BYTES = 32
SERVER_COOKIE_VERSION = 1              # RFC 9018 §4.2
MAX_AGE_SECONDS = 3600                 # RFC 9018 §4.3: older cookies are refused ...
MAX_AHEAD_SECONDS = 300                # ... and so are cookies from more than 5 minutes ahead
SECRET_ENVIRONMENT = "SMARTDNS_COOKIE_SECRET"   # how the first process hands a made secret to workers


class CookieFormatError(ValueError):
    """A COOKIE option of a length RFC 7873 §5.2.2 calls malformed: answer FORMERR."""


def parse(body: bytes) -> tuple[bytes, bytes]:
    """(client cookie, server cookie or b"") of a COOKIE option's data: 8 bytes, or 16 to 40."""
    if len(body) != CLIENT_COOKIE_BYTES and not (
            CLIENT_COOKIE_BYTES + SERVER_COOKIE_MIN_BYTES <= len(body) <= CLIENT_COOKIE_BYTES + SERVER_COOKIE_MAX_BYTES):
        raise CookieFormatError(f"COOKIE option of {len(body)} bytes")
    return body[:CLIENT_COOKIE_BYTES], body[CLIENT_COOKIE_BYTES:]


def address_bytes(address: str) -> bytes:
    """The client address as the hash input takes it (4 bytes for IPv4, IPv4-mapped included)."""
    if ":" not in address:
        return socket.inet_pton(socket.AF_INET, address)
    packed = socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0])
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":
        return packed[12:]
    return packed


def make(secret: bytes, client_cookie: bytes, address: bytes, timestamp: int) -> bytes:
    """The 16-byte server cookie for a client cookie from ``address`` at ``timestamp`` (seconds)."""
    head = struct.pack("!B3xI", SERVER_COOKIE_VERSION, timestamp & 0xFFFFFFFF)
    return head + siphash24(secret, client_cookie + head + address)


def is_valid(secret: bytes, client_cookie: bytes, server_cookie: bytes, address: bytes, now: int) -> bool:
    """Whether ``server_cookie`` is one this secret made for this client cookie and address,
    within the RFC 9018 window (timestamps compared in serial arithmetic, RFC 1982)."""
    if len(server_cookie) != 16 or server_cookie[0] != SERVER_COOKIE_VERSION:
        return False
    (stamp,) = struct.unpack_from("!I", server_cookie, 4)
    age = (now - stamp) & 0xFFFFFFFF
    if age >= 0x80000000:
        age -= 0x100000000
    if age > MAX_AGE_SECONDS or age < -MAX_AHEAD_SECONDS:
        return False
    expected = siphash24(secret, client_cookie + server_cookie[:8] + address)
    return hmac.compare_digest(expected, server_cookie[8:])


def new_secret() -> bytes:
    """A random secret for a server whose config names none (made once, at start)."""
    return os.urandom(KEY_BYTES)
