"""The Makefile's quick start refuses a Python that is too old before it makes anything."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_TIMEOUT_SECONDS = 60

#: An interpreter that says it is Python 3.10 to the Makefile's ``-c`` checks, and refuses to do
#: anything else (making a venv, say), so the test shows nothing else was tried.
FAKE_PYTHON = f"""#!{sys.executable}
import sys
if sys.argv[1:2] != ["-c"]:
    sys.exit("fake python: asked to run " + " ".join(sys.argv[1:]))
sys.version_info = (3, 10, 14, "final", 0)
code = sys.argv[2]
sys.argv = ["-c", *sys.argv[3:]]
exec(compile(code, "<string>", "exec"))
"""


class PythonVersionTests(unittest.TestCase):
    """``make run PYTHON=python3.10`` fails clearly and leaves no .venv behind."""

    def test_old_python_is_refused_before_the_venv(self) -> None:
        """The message names the version needed and the one found; no .venv is created."""
        if shutil.which("make") is None:
            raise unittest.SkipTest("make is not installed")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in ("Makefile", "setup.cfg", "pyproject.toml"):
            shutil.copy(os.path.join(ROOT, name), directory)
        fake = os.path.join(directory, "python3.10")
        with open(fake, "w") as handle:
            handle.write(FAKE_PYTHON)
        os.chmod(fake, 0o755)
        result = subprocess.run(["make", "--no-print-directory", "install", f"PYTHON={fake}"], cwd=directory,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=MAKE_TIMEOUT_SECONDS, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"smartdns needs Python 3.11 or newer; {fake} is 3.10", result.stderr)
        self.assertNotIn("fake python: asked", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(directory, ".venv")))

    def test_venv_is_recreated_not_reused(self) -> None:
        """The venv is made with --clear, so one left by another Python is replaced."""
        with open(os.path.join(ROOT, "Makefile")) as handle:
            self.assertIn("-m venv --clear $(VENV)", handle.read())
