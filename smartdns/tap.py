"""The twistd face of smartdns: ``twistd [-n] smartdns --config smartdns.toml``.

twistd reports a plugin's failures its own way: a usage error prints the whole option summary
before the message, an exception while binding prints a traceback in the foreground and, when
daemonising, 100 bytes of it cut mid-word.  This module makes every startup failure the lines
a person can act on, on stderr, with exit status 1, in both modes:

- config and zone problems, one ``file:line: message`` per line (found while parsing options);
- ``cannot listen on 127.0.0.1:5300/udp: address already in use`` — the listeners are bound
  here, in ``makeService``, which twistd runs before it daemonises, so the terminal still sees
  the message (the service's own ``privilegedStartService`` then has nothing left to do);
- ``control socket PATH exists and is not a socket; not touching it`` (or ``is in use by a
  running smartdns``) — the control socket is bound here too, before twistd drops privileges
  for ``--uid``/``--gid``, and handed to that user (smartdns.control).

``[log] level`` is applied by giving twistd's application an ``ILogObserver`` that filters
the observer twistd would have made (smartdns.logs), so it holds for twistd's own lines too.

The service itself is composed by `smartdns.service`; ``--version`` prints smartdns's version,
not Twisted's.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn

from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python import reflect, usage
from twisted.python.components import Componentized

from smartdns import logs, service
from smartdns.cli import version_text
from smartdns.config import Config
from smartdns.errors import ControlSocketError, LoadError
from smartdns.txtyping import TypedMultiService

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
        # twistd uses an application's ILogObserver only without --logger: take that option
        # over (its dotted name is resolved here), and filter what it makes too.
        self.twistd = getattr(self, "parent", None)
        self.user_logger: Any = None
        if self.twistd is not None and self.twistd.get("logger") is not None:
            try:
                self.user_logger = reflect.namedAny(self.twistd["logger"])  # type: ignore[no-untyped-call]
            except Exception as e:  # what twistd itself would say about a bad --logger
                fail([f"Logger '{self.twistd['logger']}' could not be imported: {e}"])
            self.twistd["logger"] = None


def warn_about(config: Config) -> None:
    """Log what is allowed but probably not meant (an open resolver, say)."""
    for problem in config.warnings:
        log.warn("{problem}", problem=f"warning: {problem}")


class TwistdRoot(TypedMultiService):
    """What the plugin hands twistd: the service, and the log observer twistd's application
    is given when the service joins it (twistd logs to that, see smartdns.logs)."""

    def __init__(self, built: service.SmartDNSService, observer: Callable[[], ILogObserver] | None) -> None:
        super().__init__()
        self.built = built
        self.observer = observer
        built.setServiceParent(self)  # type: ignore[no-untyped-call]

    def setServiceParent(self, parent: Any) -> None:  # noqa: N802 (Twisted API)
        if self.observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer())  # type: ignore[no-untyped-call]
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]


def makeService(options: Options) -> TwistdRoot:  # noqa: N802 (Twisted API)
    """Compose the service, then bind its listeners and control socket while a failure can still
    reach the terminal (and before twistd drops privileges)."""
    built = service.makeService(options)
    warn_about(built.config)
    try:
        built.privilegedStartService()
    except (CannotListenError, ControlSocketError) as e:
        fail([str(e)])
    observer = None
    twistd = getattr(options, "twistd", None)
    if twistd is not None:
        level, user_logger = built.config.log.level, options.user_logger
        observer = lambda: logs.twistd_observer(twistd, user_logger, level)  # noqa: E731
    return TwistdRoot(built, observer)
