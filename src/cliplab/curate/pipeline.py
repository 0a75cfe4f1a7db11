"""``curate_dataset(data, output, config)``: filter a caption dataset into a new caption file and a JSON report.

Order: unreadable images, caption length, language, CLIP score, near-duplicates, MetaCLIP balancing; a pair is
removed by the first filter that rejects it, and the report lists every removed pair with its filter and reason.
The output (``.csv``, ``.tsv`` or ``.jsonl``, image paths relative to its folder) and the report
(``<output stem>.report.json``) are written atomically.

Idempotent: what depends on the whole data — the CLIP-score threshold a ``top_fraction`` resolves to, the
per-concept counts of balancing — is resolved once and recorded in the report (``resolved``). Curating a file
this function wrote, with the same config, reuses those values (the report's recorded hash of the file must
match), so it keeps every pair again; balancing draws depend on the pair's content and the seed only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cliplab.curate import filters as F

DEDUP_MODES = ("images", "captions", "pairs")
OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl")


@dataclass
class CurateConfig:
    """What to filter. ``None`` / 0 switches a filter off.

    ``min_words`` / ``max_words``: caption length. ``min_latin``: minimum share of Latin letters; ``vocabulary`` +
    ``min_known``: minimum share of words from a word list. ``clip_threshold`` or ``clip_top_fraction``: CLIP-score
    filtering (cosine of image and caption, model needed). ``dedup`` (``images``, ``captions`` or ``pairs``) at
    cosine ``dedup_threshold``. ``concepts`` + ``balance_t``: MetaCLIP balancing. ``seed``: balancing draws.
    """

    min_words: int = 0
    max_words: int | None = None
    min_latin: float = 0.0
    vocabulary: list[str] | None = None
    min_known: float = 0.0
    clip_threshold: float | None = None
    clip_top_fraction: float | None = None
    dedup: str | None = None
    dedup_threshold: float = 0.95
    concepts: list[str] | None = None
    balance_t: int | None = None
    seed: int = 0
    model: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.clip_threshold is not None and self.clip_top_fraction is not None:
            raise ValueError("give a CLIP-score threshold or a top fraction, not both")
        if self.clip_top_fraction is not None and not 0 < self.clip_top_fraction <= 1:
            raise ValueError(f"clip_top_fraction must be in (0, 1], got {self.clip_top_fraction}")
        if self.dedup is not None and self.dedup not in DEDUP_MODES:
            raise ValueError(f"dedup must be one of {', '.join(DEDUP_MODES)}, got {self.dedup!r}")
        if not -1.0 <= self.dedup_threshold <= 1.0:
            raise ValueError(f"dedup_threshold is a cosine in [-1, 1], got {self.dedup_threshold}")
        if (self.balance_t is None) != (not self.concepts):
            raise ValueError("balancing needs both a concept list and its threshold t")
        if self.min_words < 0 or (self.max_words is not None and self.max_words < self.min_words):
            raise ValueError(f"caption length bounds are invalid: {self.min_words}..{self.max_words}")

    @property
    def needs_model(self) -> bool:
        return self.clip_threshold is not None or self.clip_top_fraction is not None or self.dedup is not None


def report_path(output: str | os.PathLike) -> Path:
    """Where the report of a curated file goes: ``<stem>.report.json`` beside it; inside a shard directory,
    ``curation.report.json``."""
    out = Path(output)
    if out.suffix.lower() not in OUTPUT_SUFFIXES + (".json",):
        return out / "curation.report.json"
    return out.with_name(out.stem + ".report.json")


@dataclass
class _Input:
    dataset: Any
    names: list[str]  # per image: its path, or its shard key
    paths: list[Path] | None  # image files (caption files), None for webdataset shards
    captions: list[str]
    t2i: np.ndarray
    source: Path | None  # the caption file or the shard root (its report makes a re-run idempotent)
    split: str = "test"

    def digest(self) -> str:
        if self.source is None:
            return ""
        if self.paths is None:
            from cliplab.curate.shard_output import shards_digest

            return shards_digest(self.source, self.split)
        return _sha256(self.source)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(data: str | os.PathLike) -> _Input:
    from cliplab.data.folders import CaptionDataset

    path = Path(data).expanduser()
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json") and not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        ds = CaptionDataset(path, check_files=False)  # missing images are curated away, not an error
        paths = list(ds.paths)
        return _Input(ds, [str(p) for p in paths], paths, list(ds.captions), np.asarray(ds.text_to_image), path)
    from cliplab.data import load_dataset

    loaded = load_dataset(str(data))
    if not loaded.captions:
        raise ValueError(f"{data}: curate needs captioned data (a caption file or captioned wds: shards)")
    t2i = np.asarray(loaded.text_to_image)
    loaded_paths = getattr(loaded, "paths", None)
    if loaded_paths is not None:
        paths = [Path(p) for p in loaded_paths]
        return _Input(loaded, [str(p) for p in paths], paths, list(loaded.captions), t2i, None)
    if hasattr(loaded, "index") and hasattr(loaded, "keys"):  # webdataset shards (cliplab.data.sources.wds)
        shard_root = getattr(loaded, "root", None)
        root = None if getattr(loaded, "from_pattern", True) or shard_root is None else Path(shard_root)
        keys = list(loaded.keys)
        return _Input(loaded, keys, None, list(loaded.captions), t2i, root, getattr(loaded, "split", "test"))
    raise ValueError(f"{data}: curate reads caption files and wds: shards, not {type(loaded).__name__}")


def _previous(source: _Input, config: dict[str, Any]) -> dict[str, Any]:
    """The ``resolved`` values of the report that describes ``source``, when it was written with ``config``."""
    if source.source is None or not report_path(source.source).is_file():
        return {}
    try:
        rep = json.loads(report_path(source.source).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if rep.get("config") != config or rep.get("output_sha256") != source.digest():
        return {}
    return rep.get("resolved") or {}


def _readable(inp: _Input, progress: bool) -> dict[int, str]:
    from cliplab.imaging.decoding import decode_image

    bad = {}
    for i in tqdm(range(len(inp.names)), disable=not progress, desc="check images", unit="img"):
        try:
            if inp.paths is None:
                inp.dataset.image(i)
                continue
            decode_image(inp.paths[i], name=inp.names[i])  # pixel bombs refused from the header
        except FileNotFoundError:
            bad[i] = f"image file not found: {inp.names[i]}"
        except Exception as err:  # noqa: BLE001 - any unreadable image is removed with its error
            bad[i] = str(err) if inp.paths is not None else f"unreadable image {inp.names[i]}: {err}"
    return bad


def _features(model: Any, dataset: Any, images: np.ndarray, captions: list[str], batch_size: int,
              progress: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Normalised image features (NaN rows for images not in ``images``) and caption features."""
    from cliplab.features.embedding import embed_images

    img = np.full((len(dataset), model.embed_dim), np.nan, dtype=np.float32)
    if images.size:
        feats = embed_images(model, dataset, images.tolist(), batch_size=batch_size, progress=progress)
        img[images] = torch.nn.functional.normalize(feats.float(), dim=1).numpy()
    txt = model.encode_texts(captions, batch_size=256, progress=progress) if captions else torch.zeros(0, 1)
    return img, torch.nn.functional.normalize(txt.float(), dim=1).numpy()


