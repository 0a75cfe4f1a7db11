"""Dense features for anomaly detection: the class token, the projected patch tokens, and multi-scale window
embeddings on the patch grid (WinCLIP, Jeong et al., CVPR 2023, Sec. 4.2).

A window of ``k × k`` patches at every position of the ``gh × gw`` grid (stride 1) is embedded by the image
tower itself on the *masked* token sequence: the class token and the window's patch tokens (with their
positional embeddings) go through every block and the tower's pooling, as in the paper and anomalib's
``WinClipModel._get_window_embeddings`` (``window_features="tokens"``). ``window_features="mean"`` is the cheap
approximation: the mean of the window's projected patch tokens (no extra forward).

``harmonic_aggregation``: the score of patch ``p`` is the harmonic mean of the scores of the windows covering
it, ``s_p = |W(p)| / Σ_{w ∈ W(p)} 1/s_w`` (the paper's Eq. 4; anomalib's ``harmonic_aggregation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cliplab.towers import vit_tower
from cliplab.towers.internals import pixels_for, pool, project, run_block, run_tower

__all__ = ["WINDOW_FEATURES", "DenseFeatures", "dense_features", "harmonic_aggregation", "window_indices"]

WINDOW_FEATURES = ("tokens", "mean")


def window_indices(grid: tuple[int, int], size: int, stride: int = 1) -> torch.Tensor:
    """``[n_windows, size²]`` raster indices of the patches of every ``size × size`` window on ``grid``."""
    gh, gw = grid
    if not 1 <= size <= min(gh, gw):
        raise ValueError(f"window size {size} must be between 1 and the patch grid's side {min(gh, gw)}")
    idx = torch.arange(gh * gw).view(gh, gw)
    rows = [
        idx[r : r + size, c : c + size].reshape(-1)
        for r in range(0, gh - size + 1, stride)
        for c in range(0, gw - size + 1, stride)
    ]
    return torch.stack(rows)


def harmonic_aggregation(scores: torch.Tensor, grid: tuple[int, int], windows: torch.Tensor) -> torch.Tensor:
    """Window scores ``[B, n_windows]`` → per-patch harmonic means ``[B, gh, gw]`` (see the module docstring).

    A patch no window covers (stride > 1) gets 0."""
    b = scores.shape[0]
    n = grid[0] * grid[1]
    inv = torch.zeros(b, n, dtype=scores.dtype, device=scores.device)
    count = torch.zeros(n, dtype=scores.dtype, device=scores.device)
    w = windows.to(scores.device)
    inv.index_add_(1, w.reshape(-1), (1.0 / scores).repeat_interleave(w.shape[1], dim=1))
    count.index_add_(0, w.reshape(-1), torch.ones(w.numel(), dtype=scores.dtype, device=scores.device))
    out = torch.where(count > 0, count / inv.clamp_min(1e-12), torch.zeros_like(inv))
    return out.view(b, *grid)


@dataclass
class DenseFeatures:
    """L2-normalised embeddings of a batch of images: ``image`` ``[B, E]`` (the pooled embedding), ``patches``
    ``[B, N, E]`` (``N = gh·gw``) and ``windows[s]`` ``[B, n_windows(s), E]`` for each window size in ``scales``.
    ``image_size`` is the model's input (H, W)."""

    image: torch.Tensor
    patches: torch.Tensor
    windows: dict[int, torch.Tensor]
    grid: tuple[int, int]
    image_size: tuple[int, int]
    window_features: str

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def select(self, indices: Sequence[int]) -> DenseFeatures:
        """The features of ``indices`` only."""
        i = torch.as_tensor(list(indices), dtype=torch.long)
        return DenseFeatures(
            self.image[i], self.patches[i], {s: w[i] for s, w in self.windows.items()}, self.grid, self.image_size,
            self.window_features,
        )  # fmt: skip


def _window_tokens(tower: Any, tokens: torch.Tensor, windows: torch.Tensor, chunk: int) -> torch.Tensor:
    """The tower's pooled embedding of each window's masked sequence: ``[B, n_windows, E]``."""
    b = tokens.shape[0]
    prefix = tokens[:, : tower.n_prefix]
    patches = tokens[:, tower.n_prefix :]
    out = []
    for start in range(0, windows.shape[0], chunk):
        w = windows[start : start + chunk].to(tokens.device)  # [c, k²]
        sel = patches[:, w]  # [B, c, k², D]
        c = w.shape[0]
        seq = torch.cat([prefix.unsqueeze(1).expand(b, c, *prefix.shape[1:]), sel], dim=2).flatten(0, 1)
        x = seq
        for block in tower.blocks:
            x, _ = run_block(block, x)
        out.append(pool(tower, x).view(b, c, -1))
    return torch.cat(out, dim=1)


def dense_features(
    model: Any,
    images: Sequence[Any] | torch.Tensor,
    scales: Sequence[int] = (2, 3),
    *,
    window_features: str = "tokens",
    batch_size: int = 32,
    window_chunk: int = 64,
) -> DenseFeatures:
    """Encode ``images`` (PIL/paths through ``model.preprocess``, or a pixel tensor at the model's resolution)
    into ``DenseFeatures``, in batches of ``batch_size``; fp32, no gradients. Features stay in memory (no disk
    cache: ``cliplab.features`` caches pooled embeddings only)."""
    if window_features not in WINDOW_FEATURES:
        raise ValueError(f"window_features must be one of {', '.join(WINDOW_FEATURES)}, got {window_features!r}")
    tower = vit_tower(model)
    grid = tower.grid
    win = {int(s): window_indices(grid, int(s)) for s in scales}
    n = images.shape[0] if isinstance(images, torch.Tensor) else len(images)
    if n == 0:
        raise ValueError("no images given")
    module = getattr(model, "module", model)
    was = module.training
    module.eval()
    parts: dict[str, list[torch.Tensor]] = {"image": [], "patches": []}
    wparts: dict[int, list[torch.Tensor]] = {s: [] for s in win}
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = images[start : start + batch_size]
                px = pixels_for(model, batch if isinstance(batch, torch.Tensor) else list(batch), tower)
                t = run_tower(tower, px)
                parts["image"].append(F.normalize(t.pooled.float(), dim=-1).cpu())
                raw = t.patch_tokens()
                if tower.pooling == "class-token":
                    proj = project(tower, tower.ln_post(raw))
                else:
                    assert tower.head is not None
                    b, m, d = raw.shape
                    proj = project(tower, tower.head(tower.ln_post(raw).reshape(b * m, 1, d))).reshape(b, m, -1)
                for s, w in win.items():
                    if window_features == "tokens":
                        emb = _window_tokens(tower, t.residual[0], w, window_chunk)
                    else:
                        emb = proj[:, w.to(proj.device)].mean(2)
                    wparts[s].append(F.normalize(emb.float(), dim=-1).cpu())
                parts["patches"].append(F.normalize(proj.float(), dim=-1).cpu())
    finally:
        module.train(was)
    return DenseFeatures(
        torch.cat(parts["image"]), torch.cat(parts["patches"]), {s: torch.cat(v) for s, v in wparts.items()}, grid,
        tower.image_size, window_features,
    )  # fmt: skip
