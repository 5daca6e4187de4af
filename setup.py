"""Build hooks that setup.cfg cannot express: the optional C accelerator for UDP I/O.

``smartdns._udp`` (recvmmsg/sendmmsg and the replay table's lookup) is built where a C
compiler and the Python headers are present, and skipped with a warning where they are not:
smartdns then reads and sends each datagram in Python (smartdns.server.DNSDatagramPort).
Linux only (recvmmsg and sendmmsg).
"""
import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("smartdns._udp", ["smartdns/_udp.c"], optional=True,
                                 extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]))

setup(ext_modules=ext_modules)
