"""``python -m ccoptout_xl``: the same as the ``ccoptout-xl`` command."""

import sys

from .cli import main

sys.exit(main())
