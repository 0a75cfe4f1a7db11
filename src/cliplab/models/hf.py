"""Hugging Face ``transformers`` backend: CLIP, SigLIP and any model with the two-tower API.

A model qualifies when it has ``get_image_features`` and ``get_text_features`` and a ``logit_scale``
parameter (``logit_bias`` optional). Architecture-specific behaviour is looked up by the checkpoint's
``config.model_type`` (never by its name). The image input follows the checkpoint's own processor config:
``[B, 3, H, W]`` pixels, or, for a processor with ``max_num_patches`` (SigLIP 2's NaFlex), patch sequences with
``pixel_attention_mask`` and ``spatial_shapes`` (``PatchPreprocess``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cliplab._io import atomic_dir
from cliplab.imaging.preprocess import OPENAI_MEAN, OPENAI_STD, PatchPreprocess, Preprocess, unpack_patches
from cliplab.models.base import GEOMETRIES, Model

#: text padding each architecture was trained with ("longest" unless listed)
TEXT_PADDING = {"siglip": "max_length", "siglip2": "max_length"}
#: image-processor class written by ``save`` for each architecture
PROCESSOR_CLASS = {"siglip": "SiglipImageProcessor", "siglip2": "Siglip2ImageProcessor"}
PREPROCESSOR_FILE = "preprocessor_config.json"


#: how text features pool the text tower, from the checkpoint's ``config.cliplab["text_pooling"]``: "model" (the
#: architecture's own ``get_text_features``) or "mean" (attention-masked mean of the last hidden states, then
#: ``text_projection``: how sentence-transformers encoders such as MiniLM were trained to be used)
TEXT_POOLINGS = ("model", "mean")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``Σ_t m_t·h_t / Σ_t m_t`` over the tokens of each text (padding excluded)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output object (transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find pooled features in {type(output).__name__}")
    return pooled


class HFModel(Model):
    """A ``transformers`` two-tower model with its tokenizer and preprocessing."""

    can_save = True
    can_train = True
    #: a transformers two-tower model (``CLIPModel``, ``SiglipModel``, ...); the families share the tower methods
    #: (``get_image_features``, ``get_text_features``, ``text_model``, ...) without a common typed base
    module: Any

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Any,
        preprocess: Preprocess,
        *,
        spec: str = "<in-memory>",
        geometry: str | None = None,
    ):
        for attr in ("get_image_features", "get_text_features", "logit_scale"):
            if not hasattr(module, attr):
                raise TypeError(
                    f"{type(module).__name__} is not a CLIP-family model: it has no {attr!r} "
                    "(cliplab needs get_image_features, get_text_features and logit_scale)"
                )
        self.module = module
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.spec = spec
        meta = getattr(module.config, "cliplab", None) or {}
        self.geometry = geometry or meta.get("geometry", "cosine")
        if getattr(module, "logit_bias", None) is None and meta.get("logit_bias") is not None:
            # a bias trained onto an architecture without one (e.g. SigLIP loss on a CLIPModel) lives in the config
            module.logit_bias = nn.Parameter(torch.tensor([float(meta["logit_bias"])]))
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry {self.geometry!r}; expected one of {GEOMETRIES}")
        self.text_pooling = meta.get("text_pooling", "model")
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(
                f"unknown text_pooling {self.text_pooling!r} in the config; expected one of {TEXT_POOLINGS}"
            )
        self.model_type = getattr(module.config, "model_type", "")
        text_cfg = getattr(module.config, "text_config", module.config)
        self.max_length = int(getattr(text_cfg, "max_position_embeddings", 77))
        tok_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < self.max_length:
            self.max_length = tok_max
        self.padding = TEXT_PADDING.get(self.model_type, "longest")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, spec: str | None = None, device: str | None = None) -> HFModel:
        """Load model, tokenizer and preprocessing from a local directory or a Hub id."""
        from transformers import AutoModel, AutoTokenizer

        module = AutoModel.from_pretrained(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        preprocess = _load_preprocess(name_or_path, module)
        model = cls(module.eval(), tokenizer, preprocess, spec=spec or str(name_or_path))
        if device is not None:
            model.to(device)
        return model

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts),
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``get_image_features`` of a pixel batch, or of a packed ``PatchPreprocess`` batch (NaFlex inputs)."""
        if isinstance(self.preprocess, PatchPreprocess):
            return _pooled(self.module.get_image_features(**unpack_patches(pixel_values)))
        return _pooled(self.module.get_image_features(pixel_values=pixel_values))

    def text_embeddings(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.text_pooling == "mean":
            hidden = self.module.text_model(**tokens).last_hidden_state
            return self.module.text_projection(mean_pool(hidden, tokens["attention_mask"]))
        return _pooled(self.module.get_text_features(**tokens))

    def token_embeddings(self) -> nn.Module:
        """The text model's ``get_input_embeddings()`` (``text_model`` of CLIP, SigLIP, dual encoders)."""
        text_model = getattr(self.module, "text_model", None)
        for owner in (text_model, self.module):
            get = getattr(owner, "get_input_embeddings", None)
            if get is None:
                continue
            try:
                emb = get()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(emb, nn.Module):
                return emb
        raise NotImplementedError(f"{type(self.module).__name__} does not expose its text token embeddings")

    @property
    def has_token_embeddings(self) -> bool:
        try:
            self.token_embeddings()
        except NotImplementedError:
            return False
        return True

    def _identity(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "vocab": _vocab_hash(self.tokenizer),
            "max_length": self.max_length,
            "padding": self.padding,
            "text_pooling": self.text_pooling,
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Write a Hugging Face directory (weights, config, tokenizer, preprocessor), atomically."""
        with atomic_dir(directory) as tmp:
            config = self.module.config
            config.cliplab = {**(getattr(config, "cliplab", None) or {}), "geometry": self.geometry}
            self.module.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            proc = self.preprocess.to_hf_config(PROCESSOR_CLASS.get(self.model_type, "CLIPImageProcessor"))
            (Path(tmp) / PREPROCESSOR_FILE).write_text(json.dumps(proc, indent=2))


def _vocab_hash(tokenizer: Any) -> str:
    import hashlib

    try:
        items = sorted(tokenizer.get_vocab().items())
    except (AttributeError, NotImplementedError):
        items = [("size", len(tokenizer))]
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def _load_preprocess(name_or_path: str, module: nn.Module) -> Preprocess:
    path = Path(name_or_path)
    cfg_file: str | None
    if path.is_dir():
        cfg_file = str(path / PREPROCESSOR_FILE) if (path / PREPROCESSOR_FILE).is_file() else None
    else:
        from transformers.utils import cached_file

        cfg_file = cached_file(name_or_path, PREPROCESSOR_FILE, _raise_exceptions_for_missing_entries=False)
    if cfg_file is not None:
        return Preprocess.from_hf_config(json.loads(Path(cfg_file).read_text()))
    size = int(getattr(getattr(module.config, "vision_config", None), "image_size", 224))
    warnings.warn(
        f"{name_or_path} has no {PREPROCESSOR_FILE}; using resize {size} + centre crop with OpenAI mean/std",
        stacklevel=3,
    )
    return Preprocess(resize=size, crop=(size, size), mean=OPENAI_MEAN, std=OPENAI_STD)
