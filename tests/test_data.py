import json

import numpy as np
import pytest
from PIL import Image

from cliplab.data import CaptionDataset, ImageFolder, k_shot, k_shot_indices, load_dataset


def test_image_folder_classes_and_labels(image_folder):
    ds = ImageFolder(image_folder)
    assert ds.classnames == ["blue square", "red circle"]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4
    assert ds.image(0).mode == "RGB"
    assert load_dataset(str(image_folder)).fingerprint() == ds.fingerprint()


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "cls").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(tmp_path)
    (tmp_path / "cls" / "bad.png").write_bytes(b"\x89PNG broken")
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="bad.png"):
        ds.image(0)
    with pytest.raises(ValueError, match="2 class names given for 1 class folders"):
        ImageFolder(tmp_path, classnames=["a", "b"])


def _write_images(root, names):
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (10, 10), (255, 0, 0)).save(root / n)


def test_caption_csv_and_jsonl_group_captions(tmp_path):
    _write_images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "caps.csv").write_text("image,caption\nimg/a.png,a red square\nimg/b.png,a blue one\nimg/a.png,red\n")
    ds = CaptionDataset(tmp_path / "caps.csv")
    assert len(ds) == 2 and ds.captions == ["a red square", "a blue one", "red"]
    assert ds.text_to_image.tolist() == [0, 1, 0]
    rows = [
        {"image": "img/a.png", "captions": ["x", "y"]},
        {"image": str(tmp_path / "img/b.png"), "caption": "z"},
    ]
    (tmp_path / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = CaptionDataset(tmp_path / "caps.jsonl")
    assert ds.captions == ["x", "y", "z"] and ds.text_to_image.tolist() == [0, 0, 1]
    sub = ds.subset([1])
    assert sub.captions == ["z"] and sub.text_to_image.tolist() == [0]


def test_caption_file_errors(tmp_path):
    _write_images(tmp_path, ["a.png"])
    (tmp_path / "missing.csv").write_text("image,caption\nnope.png,hello\n")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        CaptionDataset(tmp_path / "missing.csv")
    (tmp_path / "cols.csv").write_text("path,text\na.png,hi\n")
    with pytest.raises(ValueError, match="no column 'image'"):
        CaptionDataset(tmp_path / "cols.csv")
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        CaptionDataset(tmp_path / "bad.jsonl")
    (tmp_path / "empty.csv").write_text("image,caption\n")
    with pytest.raises(ValueError, match="no image–caption rows"):
        CaptionDataset(tmp_path / "empty.csv")


def test_k_shot_reproducible_and_balanced():
    labels = np.repeat(np.arange(4), 10)
    a = k_shot_indices(labels, 3, seed=1)
    assert a.tolist() == k_shot_indices(labels, 3, seed=1).tolist()
    assert a.tolist() != k_shot_indices(labels, 3, seed=2).tolist()
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]
    assert len(set(a.tolist())) == 12
    with pytest.raises(ValueError, match="fewer samples"):
        k_shot_indices(np.array([0, 0, 1]), 2)


def test_k_shot_dataset(image_folder):
    sub = k_shot(ImageFolder(image_folder), 2, seed=0)
    assert len(sub) == 4 and sorted(sub.labels.tolist()) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="fewer samples"):
        k_shot(ImageFolder(image_folder), 5)


def test_unknown_dataset_spec():
    with pytest.raises(ValueError, match="Accepted forms"):
        load_dataset("/definitely/not/here")
