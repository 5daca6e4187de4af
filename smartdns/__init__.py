"""smartdns: a split-horizon DNS server on Twisted Names.

The distribution is published as ``smartdns-twisted`` (the name ``smartdns`` belongs to an
unrelated project); the import package, the ``smartdns`` command and the twistd plugin are all
called ``smartdns``.
"""

__version__ = "0.2.0"

#: The name to ``pip install``; ``importlib.metadata`` knows the installed copy by it.
DISTRIBUTION_NAME = "smartdns-twisted"
