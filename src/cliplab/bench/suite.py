"""Bench suites: several models × several datasets, each pair (a *cell*) one ``run_bench``.

A suite comes from repeated ``--model`` / ``--data`` options or from a YAML file (``--suite FILE``, or the name
of a registered one: ``SUITES``, a :class:`cliplab.extension.Registry` of suite files by name, entry-point group
``cliplab.suites``; the shipped ones are the files in ``cliplab/bench/suites/``, ``register_suite`` adds one)::

    name: my-suite
    models:                      # specs, or {name, spec}; --model on the command line replaces them
      - hf:openai/clip-vit-base-patch32
    stages: [zeroshot]           # default stages of every dataset (omitted: every default stage)
    options: {n: 1000, seeds: [1, 2, 3], shots: [1, 2, 4, 8, 16]}
    datasets:
      - name: cifar10            # the cell directory's name (default: from the spec)
        data: wds:clip-benchmark/wds_vtab-cifar10
        task: zeroshot_classification   # or stages: [...]; tasks: TASK_STAGES
        templates: cifar18       # optional: a set name, a .json/.txt file (relative to the suite file), a list
        options: {image: img}    # optional: data-spec options (the same as writing ``...:image=img``)

``${VAR}`` in a data spec or templates path is replaced by the environment variable (an unset one is an
error naming it): ``root=${COOP_ROOT}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cliplab.extension import Registry

#: CLIP_benchmark's task names (its ``--task``) and ours, as the stages they run
TASK_STAGES: dict[str, tuple[str, ...]] = {
    "zeroshot_classification": ("zeroshot",),
    "zeroshot_retrieval": ("retrieval",),
    "linear_probe": ("linear_probe",),
    "few_shot": ("zeroshot", "adapt"),
}

_KEYS = {"name", "about", "models", "stages", "options", "datasets"}
_DATA_KEYS = {"name", "data", "task", "stages", "templates", "options", "about"}
_OPTION_KEYS = {"n", "seeds", "shots"}


@dataclass(frozen=True)
class SuiteModel:
    """A model of a suite: ``name`` (its cells' directory) and ``spec``."""

    name: str
    spec: str


@dataclass(frozen=True)
class SuiteData:
    """A dataset of a suite: ``name`` (cell directory), ``spec``, its stages (None: the suite's), templates."""

    name: str
    spec: str
    stages: tuple[str, ...] | None = None
    templates: Any = None


@dataclass
class Suite:
    """Models × datasets and the run options shared by every cell."""

    name: str
    models: list[SuiteModel]
    datasets: list[SuiteData]
    stages: tuple[str, ...] | None = None
    n: int = 1000
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    path: str | None = None
    about: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def stages_of(self, data: SuiteData) -> list[str]:
        """The stages a cell runs: the dataset's, else the suite's, else every default stage."""
        from cliplab.bench.stage import STAGES

        return list(data.stages or self.stages or STAGES)


def slug(text: str) -> str:
    """A directory name for a spec: runs of characters other than letters, digits, ``.``, ``_``, ``-`` → ``_``."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return out[:80]


def _expand(text: str, where: str) -> str:
    def var(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ValueError(f"{where}: environment variable {name} is not set (used as ${{{name}}})")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", var, text)


def _check_stages(stages: Any, where: str) -> tuple[str, ...]:
    from cliplab.bench.stage import STAGES

    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
        raise ValueError(f"{where}: stages must be a non-empty list of stage names, got {stages!r}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"{where}: unknown stage(s) {unknown}; available: {', '.join(STAGES)}")
    return tuple(stages)


def _unique(names: list[str], what: str, where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: two {what} share the name(s) {dup}; give each a distinct 'name'")


def models_from_specs(specs: Sequence[str], where: str = "--model") -> list[SuiteModel]:
    models = [SuiteModel(slug(s), s) for s in specs]
    _unique([m.name for m in models], "models", where)
    return models


def datasets_from_specs(specs: Sequence[str], where: str = "--data") -> list[SuiteData]:
    datasets = [SuiteData(slug(s), s) for s in specs]
    _unique([d.name for d in datasets], "datasets", where)
    return datasets


def _templates(value: Any, base: Path | None, where: str) -> Any:
    from cliplab.zeroshot.templates import class_prompts, read_templates

    if value is None:
        return None
    if isinstance(value, str):
        value = read_templates(_expand(value, where), base)
    elif isinstance(value, list):  # items: templates, set names, files, or dicts
        parts: list[Any] = []
        for item in value:
            if isinstance(item, str) and (item.endswith((".json", ".txt")) or "${" in item):
                loaded = read_templates(_expand(item, where), base)
                parts.extend(loaded if isinstance(loaded, list) else [loaded])
            else:
                parts.append(item)
        value = parts
    elif not isinstance(value, dict):
        raise ValueError(f"{where}: templates must be a name, a file, a list or a class → sentences dict")
    # check the templates' form now; descriptions are checked against the class names when the cell runs
    strings = [v for v in (value if isinstance(value, list) else [value]) if not isinstance(v, dict)]
    if strings:
        try:
            class_prompts(["x"], strings)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    return value


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{where}: expected a list of integers, got {value!r}")
    return tuple(value)


def parse_suite(raw: Any, where: str, base: Path | None = None) -> Suite:
    """A :class:`Suite` from the parsed YAML; errors name ``where`` (the file) and the entry at fault."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a suite file is a mapping with 'datasets' (and 'models', 'stages', 'options')")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; a suite has {sorted(_KEYS)}")
    models_raw = raw.get("models") or []
    if not isinstance(models_raw, list):
        raise ValueError(f"{where}: 'models' must be a list of model specs")
    models = []
    for i, m in enumerate(models_raw):
        if isinstance(m, str):
            models.append(SuiteModel(slug(m), m))
        elif isinstance(m, dict) and isinstance(m.get("spec"), str) and set(m) <= {"name", "spec"}:
            models.append(SuiteModel(slug(str(m.get("name") or m["spec"])), m["spec"]))
        else:
            raise ValueError(f"{where}: models[{i}] must be a spec or {{name, spec}}, got {m!r}")
    _unique([m.name for m in models], "models", where)
    stages = _check_stages(raw["stages"], f"{where}: stages") if raw.get("stages") is not None else None
    options = raw.get("options") or {}
    if not isinstance(options, dict) or set(options) - _OPTION_KEYS:
        raise ValueError(f"{where}: options may hold {sorted(_OPTION_KEYS)}, got {options!r}")
    data_raw = raw.get("datasets")
    if not isinstance(data_raw, list) or not data_raw:
        raise ValueError(f"{where}: 'datasets' must be a non-empty list")
    datasets = []
    for i, d in enumerate(data_raw):
        at = f"{where}: datasets[{i}]"
        if isinstance(d, str):
            d = {"data": d}
        if not isinstance(d, dict) or not isinstance(d.get("data"), str):
            raise ValueError(f"{at} must be a data spec or a mapping with 'data', got {d!r}")
        bad = sorted(set(d) - _DATA_KEYS)
        if bad:
            raise ValueError(f"{at}: unknown key(s) {bad}; a dataset has {sorted(_DATA_KEYS)}")
        if "task" in d and "stages" in d:
            raise ValueError(f"{at}: give 'task' or 'stages', not both")
        own = None
        if "task" in d:
            if d["task"] not in TASK_STAGES:
                raise ValueError(f"{at}: unknown task {d['task']!r}; tasks: {', '.join(TASK_STAGES)}")
            own = TASK_STAGES[d["task"]]
        elif "stages" in d:
            own = _check_stages(d["stages"], f"{at}: stages")
        spec = _expand(d["data"], at)
        if d.get("options"):  # data-spec options, as if written after the spec (``:key=value,...``)
            from cliplab.data.spec import DataSpec

            if not isinstance(d["options"], dict):
                raise ValueError(f"{at}: options must be a mapping of data-spec options, got {d['options']!r}")
            spec = str(DataSpec.parse(spec).with_options(**d["options"]))
        templates = _templates(d.get("templates"), base, at)
        datasets.append(SuiteData(slug(str(d.get("name") or spec)), spec, own, templates))
    _unique([d.name for d in datasets], "datasets", where)
    return Suite(
        name=str(raw.get("name") or (Path(where).stem if base else "suite")),
        models=models,
        datasets=datasets,
        stages=stages,
        n=_ints(options["n"], f"{where}: options.n")[0] if "n" in options else 1000,
        seeds=_ints(options["seeds"], f"{where}: options.seeds") if "seeds" in options else (1, 2, 3),
        shots=_ints(options["shots"], f"{where}: options.shots") if "shots" in options else (1, 2, 4, 8, 16),
        path=where,
        about=str(raw.get("about") or ""),
    )


