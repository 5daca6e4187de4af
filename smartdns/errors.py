"""The error hierarchy: every load problem is reported as ``file:line: message``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one input file, located by line (0 when no line applies)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
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
