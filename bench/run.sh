#!/bin/sh
# smartdns benchmark: installs what it needs, then runs bench/run.py with the given
# options (see bench/README.rst, or bench/run.sh --help). Run by hand, never in CI.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

need=""
command -v dnsperf >/dev/null 2>&1 || need="$need dnsperf"
command -v nsd >/dev/null 2>&1 || need="$need nsd"
command -v dnsmasq >/dev/null 2>&1 || need="$need dnsmasq-base"
command -v unbound >/dev/null 2>&1 || need="$need unbound"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
if [ -n "$need" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "[bench] installing:$need" >&2
    # Keep the packages' own services (nsd, unbound on port 53) from starting: the
    # bench runs its own instances on high ports. Only if no policy is in place.
    policy=/usr/sbin/policy-rc.d
    added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        added=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $need >&2 || {
        [ -z "$added" ] || $sudo rm -f "$policy"; exit 1; }
    [ -z "$added" ] || $sudo rm -f "$policy"
fi

# The stock Twisted Names peer comes from the project's venv (make creates it).
if [ ! -x "$here/../.venv/bin/twistd" ]; then
    echo "[bench] $here/../.venv/bin/twistd missing: run 'make install' first (or pass --twistd)" >&2
fi

exec python3 "$here/run.py" "$@"
