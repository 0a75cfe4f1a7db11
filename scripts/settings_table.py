"""Write (or ``--check``) the recipes table of ``docs/settings.md`` from the recipe files.

PYTHONPATH=src python scripts/settings_table.py          # rewrite the block between the markers
PYTHONPATH=src python scripts/settings_table.py --check  # exit 1 when the document and the files disagree
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cliplab.recipes.table import BEGIN, END, settings_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def replaced(text: str) -> str:
    """``text`` with the block between ``BEGIN`` and ``END`` (markers included) replaced by the current table."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC}: the recipes table markers are missing ({BEGIN!r} … {END!r})")
    head, rest = text.split(BEGIN, 1)
    return head + settings_table() + rest.split(END, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when the table is stale")
    args = parser.parse_args()
    text = DOC.read_text()
    new = replaced(text)
    if args.check:
        if new != text:
            print(f"{DOC} is stale: run scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(DOC)  # atomic
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
