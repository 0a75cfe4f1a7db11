"""``embed(model, dataset)``: batched encoding with an on-disk cache keyed by model, data, preprocessing, precision.

Images are read by ``cliplab.data.make_loader`` (``num_workers`` threads decoding and preprocessing ahead,
pinned memory and non-blocking copies on CUDA) and encoded under ``precision`` autocast
(``cliplab.models.precision``); features are stored float32. ``encoding_options`` sets the defaults the
CLI's ``--num-workers`` / ``--precision`` give every call inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cliplab
from cliplab._io import cache_home
from cliplab.data.base import Dataset, check_nonempty, stable_hash
from cliplab.data.loader import make_loader
from cliplab.features.store import FORMAT_VERSION, Features
from cliplab.models.base import Model
from cliplab.models.precision import autocast, resolve_precision
from cliplab.progress import current_display, step

log = logging.getLogger(__name__)

_OPTIONS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("cliplab_encoding", default=None)


@contextlib.contextmanager
def encoding_options(
    *, num_workers: int | None = None, precision: str | None = None, skip_bad_images: bool | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Within the block, ``embed``/``embed_images``/``embed_views`` calls that leave ``num_workers``,
    ``precision`` or ``skip_bad_images`` unset use these (None: keep the built-in default). The CLI wraps every
    command in it. Yields the list of images skipped as unreadable inside the block (``{"file", "error"}``
    each; see ``skipped_images``)."""
    given = {
        k: v
        for k, v in (("num_workers", num_workers), ("precision", precision), ("skip_bad_images", skip_bad_images))
        if v is not None
    }
    skipped: list[dict[str, Any]] = []
    token = _OPTIONS.set({**(_OPTIONS.get() or {}), **given, "skipped": skipped})
    try:
        yield skipped
    finally:
        _OPTIONS.reset(token)


def encoding_option(name: str, value: Any) -> Any:
    """``value``, or when it is None the ``encoding_options`` default for ``name`` (None if none is set)."""
    return (_OPTIONS.get() or {}).get(name) if value is None else value


def skipped_images() -> list[dict[str, Any]]:
    """The images skipped as unreadable so far inside the innermost ``encoding_options`` block, in order,
    each ``{"file": path or None, "error": message}`` ([] outside any block)."""
    return list((_OPTIONS.get() or {}).get("skipped", []))


def _note_skipped(dataset: Dataset, skipped: list[dict[str, Any]]) -> None:
    """Log each image ``on_error="skip"`` left out and record it for ``skipped_images``."""
    record = (_OPTIONS.get() or {}).get("skipped")
    for s in skipped:
        log.warning("skipped unreadable image %s of %s: %s", s["path"] or f"#{s['index']}", dataset.name, s["error"])
        if record is not None:
            record.append({"file": s["path"], "error": s["error"], "dataset": dataset.name})


def images_read(dataset: Dataset, features: Features) -> Dataset:
    """``dataset`` without the images ``skip_bad_images`` left out of ``features`` (``dataset`` itself when none
    were): row ``i`` of ``features`` is image ``i`` of the result, for code that pairs the two."""
    skipped = features.meta.get("skipped_images")
    if not skipped:
        return dataset
    dropped = {int(s["index"]) for s in skipped}
    return dataset.subset([i for i in range(len(dataset)) if i not in dropped])


def cache_key(model: Model, dataset: Dataset, precision: str = "fp32") -> str:
    """Hash of the model's weights/tokenisation/preprocessing, the dataset's content definition and the
    inference precision (``fp32`` features never equal ``bf16`` ones bit for bit)."""
    key: dict[str, Any] = {
        "model": model.fingerprint(),
        "preprocess": model.preprocess.fingerprint(),
        "data": dataset.fingerprint(),
        "format": FORMAT_VERSION,
    }
    if precision != "fp32":  # fp32 keeps the key it had before precisions existed
        key["precision"] = precision
    return stable_hash(key)


def default_cache_dir() -> Path:
    return cache_home() / "features"


def embed_images(
    model: Model,
    dataset: Dataset,
    indices: Sequence[int] | None = None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    num_workers: int | None = None,
    precision: str | None = None,
    skip_bad_images: bool | None = None,
) -> torch.Tensor:
    """Image features of ``dataset[indices]`` (all by default); preprocessing overlaps the forward pass.

    ``indices`` lets a caller embed one shard (e.g. ``range(rank, N, world)`` under torchrun). Batches come
    from ``cliplab.data.make_loader`` (``num_workers`` threads; None: the available cores; 0: in this
    thread); ``precision`` ``fp32``/``bf16``/``fp16`` autocast (None: fp16 on CUDA, fp32 elsewhere).
    The features (float32) do not depend on ``num_workers``. ``skip_bad_images``: leave unreadable images out
    (logged and listed by ``skipped_images``; the result then has fewer rows) instead of raising.
    """
    return _encode_images(model, dataset, indices, batch_size, progress, num_workers, precision, skip_bad_images)[0]


