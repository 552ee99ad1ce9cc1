"""``python -m scorefield.cli`` runs the command line, as ``python -m scorefield`` does."""

import sys

from . import main

sys.exit(main())
