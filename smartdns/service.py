"""twistd entry: ``twistd -n smartdns --config smartdns.toml``.

``Options`` parses the command line and loads the configuration and zones (so a bad file ends
twistd with ``file:line: message`` lines instead of a traceback); ``makeService`` only composes
the service tree.  ``SmartDNSService`` owns the current snapshot and the listeners.
"""
from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from smartdns.cache import AnswerCache
from smartdns.config import Config, load_config
from smartdns.errors import LoadError
from smartdns.forwarder import Forwarder
from smartdns.resolver import ForwardResolver
from smartdns.server import DNSDatagramProtocol, QueryHandler, SmartDNSServerFactory
from smartdns.snapshot import Snapshot, build_snapshot

log = Logger()


class Options(usage.Options):
    """Command-line options of the twistd plugin."""

    optParameters = [
        ["config", "c", None, "Path to smartdns.toml (default: built-in defaults, zones from ./zones)."],
    ]

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        try:
            self.loaded = load(self["config"])
        except LoadError as e:
            raise usage.UsageError("configuration is invalid:\n" + str(e)) from None


def load(path: str | None) -> tuple[Config, Snapshot]:
    """Config and first snapshot, or LoadError listing every problem."""
    config = load_config(path)
    return config, build_snapshot(config, generation=1)


class SmartDNSService(service.MultiService):
    """The running server: current snapshot, cache, forwarder, and UDP+TCP listeners."""

    def __init__(self, config: Config, snapshot: Snapshot, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.current = snapshot
        self.cache = AnswerCache(reactor, config.cache)
        self.forwarder = Forwarder(reactor, config.forward, tls_connector=_tls_connector(reactor, config))
        self.resolver = ForwardResolver(reactor, self.cache, self.forwarder, config.cache)
        self.handler = QueryHandler(reactor, lambda: self.current, self.resolver,
                                    config.server.max_udp_payload, config.server.chaos_version)
        self.tcp_factory = SmartDNSServerFactory(self.handler, config.server.tcp_idle_timeout,
                                                 config.server.tcp_max_connections)
        self.ports: list[Any] = []

    def privilegedStartService(self) -> None:  # noqa: N802
        """Bind every listener before twistd drops privileges (port 53)."""
        super().privilegedStartService()
        for host, port in self.config.server.listen:
            udp = self.reactor.listenUDP(port, DNSDatagramProtocol(self.handler), interface=host)
            bound = udp.getHost().port
            tcp = self.reactor.listenTCP(bound, self.tcp_factory, interface=host, backlog=1024)
            self.ports += [udp, tcp]
            log.info("smartdns listening on {host} port {port} (UDP and TCP)", host=host, port=bound)

    def startService(self) -> None:  # noqa: N802
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        snap = self.current
        log.info("serving generation {generation}: {zones} zones, {lines} lines",
                 generation=snap.generation, zones=len(snap.zones), lines=len(snap.line_names))

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        self.forwarder.close()
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports]).addCallback(
            lambda _: super(SmartDNSService, self).stopService())

    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each UDP listener, for tests and logs."""
        return [(p.getHost().host, p.getHost().port) for p in self.ports[::2]]


def _tls_connector(reactor: Any, config: Config) -> Any:
    """The DNS-over-TLS connector, where any upstream uses tls://."""
    return None


def makeService(options: Options) -> SmartDNSService:  # noqa: N802
    """Compose the service from parsed options (the global reactor is chosen only here)."""
    from twisted.internet import reactor

    config, snapshot = options.loaded
    return SmartDNSService(config, snapshot, reactor)

