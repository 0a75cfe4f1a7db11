"""Zero-/few-shot anomaly detectors on CLIP's dense features: WinCLIP, WinCLIP+ and a PatchCore-style baseline.

Estimators: ``fit(normal_images_or_features) -> self``, ``score(images_or_features) -> (image_scores [N],
maps [N, H, W])`` with maps at the model's input resolution (higher = more anomalous). Images are PIL/paths or
a pixel tensor; ``DenseFeatures`` (``cliplab.anomaly.windows.dense_features``) may be passed instead, so one
encoding serves several detectors and shot counts.

- ``WinCLIP`` (Jeong et al., CVPR 2023). Zero-shot (``fit()`` with no images): ``text = [t_normal, t_anomalous]``
  from the compositional prompt ensemble of the object name; ``ascore(f) = softmax(cos(f, text)/τ)[anomalous]``
  with τ = 0.07. Image score: ``ascore`` of the pooled embedding. Map: per window size ``s``, the harmonic
  aggregation of the windows' ``ascore``; the maps of all sizes and the image score (the whole-image scale)
  are combined by their harmonic mean, then bilinearly upsampled.
- ``WinCLIP+`` (``fit(normal_images)``): memories of the reference images' patch embeddings and window
  embeddings of every size; ``vscore(f) = min_m (1 − cos(f, m)) / 2``; the few-shot map is the mean over the
  patch scale and each window size (harmonically aggregated) of ``vscore``; final map ``(zero-shot + few-shot)/2``,
  image score ``(zero-shot image score + max of the few-shot map)/2`` (the paper's Eq. 6; anomalib's
  ``WinClipModel.forward``).
- ``PatchCore`` (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) on CLIP patch
  tokens: a memory of the normal patches' L2-normalised embeddings, optionally subsampled by greedy k-centre
  coreset selection; patch score = Euclidean distance to the nearest memory entry; image score = the maximum
  patch score (the paper's re-weighting and the Gaussian smoothing of the map are left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cliplab.anomaly.prompts import state_embeddings
from cliplab.anomaly.windows import DenseFeatures, dense_features, harmonic_aggregation, window_indices

__all__ = ["PatchCore", "WinCLIP", "greedy_coreset", "nearest_distance"]

Inputs = Sequence[Any] | torch.Tensor | DenseFeatures


def _upsample(grid_maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(grid_maps.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
    return up.squeeze(1).numpy()


def nearest_distance(queries: torch.Tensor, memory: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``[Q]``: the Euclidean distance of each query ``[Q, E]`` to its nearest row of ``memory`` ``[M, E]``."""
    out = []
    for start in range(0, queries.shape[0], chunk):
        out.append(torch.cdist(queries[start : start + chunk].double(), memory.double()).amin(1))
    return torch.cat(out).float() if out else torch.zeros(0)


