"""The repository stands on its own: licence, changelog, a complete systemd unit, documented
formats, and no references to files or trackers outside it."""
from __future__ import annotations

import configparser
import os
import re
import subprocess

from twisted.trial import unittest

import smartdns
from smartdns import articlejson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as handle:
        return handle.read()


class ProjectFileTests(unittest.TestCase):
    """Files a user or packager looks for."""

    def test_license_matches_setup_cfg(self) -> None:
        """LICENSE holds the MIT licence that setup.cfg declares, and ships in the distribution."""
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        self.assertEqual(parser["metadata"]["license"], "MIT")
        self.assertEqual(parser["metadata"]["license_files"], "LICENSE")
        self.assertTrue(read("LICENSE").startswith("MIT License\n"))

    def test_changelog_has_this_version(self) -> None:
        """CHANGELOG.rst has a section for the current version."""
        self.assertRegex(read("CHANGELOG.rst"), rf"(?m)^{re.escape(smartdns.__version__)}\b")

    def test_systemd_unit_is_complete(self) -> None:
        """contrib/smartdns.service has [Unit], [Service] and [Install] (so ``systemctl enable``
        works), runs twistd's smartdns plugin, and README points to it."""
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
        unit.read_string(read("contrib/smartdns.service"))
        self.assertEqual(unit.sections(), ["Unit", "Service", "Install"])
        self.assertEqual(unit["Install"]["WantedBy"], "multi-user.target")
        self.assertIn(" smartdns --config ", unit["Service"]["ExecStart"])
        self.assertIn("twistd -n", unit["Service"]["ExecStart"])
        self.assertEqual(unit["Service"]["AmbientCapabilities"], "CAP_NET_BIND_SERVICE")
        self.assertIn("contrib/smartdns.service", read("README.rst"))

    def test_records_json_formats_are_documented(self) -> None:
        """Every object field the records.json reader accepts is named in README, and the
        article's AAAA spelling too."""
        readme = read("README.rst")
        for rtype, fields in articlejson._OBJECT_RDATA.items():
            for field in fields:
                self.assertIn(f'"{field}"', readme, f"{rtype} {field}")
        self.assertIn("32 hex digits", readme)

    def test_no_references_outside_the_repository(self) -> None:
        """Every tracked source, doc and packaging file cites RFCs and this repository's own
        files only: no sibling directories, no tracker numbers."""
        pattern = re.compile(r"\.\./shared|\bissues? #?\d+\b|\bnotes §|\b(?:DESIGN|STYLE)\.md\b", re.IGNORECASE)
        files = [rel for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                               check=False).stdout.split()
                 if rel.endswith((".py", ".rst", ".cfg", ".toml", ".service", ".sh", ".tac", "Makefile", "run"))
                 and rel != "tests/test_project_files.py" and os.path.exists(os.path.join(ROOT, rel))]
        if not files:
            raise unittest.SkipTest("not a git checkout")
        found = [f"{rel}: {match.group()}" for rel in files for match in pattern.finditer(read(rel))]
        self.assertEqual(found, [])
