"""``load_model(spec)``: one entry point for every source of models."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cliplab.models.base import Model

SPEC_FORMS = (
    "a local Hugging Face directory (what Model.save writes, or any saved transformers CLIP-family model)",
    "hf:<repo-id> (downloaded through transformers)",
    "openclip:<arch>/<pretrained-tag> (needs open_clip installed)",
    "builtin:shapes (the small model trained on the built-in shapes world)",
)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _unknown(spec: str, why: str) -> ValueError:
    forms = "\n  - ".join(SPEC_FORMS)
    return ValueError(f"unknown model spec {spec!r}: {why}. Accepted forms:\n  - {forms}")


def load_model(spec: str | os.PathLike | Model, device: str | torch.device | None = None) -> Model:
    """Load a CLIP-family model from ``spec`` (see ``SPEC_FORMS``) onto ``device`` (default: CUDA if any).

    Raises ``ValueError`` naming the accepted forms for an unknown spec.
    """
    if isinstance(spec, Model):
        return spec.to(device) if device is not None else spec
    device = str(device) if device is not None else default_device()
    s = str(spec)
    if s.startswith("hf:"):
        from cliplab.models.hf import HFModel

        repo = s[3:]
        if not repo:
            raise _unknown(s, "the hf: prefix needs a repository id, e.g. hf:openai/clip-vit-base-patch32")
        return HFModel.from_pretrained(repo, spec=s, device=device)
    if s.startswith("openclip:"):
        from cliplab.models.openclip import OpenCLIPModel

        arch, _, tag = s[len("openclip:") :].partition("/")
        if not arch:
            raise _unknown(
                s, "the openclip: prefix needs an architecture, e.g. openclip:ViT-B-32/laion2b_s34b_b79k"
            )
        return OpenCLIPModel(arch, tag or None, spec=s, device=device)
    if s.startswith("builtin:"):
        from cliplab.models.builtin import BUILTIN_MODELS, load_builtin

        name = s[len("builtin:") :]
        if name not in BUILTIN_MODELS:
            raise _unknown(s, f"no built-in model {name!r} (available: {', '.join(sorted(BUILTIN_MODELS))})")
        return load_builtin(name, device=device)
    path = Path(s).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _unknown(
                s, f"directory {path} has no config.json, so it is not a Hugging Face model directory"
            )
        from cliplab.models.hf import HFModel

        return HFModel.from_pretrained(str(path), spec=str(path), device=device)
    if path.exists():
        raise _unknown(s, f"{path} is a file, not a model directory")
    raise _unknown(s, "it is neither an existing directory nor a known prefix")


def check_model_spec(spec: str | os.PathLike | Model) -> None:
    """Raise what ``load_model(spec)`` would raise for a spec of no known form, without loading anything.

    Cheap: a prefix needs its argument (and ``openclip:`` the open_clip package, found but not imported), a
    ``builtin:`` name must be registered, a local path must be a directory with a ``config.json``.
    """
    if isinstance(spec, Model):
        return
    s = str(spec)
    if s.startswith("hf:"):
        if not s[3:]:
            raise _unknown(s, "the hf: prefix needs a repository id, e.g. hf:openai/clip-vit-base-patch32")
        return
    if s.startswith("openclip:"):
        import importlib.util

        from cliplab.models.openclip import INSTALL_HINT

        if not s[len("openclip:") :].partition("/")[0]:
            raise _unknown(s, "the openclip: prefix needs an architecture, e.g. openclip:ViT-B-32/laion2b_s34b_b79k")
        if importlib.util.find_spec("open_clip") is None:
            raise ImportError(f"model spec {s!r}: {INSTALL_HINT}")
        return
    if s.startswith("builtin:"):
        from cliplab.models.builtin import BUILTIN_MODELS

        name = s[len("builtin:") :]
        if name not in BUILTIN_MODELS:
            raise _unknown(s, f"no built-in model {name!r} (available: {', '.join(sorted(BUILTIN_MODELS))})")
        return
    path = Path(s).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _unknown(s, f"directory {path} has no config.json, so it is not a Hugging Face model directory")
        return
    if path.exists():
        raise _unknown(s, f"{path} is a file, not a model directory")
    raise _unknown(s, "it is neither an existing directory nor a known prefix")
