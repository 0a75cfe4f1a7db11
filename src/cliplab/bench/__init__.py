"""The main job: ``cliplab bench``."""

from cliplab.bench.runner import STAGES, BenchContext, run_bench

__all__ = ["STAGES", "BenchContext", "run_bench"]
