"""Image corruptions with severities 1–5, in the spirit of ImageNet-C (Hendrycks & Dietterich, 2019).

``corrupt(image, name, severity, rng)`` takes and returns an ``(H, W, 3)`` uint8 array. Only NumPy,
Pillow and SciPy are used. Parameters come from per-corruption tables indexed by severity, so a higher
severity is always a stronger corruption; spatial parameters (blur radii, displacements) are given
for 64-pixel images and scale with the image size. Where ImageNet-C's table is not monotone
(``saturate`` mixes de- and over-saturation) ours desaturates monotonically.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

#: the accepted severities
SEVERITIES = (1, 2, 3, 4, 5)

# Parameter tables, one entry per severity 1..5.
_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std on [0, 1]
_SHOT_NOISE = (60.0, 25.0, 12.0, 5.0, 3.0)  # photons per unit intensity
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of salt-and-pepper values
_SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # std of the multiplicative noise
_GAUSSIAN_BLUR = (0.5, 0.8, 1.1, 1.5, 2.0)  # sigma in pixels at 64 px
_DEFOCUS_BLUR = (1.0, 1.5, 2.0, 2.5, 3.2)  # disk radius in pixels at 64 px
_ZOOM_BLUR = ((1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.02), (1.0, 1.26, 0.02), (1.0, 1.31, 0.03))
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # remaining contrast
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to the HSV value
_SATURATE = (0.7, 0.5, 0.3, 0.15, 0.05)  # remaining HSV saturation
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # down-sampling factor
_JPEG = (25, 18, 15, 10, 7)  # JPEG quality
_FOG = ((0.4, 2.0), (0.6, 2.0), (0.8, 1.8), (1.0, 1.7), (1.3, 1.6))  # (strength, octave decay); milder than ImageNet-C
_ELASTIC = (1.0, 1.6, 2.3, 3.2, 4.2)  # maximum displacement in pixels at 64 px


def _scale(x: np.ndarray) -> float:
    return min(x.shape[0], x.shape[1]) / 64.0


def _gaussian_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(size=x.shape, scale=_GAUSSIAN_NOISE[s]).astype(np.float32)


def _shot_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = _SHOT_NOISE[s]
    return rng.poisson(x * c).astype(np.float32) / c


def _impulse_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(x.shape)
    amount = _IMPULSE_NOISE[s]
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


def _speckle_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return x + x * rng.normal(size=x.shape, scale=_SPECKLE_NOISE[s]).astype(np.float32)


def _gaussian_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sigma = _GAUSSIAN_BLUR[s] * _scale(x)
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")


def _disk(radius: float, supersample: int = 4) -> np.ndarray:
    """An anti-aliased, normalised disk kernel."""
    half = int(np.ceil(radius))
    ticks = (np.arange((2 * half + 1) * supersample) + 0.5) / supersample - half - 0.5
    yy, xx = np.meshgrid(ticks, ticks, indexing="ij")
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    k = inside.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).mean(axis=(1, 3))
    return k / k.sum()


def _defocus_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    k = _disk(_DEFOCUS_BLUR[s] * _scale(x))
    return ndimage.correlate(x, k[:, :, None], mode="reflect")


def _zoom_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    start, stop, step = _ZOOM_BLUR[s]
    img = Image.fromarray(_to_uint8(x))
    out = x.copy()
    zooms = np.arange(start, stop, step)
    for z in zooms:
        zh, zw = int(np.ceil(h * z)), int(np.ceil(w * z))
        top, left = (zh - h) // 2, (zw - w) // 2
        big = img.resize((zw, zh), Image.Resampling.BILINEAR).crop((left, top, left + w, top + h))
        out += np.asarray(big, dtype=np.float32) / 255.0
    return out / (len(zooms) + 1)


def _contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean()
    return (x - mean) * _CONTRAST[s] + mean


def _brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # HSV value + c with hue and saturation kept: every channel scales by v'/v (grey where v = 0).
    v = x.max(axis=2, keepdims=True)
    v_new = np.minimum(v + _BRIGHTNESS[s], 1.0)
    ratio = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    return np.where(v > 0, x * ratio, v_new)


def _saturate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # HSV saturation × f with hue and value kept: each channel moves towards the value v.
    v = x.max(axis=2, keepdims=True)
    return v - (v - x) * _SATURATE[s]


def _pixelate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    img = Image.fromarray(_to_uint8(x))
    small = img.resize((max(1, round(w * _PIXELATE[s])), max(1, round(h * _PIXELATE[s]))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST), dtype=np.float32) / 255.0


def _jpeg_compression(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(x)).save(buf, format="JPEG", quality=_JPEG[s])
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _low_frequency_noise(rng: np.random.Generator, h: int, w: int, decay: float) -> np.ndarray:
    """Plasma-like noise in [0, 1]: bicubically upsampled random grids, coarse octaves strongest."""
    out = np.zeros((h, w), dtype=np.float32)
    amp = 1.0
    for cells in (2, 4, 8, 16):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC))
        amp /= decay
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _fog(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = _FOG[s]
    max_val = float(x.max())
    fog = _low_frequency_noise(rng, x.shape[0], x.shape[1], decay)
    return (x + strength * fog[:, :, None]) * max_val / (max_val + strength)


def _elastic_transform(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    scale = _scale(x)
    fields = []
    for _ in range(2):
        f = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma=3.0 * scale, mode="reflect")
        fields.append(f / max(float(np.abs(f).max()), 1e-6) * _ELASTIC[s] * scale)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [yy + fields[0], xx + fields[1]]
    return np.stack([ndimage.map_coordinates(x[:, :, c], coords, order=1, mode="reflect") for c in range(3)], axis=2)


_FUNCS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "zoom_blur": _zoom_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "saturate": _saturate,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "fog": _fog,
    "elastic_transform": _elastic_transform,
}

#: names accepted by ``corrupt`` (and by ``shapes(corruption=...)``)
CORRUPTIONS: tuple[str, ...] = tuple(_FUNCS)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_corruption(name: str, severity: int) -> None:
    """Raise ``ValueError`` unless ``name`` is in ``CORRUPTIONS`` and ``severity`` in 1..5."""
    if name not in _FUNCS:
        raise ValueError(f"unknown corruption {name!r}; accepted: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")


def corrupt(image: np.ndarray, name: str, severity: int = 3, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1 = mild … 5 = strong) to an ``(H, W, 3)`` uint8 image.

    ``rng`` drives the random corruptions (noise, fog, elastic); ``None`` means a fixed seed (0).
    Returns a new ``(H, W, 3)`` uint8 array; the input is not modified.
    """
    check_corruption(name, severity)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    if rng is None:
        rng = np.random.default_rng(0)
    x = arr.astype(np.float32) / 255.0
    return _to_uint8(_FUNCS[name](x, int(severity) - 1, rng))
