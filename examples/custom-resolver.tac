"""A smartdns service with a resolver of your own in the chain (run: twistd -ny custom.tac)."""
from twisted.application import service
from twisted.internet import defer
from twisted.names import common, dns, error

from smartdns.service import service_from_config


class Canary(common.ResolverBase):
    """Answers canary.internal. with a fixed address; every other name goes on down the chain."""

    def _lookup(self, name, cls, type, timeout):
        if name.lower() == b"canary.internal" and type == dns.A:
            record = dns.RRHeader(name, dns.A, dns.IN, 60, dns.Record_A("192.0.2.99", 60), auth=True)
            return defer.succeed(([record], [], []))
        return defer.fail(error.DomainError(name))


application = service.Application("smartdns")
service_from_config("smartdns.toml", resolvers=[Canary()]).setServiceParent(application)
