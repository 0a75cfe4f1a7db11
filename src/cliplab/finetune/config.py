"""The ``cliplab finetune`` config: a YAML/JSON file (``configs/finetune-shapes.yaml`` has a commented one)::

    model: builtin:shapes
    data: shapes:task=pattern,n=400        # labelled training data, read from ``split``
    method: ce                             # ce | flyp | clipood | a registered objective
    steps: 150
    lr: 1.0e-4
    output_dir: runs/finetune
    eval:
      shift: [shapes:task=pattern,n=300,corruption=gaussian_noise,severity=3]
      alphas: [0, 0.25, 0.5, 0.75, 1]

Unknown keys raise ``ValueError`` naming them; values are type-checked.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cliplab.finetune.objectives import FINETUNE_OBJECTIVES
from cliplab.models.precision import PRECISIONS


@dataclass
class EvalConfig:
    """``data``: in-distribution test set (default: ``data`` itself, read from ``split``); ``shift``: shifted test
    sets; ``alphas``: the WiSE-FT mixing coefficients scored."""

    data: str | None = None
    split: str = "test"
    shift: list[str] = field(default_factory=list)
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    def __post_init__(self) -> None:
        for a in self.alphas:
            if not isinstance(a, int | float) or not 0 <= a <= 1:
                raise ValueError(f"eval.alphas must be numbers in [0, 1], got {a!r}")


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (see :func:`cliplab.finetune.finetune` for the meaning)."""

    model: str = "builtin:shapes"
    data: str = "shapes:task=pattern,n=400"
    split: str = "train"
    method: str = "ce"
    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 0
    precision: str = "fp32"
    grad_checkpointing: bool = False
    templates: list[str] | None = None
    mms_lambda: float = 0.3
    bma_beta: float = 0.5
    seed: int = 0
    device: str | None = None
    output_dir: str = "runs/finetune"
    checkpoint_every: int = 0
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.method not in FINETUNE_OBJECTIVES:
            raise ValueError(f"method must be one of {FINETUNE_OBJECTIVES.names()}, got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise ValueError("checkpoint_every and warmup_steps must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> FinetuneConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; accepted: {sorted(known)}")
        values = dict(data)
        if "eval" in values:
            ev = values["eval"] or {}
            ev_known = {f.name for f in dataclasses.fields(EvalConfig)}
            bad = sorted(set(ev) - ev_known)
            if bad:
                raise ValueError(f"{where}: unknown key(s) {bad} in eval; accepted: {sorted(ev_known)}")
            if isinstance(ev.get("shift"), str):
                ev = {**ev, "shift": [ev["shift"]]}
            values["eval"] = EvalConfig(**ev)
        for name in ("lr", "weight_decay", "mms_lambda", "bma_beta"):
            if name in values:
                values[name] = _number(values[name], f"{where}: {name}")
        for name in ("steps", "batch_size", "warmup_steps", "seed", "checkpoint_every"):
            if name in values and (not isinstance(values[name], int) or isinstance(values[name], bool)):
                raise ValueError(f"{where}: {name} must be an integer, got {values[name]!r}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> FinetuneConfig:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"fine-tuning config not found: {path}")
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise ValueError(f"{path}: unsupported config file type {suffix!r} (use .yaml, .yml or .json)")
        try:
            if suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as err:  # json or yaml parse errors
            raise ValueError(f"cannot parse {path}: {err}") from err
        if data is None:
            raise ValueError(f"{path} is empty")
        return cls.from_dict(data, where=str(path))

    def replace(self, **changes: Any) -> FinetuneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError as err:
        raise ValueError(f"{what} must be a number, got {value!r}") from err
