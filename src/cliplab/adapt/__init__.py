"""Few-shot adaptation of CLIP on cached features (``cliplab.adapt``).

Every adapter follows one contract (``cliplab.adapt.base.Adapter``)::

    fit(features [N, D] or [V, N, D], labels [N], *, text_weights [C, D], logit_scale=100.0, **extra) -> self
    logits(features [M, D]) -> [M, C]        predict(features) -> [M]

Training-free: ``ZeroShot`` (``s0 = logit_scale · f·Wᵀ``), ``TipAdapter``, ``GDA``. Trained:
``TipAdapterF``, ``LinearProbe``, ``CLIPAdapter``, ``LPPlusPlus``, ``AMU`` (needs ``aux_features``).
Hyper-parameters are chosen on a split of the support set with ``search_and_fit`` (or ``grid_search``
with a separate validation split), never on test data; each class has a ``default_grid()``.
``ADAPTERS`` is the registry of adapters the few-shot protocol runs; ``register_method(name, cls)`` adds one.
``FewShotProtocol`` holds the protocols' settings (methods, shots, seeds, search, per-method overrides).
"""

from __future__ import annotations

from cliplab.adapt.amu import AMU, kurtosis_factor
from cliplab.adapt.base import Adapter
from cliplab.adapt.clip_adapter import CLIPAdapter
from cliplab.adapt.gda import GDA
from cliplab.adapt.linear_probe import LinearProbe
from cliplab.adapt.lpplusplus import LPPlusPlus
from cliplab.adapt.prompting import PROMPT_METHODS, TPT, CoCoOp, CoOp, KgCoOp, MaPLe, ProGrad
from cliplab.adapt.protocol_settings import FewShotProtocol
from cliplab.adapt.registry import ADAPTERS, register_method
from cliplab.adapt.search import grid_search, search_and_fit, split_validation
from cliplab.adapt.tip import TipAdapter, TipAdapterF
from cliplab.adapt.zeroshot import ZeroShot

__all__ = [
    "ADAPTERS",
    "AMU",
    "GDA",
    "Adapter",
    "CLIPAdapter",
    "LPPlusPlus",
    "LinearProbe",
    "PROMPT_METHODS",
    "TPT",
    "CoCoOp",
    "CoOp",
    "FewShotProtocol",
    "KgCoOp",
    "MaPLe",
    "ProGrad",
    "TipAdapter",
    "TipAdapterF",
    "ZeroShot",
    "grid_search",
    "kurtosis_factor",
    "register_method",
    "search_and_fit",
    "split_validation",
]
