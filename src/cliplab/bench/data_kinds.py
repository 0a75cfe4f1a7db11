"""Kinds of bench data: a :class:`BenchData` answers "which sets does stage X use" for one kind of data spec.

Stages ask ``ctx.data`` (the run's :class:`BenchData`) for the test / support / validation sets of their main
task, the OOD sets and the shifted sets, and never look at the data spec themselves. The kinds are the
registry ``BENCH_DATA`` (a :class:`cliplab.extension.Registry`; entry-point group ``cliplab.bench_data``):
``register_bench_data(name, factory, detect)`` adds one, ``detect(spec)`` says whether it handles a data spec
and ``factory(ctx)`` builds it; the newest registration that detects a spec wins. The built-in kinds
(:mod:`cliplab.bench.builtin_data`: data with a train split, the built-in world, files) are imported on first
use.

:class:`BenchContext`, what every stage is given, lives here too (it builds ``ctx.data``), below the stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from cliplab.extension import Registry

if TYPE_CHECKING:
    from cliplab.data.base import Dataset
    from cliplab.data.spec import DataSpec
    from cliplab.models.base import Model
    from cliplab.zeroshot.templates import Templates

__all__ = [
    "BENCH_DATA",
    "BenchContext",
    "BenchData",
    "DataKind",
    "OODTask",
    "TaskSets",
    "bench_data_factory",
    "data_class_attr",
    "is_builtin_world",
    "register_bench_data",
]


@dataclass
class BenchContext:
    """What every stage shares: the model, the data spec and run options, the kind of data, cached features.

    ``data_spec`` is parsed once, where the run starts (``run_bench``), and passed on as that object.
    """

    model: Model
    data_spec: DataSpec
    n: int
    batch_size: int = 64
    cache_dir: Any = None
    progress: bool = True
    seed: int = 0
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    ood_specs: tuple[DataSpec, ...] = ()
    #: class-name templates for every zero-shot classifier of the run (None: each dataset's own)
    templates: Templates = None
    #: where notices go (the run's log; None: the ``cliplab`` logger)
    log: Callable[[str], None] | None = None
    #: dataset name -> the templates its classifiers used (``describe_templates`` records), for results.json
    templates_used: dict[str, dict[str, Any]] = field(default_factory=dict)
    _data: BenchData | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from cliplab.data.spec import DataSpec

        # a spec given as text is parsed here, once; a DataSpec (run_bench's) is kept as it is
        self.data_spec = DataSpec.parse(self.data_spec)
        self.ood_specs = tuple(DataSpec.parse(s) for s in self.ood_specs)

    @property
    def data(self) -> BenchData:
        """The :class:`BenchData` for ``data_spec`` (the newest registered kind that detects it)."""
        if self._data is None:
            self._data = bench_data_factory(self.data_spec)(self)
        return self._data

    def dataset(self, split: str = "test", **options: Any) -> Dataset:
        """``load_dataset(data_spec, split, **options)`` with the data kind's defaults (e.g. ``n``)."""
        return self.data.dataset(split, **options)

    def templates_for(self, dataset: Dataset) -> Templates:
        """The templates of ``dataset``'s zero-shot classifier: the run's, else the dataset's own, else the
        fallback set (one notice per dataset); recorded in ``templates_used``."""
        from cliplab.zeroshot.templates import templates_for

        name = getattr(dataset, "name", None) or "data"
        seen = name in self.templates_used
        templates, record = templates_for(self.templates, dataset, notify=(lambda _: None) if seen else self.log)
        self.templates_used.setdefault(name, record)
        return templates

    def embed(self, dataset: Dataset) -> Any:
        from cliplab.features import embed

        return embed(self.model, dataset, batch_size=self.batch_size, cache_dir=self.cache_dir, progress=self.progress)


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


