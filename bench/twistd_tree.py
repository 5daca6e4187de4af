"""twistd with the smartdns plugin of the source tree on PYTHONPATH, for A/B benchmarks.

``twistd smartdns`` finds its plugin through ``twisted.plugins``, whose path puts the
venv's site-packages first: a venv with smartdns installed (``make install``) therefore
always gets the installed plugin, whose ServiceMaker names the installed layout's module
(``smartdns.tap``). An older tree, such as 6212589 (``smartdns.service``), then does
not start at all. This wrapper reads ``twisted/plugins/smartdns_plugin.py`` of the tree
that ``import smartdns`` finds (the first PYTHONPATH entry), offers that ServiceMaker
instead of the installed one, says on stderr which files are used, and runs twistd::

    PYTHONPATH=/tmp/bench-before .venv/bin/python bench/twistd_tree.py -n --pidfile= \\
        smartdns --config smartdns.toml

bench/run.py uses it when given --smartdns-tree.
"""
import os
import sys

import smartdns
from twisted.application import app, service

tree = os.path.dirname(os.path.dirname(os.path.abspath(smartdns.__file__)))
plugin_file = os.path.join(tree, "twisted", "plugins", "smartdns_plugin.py")
ns = {"__name__": "smartdns_tree_plugin"}
with open(plugin_file) as f:
    exec(compile(f.read(), plugin_file, "exec"), ns)
maker = ns["smartdns"]
_stock = app.ServerOptions._getPlugins


def _plugins(interface, package=None):
    found = list(_stock(interface) if package is None else _stock(interface, package))
    if interface is service.IServiceMaker:
        found = [maker] + [p for p in found if getattr(p, "tapname", None) != maker.tapname]
    return found


app.ServerOptions._getPlugins = staticmethod(_plugins)
print("[twistd_tree] smartdns package %s; plugin %s -> service module %s"
      % (os.path.dirname(smartdns.__file__), plugin_file, maker.module), file=sys.stderr, flush=True)

from twisted.scripts.twistd import run  # noqa: E402

sys.argv[0] = "twistd"
run()
