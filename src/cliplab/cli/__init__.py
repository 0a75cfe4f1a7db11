"""The ``cliplab`` command line (``cliplab.cli.commands``); ``entry`` is the console script."""

from __future__ import annotations


def entry() -> None:
    """The ``cliplab`` console script and ``python -m cliplab``: ``main()``, with Ctrl-C during its own import
    answered like Ctrl-C anywhere else (one line, exit status 130, no traceback)."""
    import sys

    try:
        from cliplab.cli.commands import main
    except KeyboardInterrupt:
        print("\ncliplab: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(main())
