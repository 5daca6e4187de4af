"""twistd plugin: ``twistd -n smartdns --config smartdns.toml``."""
from twisted.application.service import ServiceMaker

smartdns = ServiceMaker("smartdns", "smartdns.tap", "Split-horizon DNS server", "smartdns")
