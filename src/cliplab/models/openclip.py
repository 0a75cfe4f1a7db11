"""Optional open_clip backend (``openclip:<arch>/<pretrained-tag>``), used only when open_clip imports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from cliplab.models.base import Model
from cliplab.models.preprocess import Preprocess

INSTALL_HINT = (
    "the openclip: backend needs the optional package open_clip (and torchvision): pip install open_clip_torch"
)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _import_open_clip() -> Any:
    try:
        import open_clip
    except Exception as err:  # ImportError, or torchvision failing to load
        raise ImportError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    return open_clip


class OpenCLIPModel(Model):
    """An open_clip model; preprocessing is rebuilt from its ``preprocess_cfg`` without torchvision.

    It cannot be saved in a form ``load_model`` reads back (``can_save = False``), so the trainer refuses it.
    """

    can_save = False
    can_train = True

    def __init__(self, arch: str, pretrained: str | None, *, spec: str, device: str | None = None):
        open_clip = _import_open_clip()
        module, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        self.module = module.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.spec = spec
        self.arch, self.pretrained = arch, pretrained
        cfg = dict(getattr(module.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        shortest = cfg.get("resize_mode", "shortest") == "shortest"
        self.preprocess = Preprocess(
            resize=size[0] if shortest else size,
            crop=size if shortest else None,
            mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
            resample=_RESAMPLE.get(cfg.get("interpolation", "bicubic"), Image.Resampling.BICUBIC),
        )
        if device is not None:
            self.to(device)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.module.encode_image(pixel_values)

    def text_embeddings(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module.encode_text(tokens["input_ids"])

    def token_embeddings(self) -> torch.nn.Module:
        emb = getattr(self.module, "token_embedding", None)
        if not isinstance(emb, torch.nn.Module):
            raise NotImplementedError(f"open_clip model {self.arch} has no token_embedding (e.g. a HF text tower)")
        return emb

    @property
    def has_token_embeddings(self) -> bool:
        return isinstance(getattr(self.module, "token_embedding", None), torch.nn.Module)

    def _identity(self) -> dict[str, Any]:
        return {"open_clip": f"{self.arch}/{self.pretrained}"}