def _check_suite(name: str, path: Path) -> None:
    if not name or not isinstance(path, Path):
        raise TypeError(f"suite {name!r} must be registered as the Path of its YAML file, got {path!r}")


def _adopt_suite(name: str, loaded: Any) -> Path:
    """An entry point's object: a path, or a function returning one."""
    return Path(loaded() if callable(loaded) else loaded)


#: suite name → its YAML file; the shipped ones are registered by ``cliplab.bench.suites``
SUITES: Registry[Path] = Registry(
    "suite", group="cliplab.suites", builtins=("cliplab.bench.suites",), check=_check_suite, adopt=_adopt_suite
)


def register_suite(name: str, path: str | os.PathLike, *, replace: bool = False) -> Path:
    """Make ``--suite NAME`` (and ``load_suite(name)``) read the suite file ``path``; a taken name raises
    ValueError unless ``replace``. Returns the path."""
    return SUITES.register(name, Path(path), replace=replace)


def shipped_suites() -> dict[str, Path]:
    """The registered suite files by name: those shipped with cliplab (``clip_benchmark``, ``coop_fewshot``) and
    any ``register_suite`` added."""
    return dict(SUITES.items())


def load_suite(path_or_name: str | os.PathLike) -> Suite:
    """Read a suite file, or a shipped suite by name; raises FileNotFoundError / ValueError naming the file."""
    import yaml

    text = os.fspath(path_or_name)
    path = Path(text).expanduser()
    if not path.is_file():
        if text not in SUITES:
            raise FileNotFoundError(f"suite file not found: {text}; {SUITES.unknown(text)}")
        path = SUITES[text]
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"suite file {path} is not valid YAML: {err}") from err
    return parse_suite(raw, str(path), base=path.parent)
