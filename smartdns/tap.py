"""The twistd face of smartdns: ``twistd [-n] smartdns --config smartdns.toml``.

twistd reports a plugin's failures its own way: a usage error prints the whole option summary
before the message, an exception while binding prints a traceback in the foreground and, when
daemonising, 100 bytes of it cut mid-word.  This module makes every startup failure the lines
a person can act on, on stderr, with exit status 1, in both modes:

- config and zone problems, one ``file:line: message`` per line (found while parsing options);
- ``cannot listen on 127.0.0.1:5300/udp: address already in use`` — the listeners are bound
  here, in ``makeService``, which twistd runs before it daemonises, so the terminal still sees
  the message (the service's own ``privilegedStartService`` then has nothing left to do).

The service itself is composed by `smartdns.service`; ``--version`` prints smartdns's version,
not Twisted's.
"""
from __future__ import annotations

import sys
from typing import NoReturn

from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from smartdns import service
from smartdns.cli import version_text
from smartdns.config import Config
from smartdns.errors import LoadError

log = Logger()


def fail(lines: list[str]) -> NoReturn:
    """End the process with these lines on stderr and exit status 1 (no traceback, no usage)."""
    raise SystemExit("\n".join(lines))


class Options(service.Options):
    """The plugin's options (`smartdns.service.Options`), with ``--version`` and plain errors."""

    def opt_version(self) -> NoReturn:  # noqa: N802 (Twisted API)
        """Print smartdns's version and exit."""
        print(version_text())
        raise SystemExit(0)

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        try:
            super().postOptions()
        except usage.UsageError as e:
            # service.Options raises the UsageError while handling the LoadError.
            cause = e.__context__
            if isinstance(cause, LoadError):
                fail([str(problem) for problem in cause.problems])
            raise


def warn_about(config: Config) -> None:
    """Log what is allowed but probably not meant (an open resolver, say)."""
    for problem in config.warnings:
        log.warn("{problem}", problem=f"warning: {problem}")


def makeService(options: Options) -> service.SmartDNSService:  # noqa: N802 (Twisted API)
    """Compose the service, then bind its listeners while a failure can still reach the terminal."""
    built = service.makeService(options)
    warn_about(built.config)
    try:
        built.privilegedStartService()
    except CannotListenError as e:
        fail([str(e)])
    return built
