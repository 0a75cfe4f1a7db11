"""cliplab: train, adapt and assess contrastive language-image models.

Everything is a logit: ``logits = scale · sim(image, text) + bias``.
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
