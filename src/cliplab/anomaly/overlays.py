"""Heat-map overlays: an anomaly map blended over its image, the ground-truth outline drawn in white."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

__all__ = ["heatmap_overlay"]


def heatmap_overlay(
    image: Image.Image, anomaly_map: np.ndarray, mask: np.ndarray | None = None, *, vmin: float | None = None,
    vmax: float | None = None, alpha: float = 0.5, scale: int = 1,
) -> Image.Image:  # fmt: skip
    """``image`` blended with ``anomaly_map`` (``[H, W]`` at the image's size) through the ``jet`` colour map,
    scaled to ``[vmin, vmax]`` (default: the map's own range); ``mask``'s outline in white; enlarged ``scale``×."""
    from matplotlib import colormaps

    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    a = np.asarray(anomaly_map, dtype=np.float64)
    if a.shape != rgb.shape[:2]:
        raise ValueError(f"the map is {a.shape} but the image is {rgb.shape[:2]}")
    lo = float(a.min()) if vmin is None else float(vmin)
    hi = float(a.max()) if vmax is None else float(vmax)
    norm = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)
    heat: Any = colormaps["jet"](norm)[..., :3]
    out = (1 - alpha) * rgb + alpha * heat
    if mask is not None and mask.any():
        m = np.asarray(mask, dtype=bool)
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m & ~inner] = 1.0
    img = Image.fromarray((out * 255).round().astype(np.uint8), "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale > 1 else img
