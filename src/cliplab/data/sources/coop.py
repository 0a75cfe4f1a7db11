"""``coop:<dataset>:root=<dir>[,split=test]``: the Dassl/CoOp layout of the 11 few-shot datasets.

``root`` is CoOp's ``DATASET.ROOT``; each dataset lives in its folder there, as CoOp's ``DATASETS.md`` sets it
up (``<root>/oxford_pets/split_zhou_OxfordPets.json`` + ``images/``, ...). A ``split_zhou_*.json`` file is
``{"train" | "val" | "test": [[image path relative to the image folder, label, class name], ...]}``.
FGVCAircraft has no such file (``variants.txt`` + ``images_variant_<split>.txt``), nor has ImageNet
(``images/train/<wnid>/``, ``images/val/<wnid>/``, ``classnames.txt`` of ``<wnid> <name>`` lines; cliplab's
copy of CLIP's names when absent). ImageNet's test split is the official val images; it has no ``val`` split
(CoOp validates on the test set, which cliplab never selects hyper-parameters on), so ``split=val`` is refused.

Class names get CoOp's clean-up (``_`` → space, as its trainers do before prompting) and ``templates`` is
CoOp's one prompt for the dataset (``CUSTOM_TEMPLATES`` in ``trainers/zsclip.py``, e.g. "a photo of a {}, a
type of pet."). Few-shot sampling is Dassl's (``cliplab.data.sampling.dassl_few_shot``): ``k_shot(ds, k,
seed)`` on the train split gives CoOp's support set for that seed, on the val split CoOp's ``min(k, 4)``-shot
validation set. CoOp's cached ``split_fewshot/*.pkl`` files are never read (unpickling runs code).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cliplab.data.base import files_fingerprint, stable_hash
from cliplab.data.folders import ImageFileDataset
from cliplab.data.registry import register_data_source
from cliplab.data.sampling import dassl_few_shot, dassl_k_shot_indices

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CoopInfo:
    """Where CoOp keeps one dataset under ``root`` and how it reads it."""

    name: str  #: Dassl's dataset name (the key of CoOp's CUSTOM_TEMPLATES)
    folder: str  #: ``<root>/<folder>``
    images: str  #: image folder inside it, that split paths are relative to
    split_file: str | None  #: ``split_zhou_*.json``; None: FGVCAircraft / ImageNet's own layouts
    #: whether CoOp draws a few-shot validation set (ImageNet validates on its test set instead)
    fewshot_val: bool = True


DATASETS: dict[str, CoopInfo] = {
    info.name.lower(): info
    for info in (
        CoopInfo("ImageNet", "imagenet", "images", None, fewshot_val=False),
        CoopInfo("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
        CoopInfo("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
        CoopInfo("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
        CoopInfo("OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
        CoopInfo("Food101", "food-101", "images", "split_zhou_Food101.json"),
        CoopInfo("FGVCAircraft", "fgvc_aircraft", "images", None),
        CoopInfo("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
        CoopInfo("DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json"),
        CoopInfo("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json"),
        CoopInfo("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    )
}
_ALIASES = {
    "dtd": "describabletextures",
    "pets": "oxfordpets",
    "flowers": "oxfordflowers",
    "cars": "stanfordcars",
    "aircraft": "fgvcaircraft",
    "sun": "sun397",
    "caltech": "caltech101",
    "ucf": "ucf101",
}


def coop_dataset(name: str) -> CoopInfo:
    """The dataset named ``name``: Dassl's name or CoOp's folder, any case, ``_``/``-`` ignored (``oxford_pets``)."""
    key = name.lower().replace("_", "").replace("-", "")
    key = _ALIASES.get(key, key)
    for info in DATASETS.values():
        if key in (info.name.lower(), info.folder.replace("_", "").replace("-", "")):
            return info
    raise ValueError(
        f"coop: unknown dataset {name!r}; the CoOp datasets are {', '.join(i.name for i in DATASETS.values())} "
        f"(folders {', '.join(i.folder for i in DATASETS.values())})"
    )


def coop_templates() -> dict[str, str]:
    """CoOp's prompt per dataset (``{}`` = class name), from the shipped ``assets/coop_templates.json``."""
    text = resources.files("cliplab.data").joinpath("assets/coop_templates.json").read_text(encoding="utf-8")
    return json.loads(text)


def clean_classname(name: str) -> str:
    """CoOp's clean-up before prompting: ``american_pit_bull_terrier`` → ``american pit bull terrier``."""
    return name.replace("_", " ").strip()


Item = tuple[str, int, str]  # (absolute image path, label, raw class name)


