"""Tests for smartdns.config: TOML text → frozen dataclasses, or every problem with its line."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from smartdns.config import (
    DEFAULT_RECURSION,
    MAX_WORKERS,
    AccessConfig,
    CacheConfig,
    Config,
    CookiesConfig,
    EcsConfig,
    ForwardZone,
    LineConfig,
    LogConfig,
    PolicyRule,
    SecondaryZone,
    ServerConfig,
    TransferRule,
    Upstream,
    load_config,
    parse_config,
    parse_upstream,
    read_resolv_conf,
)
from smartdns.errors import ConfigError, Problem
from smartdns.tsig import TsigKey

net = ipaddress.ip_network
CPU_WORKERS = min(os.cpu_count() or 1, MAX_WORKERS)

# Placeholders in expected values: {dir} is the config file's directory, {up} its parent.
CONFIG_NAME = "smartdns.toml"
CA_NAME = "ca.pem"


def _self_signed_pem() -> bytes:
    """A real (throwaway) CA certificate, so tls_ca_file's content check passes."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartdns test CA")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)

def _server_pair_pem() -> tuple[bytes, bytes]:
    """A throwaway self-signed server certificate and its key (PEM), for tls_cert_file."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dns.test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(2).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


#: (TOML text, {attribute path: expected value}). Paths like "forward.zones[0].name".
VALID: list[tuple[str, dict[str, Any]]] = [
    # Defaults: an empty file is a complete configuration.
    (
        "",
        {
            "server": ServerConfig(),
            "zones.directory": "{dir}/zones",
            "zones.records_json": (),
            "zones.lines_json": None,
            "zones.watch": True,
            "lines": (),
            "forward.upstreams": (),
            "forward.timeout": 2.0,
            "forward.total_timeout": 5.0,
            "forward.policy": "sequential",
            "forward.tls_ca_file": None,
            "forward.edns_udp_size": 1232,
            "forward.max_outstanding": 10000,
            "forward.zones": (),
            "access": AccessConfig(DEFAULT_RECURSION),
            "cache": CacheConfig(),
            "policies": (),
        },
    ),
    # [server]
    (
        '[server]\nlisten = ["0.0.0.0:53", "[::]:53", "127.0.0.153:0", "[2001:DB8::1]:5300"]',
        {"server.listen": (("0.0.0.0", 53), ("::", 53), ("127.0.0.153", 0), ("2001:db8::1", 5300))},
    ),
    ('[server]\nlisten = ["127.0.0.1:0", "127.0.0.1:0"]', {"server.listen": (("127.0.0.1", 0), ("127.0.0.1", 0))}),
    ("[server]\nworkers = 4", {"server.workers": 4}),
    ("[server]\nworkers = 64", {"server.workers": 64}),
    ('[server]\nworkers = "auto"', {"server.workers": CPU_WORKERS}),
    ("[server]\nmax_udp_payload = 512", {"server.max_udp_payload": 512}),
    ("[server]\nmax_udp_payload = 4096", {"server.max_udp_payload": 4096}),
    ("[server]\ntcp_idle_timeout = 0.5", {"server.tcp_idle_timeout": 0.5}),
    ("[server]\ntcp_idle_timeout = 3600", {"server.tcp_idle_timeout": 3600.0}),
    ("[server]\ntcp_max_connections = 1", {"server.tcp_max_connections": 1}),
    ("[server]\ntcp_max_connections = 100_000", {"server.tcp_max_connections": 100000}),
    ('[server]\nchaos_version = "smartdns"', {"server.chaos_version": "smartdns"}),
    ('[server]\ncontrol_socket = "run/smartdns.sock"', {"server.control_socket": "{dir}/run/smartdns.sock"}),
    ('[server]\ncontrol_socket = ""', {"server.control_socket": None}),
    (
        '[server]\ntls_listen = ["127.0.0.1:853", "[::1]:853"]\nhttps_listen = ["127.0.0.1:443", "127.0.0.1:0"]\n'
        'tls_cert_file = "server.pem"\ntls_key_file = "server.key"',
        {"server.tls_listen": (("127.0.0.1", 853), ("::1", 853)),
         "server.https_listen": (("127.0.0.1", 443), ("127.0.0.1", 0)),
         "server.tls_cert_file": "{dir}/server.pem", "server.tls_key_file": "{dir}/server.key"},
    ),
    ('[server]\nhttps_listen = ["127.0.0.1:0"]\ntls_cert_file = "server.pem"\ntls_key_file = "server.key"',
     {"server.tls_listen": (), "server.https_listen": (("127.0.0.1", 0),)}),
    ('[server]\ntls_listen = []\ntls_cert_file = ""\ntls_key_file = ""',
     {"server.tls_listen": (), "server.tls_cert_file": None, "server.tls_key_file": None}),
    # [log]: the server log's level, info unless set.
    ("", {"log": LogConfig(), "log.level": "info"}),
    ("[log]", {"log.level": "info"}),
    ('[log]\nlevel = "debug"', {"log.level": "debug"}),
    ('[log]\nlevel = "warn"', {"log.level": "warn"}),
    ('[log]\nlevel = "error"', {"log.level": "error"}),
    ("[log]", {"log.queries": None}),
    ('[server]\ntrusted_proxies = ["10.9.0.0/24", "fd00::/8"]',
     {"server.trusted_proxies": (ipaddress.ip_network("10.9.0.0/24"), ipaddress.ip_network("fd00::/8"))}),
    ("", {"server.trusted_proxies": ()}),
    ('[log]\nqueries = "-"', {"log.queries": "-"}),
    ('[log]\nqueries = "queries.log"', {"log.queries": "{dir}/queries.log"}),
    ('[metrics]\nlisten = "127.0.0.1:9153"', {"metrics.listen": ("127.0.0.1", 9153)}),
    ('[metrics]\nlisten = "[::1]:9153"', {"metrics.listen": ("::1", 9153)}),
    ("", {"metrics.listen": None}),
    # [zones]: paths are relative to the config file's directory.
    ('[zones]\ndirectory = "/srv/zones"', {"zones.directory": "/srv/zones"}),
    ('[zones]\ndirectory = "data/zones/"', {"zones.directory": "{dir}/data/zones"}),
    ('[zones]\ndirectory = "../zones"', {"zones.directory": "{up}/zones"}),
    (
        '[zones]\nrecords_json = ["records.json", "../x.json"]',
        {"zones.records_json": ("{dir}/records.json", "{up}/x.json")},
    ),
    ('[zones]\nlines_json = ""', {"zones.lines_json": None}),
    ('[zones]\nlines_json = "smart-line.json"', {"zones.lines_json": "{dir}/smart-line.json"}),
    ("[zones]\nwatch = false", {"zones.watch": False}),
    # [lines]: order kept; IPv6; bare addresses are /32 or /128; empty lines allowed.
    (
        '[lines]\nline1 = ["192.168.1.110/32"]\nline2 = ["127.0.0.1", "::1/128", "2001:db8::/32"]\n'
        'office = []\n"dc-1.east_2" = ["10.0.0.0/8"]',
        {
            "lines": (
                LineConfig("line1", (net("192.168.1.110/32"),)),
                LineConfig("line2", (net("127.0.0.1/32"), net("::1/128"), net("2001:db8::/32"))),
                LineConfig("office", ()),
                LineConfig("dc-1.east_2", (net("10.0.0.0/8"),)),
            )
        },
    ),
    # [forward]
    (
        '[forward]\nupstreams = ["10.0.0.53", "[2001:db8::1]:5353", "tcp://10.0.0.1", '
        '"tls://10.0.0.54:853#dns.corp.example"]',
        {
            "forward.upstreams": (
                Upstream("udp", "10.0.0.53", 53, None),
                Upstream("udp", "2001:db8::1", 5353, None),
                Upstream("tcp", "10.0.0.1", 53, None),
                Upstream("tls", "10.0.0.54", 853, "dns.corp.example"),
            )
        },
    ),
    ("[forward]\nupstreams = []", {"forward.upstreams": ()}),
    ("[forward]\ntimeout = 0.05\ntotal_timeout = 0.05", {"forward.timeout": 0.05, "forward.total_timeout": 0.05}),
    ("[forward]\ntimeout = 30\ntotal_timeout = 60", {"forward.timeout": 30.0, "forward.total_timeout": 60.0}),
    ("[forward]\ntimeout = 10", {"forward.timeout": 10.0, "forward.total_timeout": 10.0}),
    ('[forward]\npolicy = "round_robin"', {"forward.policy": "round_robin"}),
    ('[forward]\npolicy = "random"', {"forward.policy": "random"}),
    (f'[forward]\ntls_ca_file = "{CA_NAME}"', {"forward.tls_ca_file": "{dir}/" + CA_NAME}),
    ('[forward]\ntls_ca_file = ""', {"forward.tls_ca_file": None}),
    ("[forward]\nedns_udp_size = 512", {"forward.edns_udp_size": 512}),
    ("[forward]\nedns_udp_size = 4096", {"forward.edns_udp_size": 4096}),
    ("[forward]\nmax_outstanding = 1", {"forward.max_outstanding": 1}),
    ("[forward]\nmax_outstanding = 1_000_000", {"forward.max_outstanding": 1000000}),
    # [[forward.zone]]: names normalised, policy inherited unless set, root allowed.
    (
        '[forward]\npolicy = "random"\n\n[[forward.zone]]\nname = "Corp.Example."\n'
        'upstreams = ["10.0.0.53", "tls://10.0.0.54:853#dns.corp.example"]\n\n'
        '[[forward.zone]]\nname = "."\nupstreams = ["192.0.2.1"]\npolicy = "sequential"',
        {
            "forward.zones": (
                ForwardZone(
                    "corp.example",
                    (Upstream("udp", "10.0.0.53", 53, None), Upstream("tls", "10.0.0.54", 853, "dns.corp.example")),
                    "random",
                ),
                ForwardZone("", (Upstream("udp", "192.0.2.1", 53, None),), "sequential"),
            )
        },
    ),
    (
        '[forward]\nzone = [{name = "a.example", upstreams = ["192.0.2.1"]}]',
        {"forward.zones[0].name": "a.example", "forward.zones[0].policy": "sequential"},
    ),
    # [access]
    ("[access]\nrecursion = []", {"access.recursion": ()}),
    ('[access]\nrecursion = ["0.0.0.0/0", "::/0"]', {"access.recursion": (net("0.0.0.0/0"), net("::/0"))}),
    # [cookies] and [ecs]: off by default (a secret made at start, nobody trusted).
    ("", {"cookies": CookiesConfig(), "cookies.secret": None, "cookies.require": False, "ecs": EcsConfig()}),
    ('[cookies]\nsecret = "000102030405060708090A0B0C0D0E0F"\nrequire = true',
     {"cookies.secret": bytes(range(16)), "cookies.require": True}),
    ('[cookies]\nsecret = ""', {"cookies.secret": None}),
    ('[ecs]\ntrusted = ["192.0.2.53", "2001:db8::/32"]', {"ecs.trusted": (net("192.0.2.53/32"), net("2001:db8::/32"))}),
    ("[ecs]\ntrusted = []", {"ecs.trusted": ()}),
    ('[ecs]\ntrusted = ["192.0.2.53"]\nforward = true', {"ecs.forward": True}),
    ("", {"ecs.forward": False}),
    ('[ecs]\nforward = true', {"ecs.forward": True, "ecs.trusted": ()}),
    # [cache]: every key at its bounds.
    ("[cache]\nmax_entries = 0", {"cache.max_entries": 0}),
    ("[cache]\nmax_entries = 10_000_000", {"cache.max_entries": 10000000}),
    ("[cache]\nmin_ttl = 86400", {"cache.min_ttl": 86400, "cache.max_ttl": 86400}),
    ("[cache]\nmin_ttl = 60\nmax_ttl = 60", {"cache.min_ttl": 60, "cache.max_ttl": 60}),
    ("[cache]\nmax_ttl = 604800", {"cache.max_ttl": 604800}),
    ("[cache]\nmax_ttl = 0", {"cache.max_ttl": 0}),
    ("[cache]\nnegative_max_ttl = 0", {"cache.negative_max_ttl": 0}),
    ("[cache]\nnegative_max_ttl = 86400", {"cache.negative_max_ttl": 86400}),
    ("[cache]\nservfail_ttl = 0", {"cache.servfail_ttl": 0}),
    ("[cache]\nservfail_ttl = 300", {"cache.servfail_ttl": 300}),
    ("[cache]\nserve_stale = 604800", {"cache.serve_stale": 604800}),
    ("[cache]\nprefetch = false", {"cache.prefetch": False}),
    # [rate_limit]: off by default; NXDOMAIN and error rates default to responses_per_second (BIND).
    ("", {"rate_limit.enabled": False, "rate_limit.responses_per_second": 0, "rate_limit.window": 15,
          "rate_limit.slip": 2, "rate_limit.ipv4_prefix_length": 24, "rate_limit.ipv6_prefix_length": 56,
          "rate_limit.exempt": ()}),
    ("[rate_limit]\nresponses_per_second = 5",
     {"rate_limit.enabled": True, "rate_limit.responses_per_second": 5, "rate_limit.nxdomains_per_second": 5,
      "rate_limit.errors_per_second": 5}),
    ("[rate_limit]\nresponses_per_second = 5\nnxdomains_per_second = 0\nerrors_per_second = 1000",
     {"rate_limit.nxdomains_per_second": 0, "rate_limit.errors_per_second": 1000}),
    ("[rate_limit]\nnxdomains_per_second = 3", {"rate_limit.enabled": True, "rate_limit.responses_per_second": 0}),
    ("[rate_limit]\nerrors_per_second = 0", {"rate_limit.enabled": False}),
    ("[rate_limit]\nresponses_per_second = 1\nwindow = 3600\nslip = 0\nipv4_prefix_length = 32\n"
     "ipv6_prefix_length = 128",
     {"rate_limit.window": 3600, "rate_limit.slip": 0, "rate_limit.ipv4_prefix_length": 32,
      "rate_limit.ipv6_prefix_length": 128}),
    ("[rate_limit]\nwindow = 1\nslip = 10\nipv4_prefix_length = 0\nipv6_prefix_length = 0",
     {"rate_limit.window": 1, "rate_limit.slip": 10, "rate_limit.ipv4_prefix_length": 0,
      "rate_limit.ipv6_prefix_length": 0}),
    ('[rate_limit]\nexempt = ["10.0.0.0/8", "2001:db8::/32"]',
     {"rate_limit.exempt": (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))}),
    # [hosts]: paths relative to the config file; none by default.
    ("", {"hosts.files": ()}),
    ('[hosts]\nfiles = ["/etc/hosts", "lab-hosts"]', {"hosts.files": ("/etc/hosts", "{dir}/lab-hosts")}),
    # [[policy]]: names normalised, wildcards kept, types as numbers, order kept.
    (
        '[[policy]]\nnames = ["Blocked.Example.COM.", "*.ads.example"]\naction = "refuse"\n\n'
        '[lines]\nline1 = []\nline2 = []\n[[policy]]\nnames = ["x.example"]\naction = "nxdomain"\nlines = ["line1", "line2"]\n'
        'types = ["A", "aaaa", "TYPE65", "ANY"]\n\n'
        '[[policy]]\nnames = ["y.example"]\naction = "nodata"\n\n'
        '[[policy]]\nnames = ["z.example"]\naction = "drop"\nlines = []\ntypes = []',
        {
            "policies": (
                PolicyRule(("blocked.example.com", "*.ads.example"), "refuse"),
                PolicyRule(("x.example",), "nxdomain", ("line1", "line2"), (1, 28, 65, 255)),
                PolicyRule(("y.example",), "nodata"),
                PolicyRule(("z.example",), "drop"),
            )
        },
    ),
]

#: (TOML text, the exact ConfigError text). The file is always CONFIG_NAME.
INVALID: list[tuple[str, str]] = [
    # [rate_limit]: BIND's bounds.
    ("[rate_limit]\nresponses_per_second = 1001",
     "smartdns.toml:2: [rate_limit] responses_per_second must be between 0 and 1000, not 1001"),
    ("[rate_limit]\nresponses_per_second = -1",
     "smartdns.toml:2: [rate_limit] responses_per_second must be between 0 and 1000, not -1"),
    ("[rate_limit]\n\nnxdomains_per_second = 2000",
     "smartdns.toml:3: [rate_limit] nxdomains_per_second must be between 0 and 1000, not 2000"),
    ('[rate_limit]\nerrors_per_second = "5"',
     "smartdns.toml:2: [rate_limit] errors_per_second must be an integer, not a string"),
    ("[rate_limit]\nwindow = 0", "smartdns.toml:2: [rate_limit] window must be between 1 and 3600 seconds, not 0"),
    ("[rate_limit]\nwindow = 3601",
     "smartdns.toml:2: [rate_limit] window must be between 1 and 3600 seconds, not 3601"),
    ("[rate_limit]\nslip = 11", "smartdns.toml:2: [rate_limit] slip must be between 0 and 10, not 11"),
    ("[rate_limit]\nipv4_prefix_length = 33",
     "smartdns.toml:2: [rate_limit] ipv4_prefix_length must be between 0 and 32, not 33"),
    ("[rate_limit]\nipv6_prefix_length = 129",
     "smartdns.toml:2: [rate_limit] ipv6_prefix_length must be between 0 and 128, not 129"),
    ('[rate_limit]\nexempt = ["10.0.0.1/8"]',
     "smartdns.toml:2: [rate_limit] exempt: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)"),
    ('[rate_limit]\nexempt = ["nonsense"]',
     "smartdns.toml:2: [rate_limit] exempt: 'nonsense' is not a valid network"),
    ("[rate_limit]\nresponses_per_sec = 5", "smartdns.toml:2: unknown key 'responses_per_sec' in [rate_limit]"),
    ("rate_limit = 5", "smartdns.toml:1: [rate_limit] must be a table, not an integer"),
    # Files and directories the config names are checked with everything else, at their lines.
    (
        '[server]\ncontrol_socket = "/nonexistent/smartdns.sock"',
        "smartdns.toml:2: [server] control_socket: directory '/nonexistent' does not exist",
    ),
    (
        '[zones]\nlines_json = "/nonexistent/smart-line.json"',
        "smartdns.toml:2: [zones] lines_json: '/nonexistent/smart-line.json' does not exist",
    ),
    (
        '[zones]\nrecords_json = [\n  "/nonexistent/records.json",\n]',
        "smartdns.toml:3: [zones] records_json: '/nonexistent/records.json' does not exist",
    ),
    (
        '[zones]\nlines_json = "/"',
        "smartdns.toml:2: [zones] lines_json: '/' is not a file",
    ),
    # [[policy]] lines must be configured lines, reported at the entry.
    (
        '[lines]\na = []\n\n[[policy]]\nnames = ["x"]\naction = "drop"\nlines = [\n  "a",\n  "nosuchline",\n]',
        "smartdns.toml:9: [[policy]] lines: 'nosuchline' is not a configured line (configured: a)",
    ),
    (
        '[[policy]]\nnames = ["x"]\naction = "drop"\nlines = ["a"]',
        "smartdns.toml:4: [[policy]] lines: 'a' is not a configured line (configured: none)",
    ),
    # Syntax errors keep tomllib's words and take its line.
    ("[server]\nworkers = = 2", "smartdns.toml:2: Invalid value"),
    ("[cache\n", "smartdns.toml:1: Expected ']' at the end of a table declaration"),
    ("[cache]\nmin_ttl = 1\nmin_ttl = 2\n", "smartdns.toml:3: Cannot overwrite a value"),
    # Unknown names.
    ("[cache]\n\nmax_entry = 5", "smartdns.toml:3: unknown key 'max_entry' in [cache]"),
    ("[cache.extra]\n", "smartdns.toml:1: unknown key 'extra' in [cache]"),
    ("[serve]\nlisten = []", "smartdns.toml:1: unknown table [serve]"),
    ("\n[[rules]]\nname = 'x'", "smartdns.toml:2: unknown table [[rules]]"),
    ("debug = true", "smartdns.toml:1: unknown key 'debug' at the top level"),
    (
        "[[forward.zone]]\nname = 'a'\nupstreams = ['192.0.2.1']\nttl = 5",
        "smartdns.toml:4: unknown key 'ttl' in [[forward.zone]]",
    ),
    ("[[policy]]\nnames = ['a']\naction = 'drop'\nreason = 'x'", "smartdns.toml:4: unknown key 'reason' in [[policy]]"),
    # Tables of the wrong shape.
    ("cache = 1", "smartdns.toml:1: [cache] must be a table, not an integer"),
    ("[[cache]]", "smartdns.toml:1: [cache] must be a table, not an array"),
    ("[policy]\nnames = ['a']", "smartdns.toml:1: [[policy]] must be an array of tables, not a table"),
    ("[forward.zone]\nname = 'a'", "smartdns.toml:1: [[forward.zone]] must be an array of tables, not a table"),
    # [server]
    ("[server]\nlisten = []", "smartdns.toml:2: [server] listen must not be empty"),
    ('[server]\nlisten = "127.0.0.1:53"', "smartdns.toml:2: [server] listen must be an array of strings, not a string"),
    ("[server]\nlisten = [\n  53,\n]", "smartdns.toml:3: [server] listen entries must be strings, not an integer"),
    (
        '[server]\nlisten = ["localhost:53"]',
        "smartdns.toml:2: [server] listen: 'localhost:53': listen address must be an IP address",
    ),
    (
        '[server]\nlisten = ["127.0.0.1"]',
        "smartdns.toml:2: [server] listen: '127.0.0.1': needs a port, e.g. '127.0.0.1:53'",
    ),
    (
        '[server]\nlisten = ["::1:53"]',
        "smartdns.toml:2: [server] listen: '::1:53': write IPv6 addresses as [address]:port",
    ),
    (
        '[server]\nlisten = ["127.0.0.1:65536"]',
        "smartdns.toml:2: [server] listen: '127.0.0.1:65536': port must be 0..65535",
    ),
    (
        '[server]\nlisten = [\n  "127.0.0.1:53",\n  "127.0.0.1:53",\n]',
        "smartdns.toml:4: [server] listen: '127.0.0.1:53' is listed twice",
    ),
    ("[server]\nworkers = 0", "smartdns.toml:2: [server] workers must be between 1 and 64, not 0"),
    ("[server]\nworkers = 65", "smartdns.toml:2: [server] workers must be between 1 and 64, not 65"),
    ('[server]\nworkers = "many"', "smartdns.toml:2: [server] workers must be an integer or 'auto', not 'many'"),
    ("[server]\nworkers = true", "smartdns.toml:2: [server] workers must be an integer, not a boolean"),
    (
        "[server]\nmax_udp_payload = 511",
        "smartdns.toml:2: [server] max_udp_payload must be between 512 and 4096 bytes, not 511",
    ),
    (
        "[server]\nmax_udp_payload = 4097",
        "smartdns.toml:2: [server] max_udp_payload must be between 512 and 4096 bytes, not 4097",
    ),
    (
        "[server]\ntcp_idle_timeout = 0",
        "smartdns.toml:2: [server] tcp_idle_timeout must be greater than 0 and at most 3600 seconds, not 0",
    ),
    (
        "[server]\ntcp_idle_timeout = 3600.5",
        "smartdns.toml:2: [server] tcp_idle_timeout must be greater than 0 and at most 3600 seconds, not 3600.5",
    ),
    (
        "[server]\ntcp_idle_timeout = nan",
        "smartdns.toml:2: [server] tcp_idle_timeout must be greater than 0 and at most 3600 seconds, not nan",
    ),
    ('[server]\ntcp_idle_timeout = "10s"', "smartdns.toml:2: [server] tcp_idle_timeout must be a number, not a string"),
    (
        "[server]\ntcp_max_connections = 0",
        "smartdns.toml:2: [server] tcp_max_connections must be between 1 and 100000, not 0",
    ),
    ("[server]\nchaos_version = 1", "smartdns.toml:2: [server] chaos_version must be a string, not an integer"),
    ("[server]\ncontrol_socket = true", "smartdns.toml:2: [server] control_socket must be a string, not a boolean"),
    ('[server]\ntls_listen = ["127.0.0.1:853"]',
     "smartdns.toml:2: [server] tls_listen needs tls_cert_file and tls_key_file"),
    ('[server]\nhttps_listen = ["127.0.0.1:443"]',
     "smartdns.toml:2: [server] https_listen needs tls_cert_file and tls_key_file"),
    ('[server]\nhttps_listen = ["localhost:443"]',
     "smartdns.toml:2: [server] https_listen: 'localhost:443': listen address must be an IP address"),
    ('[server]\ntls_listen = "127.0.0.1:853"',
     "smartdns.toml:2: [server] tls_listen must be an array of strings, not a string"),
    ('[server]\ntls_cert_file = "/nonexistent/server.pem"',
     "smartdns.toml:2: [server] tls_cert_file is set but tls_key_file is not"),
    ('[server]\ntls_key_file = "/nonexistent/server.key"',
     "smartdns.toml:2: [server] tls_key_file is set but tls_cert_file is not"),
    ("[server]\ntls_cert_file = 1", "smartdns.toml:2: [server] tls_cert_file must be a string, not an integer"),
    # [log]
    (
        '[log]\nlevel = "verbose"',
        "smartdns.toml:2: [log] level must be one of debug, info, warn, error, not 'verbose'",
    ),
    ('[log]\nlevel = "INFO"', "smartdns.toml:2: [log] level must be one of debug, info, warn, error, not 'INFO'"),
    ("[log]\nlevel = 3", "smartdns.toml:2: [log] level must be a string, not an integer"),
    ('[log]\nqueries = "/nonexistent/q.log"', "smartdns.toml:2: [log] queries: directory '/nonexistent' does not exist"),
    ("[log]\nqueries = 1", "smartdns.toml:2: [log] queries must be a string, not an integer"),
    ('[metrics]\nlisten = "localhost:9153"', "smartdns.toml:2: [metrics] listen: listen address must be an IP address"),
    ("[metrics]\nlisten = 9153", "smartdns.toml:2: [metrics] listen must be a string, not an integer"),
    ("[metrics]\nport = 9153", "smartdns.toml:2: unknown key 'port' in [metrics]"),
    ('[server]\ntrusted_proxies = ["10.9.0.1/24"]',
     "smartdns.toml:2: [server] trusted_proxies: '10.9.0.1/24' has host bits set (did you mean '10.9.0.0/24'?)"),
    ("[server]\ntrusted_proxies = '10.9.0.0/24'", "smartdns.toml:2: [server] trusted_proxies must be an array of strings, not a string"),
    ('[log]\nlevels = "info"', "smartdns.toml:2: unknown key 'levels' in [log]"),
    ('log = "info"', "smartdns.toml:1: [log] must be a table, not a string"),
    # [zones]
    ('[zones]\ndirectory = ""', "smartdns.toml:2: [zones] directory must not be empty"),
    ("[zones]\ndirectory = ['zones']", "smartdns.toml:2: [zones] directory must be a string, not an array"),
    (
        '[zones]\nrecords_json = "records.json"',
        "smartdns.toml:2: [zones] records_json must be an array of strings, not a string",
    ),
    ('[zones]\nrecords_json = [""]', "smartdns.toml:2: [zones] records_json entries must not be empty"),
    ("[zones]\nlines_json = false", "smartdns.toml:2: [zones] lines_json must be a string, not a boolean"),
    ('[zones]\nwatch = "yes"', "smartdns.toml:2: [zones] watch must be true or false, not a string"),
    # [lines]
    ('[lines]\nline1 = ["10.0.0.0/33"]', "smartdns.toml:2: [lines] line1: '10.0.0.0/33' is not a valid network"),
    ('[lines]\nline1 = ["example.com"]', "smartdns.toml:2: [lines] line1: 'example.com' is not a valid network"),
    (
        '[lines]\nline1 = [\n  "10.0.0.0/8",  # ok\n  "10.0.0.1/8",\n]',
        "smartdns.toml:4: [lines] line1: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)",
    ),
    (
        '[lines]\nv6 = ["2001:db8::1/32"]',
        "smartdns.toml:2: [lines] v6: '2001:db8::1/32' has host bits set (did you mean '2001:db8::/32'?)",
    ),
    ('[lines]\nline1 = "10.0.0.0/8"', "smartdns.toml:2: [lines] line1 must be an array of strings, not a string"),
    (
        "[lines]\n'../etc' = ['10.0.0.0/8']",
        "smartdns.toml:2: [lines] '../etc' is not a valid line name "
        "(letters, digits, '_', '.' and '-', starting with a letter or digit)",
    ),
    # [forward]
    (
        '[forward]\nupstreams = ["dns.google"]',
        "smartdns.toml:2: [forward] upstreams: 'dns.google': upstream must be an IP address",
    ),
    (
        '[forward]\nupstreams = ["tls://10.0.0.54"]',
        "smartdns.toml:2: [forward] upstreams: 'tls://10.0.0.54': a tls:// upstream needs the certificate's name "
        "after '#', e.g. tls://192.0.2.1#dns.example",
    ),
    (
        '[forward]\nupstreams = ["https://1.1.1.1"]',
        "smartdns.toml:2: [forward] upstreams: 'https://1.1.1.1': unknown scheme 'https' (use udp://, tcp:// or tls://)",
    ),
    (
        '[forward]\nupstreams = ["10.0.0.1:0"]',
        "smartdns.toml:2: [forward] upstreams: '10.0.0.1:0': port must be 1..65535",
    ),
    ("[forward]\ntimeout = 0.01", "smartdns.toml:2: [forward] timeout must be between 0.05 and 30 seconds, not 0.01"),
    ("[forward]\ntimeout = 31", "smartdns.toml:2: [forward] timeout must be between 0.05 and 30 seconds, not 31"),
    (
        "[forward]\ntotal_timeout = 61",
        "smartdns.toml:2: [forward] total_timeout must be between 0.05 and 60 seconds, not 61",
    ),
    (
        "[forward]\ntimeout = 3\ntotal_timeout = 2.5",
        "smartdns.toml:3: [forward] total_timeout (2.5) must not be less than timeout (3)",
    ),
    (
        '[forward]\npolicy = "fastest"',
        "smartdns.toml:2: [forward] policy must be one of sequential, round_robin, random, not 'fastest'",
    ),
    (
        '[forward]\ntls_ca_file = "/nonexistent/ca.pem"',
        "smartdns.toml:2: [forward] tls_ca_file: '/nonexistent/ca.pem' does not exist",
    ),
    ('[forward]\ntls_ca_file = "/"', "smartdns.toml:2: [forward] tls_ca_file: '/' is not a file"),
    (
        "[forward]\nedns_udp_size = 65535",
        "smartdns.toml:2: [forward] edns_udp_size must be between 512 and 4096 bytes, not 65535",
    ),
    (
        "[forward]\nmax_outstanding = 0",
        "smartdns.toml:2: [forward] max_outstanding must be between 1 and 1000000, not 0",
    ),
    # [[forward.zone]]: the line of the right occurrence.
    ("[[forward.zone]]\nupstreams = ['192.0.2.1']", "smartdns.toml:1: [[forward.zone]] name is required"),
    ("[[forward.zone]]\nname = 'a'", "smartdns.toml:1: [[forward.zone]] upstreams is required"),
    ("[[forward.zone]]\nname = 'a'\nupstreams = []", "smartdns.toml:3: [[forward.zone]] upstreams must not be empty"),
    (
        "[[forward.zone]]\nname = '*.a'\nupstreams = ['192.0.2.1']",
        "smartdns.toml:2: [[forward.zone]] name '*.a' may not contain wildcards",
    ),
    (
        "[[forward.zone]]\nname = 'a..b'\nupstreams = ['192.0.2.1']",
        "smartdns.toml:2: [[forward.zone]] name 'a..b' has an empty label",
    ),
    (
        "[[forward.zone]]\nname = 'a'\nupstreams = ['192.0.2.1']\n\n"
        "[[forward.zone]]\nname = 'b'\nupstreams = ['192.0.2.1']\npolicy = 'any'",
        "smartdns.toml:8: [[forward.zone]] policy must be one of sequential, round_robin, random, not 'any'",
    ),
    (
        "[[forward.zone]]\nname = 'a'\nupstreams = ['192.0.2.1']\n\n[[forward.zone]]\nname = 'A.'\nupstreams = ['192.0.2.1']",
        "smartdns.toml:6: [[forward.zone]] 'a' is listed twice",
    ),
    # [access]
    ('[access]\nrecursion = ["10/8"]', "smartdns.toml:2: [access] recursion: '10/8' is not a valid network"),
    (
        "[access]\nrecursion = '10.0.0.0/8'",
        "smartdns.toml:2: [access] recursion must be an array of strings, not a string",
    ),
    # [cache]
    ("[cache]\nmax_entries = -1", "smartdns.toml:2: [cache] max_entries must be between 0 and 10000000, not -1"),
    ("[cache]\nmax_entries = 1e3", "smartdns.toml:2: [cache] max_entries must be an integer, not a float"),
    ('[cache]\nmax_entries = "100"', "smartdns.toml:2: [cache] max_entries must be an integer, not a string"),
    ("[cache]\nmin_ttl = 86401", "smartdns.toml:2: [cache] min_ttl must be between 0 and 86400 seconds, not 86401"),
    ("[cache]\nmax_ttl = 604801", "smartdns.toml:2: [cache] max_ttl must be between 0 and 604800 seconds, not 604801"),
    (
        "[cache]\nmin_ttl = 100\nmax_ttl = 50",
        "smartdns.toml:3: [cache] max_ttl (50) must not be less than min_ttl (100)",
    ),
    (
        "[cache]\nnegative_max_ttl = 86401",
        "smartdns.toml:2: [cache] negative_max_ttl must be between 0 and 86400 seconds, not 86401",
    ),
    ("[cache]\nservfail_ttl = 301", "smartdns.toml:2: [cache] servfail_ttl must be between 0 and 300 seconds, not 301"),
    ("[cache]\nserve_stale = -5", "smartdns.toml:2: [cache] serve_stale must be between 0 and 604800 seconds, not -5"),
    ("[cache]\nprefetch = 1", "smartdns.toml:2: [cache] prefetch must be true or false, not an integer"),
    ('[cookies]\nsecret = "0001"', "smartdns.toml:2: [cookies] secret must be 16 bytes (32 hex digits), not 2"),
    ('[cookies]\nsecret = "xyz"', "smartdns.toml:2: [cookies] secret must be 32 hex digits"),
    ("[cookies]\nsecret = 7", "smartdns.toml:2: [cookies] secret must be a string, not an integer"),
    ('[cookies]\nrequire = "yes"', "smartdns.toml:2: [cookies] require must be true or false, not a string"),
    ("[cookies]\nrotate = true", "smartdns.toml:2: unknown key 'rotate' in [cookies]"),
    ('[ecs]\ntrusted = ["10/8"]', "smartdns.toml:2: [ecs] trusted: '10/8' is not a valid network"),
    ('[ecs]\ntrusted = "10.0.0.0/8"', "smartdns.toml:2: [ecs] trusted must be an array of strings, not a string"),
    ("[ecs]\nforward = 1", "smartdns.toml:2: [ecs] forward must be true or false, not an integer"),
    ("[ecs]\nscope = 24", "smartdns.toml:2: unknown key 'scope' in [ecs]"),
    ('[hosts]\nfiles = "/etc/hosts"', "smartdns.toml:2: [hosts] files must be an array of strings, not a string"),
    ('[hosts]\nfiles = [""]', "smartdns.toml:2: [hosts] files entries must not be empty"),
    ("[hosts]\nfile = []", "smartdns.toml:2: unknown key 'file' in [hosts]"),
    ("hosts = 1", "smartdns.toml:1: [hosts] must be a table, not an integer"),
    # [[policy]]
    ("[[policy]]\naction = 'drop'", "smartdns.toml:1: [[policy]] names is required"),
    ("[[policy]]\nnames = []\naction = 'drop'", "smartdns.toml:2: [[policy]] names must not be empty"),
    (
        "[[policy]]\nnames = ['a']",
        "smartdns.toml:1: [[policy]] action is required (one of refuse, nxdomain, nodata, drop)",
    ),
    (
        "[[policy]]\nnames = ['a']\naction = 'deny'",
        "smartdns.toml:3: [[policy]] action must be one of refuse, nxdomain, nodata, drop, not 'deny'",
    ),
    (
        "[[policy]]\nnames = ['*']\naction = 'drop'",
        "smartdns.toml:2: [[policy]] names: '*' needs a domain after '*.', as in '*.example.com'",
    ),
    (
        "[[policy]]\nnames = ['a.*.b']\naction = 'drop'",
        "smartdns.toml:2: [[policy]] names: 'a.*.b' may only have '*' as its first label",
    ),
    (
        "[[policy]]\nnames = ['ex ample.com']\naction = 'drop'",
        "smartdns.toml:2: [[policy]] names: 'ex ample.com' may only contain letters, digits, '-', '_' and '/'",
    ),
    (
        "[[policy]]\nnames = ['bücher.example']\naction = 'drop'",
        "smartdns.toml:2: [[policy]] names: 'bücher.example' must be ASCII (write internationalised names in their xn-- form)",
    ),
    (
        "[[policy]]\nnames = ['" + "a" * 64 + ".com']\naction = 'drop'",
        "smartdns.toml:2: [[policy]] names: '" + "a" * 64 + ".com' has a label longer than 63 characters",
    ),
    (
        "[[policy]]\nnames = ['a']\naction = 'drop'\nlines = 'line1'",
        "smartdns.toml:4: [[policy]] lines must be an array of strings, not a string",
    ),
    (
        "[[policy]]\nnames = ['a']\naction = 'drop'\ntypes = ['A', 'FOO']",
        "smartdns.toml:4: [[policy]] types: 'FOO' is not a DNS record type",
    ),
    (
        "[[policy]]\nnames = ['a']\naction = 'drop'\ntypes = [1]",
        "smartdns.toml:4: [[policy]] types entries must be strings, not an integer",
    ),
    # Line numbers survive multi-line strings and arrays, comments and inline tables.
    (
        '[server]\nchaos_version = """\nlisten = 1\n[cache]\n"""\nworkers = 0',
        "smartdns.toml:6: [server] workers must be between 1 and 64, not 0",
    ),
    (
        "# [cache]\n[server] # max_entries = 1\n'workers' = 0",
        "smartdns.toml:3: [server] workers must be between 1 and 64, not 0",
    ),
    (
        '[[policy]]\nnames = ["a"]\naction = "drop"\n\n[[policy]]\nnames = [\n  "b",\n  "c..d",\n]\naction = "drop"',
        "smartdns.toml:8: [[policy]] names: 'c..d' has an empty label",
    ),
    (
        'policy = [\n  {names = ["a"], action = "drop"},\n  {names = ["b"], action = "stop"},\n]',
        "smartdns.toml:3: [[policy]] action must be one of refuse, nxdomain, nodata, drop, not 'stop'",
    ),
]


def attribute(config: Config, path: str) -> Any:
    """Follow an attribute path such as ``forward.zones[0].name``."""
    value: Any = config
    for part in path.split("."):
        match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
        assert match is not None, path
        value = getattr(value, match.group(1))
        if match.group(2) is not None:
            value = value[int(match.group(2))]
    return value


def expand(value: Any, directory: str) -> Any:
    """Fill the {dir} and {up} placeholders in expected values."""
    if isinstance(value, str):
        return value.replace("{dir}", directory).replace("{up}", os.path.dirname(directory))
    if isinstance(value, tuple):
        return tuple(expand(item, directory) for item in value)
    return value


class ParseConfigTests(TestCase):
    """parse_config turns TOML into settings or reports exactly what is wrong, and where."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, CA_NAME), "wb") as f:
            f.write(_self_signed_pem())
        with open(os.path.join(self.directory, "not-a-ca.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
        for name, pem in zip(("server.pem", "server.key"), _server_pair_pem()):
            with open(os.path.join(self.directory, name), "wb") as f:
                f.write(pem)
        # Data files the valid rows name: the config checks that they exist.
        os.makedirs(os.path.join(self.directory, "run"))
        for name, text in ((os.path.join(self.directory, "records.json"), "[]"),
                           (os.path.join(os.path.dirname(self.directory), "x.json"), "[]"),
                           (os.path.join(self.directory, "smart-line.json"), '{"line2": []}')):
            with open(name, "w") as f:
                f.write(text)
        self.config_path = os.path.join(self.directory, CONFIG_NAME)
        self.no_resolv_conf = os.path.join(self.directory, "missing-resolv.conf")

    def parse(self, text: str, path: str | None = None) -> Config:
        return parse_config(text, path or self.config_path, resolv_conf=self.no_resolv_conf)

    def test_valid_rows(self) -> None:
        """Every valid row parses to the expected values."""
        mismatches = []
        for text, expected in VALID:
            try:
                config = self.parse(text)
            except ConfigError as e:
                mismatches.append(f"{text!r}: {e}")
                continue
            for path, value in expected.items():
                want = expand(value, self.directory)
                got = attribute(config, path)
                if got != want:
                    mismatches.append(f"{text!r}: {path} is {got!r}, expected {want!r}")
        if mismatches:
            self.fail("\n".join(mismatches))

    def test_invalid_rows(self) -> None:
        """Every invalid row raises ConfigError whose whole text is exactly one expected problem."""
        mismatches = []
        for text, expected in INVALID:
            try:
                self.parse(text, CONFIG_NAME)
            except ConfigError as e:
                if str(e) != expected:
                    mismatches.append(f"{text!r}:\n  got      {e}\n  expected {expected}")
            else:
                mismatches.append(f"{text!r}: no error, expected {expected}")
        if mismatches:
            self.fail("\n".join(mismatches))

    def test_ca_file_without_certificate(self) -> None:
        """A tls_ca_file with no PEM certificate in it is a config error, caught by `smartdns check`."""
        path = os.path.join(self.directory, CONFIG_NAME)
        with self.assertRaises(ConfigError) as caught:
            self.parse('[forward]\ntls_ca_file = "not-a-ca.pem"', path)
        self.assertEqual(str(caught.exception), f"{path}:2: [forward] tls_ca_file: "
                         f"'{self.directory}/not-a-ca.pem' holds no PEM certificate")

    def test_tls_cert_file_problems(self) -> None:
        """The DoT/DoH certificate pair is loaded as the listeners load it: each problem is one
        line at the key to blame (a key of another certificate, files without PEM, missing files),
        and a listener address may not be another listener's."""
        other_key = os.path.join(self.directory, "other.key")
        with open(other_key, "wb") as f:
            f.write(_server_pair_pem()[1])
        from cryptography.hazmat.primitives import serialization
        with open(os.path.join(self.directory, "server.key"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        with open(os.path.join(self.directory, "encrypted.key"), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"secret")))
        d = self.directory
        rows = [
            ('tls_cert_file = "server.pem"\ntls_key_file = "other.key"',
             f"3: [server] tls_key_file: '{d}/other.key' is not the key of the certificate in '{d}/server.pem'"),
            ('tls_cert_file = "not-a-ca.pem"\ntls_key_file = "server.key"',
             f"2: [server] tls_cert_file: '{d}/not-a-ca.pem' holds no PEM certificate"),
            ('tls_cert_file = "server.pem"\ntls_key_file = "server.pem"',
             f"3: [server] tls_key_file: '{d}/server.pem' holds no PEM private key"),
            ('tls_cert_file = "server.pem"\ntls_key_file = "encrypted.key"',
             f"3: [server] tls_key_file: '{d}/encrypted.key' is encrypted (give the key without a passphrase)"),
            ('tls_cert_file = "missing.pem"\ntls_key_file = "server.key"',
             f"2: [server] tls_cert_file: '{d}/missing.pem' does not exist"),
            ('tls_cert_file = "server.pem"\ntls_key_file = "run"',
             f"3: [server] tls_key_file: '{d}/run' is not a file"),
            ('listen = ["127.0.0.1:853"]\ntls_listen = ["127.0.0.1:853"]\n'
             'tls_cert_file = "server.pem"\ntls_key_file = "server.key"',
             "3: [server] tls_listen: '127.0.0.1:853' is already a listen address"),
            ('tls_listen = ["127.0.0.1:853"]\nhttps_listen = ["127.0.0.1:853"]\n'
             'tls_cert_file = "server.pem"\ntls_key_file = "server.key"',
             "3: [server] https_listen: '127.0.0.1:853' is already a listen address"),
        ]
        for text, expected in rows:
            with self.assertRaises(ConfigError, msg=text) as caught:
                self.parse("[server]\n" + text)
            self.assertEqual(str(caught.exception), f"{self.config_path}:{expected}")

    def test_every_problem_reported_at_once(self) -> None:
        """Problems across tables are all collected, in line order, in one ConfigError."""
        text = "\n".join(
            [
                "[server]",
                "workers = 0",  # 2
                "bogus = 1",  # 3
                "[lines]",
                'line1 = ["10.0.0.0/33", "10.0.0.1/8"]',  # 5
                "[forward]",
                'upstreams = ["dns.google"]',  # 7
                "[cache]",
                "max_ttl = -1",  # 9
                "[[policy]]",  # 10
                "action = 'drop'",
                "types = ['NOPE']",  # 12
                "lines = ['nosuchline']",  # 13
                "[zones]",
                "records_json = ['missing.json']",  # 15
            ]
        )
        error = self.assertRaises(ConfigError, self.parse, text, CONFIG_NAME)
        self.assertEqual(
            [str(problem) for problem in error.problems],
            [
                "smartdns.toml:2: [server] workers must be between 1 and 64, not 0",
                "smartdns.toml:3: unknown key 'bogus' in [server]",
                "smartdns.toml:5: [lines] line1: '10.0.0.0/33' is not a valid network",
                "smartdns.toml:5: [lines] line1: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)",
                "smartdns.toml:7: [forward] upstreams: 'dns.google': upstream must be an IP address",
                "smartdns.toml:9: [cache] max_ttl must be between 0 and 604800 seconds, not -1",
                "smartdns.toml:10: [[policy]] names is required",
                "smartdns.toml:12: [[policy]] types: 'NOPE' is not a DNS record type",
                "smartdns.toml:13: [[policy]] lines: 'nosuchline' is not a configured line (configured: line1)",
                f"smartdns.toml:15: [zones] records_json: '{os.path.abspath('missing.json')}' does not exist",
            ],
        )

    def test_policy_lines_may_come_from_lines_json(self) -> None:
        """A line named only in lines_json may be used by a [[policy]]."""
        config = self.parse('[zones]\nlines_json = "smart-line.json"\n[[policy]]\nnames = ["x"]\naction = "drop"\n'
                            'lines = ["line2"]')
        self.assertEqual(config.policies[0].lines, ("line2",))

    def test_open_resolver_is_a_warning(self) -> None:
        """Recursion for 0.0.0.0/0 or ::/0 loads, with a warning at that entry (RFC 5358)."""
        config = self.parse('[access]\nrecursion = [\n  "127.0.0.0/8",\n  "0.0.0.0/0",\n  "::/0",\n]', CONFIG_NAME)
        self.assertEqual(len(config.access.recursion), 3)
        self.assertEqual([(w.path, w.line) for w in config.warnings], [(CONFIG_NAME, 4), (CONFIG_NAME, 5)])
        self.assertEqual(
            config.warnings[0].message,
            "[access] recursion: '0.0.0.0/0' makes this an open resolver: anyone who can reach it can have "
            "names forwarded, and use it in reflection attacks (RFC 5358); list your clients' networks instead")
        self.assertEqual(self.parse('[access]\nrecursion = ["10.0.0.0/8"]').warnings, ())

    def test_zones_directory_optional_only_when_unset(self) -> None:
        """An unset [zones] directory may be missing (no local zones); a configured one may not."""
        self.assertTrue(self.parse("").zones.directory_optional)
        self.assertFalse(self.parse('[zones]\ndirectory = "zones"').zones.directory_optional)

    def test_problem_fields(self) -> None:
        """Problems carry the path as given, the line and the bare message."""
        error = self.assertRaises(ConfigError, self.parse, "[cache]\nmax_entries = -1", "conf/x.toml")
        self.assertEqual(
            error.problems, (Problem("conf/x.toml", 2, "[cache] max_entries must be between 0 and 10000000, not -1"),)
        )

    def test_path_is_absolute(self) -> None:
        """Config.path is the absolute path of the file, relative paths follow it."""
        config = self.parse('[zones]\ndirectory = "z"', os.path.join(os.path.relpath(self.directory), CONFIG_NAME))
        self.assertEqual(config.path, self.config_path)
        self.assertEqual(config.zones.directory, os.path.join(self.directory, "z"))

    def test_bare_address_is_a_host_network(self) -> None:
        """A CIDR without a prefix length is a single host."""
        config = self.parse('[access]\nrecursion = ["192.0.2.1", "2001:db8::1"]')
        self.assertEqual(config.access.recursion, (net("192.0.2.1/32"), net("2001:db8::1/128")))

    def test_upstreams_default_to_resolv_conf(self) -> None:
        """Without [forward] upstreams the resolv.conf nameservers are used; an empty list means none."""
        resolv_conf = os.path.join(self.directory, "resolv.conf")
        with open(resolv_conf, "w") as f:
            f.write("nameserver 192.0.2.53\n")
        config = parse_config("", self.config_path, resolv_conf=resolv_conf)
        self.assertEqual(config.forward.upstreams, (Upstream("udp", "192.0.2.53", 53, None),))
        config = parse_config("[forward]\nupstreams = []", self.config_path, resolv_conf=resolv_conf)
        self.assertEqual(config.forward.upstreams, ())

    def test_frozen(self) -> None:
        """A parsed configuration cannot be changed in place."""
        config = self.parse("")
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config.cache, "max_ttl", 1)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config, "cache", CacheConfig())


