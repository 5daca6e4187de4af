"""Packaging check (``make dist-check``, run by CI): what a ``pip install smartdns-twisted`` user
gets.

Builds the wheel and the sdist, runs ``twine check`` on them, installs the wheel alone into a
fresh venv, and from there runs ``smartdns --version``, ``smartdns check`` and ``twistd
smartdns``, asking the server one question over UDP.  Exits non-zero with the reason on failure.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_TIMEOUT_SECONDS = 300
SERVE_TIMEOUT_SECONDS = 30

ZONE = """$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.80
"""

ASK = """
import sys, dns.message, dns.query, dns.rdatatype
reply = dns.query.udp(dns.message.make_query("www.dist.test", "A"), "127.0.0.1", port=int(sys.argv[1]), timeout=1)
print(" ".join(rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == dns.rdatatype.A))
"""


def step(*args: str, cwd: str = ROOT) -> str:
    """Run one command; its output, or exit with it."""
    print("+", " ".join(args), flush=True)
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=STEP_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        sys.exit(f"dist-check: {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def free_port() -> int:
    """A loopback port free for UDP and TCP now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
        tcp.bind(("127.0.0.1", port))
        return port


def main() -> None:
    work = tempfile.mkdtemp(prefix="smartdns-dist-")
    try:
        dist = os.path.join(work, "dist")
        step(sys.executable, "-m", "pip", "install", "-q", "build", "twine")
        step(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, ROOT)
        wheels = glob.glob(os.path.join(dist, "*.whl"))
        sdists = glob.glob(os.path.join(dist, "*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            sys.exit(f"dist-check: expected one wheel and one sdist, got {os.listdir(dist)}")
        step(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)

        venv = os.path.join(work, "venv")
        step(sys.executable, "-m", "venv", venv)
        bin_dir = os.path.join(venv, "bin")
        step(os.path.join(bin_dir, "pip"), "install", "-q", wheels[0])
        site = os.path.join(work, "site")            # outside the checkout: only the wheel is used
        os.makedirs(os.path.join(site, "zones"))
        with open(os.path.join(site, "zones", "dist.test.zone"), "w") as handle:
            handle.write(ZONE)
        port = free_port()
        with open(os.path.join(site, "smartdns.toml"), "w") as handle:
            handle.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\n[forward]\nupstreams = []\n')
        print(step(os.path.join(bin_dir, "smartdns"), "--version", cwd=site).strip())
        step(os.path.join(bin_dir, "python"), "-m", "smartdns", "--version", cwd=site)
        print(step(os.path.join(bin_dir, "smartdns"), "check", "--config", "smartdns.toml", cwd=site).strip())
        server = subprocess.Popen([os.path.join(bin_dir, "twistd"), "-n", "--pidfile=", "smartdns",
                                   "--config", "smartdns.toml"], cwd=site, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + SERVE_TIMEOUT_SECONDS
            answer = ""
            while time.monotonic() < deadline and server.poll() is None:
                result = subprocess.run([os.path.join(bin_dir, "python"), "-c", ASK, str(port)], cwd=site,
                                        capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS, check=False)
                answer = result.stdout.strip()
                if result.returncode == 0:
                    break
            if answer != "192.0.2.80":
                server.terminate()
                sys.exit(f"dist-check: the installed server answered {answer!r}:\n{server.communicate()[0]}")
            print(f"dist-check: the wheel's server answered www.dist.test A {answer}")
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=STEP_TIMEOUT_SECONDS)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
