"""AugMix (Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and Uncertainty",
ICLR 2020) with the operations and magnitudes TPT's views use (azshue/TPT, ``data/augmix_ops.py``).

An AugMix image of ``x`` is ``m·T(x) + (1 − m)·Σ_i w_i·T(chain_i(x))``, with ``w ~ Dirichlet(1, 1, 1)`` over
three chains, ``m ~ Beta(1, 1)`` and ``T`` the tensor conversion (the model's normalisation: the mix is taken
on normalised tensors, as in the reference; normalisation is affine and the weights sum to 1, so this equals
normalising the mixed image). Each chain is 1–3 operations drawn uniformly, with replacement, from
``OPS`` (the reference's ``augmentations``: no colour / contrast / brightness / sharpness, which overlap
ImageNet-C), each applied to the PIL image. At severity ``s`` each operation draws a level
``l ~ U(0.1, s)`` and maps it as the reference does (``int(l·max/10)`` or ``l·max/10``); at severity 1:

* autocontrast, equalize: no parameter;
* posterize: ``4 − int(0.4·l)`` bits (always 4 at severity 1);
* rotate: ``±int(3·l)`` degrees (0–2), bilinear;
* solarize: threshold ``256 − int(25.6·l)`` (231–256);
* shear_x / shear_y: ``±0.03·l`` (affine, bilinear);
* translate_x / translate_y: ``±int(l·S/30)`` pixels with ``S`` the image side (the reference's
  ``IMAGE_SIZE/3`` at 224 px: 0–7 px; here scaled to the image's own width / height).

The sign of rotate, shear and translate is negative with probability 1/2. Sampling (``sample_augmix``) and
rendering (``render_augmix``) are separate so a plan can be inspected and replayed; all randomness comes from
the ``numpy`` generator passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

#: the reference's ``augmentations`` list (``data/augmix_ops.py``), in its order
OPS = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_SIGNED = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


@dataclass(frozen=True)
class Op:
    """One operation with its drawn level and the parameter derived from it (bits, degrees, threshold, ...)."""

    name: str
    value: float = 0.0
    level: float = 0.0


@dataclass(frozen=True)
class AugMixPlan:
    """The random draws of one AugMix image: chain weights ``w`` (sum 1), the mix ``m`` and the chains."""

    weights: tuple[float, ...]
    mix: float
    chains: tuple[tuple[Op, ...], ...]


def sample_op(name: str, rng: np.random.Generator, size: tuple[int, int], severity: float = 1) -> Op:
    """Draw ``name``'s level and parameter (see the module docstring); ``size`` is the image's ``(w, h)``."""
    if name in ("autocontrast", "equalize"):
        return Op(name)
    if name not in OPS:
        raise ValueError(f"unknown AugMix operation {name!r}; choose from {', '.join(OPS)}")
    level = float(rng.uniform(0.1, severity))
    if name == "posterize":
        value: float = 4 - int(level * 4 / 10)
    elif name == "solarize":
        value = 256 - int(level * 256 / 10)
    elif name == "rotate":
        value = int(level * 30 / 10)
    elif name in ("shear_x", "shear_y"):
        value = level * 0.3 / 10
    else:
        side = size[0] if name == "translate_x" else size[1]
        value = int(level * (side / 3) / 10)
    if name in _SIGNED and rng.uniform() > 0.5:
        value = -value
    return Op(name, float(value), level)


def apply_op(image: Image.Image, op: Op) -> Image.Image:
    """``op`` applied to a PIL image (output of the same size)."""
    affine = {
        "shear_x": (1, op.value, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, op.value, 1, 0),
        "translate_x": (1, 0, op.value, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, op.value),
    }
    if op.name == "autocontrast":
        return ImageOps.autocontrast(image)
    if op.name == "equalize":
        return ImageOps.equalize(image)
    if op.name == "posterize":
        return ImageOps.posterize(image, int(op.value))
    if op.name == "solarize":
        return ImageOps.solarize(image, int(op.value))
    if op.name == "rotate":
        return image.rotate(op.value, resample=Image.Resampling.BILINEAR)
    if op.name in affine:
        return image.transform(image.size, Image.Transform.AFFINE, affine[op.name], resample=Image.Resampling.BILINEAR)
    raise ValueError(f"unknown AugMix operation {op.name!r}; choose from {', '.join(OPS)}")


def apply_chain(image: Image.Image, chain: Sequence[Op]) -> Image.Image:
    for op in chain:
        image = apply_op(image, op)
    return image


def sample_augmix(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    severity: float = 1,
    width: int = 3,
    max_depth: int = 3,
    ops: Sequence[str] = OPS,
) -> AugMixPlan:
    """Draw ``w ~ Dirichlet(1,…,1)`` (``width`` chains), ``m ~ Beta(1, 1)``, then each chain: a depth in
    ``1..max_depth`` and that many operations drawn uniformly from ``ops``."""
    if not 0.1 <= severity <= 10:
        raise ValueError(
            f"AugMix severity must be in [0.1, 10] (levels are drawn from U(0.1, severity)), got {severity}"
        )
    if width < 1 or max_depth < 1 or not ops:
        raise ValueError(f"AugMix needs width >= 1, max_depth >= 1 and operations, got {width}, {max_depth}, {ops}")
    weights = tuple(float(v) for v in rng.dirichlet([1.0] * width).astype(np.float32))
    mix = float(np.float32(rng.beta(1.0, 1.0)))
    chains = []
    for _ in range(width):
        depth = int(rng.integers(1, max_depth + 1))
        chains.append(tuple(sample_op(ops[int(rng.integers(len(ops)))], rng, size, severity) for _ in range(depth)))
    return AugMixPlan(weights, mix, tuple(chains))


def render_augmix(
    image: Image.Image, plan: AugMixPlan, to_tensor: Callable[[Image.Image], torch.Tensor]
) -> torch.Tensor:
    """``m·T(x) + (1 − m)·Σ_i w_i·T(chain_i(x))`` for the plan's draws (``T = to_tensor``)."""
    x = to_tensor(image)
    mixed = torch.zeros_like(x)
    for w, chain in zip(plan.weights, plan.chains):
        mixed += w * to_tensor(apply_chain(image.copy(), chain))
    return plan.mix * x + (1 - plan.mix) * mixed


__all__ = ["OPS", "AugMixPlan", "Op", "apply_chain", "apply_op", "render_augmix", "sample_augmix", "sample_op"]
