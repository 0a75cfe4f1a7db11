"""The main job: ``cliplab bench``. Stages and data sources are plug-ins: see ``register_stage`` and
``register_bench_source`` (``docs/architecture.md``, "Adding a bench stage")."""

from cliplab.bench.runner import STAGES, BenchContext, run_bench
from cliplab.bench.sources import BenchSource, register_bench_source
from cliplab.bench.stage import Metric, Stage, StageResult, register_stage, unregister_stage

__all__ = [
    "STAGES",
    "BenchContext",
    "BenchSource",
    "Metric",
    "Stage",
    "StageResult",
    "register_bench_source",
    "register_stage",
    "run_bench",
    "unregister_stage",
]
