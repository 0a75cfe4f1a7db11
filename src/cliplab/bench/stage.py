"""Bench stages as plug-ins: a :class:`Stage` bundles what the runner, the report and ``--compare`` need.

One call, ``register_stage(Stage(...))``, adds a stage to ``cliplab bench``: its ``run`` is called with the
:class:`BenchContext` (the data come from ``ctx.source``, see :mod:`cliplab.bench.sources`), its result is
stored under ``stages.<name>`` in ``results.json``, its ``section`` renders its part of ``report.html``, its
``headline`` adds overview cards and its ``metrics`` are the rows ``--compare`` shows, each with the direction
that counts as better.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cliplab.bench.sources import BenchSource
    from cliplab.data.base import Dataset
    from cliplab.models.base import Model
    from cliplab.zeroshot.templates import Templates


@dataclass
class BenchContext:
    """What every stage shares: the model, the data spec and run options, the data source, cached features."""

    model: Model
    data_spec: str
    n: int
    batch_size: int = 64
    cache_dir: Any = None
    progress: bool = True
    seed: int = 0
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    ood_specs: tuple[str, ...] = ()
    #: class-name templates for every zero-shot classifier of the run (None: each dataset's own)
    templates: Templates = None
    #: where notices go (the run's log; None: the ``cliplab`` logger)
    log: Callable[[str], None] | None = None
    #: dataset name -> the templates its classifiers used (``describe_templates`` records), for results.json
    templates_used: dict[str, dict[str, Any]] = field(default_factory=dict)
    _source: BenchSource | None = field(default=None, init=False, repr=False)

    @property
    def source(self) -> BenchSource:
        """The :class:`~cliplab.bench.sources.BenchSource` for ``data_spec`` (the newest registered match)."""
        if self._source is None:
            from cliplab.bench.sources import bench_source_factory

            self._source = bench_source_factory(self.data_spec)(self)
        return self._source

    def dataset(self, split: str = "test", **options: Any) -> Dataset:
        """``load_dataset(data_spec, split, **options)`` with the source's defaults (e.g. ``n``)."""
        return self.source.dataset(split, **options)

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


@dataclass(frozen=True)
class Metric:
    """A number of a stage's result that ``--compare`` shows.

    ``path``: dot-separated keys into the stage's result; each key is an ``fnmatch`` pattern (``*.acc1``: the
    ``acc1`` of every task). ``name``: the row label after ``<stage>/``, a ``str.format`` template filled with the
    keys the wildcard parts matched (default: the matched keys joined by ``/``). ``higher_is_better``: which
    direction is better (None: neither, e.g. a count).
    """

    name: str
    path: str
    higher_is_better: bool | None = True

    def find(self, result: Any) -> Iterator[tuple[str, Any, tuple[int, ...]]]:
        """``(label, value, position)`` of every leaf ``path`` matches; position orders rows as in the result."""
        parts = self.path.split(".")

        def walk(node: Any, depth: int, matched: tuple[str, ...], pos: tuple[int, ...]) -> Iterator[Any]:
            if depth == len(parts):
                if not isinstance(node, dict | list | str):
                    yield self.name.format(*matched), node, pos
                return
            if not isinstance(node, dict):
                return
            pattern = parts[depth]
            wild = any(c in pattern for c in "*?[")
            for i, (key, value) in enumerate(node.items()):
                if fnmatch.fnmatchcase(str(key), pattern):
                    yield from walk(value, depth + 1, (*matched, str(key)) if wild else matched, (*pos, i))

        yield from walk(result, 0, (), ())


@dataclass
class StageResult:
    """What ``Stage.run`` may return instead of a plain dict: the JSON result and in-memory data for its section.

    ``report_data`` (e.g. sample images) is never written to ``results.json``; it is passed to the stage's own
    ``section`` when the report is drawn in the same run, and is None when a report is drawn from a saved file.
    """

    result: dict[str, Any]
    report_data: Any = None


#: ``section(results, report_data) -> HTML or None``: the whole ``results.json`` dict and the stage's report data
Section = Callable[[dict[str, Any], Any], "str | None"]
#: ``headline(stage_result) -> [(label, value, detail), ...]``: overview cards
Headline = Callable[[dict[str, Any]], "list[tuple[str, Any, str]]"]


@dataclass
class Stage:
    """One bench stage. Only ``name`` and ``run`` are required.

    ``title``: display name (the time table of the report); ``nav``: the report's navigation label (default
    ``title``); ``section``: renders the stage's report section (default: a table of its ``metrics``);
    ``headline``: the overview cards; ``metrics``: what ``--compare`` compares; ``default``: whether a run
    without ``--only`` includes it (an opt-in stage, e.g. one that fine-tunes the model, sets False).
    """

    name: str
    run: Callable[[BenchContext], dict[str, Any] | StageResult]
    title: str = ""
    nav: str = ""
    section: Section | None = None
    headline: Headline | None = None
    metrics: tuple[Metric, ...] = ()
    default: bool = True

    def __post_init__(self) -> None:
        self.title = self.title or self.name
        self.nav = self.nav or self.title
        self.metrics = tuple(self.metrics)

    def values(self, result: Any) -> list[tuple[str, Any, bool | None]]:
        """``(<stage>/<label>, value, higher_is_better)`` of every metric in ``result``, in the result's order."""
        rows = [
            (pos, f"{self.name}/{label}", v, m.higher_is_better)
            for m in self.metrics
            for label, v, pos in m.find(result)
        ]
        rows.sort(key=lambda r: r[0])
        return [r[1:] for r in rows]


#: registered stages in run and page order (``cliplab.bench.stages`` registers the built-in ones)
STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add ``stage`` to ``cliplab bench`` (after the stages registered before it); a name already taken is replaced
    in place. Returns ``stage``."""
    if not stage.name or not stage.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a stage name is letters, digits, '_' or '-', got {stage.name!r}")
    if stage.name in ("overview", "load_model", "report", "total"):
        raise ValueError(f"{stage.name!r} is reserved (report section or timing key)")
    STAGES[stage.name] = stage
    return stage


def unregister_stage(name: str) -> Stage:
    """Remove a registered stage (tests, or replacing a built-in one's position); returns it."""
    return STAGES.pop(name)
