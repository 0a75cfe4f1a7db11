"""A bench source for data with real splits (``coop:``, ``wds:``, ``hfds:`` ... any data source declaring a
``train`` split): stages that need training images get the ``train`` split instead of half the test set.

* zero-shot, retrieval, calibration's test set: the ``test`` split (as :class:`FilesSource`);
* few-shot support and the linear probe's training set: the ``train`` split, tested on the whole test split
  (CoOp's and CLIP_benchmark's protocols); data published without one (most CLIP_benchmark webdatasets
  hold only ``test``) fall back to halving the test set per class, as :class:`FilesSource`;
* validation: the ``val`` split where the data have one, else half of the test set (as :class:`FilesSource`).

Splits are loaded only when a stage asks for them, so a zero-shot suite over hub datasets downloads no train
split. Registered for every spec whose data source declares ``train`` (the built-in world keeps its own).
"""

from __future__ import annotations

from typing import Any

from cliplab.bench.sources import FilesSource, TaskSets, is_builtin_world, register_bench_source


def has_train_split(spec: str) -> bool:
    """Whether the spec's data source declares a ``train`` split (read from the registry; nothing is loaded)."""
    from cliplab.data.registry import _resolve
    from cliplab.data.spec import DataSpec

    if is_builtin_world(spec):
        return False
    try:
        source = _resolve(DataSpec.parse(spec))
    except (ValueError, KeyError, FileNotFoundError):
        return False
    return "train" in (source.splits or ())


class SplitsSource(FilesSource):
    """Data with a ``train`` split (module docstring)."""

    support_note = "the train split (the test split is the test set)"

    def _split(self, split: str) -> Any:
        """The split, or None where the data lack it (a wds set published with its test split only)."""
        try:
            return self.dataset(split)
        except (ValueError, FileNotFoundError):
            return None

    def support(self, stage: str) -> tuple[TaskSets, Any]:
        train = self._split("train")
        if train is None:  # no train split: half of each class of the test set, as FilesSource
            return super().support(stage)
        return self.main(stage), self.ctx.embed(train)

    def support_dataset(self, stage: str) -> Any:
        train = self._split("train")
        if train is not None:
            return train
        fallback = getattr(super(), "support_dataset", None)
        return fallback(stage) if fallback is not None else None

    def _val(self) -> Any:
        return self._split("val")

    def validation(self, stage: str) -> tuple[TaskSets, Any]:
        val = self._val()
        if val is None:
            return super().validation(stage)
        return self.main(stage), self.ctx.embed(val)

    def separate_validation(self, stage: str) -> tuple[Any, Any] | None:
        val = self._val()
        return None if val is None else (self.ctx.embed(val), val)


register_bench_source(has_train_split, SplitsSource)
