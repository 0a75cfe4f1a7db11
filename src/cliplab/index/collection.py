"""Index an image collection on disk: ``cliplab index MODEL IMAGE_DIR -o INDEX``.

The images under ``IMAGE_DIR`` (recursively; hidden files and folders skipped) are embedded in chunks of
``chunk_size`` images, each chunk written atomically to a work folder ``.<INDEX>.partial`` beside the index,
so an interrupted run resumes where it stopped (the work folder is keyed by the model and the file list:
a different job starts afresh). Under ``torchrun`` every rank embeds the chunks ``c ≡ rank (mod world)``;
rank 0 then merges all chunks, in file order, into a :class:`~cliplab.index.VectorIndex` (exact for small
collections, IVF for large ones; see :meth:`VectorIndex.build`) and saves it atomically.

Run again on an existing index to add the images that are new since (incremental add); files whose size or
modification time changed, and files that vanished, are reported (``--rebuild`` re-indexes everything).
Unreadable images are skipped and listed, never fatal. Each item's metadata is ``{"path": <relative POSIX
path>, "size": bytes, "mtime_ns": ...}``; the manifest's ``info`` holds the collection root and the model's
fingerprint, which :mod:`cliplab.serve` checks before answering queries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from cliplab._io import atomic_path
from cliplab.data.base import stable_hash
from cliplab.data.folders import IMAGE_EXTENSIONS, ImageFile, scan_images
from cliplab.data.loader import ImageList, make_loader
from cliplab.index.vector_index import MANIFEST, VectorIndex
from cliplab.models.base import Model
from cliplab.models.precision import autocast, resolve_precision

log = logging.getLogger(__name__)

#: skipped files listed in the manifest (the count is always exact)
MAX_LISTED = 100


@dataclass
class IndexSummary:
    """What :func:`index_images` did (rank 0 reports the merged result; other ranks their shard)."""

    index: str
    root: str
    total: int = 0  # images in the index after the run
    found: int = 0  # image files under the root
    added: int = 0
    embedded_here: int = 0  # images this process embedded (not counting resumed chunks)
    resumed_chunks: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    kind: str | None = None
    backend: str | None = None
    rank: int = 0
    world_size: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dist() -> tuple[int, int, Any]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def _barrier(dist: Any) -> None:
    if dist is not None:
        dist.barrier()


def _embed_chunk(
    model: Model,
    root: Path,
    files: Sequence[ImageFile],
    batch_size: int,
    bar: tqdm,
    num_workers: int | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, list[int], list[dict[str, str]]]:
    """Features of the readable images of ``files``, their positions in ``files``, and the skipped ones.

    Images are read by ``cliplab.data.make_loader`` (``num_workers`` threads, ``on_error="skip"``).
    """
    cuda = model.device.type == "cuda"
    images = ImageList([root / f.path for f in files])
    loader = make_loader(
        images, model.preprocess, batch_size, num_workers=num_workers, on_error="skip", pin_memory=cuda
    )
    feats: list[torch.Tensor] = []
    rows: list[int] = []
    seen = 0
    with torch.inference_mode():
        for batch in loader:
            with autocast(precision, model.device):
                feats.append(
                    model.image_features(batch["pixel_values"].to(model.device, non_blocking=cuda)).float().cpu()
                )
            rows += batch["index"].tolist()
            bar.update(len(rows) + len(loader.skipped) - seen)
            seen = len(rows) + len(loader.skipped)
    skipped = [{"path": files[s["index"]].path, "error": s["error"]} for s in loader.skipped]
    bar.update(len(files) - seen)
    out = torch.cat(feats) if feats else torch.zeros(0, model.embed_dim)
    return out, rows, skipped


def _save_chunk(path: Path, features: torch.Tensor, rows: list[int], skipped: list[dict[str, str]], key: str) -> None:
    with atomic_path(path) as tmp:
        save_file(
            {"features": features.contiguous(), "rows": torch.tensor(rows, dtype=torch.int64)},
            str(tmp),
            metadata={"job": key, "skipped": json.dumps(skipped)},
        )


def _load_chunk(path: Path, key: str) -> tuple[torch.Tensor, list[int], list[dict[str, str]]] | None:
    """A finished chunk of this job, or None if absent, from another job or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("job") != key:
                return None
            return fh.get_tensor("features"), fh.get_tensor("rows").tolist(), json.loads(meta.get("skipped", "[]"))
    except Exception:  # noqa: BLE001 - a damaged chunk is recomputed
        return None


