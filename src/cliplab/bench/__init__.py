"""The main job: ``cliplab bench``. Stages and kinds of data are plug-ins: see ``register_stage`` and
``register_bench_data`` (``docs/architecture.md``, "Adding a bench stage")."""

from cliplab.bench.data_kinds import BENCH_DATA, BenchData, register_bench_data
from cliplab.bench.runner import STAGES, BenchContext, run_bench
from cliplab.bench.stage import Metric, Stage, StageResult, register_stage, unregister_stage

__all__ = [
    "BENCH_DATA",
    "STAGES",
    "BenchContext",
    "BenchData",
    "Metric",
    "Stage",
    "StageResult",
    "register_bench_data",
    "register_stage",
    "run_bench",
    "unregister_stage",
]
