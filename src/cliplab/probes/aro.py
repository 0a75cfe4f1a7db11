"""ARO (Yuksekgonul et al., ICLR 2023, "When and why vision-language models behave like bags-of-words").

Data (https://github.com/mertyg/vision-language-models-are-bows; annotation files and the image zip are on
Google Drive, linked from its ``dataset_zoo/aro_datasets.py``):

* **VG-Relation** — ``visual_genome_relation.json``: a list of ``{"image_path", "bbox_x", "bbox_y", "bbox_w",
  "bbox_h", "relation_name", "true_caption", "false_caption"}``, images under ``images/`` (``vgr_vga_images.zip``);
  the image is cropped to the box. Metric: accuracy (true caption over the false one), overall and per relation
  (macro average over relations, as the paper reports).
* **VG-Attribution** — ``visual_genome_attribution.json``: the same with ``"attributes": [a, b]`` instead of a
  relation name; per attribute pair.
* **COCO-Order / Flickr30k-Order** — the Karpathy test split in BLIP's format (``coco_karpathy_test.json``:
  ``[{"image": "val2014/...jpg", "caption": [...]}, ...]``; ``flickr30k_test.json`` with ``flickr30k-images/``),
  each caption against four word-order perturbations; metric: precision@1 (the true caption ranks first).
  Perturbations here: shuffle the words within each trigram, shuffle the trigrams, and — when NLTK's POS tagger
  data is installed (``nltk.download("averaged_perceptron_tagger_eng")``) — shuffle nouns and adjectives, shuffle
  everything else (the paper's four, which used spaCy). ``info["perturbations"]`` says which ran.

A tie between the true and a false caption counts as wrong everywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cliplab.probes.base import ProbeImages, SelectionProbe, check_images, read_json, require_keys

_BOX = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


def _visual_genome(root: str | os.PathLike, file: str, name: str, kind_of: Callable[[dict], str]) -> SelectionProbe:
    root = Path(root).expanduser()
    path = root / file
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of test cases, got {type(data).__name__}")
    files, boxes, captions, kinds = [], [], [], []
    for i, row in enumerate(data):
        require_keys(row, ("image_path", *_BOX, "true_caption", "false_caption"), f"{path}: item {i}")
        files.append(root / "images" / row["image_path"])
        boxes.append(tuple(float(row[k]) for k in _BOX))
        captions.append([str(row["true_caption"]), str(row["false_caption"])])
        kinds.append(kind_of(row))
    if not captions:
        raise ValueError(f"{path} contains no test cases")
    check_images(files, path)
    return SelectionProbe(name, ProbeImages(files, boxes, name=name), np.arange(len(files)), captions, kinds)


def load_vg_relation(root: str | os.PathLike) -> SelectionProbe:
    """ARO VG-Relation from ``root`` (``visual_genome_relation.json`` and ``images/``); kinds = relation names."""
    return _visual_genome(
        root, "visual_genome_relation.json", "aro-vg-relation", lambda r: str(r.get("relation_name", ""))
    )


def load_vg_attribution(root: str | os.PathLike) -> SelectionProbe:
    """ARO VG-Attribution from ``root`` (its JSON and ``images/``); kinds: attribute pairs."""

    def kind(row: dict) -> str:
        attrs = row.get("attributes") or []
        return "_".join(str(a) for a in attrs[:2])

    return _visual_genome(root, "visual_genome_attribution.json", "aro-vg-attribution", kind)


# -- word-order perturbations ----------------------------------------------------------------------------------
def pre_caption(caption: str, max_words: int = 30) -> str:
    """Lower-case, drop ``.!"()*#:;~``, collapse spaces, keep ``max_words`` words (BLIP's caption clean-up)."""
    text = re.sub(r"\s{2,}", " ", re.sub(r"[.!\"()*#:;~]", " ", caption.lower())).strip()
    return " ".join(text.split(" ")[:max_words])


def _trigrams(words: list[str]) -> list[list[str]]:
    return [words[i : i + 3] for i in range(0, len(words), 3)]


def shuffle_within_trigrams(words: list[str], rng: np.random.Generator) -> list[str]:
    return [w for tri in _trigrams(words) for w in (tri[j] for j in rng.permutation(len(tri)))]


def shuffle_trigrams(words: list[str], rng: np.random.Generator) -> list[str]:
    tris = _trigrams(words)
    return [w for j in rng.permutation(len(tris)) for w in tris[j]]


def _pos_tagger() -> Callable[[list[str]], list[str]] | None:
    try:
        import nltk

        nltk.pos_tag(["a", "test"])
    except (ImportError, LookupError):
        return None
    return lambda words: [tag for _, tag in nltk.pos_tag(words)]


def _shuffle_class(words: list[str], tags: list[str], inside: bool, rng: np.random.Generator) -> list[str]:
    chosen = [i for i, t in enumerate(tags) if t.startswith(("NN", "JJ")) == inside]
    out = list(words)
    for i, j in zip(chosen, np.asarray(chosen)[rng.permutation(len(chosen))] if chosen else []):
        out[i] = words[int(j)]
    return out


def order_negatives(caption: str, rng: np.random.Generator, tagger: Callable | None = None) -> dict[str, str]:
    """The word-order perturbations of a (cleaned) caption by name."""
    words = caption.split()
    out = {
        "shuffle_within_trigrams": shuffle_within_trigrams(words, rng),
        "shuffle_trigrams": shuffle_trigrams(words, rng),
    }
    if tagger is not None:
        tags = tagger(words)
        out["shuffle_nouns_and_adj"] = _shuffle_class(words, tags, True, rng)
        out["shuffle_allbut_nouns_and_adj"] = _shuffle_class(words, tags, False, rng)
    return {k: " ".join(v) for k, v in out.items()}


def load_aro_order(root: str | os.PathLike, dataset: str = "coco", *, split: str = "test", seed: int = 0,
                   max_words: int = 30) -> SelectionProbe:  # fmt: skip
    """COCO-Order (``dataset="coco"``) or Flickr30k-Order (``"flickr"``) from ``root`` (the Karpathy JSON of BLIP
    and the images it names, relative to ``root``). One item per caption, kind ``order``."""
    if dataset not in ("coco", "flickr"):
        raise ValueError(f"dataset must be 'coco' or 'flickr', got {dataset!r}")
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    root = Path(root).expanduser()
    path = root / (f"coco_karpathy_{split}.json" if dataset == "coco" else f"flickr30k_{split}.json")
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of images, got {type(data).__name__}")
    tagger = _pos_tagger()
    files, image_index, captions = [], [], []
    used: list[str] = []
    for i, row in enumerate(data):
        require_keys(row, ("image", "caption"), f"{path}: item {i}")
        caps = [row["caption"]] if isinstance(row["caption"], str) else list(row["caption"])
        files.append(root / row["image"])
        for j, cap in enumerate(caps):
            rng = np.random.default_rng([seed, i, j, 3301])
            true = pre_caption(str(cap), max_words)
            neg = order_negatives(str(cap), rng, tagger)
            used = list(neg)
            captions.append([true, *(pre_caption(t, max_words) for t in neg.values())])
            image_index.append(i)
    if not captions:
        raise ValueError(f"{path} contains no captions")
    check_images(files, path)
    name = f"aro-{dataset}-order"
    rows = np.asarray(image_index, dtype=np.int64)
    return SelectionProbe(name, ProbeImages(files, name=name), rows, captions, ["order"] * len(captions),
                          info={"perturbations": used})  # fmt: skip