class LoadConfigTests(TestCase):
    """load_config reads the file, or gives the built-in default."""

    def test_default(self) -> None:
        """No file: zones under the working directory, upstreams from resolv.conf, path None."""
        resolv_conf = os.path.abspath(self.mktemp())
        with open(resolv_conf, "w") as f:
            f.write("nameserver 192.0.2.1\n")
        config = load_config(None, resolv_conf=resolv_conf)
        self.assertIsNone(config.path)
        self.assertEqual(config.zones.directory, os.path.join(os.getcwd(), "zones"))
        self.assertEqual(config.forward.upstreams, (Upstream("udp", "192.0.2.1", 53, None),))
        self.assertEqual(config.server, ServerConfig())

    def test_no_path_reads_smartdns_toml_in_the_working_directory(self) -> None:
        """Without a path, ./smartdns.toml is read when it exists (the shipped quick start)."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, CONFIG_NAME), "w") as f:
            f.write("[cache]\nmax_entries = 7\n")
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        config = load_config(None, resolv_conf=self.mktemp())
        self.assertEqual(config.path, os.path.join(directory, CONFIG_NAME))
        self.assertEqual(config.cache.max_entries, 7)

    def test_relative_paths_follow_the_file(self) -> None:
        """Relative paths in a loaded file are resolved against the file's directory, not the cwd."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, CONFIG_NAME)
        with open(path, "w") as f:
            f.write('[zones]\ndirectory = "my-zones"\nrecords_json = ["../records.json"]\n')
        with open(os.path.join(os.path.dirname(directory), "records.json"), "w") as f:
            f.write("[]")
        config = load_config(os.path.relpath(path), resolv_conf=self.mktemp())
        self.assertEqual(config.path, path)
        self.assertEqual(config.zones.directory, os.path.join(directory, "my-zones"))
        self.assertEqual(config.zones.records_json, (os.path.join(os.path.dirname(directory), "records.json"),))

    def test_missing_file(self) -> None:
        """An unreadable file is a ConfigError naming the file, with no line (none applies)."""
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            error.problems, (Problem(path, 0, "cannot read the configuration: No such file or directory"),)
        )
        self.assertEqual(str(error), f"{path}: cannot read the configuration: No such file or directory")

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is a ConfigError at the offending line."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"[cache]\nmax_entries = 1 # \xff\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.problems, (Problem(path, 2, "the configuration is not valid UTF-8"),))

    def test_errors_name_the_file(self) -> None:
        """Problems from a loaded file carry its path as given."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[cache]\nmax_entries = -1\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(error), f"{path}:2: [cache] max_entries must be between 0 and 10000000, not -1")


#: (spelling, expected upstream, canonical spelling).
UPSTREAMS: list[tuple[str, Upstream, str]] = [
    ("10.0.0.53", Upstream("udp", "10.0.0.53", 53, None), "10.0.0.53:53"),
    ("10.0.0.53:5353", Upstream("udp", "10.0.0.53", 5353, None), "10.0.0.53:5353"),
    ("[2001:db8::1]:53", Upstream("udp", "2001:db8::1", 53, None), "[2001:db8::1]:53"),
    ("2001:DB8:0::1", Upstream("udp", "2001:db8::1", 53, None), "[2001:db8::1]:53"),
    ("[2001:db8::1]", Upstream("udp", "2001:db8::1", 53, None), "[2001:db8::1]:53"),
    ("udp://10.0.0.53", Upstream("udp", "10.0.0.53", 53, None), "10.0.0.53:53"),
    ("tcp://10.0.0.53:54", Upstream("tcp", "10.0.0.53", 54, None), "tcp://10.0.0.53:54"),
    ("TCP://[::1]", Upstream("tcp", "::1", 53, None), "tcp://[::1]:53"),
    (
        "tls://10.0.0.54:853#dns.corp.example",
        Upstream("tls", "10.0.0.54", 853, "dns.corp.example"),
        "tls://10.0.0.54:853#dns.corp.example",
    ),
    (
        "tls://10.0.0.54#DNS.Example.",
        Upstream("tls", "10.0.0.54", 853, "dns.example"),
        "tls://10.0.0.54:853#dns.example",
    ),
    (
        "tls://[2001:db8::2]:8853#d.example",
        Upstream("tls", "2001:db8::2", 8853, "d.example"),
        "tls://[2001:db8::2]:8853#d.example",
    ),
]

#: (spelling, ValueError message).
BAD_UPSTREAMS: list[tuple[str, str]] = [
    ("dns.google", "upstream must be an IP address"),
    ("dns.google:53", "upstream must be an IP address"),
    ("", "upstream is empty"),
    ("ftp://10.0.0.1", "unknown scheme 'ftp' (use udp://, tcp:// or tls://)"),
    ("tls://10.0.0.1", "a tls:// upstream needs the certificate's name after '#', e.g. tls://192.0.2.1#dns.example"),
    ("tls://10.0.0.1#", "a tls:// upstream needs the certificate's name after '#', e.g. tls://192.0.2.1#dns.example"),
    ("10.0.0.1#name", "'#server-name' is only for tls:// upstreams"),
    ("[10.0.0.1]:53", "only IPv6 addresses go in brackets"),
    ("[::1", "expected [IPv6]:port"),
    ("10.0.0.1:0", "port must be 1..65535"),
    ("10.0.0.1:65536", "port must be 1..65535"),
    ("10.0.0.1:x", "port must be 1..65535"),
    ("tls://10.0.0.1#bad name", "server name 'bad name' may only contain letters, digits, '-', '_' and '/'"),
]


class ParseUpstreamTests(TestCase):
    """parse_upstream reads every documented spelling and nothing else."""

    def test_valid(self) -> None:
        """Each spelling gives the expected upstream, and str() gives a spelling that reads back equal."""
        for text, expected, canonical in UPSTREAMS:
            upstream = parse_upstream(text)
            self.assertEqual(upstream, expected, text)
            self.assertEqual(str(upstream), canonical, text)
            self.assertEqual(parse_upstream(str(upstream)), upstream, text)

    def test_invalid(self) -> None:
        """Each bad spelling raises ValueError with a clear message."""
        for text, message in BAD_UPSTREAMS:
            error = self.assertRaises(ValueError, parse_upstream, text)
            self.assertEqual(str(error), message, text)


RESOLV_CONF = """\
# generated by NetworkManager
search corp.example
nameserver 192.0.2.1
nameserver 2001:db8::53   # IPv6
;nameserver 192.0.2.99
nameserver fe80::1%eth0
nameserver dns.example
nameserver
options edns0 trust-ad
nameserver 192.0.2.1
  nameserver 192.0.2.2
