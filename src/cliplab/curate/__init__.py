"""Data curation: ``curate_dataset(data, output, CurateConfig(...))`` and ``cliplab curate`` — CLIP-score
filtering (DataComp), near-duplicate removal (FAISS index), MetaCLIP balancing, caption length and language
rules, unreadable images; a JSON report of every removed pair. ``write_noisy_world`` writes built-in data with
injected noise to measure it. See ``docs/probes-and-curation.md``."""

from cliplab.curate.noise import write_noisy_world
from cliplab.curate.pipeline import CurateConfig, curate_dataset, report_path

__all__ = ["CurateConfig", "curate_dataset", "report_path", "write_noisy_world"]