def _read_split_json(path: Path, image_dir: Path) -> dict[str, list[Item]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(raw, dict) or not all(s in raw for s in SPLITS):
        raise ValueError(f"{path}: a Dassl split file is an object with 'train', 'val' and 'test' lists")
    out: dict[str, list[Item]] = {}
    for split in SPLITS:
        items = []
        for n, entry in enumerate(raw[split]):
            if not (isinstance(entry, list | tuple) and len(entry) == 3):
                raise ValueError(f"{path}: {split}[{n}] is not [image path, label, class name]: {entry!r}")
            impath, label, classname = entry
            try:
                label = int(label)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: {split}[{n}] has a non-integer label {label!r}") from err
            items.append((str(image_dir / impath), label, str(classname)))
        out[split] = items
    return out


def _read_aircraft(folder: Path, image_dir: Path) -> dict[str, list[Item]]:
    variants_file = folder / "variants.txt"
    if not variants_file.is_file():
        raise FileNotFoundError(f"coop:fgvc_aircraft: {variants_file} not found (FGVC-Aircraft's data/ folder)")
    names = [line.strip() for line in variants_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    label_of = {c: i for i, c in enumerate(names)}
    out: dict[str, list[Item]] = {}
    for split in SPLITS:
        path = folder / f"images_variant_{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"coop:fgvc_aircraft: {path} not found (FGVC-Aircraft's data/ folder)")
        items = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            imname, _, variant = line.strip().partition(" ")
            if variant not in label_of:
                raise ValueError(f"{path}:{lineno}: variant {variant!r} is not in {variants_file}")
            items.append((str(image_dir / f"{imname}.jpg"), label_of[variant], variant))
        out[split] = items
    return out


def _imagenet_names(folder: Path) -> dict[str, str]:
    """``<wnid> <name>`` lines of ``classnames.txt`` (CoOp's), or the shipped wnids and CLIP names."""
    path = folder / "classnames.txt"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        pairs = [line.strip().partition(" ") for line in lines if line.strip()]
        return {wnid: name for wnid, _, name in pairs}
    from cliplab.data.sources.imagenet import imagenet_classes

    wnids, names = imagenet_classes()
    return dict(zip(wnids, names))


def _read_imagenet(folder: Path, image_dir: Path) -> dict[str, list[Item]]:
    names = _imagenet_names(folder)
    out: dict[str, list[Item]] = {}
    for split, sub in (("train", "train"), ("test", "val")):
        split_dir = image_dir / sub
        if not split_dir.is_dir():
            raise FileNotFoundError(f"coop:imagenet: {split_dir} not found (CoOp's layout: images/train, images/val)")
        wnids = sorted(d.name for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith("."))
        unknown = [w for w in wnids if w not in names]
        if unknown:
            raise ValueError(f"coop:imagenet: class folders {unknown[:5]} of {split_dir} are not in classnames.txt")
        items: list[tuple[str, int, str]] = []
        for label, wnid in enumerate(wnids):
            files = sorted(f for f in os.listdir(split_dir / wnid) if not f.startswith("."))
            items.extend((str(split_dir / wnid / f), label, names[wnid]) for f in files)
        out[split] = items
    out["val"] = []  # CoOp validates on the test set ("Also used as the val set"); cliplab never does
    return out


class CoopDataset(ImageFileDataset):
    """One split of a CoOp dataset (see the module docstring); ``splits`` holds all three splits' items."""

    def __init__(self, info: CoopInfo, root: str | os.PathLike, split: str = "test", *, check_files: bool = True):
        if split not in SPLITS:
            raise ValueError(f"coop:{info.folder}: unknown split {split!r}; choose from {', '.join(SPLITS)}")
        self.info = info
        #: whether the dataset has a val split to select hyper-parameters on (not ImageNet: see the module)
        self.has_validation_split = info.fewshot_val
        self.root = Path(root).expanduser()
        self.split = split
        folder = self.root / info.folder
        if not folder.is_dir():
            raise FileNotFoundError(
                f"coop:{info.folder}: {folder} not found; root= is CoOp's DATASET.ROOT, holding {info.folder}/ "
                "(see CoOp's DATASETS.md for the download and layout)"
            )
        image_dir = folder / info.images
        if info.split_file is not None:
            self.split_file: Path | None = folder / info.split_file
            if not self.split_file.is_file():
                raise FileNotFoundError(
                    f"coop:{info.folder}: split file {self.split_file} not found; download {info.split_file} "
                    "(CoOp's DATASETS.md links it) into that folder"
                )
            self.splits = _read_split_json(self.split_file, image_dir)
        elif info.name == "FGVCAircraft":
            self.split_file = folder / f"images_variant_{split}.txt"
            self.splits = _read_aircraft(folder, image_dir)
        else:
            self.split_file = None
            self.splits = _read_imagenet(folder, image_dir)
        if split == "val" and not info.fewshot_val:
            raise ValueError(
                f"coop:{info.folder}: {info.name} has no validation split: CoOp validates it on its test set (the "
                "official val images), and cliplab never selects hyper-parameters on test data; use split=train or "
                "test (validation then comes from the support set)"
            )
        items = self.splits[split]
        if not items:
            raise ValueError(f"coop:{info.folder}: the {split} split of {self.split_file or folder} is empty")
        self.paths = [Path(p) for p, _, _ in items]
        self._labels = np.asarray([lab for _, lab, _ in items], dtype=np.int64)
        self.classnames = self._classnames()
        self.templates = [coop_templates()[info.name]]
        self.name = f"{info.name}/{split}"
        if check_files and info.name != "ImageNet":  # ImageNet's items come from listing its folders
            missing = [str(p) for p in self.paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"coop:{info.folder}: {len(missing)} of the {len(self.paths)} {split} images named in "
                    f"{self.split_file or folder} do not exist under {image_dir}, e.g. {missing[:3]}"
                )

    def _classnames(self) -> list[str]:
        """Label → name over all splits (Dassl ``get_lab2cname``), cleaned; labels must be 0..C-1 with one name."""
        names: dict[int, str] = {}
        for split, items in self.splits.items():
            for _, label, name in items:
                if names.setdefault(label, name) != name:
                    where = self.split_file or self.root / self.info.folder
                    raise ValueError(f"{where}: label {label} is named both {names[label]!r} and {name!r} (in {split})")
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{self.split_file}: labels must be 0..{len(names) - 1}, got {sorted(names)[:10]}...")
        return [clean_classname(names[i]) for i in range(len(names))]

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    #: few-shot draws over label arrays follow Dassl (``cliplab.data.sampling.sampler_for``)
    k_shot_sampler = staticmethod(dassl_k_shot_indices)

    def few_shot_indices(self, k: int, seed: int) -> np.ndarray:
        """CoOp's ``k``-shot draw for ``seed`` on this split: train → the support set, val → ``min(k, 4)`` shots.

        Both are drawn in Dassl's order (train, then val) from one ``random.seed(seed)``, so the val set is
        the one CoOp pairs with that support set.
        """
        if self.split == "test":
            raise ValueError(f"coop:{self.info.folder}: few-shot sets are drawn from train (and val), not test")
        if self.split == "val" and not self.info.fewshot_val:
            raise ValueError(
                f"coop:{self.info.folder}: CoOp draws no few-shot val set for {self.info.name}; its val split is "
                "the test set"
            )
        train_labels = [lab for _, lab, _ in self.splits["train"]]
        val_labels = [lab for _, lab, _ in self.splits["val"]] if self.info.fewshot_val else None
        train, val = dassl_few_shot(train_labels, k, seed, val_labels)
        if self.split == "train":
            return train
        assert val is not None  # fewshot_val: checked above
        return val

    @cached_property
    def _fingerprint(self) -> str:
        labels = hashlib.sha256(self._labels.tobytes()).hexdigest()[:16]
        return stable_hash(
            {
                "kind": "coop",
                "dataset": self.info.name,
                "split_file": files_fingerprint([self.split_file]) if self.split_file else None,
                "images": files_fingerprint(self.paths),
                "labels": labels,
                "classnames": self.classnames,
                "templates": self.templates,
            }
        )

    def fingerprint(self) -> str:
        return self._fingerprint


def load(target: str, split: str | None = "test", *, root: str | None = None, check_files: bool = True) -> CoopDataset:
    """``coop:<dataset>:root=<dir>``: a split of a CoOp dataset (see the module docstring)."""
    info = coop_dataset(target)
    if root is None:
        raise ValueError(f"coop:{target}: give the data root, e.g. coop:{info.folder}:root=/data (CoOp's DATASET.ROOT)")
    return CoopDataset(info, str(root), split or "test", check_files=check_files)


def check(target: str, split: str | None = "test", *, spec: str, root: str | None = None, **options: Any) -> None:
    """The dataset name is known and its folder and split file exist (no image is checked)."""
    info = coop_dataset(target)
    if root is None:
        raise ValueError(f"dataset {spec!r}: give the data root, e.g. coop:{info.folder}:root=/data")
    folder = Path(str(root)).expanduser() / info.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset {spec!r}: {folder} not found (root= is CoOp's DATASET.ROOT)")
    if info.split_file and not (folder / info.split_file).is_file():
        raise FileNotFoundError(f"dataset {spec!r}: split file {folder / info.split_file} not found")


register_data_source(
    "coop",
    load,
    splits=SPLITS,
    check=check,
    description="coop:<dataset>:root=<dir>[,split=test] (CoOp few-shot datasets, e.g. coop:oxford_pets:root=/data)",
)
