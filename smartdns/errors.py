"""The error hierarchy: every load problem is reported as ``file:line: message``."""
from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.error import CannotListenError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one input file, located by line (0 when no line applies)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        """``file:line: message``, or ``file: message`` when no line applies (a directory, a file
        that cannot be read, a whole zone without an SOA)."""
        if self.line <= 0:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class SmartDNSError(Exception):
    """Base class for every error smartdns raises on purpose."""


class LoadError(SmartDNSError):
    """Configuration or zone data could not be loaded; carries every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(LoadError):
    """The TOML configuration is invalid."""


class ZoneError(LoadError):
    """A zone file, overlay or JSON record source is invalid."""


class UpstreamError(SmartDNSError):
    """An upstream failed to give a usable answer (timeout, bad reply, SERVFAIL, lost connection)."""


class ListenError(CannotListenError, SmartDNSError):
    """A listening socket could not be bound; says which address, port and protocol, and why.

    A CannotListenError still, so code that catches Twisted's error (retrying port 0) keeps
    working; its text is the one line a failed start prints."""

    def __init__(self, host: str, port: int, protocol: str, error: BaseException) -> None:
        CannotListenError.__init__(self, host, port, error)  # type: ignore[no-untyped-call]
        self.protocol = protocol
        self.reason = error

    def __str__(self) -> str:
        """``cannot listen on 127.0.0.1:53/udp: permission denied``."""
        reason = self.reason
        if isinstance(reason, CannotListenError):
            reason = reason.socketError
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        text = text[:1].lower() + text[1:]
        host = f"[{self.interface}]" if ":" in self.interface else self.interface
        return f"cannot listen on {host}:{self.port}/{self.protocol}: {text}"


class ControlSocketError(SmartDNSError):
    """The control socket cannot be set up without harm; the text is the one line a failed start prints."""
