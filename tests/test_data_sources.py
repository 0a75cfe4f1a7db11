"""Data specs, the data-source registry, datasets as torch Datasets, the one image loader, the corruption path."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data import (
    Corrupted,
    Dataset,
    DataSpec,
    ImageFolder,
    check_data_spec,
    load_dataset,
    make_loader,
    register_data_source,
    registry,
    shapes,
)
from cliplab.data.base import stable_hash
from cliplab.data.corruptions import CORRUPTIONS, corrupt
from cliplab.imaging.preprocess import Preprocess

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


class SolidColours(Dataset):
    """A toy source's dataset: ``n`` plain images per colour, labelled by colour."""

    templates = ["a {} picture."]

    def __init__(self, split: str, n: int, size: int):
        self.split, self.n, self.size = split, n, size
        self.classnames = list(COLOURS)
        self.name = f"solid-{split}"

    def __len__(self) -> int:
        return self.n * len(COLOURS)

    def image(self, index: int) -> Image.Image:
        shade = 10 * (index % self.n) + (5 if self.split == "train" else 0)
        rgb = tuple(min(255, c + shade) for c in COLOURS[self.classnames[index // self.n]])
        return Image.new("RGB", (self.size, self.size), rgb)

    @property
    def labels(self) -> np.ndarray:
        return np.repeat(np.arange(len(COLOURS)), self.n)

    def fingerprint(self) -> str:
        return stable_hash({"solid": [self.split, self.n, self.size]})


def load_solid(target: str, split: str = "test", *, n: int = 3, size: int = 32) -> SolidColours:
    return SolidColours(split, n, size)


@pytest.fixture
def solid(monkeypatch):
    """The toy ``solid`` scheme, registered for one test only."""
    with registry.DATA_SOURCES.restoring():
        register_data_source("solid", load_solid, splits=("train", "test"), target=False)
        yield


def write_images(root, names, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / name)


# -- DataSpec -----------------------------------------------------------------------------------------------------


def test_dataspec_parse_forms():
    assert DataSpec.parse("shapes") == DataSpec("shapes", "", {}, "shapes")
    spec = DataSpec.parse("builtin:shapes:task=colour,n=20,held_out=none")
    assert (spec.scheme, spec.target, spec.options) == ("shapes", "", {"task": "colour", "n": 20, "held_out": None})
    assert DataSpec.parse("folder:/data/pets").scheme == "folder"
    assert DataSpec.parse("folder:/data/pets").target == "/data/pets"
    spec = DataSpec.parse("captions:/data/c.csv:image_key=path,check_files=false")
    assert (spec.target, spec.options) == ("/data/c.csv", {"image_key": "path", "check_files": False})
    # bare paths: options only after the last ':' and only in key=value form
    assert DataSpec.parse("/data/a:b") == DataSpec(None, "/data/a:b", {}, "/data/a:b")
    assert DataSpec.parse("/data/a:b:n=3").target == "/data/a:b"
    assert DataSpec.parse("/data/a:b:n=3").options == {"n": 3}
    assert DataSpec.parse(r"C:\data\pets").target == r"C:\data\pets"
    with pytest.raises(ValueError, match="shapes:n.*expected key=value"):
        DataSpec.parse("shapes:n")


# -- the registry ---------------------------------------------------------------------------------------------------


def test_toy_source_through_load_dataset(solid):
    ds = load_dataset("solid:n=2")
    assert isinstance(ds, SolidColours) and len(ds) == 4 and ds.split == "test"
    assert load_dataset("solid", split="train").split == "train"  # the caller's default split
    assert load_dataset("solid:split=train", split="test").split == "train"  # the spec's split wins
    assert load_dataset("solid:n=2", n=5).n == 5  # keyword options override the spec's
    with pytest.raises(ValueError, match=r"'solid:colour=red'.*unknown option.*'colour'.*split, n, size"):
        load_dataset("solid:colour=red")
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        load_dataset("solid:split=val")
    with pytest.raises(ValueError, match="'colour'"):
        check_data_spec("solid:colour=red")
    check_data_spec("solid:n=2,split=train")


def test_toy_source_through_the_cli(solid, tiny_model_dir, capsys, tmp_path):
    from cliplab.cli.commands import main

    argv = ["zeroshot", str(tiny_model_dir), "solid:n=3,size=32", "--json", "--quiet", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 6 and out["classnames"] == ["red", "blue"]
    assert main(["zeroshot", str(tiny_model_dir), "solid:shade=3", "--quiet"]) == 2
    assert "unknown option(s) 'shade'" in capsys.readouterr().err


def test_detect_claims_bare_paths_before_the_builtins(tmp_path):
    with registry.DATA_SOURCES.restoring():
        _detect_claims_bare_paths_before_the_builtins(tmp_path)


def _detect_claims_bare_paths_before_the_builtins(tmp_path):
    path = tmp_path / "colours.solid"
    path.write_text("toy\n")
    with pytest.raises(ValueError, match="unsupported caption file type '.solid'"):
        load_dataset(str(path))
    register_data_source("solid", load_solid, detect=lambda p: p.endswith(".solid"), splits=("test",))
    assert isinstance(load_dataset(f"{path}:n=1"), SolidColours)
    assert len(load_dataset(f"solid:{path}:n=1")) == 2


def test_bare_path_matching_does_not_depend_on_which_source_was_imported_first(tmp_path):
    # a builtin module imported directly before the registry is used must not jump the detect order: a bare
    # directory in CLIP_benchmark's layout is a wds: dataset, not an (imageless) class folder
    import subprocess
    import sys

    root = tmp_path / "bench"
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1\n")
    code = (
        "import sys; import cliplab.data.sources.wds; from cliplab.data.registry import prepare; "
        "print(prepare(sys.argv[1])[0].scheme)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "wds"


def test_builtin_options_are_checked_by_name():
    with pytest.raises(ValueError, match=r"'shapes:colour=red'.*'colour'.*accepted options: split, n, seed, task"):
        load_dataset("shapes:colour=red")  # was a TypeError from shapes()
    with pytest.raises(ValueError, match="'colour'"):
        check_data_spec("shapes:colour=red")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_dataset("shapes:split=dev,n=2")


def test_data_without_splits_refuses_a_split(tmp_path):
    write_images(tmp_path / "classes", ["a/0.png", "b/0.png"])
    caps = tmp_path / "caps.csv"
    caps.write_text("image,caption\nclasses/a/0.png,an image\n")
    for spec in (
        f"{tmp_path / 'classes'}:split=train",
        f"folder:{tmp_path / 'classes'}:split=val",
        f"{caps}:split=train",
    ):
        for call in (load_dataset, check_data_spec):
            with pytest.raises(ValueError, match="has no splits"):
                call(spec)
    assert len(load_dataset(f"{tmp_path / 'classes'}:split=test")) == 2
    assert len(load_dataset(f"captions:{caps}")) == 1
    # a caller's default split (e.g. ``cliplab adapt`` asks for "train") does not apply to data without splits
    assert len(load_dataset(str(tmp_path / "classes"), split="train")) == 2
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) 'n' for folder; accepted options: classnames, templates"
    ):
        load_dataset(f"{tmp_path / 'classes'}:n=3")
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'n' for folder"):
        check_data_spec(f"{tmp_path / 'classes'}:n=3")


# -- datasets are torch Datasets ------------------------------------------------------------------------------------


def test_getitem_returns_image_index_label_captions(tmp_path):
    ds = shapes("val", n=5, task="colour")
    assert isinstance(ds, torch.utils.data.Dataset)
    item = ds[3]
    assert set(item) == {"image", "index", "label", "captions"}
    assert np.array_equal(np.asarray(item["image"]), ds.render(3))
    assert item["index"] == 3 and item["label"] == int(ds.labels[3])
    assert item["captions"] == [c for c, i in zip(ds.captions, ds.text_to_image) if i == 3]
    assert ds[-1]["index"] == 4
    with pytest.raises(IndexError):
        ds[5]
    assert [item["index"] for item in ds] == [0, 1, 2, 3, 4]  # iteration stops at the end

    write_images(tmp_path / "flat", ["0.png", "1.png"])
    flat = load_dataset(str(tmp_path / "flat"))
    assert set(flat[1]) == {"image", "index"}


def test_wrappers_keep_metadata():
    ds = shapes("test", n=6, task="colour")
    sub = ds.subset([4, 1])
    assert sub.classnames == ds.classnames and sub.templates == ds.templates
    assert sub[0]["label"] == int(ds.labels[4]) and sub[1]["captions"] == ds[1]["captions"]
    noisy = Corrupted(sub, "gaussian_noise", 2, size=None)
    assert noisy.classnames == ds.classnames and noisy[1]["label"] == int(ds.labels[1])
    assert "captions" not in noisy[0]  # a corrupted image keeps no captions (as before)
    noisy.classnames = ["x"] * 6
    assert noisy.classnames == ["x"] * 6 and sub.classnames == ds.classnames


# -- one loader -----------------------------------------------------------------------------------------------------


PRE = Preprocess(resize=24, crop=(24, 24))


def test_make_loader_matches_the_old_path_in_order():
    ds = shapes("test", n=8, task="shape")
    batches = list(make_loader(ds, PRE, 3))
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    for b in batches:
        chunk = b["index"].tolist()
        assert torch.equal(b["pixel_values"], PRE.batch(ds.images(chunk)))
        assert b["label"].tolist() == ds.labels[chunk].tolist()
    picked = list(make_loader(ds, PRE, 2, indices=[7, 0, 5]))
    assert [b["index"].tolist() for b in picked] == [[7, 0], [5]]
    with_workers = list(make_loader(ds, PRE, 3, num_workers=1))
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(batches, with_workers))
    assert [b["index"].tolist() for b in with_workers] == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_encode_images_and_embed_use_the_loader(tiny_model):
    from cliplab.features import embed_images

    ds = shapes("test", n=5, image_size=32)
    images = ds.images(range(5))
    expected = tiny_model.encode_images(tiny_model.preprocess.batch(images), batch_size=2)
    assert torch.allclose(tiny_model.encode_images(images, batch_size=2), expected, atol=1e-6)
    assert torch.allclose(embed_images(tiny_model, ds, batch_size=2, progress=False), expected, atol=1e-6)
    part = embed_images(tiny_model, ds, [4, 1], batch_size=2, progress=False)
    assert torch.allclose(part, expected[[4, 1]], atol=1e-6)


def test_unreadable_image_raises_naming_the_file_or_is_skipped(tmp_path):
    write_images(tmp_path, ["a/0.png", "a/1.png", "b/0.png"])
    (tmp_path / "b" / "1.png").write_bytes(b"\x89PNG broken")
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"b[/\\]1\.png"):
        list(make_loader(ds, PRE, 2))
    loader = make_loader(ds, PRE, 2, on_error="skip")
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2]]
    assert batches[1]["label"].tolist() == [1]
    assert torch.equal(batches[1]["pixel_values"], PRE.batch([ds.image(2)]))
    assert [(s["index"], s["path"]) for s in loader.skipped] == [(3, str(tmp_path / "b" / "1.png"))]
    assert "1.png" in loader.skipped[0]["error"]
    sub = make_loader(ds.subset([3, 0]), PRE, 4, on_error="skip")
    assert [b["index"].tolist() for b in sub] == [[1]]
    assert sub.skipped[0]["path"] == str(tmp_path / "b" / "1.png")
    with pytest.raises(ValueError, match="on_error"):
        make_loader(ds, PRE, 2, on_error="ignore")


# -- one corruption path --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gaussian_noise", "fog"])
def test_shapes_corruption_is_the_wrappers(name):
    clean = shapes("val", n=3, seed=4, image_size=32)
    corrupted = shapes("val", n=3, seed=4, image_size=32, corruption=name, severity=2)
    wrapped = Corrupted(clean, name, 2, seed=(4, 1), size=None)  # val is split 1
    for i in range(3):
        arr = np.asarray(corrupted.image(i))
        assert np.array_equal(arr, np.asarray(wrapped.image(i)))
        # the same generator as before the two paths were merged, so the pixels did not change
        rng = np.random.default_rng([4, 1, i, 7919, CORRUPTIONS.index(name), 2])
        assert np.array_equal(arr, corrupt(clean.render(i), name, 2, rng))
