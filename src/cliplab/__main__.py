"""``python -m cliplab ...`` (and ``torchrun -m cliplab ...``): the command line."""

import sys

from cliplab.cli.commands import main

sys.exit(main())
