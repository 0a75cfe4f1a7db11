"""``make_loader``: one path from a dataset to batches of preprocessed pixels, in order.

Every image-encoding path (``Model.encode_images``, ``cliplab.features.embedding``, ``cliplab index``, the
trainer's ``BatchLoader``) goes through it. ``num_workers`` batches are read and preprocessed in parallel
while the caller uses the current one (default: the available cores, ``len(os.sched_getaffinity(0))``;
0: each batch is made in the calling thread when it is asked for). Workers are threads (``parallel="thread"``)
or processes (``parallel="process"``: ``cliplab.data.worker_processes``, started with ``forkserver``/``spawn``,
batches returned through shared memory, as torch's ``DataLoader`` but with NumPy/PIL only on the workers);
``parallel="auto"`` (opt-in; the default stays ``"thread"`` until the processes' gain is measured on a quiet
machine, ``docs/throughput.md``) picks processes for ≥ 2 workers over enough images (``AUTO_MIN_IMAGES``) of a
picklable dataset into a small output (``AUTO_MAX_SIDE``), threads otherwise: PIL's file opening and PNG chunk
reading hold the GIL, which costs threads most on small images, while a large batch costs processes a copy
through shared memory and a short pass does not pay back their start (figures: ``docs/throughput.md``).
Batches come out in index order and their content never depends on the worker count or kind. With
``pin_memory=True`` (set by callers whose model is on CUDA) batches are in page-locked memory, so
``.to(device, non_blocking=True)`` overlaps the copy.

Errors: by default the first unreadable image raises (image folders and caption files name the file; any
other dataset's error is re-raised as a ValueError naming the image and, where known, its file).
``on_error="skip"`` leaves unreadable images out of their batch and lists them in ``loader.skipped``
(``{"index", "path", "error"}``, the path where the dataset knows it), as ``cliplab index`` does.
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from cliplab.data import worker_processes
from cliplab.data.base import Dataset, Subset, Wrapper
from cliplab.data.worker_processes import ProcessPool
from cliplab.imaging.preprocess import ImageInput, Preprocess, load_image

ON_ERROR = ("raise", "skip")
PARALLEL = ("thread", "process", "auto")
#: the fewest images for which ``parallel="auto"`` starts worker processes: the first pool of a process starts
#: the fork server (imports torch: 2-6 s here), later ones start in ~0.3 s
AUTO_MIN_IMAGES = {"cold": 4096, "warm": 512}
#: the largest output side (pixels) for which ``parallel="auto"`` uses processes: bigger batches cost more to
#: copy through shared memory than threads lose to the GIL (224-px output: processes 0.6-0.8× one thread here)
AUTO_MAX_SIDE = 128
#: batches prepared ahead per worker
PREFETCH = 2
T = TypeVar("T")


def default_workers() -> int:
    """The cores this process may run on (``len(os.sched_getaffinity(0))``; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check_workers(num_workers: int | None) -> int:
    """``num_workers`` validated; None becomes ``default_workers()``."""
    if num_workers is None:
        return default_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0 (or None: the available cores), got {num_workers!r}")
    return num_workers


def ordered_map(fn: Callable[[int], T], n: int, num_workers: int, *, name: str = "cliplab-loader") -> Iterator[T]:
    """``fn(0), fn(1), ..., fn(n-1)`` in order, computed by ``num_workers`` threads ahead of the consumer.

    At most ``num_workers · PREFETCH`` calls are in flight; an exception is raised when its turn comes; leaving
    the iteration early cancels what has not started. ``num_workers=0`` calls ``fn`` in the calling thread.
    """
    if num_workers == 0:
        for i in range(n):
            yield fn(i)
        return
    if n <= 0:
        return
    ahead = max(1, num_workers * PREFETCH)
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix=name) as pool:
        pending: deque[Future] = deque()
        nxt = 0
        try:
            for _ in range(n):
                while nxt < n and len(pending) < ahead:
                    pending.append(pool.submit(fn, nxt))
                    nxt += 1
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


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


