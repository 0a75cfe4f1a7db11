"""``make_loader``: one path from a dataset to batches of preprocessed pixels, in order.

Every image-encoding path (``Model.encode_images``, ``cliplab.features.embedding``) goes through it. With
``num_workers=0`` the next batch is read and preprocessed on one background thread while the caller works
on the current one (``cliplab.models.base.prefetch``); with ``num_workers > 0`` a torch ``DataLoader`` with
that many worker processes prepares whole batches, still in order.

Errors: by default the first unreadable image raises (image folders and caption files name the file).
``on_error="skip"`` leaves unreadable images out of their batch and lists them in ``loader.skipped``
(``{"index", "path", "error"}``, the path where the dataset knows it), as ``cliplab index`` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from cliplab.data.base import Dataset, Subset, Wrapper
from cliplab.models.preprocess import ImageInput, Preprocess, load_image

ON_ERROR = ("raise", "skip")


class ImageList(Dataset):
    """A list of PIL images or image paths as an unlabelled dataset (paths are read on use)."""

    def __init__(self, items: Sequence[ImageInput], name: str = "images"):
        self.items = list(items)
        self.name = name

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> Image.Image:
        return load_image(self.items[index])

    @property
    def paths(self) -> list[str | None]:
        return [None if isinstance(x, Image.Image) else os.fspath(x) for x in self.items]

    def fingerprint(self) -> str:
        raise TypeError("an ImageList has no fingerprint (its images are not defined by stable content)")


def image_path(dataset: Dataset, index: int) -> str | None:
    """The file image ``index`` of ``dataset`` is read from, where the dataset (or its parent) knows it."""
    while isinstance(dataset, Wrapper):
        if isinstance(dataset, Subset):
            index = int(dataset.indices[index])
        dataset = dataset.parent
    paths = getattr(dataset, "paths", None)
    if paths is None:
        return None
    path = paths[index]
    return None if path is None else os.fspath(path)


def load_pixels(dataset: Dataset, preprocess: Preprocess, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Images ``indices`` of ``dataset`` read (one ``dataset.images`` call) and preprocessed into ``[B, 3, H, W]``."""
    return preprocess.batch(dataset.images([int(i) for i in indices]))


class Loader:
    """Batches ``{"pixel_values": [B, 3, H, W], "index": int64 [B], "label"?: int64 [B]}`` of ``dataset``.

    Build it with ``make_loader``. Iterate it once per pass; ``len(loader)`` is the number of batches and
    ``skipped`` lists what ``on_error="skip"`` left out (reset on each pass).
    """

    def __init__(
        self,
        dataset: Dataset,
        preprocess: Preprocess,
        batch_size: int = 64,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        num_workers: int = 0,
        on_error: str = "raise",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
        self.dataset, self.preprocess = dataset, preprocess
        self.batch_size, self.num_workers, self.on_error = batch_size, num_workers, on_error
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        labels = dataset.labels
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.skipped: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return -(-int(self.indices.size) // self.batch_size)

    def batch(self, b: int) -> dict[str, Any]:
        """Batch ``b`` (its skipped images under ``"skipped"`` when ``on_error="skip"``)."""
        chunk = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
        if self.on_error == "raise":
            return self._batch(chunk, load_pixels(self.dataset, self.preprocess, chunk))
        skipped: list[dict[str, Any]] = []
        try:
            images = self.dataset.images(chunk.tolist())
        except Exception:  # noqa: BLE001 - find which image failed, one by one
            images, kept = [], []
            for i in chunk.tolist():
                try:
                    images.append(self.dataset.image(i))
                    kept.append(i)
                except Exception as err:  # noqa: BLE001 - any unreadable image is skipped and listed
                    skipped.append({"index": i, "path": image_path(self.dataset, i), "error": str(err)})
            chunk = np.asarray(kept, dtype=np.int64)
        out = self._batch(chunk, self.preprocess.batch(images) if len(images) else None)
        out["skipped"] = skipped
        return out

    def _batch(self, chunk: np.ndarray, pixels: torch.Tensor | None) -> dict[str, Any]:
        out: dict[str, Any] = {"pixel_values": pixels, "index": torch.from_numpy(chunk.copy())}
        if self.labels is not None:
            out["label"] = torch.from_numpy(self.labels[chunk])
        return out

    def _batches(self) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0:
            from cliplab.models.base import prefetch

            yield from prefetch(self.batch, len(self))
            return
        loader = torch.utils.data.DataLoader(
            _Batches(self), batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_identity
        )
        yield from loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = []
        for batch in self._batches():
            self.skipped += batch.pop("skipped", [])
            if batch["pixel_values"] is not None:
                yield batch


class _Batches(torch.utils.data.Dataset):
    """Batch ``b`` of a ``Loader`` as item ``b``, for a torch ``DataLoader`` with workers."""

    def __init__(self, loader: Loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, b: int) -> dict[str, Any]:
        return self.loader.batch(b)


def _identity(batch: Any) -> Any:
    return batch


def make_loader(
    dataset: Dataset,
    preprocess: Preprocess,
    batch_size: int = 64,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    num_workers: int = 0,
    on_error: str = "raise",
) -> Loader:
    """Batches of ``dataset[indices]`` (all by default) preprocessed by ``preprocess``, in order.

    Each batch is ``{"pixel_values": float [B, 3, H, W], "index": int64 [B], "label": int64 [B]}`` (``label``
    when the dataset has labels). ``num_workers=0`` prepares the next batch on one background thread;
    ``num_workers > 0`` uses a torch ``DataLoader`` with that many processes. ``on_error``: ``"raise"`` (the
    first unreadable image raises, naming its file) or ``"skip"`` (left out and listed in ``loader.skipped``).
    """
    return Loader(dataset, preprocess, batch_size, indices=indices, num_workers=num_workers, on_error=on_error)
