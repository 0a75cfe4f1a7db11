"""Image augmentation without torchvision: random resized crop and horizontal flip.

Used to embed several augmented passes of a few-shot support set (``cliplab.adapt.views``: Tip-Adapter
averages 10 passes, GDA concatenates them, the trained adapters read one pass per epoch, LP++ one pass).
The sampling follows torchvision's ``RandomResizedCrop`` (ratio (3/4, 4/3), 10 attempts, centre-crop
fallback); the default scale is the references' (0.5, 1) (torchvision's own default is (0.08, 1)), with a
horizontal flip at p = 0.5 and bicubic resizing, as Tip-Adapter's and GDA's ``train_tranform``.

Each pass is its own dataset (``AugmentedView``) whose crops are deterministic in (seed, pass, image) and
whose fingerprint covers the parent, the pass, the seed and the transform, so the feature cache keeps every
pass separately and a rerun encodes nothing; two encoders given the same pass see the same crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cliplab.data.base import Dataset, Wrapper, stable_hash


@dataclass(frozen=True)
class RandomResizedCrop:
    """Crop a random area (``scale`` of the image, aspect in ``ratio``), resize to ``size``, maybe flip."""

    size: int | tuple[int, int] = 224
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    resample: int = Image.Resampling.BICUBIC

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip}")

    def box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(left, top, w, h)`` of the crop, torchvision's sampling scheme."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
        in_ratio = width / height  # fallback: centre crop at the closest allowed aspect
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        left, top, w, h = self.box(*image.size, rng)
        size = (self.size, self.size) if isinstance(self.size, int) else (self.size[1], self.size[0])
        out = image.crop((left, top, left + w, top + h)).resize(size, resample=self.resample)
        if rng.random() < self.flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out


class AugmentedView(Wrapper):
    """View ``view`` of ``parent`` under ``transform``: image ``i`` is deterministic in (seed, view, i)."""

    def __init__(self, parent: Dataset, transform: RandomResizedCrop, view: int, seed: int = 0):
        super().__init__(parent, f"{parent.name}[aug{view}]")
        self.transform, self.view, self.seed = transform, view, seed

    def image(self, index: int) -> Image.Image:
        rng = np.random.default_rng([self.seed, self.view, index])
        return self.transform(self.parent.image(index), rng)

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        originals = self.parent.images(indices)
        return [
            self.transform(im, np.random.default_rng([self.seed, self.view, int(i)]))
            for im, i in zip(originals, indices)
        ]

    def fingerprint(self) -> str:
        t = self.transform
        return stable_hash(
            {
                "parent": self.parent.fingerprint(),
                "view": self.view,
                "seed": self.seed,
                "transform": [t.size, t.scale, t.ratio, t.flip, int(t.resample)],
            }
        )


def augmented_views(dataset: Dataset, n_views: int, transform: RandomResizedCrop, seed: int = 0) -> list[Dataset]:
    """``n_views`` deterministic augmented copies of ``dataset``."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    return [AugmentedView(dataset, transform, v, seed) for v in range(n_views)]