def _existing(output: Path, root: Path, model: Model, rebuild: bool) -> VectorIndex | None:
    if not output.exists():
        return None
    if not output.is_dir():
        raise ValueError(f"{output} exists and is not a directory: choose another -o path")
    if not (output / MANIFEST).is_file():
        if any(output.iterdir()):
            raise ValueError(f"{output} exists and is not a cliplab index (no {MANIFEST}): refusing to overwrite it")
        return None
    if rebuild:
        return None
    index = VectorIndex.load(output)
    info = index.info
    if info.get("root") != str(root):
        raise ValueError(
            f"the index {output} was built from {info.get('root')!r}, not {str(root)!r}: pass that folder to add "
            "new images, or --rebuild to index this one instead"
        )
    if info.get("model_fingerprint") != model.fingerprint():
        raise ValueError(
            f"the index {output} was built with another model ({index.model!r}, fingerprint "
            f"{info.get('model_fingerprint')}); its vectors would not be comparable: use the same model, or --rebuild"
        )
    return index


def index_images(
    model: Model,
    image_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model_spec: str | None = None,
    kind: str = "auto",
    exact_threshold: int = 100_000,
    rebuild: bool = False,
    batch_size: int = 64,
    chunk_size: int = 1024,
    progress: bool = True,
    num_workers: int | None = None,
    precision: str | None = None,
) -> IndexSummary:
    """Embed the images under ``image_dir`` with ``model`` and write (or extend) the index ``output``.

    Resumable (finished chunks are kept in ``.<output>.partial`` until the index is saved), sharded across
    ``torch.distributed`` ranks when a process group is initialised (every rank must call this), incremental
    on an existing index. ``model_spec`` is stored in the manifest so that ``cliplab serve`` can load the model.
    ``num_workers`` decode threads and ``precision`` autocast as in ``cliplab.features.embed`` (defaults:
    ``cliplab.features.encoding_options``, else the available cores and fp16 on CUDA / fp32 elsewhere).
    """
    from cliplab.features.embedding import encoding_option

    num_workers = encoding_option("num_workers", num_workers)
    precision = resolve_precision(encoding_option("precision", precision), model.device)
    start = time.perf_counter()
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    rank, world, dist = _dist()
    root = Path(image_dir).expanduser().resolve()
    output = Path(output).expanduser().resolve()
    if output == root or root.is_relative_to(output):
        raise ValueError(f"the index {output} must not contain the image folder {root}")
    files = scan_images(root)
    if not files:
        raise ValueError(f"{root} contains no image files ({', '.join(IMAGE_EXTENSIONS)})")
    existing = _existing(output, root, model, rebuild)
    summary = IndexSummary(index=str(output), root=str(root), found=len(files), rank=rank, world_size=world)

    # path -> (size, mtime_ns, ctime_ns) as indexed; ctime is None for entries indexed before it was recorded
    known: dict[str, tuple[int | None, int | None, int | None]] = {}
    if existing is not None:
        for item in existing.get_metadata(range(len(existing))):
            if item and "path" in item:
                known[item["path"]] = (item.get("size"), item.get("mtime_ns"), item.get("ctime_ns"))
    present = {f.path for f in files}
    todo = [f for f in files if f.path not in known]

    def _changed(f: Any) -> bool:
        size, mtime, ctime = known[f.path]
        return (size, mtime) != (f.size, f.mtime_ns) or (ctime is not None and ctime != f.ctime_ns)

    summary.changed = [f.path for f in files if f.path in known and _changed(f)]
    summary.missing = sorted(p for p in known if p not in present)

    key = stable_hash(
        {
            "model": model.fingerprint(),
            "preprocess": model.preprocess.fingerprint(),
            "root": str(root),
            "files": [(f.path, f.size, f.mtime_ns, f.ctime_ns) for f in todo],
            "chunk_size": chunk_size,
            **({} if precision == "fp32" else {"precision": precision}),
        }
    )
    work = output.parent / f".{output.name}.partial"
    if todo:
        if rank == 0:
            job = work / "job.json"
            if work.exists() and (not job.is_file() or json.loads(job.read_text()).get("key") != key):
                shutil.rmtree(work)
            work.mkdir(parents=True, exist_ok=True)
            job.write_text(json.dumps({"key": key, "root": str(root), "images": len(todo)}))
        _barrier(dist)
        n_chunks = -(-len(todo) // chunk_size)
        mine = [c for c in range(n_chunks) if c % world == rank]
        bounds = {c: (c * chunk_size, min((c + 1) * chunk_size, len(todo))) for c in mine}
        done = [c for c in mine if _load_chunk(work / f"chunk-{c:06d}.safetensors", key) is not None]
        summary.resumed_chunks = len(done)
        total = sum(hi - lo for lo, hi in bounds.values())
        resumed = sum(bounds[c][1] - bounds[c][0] for c in done)
        desc = "index" if world == 1 else f"index rank {rank}/{world}"
        if resumed:
            log.info("resuming: %d of %d images already embedded in %s", resumed, total, work)
        was_training = model.module.training
        model.module.eval()
        try:
            with tqdm(total=total, initial=resumed, disable=not progress, desc=desc, unit="img") as bar:
                for c in mine:
                    if c in done:
                        continue
                    lo, hi = bounds[c]
                    feats, rows, skipped = _embed_chunk(
                        model, root, todo[lo:hi], batch_size, bar, num_workers, precision
                    )
                    _save_chunk(work / f"chunk-{c:06d}.safetensors", feats, [lo + r for r in rows], skipped, key)
                    summary.embedded_here += hi - lo
        finally:
            model.module.train(was_training)
        _barrier(dist)

    failure: BaseException | None = None
    if rank == 0:
        try:
            index = _merge(
                existing, work, key, todo, chunk_size, model, model_spec, root, kind, exact_threshold, summary
            )
            summary.total, summary.kind, summary.backend = len(index), index.kind, index.backend
            if todo:
                shutil.rmtree(work, ignore_errors=True)
        except Exception as err:  # noqa: BLE001 - re-raised below, after telling the other ranks
            failure = err
    if dist is not None:  # the other ranks learn whether rank 0 saved the index (instead of waiting forever)
        message = [None if failure is None else (isinstance(failure, ValueError), str(failure))]
        dist.broadcast_object_list(message, src=0)
        if rank != 0 and message[0] is not None:
            user_error, text = message[0]
            raise (ValueError if user_error else RuntimeError)(f"rank 0 could not build the index: {text}")
    if failure is not None:
        raise failure
    if summary.changed:
        log.warning(
            "%d indexed file(s) changed since they were indexed (e.g. %s): --rebuild to re-embed them",
            len(summary.changed),
            summary.changed[0],
        )
    if summary.missing:
        log.warning("%d indexed file(s) no longer exist (e.g. %s)", len(summary.missing), summary.missing[0])
    summary.seconds = time.perf_counter() - start
    return summary


def _merge(
    existing: VectorIndex | None,
    work: Path,
    key: str,
    todo: list[ImageFile],
    chunk_size: int,
    model: Model,
    model_spec: str | None,
    root: Path,
    kind: str,
    exact_threshold: int,
    summary: IndexSummary,
) -> VectorIndex:
    """Rank 0: gather every chunk in file order, build or extend the index, save it atomically."""
    feats, rows = [], []
    skipped: list[dict[str, str]] = []
    for c in range(-(-len(todo) // chunk_size)):
        chunk = _load_chunk(work / f"chunk-{c:06d}.safetensors", key)
        if chunk is None:
            raise RuntimeError(f"chunk {c} of the job is missing from {work}: a rank failed; run the command again")
        feats.append(chunk[0])
        rows += chunk[1]
        skipped += chunk[2]
    summary.skipped = skipped
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["error"])
    vectors = torch.cat(feats) if feats else torch.zeros(0, model.embed_dim)
    metadata = [todo[r].meta() for r in rows]
    info = {
        "root": str(root),
        "model_fingerprint": model.fingerprint(),
        "preprocess": model.preprocess.fingerprint(),
        # unreadable files are never indexed, so each run retries them all: this run's list is the current one
        "skipped_count": len(skipped),
        "skipped": skipped[:MAX_LISTED],
    }
    if existing is None:
        if vectors.shape[0] == 0:
            raise ValueError(f"none of the {len(todo)} image files under {root} could be read")
        index = VectorIndex.build(
            vectors, kind=kind, metadata=metadata, model=model_spec, exact_threshold=exact_threshold, info=info
        )
    else:
        index = existing
        if vectors.shape[0]:
            index.add(vectors, metadata)
        index.info.update(info)
        if model_spec:
            index.model = model_spec
    summary.added = int(vectors.shape[0])
    if todo or existing is None:
        index.save(summary.index)
    return index
