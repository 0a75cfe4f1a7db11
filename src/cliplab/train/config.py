"""Training configuration: open_clip-style nested dataclasses, loadable from YAML or JSON.

A minimal file (``configs/shapes-tiny.yaml`` has a commented one)::

    model:
      config: {image_size: 32, patch_size: 8, vision_width: 64, vision_layers: 2}   # from scratch
      # spec: builtin:shapes                                                        # or fine-tune
    data: shapes:n=2000,objects=mixed,image_size=32
    steps: 300
    batch_size: 64

``model`` and ``data`` may be given as a plain string (a model spec / a dataset spec). Unknown keys
raise ``ValueError`` naming them (with a suggestion); values are type-checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from cliplab.models.factory import ModelConfig
from cliplab.models.precision import PRECISIONS
from cliplab.train.hard_negatives import HardNegativeOptions

log = logging.getLogger(__name__)

LOSSES = ("clip", "siglip", "infoloob")
CLIP_MODES = ("none", "norm", "zclip", "autoclip")
SCHEDULES = ("cosine", "constant")


def _choice(value: str, accepted: tuple[str, ...], what: str) -> None:
    if value not in accepted:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, accepted))}, got {value!r}")


def _positive(value: float, what: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass
class ModelOptions:
    """What to train: ``spec`` (any ``cliplab.load_model`` spec) to fine-tune, or ``config`` to start from scratch.

    From scratch, the word-level tokenizer is built (``build_tokenizer``) from the training captions plus
    ``extra_vocabulary`` (texts or words), keeping words seen at least ``min_count`` times.
    """

    spec: str | None = None
    config: ModelConfig | None = None
    extra_vocabulary: list[str] = field(default_factory=list)
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.spec is not None and self.config is not None:
            raise ValueError("model: give either 'spec' (fine-tune) or 'config' (from scratch), not both")
        _positive(self.min_count, "model.min_count")


@dataclass
class DataOptions:
    """Training data: a ``cliplab.data.load_dataset`` spec with captions (caption file or ``shapes``), or
    tar shards streamed from ``wds:<dir>/{000000..000999}.tar`` (``cliplab.train.streaming``).

    ``options`` are passed to ``load_dataset`` (dataset keyword arguments). ``cache_images`` keeps the
    preprocessed images in memory after their first use (None: when they fit in ``cache_limit_gb``).
    ``num_workers``: threads decoding and preprocessing each batch (None: the available cores; the
    batches do not depend on it). Streams only: ``shard_readers`` shards read at once per process
    (interleaved; part of the sample order) and a ``shuffle_buffer`` of that many samples.
    """

    train: str = "shapes"
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)
    cache_images: bool | None = None
    cache_limit_gb: float = 1.0
    num_workers: int | None = None
    shard_readers: int = 2
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        if self.num_workers is not None:
            _positive(self.num_workers, "data.num_workers", allow_zero=True)
        _positive(self.shard_readers, "data.shard_readers")
        _positive(self.shuffle_buffer, "data.shuffle_buffer", allow_zero=True)


@dataclass
class DistillOptions:
    """Knowledge distillation from a frozen ``teacher`` (model spec): ``loss += weight · clip_distill_loss``.

    ``options`` are keyword arguments of ``cliplab.losses.clip_distill_loss`` (``temperature``,
    ``feature_weight``: CLIP-KD's CKD + FD; the feature term needs equal embedding sizes).
    """

    teacher: str = ""
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("loss.distill.teacher must name a model spec")
        _positive(self.weight, "loss.distill.weight", allow_zero=True)


@dataclass
class LossOptions:
    """The contrastive objective: ``name`` in ``clip``, ``siglip``, ``infoloob``.

    ``geometry``: None = the model's; otherwise it replaces the model's (saved with it; cosine only for
    siglip/infoloob). ``chunk_size``: tile size of the memory-efficient loss (same value and gradients).
    ``options``: extra keyword arguments of the loss (e.g. ``hopfield`` for infoloob, whose inverse
    temperature is the model's learnable logit scale).
    ``hard_negatives``: add rewritten captions as extra negatives (clip loss; ``cliplab.train.hard_negatives``).
    """

    name: str = "clip"
    geometry: str | None = None
    chunk_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    distill: DistillOptions | None = None
    hard_negatives: HardNegativeOptions | None = None

    def __post_init__(self) -> None:
        _choice(self.name, LOSSES, "loss.name")
        if self.hard_negatives is not None and self.name != "clip":
            raise ValueError(f"loss.hard_negatives needs the clip loss, not {self.name!r}")
        if self.geometry is not None:
            _choice(self.geometry, ("cosine", "euclidean"), "loss.geometry")
        if self.chunk_size is not None:
            _positive(self.chunk_size, "loss.chunk_size")


@dataclass
class OptimizerOptions:
    """AdamW. Weight decay applies to weight matrices only (not logit scale/bias, biases, norms, embeddings)."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.2

    def __post_init__(self) -> None:
        _positive(self.lr, "optimizer.lr")
        _positive(self.eps, "optimizer.eps")
        _positive(self.weight_decay, "optimizer.weight_decay", allow_zero=True)
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optimizer.betas must be in [0, 1), got {self.betas}")


@dataclass
class ScheduleOptions:
    """Learning-rate schedule: linear warm-up over ``warmup_steps``, then ``cosine`` decay to
    ``min_lr_ratio · lr`` at the last step, or ``constant``."""

    name: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _choice(self.name, SCHEDULES, "schedule.name")
        _positive(self.warmup_steps, "schedule.warmup_steps", allow_zero=True)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class GradClipOptions:
    """Gradient clipping: ``none``, ``norm`` (fixed ``max_norm``), ``zclip`` or ``autoclip``
    (``cliplab.train.ZClip`` / ``AutoClip``, constructed with ``options``)."""

    mode: str = "none"
    max_norm: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice(self.mode, CLIP_MODES, "grad_clip.mode")
        _positive(self.max_norm, "grad_clip.max_norm")


@dataclass
class EvalOptions:
    """Periodic evaluation (every ``eval_every`` steps and at the end).

    ``zeroshot``: a labelled dataset spec (zero-shot top-1 with ``templates`` or the dataset's own).
    ``retrieval``: a dataset spec with held-out captions (image↔text recall@1). Built-in datasets
    are read from ``split``.
    """

    zeroshot: str | None = None
    retrieval: str | None = None
    split: str = "val"
    templates: str | list[str] | None = None
    batch_size: int = 128

    def __post_init__(self) -> None:
        _positive(self.batch_size, "eval.batch_size")


@dataclass
class TrainConfig:
    """Everything that defines a training run (see the module docstring for the file format).

    ``batch_size`` is the micro-batch per process; the contrastive batch of one optimizer step is
    ``batch_size · accum_steps · world_size`` (gradient accumulation keeps all its negatives).
    ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast (fp16 adds a gradient scaler).
    ``lock_image`` / ``lock_text``: LiT, freeze that tower (eval mode, no gradients).
    ``patch_dropout``: FLIP, fraction of image patches dropped while training (ViT towers).
    ``eval_every`` / ``checkpoint_every`` / ``log_every``: in optimizer steps, 0 = only at the end.
    Memory and speed for big models (``cliplab.train.scaling``): ``grad_checkpointing`` recomputes the
    towers' activations in the backward pass; ``compile`` runs the towers through ``torch.compile``;
    ``fsdp`` shards parameters, gradients and optimizer state across ``torchrun`` processes (FSDP2
    ``fully_shard``) instead of replicating them (DDP).
    """

    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    optimizer: OptimizerOptions = field(default_factory=OptimizerOptions)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    grad_clip: GradClipOptions = field(default_factory=GradClipOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    steps: int = 1000
    batch_size: int = 64
    accum_steps: int = 1
    precision: str = "fp32"
    lock_image: bool = False
    lock_text: bool = False
    patch_dropout: float = 0.0
    grad_checkpointing: bool = False
    compile: bool = False
    fsdp: bool = False
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    output_dir: str = "runs/train"
    seed: int = 0
    device: str | None = None
    #: what validation adjusted, one sentence each (e.g. a warm-up clamped to a shortened run); written with the
    #: config (``config.json``) so the run records it
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _positive(self.steps, "steps")
        _positive(self.batch_size, "batch_size")
        _positive(self.accum_steps, "accum_steps")
        _choice(self.precision, PRECISIONS, "precision")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {self.patch_dropout}")
        if self.lock_image and self.lock_text:
            raise ValueError("lock_image and lock_text are both set: nothing but the logit scale would train")
        for name in ("eval_every", "checkpoint_every", "log_every"):
            _positive(getattr(self, name), name, allow_zero=True)
        _positive(self.keep_checkpoints, "keep_checkpoints")
        if self.schedule.warmup_steps > self.steps:  # e.g. a shipped config run with --steps 10: clamp, say so
            note = (
                f"schedule.warmup_steps ({self.schedule.warmup_steps}) exceeds steps ({self.steps}): "
                f"the warm-up is clamped to {self.steps} steps"
            )
            log.warning("note: %s", note)
            self.schedule = dataclasses.replace(self.schedule, warmup_steps=self.steps)
            self.notes = [*self.notes, note]

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from nested dicts (strings accepted for ``model`` and ``data``)."""
        if not isinstance(data, dict):
            raise ValueError(f"a training config must be a mapping of keys to values, got {type(data).__name__}")
        data = dict(data)
        if isinstance(data.get("model"), str):
            data["model"] = {"spec": data["model"]}
        if isinstance(data.get("data"), str):
            data["data"] = {"train": data["data"]}
        return _build(cls, data, "")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Load a ``.yaml``/``.yml`` or ``.json`` config file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise ValueError(f"{path}: unsupported config file type {path.suffix!r} (use .yaml, .yml or .json)")
        except (json.JSONDecodeError, ImportError) as err:
            raise ValueError(f"cannot parse {path}: {err}") from err
        except Exception as err:  # yaml.YAMLError without importing yaml at module level
            if type(err).__module__.startswith("yaml"):
                raise ValueError(f"cannot parse {path}: {err}") from err
            raise
        if data is None:
            raise ValueError(f"{path} is empty")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (JSON-serialisable); ``from_dict(to_dict())`` gives an equal config. ``notes``
        only when there are some (so a config without any compares equal to one written before they existed)."""
        data = json.loads(json.dumps(asdict(self)))
        if not data["notes"]:
            del data["notes"]
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON (atomically)."""
        from cliplab._io import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# -- generic dict → dataclass conversion with checks ------------------------------------------------


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        hints_txt = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), names, n=1)
            hints_txt.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown key(s) in {where}: {', '.join(hints_txt)}; accepted keys: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where}: {err}") from err
    except ValueError as err:
        if cls.__module__ == __name__:  # our own messages already name the key
            raise
        raise ValueError(f"{where}: {err}") from err


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"{path} must not be empty (null)")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {hint}")
    if dataclasses.is_dataclass(hint):
        return _build(cast(type, hint), value, path)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ValueError(f"{path} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{path} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"{path}: unsupported config type {hint}")  # pragma: no cover - a bug in this module


__all__ = [
    "CLIP_MODES",
    "LOSSES",
    "PRECISIONS",
    "DataOptions",
    "DistillOptions",
    "EvalOptions",
    "GradClipOptions",
    "LossOptions",
    "ModelOptions",
    "OptimizerOptions",
    "ScheduleOptions",
    "TrainConfig",
]