def _read_images(dataset: Dataset, indices: list[int]) -> list[Image.Image]:
    """``dataset.images(indices)``; a failure is re-raised naming the image (and its file) unless it already does."""
    try:
        return dataset.images(indices)
    except (FileNotFoundError, ValueError):
        raise  # cliplab's readers already name the file
    except Exception:  # noqa: BLE001 - find the image at fault, for the message
        for i in indices:
            try:
                dataset.image(i)
            except Exception as one:  # noqa: BLE001
                path = image_path(dataset, i)
                where = f" ({path})" if path else ""
                raise ValueError(f"cannot read image {i} of {dataset.name!r}{where}: {one}") from one
        raise


def load_pixels(dataset: Dataset, preprocess: Preprocess, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Images ``indices`` of ``dataset`` read (one ``dataset.images`` call) and preprocessed into ``[B, 3, H, W]``."""
    return preprocess.batch(_read_images(dataset, [int(i) for i in indices]))


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
        num_workers: int | None = None,
        on_error: str = "raise",
        pin_memory: bool = False,
        parallel: str = "thread",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
        if parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {', '.join(map(repr, PARALLEL))}, got {parallel!r}")
        self.dataset, self.preprocess = dataset, preprocess
        self.batch_size, self.num_workers, self.on_error = batch_size, check_workers(num_workers), on_error
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.parallel = parallel
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        labels = dataset.labels
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.skipped: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return -(-int(self.indices.size) // self.batch_size)

    def batch(self, b: int) -> dict[str, Any]:
        """Batch ``b`` (its skipped images under ``"skipped"`` when ``on_error="skip"``)."""
        chunk = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
        pixels, kept, skipped = prepare_batch(self.dataset, self.preprocess, self.on_error, chunk)
        return self._batch(kept, pixels, skipped)

    def _batch(self, chunk: np.ndarray, pixels: np.ndarray | None, skipped: list[dict[str, Any]]) -> dict[str, Any]:
        tensor = None if pixels is None else torch.from_numpy(pixels)
        if tensor is not None and self.pin_memory:
            tensor = tensor.pin_memory()
        out: dict[str, Any] = {"pixel_values": tensor, "index": torch.from_numpy(chunk.copy()), "skipped": skipped}
        if self.labels is not None:
            out["label"] = torch.from_numpy(self.labels[chunk])
        return out

    def resolved_parallel(self) -> str:
        """``"thread"`` or ``"process"``: what ``parallel`` means for this loader (``"auto"``: ``auto_parallel``)."""
        if self.parallel == "auto":
            return auto_parallel(self.dataset, int(self.indices.size), self.num_workers, self.preprocess)
        return self.parallel

    def _batches(self) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0 or self.resolved_parallel() == "thread":
            yield from ordered_map(self.batch, len(self), self.num_workers)
            return
        check_picklable(self.dataset)
        _ = self.preprocess._shift_scale  # computed here (torch), so the workers only run NumPy
        size = self.preprocess.output_size
        slot = self.batch_size * 3 * size[0] * size[1] * 4 if size is not None else 0
        chunks = (self.indices[b * self.batch_size : (b + 1) * self.batch_size] for b in range(len(self)))
        workers = min(self.num_workers, len(self))
        with ProcessPool(
            prepare_batch, (self.dataset, self.preprocess, self.on_error), workers, slot, workers * PREFETCH
        ) as pool:
            for pixels, kept, skipped in pool.map(chunks):
                yield self._batch(kept, pixels, skipped)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = []
        for batch in self._batches():
            self.skipped += batch.pop("skipped", [])
            if batch["pixel_values"] is not None:
                yield batch


def prepare_batch(
    dataset: Dataset, preprocess: Preprocess, on_error: str, chunk: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, list[dict[str, Any]]]:
    """Images ``chunk`` of ``dataset`` preprocessed: ``(float32 [B, 3, H, W] | None, indices kept, skipped)``.

    NumPy and PIL only (it runs on loader threads and in worker processes alike, so both give the same bits).
    ``on_error="skip"``: unreadable images are left out and listed as ``{"index", "path", "error"}``."""
    if on_error == "raise":
        return preprocess.batch_array(_read_images(dataset, [int(i) for i in chunk])), chunk, []
    skipped: list[dict[str, Any]] = []
    try:
        images = dataset.images(chunk.tolist())
    except Exception:  # noqa: BLE001 - find which image failed, one by one
        images, kept = [], []
        for i in chunk.tolist():
            try:
                images.append(dataset.image(i))
                kept.append(i)
            except Exception as err:  # noqa: BLE001 - any unreadable image is skipped and listed
                skipped.append({"index": i, "path": image_path(dataset, i), "error": str(err)})
        chunk = np.asarray(kept, dtype=np.int64)
    return (preprocess.batch_array(images) if len(images) else None), chunk, skipped


def check_picklable(dataset: Dataset) -> None:
    """Raise a ValueError naming ``parallel`` when ``dataset`` cannot be sent to worker processes."""
    try:
        pickle.dumps(dataset)
    except Exception as err:  # noqa: BLE001 - pickling fails with many exception types
        raise ValueError(
            f"parallel='process' needs a picklable dataset; {dataset.name!r} is not ({type(err).__name__}: {err}); "
            "use parallel='thread'"
        ) from err


def picklable(dataset: Dataset) -> bool:
    try:
        check_picklable(dataset)
    except ValueError:
        return False
    return True


def auto_parallel(dataset: Dataset, n_images: int, num_workers: int, preprocess: Preprocess | None = None) -> str:
    """What ``parallel="auto"`` picks: ``"process"`` when ≥ 2 workers have enough images to pay back the
    processes' start (``AUTO_MIN_IMAGES["warm"]`` once a pool has run in this process, ``["cold"]`` before),
    the preprocessing has a fixed output of at most ``AUTO_MAX_SIDE`` pixels a side, the dataset pickles and
    ``__main__`` is safe to import in a worker; else ``"thread"`` (``docs/throughput.md``: the measurements)."""
    need = AUTO_MIN_IMAGES["warm" if worker_processes.started else "cold"]
    if num_workers < 2 or n_images < need or not worker_processes.main_is_importable():
        return "thread"
    size = None if preprocess is None else preprocess.output_size
    if preprocess is not None and (size is None or max(size) > AUTO_MAX_SIDE):
        return "thread"
    return "process" if picklable(dataset) else "thread"


def make_loader(
    dataset: Dataset,
    preprocess: Preprocess,
    batch_size: int = 64,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    num_workers: int | None = None,
    on_error: str = "raise",
    pin_memory: bool = False,
    parallel: str = "thread",
) -> Loader:
    """Batches of ``dataset[indices]`` (all by default) preprocessed by ``preprocess``, in order.

    Each batch is ``{"pixel_values": float [B, 3, H, W], "index": int64 [B], "label": int64 [B]}`` (``label``
    when the dataset has labels). ``num_workers`` workers prepare batches ahead (None: the available cores; 0:
    in the calling thread): threads (``parallel="thread"``, the default), processes (``"process"``; the dataset
    must pickle) or whichever ``auto_parallel`` picks (``"auto"``); the batches are the same bits whatever the kind and
    count. ``pin_memory``: page-locked batches (CUDA only; ignored without it). ``on_error``: ``"raise"`` (the
    first unreadable image raises, naming its file) or ``"skip"`` (left out and listed in ``loader.skipped``).
    """
    return Loader(
        dataset,
        preprocess,
        batch_size,
        indices=indices,
        num_workers=num_workers,
        on_error=on_error,
        pin_memory=pin_memory,
        parallel=parallel,
    )
