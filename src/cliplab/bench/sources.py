"""Where a bench's data come from: a :class:`BenchSource` answers "which sets does stage X use".

Stages ask the source for the test / support / validation sets of their main task, the OOD sets and the
shifted sets, and never look at the data spec themselves. Two sources are built in:

* :class:`BuiltinWorldSource` (``shapes``, ``builtin:shapes:...``): every role has its own rendered split —
  ``BUILTIN_TASKS`` per stage, support from the train split, validation from the val split, held-out shapes and
  colours as near OOD and the same as sketches as far OOD, rendered corruptions plus ``STYLE_SHIFTS``;
* :class:`FilesSource` (image folders, caption files, any other spec): one test set, split in half per class
  for support/validation, the ``--ood-data`` sets as OOD, and ``Corrupted`` copies of half the test set.

``register_bench_source(detect, factory)`` adds another: ``detect(spec)`` says whether it handles a data spec
and ``factory(ctx)`` builds it; the newest registration that detects a spec wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from cliplab.bench.stage import BenchContext
    from cliplab.data.base import Dataset

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


@dataclass
class TaskSets:
    """The main classification task of a stage: its test features, zero-shot class weights and test dataset.

    ``task``: the task key (``classes`` on files); ``style``: the built-in world's rendering style, None on files.
    """

    task: str
    style: str | None
    test: Any
    weights: torch.Tensor
    dataset: Dataset


@dataclass
class OODTask:
    """One OOD evaluation: ID test and train features of a task, its class weights, and the OOD sets by name."""

    task: str
    test: Any
    train: Any
    weights: torch.Tensor
    sets: dict[str, Any]


class BenchSource:
    """The data of a bench run, by role. Subclasses implement every method; ``ctx`` gives model and options.

    Class attributes used by the report (which has only ``results.json``): ``support_note`` (where few-shot
    support sets come from) and :meth:`size_rows`.
    """

    support_note = "drawn from the train split"

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx

    @classmethod
    def load_options(cls, n: int) -> dict[str, Any]:
        """Options every ``load_dataset`` call of this source adds (``--n`` on the built-in world)."""
        return {}

    @classmethod
    def size_rows(cls, results: dict[str, Any]) -> list[list[Any]]:
        """Rows of the report's run table that describe the data's size."""
        return []

    def dataset(self, split: str = "test", **options: Any) -> Dataset:
        from cliplab.data import load_dataset

        return load_dataset(self.ctx.data_spec, split=split, **{**self.load_options(self.ctx.n), **options})

    def zeroshot_sets(self) -> list[tuple[str, Dataset]]:
        """``(task, test dataset)`` for every zero-shot task."""
        raise NotImplementedError

    def retrieval_set(self) -> Dataset:
        """The captioned test set for retrieval."""
        raise NotImplementedError

    def main(self, stage: str) -> TaskSets:
        """The test set of ``stage``'s main task (raises ValueError when the data have no class labels)."""
        raise NotImplementedError

    def support(self, stage: str) -> tuple[TaskSets, Any]:
        """``(test sets, support features)`` for few-shot adaptation; the test set may be what is left."""
        raise NotImplementedError

    def validation(self, stage: str) -> tuple[TaskSets, Any]:
        """``(test sets, validation features)``, e.g. to fit a temperature."""
        raise NotImplementedError

    def support_dataset(self, stage: str) -> Dataset | None:
        """The dataset whose features ``support(stage)`` returns, row for row (to embed augmented passes)."""
        return None

    def separate_validation(self, stage: str) -> tuple[Any, Dataset] | None:
        """``(features, dataset)`` of a validation split disjoint from ``support`` and the test set, or None
        (few-shot hyper-parameters are then searched on a split of each support set)."""
        return None

    def ood(self) -> list[OODTask] | str:
        """The OOD evaluations, or why there are none (a ``skipped`` reason)."""
        raise NotImplementedError

    def shifted(self, stage: str, n: int) -> tuple[TaskSets, Any, Iterator[tuple[str, Dataset]]]:
        """``(test sets, clean validation features, (name, shifted dataset) ...)`` with about ``n`` images each;
        the test and validation features are those of ``validation(stage)``."""
        raise NotImplementedError

    # -- shared helpers ----------------------------------------------------------------------------------------

    def _task_sets(self, ds: Dataset, task: str, style: str | None) -> TaskSets:
        from cliplab.zeroshot import zeroshot_weights

        feats = self.ctx.embed(ds)
        if feats.labels is None or not feats.classnames:
            raise ValueError(f"dataset {ds.name!r} has no class labels")
        templates = self.ctx.templates_for(ds)
        return TaskSets(task, style, feats, zeroshot_weights(self.ctx.model, feats.classnames, templates), ds)