"""


class ReadResolvConfTests(TestCase):
    """read_resolv_conf turns nameserver lines into UDP upstreams."""

    def test_nameservers(self) -> None:
        """IP nameservers are kept in order, once each; comments, options and hostnames are skipped."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(RESOLV_CONF)
        self.assertEqual(
            read_resolv_conf(path),
            (
                Upstream("udp", "192.0.2.1", 53, None),
                Upstream("udp", "2001:db8::53", 53, None),
                Upstream("udp", "fe80::1%eth0", 53, None),
                Upstream("udp", "192.0.2.2", 53, None),
            ),
        )

    def test_missing_file(self) -> None:
        """A missing resolv.conf means no default upstreams."""
        self.assertEqual(read_resolv_conf(self.mktemp()), ())


# ---------------------------------------------------------------------------------------------
# [[tsig]], [[transfer]], [[secondary]] and [zones] secondary_directory

#: A key file exactly as ``tsig-keygen -a hmac-sha512 k2`` writes it (plus comments BIND allows).
KEY_FILE_TEXT = """\
# made by tsig-keygen
key "k2" {
\talgorithm hmac-sha512;
\tsecret "c2VjcmV0LXR3bw==";
};
key "other" { algorithm hmac-sha1; secret "b3RoZXI="; };  // a second key
"""
#: A key file without an algorithm (BIND's default is hmac-md5 only in old versions; ours: the table's).
KEY_FILE_NO_ALGORITHM = 'key k3 {\n  secret "dGhyZWU=";\n};\n'
KEY_FILE_BROKEN = 'key "k4" {\n  algorithm hmac-sha256;\n  secret "c2VjcmV0"\n};\n'
KEY_FILE_BAD_SECRET = 'key "k5" {\n  algorithm hmac-sha256;\n  secret "not base64!";\n};\n'

