"""Any dataset under a corruption: the shift family for label-free accuracy estimation on real data."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cliplab.data.base import Dataset, stable_hash
from cliplab.data.corruptions import CORRUPTIONS, check_corruption, corrupt


class Corrupted(Dataset):
    """``parent`` with corruption ``name`` at ``severity`` applied to every image (labels unchanged).

    The random corruptions (noise, fog, elastic) draw from a generator seeded by ``(seed, index,
    corruption, severity)``, so an image always gets the same corruption. ``size``: images whose shorter
    side exceeds it are first down-scaled to it (ImageNet-C corrupts 224-pixel crops; blur radii and
    displacements scale with the image size, and a large photo would be slow to corrupt).
    """

    def __init__(self, parent: Dataset, name: str, severity: int = 3, *, seed: int = 0, size: int | None = 224):
        check_corruption(name, severity)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ValueError(f"size must be an integer >= 8 or None, got {size!r}")
        self.parent = parent
        self.corruption = name
        self.severity = int(severity)
        self.seed = seed
        self.size = size
        self.name = f"{parent.name}[{name}@{severity}]"
        self.classnames = parent.classnames
        self.templates = parent.templates

    def __len__(self) -> int:
        return len(self.parent)

    def image(self, index: int) -> Image.Image:
        img = self.parent.image(index).convert("RGB")
        if self.size is not None and min(img.size) > self.size:
            scale = self.size / min(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        rng = np.random.default_rng([self.seed, int(index), 7919, CORRUPTIONS.index(self.corruption), self.severity])
        return Image.fromarray(corrupt(np.asarray(img), self.corruption, self.severity, rng))

    @property
    def labels(self) -> np.ndarray | None:
        return self.parent.labels

    def fingerprint(self) -> str:
        return stable_hash(
            {
                "parent": self.parent.fingerprint(),
                "corruption": self.corruption,
                "severity": self.severity,
                "seed": self.seed,
                "size": self.size,
            }
        )
