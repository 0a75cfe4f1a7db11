"""The built-in bench stages, one module each; importing this package registers them in run and page order."""

import importlib

#: the built-in stages in run and page order
ORDER = ("zeroshot", "adapt", "linear_probe", "retrieval", "probes", "geometry", "ood", "calibration", "estimate")

for _name in ORDER:
    importlib.import_module(f"{__name__}.{_name}")

#: opt-in stages (``Stage.default`` is False: run with ``--only``), after the default ones
importlib.import_module(f"{__name__}.robustness")
