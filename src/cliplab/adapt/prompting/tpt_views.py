"""TPT's augmented views of one test image, as the reference makes them (azshue/TPT, ``data/datautils.py``:
``AugMixAugmenter``, ``augmix``, ``get_preaugment``).

View 0 is the image as the model preprocesses it. Each of the other ``n − 1`` views is a random resized crop
of the **original** image (torchvision's ``RandomResizedCrop`` sampling, default scale (0.08, 1), ratio
(3/4, 4/3), bilinear, to the model's input size) flipped with p = 1/2, converted with the model's
normalisation only (the reference's ``ToTensor + Normalize``); with ``augmix`` it is the AugMix image of that
crop (``cliplab.data.augmix``: three chains, Dirichlet(1, 1, 1) weights, Beta(1, 1) mix, severity 1).

Which data gets AugMix (``augmix=None``): the reference's rule is AugMix for every test set but ImageNet
and its variants (``augmix=len(set_id) > 1``: the ImageNet sets are the one-letter ids I/A/V/R/K).
cliplab knows the test set only by the data's ``name``: a Dataset whose name starts with "imagenet"
(case and punctuation ignored: ``imagenet-a``, ``ImageNet/test``, ``imagenetv2``, ``imagenet-sketch[subset]``)
gets plain crops, any other data AugMix. A pixel batch or a list of images carries no name and gets AugMix.

Preprocessed pixels (``[3, H, W]``): they are mapped back to the uint8 image they came from (undoing the
normalisation, exact for pixels made from uint8 images) and the views are crops of that image, i.e. of the
model's centre crop rather than of the full original; view 0 is the given pixels unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from cliplab.data.augment import RandomResizedCrop
from cliplab.data.augmix import render_augmix, sample_augmix
from cliplab.imaging.preprocess import PatchPreprocess, Preprocess


def is_imagenet(name: str | None) -> bool:
    """Whether a dataset name marks ImageNet or one of its variants (see the module docstring)."""
    return name is not None and re.sub(r"[^a-z0-9]", "", name.lower()).startswith("imagenet")


def uses_augmix(augmix: bool | None, data: Any) -> bool:
    """``augmix`` if given, else the reference's rule on the data's name (AugMix unless it is ImageNet)."""
    if augmix is not None:
        return bool(augmix)
    from cliplab.data.base import Dataset

    return not (isinstance(data, Dataset) and is_imagenet(data.name))


def _fixed_size(preprocess: Any, what: str) -> Preprocess:
    if not isinstance(preprocess, Preprocess) or isinstance(preprocess, PatchPreprocess):
        raise ValueError(f"{what} needs a model with a fixed-size image preprocess, got {type(preprocess).__name__}")
    if preprocess.output_size is None:
        raise ValueError(f"{what} needs a preprocess with a crop (or an exact resize) size; this one has neither")
    return preprocess


def pixels_to_image(pixels: torch.Tensor, preprocess: Preprocess) -> Image.Image:
    """The uint8 RGB image whose normalisation is ``pixels [3, H, W]`` (values rounded and clipped)."""
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    x = (pixels.detach().float().cpu() * std + mean) / preprocess.rescale
    arr = x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


@dataclass(frozen=True)
class TPTViews:
    """``n_views`` views (the image + ``n_views − 1`` augmented ones) of one image; see the module docstring."""

    n_views: int = 64
    scale: tuple[float, float] = (0.08, 1.0)
    augmix: bool = True
    severity: float = 1

    def __call__(self, image: Any, preprocess: Any, rng: np.random.Generator) -> torch.Tensor:
        """``[n_views, 3, H, W]`` for a PIL image (or path) or preprocessed pixels ``[3, H, W]``."""
        pre = _fixed_size(preprocess, "TPT's views")
        if isinstance(image, torch.Tensor):
            first, source = image.float().cpu(), pixels_to_image(image, pre)
        else:
            from cliplab.imaging.preprocess import load_image

            source = load_image(image)
            first = pre(source)
        h, w = first.shape[-2:]
        crop = RandomResizedCrop(size=(h, w), scale=(self.scale[0], self.scale[1]), resample=Image.Resampling.BILINEAR)

        def to_tensor(im: Image.Image) -> torch.Tensor:
            return pre.normalize(np.asarray(im, dtype=np.uint8)[None])[0]

        views = [first]
        for _ in range(self.n_views - 1):
            x = crop(source, rng)
            if self.augmix:
                views.append(render_augmix(x, sample_augmix(rng, x.size, severity=self.severity), to_tensor))
            else:
                views.append(to_tensor(x))
        return torch.stack(views)


__all__ = ["TPTViews", "is_imagenet", "pixels_to_image", "uses_augmix"]