class BenchData:
    """The data of a bench run, by role. Subclasses implement every method; ``ctx`` gives model and options.

    Class attributes used by the report (which has only ``results.json``): ``support_note`` (where few-shot
    support sets come from) and :meth:`size_rows`.
    """

    support_note = "drawn from the train split"

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx

    @classmethod
    def load_options(cls, n: int) -> dict[str, Any]:
        """Options every ``load_dataset`` call of this kind of data adds (``--n`` on the built-in world)."""
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
        """``(test sets, clean validation features, (name, shifted dataset) ...)`` with about ``n`` images each."""
        raise NotImplementedError

    # -- shared helpers ----------------------------------------------------------------------------------------

    def _read(self, ds: Dataset) -> tuple[Any, Dataset]:
        """``(features, dataset)`` with row ``i`` of the features image ``i`` of the dataset (``--skip-bad-images``
        leaves unreadable images out of the features, so they leave the dataset too)."""
        from cliplab.features.embedding import images_read

        feats = self.ctx.embed(ds)
        return feats, images_read(ds, feats)

    def _task_sets(self, ds: Dataset, task: str, style: str | None) -> TaskSets:
        from cliplab.zeroshot import zeroshot_weights

        feats, ds = self._read(ds)
        if feats.labels is None or not feats.classnames:
            raise ValueError(f"dataset {ds.name!r} has no class labels")
        templates = self.ctx.templates_for(ds)
        return TaskSets(task, style, feats, zeroshot_weights(self.ctx.model, feats.classnames, templates), ds)


def is_builtin_world(spec: str | DataSpec) -> bool:
    """Whether a data spec names the built-in shapes world (``shapes``, ``builtin:shapes``, with options)."""
    from cliplab.data.spec import is_builtin_world as names_shapes  # the one parse of a spec: DataSpec

    return names_shapes(spec)


@dataclass(frozen=True)
class DataKind:
    """A registered kind of bench data: ``factory(ctx) -> BenchData`` for the specs ``detect(spec)`` accepts."""

    factory: Callable[[BenchContext], BenchData]
    detect: Callable[[DataSpec], bool]


def _check(name: str, kind: DataKind) -> None:
    if not isinstance(kind, DataKind):
        raise TypeError(f"bench data kind {name!r} must be a DataKind (see register_bench_data), got {kind!r}")


#: name → :class:`DataKind`; the built-ins are registered by ``cliplab.bench.builtin_data``
BENCH_DATA: Registry[DataKind] = Registry(
    "bench data kind", group="cliplab.bench_data", builtins=("cliplab.bench.builtin_data",), check=_check
)


def register_bench_data(
    name: str,
    factory: Callable[[BenchContext], BenchData],
    detect: Callable[[DataSpec], bool],
    *,
    replace: bool = False,
) -> DataKind:
    """Use ``factory(ctx)`` (usually a :class:`BenchData` subclass) as the bench data of every data spec
    ``detect(spec)`` accepts, ahead of earlier registrations (``spec``: the parsed
    :class:`~cliplab.data.spec.DataSpec`; ``str(spec)`` is its text). A taken name raises unless ``replace``."""
    return BENCH_DATA.register(name, DataKind(factory, detect), replace=replace)


def bench_data_factory(spec: str | DataSpec) -> Callable[[BenchContext], BenchData]:
    """The factory (usually a :class:`BenchData` subclass) of the newest kind that detects a data spec
    (a string is parsed here; a :class:`~cliplab.data.spec.DataSpec` is used as it is)."""
    from cliplab.data.spec import DataSpec

    parsed = DataSpec.parse(spec)
    found = BENCH_DATA.detect(lambda kind: kind.detect(parsed))
    if found is None:
        raise ValueError(f"no kind of bench data handles data spec {spec!r} (registered: {', '.join(BENCH_DATA)})")
    return found[1].factory


def data_class_attr(spec: str | DataSpec, attr: str) -> Any:
    """A class attribute (or classmethod) of the data kind for ``spec``, falling back to :class:`BenchData`'s."""
    return getattr(bench_data_factory(spec), attr, getattr(BenchData, attr))


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
    "mvtec": "MVTec AD",
    "visa": "VisA",
    "anomaly-folder": "anomaly folder",
    "shapes-defects": "built-in defects world",
}


def data_kind(spec: str | DataSpec) -> str:
    """The kind of data a spec names, for titles and cards: ``built-in world``, ``class folder``,
    ``webdataset``, ``Hugging Face dataset``, ... (a scheme without a name here: the scheme; unresolvable: data)."""
    from cliplab.data.registry import prepare
    from cliplab.data.spec import DataSpec

    scheme: str | None
    try:
        parsed = DataSpec.parse(spec)
    except ValueError:
        return "data"
    try:
        scheme = prepare(parsed)[0].scheme
    except (ValueError, OSError):
        scheme = parsed.scheme
    return DATA_KINDS.get(scheme, scheme) if scheme else "data"
