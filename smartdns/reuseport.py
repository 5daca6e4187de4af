"""Listening sockets shared by several processes (SO_REUSEPORT), adopted by the reactor.

Twisted's listenUDP/listenTCP cannot set SO_REUSEPORT, so the socket is made here and handed
over with ``adoptDatagramPort`` / ``adoptStreamPort``.  The kernel then spreads datagrams and
connections over every process bound to the port.
"""
from __future__ import annotations

import socket
from typing import Any, Callable

from smartdns.txtyping import cannot_listen

TCP_BACKLOG = 1024


def _socket(host: str, port: int, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise cannot_listen(host, port, e) from None
    return sock


def listen_udp(reactor: Any, host: str, port: int, protocol: Any,
               adopt: Callable[[Any, int, int, Any], Any] | None = None) -> Any:
    """A UDP port with SO_REUSEPORT set; ``adopt(reactor, fd, family, protocol)`` makes the port
    (default: ``reactor.adoptDatagramPort``)."""
    sock = _socket(host, port, socket.SOCK_DGRAM)
    try:
        if adopt is not None:
            return adopt(reactor, sock.fileno(), sock.family, protocol)
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol)
    finally:
        sock.close()          # the reactor holds its own duplicate of the descriptor


def listen_tcp(reactor: Any, host: str, port: int, factory: Any) -> Any:
    """A listening TCP port with SO_REUSEPORT set."""
    sock = _socket(host, port, socket.SOCK_STREAM)
    try:
        sock.listen(TCP_BACKLOG)
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()
