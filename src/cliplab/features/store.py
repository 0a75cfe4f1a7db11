"""``Features``: embeddings of a dataset plus labels, captions and provenance, saved as safetensors + JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplab._io import atomic_path
from cliplab._validation import as_features, as_labels

FORMAT_VERSION = 1
_META_KEY = "cliplab"


@dataclass
class Features:
    """Cached embeddings of one dataset under one model.

    ``images [N, D]``; optional ``labels [N]`` into ``classnames``; optional caption embeddings
    ``texts [M, D]`` with ``text_to_image [M]`` and the caption strings ``captions``; ``meta`` records
    the model spec and fingerprint, the dataset fingerprint and the preprocessing.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classnames: list[str] | None = None
    texts: torch.Tensor | None = None
    text_to_image: torch.Tensor | None = None
    captions: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = as_features(self.images, "image features")
        n, d = self.images.shape
        if self.labels is not None:
            self.labels = as_labels(
                self.labels, "labels", n=n, num_classes=len(self.classnames) if self.classnames else None
            )
        if self.texts is not None:
            self.texts = as_features(self.texts, "text features", dim=d)
            if self.text_to_image is None:
                raise ValueError("text features need text_to_image (the image index of each caption)")
            self.text_to_image = as_labels(self.text_to_image, "text_to_image", n=self.texts.shape[0], num_classes=n)
            if self.captions is not None and len(self.captions) != self.texts.shape[0]:
                raise ValueError(f"{len(self.captions)} captions for {self.texts.shape[0]} text features")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def dim(self) -> int:
        return int(self.images.shape[1])

    def subset(self, indices: Any) -> Features:
        """Rows ``indices`` (captions follow their images, re-indexed)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
        kw: dict[str, Any] = {
            "images": self.images[idx],
            "labels": None if self.labels is None else self.labels[idx],
        }
        if self.texts is not None and self.text_to_image is not None:
            position = torch.full((len(self),), -1, dtype=torch.int64)
            position[idx] = torch.arange(idx.numel())
            keep = torch.nonzero(position[self.text_to_image] >= 0).reshape(-1)
            kw["texts"] = self.texts[keep]
            kw["text_to_image"] = position[self.text_to_image[keep]]
            kw["captions"] = None if self.captions is None else [self.captions[i] for i in keep.tolist()]
        else:
            kw.update(texts=None, text_to_image=None, captions=None)
        return replace(self, **kw, meta={**self.meta, "subset_of": self.meta.get("key")})

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.safetensors`` file (tensors + a JSON header), atomically."""
        from safetensors.torch import save_file

        tensors = {"images": self.images.contiguous()}
        for name in ("labels", "texts", "text_to_image"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.contiguous()
        header = {
            "format_version": FORMAT_VERSION,
            "classnames": self.classnames,
            "captions": self.captions,
            "meta": self.meta,
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Features:
        """Read what ``save`` wrote; a missing, truncated or foreign file raises ``ValueError`` naming it."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"features file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = json.loads((fh.metadata() or {})[_META_KEY])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except (KeyError, OSError, ValueError, RuntimeError, SafetensorError) as err:
            raise ValueError(f"{path} is not a readable cliplab features file: {err}") from err
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has features format {header.get('format_version')}, expected {FORMAT_VERSION}")
        return cls(
            images=tensors["images"],
            labels=tensors.get("labels"),
            classnames=header.get("classnames"),
            texts=tensors.get("texts"),
            text_to_image=tensors.get("text_to_image"),
            captions=header.get("captions"),
            meta=header.get("meta", {}),
        )

    def __repr__(self) -> str:
        parts = [f"images={tuple(self.images.shape)}"]
        if self.labels is not None:
            parts.append(f"classes={len(self.classnames or [])}")
        if self.texts is not None:
            parts.append(f"texts={tuple(self.texts.shape)}")
        return f"Features({', '.join(parts)}, model={self.meta.get('model')!r})"
