# Stock Twisted Names, built exactly as `twistd dns --pyzone ZONE --cache --recursive`
# builds it (twisted/names/tap.py makeService), except that the upstream comes from the
# environment: `twistd dns --recursive` reads it from a resolv.conf, which cannot name a
# port other than 53, and the bench upstream listens on a high loopback port.
#
#   SMARTDNS_BENCH_PORT=5400 SMARTDNS_BENCH_UPSTREAM=127.0.0.1:5390 \
#   SMARTDNS_BENCH_PYZONE=/tmp/smartdns-bench/twisted/local.test.pyzone \
#   twistd -n --pidfile= -y bench/stock_twisted.tac
import os

from twisted.application import internet, service
from twisted.names import authority, cache, client, dns, server

port = int(os.environ["SMARTDNS_BENCH_PORT"])
up_host, up_port = os.environ["SMARTDNS_BENCH_UPSTREAM"].rsplit(":", 1)
pyzone = os.environ["SMARTDNS_BENCH_PYZONE"]

authorities = [authority.PySourceAuthority(pyzone)]
caches = [cache.CacheResolver()]
clients = [client.Resolver(servers=[(up_host, int(up_port))])]

factory = server.DNSServerFactory(authorities, caches, clients, 0)
factory.noisy = 0
protocol = dns.DNSDatagramProtocol(factory)

application = service.Application("stock-twisted-names")
internet.TCPServer(port, factory, interface="127.0.0.1").setServiceParent(application)
internet.UDPServer(port, protocol, interface="127.0.0.1").setServiceParent(application)
