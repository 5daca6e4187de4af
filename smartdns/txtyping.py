"""Typed edges of Twisted: the untyped Twisted calls smartdns makes go through here.

Twisted leaves parts of its API unannotated (``Failure``'s constructor and checks, the protocol
helpers' ``sendString``/``sendLine``/timeouts, ``MultiService``, ``udp.Port``, ``ClientCreator``,
``INotify``, ``CannotListenError``) and declares transports as zope interfaces whose methods mypy
cannot call, so ``mypy --strict`` rejects them in typed code.  Two kinds of wrapper keep the
rest of the package strict:

- functions, for calls off the per-query paths: each makes the one untyped call, with the types
  Twisted documents, and its ``type: ignore`` becomes an "unused ignore" error once Twisted
  annotates the call, which says the wrapper can go (``server.dispatch``, a per-query path,
  takes no extra call: a commented ``type: ignore`` stands there instead);
- base classes whose typed signatures exist for the type checker only (``TYPE_CHECKING``): at
  run time they add nothing, so the TCP query path pays no extra call for being typed.
"""
from __future__ import annotations

import socket
from typing import IO, TYPE_CHECKING, Any, Callable, ParamSpec, TypeVar, cast

from twisted.application import service
from twisted.internet import defer, protocol, udp
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.logger import ILogObserver, textFileLogObserver
from twisted.protocols import basic, policies
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.inotify import INotify

_P = ParamSpec("_P")
_T = TypeVar("_T")


# -- failures -------------------------------------------------------------------------------------

def failure_of(error: BaseException) -> Failure:
    """``error`` as a Failure, for an errback (``Failure(error)`` is unannotated)."""
    return Failure(error)  # type: ignore[no-untyped-call]


def failure_check(reason: Failure, *error_types: type[BaseException]) -> type[BaseException] | None:
    """The first of ``error_types`` that ``reason`` is, else None (``Failure.check`` is unannotated)."""
    matched: type[BaseException] | None = reason.check(*error_types)  # type: ignore[no-untyped-call]
    return matched


def failure_trap(reason: Failure, *error_types: type[BaseException]) -> type[BaseException]:
    """Like ``failure_check``, but re-raises ``reason`` when it is none of them (``Failure.trap``)."""
    matched: type[BaseException] = reason.trap(*error_types)  # type: ignore[no-untyped-call]
    return matched


# -- listening and connecting ----------------------------------------------------------------------

def cannot_listen(interface: str, port: int, error: OSError) -> CannotListenError:
    """The error Twisted raises when a port cannot be bound (its constructor is unannotated)."""
    return CannotListenError(interface, port, error)  # type: ignore[no-untyped-call]


def connect_tcp(reactor: Any, host: str, port: int, timeout: float,
                build: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_T]:
    """A TCP connection whose protocol is ``build(*args, **kwargs)``, fired with that protocol
    once connected (``ClientCreator`` is unannotated)."""
    creator = protocol.ClientCreator(reactor, build, *args, **kwargs)  # type: ignore[no-untyped-call]
    connected: defer.Deferred[_T] = creator.connectTCP(host, port, timeout=timeout)  # type: ignore[no-untyped-call]
    return connected


def new_inotify(reactor: Any) -> INotify:
    """An inotify reader on ``reactor``; raises where the platform has none (unannotated constructor)."""
    from twisted.internet import inotify
    return inotify.INotify(reactor=reactor)  # type: ignore[no-untyped-call]


# -- logging --------------------------------------------------------------------------------------

def text_log_observer(stream: IO[str]) -> ILogObserver:
    """Twisted's text observer on ``stream``, as the ILogObserver its zope ``@implementer`` makes
    it (mypy cannot see zope declarations)."""
    return cast(ILogObserver, textFileLogObserver(stream))


# -- transports ------------------------------------------------------------------------------------
# A connected protocol's ``transport`` is typed ``ITransport | None``, and mypy cannot call the
# methods of a zope interface; these read it as the object it is at run time.

def lose_connection(proto: protocol.Protocol) -> None:
    """Close ``proto``'s connection once its buffered data is written."""
    transport: Any = proto.transport
    transport.loseConnection()


def peer_host(proto: protocol.Protocol) -> str:
    """The remote address of ``proto``'s IP connection."""
    transport: Any = proto.transport
    host: str = transport.getPeer().host
    return host


def peer_port(proto: protocol.Protocol) -> int:
    """The remote port of ``proto``'s IP connection (0 when the transport has none)."""
    transport: Any = proto.transport
    return int(getattr(transport.getPeer(), "port", 0))


def udp_socket(proto: protocol.DatagramProtocol) -> socket.socket:
    """The socket under a listening datagram protocol's port."""
    transport: Any = proto.transport
    sock: socket.socket = transport.socket
    return sock


# -- base classes with typed signatures ------------------------------------------------------------
# The signatures below are Twisted's own behaviour, declared for mypy only.

class TypedInt16StringReceiver(basic.Int16StringReceiver):
    """Twisted's 16-bit length-prefixed protocol, with ``sendString`` typed."""

    if TYPE_CHECKING:
        def sendString(self, string: bytes) -> None:  # noqa: N802 (Twisted API)
            """Send one message, prefixed with its length."""


class TypedLineOnlyReceiver(basic.LineOnlyReceiver):
    """Twisted's line protocol, with ``sendLine`` typed."""

    if TYPE_CHECKING:
        def sendLine(self, line: bytes) -> None:  # noqa: N802 (Twisted API)
            """Send one line followed by the delimiter."""


class TypedTimeoutMixin(policies.TimeoutMixin):
    """Twisted's idle timeout for protocols, with its methods typed."""

    if TYPE_CHECKING:
        def setTimeout(self, period: float | None) -> float | None:  # noqa: N802 (Twisted API)
            """Arm (or with None, cancel) the idle timeout; returns the previous period."""

        def resetTimeout(self) -> None:  # noqa: N802 (Twisted API)
            """Restart the idle timeout: the connection just did something."""


class TypedMultiService(service.MultiService):
    """Twisted's service container, with its life-cycle methods typed."""

    if TYPE_CHECKING:
        def __init__(self) -> None:
            """An empty container, not running."""

        def privilegedStartService(self) -> None:  # noqa: N802 (Twisted API)
            """Start what needs privileges (binding low ports), for every child."""

        def startService(self) -> None:  # noqa: N802 (Twisted API)
            """Start every child."""

        def stopService(self) -> defer.Deferred[list[tuple[bool, Any]]]:  # noqa: N802 (Twisted API)
            """Stop every child, last first; fires with each child's (success, result)."""


class TypedUDPPort(udp.Port):
    """Twisted's UDP port for reactors with file descriptors, with the calls smartdns makes typed."""

    if TYPE_CHECKING:
        def __init__(self, port: int, proto: AbstractDatagramProtocol, interface: str = "",
                     maxPacketSize: int = 8192, reactor: Any = None) -> None:  # noqa: N803 (Twisted API)
            """An unbound port; ``startListening`` binds it."""

        def startListening(self) -> None:  # noqa: N802 (Twisted API)
            """Bind (or adopt) the socket and start reading."""

        @classmethod
        def _fromListeningDescriptor(cls: type[_T], reactor: Any, fd: int, addressFamily: int,  # noqa: N802,N803
                                     protocol: AbstractDatagramProtocol,
                                     maxPacketSize: int) -> _T:
            """A port over an already bound socket; ``startListening`` starts reading it."""
