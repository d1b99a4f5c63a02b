"""``python -m drl ...``: the ``drl`` command line (see :mod:`drl.cli`)."""

import sys

from drl.cli import main

sys.exit(main())