_KEYS = '[[tsig]]\nname = "k1"\nsecret = "c2VjcmV0"\n'
_LINES = '[lines]\nline1 = ["10.1.0.0/16"]\n'
_SECONDARY_DIR = '[zones]\nsecondary_directory = "secondary"\n'

XFR_VALID: list[tuple[str, dict[str, Any]]] = [
    ("", {"tsig": (), "transfers": (), "secondaries": (), "zones.secondary_directory": None}),
    (_KEYS, {"tsig": (TsigKey("k1", "hmac-sha256", b"secret"),)}),
    ('[[tsig]]\nname = "K1.Example."\nalgorithm = "hmac-sha1"\nsecret = "c2Vj cmV0"',
     {"tsig": (TsigKey("k1.example", "hmac-sha1", b"secret"),)}),
    ('[[tsig]]\nname = "k2"\nkey_file = "keys/k2.key"', {"tsig": (TsigKey("k2", "hmac-sha512", b"secret-two"),)}),
    ('[[tsig]]\nname = "other"\nkey_file = "keys/k2.key"', {"tsig": (TsigKey("other", "hmac-sha1", b"other"),)}),
    ('[[tsig]]\nname = "k2"\nalgorithm = "hmac-sha512"\nkey_file = "keys/k2.key"', {"tsig[0].algorithm": "hmac-sha512"}),
    ('[[tsig]]\nname = "k3"\nalgorithm = "hmac-sha384"\nkey_file = "keys/k3.key"',
     {"tsig": (TsigKey("k3", "hmac-sha384", b"three"),)}),
    (_KEYS + '[[transfer]]\nkey = "k1"', {"transfers": (TransferRule("k1", None),)}),
    (_KEYS + _LINES + '[[transfer]]\nkey = "K1."\nline = "line1"', {"transfers": (TransferRule("k1", "line1"),)}),
    (_KEYS + '[[transfer]]\nkey = "k1"', {"transfers[0].journal_size": 32, "transfers[0].also_notify": ()}),
    (_KEYS + '[[transfer]]\nkey = "k1"\njournal_size = 0', {"transfers[0].journal_size": 0}),
    (_KEYS + '[[transfer]]\nkey = "k1"\njournal_size = 10000', {"transfers[0].journal_size": 10000}),
    (_KEYS + '[[transfer]]\nkey = "k1"\nalso_notify = ["192.0.2.7", "127.0.0.1:5301", "[2001:db8::1]:54", "192.0.2.7:53"]',
     {"transfers[0].also_notify": (("192.0.2.7", 53), ("127.0.0.1", 5301), ("2001:db8::1", 54))}),
    ('[zones]\nserial_state_file = "secondary/serials.json"', {"zones.serial_state_file": "{dir}/secondary/serials.json"}),
    ("", {"zones.serial_state_file": None}),
    (_SECONDARY_DIR, {"zones.secondary_directory": "{dir}/secondary"}),
    (_KEYS + _LINES + _SECONDARY_DIR
     + '[[secondary]]\nzone = "Example.COM."\nprimaries = ["192.0.2.1", "192.0.2.2:5353", "[2001:db8::1]:54", "2001:db8::2"]\n'
     + '[[secondary]]\nzone = "example.com"\nprimaries = ["127.0.0.1:5301"]\nkey = "k1"\nline = "line1"',
     {"secondaries": (
         SecondaryZone("example.com", (("192.0.2.1", 53), ("192.0.2.2", 5353), ("2001:db8::1", 54), ("2001:db8::2", 53))),
         SecondaryZone("example.com", (("127.0.0.1", 5301),), "k1", "line1"))}),
]

