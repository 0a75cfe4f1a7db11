"""Any dataset under a corruption: the shift family for label-free accuracy estimation on real data.

``corrupt_image`` is the one corruption path: the ``Corrupted`` wrapper and the shapes world's
``corruption=`` option both call it, with the same per-image seeding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from cliplab.data.base import Dataset, Wrapper, stable_hash
from cliplab.data.corruptions import CORRUPTIONS, check_corruption, corrupt


def corruption_rng(seed: int | Sequence[int], index: int, name: str, severity: int) -> np.random.Generator:
    """The generator image ``index`` is corrupted with: seeded by ``(seed..., index, corruption, severity)``."""
    key = [int(seed)] if isinstance(seed, int | np.integer) else [int(s) for s in seed]
    return np.random.default_rng([*key, int(index), 7919, CORRUPTIONS.index(name), int(severity)])


def corrupt_image(
    image: np.ndarray, name: str, severity: int, *, index: int, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """``image`` (``[H, W, 3]`` uint8) under corruption ``name`` at ``severity``, always the same for one index."""
    return corrupt(image, name, severity, corruption_rng(seed, index, name, severity))


class Corrupted(Wrapper):
    """``parent`` with corruption ``name`` at ``severity`` applied to every image (labels unchanged).

    The random corruptions (noise, fog, elastic) draw from a generator seeded by ``(seed, index,
    corruption, severity)``, so an image always gets the same corruption; ``seed`` may be a tuple of ints
    (the shapes world passes ``(seed, split)``). ``size``: images whose shorter side exceeds it are first
    down-scaled to it (ImageNet-C corrupts 224-pixel crops; blur radii and displacements scale with the
    image size, and a large photo would be slow to corrupt).
    """

    def __init__(
        self,
        parent: Dataset,
        name: str,
        severity: int = 3,
        *,
        seed: int | Sequence[int] = 0,
        size: int | None = 224,
    ):
        check_corruption(name, severity)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ValueError(f"size must be an integer >= 8 or None, got {size!r}")
        super().__init__(parent, f"{parent.name}[{name}@{severity}]")
        self.corruption = name
        self.severity = int(severity)
        self.seed = seed if isinstance(seed, int) else tuple(int(s) for s in seed)
        self.size = size

    def corrupt_array(self, image: np.ndarray, index: int) -> np.ndarray:
        """Corrupt image ``index`` given as an ``[H, W, 3]`` uint8 array (no down-scaling)."""
        return corrupt_image(image, self.corruption, self.severity, index=index, seed=self.seed)

    def image(self, index: int) -> Image.Image:
        img = self.parent.image(index).convert("RGB")
        if self.size is not None and min(img.size) > self.size:
            scale = self.size / min(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC)
        return Image.fromarray(self.corrupt_array(np.asarray(img), index))

    def fingerprint(self) -> str:
        seed = self.seed if isinstance(self.seed, int) else list(self.seed)
        return stable_hash(
            {
                "parent": self.parent.fingerprint(),
                "corruption": self.corruption,
                "severity": self.severity,
                "seed": seed,
                "size": self.size,
            }
        )
