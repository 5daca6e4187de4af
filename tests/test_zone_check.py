"""``smartdns check`` on zone files is at least as strict as BIND's ``named-checkzone``.

A corpus of broken zone files goes through both.  Each entry lists, per line, the text
named-checkzone prints about it and the problem smartdns reports there: every file
named-checkzone rejects, smartdns rejects too, at the same lines, for the same reasons.
Out-of-zone data, which named-checkzone only warns about (and skips), smartdns rejects.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from contextlib import redirect_stderr

from twisted.trial import unittest

from smartdns import cli
from smartdns.zones import check_zone_file, overlay_default_ttl, read_zone_file

ORIGIN = "example.com."
NAMED_CHECKZONE_TIMEOUT_SECONDS = 30

HEAD = "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n"   # lines 1-4

#: (file name, zone text, [(line, what named-checkzone says, what smartdns says)]).
#: named's text is a regular expression; smartdns's the start of the message.
CORPUS: list[tuple[str, str, list[tuple[int, str, str]]]] = [
    ("bad-ipv4.zone", HEAD + "www A 1.2.3.400\n",
     [(5, r"near '1\.2\.3\.400': bad dotted quad", "bad IPv4 address '1.2.3.400'")]),
    ("short-ipv4.zone", HEAD + "www A 1.2.3\n",
     [(5, r"near '1\.2\.3': bad dotted quad", "bad IPv4 address '1.2.3'")]),
    ("bad-ipv6.zone", HEAD + "www AAAA 2001:db8::zz\n",
     [(5, r"near '2001:db8::zz': bad IPv6 address", "bad IPv6 address '2001:db8::zz'")]),
    ("cname-then-a.zone", HEAD + "www CNAME a\nwww A 192.0.2.3\n",
     [(6, r"CNAME and other data", "CNAME and other data at the same name")]),
    ("a-then-cname.zone", HEAD + "www A 192.0.2.3\nwww CNAME a\n",
     [(6, r"CNAME and other data", "CNAME and other data at the same name")]),
    ("two-cnames.zone", HEAD + "www CNAME a\nwww CNAME b\n",
     [(6, r"multiple RRs of singleton type", "multiple CNAME records at www.example.com.")]),
    ("no-ttl.zone", "www A 192.0.2.9\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\n",
     [(1, r"no TTL specified; zone rejected", "no TTL: the record has none and no $TTL comes before it")]),
    ("unknown-type.zone", HEAD + "www BOGUS 1\n",
     [(5, r"unknown RR type 'BOGUS'", "unknown rdatatype 'BOGUS'")]),
    ("every-error.zone", HEAD + "www A 1.2.3.400\nmail A 1.2.3\nok A 192.0.2.5\nx CNAME a\nx CNAME b\n"
                               "y AAAA ::1::2\n",
     [(5, r"bad dotted quad", "bad IPv4 address '1.2.3.400'"),
      (6, r"bad dotted quad", "bad IPv4 address '1.2.3'"),
      (9, r"multiple RRs of singleton type", "multiple CNAME records at x.example.com."),
      (10, r"bad IPv6 address", "bad IPv6 address '::1::2'")]),
    # named-checkzone warns and skips; smartdns check rejects.
    ("out-of-zone.zone", HEAD + "www.example.net. A 192.0.2.2\n",
     [(5, r"ignoring out-of-zone data \(www\.example\.net\)",
       "out-of-zone data: www.example.net. is not in zone example.com.")]),
]

#: What named-checkzone prints about files it still loads (smartdns loads them the same way).
_NAMED_WARNINGS = re.compile(r"using SOA MINTTL instead")

_NAMED_LINE = re.compile(r"(?:[\w ]+: )?(?P<file>[^\s:]+):(?P<line>\d+): (?P<message>.*)")


def named_checkzone(directory: str, name: str) -> tuple[int, dict[int, list[str]]]:
    """named-checkzone's exit status on ``name``, and its messages by line."""
    result = subprocess.run(["named-checkzone", ORIGIN, name], cwd=directory, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=NAMED_CHECKZONE_TIMEOUT_SECONDS, check=False)
    by_line: dict[int, list[str]] = {}
    for text in (result.stdout + result.stderr).splitlines():
        match = _NAMED_LINE.fullmatch(text.strip())
        if match is not None and match.group("file") == name:
            by_line.setdefault(int(match.group("line")), []).append(match.group("message"))
    return result.returncode, by_line


