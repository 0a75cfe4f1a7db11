"""Image preprocessing without torchvision: resize, centre-crop, rescale, normalise.

Mirrors the Hugging Face ``CLIPImageProcessor`` / ``SiglipImageProcessor`` semantics (PIL resampling
on uint8 images, ``shortest_edge`` or exact ``height``/``width`` resize, centre crop, ``x·rescale``,
``(x − mean) / std``) so a checkpoint's ``preprocessor_config.json`` gives the same tensors.

``PatchPreprocess`` is the variable-resolution (NaFlex) form of SigLIP 2's ``Siglip2ImageProcessor``: each
image keeps its aspect ratio, becomes a sequence of at most ``max_num_patches`` flattened patches, and a
batch is one packed tensor (see ``PatchPreprocess.batch``) that the data loader and caches handle like
pixels; ``unpack_patches`` gives the model its ``pixel_values``, ``pixel_attention_mask`` and
``spatial_shapes``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from cliplab.imaging.decoding import decode_image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

ImageInput = Image.Image | str | os.PathLike


def load_image(source: ImageInput) -> Image.Image:
    """Open an image (PIL or path) as RGB; a missing, corrupt or too-large file raises naming the file."""
    return decode_image(source)


@dataclass(frozen=True)
class Preprocess:
    """PIL image → float tensor ``[3, H, W]``.

    ``resize``: an int resizes the shortest edge to it (aspect kept), a ``(h, w)`` pair resizes
    exactly, None skips. ``crop``: centre crop ``(h, w)`` or None.
    """

    resize: int | tuple[int, int] | None = 224
    crop: tuple[int, int] | None = (224, 224)
    mean: tuple[float, ...] = OPENAI_MEAN  # per channel (RGB)
    std: tuple[float, ...] = OPENAI_STD
    resample: int = Image.Resampling.BICUBIC
    rescale: float = 1 / 255
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: centre-crop offset ``round((H − ch) / 2)`` (torchvision's ``CenterCrop``, open_clip) instead of
    #: ``(H − ch) // 2`` (Hugging Face); the two differ by a pixel when ``H − ch`` is odd
    crop_round: bool = False
    #: with a ``(h, w)`` ``resize``: keep the aspect ratio, scaling by ``min`` ("shortest") or ``max`` ("longest")
    #: of ``H/h, W/w`` (open_clip's ``ResizeKeepRatio``); "" resizes exactly
    keep_ratio: str = ""

    def __post_init__(self) -> None:  # canonical types, so equal recipes hash equally
        resize = self.resize
        if isinstance(resize, list | tuple):
            resize = (int(resize[0]), int(resize[1]))
        object.__setattr__(self, "resize", resize if resize is None or isinstance(resize, tuple) else int(resize))
        if self.crop is not None:
            object.__setattr__(self, "crop", (int(self.crop[0]), int(self.crop[1])))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "resample", int(self.resample))
        object.__setattr__(self, "rescale", float(self.rescale))
        object.__setattr__(self, "crop_round", bool(self.crop_round))
        if self.keep_ratio not in ("", "shortest", "longest"):
            raise ValueError(f"keep_ratio must be '', 'shortest' or 'longest', got {self.keep_ratio!r}")

    @property
    def output_size(self) -> tuple[int, int] | None:
        if self.crop is not None:
            return tuple(self.crop)  # type: ignore[return-value]
        if isinstance(self.resize, tuple | list):
            return tuple(self.resize)  # type: ignore[return-value]
        return None

    def _resized_size(self, w: int, h: int) -> tuple[int, int]:
        if self.resize is None:
            return w, h
        if isinstance(self.resize, tuple | list):
            th, tw = int(self.resize[0]), int(self.resize[1])
            if self.keep_ratio:
                ratios = (h / th, w / tw)
                r = max(ratios) if self.keep_ratio == "longest" else min(ratios)
                return round(w / r), round(h / r)
            return tw, th
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = int(self.resize), int(int(self.resize) * long / short)
        return (new_short, new_long) if w <= h else (new_long, new_short)

    def to_uint8(self, image: ImageInput) -> np.ndarray:
        """Resize and crop; returns ``(H, W, 3)`` uint8."""
        im = load_image(image)
        size = self._resized_size(*im.size)
        if size != im.size:
            im = im.resize(size, resample=self.resample)
        arr = np.asarray(im, dtype=np.uint8)
        if self.crop is not None:
            arr = _center_crop(arr, int(self.crop[0]), int(self.crop[1]), rounded=self.crop_round)
        return arr

    @functools.cached_property
    def _shift_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """``mean / rescale`` and ``std / rescale`` as float32 ``(1, 3, 1, 1)`` arrays (computed once)."""
        shift = torch.tensor(self.mean).view(1, 3, 1, 1) / self.rescale
        scale = torch.tensor(self.std).view(1, 3, 1, 1) / self.rescale
        return shift.numpy(), scale.numpy()

    def normalize_array(self, batch_uint8: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` float32 array ``(x − mean/rescale) / (std/rescale)``.

        NumPy, not torch: the loaders call this on background threads, where a torch kernel would start an
        OpenMP team of its own; with more OpenMP threads than cores, libgomp stops spinning and every later
        parallel region of the training or embedding thread pays a wake-up (measured: the optimizer step 3×
        slower). Elementwise float32 subtraction and division are exactly rounded, so the values are the
        same as torch's."""
        x = np.asarray(batch_uint8, dtype=np.uint8).transpose(0, 3, 1, 2).astype(np.float32, order="C")
        shift, scale = self._shift_scale
        np.subtract(x, shift, out=x)
        np.divide(x, scale, out=x)
        return x

    def normalize(self, batch_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` float32 tensor, rescaled and normalised."""
        return torch.from_numpy(self.normalize_array(batch_uint8))

    def __call__(self, image: ImageInput) -> torch.Tensor:
        return self.normalize(self.to_uint8(image)[None])[0]

    def batch_array(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Preprocess several images into one ``(B, 3, H, W)`` float32 array (one normalisation pass)."""
        if len(images) == 0:
            raise ValueError("no images to preprocess")
        arrays = [self.to_uint8(im) for im in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"preprocessed images differ in size {sorted(shapes)}: set a crop size so every image "
                "gets the same shape"
            )
        return self.normalize_array(np.stack(arrays))

    def batch(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Preprocess several images into one ``(B, 3, H, W)`` tensor (``batch_array``, no copy)."""
        return torch.from_numpy(self.batch_array(images))

    # -- Hugging Face preprocessor_config.json -------------------------------------------------
    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> Preprocess:
        """The recipe of a ``preprocessor_config.json``; one with ``max_num_patches`` gives a ``PatchPreprocess``."""
        if "max_num_patches" in cfg:
            return PatchPreprocess.from_hf_config(cfg)
        size = cfg.get("size")
        resize: int | tuple[int, int] | None
        if not cfg.get("do_resize", True) or size is None:
            resize = None
        elif isinstance(size, int | float):
            resize = int(size)
        elif "shortest_edge" in size:
            resize = int(size["shortest_edge"])
        else:
            resize = (int(size["height"]), int(size["width"]))
        crop = None
        if cfg.get("do_center_crop", False):
            cs = cfg.get("crop_size", size)
            if cs is None:
                raise ValueError("preprocessor config: do_center_crop is set but neither crop_size nor size is given")
            crop = (int(cs), int(cs)) if isinstance(cs, int | float) else (int(cs["height"]), int(cs["width"]))
        if cfg.get("do_normalize", True):
            mean = tuple(float(v) for v in cfg.get("image_mean", OPENAI_MEAN))
            std = tuple(float(v) for v in cfg.get("image_std", OPENAI_STD))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        return cls(
            resize=resize,
            crop=crop,
            mean=mean,
            std=std,
            resample=int(cfg.get("resample", Image.Resampling.BICUBIC)),
            rescale=rescale,
        )

    def to_hf_config(self, processor_class: str = "CLIPImageProcessor") -> dict[str, Any]:
        if isinstance(self.resize, tuple | list):
            size: dict[str, int] | None = {"height": int(self.resize[0]), "width": int(self.resize[1])}
        elif self.resize is None:
            size = None
        else:
            size = {"shortest_edge": int(self.resize)}
        cfg: dict[str, Any] = {
            "image_processor_type": processor_class,
            "do_resize": size is not None,
            "size": size,
            "resample": int(self.resample),
            "do_center_crop": self.crop is not None,
            "do_rescale": True,
            "rescale_factor": self.rescale,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
        }
        if self.crop is not None:
            cfg["crop_size"] = {"height": int(self.crop[0]), "width": int(self.crop[1])}
        return cfg

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        for key in ("crop_round", "keep_ratio"):  # defaults leave earlier recipes (and cache keys) unchanged
            if not d[key]:
                d.pop(key)
        return d


def _center_crop(arr: np.ndarray, ch: int, cw: int, *, rounded: bool = False) -> np.ndarray:
    """Centre crop (HF: top = (H − ch) // 2; ``rounded``: torchvision's round((H − ch) / 2)); pads with zeros
    when the image is smaller."""
    h, w = arr.shape[:2]
    if h < ch or w < cw:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = arr.shape[:2]
    if rounded:
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    else:
        top, left = (h - ch) // 2, (w - cw) // 2
    return arr[top : top + ch, left : left + cw]


def patch_grid(height: int, width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """The resized ``(height, width)`` of a NaFlex image: the largest scale ``s`` (found by bisection to ``eps``)
    with ``⌈s·H/p⌉·⌈s·W/p⌉ ≤ max_num_patches``, each side a multiple of ``p`` and at least one patch
    (SigLIP 2, Tschannen et al. 2025; ``Siglip2ImageProcessor``)."""

    def side(scale: float, size: int) -> int:
        return max(patch_size, int(math.ceil(size * scale / patch_size) * patch_size))

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (side(mid, height) / patch_size) * (side(mid, width) / patch_size) <= max_num_patches:
            lo = mid
        else:
            hi = mid
    return side(lo, height), side(lo, width)


@dataclass(frozen=True)
class PatchPreprocess(Preprocess):
    """PIL image → NaFlex patch sequence: resize keeping the aspect ratio (``patch_grid``), rescale, normalise,
    cut into ``p×p`` patches flattened as ``(row, column, channel)``, zero-pad to ``max_num_patches``.

    A batch is one packed float tensor ``[B, 1 + max_num_patches, 3·p²]``: row 0 of each image holds its grid
    ``(h, w)`` in patches (the rest zeros), rows ``1..`` its patches; ``unpack_patches`` turns it into the
    model's inputs. ``resize``/``crop`` are unused (None).
    """

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    resample: int = Image.Resampling.BILINEAR
    patch_size: int = 16
    max_num_patches: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resize is not None or self.crop is not None:
            raise ValueError("a PatchPreprocess resizes by max_num_patches: resize and crop must be None")
        object.__setattr__(self, "patch_size", int(self.patch_size))
        object.__setattr__(self, "max_num_patches", int(self.max_num_patches))
        if self.patch_size < 1 or self.max_num_patches < 1:
            raise ValueError(
                f"patch_size and max_num_patches must be >= 1, got {self.patch_size}, {self.max_num_patches}"
            )

    def _resized_size(self, w: int, h: int) -> tuple[int, int]:
        th, tw = patch_grid(h, w, self.patch_size, self.max_num_patches)
        return tw, th

    def patch_array(self, image_uint8: np.ndarray) -> np.ndarray:
        """One resized ``(H, W, 3)`` uint8 image → packed float32 ``[1 + max_num_patches, 3·p²]`` (see the class;
        NumPy, for the loaders' threads: see ``Preprocess.normalize_array``)."""
        p = self.patch_size
        x = self.normalize_array(image_uint8[None])[0].transpose(1, 2, 0)  # (H, W, 3)
        nh, nw = x.shape[0] // p, x.shape[1] // p
        seq = x[: nh * p, : nw * p].reshape(nh, p, nw, p, 3).transpose(0, 2, 1, 3, 4).reshape(nh * nw, p * p * 3)
        out = np.zeros((1 + self.max_num_patches, p * p * 3), dtype=np.float32)
        out[0, 0], out[0, 1] = nh, nw
        out[1 : 1 + nh * nw] = seq
        return out

    def patches(self, image_uint8: np.ndarray) -> torch.Tensor:
        """``patch_array`` as a tensor."""
        return torch.from_numpy(self.patch_array(image_uint8))

    def __call__(self, image: ImageInput) -> torch.Tensor:
        return self.patches(self.to_uint8(image))

    def batch_array(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Several images → one packed float32 ``[B, 1 + max_num_patches, 3·p²]`` array."""
        if len(images) == 0:
            raise ValueError("no images to preprocess")
        return np.stack([self.patch_array(self.to_uint8(im)) for im in images])

    def inputs(self, images: Sequence[ImageInput]) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for ``images`` (what the Hugging Face processor returns)."""
        return unpack_patches(self.batch(images))

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> PatchPreprocess:
        if cfg.get("do_normalize", True):
            mean = tuple(float(v) for v in cfg.get("image_mean", (0.5, 0.5, 0.5)))
            std = tuple(float(v) for v in cfg.get("image_std", (0.5, 0.5, 0.5)))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if not cfg.get("do_resize", True):
            raise ValueError(
                "a NaFlex preprocessor config with do_resize false is not supported (images must be resized)"
            )
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        return cls(
            mean=mean,
            std=std,
            resample=int(cfg.get("resample", Image.Resampling.BILINEAR)),
            rescale=rescale,
            patch_size=int(cfg.get("patch_size", 16)),
            max_num_patches=int(cfg["max_num_patches"]),
        )

    def to_hf_config(self, processor_class: str = "Siglip2ImageProcessor") -> dict[str, Any]:
        return {
            "image_processor_type": processor_class,
            "do_resize": True,
            "resample": int(self.resample),
            "do_rescale": True,
            "rescale_factor": self.rescale,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
            "patch_size": self.patch_size,
            "max_num_patches": self.max_num_patches,
        }

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "patches", **super().fingerprint()}


def unpack_patches(packed: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``PatchPreprocess`` batch → ``pixel_values [B, N, 3·p²]``, ``pixel_attention_mask [B, N]`` (1 for the
    image's ``h·w`` patches, 0 for padding) and ``spatial_shapes [B, 2]`` (long)."""
    if packed.ndim != 3 or packed.shape[1] < 2:
        raise ValueError(f"a packed patch batch must have shape [B, 1 + N, D], got {tuple(packed.shape)}")
    shapes = packed[:, 0, :2].round().long()
    pixel_values = packed[:, 1:]
    n = torch.arange(pixel_values.shape[1], device=packed.device)
    mask = (n[None] < (shapes[:, 0] * shapes[:, 1])[:, None]).long()
    return {"pixel_values": pixel_values, "pixel_attention_mask": mask, "spatial_shapes": shapes}