def _render(output: Path, rows: list[tuple[Path, str]]) -> str:
    """The curated file's text: ``image,caption`` rows (JSONL objects), image paths relative to its folder."""
    suffix = output.suffix.lower()
    base = output.parent.resolve()

    def rel(p: Path) -> str:
        p = p if p.is_absolute() else p.resolve()
        try:
            return os.path.relpath(p, base)
        except ValueError:  # another drive (Windows)
            return str(p)

    buf = io.StringIO(newline="")
    if suffix == ".jsonl":
        for p, c in rows:
            buf.write(json.dumps({"image": rel(p), "caption": c}, ensure_ascii=False) + "\n")
    else:
        w = csv.writer(buf, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
        w.writerow(["image", "caption"])
        w.writerows([rel(p), c] for p, c in rows)
    return buf.getvalue()


def _dump(report: dict[str, Any], to_jsonable: Any) -> str:
    return json.dumps(to_jsonable(report), indent=2, ensure_ascii=False) + "\n"


def curate_dataset(
    data: str | os.PathLike,
    output: str | os.PathLike,
    config: CurateConfig | None = None,
    *,
    model: Any = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Curate ``data`` (a caption file or a captioned data spec with image files) into ``output``; returns the
    report (also written to :func:`report_path`). ``model``: a loaded model, or ``config.model`` is loaded."""
    from cliplab._io import atomic_path, to_jsonable

    config = config or CurateConfig()
    output = Path(output).expanduser()
    shards = output.suffix == ""
    if not shards and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{output}: the curated file must be .csv, .tsv or .jsonl (or a directory for shards)")
    cfg = {k: v for k, v in asdict(config).items() if k != "model"}
    inp = _read(data)
    if shards != (inp.paths is None):
        raise ValueError(
            f"{output}: wds: input is written as shards into a directory, a caption file as a .csv/.tsv/.jsonl"
        )
    dataset, captions, t2i, names = inp.dataset, inp.captions, inp.t2i, inp.names
    resolved_before = _previous(inp, cfg)
    if config.needs_model and model is None:
        if config.model is None:
            raise ValueError("CLIP-score filtering and deduplication need a model (config.model or model=)")
        from cliplab.models import load_model

        model = load_model(config.model)
    removed: dict[int, tuple[str, str]] = {}  # caption row -> (filter, reason)

    def drop(name: str, found: dict[int, str], rows: np.ndarray | None = None) -> None:
        for i, why in found.items():
            row = int(rows[i]) if rows is not None else i
            removed.setdefault(row, (name, why))

    def alive() -> np.ndarray:
        return np.array([m for m in range(len(captions)) if m not in removed], dtype=np.int64)

    bad_images = _readable(inp, progress)
    drop("unreadable", {m: bad_images[int(t2i[m])] for m in range(len(captions)) if int(t2i[m]) in bad_images})
    drop("length", F.length_filter(captions, config.min_words, config.max_words))
    if config.min_latin > 0 or (config.vocabulary and config.min_known > 0):
        drop("language", F.language_filter(captions, config.min_latin, config.vocabulary, config.min_known))
    resolved: dict[str, Any] = {}
    if config.needs_model:
        rows = alive()
        good_images = np.unique(t2i[rows]) if rows.size else np.zeros(0, dtype=np.int64)
        img, txt_alive = _features(model, dataset, good_images, [captions[m] for m in rows], batch_size, progress)
        txt = np.full((len(captions), img.shape[1]), np.nan, dtype=np.float32)
        txt[rows] = txt_alive
        scores = np.einsum("md,md->m", img[t2i], txt)
        if config.clip_threshold is not None or config.clip_top_fraction is not None:
            if config.clip_threshold is not None:
                threshold = float(config.clip_threshold)
            elif "clip_threshold" in resolved_before:
                threshold = float(resolved_before["clip_threshold"])
            elif config.clip_top_fraction is not None:  # just below the last kept score: re-scoring noise (~1e-7)
                # must not flip it on a re-run
                threshold = F.clip_score_threshold(scores[rows], config.clip_top_fraction) - 1e-5
            resolved["clip_threshold"] = threshold
            drop("clip_score", F.clip_score_filter(scores, threshold))
        if config.dedup is not None:
            rows = alive()
            feats = {"images": img[t2i], "captions": txt, "pairs": img[t2i] + txt}[config.dedup]
            groups = t2i if config.dedup == "images" else None
            found = F.near_duplicates(
                feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12),
                config.dedup_threshold,
                candidates=rows,
                groups=groups,
                what=config.dedup[:-1],
            )
            drop("dedup", found)
    if config.balance_t is not None:
        rows = alive()
        keys = [f"{Path(names[int(t2i[m])]).name}\x00{captions[m]}" for m in rows]
        counts = resolved_before.get("concept_counts")
        found, counts = F.balance(
            [captions[m] for m in rows], keys, config.concepts or [], config.balance_t, seed=config.seed, counts=counts
        )
        resolved["concept_counts"] = counts
        drop("balance", found, rows)
    kept = alive()
    paths = inp.paths  # None exactly when the output is shards
    text = "" if shards or paths is None else _render(output, [(paths[int(t2i[m])], captions[m]) for m in kept])
    by_reason: dict[str, int] = {}
    for name, _ in removed.values():
        by_reason[name] = by_reason.get(name, 0) + 1
    report = {
        "input": str(data),
        "output": str(output),
        "output_sha256": None if shards else hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "model": getattr(model, "spec", None) if model is not None else None,
        "config": cfg,
        "resolved": resolved,
        "counts": {
            "input_pairs": len(captions),
            "kept_pairs": int(kept.size),
            "removed_pairs": len(removed),
            "input_images": len(names),
            "kept_images": int(np.unique(t2i[kept]).size) if kept.size else 0,
            "by_filter": by_reason,
        },
        "removed": [
            {"row": m, "image": names[int(t2i[m])], "caption": captions[m], "filter": f, "reason": why}
            for m, (f, why) in sorted(removed.items())
        ],
    }
    # both files appear together or not at all: each is written to a temporary sibling, then the report and
    # the curated file replace their targets (the output last, so a report never describes a file not there)
    if shards:  # the whole directory (shards and report) is swapped in at once
        from cliplab._io import atomic_dir
        from cliplab.curate.shard_output import shards_digest, write_shards

        samples: dict[int, list[str]] = {}
        for m in kept:
            samples.setdefault(int(t2i[m]), []).append(captions[m])
        with atomic_dir(output) as tmp:
            write_shards(tmp, dataset, sorted(samples.items()), inp.split)
            report["output_sha256"] = shards_digest(tmp, inp.split)
            (tmp / report_path(output).name).write_text(_dump(report, to_jsonable), encoding="utf-8")
        return report
    # both files appear together or not at all: each is written to a temporary sibling, then the report and
    # the curated file replace their targets (the output last, so a report never describes a file not there)
    with atomic_path(output) as tmp_out, atomic_path(report_path(output)) as tmp_report:
        tmp_out.write_text(text, encoding="utf-8", newline="")
        tmp_report.write_text(_dump(report, to_jsonable), encoding="utf-8")
    return report