XFR_INVALID: list[tuple[str, str]] = [
    # [[tsig]]
    ('[[tsig]]\nsecret = "c2VjcmV0"', "smartdns.toml:1: [[tsig]] name is required"),
    ('[[tsig]]\nname = "k1"', "smartdns.toml:1: [[tsig]] needs secret (base64) or key_file (as tsig-keygen writes it)"),
    ('[[tsig]]\nname = "k1"\nsecret = ""', "smartdns.toml:3: [[tsig]] secret is empty"),
    ('[[tsig]]\nname = "k1"\nsecret = "not base64!"', "smartdns.toml:3: [[tsig]] secret is not valid base64"),
    ('[[tsig]]\nname = "k1"\nsecret = 1', "smartdns.toml:3: [[tsig]] secret must be a string, not an integer"),
    ('[[tsig]]\nname = "k 1"\nsecret = "c2VjcmV0"',
     "smartdns.toml:2: [[tsig]] name 'k 1' may only contain letters, digits, '-', '_' and '/'"),
    ('[[tsig]]\nname = "."\nsecret = "c2VjcmV0"', "smartdns.toml:2: [[tsig]] name must not be the root"),
    ('[[tsig]]\nname = "k1"\nalgorithm = "hmac-sha3"\nsecret = "c2VjcmV0"',
     "smartdns.toml:3: [[tsig]] algorithm must be one of hmac-md5, hmac-sha1, hmac-sha224, hmac-sha256, "
     "hmac-sha384, hmac-sha512, not 'hmac-sha3'"),
    ('[[tsig]]\nname = "k1"\nsecret = "c2VjcmV0"\nkey_file = "keys/k2.key"',
     "smartdns.toml:4: [[tsig]] takes secret or key_file, not both"),
    ('[[tsig]]\nname = "k1"\nsecret = "c2VjcmV0"\nsecrets = "x"', "smartdns.toml:4: unknown key 'secrets' in [[tsig]]"),
    (_KEYS + '\n[[tsig]]\nname = "K1."\nsecret = "c2VjcmV0"', "smartdns.toml:6: [[tsig]] 'k1' is listed twice"),
    ('[[tsig]]\nname = "k1"\nkey_file = "keys/missing.key"',
     "smartdns.toml:3: [[tsig]] key_file: '{dir}/keys/missing.key' does not exist"),
    ('[[tsig]]\nname = "k1"\nkey_file = "keys/k2.key"',
     "smartdns.toml:3: [[tsig]] key_file: '{dir}/keys/k2.key' holds no key 'k1' (it holds 'k2', 'other')"),
    ('[[tsig]]\nname = "k4"\nkey_file = "keys/k4.key"',
     "smartdns.toml:3: [[tsig]] key_file: {dir}/keys/k4.key:4: expected ';', found '}'"),
    ('[[tsig]]\nname = "k5"\nkey_file = "keys/k5.key"',
     "smartdns.toml:3: [[tsig]] key_file: {dir}/keys/k5.key:1: the secret is not valid base64"),
    ('[[tsig]]\nname = "k2"\nalgorithm = "hmac-sha256"\nkey_file = "keys/k2.key"',
     "smartdns.toml:3: [[tsig]] algorithm 'hmac-sha256' differs from the key file's 'hmac-sha512'"),
    ('tsig = 1', "smartdns.toml:1: [[tsig]] must be an array of tables, not an integer"),
    # [[transfer]]
    (_LINES + '[[transfer]]\nline = "line1"', "smartdns.toml:3: [[transfer]] key is required (the name of a [[tsig]] key)"),
    (_KEYS + '[[transfer]]\nkey = "k9"', "smartdns.toml:5: [[transfer]] key 'k9' is not a [[tsig]] key (configured: 'k1')"),
    (_KEYS + '[[transfer]]\nkey = "k1"\nline = "line9"',
     "smartdns.toml:6: [[transfer]] line 'line9' is not a configured line (configured: none)"),
    (_KEYS + '[[transfer]]\nkey = "k1"\n[[transfer]]\nkey = "k1"',
     "smartdns.toml:7: [[transfer]] key 'k1' is listed twice (a key gets one line's zones)"),
    (_KEYS + '[[transfer]]\nkey = "k1"\nzones = []', "smartdns.toml:6: unknown key 'zones' in [[transfer]]"),
    (_KEYS + '[[transfer]]\nkey = "k1"\njournal_size = -1',
     "smartdns.toml:6: [[transfer]] journal_size must be between 0 and 10000, not -1"),
    (_KEYS + '[[transfer]]\nkey = "k1"\njournal_size = 10001',
     "smartdns.toml:6: [[transfer]] journal_size must be between 0 and 10000, not 10001"),
    (_KEYS + '[[transfer]]\nkey = "k1"\nalso_notify = ["ns1.example.net"]',
     "smartdns.toml:6: [[transfer]] also_notify: 'ns1.example.net': must be an IP address"),
    (_KEYS + '[[transfer]]\nkey = "k1"\nalso_notify = ["192.0.2.1:0"]',
     "smartdns.toml:6: [[transfer]] also_notify: '192.0.2.1:0': port must be 1..65535"),
    (_KEYS + '[[transfer]]\nkey = "k1"\nalso_notify = "192.0.2.1"',
     "smartdns.toml:6: [[transfer]] also_notify must be an array of strings, not a string"),
    (_KEYS + '[[transfer]]\nkey = "k1"\nalso_notify = [' + ", ".join(f'"192.0.2.{i}"' for i in range(65)) + ']',
     "smartdns.toml:6: [[transfer]] also_notify: at most 64 entries"),
    ('[zones]\nserial_state_file = "nowhere/serials.json"',
     "smartdns.toml:2: [zones] serial_state_file: '{dir}/nowhere' is not a directory"),
    ('[zones]\nserial_state_file = "secondary"', "smartdns.toml:2: [zones] serial_state_file: '{dir}/secondary' is a directory"),
    # [[secondary]] and [zones] secondary_directory
    ('[zones]\nsecondary_directory = "nowhere"', "smartdns.toml:2: [zones] secondary_directory: '{dir}/nowhere' is not a directory"),
    ('[zones]\ndirectory = "secondary"\nsecondary_directory = "secondary/"',
     "smartdns.toml:3: [zones] secondary_directory must not be the zone directory"),
    ('[[secondary]]\nzone = "example.com"\nprimaries = ["192.0.2.1"]',
     "smartdns.toml:1: [[secondary]] needs [zones] secondary_directory, where transferred zones are saved"),
    (_SECONDARY_DIR + '[[secondary]]\nprimaries = ["192.0.2.1"]', "smartdns.toml:3: [[secondary]] zone is required"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "example.com"',
     "smartdns.toml:3: [[secondary]] primaries is required (IP or IP:port of each primary)"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "example.com"\nprimaries = []',
     "smartdns.toml:5: [[secondary]] primaries must not be empty"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "example.com"\nprimaries = [\n  "192.0.2.1",\n  "ns1.example.net",\n]',
     "smartdns.toml:7: [[secondary]] primaries: 'ns1.example.net': must be an IP address"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "example.com"\nprimaries = ["192.0.2.1:0"]',
     "smartdns.toml:5: [[secondary]] primaries: '192.0.2.1:0': port must be 1..65535"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "*.example.com"\nprimaries = ["192.0.2.1"]',
     "smartdns.toml:4: [[secondary]] zone '*.example.com' may not contain wildcards"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "example.com"\nprimaries = ["192.0.2.1"]\nkey = "k1"',
     "smartdns.toml:6: [[secondary]] key 'k1' is not a [[tsig]] key (configured: none)"),
    (_SECONDARY_DIR + _LINES + '[[secondary]]\nzone = "example.com"\nprimaries = ["192.0.2.1"]\nline = "line2"',
     "smartdns.toml:8: [[secondary]] line 'line2' is not a configured line (configured: line1)"),
    (_SECONDARY_DIR + '[[secondary]]\nzone = "example.com"\nprimaries = ["192.0.2.1"]\n'
     '[[secondary]]\nzone = "EXAMPLE.com."\nprimaries = ["192.0.2.2"]',
     "smartdns.toml:7: [[secondary]] zone 'example.com' is listed twice"),
]