def greedy_coreset(features: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` rows of ``features`` chosen by greedy k-centre selection (PatchCore's coreset): start at a
    random row, then repeatedly add the row farthest from those chosen."""
    m = features.shape[0]
    if n >= m:
        return torch.arange(m)
    g = torch.Generator().manual_seed(int(seed))
    chosen = [int(torch.randint(m, (1,), generator=g))]
    dist = torch.cdist(features, features[chosen]).squeeze(1)
    for _ in range(n - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, torch.cdist(features, features[nxt : nxt + 1]).squeeze(1))
    return torch.as_tensor(chosen)


class _Dense:
    """Shared plumbing: turning images into ``DenseFeatures`` with this detector's options."""

    def __init__(self, model: Any, scales: Sequence[int], window_features: str, batch_size: int):
        self.model, self.scales = model, tuple(int(s) for s in scales)
        self.window_features, self.batch_size = window_features, int(batch_size)

    def features(self, x: Inputs) -> DenseFeatures:
        if isinstance(x, DenseFeatures):
            missing = [s for s in self.scales if s not in x.windows]
            if missing:
                raise ValueError(f"the features have no windows of size {missing} (they have {sorted(x.windows)})")
            return x
        return dense_features(
            self.model, x, self.scales, window_features=self.window_features, batch_size=self.batch_size
        )


class WinCLIP(_Dense):
    """WinCLIP (zero-shot) and WinCLIP+ (after ``fit`` with normal images); see the module docstring."""

    def __init__(
        self,
        model: Any,
        object_name: str,
        *,
        scales: Sequence[int] = (2, 3),
        temperature: float = 0.07,
        window_features: str = "tokens",
        batch_size: int = 32,
        text: torch.Tensor | None = None,
    ):
        super().__init__(model, scales, window_features, batch_size)
        self.text = text  # precomputed ``state_embeddings(model, object_name)`` [2, E] (None: computed by fit)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.object_name, self.temperature = str(object_name), float(temperature)
        self.text_: torch.Tensor | None = None
        self.memory_: dict[str, torch.Tensor] | None = None

    def fit(self, normal: Inputs | None = None) -> WinCLIP:
        """Encode the prompt ensemble; with normal reference images (or their features), keep their memories."""
        text = self.text if self.text is not None else state_embeddings(self.model, self.object_name)
        self.text_ = F.normalize(text.float().cpu(), dim=-1)
        self.memory_ = None
        if normal is not None and len(normal) > 0:
            f = self.features(normal)
            self.memory_ = {"patches": f.patches.reshape(-1, f.patches.shape[-1])}
            for s in self.scales:
                self.memory_[f"window{s}"] = f.windows[s].reshape(-1, f.windows[s].shape[-1])
        return self

    def _ascore(self, f: torch.Tensor) -> torch.Tensor:
        assert self.text_ is not None
        return torch.softmax((f @ self.text_.T) / self.temperature, dim=-1)[..., 1]

    def _vscore(self, f: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        flat = f.reshape(-1, f.shape[-1])
        best = torch.cat([(flat[i : i + 4096] @ memory.T).amax(1) for i in range(0, flat.shape[0], 4096)])
        return ((1 - best) / 2).view(*f.shape[:-1])

    def score(self, images: Inputs) -> tuple[np.ndarray, np.ndarray]:
        """``(image_scores [N], maps [N, H, W])`` at the model's input size; see the module docstring."""
        if self.text_ is None:
            raise RuntimeError("WinCLIP: call fit() first (fit() with no images for zero-shot)")
        f = self.features(images)
        grid = f.grid
        image = self._ascore(f.image)
        scales = [image.view(-1, 1, 1).expand(-1, *grid)]
        for s in self.scales:
            scales.append(harmonic_aggregation(self._ascore(f.windows[s]), grid, window_indices(grid, s)))
        zero = len(scales) / (1.0 / torch.stack(scales)).sum(0)
        if self.memory_ is None:
            return image.numpy(), _upsample(zero, f.image_size)
        few = [self._vscore(f.patches, self.memory_["patches"]).view(-1, *grid)]
        for s in self.scales:
            v = self._vscore(f.windows[s], self.memory_[f"window{s}"])
            few.append(harmonic_aggregation(v, grid, window_indices(grid, s)))
        few_map = torch.stack(few).mean(0)
        combined = (zero + few_map) / 2
        return ((image + few_map.flatten(1).amax(1)) / 2).numpy(), _upsample(combined, f.image_size)


class PatchCore(_Dense):
    """Nearest-neighbour patch memory on CLIP patch tokens; see the module docstring.

    ``coreset``: the fraction of the normal patches kept (None or 1: all), chosen by ``greedy_coreset``."""

    def __init__(self, model: Any, *, coreset: float | None = None, seed: int = 0, batch_size: int = 32):
        super().__init__(model, (), "mean", batch_size)
        if coreset is not None and not 0 < coreset <= 1:
            raise ValueError(f"coreset must be a fraction in (0, 1], got {coreset}")
        self.coreset, self.seed = coreset, int(seed)
        self.memory_: torch.Tensor | None = None

    def fit(self, normal: Inputs) -> PatchCore:
        """Keep the normal images' patch embeddings (a coreset of them with ``coreset``)."""
        if normal is None or len(normal) == 0:
            raise ValueError("PatchCore needs at least one normal reference image (shots >= 1)")
        f = self.features(normal)
        memory = f.patches.reshape(-1, f.patches.shape[-1])
        if self.coreset is not None and self.coreset < 1:
            memory = memory[greedy_coreset(memory, max(1, round(self.coreset * memory.shape[0])), self.seed)]
        self.memory_ = memory
        return self

    def score(self, images: Inputs) -> tuple[np.ndarray, np.ndarray]:
        """``(image_scores [N], maps [N, H, W])``: max patch distance, and the distances upsampled."""
        if self.memory_ is None:
            raise RuntimeError("PatchCore: call fit(normal_images) first")
        f = self.features(images)
        d = nearest_distance(f.patches.reshape(-1, f.patches.shape[-1]), self.memory_).view(-1, *f.grid)
        return d.flatten(1).amax(1).numpy(), _upsample(d, f.image_size)
