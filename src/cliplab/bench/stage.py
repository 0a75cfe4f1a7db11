"""Bench stages as plug-ins: a :class:`Stage` bundles what the runner, the report and ``--compare`` need.

One call, ``register_stage(Stage(...))``, adds a stage to ``cliplab bench``: its ``run`` is called with the
:class:`BenchContext` (the data come from ``ctx.data``, see :mod:`cliplab.bench.data_kinds`), its result is
stored under ``stages.<name>`` in ``results.json``, its ``section`` renders its part of ``report.html``, its
``headline`` adds overview cards and its ``metrics`` are the rows ``--compare`` shows, each with the direction
that counts as better. Stages run (and appear in the report) in the order each declares, ``Stage(order=...)``
(ties: registration order). ``STAGES`` is a :class:`cliplab.extension.Registry` (entry-point group
``cliplab.bench_stages``); the built-in stages are the modules of :mod:`cliplab.bench.stages`, imported on first
use, so a built-in stage is one file.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cliplab.bench.data_kinds import BenchContext
from cliplab.extension import Registry

__all__ = [
    "STAGES",
    "BenchContext",
    "Headline",
    "Metric",
    "Section",
    "Stage",
    "StageResult",
    "register_stage",
    "unregister_stage",
]

#: the order of a stage that declares none: after every built-in one
LAST = 1000.0


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
    without ``--only`` includes it (an opt-in stage, e.g. one that fine-tunes the model, sets False);
    ``order``: its place in the run and the report, smaller first (the built-ins use 10, 20, ..., 100; the
    default ``LAST`` puts a stage after them; ties keep registration order).
    """

    name: str
    run: Callable[[BenchContext], dict[str, Any] | StageResult]
    title: str = ""
    nav: str = ""
    section: Section | None = None
    headline: Headline | None = None
    metrics: tuple[Metric, ...] = ()
    default: bool = True
    order: float = LAST

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


def _check(name: str, stage: Stage) -> None:
    if not isinstance(stage, Stage):
        raise TypeError(f"a bench stage must be a Stage, got {stage!r}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a stage name is letters, digits, '_' or '-', got {name!r}")
    if name in ("overview", "load_model", "report", "total"):
        raise ValueError(f"{name!r} is reserved (report section or timing key)")
    if name != stage.name:
        raise ValueError(f"stage {stage.name!r} registered under another name, {name!r}")


#: registered stages by name, iterated in run and page order (``Stage.order``); built-ins in ``cliplab.bench.stages``
STAGES: Registry[Stage] = Registry(
    "bench stage",
    group="cliplab.bench_stages",
    builtins=("cliplab.bench.stages",),
    check=_check,
    order=lambda stage: stage.order,
)


def register_stage(stage: Stage, *, replace: bool = False) -> Stage:
    """Add ``stage`` to ``cliplab bench`` at its ``order``; a taken name raises ValueError unless ``replace``.
    Returns ``stage``."""
    return STAGES.register(stage.name, stage, replace=replace)


def unregister_stage(name: str) -> Stage:
    """Remove a registered stage (tests, or replacing a built-in one); returns it."""
    return STAGES.unregister(name)
