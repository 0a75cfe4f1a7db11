"""The settings of a few-shot evaluation, shared by the adapter, prompt-learning and base-to-new protocols.

One ``FewShotProtocol`` describes *how* methods are evaluated (which methods, how many shots, which seeds,
whether hyper-parameters are searched, per-method overrides); the protocols take the data (features, datasets,
augmented views, validation split) as arguments. ``cliplab adapt`` builds one from its options and hands the
same object to ``run_few_shot``, ``base_to_new``, ``run_prompt_few_shot`` and ``prompt_base_to_new``. The
protocol functions also accept the fields as keyword arguments (``run_few_shot(..., shots=[4], seeds=[1])``),
which override those of the object passed.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliplab.adapt.views import CACHE_PASSES
from cliplab.recipes import VALIDATION

DEFAULT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_SEEDS = (1, 2, 3)
#: the largest shot count of a base-to-new run when none is given (CoCoOp's 16 shots)
BASE_TO_NEW_MAX_SHOTS = 16


@dataclass(frozen=True)
class FewShotProtocol:
    """Methods × shots × seeds, with the validation and search rules of the protocols.

    - ``methods``: method names (None: every registered method that can run on the inputs given).
    - ``shots``: support images per class, one run per ``k`` and seed; ``seeds``: one support draw per seed.
    - ``search``: pick hyper-parameters on validation images (never the test split); False: the defaults.
    - ``val_shots``: validation images per class of a ``k``-shot run under the ``min_k_4`` policy,
      ``min(k, val_shots)`` (4: Dassl's rule).
    - ``dataset``: the dataset's name, which selects Tip-Adapter's per-dataset settings (``--settings-for``).
    - ``method_params``: per method, constructor keyword arguments (``{"coop": {"epochs": 50}}``);
      ``param_grids``: per feature adapter, the search grid replacing ``default_grid()``.
    - ``recipes``: per method, the recipe to run (a name in ``cliplab/recipes/<method>/`` or a YAML file's path;
      default: the dataset's, else the method's default recipe); ``validation``: one validation policy for every
      method (``cliplab.recipes.VALIDATION``: ``full``, ``k_per_class``, ``min_k_4`` (``min(k, val_shots)``),
      ``none``), None: each recipe's.
    - ``cache_passes``: augmented passes Tip-Adapter and GDA use (feature adapters).
    - ``resume_file``: the prompt protocols' JSON file of finished runs (``cliplab.adapt.prompting.resume``).
    - ``progress``: show a progress bar.
    """

    methods: tuple[str, ...] | None = None
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    search: bool = True
    val_shots: int = 4
    dataset: str | None = None
    method_params: Mapping[str, Mapping[str, Any]] | None = None
    param_grids: Mapping[str, Mapping[str, list[Any]]] | None = None
    recipes: Mapping[str, str] | None = None
    validation: str | None = None
    cache_passes: int = CACHE_PASSES
    resume_file: str | Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        # sequences given as lists are kept as tuples (the object is immutable); the values are checked here,
        # before any encoder runs
        if self.methods is not None:
            object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "shots", _positive_ints("shots", self.shots))
        object.__setattr__(self, "seeds", _ints("seeds", self.seeds))
        if int(self.val_shots) < 1:
            raise ValueError(f"val_shots must be at least 1, got {self.val_shots}")
        if self.validation is not None and self.validation not in VALIDATION:
            raise ValueError(f"validation must be one of {list(VALIDATION)}, got {self.validation!r}")
        if int(self.cache_passes) < 1:
            raise ValueError(f"cache_passes must be at least 1, got {self.cache_passes}")

    @property
    def base_to_new_shots(self) -> int:
        """Shots per base class of a base-to-new run: ``min(16, max(shots))``."""
        return min(BASE_TO_NEW_MAX_SHOTS, max(self.shots))

    @classmethod
    def resolve(cls, protocol: FewShotProtocol | None, caller: str, **overrides: Any) -> FewShotProtocol:
        """``protocol`` (or the defaults) with the fields in ``overrides`` replaced.

        A name that is no field raises ``TypeError`` naming the caller and the accepted names.
        """
        if protocol is not None and not isinstance(protocol, FewShotProtocol):
            raise TypeError(f"{caller}() takes a FewShotProtocol as its protocol, got {type(protocol).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"{caller}() got unexpected keyword argument(s) {unknown}; protocol settings: {names}")
        base = protocol if protocol is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base


def _ints(name: str, values: Iterable[int]) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of integers, got {values!r}")
    items = list(values)
    if not items or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {items}")
    return tuple(int(v) for v in items)


def _positive_ints(name: str, values: Iterable[int]) -> tuple[int, ...]:
    out = _ints(name, values)
    if min(out) < 1:
        raise ValueError(f"{name} must be positive, got {list(out)}")
    return out


__all__ = ["BASE_TO_NEW_MAX_SHOTS", "DEFAULT_SEEDS", "DEFAULT_SHOTS", "FewShotProtocol"]
