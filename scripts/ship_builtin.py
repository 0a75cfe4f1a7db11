"""Re-create the shipped weights of the built-in models from their recipes.

    python scripts/ship_builtin.py            # every built-in model
    python scripts/ship_builtin.py shapes     # one

Trains each recipe (deterministic for a given torch version and thread count) and writes
``src/cliplab/builtin_models/shipped/<name>/`` atomically: the weights plus ``recipe.json`` (the recipe's key and
the zero-shot accuracy reached). Run it whenever the recipe or the world changes; ``tests/test_shipped.py``
fails while a shipped copy is stale.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from cliplab.builtin_models.catalog import BUILTIN_MODELS, ship_builtin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"built-in models (default: all of {sorted(BUILTIN_MODELS)})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the recorded weights used 2)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO)
    torch.set_num_threads(args.threads)
    for name in args.names or sorted(BUILTIN_MODELS):
        t0 = time.perf_counter()
        info = ship_builtin(name, progress=not args.quiet)
        print(json.dumps({**info, "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
