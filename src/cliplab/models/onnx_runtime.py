"""Models exported to ONNX (``cliplab export MODEL -o DIR --format onnx``), run by ``onnxruntime``: ``onnx:DIR``.

A directory holds ``image_encoder.onnx`` (``pixel_values [B, 3, H, W]`` → raw image embeddings ``[B, D]``),
``text_encoder.onnx`` (``input_ids`` (+ ``attention_mask``) ``[B, T]`` → raw text embeddings ``[B, D]``), the
tokenizer's Hugging Face files, ``preprocessor_config.json`` and ``cliplab_onnx.json`` (geometry, logit scale and
bias, cliplab's exact preprocessing recipe, tokenisation length and padding). Inference only: no gradients,
``can_train`` is False, and there is nothing to save (export again instead).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cliplab.imaging.preprocess import Preprocess
from cliplab.models.base import GEOMETRIES, Model

INSTALL_HINT = "the onnx: model source needs onnxruntime: pip install onnxruntime (or pip install 'cliplab[onnx]')"
MANIFEST = "cliplab_onnx.json"
IMAGE_FILE, TEXT_FILE = "image_encoder.onnx", "text_encoder.onnx"
FORMAT_VERSION = 1


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return onnxruntime


def check_onnx(target: str, spec: str) -> None:
    """What loading ``onnx:<target>`` would refuse, without loading: the directory and its files."""
    if not target:
        raise ValueError(f"model spec {spec!r}: the onnx: prefix needs a directory written by `cliplab export`")
    path = Path(target).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model spec {spec!r}: no directory {path}")
    missing = [f for f in (MANIFEST, IMAGE_FILE, TEXT_FILE) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"model spec {spec!r}: {path} lacks {', '.join(missing)}, so it is not an ONNX export of cliplab "
            "(write one with: cliplab export MODEL -o DIR --format onnx)"
        )


def load_onnx(target: str, *, spec: str, device: str | None = None) -> OnnxModel:
    """The ``onnx:`` model source's loader."""
    check_onnx(target, spec)
    return OnnxModel(target, spec=spec, device=device)


class OnnxModel(Model):
    """Two ONNX encoders run by ``onnxruntime``, with the exported tokenizer and preprocessing."""

    can_train = False

    @property
    def can_save(self) -> bool:
        return False

    def __init__(self, directory: str | os.PathLike, *, spec: str | None = None, device: str | None = None):
        ort = _import_onnxruntime()
        path = Path(directory).expanduser()
        manifest_file = path / MANIFEST
        try:
            meta = json.loads(manifest_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{manifest_file} is not valid JSON: {err}") from err
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{manifest_file}: format {meta.get('format')!r}, this cliplab reads {FORMAT_VERSION}")
        self.directory, self.spec = path, spec or f"onnx:{path}"
        self.geometry = str(meta.get("geometry", "cosine"))
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"{manifest_file}: unknown geometry {self.geometry!r}; expected one of {GEOMETRIES}")
        self.preprocess = Preprocess(**meta["preprocess"])
        self._logit_scale = float(meta["logit_scale"])
        self._logit_bias = None if meta.get("logit_bias") is None else float(meta["logit_bias"])
        self.max_length = int(meta["max_length"])
        self.padding = str(meta.get("padding", "max_length"))
        self.text_inputs: list[str] = list(meta["text_inputs"])
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.module = nn.Module()  # no weights in torch: the encoders live in the sessions
        providers = ["CPUExecutionProvider"]
        if device is not None and str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(f"device {device!r}: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share as torch (torch.set_num_threads)
        self.image_session = ort.InferenceSession(str(path / IMAGE_FILE), options, providers=providers)
        self.text_session = ort.InferenceSession(str(path / TEXT_FILE), options, providers=providers)
        digest = hashlib.sha256()
        for name in (IMAGE_FILE, TEXT_FILE, MANIFEST):
            digest.update((path / name).read_bytes())
        self._digest = digest.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # inputs are handed to onnxruntime as NumPy arrays

    def to(self, device: str | torch.device) -> OnnxModel:
        if torch.device(device).type != "cpu":
            raise ValueError(
                f"an onnx: model is placed when loaded (load_model(spec, device=...)), not moved to {device}"
            )
        return self

    @property
    def logit_scale(self) -> float:
        return self._logit_scale

    @property
    def logit_bias(self) -> float | None:
        return self._logit_bias

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: tokens[k] for k in self.text_inputs}

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        px = pixel_values.detach().cpu().float().numpy()  # float32 in and out, fp16 exports included
        (out,) = self.image_session.run(None, {"pixel_values": px})
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def text_embeddings(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {k: tokens[k].detach().cpu().numpy().astype(np.int64) for k in self.text_inputs}
        (out,) = self.text_session.run(None, feeds)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def _identity(self) -> dict[str, Any]:
        return {"onnx": self._digest}

    def fingerprint(self) -> str:
        ident = {"geometry": self.geometry, "preprocess": self.preprocess.fingerprint(), "onnx": self._digest}
        return hashlib.sha256(repr(sorted(ident.items())).encode()).hexdigest()[:16]
