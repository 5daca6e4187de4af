"""``python -m smartdns``: the ``smartdns`` command, for when the console script is not on PATH."""
import sys

from smartdns.cli import main

sys.exit(main())