#: what the report calls the data of each data-source scheme (``cliplab.data.register_data_source``)
DATA_KINDS = {
    "shapes": "built-in world",
    "folder": "class folder",
    "captions": "caption file",
    "wds": "webdataset",
    "hfds": "Hugging Face dataset",
    "imagenet": "ImageNet folder",
    "coop": "CoOp dataset",
    "karpathy": "Karpathy split",
}


def data_kind(spec: str) -> str:
    """The kind of data a spec names, for titles and cards: ``built-in world``, ``class folder``,
    ``webdataset``, ``Hugging Face dataset``, ... (a scheme without a name here: the scheme; unresolvable: data)."""
    from cliplab.data.registry import prepare
    from cliplab.data.spec import DataSpec

    scheme: str | None
    try:
        scheme = prepare(spec)[0].scheme
    except (ValueError, OSError):
        try:
            scheme = DataSpec.parse(spec).scheme
        except ValueError:
            scheme = None
    return DATA_KINDS.get(scheme, scheme) if scheme else "data"


def is_builtin_world(spec: str) -> bool:
    """Whether a data spec names the built-in shapes world (``shapes``, ``builtin:shapes``, with options)."""
    from cliplab.data import is_builtin_world as names_shapes  # the one parse of a spec: DataSpec

    return names_shapes(spec)


class BuiltinWorldSource(BenchSource):
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


class FilesSource(BenchSource):
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
        return sets.dataset.subset(tr.tolist())

    def validation(self, stage: str) -> tuple[TaskSets, Any]:
        sets, vi, ti = self._halves(stage)
        val, sets.test = sets.test.subset(vi), sets.test.subset(ti)
        return sets, val

    def ood(self) -> list[OODTask] | str:
        from cliplab.data import load_dataset

        if not self.ctx.ood_specs:
            return "no OOD data given: pass --ood-data DIR (images of none of the classes) to run it"
        sets, tr, te = self._halves("ood")
        ood = {Path(s).name or s: self.ctx.embed(load_dataset(s, split="test")) for s in self.ctx.ood_specs}
        return [OODTask("classes", sets.test.subset(te), sets.test.subset(tr), sets.weights, ood)]

    def shifted(self, stage: str, n: int) -> tuple[TaskSets, Any, Iterator[tuple[str, Dataset]]]:
        from cliplab.data.corruptions import CORRUPTIONS
        from cliplab.data.shifted import Corrupted

        sets, vi, ti = self._halves(stage)
        val, sets.test = sets.test.subset(vi), sets.test.subset(ti)  # as ``validation``: the other half tests
        pick = np.sort(np.random.default_rng(self.ctx.seed).permutation(ti)[:n])
        base = sets.dataset.subset(pick.tolist())
        pp = self.ctx.model.preprocess
        size = max(pp.crop) if pp.crop else (pp.resize if isinstance(pp.resize, int) else 224)

        def shifted_sets() -> Iterator[tuple[str, Dataset]]:
            for c in CORRUPTIONS:
                for sev in SEVERITIES:
                    yield f"{c}@{sev}", Corrupted(base, c, sev, seed=self.ctx.seed, size=size)

        return sets, val, shifted_sets()


#: (detect, factory) pairs; the newest registration that detects a spec wins
SOURCES: list[tuple[Callable[[str], bool], Callable[[BenchContext], BenchSource]]] = []


def register_bench_source(detect: Callable[[str], bool], factory: Callable[[BenchContext], BenchSource]) -> None:
    """Use ``factory(ctx)`` as the bench source of every data spec ``detect(spec)`` accepts (ahead of earlier
    registrations)."""
    SOURCES.append((detect, factory))


def bench_source_factory(spec: str) -> Callable[[BenchContext], BenchSource]:
    """The factory (usually a :class:`BenchSource` subclass) registered for a data spec."""
    for detect, factory in reversed(SOURCES):
        if detect(str(spec)):
            return factory
    raise ValueError(f"no bench source handles data spec {spec!r}")


def source_class_attr(spec: str, attr: str) -> Any:
    """A class attribute (or classmethod) of the source for ``spec``, falling back to :class:`BenchSource`'s."""
    return getattr(bench_source_factory(spec), attr, getattr(BenchSource, attr))


register_bench_source(lambda spec: True, FilesSource)
register_bench_source(is_builtin_world, BuiltinWorldSource)
