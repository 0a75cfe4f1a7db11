"""``python -m cliplab ...`` (and ``torchrun -m cliplab ...``): the command line."""

from cliplab.cli import entry

entry()
