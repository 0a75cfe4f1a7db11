"""The ``cliplab`` command line (``cliplab.cli.commands``); ``entry`` is the console script."""

from __future__ import annotations


def entry() -> None:
    """The ``cliplab`` console script and ``python -m cliplab``: ``main()``, with Ctrl-C during its import, or in
    the instant before ``main`` guards itself, answered like Ctrl-C anywhere else (one line, exit status 130)."""
    import sys

    try:
        from cliplab.cli.commands import main

        status = main()
    except KeyboardInterrupt:
        print("\ncliplab: interrupted", file=sys.stderr, flush=True)
        status = 130
    sys.exit(status)
