"""``python -m scorefield`` (and ``torchrun -m scorefield``) run the command line."""

import sys

from .cli import main

sys.exit(main())