class TransferConfigTests(TestCase):
    """[[tsig]], [[transfer]], [[secondary]]: valid rows parse to values, invalid rows to one exact problem."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "keys"))
        os.makedirs(os.path.join(self.directory, "secondary"))
        for name, text in (("k2.key", KEY_FILE_TEXT), ("k3.key", KEY_FILE_NO_ALGORITHM),
                           ("k4.key", KEY_FILE_BROKEN), ("k5.key", KEY_FILE_BAD_SECRET)):
            with open(os.path.join(self.directory, "keys", name), "w") as f:
                f.write(text)
        self.config_path = os.path.join(self.directory, CONFIG_NAME)

    def parse(self, text: str) -> Config:
        return parse_config(text, self.config_path, resolv_conf=os.path.join(self.directory, "none"))

    def test_valid_rows(self) -> None:
        """Every valid row parses to the expected values."""
        mismatches = []
        for text, expected in XFR_VALID:
            try:
                config = self.parse(text)
            except ConfigError as e:
                mismatches.append(f"{text!r}: {e}")
                continue
            for path, value in expected.items():
                want, got = expand(value, self.directory), attribute(config, path)
                if got != want:
                    mismatches.append(f"{text!r}: {path} is {got!r}, expected {want!r}")
        if mismatches:
            self.fail("\n".join(mismatches))

    def test_invalid_rows(self) -> None:
        """Every invalid row raises ConfigError whose whole text is exactly one expected problem."""
        mismatches = []
        for text, expected in XFR_INVALID:
            want = "smartdns.toml" + expected[len("smartdns.toml"):].replace("{dir}", self.directory)
            try:
                self.parse(text)
            except ConfigError as e:
                if str(e).replace(self.config_path, CONFIG_NAME) != want:
                    mismatches.append(f"{text!r}:\n  got      {e}\n  expected {want}")
            else:
                mismatches.append(f"{text!r}: no error, expected {want}")
        if mismatches:
            self.fail("\n".join(mismatches))

    def test_tsig_keygen_output_reads(self) -> None:
        """A file written by BIND's tsig-keygen gives the same key it names."""
        import shutil
        import subprocess

        program = shutil.which("tsig-keygen") or ("/usr/sbin/tsig-keygen" if os.path.exists("/usr/sbin/tsig-keygen")
                                                   else None)
        if program is None:
            raise SkipTest("tsig-keygen (bind9) is not installed")
        path = os.path.join(self.directory, "keys", "made.key")
        with open(path, "w") as f:
            f.write(subprocess.run([program, "-a", "hmac-sha384", "made.example"], check=True,
                                   capture_output=True, text=True).stdout)
        config = self.parse('[[tsig]]\nname = "made.example"\nkey_file = "keys/made.key"')
        self.assertEqual((config.tsig[0].name, config.tsig[0].algorithm, len(config.tsig[0].secret)),
                         ("made.example", "hmac-sha384", 48))
