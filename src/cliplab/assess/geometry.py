"""Embedding geometry of a two-tower model: the modality gap, alignment and uniformity, effective rank.

* **Modality gap** (Liang et al., "Mind the Gap", NeurIPS 2022): on L2-normalised features, the distance between
  the image centroid and the text centroid, ``‖μ_I − μ_T‖``, and the share of the pooled features' variance that
  lies along the gap direction ``g = (μ_I − μ_T)/‖μ_I − μ_T‖``: ``Var(⟨z, g⟩) / tr Cov(z)`` over the images and
  texts together — the paper's observation is that the two modalities sit in separate cones, so this share is
  far above ``1/D``.
* **Alignment and uniformity** (Wang & Isola, ICML 2020): ``align = E_pairs ‖x − y‖^α`` (α = 2) over matching
  image–caption pairs (lower is better), ``uniform = log E_{i≠j} exp(−t‖x_i − x_j‖²)`` (t = 2) per modality
  (lower = more uniform on the sphere).
* **Effective rank** (Roy & Vetterli, EUSIPCO 2007): ``exp(H(p))`` with ``p_k = σ_k / Σ σ_j`` the normalised
  singular values of the (centred) feature matrix; between 1 and D.
* **Closing the gap by centring**: subtract each modality's own mean and L2-normalise again, then retrieval
  recall@k before and after (the gap removed, as in Liang et al.'s shift experiment).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["alignment", "center_modalities", "effective_rank", "embedding_geometry", "modality_gap", "uniformity"]


def _f(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [N, D] matrix, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("features contain NaN or infinite values")
    return t


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def modality_gap(image_features: Any, text_features: Any) -> dict[str, float]:
    """``gap = ‖μ_I − μ_T‖`` on normalised features and ``gap_variance_share`` (see the module docstring).

    Also ``centroid_cosine`` (cosine between the two centroids) and ``chance_share = 1/D`` for reference.
    """
    x, y = _unit(_f(image_features)), _unit(_f(text_features))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"image features are {x.shape[1]}-d but text features {y.shape[1]}-d")
    mu_i, mu_t = x.mean(0), y.mean(0)
    diff = mu_i - mu_t
    gap = float(diff.norm())
    z = torch.cat([x, y])
    zc = z - z.mean(0)
    total = float(zc.square().sum(1).mean())
    share = float((zc @ (diff / diff.norm().clamp_min(1e-12))).square().mean() / total) if total > 0 else float("nan")
    cos = float(mu_i @ mu_t / (mu_i.norm() * mu_t.norm()).clamp_min(1e-12))
    return {"gap": gap, "gap_variance_share": share, "centroid_cosine": cos, "chance_share": 1.0 / x.shape[1]}


def alignment(x: Any, y: Any, alpha: float = 2.0) -> float:
    """Wang & Isola's alignment ``E ‖x_i − y_i‖^α`` over rows (matching pairs) of normalised features."""
    a, b = _unit(_f(x)), _unit(_f(y))
    if a.shape != b.shape:
        raise ValueError(f"alignment needs paired rows, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(x: Any, t: float = 2.0, *, max_samples: int = 1000, seed: int = 0) -> float:
    """Wang & Isola's uniformity ``log E_{i≠j} exp(−t ‖x_i − x_j‖²)`` of normalised features.

    Above ``max_samples`` rows a fixed random subset (``seed``) is used (the pairwise cost is quadratic).
    """
    a = _unit(_f(x))
    if a.shape[0] < 2:
        raise ValueError("uniformity needs at least two feature vectors")
    if a.shape[0] > max_samples:
        a = a[torch.from_numpy(np.random.default_rng(seed).choice(a.shape[0], max_samples, replace=False))]
    d2 = torch.cdist(a, a).square()
    n = a.shape[0]
    off = d2[~torch.eye(n, dtype=torch.bool)]
    return float(torch.logsumexp(-t * off, 0) - np.log(off.numel()))


def effective_rank(x: Any, *, center: bool = True) -> float:
    """Roy & Vetterli's effective rank ``exp(−Σ p_k log p_k)``, ``p = σ / Σσ`` (singular values of the features,
    centred by default so that the modality's mean offset is not counted as a direction)."""
    a = _f(x)
    if center:
        a = a - a.mean(0)
    s = torch.linalg.svdvals(a)
    s = s[s > s.max() * 1e-12] if s.numel() and s.max() > 0 else s
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def center_modalities(image_features: Any, text_features: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Each modality minus its own mean (of normalised features), normalised again: the gap closed."""
    x, y = _unit(_f(image_features)), _unit(_f(text_features))
    return _unit(x - x.mean(0)).float(), _unit(y - y.mean(0)).float()


def embedding_geometry(
    image_features: Any, text_features: Any, text_to_image: Any | None = None, *, ks: tuple[int, ...] = (1, 5)
) -> dict[str, Any]:
    """Everything above for one set of features: gap, uniformity and effective rank per modality, and — with
    ``text_to_image`` (the image of each caption) — alignment and retrieval recall@k before/after centring."""
    out: dict[str, Any] = dict(modality_gap(image_features, text_features))
    out["uniformity"] = {"image": uniformity(image_features), "text": uniformity(text_features)}
    out["effective_rank"] = {"image": effective_rank(image_features), "text": effective_rank(text_features)}
    out["dim"] = int(_f(image_features).shape[1])
    if text_to_image is not None:
        from cliplab.metrics import retrieval

        t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.int64)
        x, y = _unit(_f(image_features)).float(), _unit(_f(text_features)).float()
        out["alignment"] = alignment(x[t2i], y)
        xc, yc = center_modalities(x, y)
        before, after = retrieval(x, y, t2i, ks=ks), retrieval(xc, yc, t2i, ks=ks)
        out["retrieval"] = {"raw": dict(before), "centred": dict(after)}
        out["gap_after_centring"] = modality_gap(xc, yc)["gap"]
    return out
