"""Training checkpoints: written atomically, restored exactly.

Layout under ``<output_dir>/checkpoints``::

    step_00000100/
        model.safetensors   every tensor of the model module's state dict (logit bias included)
        state.pt            step, sampler position, optimizer, scheduler, grad scaler, clipper,
                            RNG states (python, numpy, torch; one set per process), config
        tokenizer/          the tokenizer (models trained from scratch build theirs from the data)
    latest                  name of the newest complete checkpoint

A checkpoint directory appears only once complete (``cliplab._io.atomic_dir``) and ``latest`` is
replaced atomically after it, so a run killed at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplab._io import atomic_dir, write_text_atomic

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
TOKENIZER_DIR = "tokenizer"
LATEST = "latest"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's random generator states (python, numpy, torch CPU and CUDA), picklable safely."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore states saved by ``rng_state``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    module_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    *,
    tokenizer: Any = None,
    keep: int = 2,
) -> Path:
    """Write ``step_<step>`` atomically, point ``latest`` at it, delete all but the newest ``keep``."""
    from safetensors.torch import save_file

    root = checkpoint_root(output_dir)
    target = root / f"step_{step:08d}"
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module_state.items()}
    with atomic_dir(target) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"step": str(step)})
        torch.save({**state, "step": step}, tmp / STATE_FILE)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
    write_text_atomic(root / LATEST, target.name + "\n")
    prune_checkpoints(output_dir, keep)
    return target


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (p / WEIGHTS_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint named by ``latest`` (or the newest complete one if that file is missing or stale)."""
    root = checkpoint_root(output_dir)
    pointer = root / LATEST
    if pointer.is_file():
        p = root / pointer.read_text().strip()
        if (p / STATE_FILE).is_file() and (p / WEIGHTS_FILE).is_file():
            return p
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resume_point(output_dir: str | Path, resume: bool | str) -> Path | None:
    """The checkpoint to resume from: ``resume=True`` needs one, ``"auto"`` takes one if any, ``False``
    refuses to start over a directory that has checkpoints (it would mix two runs)."""
    latest = latest_checkpoint(output_dir)
    if resume in (True, "auto"):
        if latest is None and resume is True:
            raise FileNotFoundError(f"nothing to resume: {checkpoint_root(output_dir)} has no checkpoint")
        return latest
    if resume is not False:
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if latest is not None:
        raise ValueError(
            f"{output_dir} already holds checkpoints (latest: {latest.name}); "
            "resume it (--resume / resume=True) or choose another output directory"
        )
    return None


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names)."""
    latest = latest_checkpoint(output_dir)
    for p in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        if p != latest:
            shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(module state dict, trainer state)`` of a checkpoint directory."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete cliplab checkpoint ({WEIGHTS_FILE} + {STATE_FILE})")
    weights = load_file(str(path / WEIGHTS_FILE))
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return weights, state


def save_hf_model(model: Any, target: str | Path, *, bias_in_config: bool = False) -> Path:
    """``model.save(target)`` (Hugging Face format, atomic).

    With ``bias_in_config``, the module's ``logit_bias`` (a parameter the trainer added to a model class
    that has none, e.g. SigLIP loss on a ``CLIPModel``) is left out of the weights — ``transformers`` would
    drop it as an unexpected key — and stored as ``config.json → cliplab.logit_bias`` instead.
    """
    import json

    target = Path(target)
    module = model.module
    # a model class that stores such a bias in its own format (``saves_logit_bias``, e.g. open_clip's) keeps it
    bias = module.logit_bias if bias_in_config and not getattr(model, "saves_logit_bias", False) else None
    if bias is not None:
        del module.logit_bias
    try:
        model.save(target)
    finally:
        if bias is not None:
            module.logit_bias = bias
    if bias is not None:
        cfg_path = target / "config.json"
        data = json.loads(cfg_path.read_text())
        data.setdefault("cliplab", {})["logit_bias"] = float(bias.detach().reshape(-1)[0])
        write_text_atomic(cfg_path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return target


__all__ = [
    "checkpoint_root",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "resume_point",
    "rng_state",
    "save_checkpoint",
    "save_hf_model",
    "set_rng_state",
]
