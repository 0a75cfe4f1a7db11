"""The model interface: two towers, a logit scale and bias, a preprocessing recipe.

``logits = logit_scale · sim(image, text) + logit_bias`` where ``sim`` is the cosine similarity of
L2-normalised features (``geometry="cosine"``) or the negative squared Euclidean distance of raw
features scaled by ``1/√D`` (``geometry="euclidean"``, EuCLIP; ``cliplab.models.geometry``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from cliplab._validation import l2_normalize
from cliplab.imaging.preprocess import ImageInput, PatchPreprocess, Preprocess
from cliplab.models.geometry import feature_logits

GEOMETRIES = ("cosine", "euclidean")
T = TypeVar("T")


def prefetch(make_batch: Callable[[int], T], n_batches: int) -> Iterator[T]:
    """Yield ``make_batch(0..n-1)`` while the next batch is prepared on a background thread.

    Preprocessing (PIL, NumPy) then overlaps with the model's forward pass.
    """
    if n_batches <= 0:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(make_batch, 0)
        for i in range(n_batches):
            batch = future.result()
            if i + 1 < n_batches:
                future = pool.submit(make_batch, i + 1)
            yield batch


def module_fingerprint(module: nn.Module) -> str:
    """A cheap content hash of a module's weights: shapes plus a strided sample and the sum of each tensor."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if flat.numel():
            step = max(1, flat.numel() // 4096)
            sample = flat[::step].float().cpu()
            h.update(sample.numpy().tobytes())
            h.update(repr(float(flat.double().sum())).encode())
    return h.hexdigest()[:16]


class Model:
    """A CLIP-family model. Subclasses implement the tower forwards, tokenisation and saving."""

    spec: str
    preprocess: Preprocess
    geometry: str = "cosine"
    module: nn.Module
    # what ``tokenize`` wraps, for the trainer's token caches (``train.batches``): set by the models that have
    # them (Hugging Face: all three; open_clip: ``tokenizer``); read with ``getattr(model, name, None)`` elsewhere
    #: the text tokenizer (a Hugging Face tokenizer, open_clip's, ...)
    tokenizer: Any
    #: the longest token sequence the text tower takes
    max_length: int | None
    #: how the Hugging Face tokenizer pads a batch: ``"longest"`` or ``"max_length"``
    padding: str | None

    # -- declared capabilities (what the trainer and other tools may rely on) ---------------------
    @property
    def can_save(self) -> bool:
        """``save(directory)`` writes a directory ``load_model`` reads back (default: ``save`` is overridden)."""
        return type(self).save is not Model.save

    #: the tower forwards are differentiable and ``module``'s parameters can be optimised
    can_train: bool = True

    @property
    def has_token_embeddings(self) -> bool:
        """Whether ``token_embeddings()`` gives the text tower's input embedding table (prompt learning)."""
        return False

    def token_embeddings(self) -> nn.Module:
        """The text tower's token-embedding module (an ``nn.Embedding``), when ``has_token_embeddings``."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its token embeddings")

    # -- to implement ---------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw projected image embeddings ``[B, D]`` (differentiable, not normalised)."""
        raise NotImplementedError

    def text_embeddings(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw projected text embeddings ``[B, D]`` (differentiable, not normalised)."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> float:
        """The multiplier ``s`` = ``exp(module.logit_scale)`` (the parameter is stored as a log)."""
        log_scale = self.module.logit_scale
        if not isinstance(log_scale, torch.Tensor):
            raise TypeError(f"{type(self.module).__name__}.logit_scale must be a parameter, got a sub-module")
        return float(log_scale.detach().exp().reshape(-1)[0])

    @property
    def logit_bias(self) -> float | None:
        """The additive bias ``b`` (``module.logit_bias``, e.g. SigLIP), or None."""
        bias = getattr(self.module, "logit_bias", None)
        return None if bias is None else float(bias.detach().reshape(-1)[0])

    def save(self, directory: str | os.PathLike) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def _identity(self) -> dict[str, Any]:
        """What, besides the weights, defines this model's outputs (for cache keys)."""
        return {}

    # -- shared ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        try:
            return next(self.module.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @property
    def embed_dim(self) -> int:
        return int(self.encode_texts(["a"]).shape[1])

    def to(self, device: str | torch.device) -> Self:
        self.module.to(device)
        return self

    def normalize(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Apply the geometry's normalisation (L2 for cosine, identity for Euclidean)."""
        return l2_normalize(embeddings) if self.geometry == "cosine" else embeddings

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Differentiable image features in the model's geometry (used by the trainer)."""
        return self.normalize(self.image_embeddings(pixel_values))

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.normalize(self.text_embeddings(tokens))

    def similarity(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``sim(image, text)``: cosine (dot of normalised features) or ``−‖x − y‖²/D`` (EuCLIP's features scaled
        by ``1/√D``, as in training: ``cliplab.models.geometry``)."""
        return feature_logits(image_features, text_features, 1.0, None, self.geometry)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``logit_scale · sim + logit_bias``: the training objective's logits (``geometry.feature_logits``)."""
        return feature_logits(image_features, text_features, self.logit_scale, self.logit_bias, self.geometry)

    @torch.inference_mode()
    def encode_images(
        self,
        images: Sequence[ImageInput] | torch.Tensor,
        *,
        batch_size: int = 64,
        progress: bool = False,
        num_workers: int | None = None,
        precision: str | None = None,
    ) -> torch.Tensor:
        """Image features ``[N, D]`` (float32, CPU) from PIL images, paths or a preprocessed batch.

        Images are read by ``cliplab.data.make_loader`` with ``num_workers`` threads (None: the available
        cores); ``precision`` ``fp32``/``bf16``/``fp16`` autocast (None: fp16 on CUDA, fp32 elsewhere).
        """
        from cliplab.models.precision import autocast, resolve_precision

        precision = resolve_precision(precision, self.device)
        cuda = self.device.type == "cuda"
        was_training = self.module.training
        self.module.eval()
        try:
            if isinstance(images, torch.Tensor):
                patches = images.ndim == 3 and isinstance(self.preprocess, PatchPreprocess)  # packed NaFlex batch
                if not patches and (images.ndim != 4 or images.shape[1] != 3):
                    raise ValueError(f"a pixel tensor must have shape [B, 3, H, W], got {tuple(images.shape)}")
                chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
                batches: Iterator[torch.Tensor] = iter(chunks)
                n_batches = len(chunks)
            else:
                from cliplab.data.loader import ImageList, make_loader

                loader = make_loader(
                    ImageList(images), self.preprocess, batch_size, num_workers=num_workers, pin_memory=cuda
                )
                batches = (batch["pixel_values"] for batch in loader)
                n_batches = len(loader)
            if n_batches == 0:
                raise ValueError("no images to encode")
            out = []
            for px in tqdm(batches, total=n_batches, disable=not progress, desc="images", unit="batch"):
                with autocast(precision, self.device):
                    out.append(self.image_features(px.to(self.device, non_blocking=cuda)).float().cpu())
            return torch.cat(out)
        finally:
            self.module.train(was_training)

    @torch.inference_mode()
    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: bool = False, precision: str | None = None
    ) -> torch.Tensor:
        """Text features ``[M, D]`` (float32, CPU); ``precision`` as in ``encode_images``."""
        from cliplab.models.precision import autocast, resolve_precision

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, got a single string")
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to encode")
        precision = resolve_precision(precision, self.device)
        was_training = self.module.training
        self.module.eval()
        try:
            out = []
            starts = range(0, len(texts), batch_size)
            for i in tqdm(starts, disable=not progress, desc="texts", unit="batch"):
                tokens = {k: v.to(self.device) for k, v in self.tokenize(texts[i : i + batch_size]).items()}
                with autocast(precision, self.device):
                    out.append(self.text_features(tokens).float().cpu())
            return torch.cat(out)
        finally:
            self.module.train(was_training)

    def fingerprint(self) -> str:
        """Content hash of weights, geometry, tokenisation and preprocessing (the cache key's model part).

        Memoised on the tensors' version counters, so it is recomputed only after the weights change.
        """
        tensors = [*self.module.parameters(), *self.module.buffers()]
        state = (tuple((id(t), t._version) for t in tensors), self.geometry, self.preprocess)
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is not None and cached[0] == state:
            return cached[1]
        ident = {
            "weights": module_fingerprint(self.module),
            "geometry": self.geometry,
            "preprocess": self.preprocess.fingerprint(),
            **self._identity(),
        }
        value = hashlib.sha256(repr(sorted(ident.items())).encode()).hexdigest()[:16]
        self._fingerprint_cache = (state, value)
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, geometry={self.geometry!r}, device={self.device})"