class CorpusTests(unittest.TestCase):
    """The broken-zone corpus through named-checkzone and smartdns."""

    def setUp(self) -> None:
        if shutil.which("named-checkzone") is None:
            raise unittest.SkipTest("named-checkzone is not installed (Debian: bind9-utils)")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def test_ok_zone_passes_both(self) -> None:
        """The corpus's common head is a valid zone for both checkers."""
        path = self.write("ok.zone", HEAD)
        self.assertEqual(named_checkzone(self.directory, "ok.zone")[0], 0)
        self.assertEqual(check_zone_file(path, ORIGIN), [])

    def test_corpus(self) -> None:
        """Every file named-checkzone rejects, smartdns rejects, at the same lines, same reasons."""
        mismatches: list[str] = []
        for name, text, expected in CORPUS:
            path = self.write(name, text)
            status, named = named_checkzone(self.directory, name)
            ours = {(p.line, p.message) for p in check_zone_file(path, ORIGIN)}
            if any(p.path != path for p in check_zone_file(path, ORIGIN)):
                mismatches.append(f"{name}: problems name another file")
            for line, named_says, smartdns_says in expected:
                if not any(re.search(named_says, message) for message in named.get(line, [])):
                    mismatches.append(f"{name}:{line}: named-checkzone did not say {named_says!r}: {named}")
                if not any(at == line and message.startswith(smartdns_says) for at, message in ours):
                    mismatches.append(f"{name}:{line}: smartdns did not say {smartdns_says!r}: {sorted(ours)}")
            named_lines = {line for line, messages in named.items()
                           if line and not all(_NAMED_WARNINGS.search(m) for m in messages)}
            if status != 0 and not ours:
                mismatches.append(f"{name}: named-checkzone rejects it, smartdns accepts it")
            missing = named_lines - {line for line, _ in ours}
            if status != 0 and missing:
                mismatches.append(f"{name}: named-checkzone reports lines {sorted(missing)} that smartdns does not")
        if mismatches:
            self.fail("\n".join(mismatches))

    def test_loading_rejects_what_named_rejects(self) -> None:
        """The server's own loading refuses each file that named-checkzone refuses, with every
        error, except a second CNAME at one name: loading keeps dnspython's reading there (the
        last CNAME wins, as the fast zone reader reproduces), and only ``smartdns check``
        rejects it."""
        for name, text, expected in CORPUS:
            path = self.write(name, text)
            if named_checkzone(self.directory, name)[0] == 0:
                continue
            zone, problems = read_zone_file(path, ORIGIN)
            lines = [line for line, _, smartdns_says in expected if not smartdns_says.startswith("multiple CNAME")]
            if name == "two-cnames.zone":
                self.assertIsNotNone(zone, name)
                continue
            self.assertIsNone(zone, name)
            self.assertEqual(sorted(p.line for p in problems), lines, name)


class OverlayTTLTests(unittest.TestCase):
    """An overlay takes its base zone file's $TTL."""

    def test_missing_ttl_says_how_to_set_it(self) -> None:
        """With no TTL anywhere, the message says where to put a $TTL."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "example.com.zone")
        with open(path, "w") as handle:
            handle.write("www A 192.0.2.1\n")
        problems = check_zone_file(path, ORIGIN, overlay=True)
        self.assertEqual([(p.line, p.message) for p in problems], [
            (1, "no TTL: the record has none and no $TTL comes before it (an overlay takes its base zone "
                "file's $TTL; add a line such as '$TTL 3600' at the top of the file)")])

    def test_overlay_takes_the_base_files_ttl(self) -> None:
        """The base file's first $TTL, not its SOA's TTL, and even when the base has errors."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "example.com.zone")
        with open(path, "w") as handle:
            handle.write("$TTL 300\n@ 3600 SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nbad A 1.2.3.400\n")
        self.assertEqual(overlay_default_ttl(path, None), 300)
        self.assertIsNone(overlay_default_ttl(None, None))


class CheckCommandTests(unittest.TestCase):
    """``smartdns check`` prints every strict problem of every zone and overlay file."""

    def test_every_problem_of_every_file(self) -> None:
        """Out-of-zone data and a base file's errors are reported; its overlay, which relies on
        the base's $TTL, is not blamed for them."""
        base = os.path.abspath(self.mktemp())
        files = {
            "smartdns.toml": '[lines]\nl1 = ["10.0.0.0/8"]\n[forward]\nupstreams = []\n',
            "zones/example.com.zone": HEAD + "bad A 1.2.3.400\nwww.example.net. A 192.0.2.2\n",
            "zones/l1/example.com.zone": "www A 192.0.2.7\n",
        }
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(base, rel)), exist_ok=True)
            with open(os.path.join(base, rel), "w") as handle:
                handle.write(text)
        err = io.StringIO()
        with redirect_stderr(err):
            code = cli.main(["check", "--config", os.path.join(base, "smartdns.toml")])
        zone = os.path.join(base, "zones", "example.com.zone")
        self.assertEqual(code, 1)
        self.assertEqual(err.getvalue().splitlines(), [
            f"{zone}:5: bad IPv4 address '1.2.3.400'",
            f"{zone}:6: out-of-zone data: www.example.net. is not in zone example.com.",
        ])
