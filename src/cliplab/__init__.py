"""cliplab: train, adapt and assess contrastive language-image (CLIP-family) models.

Everything is a logit: ``logits = scale · sim(image, text) + bias``.

Top level (imported on first use, so ``import cliplab`` stays cheap):

- ``load_model(spec, device=None) -> Model``: a local Hugging Face directory, ``hf:<id>``,
  ``openclip:<arch>/<tag>`` or ``builtin:shapes``. ``Model.encode_images``, ``Model.encode_texts``,
  ``Model.logit_scale``, ``Model.logit_bias``, ``Model.preprocess``, ``Model.save``.
- ``embed(model, dataset, *, batch_size=64, cache_dir=None, ...) -> Features``: image (and caption) features,
  cached on disk; ``Features.save`` / ``Features.load``.
- ``zeroshot_weights(model, classnames, templates=None) -> [C, D]`` and
  ``zeroshot_logits(features, weights, logit_scale, ...)``: zero-shot classification (Radford et al., 2021).

Sub-packages: ``cliplab.data`` (``load_dataset``, ``shapes``, ``k_shot``, the data-spec registry),
``cliplab.models`` (model sources), ``cliplab.adapt`` (few-shot adapters and prompt learners: ``TipAdapter``,
``GDA``, ``LinearProbe``, ``CoOp``, ...), ``cliplab.ood``, ``cliplab.estimate`` and ``cliplab.assess`` (OOD
detection, label-free accuracy estimation, calibration), ``cliplab.metrics`` (retrieval, CLIPScore, ECE, ...),
``cliplab.losses`` (``clip_loss``, ``siglip_loss``, ...), ``cliplab.train`` and ``cliplab.finetune``
(training, robust fine-tuning, WiSE-FT), ``cliplab.probes``, ``cliplab.curate``, ``cliplab.index``,
``cliplab.bench`` (``run_bench``). The command line is ``cliplab`` (``cliplab --help``); the contracts are in
the project's API notes.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "cliplab.models",
    "Model": "cliplab.models",
    "embed": "cliplab.features",
    "Features": "cliplab.features",
    "zeroshot_weights": "cliplab.zeroshot",
    "zeroshot_logits": "cliplab.zeroshot",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import cliplab` stays cheap
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cliplab' has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazy names too (tab completion, ``help(cliplab)``)
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