def _encode_images(
    model: Model,
    dataset: Dataset,
    indices: Sequence[int] | None,
    batch_size: int,
    progress: bool,
    num_workers: int | None,
    precision: str | None,
    skip_bad_images: bool | None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """``embed_images`` and what it skipped (the loader's ``{"index", "path", "error"}`` entries)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    precision = resolve_precision(encoding_option("precision", precision), model.device)
    cuda = model.device.type == "cuda"
    loader = make_loader(
        dataset,
        model.preprocess,
        batch_size,
        indices=indices,
        num_workers=encoding_option("num_workers", num_workers),
        pin_memory=cuda,
        on_error="skip" if encoding_option("skip_bad_images", skip_bad_images) else "raise",
    )
    was_training = model.module.training
    model.module.eval()
    out = []
    try:
        with (
            torch.inference_mode(),
            step(f"embed {dataset.name}", int(loader.indices.size), unit="img", enabled=progress) as bar,
        ):
            for batch in loader:
                pixels = batch["pixel_values"]
                with autocast(precision, model.device):
                    out.append(model.image_features(pixels.to(model.device, non_blocking=cuda)).float().cpu())
                bar.update(pixels.shape[0])
    finally:
        model.module.train(was_training)
    _note_skipped(dataset, loader.skipped)
    if not out:
        raise ValueError(f"no image of {dataset.name!r} could be read ({len(loader.skipped)} skipped as unreadable)")
    return torch.cat(out), loader.skipped


def embed(
    model: Model,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None | bool = None,
    progress: bool = True,
    num_workers: int | None = None,
    precision: str | None = None,
    skip_bad_images: bool | None = None,
) -> Features:
    """Embed every image (and caption) of ``dataset`` with ``model``.

    The result is cached in ``cache_dir`` (default ``$CLIPLAB_HOME/features``; ``False`` disables
    caching) under a key of model weights, tokenisation, preprocessing, data and precision: a second call
    with the same loads from disk, any change recomputes. ``num_workers``: decode/preprocess threads (None:
    the available cores; results do not depend on it). ``precision``: ``fp32`` | ``bf16`` | ``fp16``
    autocast (None: fp16 on CUDA, fp32 elsewhere); features are stored float32 either way.
    ``skip_bad_images``: unreadable images are left out (with their labels and captions), logged, listed by
    ``skipped_images`` and in ``meta["skipped_images"]``; such partial features are never cached.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a cliplab Model (see cliplab.load_model), got {type(model).__name__}")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a cliplab Dataset, got {type(dataset).__name__}")
    check_nonempty(dataset)
    precision = resolve_precision(encoding_option("precision", precision), model.device)
    key = cache_key(model, dataset, precision)
    path = None
    if cache_dir is not False:
        root = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
        path = root / f"{key}.safetensors"
        if path.is_file():
            try:
                feats = Features.load(path)
                log.info("features cache hit: %s", path)
                return feats
            except ValueError as err:  # a damaged cache entry is recomputed, never trusted
                log.warning("ignoring unreadable cache entry %s: %s", path, err)

    start = time.perf_counter()
    images, skipped = _encode_images(
        model, dataset, None, batch_size, progress, num_workers, precision, skip_bad_images
    )
    full = dataset
    if skipped:  # the features, labels and captions of the images that were read
        dropped = {int(s["index"]) for s in skipped}
        dataset = dataset.subset([i for i in range(len(full)) if i not in dropped])
    captions = dataset.captions
    texts = t2i = None
    if captions:
        shown = current_display() is not None  # in a run's status line; else encode_texts's own bar
        with step(f"encode {len(captions)} captions", enabled=progress and shown):
            texts = model.encode_texts(
                captions, batch_size=max(batch_size, 256), progress=progress and not shown, precision=precision
            )
        t2i = torch.as_tensor(dataset.text_to_image, dtype=torch.int64)
    labels = dataset.labels
    feats = Features(
        images=images,
        labels=None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.int64),
        classnames=list(dataset.classnames) if dataset.classnames else None,
        texts=texts,
        text_to_image=t2i,
        captions=list(captions) if captions else None,
        meta={
            "key": key,
            "model": model.spec,
            "model_fingerprint": model.fingerprint(),
            "geometry": model.geometry,
            "logit_scale": model.logit_scale,
            "logit_bias": model.logit_bias,
            "dataset": full.name,
            "dataset_fingerprint": full.fingerprint(),
            "preprocess": model.preprocess.fingerprint(),
            "precision": precision,
            "n_images": len(dataset),
            "seconds": round(time.perf_counter() - start, 3),
            "cliplab_version": cliplab.__version__,
        },
    )
    if skipped:
        feats.meta["skipped_images"] = [{"index": s["index"], "file": s["path"], "error": s["error"]} for s in skipped]
    elif path is not None:  # partial features are never cached
        feats.save(path)
    return feats


def embed_views(
    model: Model,
    dataset: Dataset,
    n_views: int = 10,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None | bool = None,
    progress: bool = True,
    num_workers: int | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Image features of ``n_views`` augmented views (random resized crop + flip): ``[V, N, D]``.

    The crop size is the model's input size; each view is cached like any dataset. Tip-Adapter averages
    the views, GDA concatenates them (see ``cliplab.adapt``).
    """
    from cliplab.data.augment import RandomResizedCrop, augmented_views

    size = model.preprocess.output_size or 224
    transform = RandomResizedCrop(size=size, scale=scale)
    views = augmented_views(dataset, n_views, transform, seed)
    return torch.stack(
        [
            embed(
                model,
                v,
                batch_size=batch_size,
                cache_dir=cache_dir,
                progress=progress,
                num_workers=num_workers,
                precision=precision,
            ).images
            for v in views
        ]
    )
