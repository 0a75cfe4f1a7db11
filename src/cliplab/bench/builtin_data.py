"""The built-in kinds of bench data: the built-in world, data with a train split, files (any other data spec).

* :class:`BuiltinWorldData` (``shapes``, ``builtin:shapes:...``): every role has its own rendered split —
  ``BUILTIN_TASKS`` per stage, support from the train split, validation from the val split, held-out shapes and
  colours as near OOD and the same as sketches as far OOD, rendered corruptions plus ``STYLE_SHIFTS``;
* :class:`FilesData` (image folders, caption files, any other spec): one test set, split in half per class
  for support/validation, the ``--ood-data`` sets as OOD, and ``Corrupted`` copies of half the test set;
* :class:`SplitsData` (``coop:``, ``wds:``, ``hfds:`` ... any data source declaring a ``train`` split): as
  files, except that stages needing training images get the ``train`` split:

  - zero-shot, retrieval, calibration's test set: the ``test`` split;
  - few-shot support and the linear probe's training set: the ``train`` split, tested on the whole test split
    (CoOp's and CLIP_benchmark's protocols); data published without one (most CLIP_benchmark webdatasets hold
    only ``test``) fall back to halving the test set per class;
  - validation: the ``val`` split where the data have one, else half of the test set.

  Splits are loaded only when a stage asks for them, so a zero-shot suite over hub datasets downloads no train
  split.

Imported by ``BENCH_DATA`` (:mod:`cliplab.bench.data_kinds`) the first time it is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cliplab.bench.data_kinds import BenchData, OODTask, TaskSets, is_builtin_world, register_bench_data

if TYPE_CHECKING:
    from cliplab.data.base import Dataset
    from cliplab.data.spec import DataSpec

#: Built-in world: the task (and shapes options) each stage runs on, chosen so that zero-shot is weak there.
#: Few-shot: the pattern task — no training caption names a pattern, so zero-shot is at chance and
#: supervision helps (the regime of the few-shot papers). Estimation: the shape task over corruptions and the
#: unseen styles, whose accuracies span chance to clean. Calibration: the shape task in distribution, then the
#: unseen styles as its shifted sets. Zero-shot reports every task; any other stage runs on the shape task.
BUILTIN_TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "adapt": ("pattern", {}),
    "calibration": ("shape", {}),
    "estimate": ("shape", {}),
}
#: Built-in world: rendering styles the model never saw, as extra shifted sets (estimation) and far OOD.
STYLE_SHIFTS = ("outline", "sketch")
#: severities of every corruption in the shifted sets
SEVERITIES = (1, 3, 5)


class BuiltinWorldData(BenchData):
    """The built-in shapes world: a rendered split for every role, OOD and shifted sets rendered on demand."""

    support_note = "drawn from the train split"

    @classmethod
    def load_options(cls, n: int) -> dict[str, Any]:
        return {"n": n}

    @classmethod
    def size_rows(cls, results: dict[str, Any]) -> list[list[Any]]:
        return [["images per set", results["data"].get("n")]]

    def _task(self, stage: str) -> tuple[str, dict[str, Any]]:
        return BUILTIN_TASKS.get(stage, ("shape", {}))

    def _train(self, task: str, **options: Any) -> Any:
        return self.ctx.embed(self._train_dataset(task, **options))

    def _train_dataset(self, task: str, **options: Any) -> Dataset:
        return self.dataset("train", task=task, n=max(self.ctx.n, 400), **options)

    def zeroshot_sets(self) -> list[tuple[str, Dataset]]:
        return [(t, self.dataset("test", task=t)) for t in ("shape", "colour", "shape_colour", "pattern")]

    def retrieval_set(self) -> Dataset:
        return self.dataset("test", objects="mixed")

    def main(self, stage: str) -> TaskSets:
        task, opts = self._task(stage)
        return self._task_sets(self.dataset("test", task=task, **opts), task, opts.get("style", "solid"))

    def support(self, stage: str) -> tuple[TaskSets, Any]:
        task, opts = self._task(stage)
        return self.main(stage), self._train(task, **opts)

    def validation(self, stage: str) -> tuple[TaskSets, Any]:
        task, opts = self._task(stage)
        return self.main(stage), self.ctx.embed(self.dataset("val", task=task, **opts))

    def support_dataset(self, stage: str) -> Dataset:
        task, opts = self._task(stage)
        return self._train_dataset(task, **opts)

    def separate_validation(self, stage: str) -> tuple[Any, Dataset]:
        task, opts = self._task(stage)
        ds = self.dataset("val", task=task, **opts)
        return self.ctx.embed(ds), ds

    def ood(self) -> list[OODTask]:
        out = []
        for task, held in (("shape", "shapes"), ("colour", "colours")):
            sets = self._task_sets(self.dataset("test", task=task), task, "solid")
            ood = {
                f"held-out {held}": self.ctx.embed(self.dataset("test", task=task, held_out=held)),
                f"held-out {held}, sketch": self.ctx.embed(
                    self.dataset("test", task=task, held_out=held, style="sketch")
                ),
            }
            out.append(OODTask(task, sets.test, self._train(task), sets.weights, ood))
        return out

    def shifted(self, stage: str, n: int) -> tuple[TaskSets, Any, Iterator[tuple[str, Dataset]]]:
        from cliplab.data.corruptions import CORRUPTIONS

        task, opts = self._task(stage)
        sets, val = self.validation(stage)

        def shifted_sets() -> Iterator[tuple[str, Dataset]]:
            for c in CORRUPTIONS:
                for sev in SEVERITIES:
                    yield f"{c}@{sev}", self.dataset("test", task=task, n=n, corruption=c, severity=sev, **opts)
            for style in STYLE_SHIFTS:
                yield f"style:{style}", self.dataset("test", task=task, n=n, style=style)

        return sets, val, shifted_sets()


class FilesData(BenchData):
    """An image folder, a caption file or any other dataset spec: one test set, halved per class where a stage
    needs a second set; OOD from ``--ood-data``; shifted sets are corrupted copies of half the test set."""

    support_note = "drawn from one half of each class of the folder (the other half is the test set)"

    @classmethod
    def size_rows(cls, results: dict[str, Any]) -> list[list[Any]]:
        zs = (results["stages"].get("zeroshot") or {}).get("classes") or {}
        return [["images", f"{zs['n']} in {len(zs['classnames'])} classes"]] if "n" in zs else []

    def _halves(self, stage: str) -> tuple[TaskSets, np.ndarray, np.ndarray]:
        from cliplab.assess import split_half

        sets = self.main(stage)
        first, second = split_half(sets.test.labels, self.ctx.seed)
        return sets, first, second

    def zeroshot_sets(self) -> list[tuple[str, Dataset]]:
        return [("classes", self.dataset("test"))]

    def retrieval_set(self) -> Dataset:
        return self.dataset("test")

    def main(self, stage: str) -> TaskSets:
        return self._task_sets(self.dataset("test"), "classes", None)

    def support(self, stage: str) -> tuple[TaskSets, Any]:
        sets, tr, te = self._halves(stage)
        train, sets.test = sets.test.subset(tr), sets.test.subset(te)
        return sets, train

    def support_dataset(self, stage: str) -> Dataset:
        sets, tr, _ = self._halves(stage)
        return sets.dataset.subset(cast(Sequence[int], tr))

    def validation(self, stage: str) -> tuple[TaskSets, Any]:
        sets, vi, ti = self._halves(stage)
        val, sets.test = sets.test.subset(vi), sets.test.subset(ti)
        return sets, val

    def ood(self) -> list[OODTask] | str:
        from cliplab.data import load_dataset

        if not self.ctx.ood_specs:
            return "no OOD data given: pass --ood-data DIR (images of none of the classes) to run it"
        sets, tr, te = self._halves("ood")
        ood = {Path(str(s)).name or str(s): self.ctx.embed(load_dataset(s, split="test")) for s in self.ctx.ood_specs}
        return [OODTask("classes", sets.test.subset(te), sets.test.subset(tr), sets.weights, ood)]

    def shifted(self, stage: str, n: int) -> tuple[TaskSets, Any, Iterator[tuple[str, Dataset]]]:
        from cliplab.data.corruptions import CORRUPTIONS
        from cliplab.data.shifted import Corrupted

        sets, vi, ti = self._halves(stage)
        val, sets.test = sets.test.subset(vi), sets.test.subset(ti)  # as ``validation``: the other half tests
        pick = np.sort(np.random.default_rng(self.ctx.seed).permutation(ti)[:n])
        base = sets.dataset.subset(cast(Sequence[int], pick))
        pp = self.ctx.model.preprocess
        size = max(pp.crop) if pp.crop else (pp.resize if isinstance(pp.resize, int) else 224)

        def shifted_sets() -> Iterator[tuple[str, Dataset]]:
            for c in CORRUPTIONS:
                for sev in SEVERITIES:
                    yield f"{c}@{sev}", Corrupted(base, c, sev, seed=self.ctx.seed, size=size)

        return sets, val, shifted_sets()


def has_train_split(spec: str | DataSpec) -> bool:
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


class SplitsData(FilesData):
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
        if train is None:  # no train split: half of each class of the test set, as FilesData
            return super().support(stage)
        return self.main(stage), self.ctx.embed(train)

    def support_dataset(self, stage: str) -> Any:
        train = self._split("train")
        if train is not None:
            return self._read(train)[1]  # row for row with ``support``'s features (from the feature cache)
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
        return None if val is None else self._read(val)


# Registered in this order, so asked (newest first) as: data with a train split, the built-in world, files
# (any spec). All three are registered here, in one module, so that the order cannot depend on which module
# some code imported first.
register_bench_data("files", FilesData, lambda spec: True)
register_bench_data("builtin_world", BuiltinWorldData, is_builtin_world)
register_bench_data("splits", SplitsData, has_train_split)
