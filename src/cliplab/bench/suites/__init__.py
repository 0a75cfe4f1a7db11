"""The shipped suite files (``*.yaml`` in this folder), registered in ``cliplab.bench.suite.SUITES`` by name (the
file's stem) the first time the registry is used: a shipped suite is one file here."""

from importlib import resources
from pathlib import Path

from cliplab.bench.suite import register_suite

for _file in sorted(resources.files(__name__).iterdir(), key=lambda f: f.name):
    if _file.name.endswith((".yaml", ".yml")):
        register_suite(Path(_file.name).stem, Path(str(_file)))
