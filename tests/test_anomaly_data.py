"""Anomaly-detection data: ``mvtec:``, ``visa:`` and ``anomaly-folder:`` on tiny fixtures in their real layouts."""

import os

import numpy as np
import pytest
from PIL import Image

from cliplab.data import check_data_spec, load_dataset
from cliplab.data.anomaly_files import AnomalyData


def _image(path, size=(16, 16), seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path, format=fmt)


def _mask(path, box, size=(16, 16), value=255):
    """A mask with ``value`` in the rectangle ``box = (y0, y1, x0, x1)``; returns the expected bool array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    y0, y1, x0, x1 = box
    arr[y0:y1, x0:x1] = value
    Image.fromarray(arr, "L").save(path)
    return arr != 0


# ---------------------------------------------------------------------------------------------- MVTec AD
def _mvtec(root):
    masks = {}
    for c, category in enumerate(("bottle", "cable")):
        base = root / category
        for k in range(2):
            _image(base / "train" / "good" / f"{k:03d}.png", seed=10 * c + k)
        _image(base / "test" / "good" / "000.png", seed=100 + c)
        for d, defect in enumerate(("broken_large", "contamination")):
            _image(base / "test" / defect / "000.png", seed=200 + 10 * c + d)
            masks[(category, defect)] = _mask(base / "ground_truth" / defect / "000_mask.png", (2 + d, 9, 3, 7 + c))
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    return masks


def test_mvtec_layout_labels_types_and_masks(tmp_path):
    masks = _mvtec(tmp_path)
    ds = load_dataset(f"mvtec:{tmp_path}:category=bottle")
    assert isinstance(ds, AnomalyData)
    assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 1]
    assert ds.defect_types == ["good", "broken_large", "contamination"] and ds.categories == ["bottle"] * 3
    assert ds.classnames == ["normal", "anomalous"]
    assert ds[1]["label"] == 1 and ds[1]["defect_type"] == "broken_large" and ds[1]["category"] == "bottle"
    assert ds[1]["image"].size == (16, 16)
    normal = ds.mask(0)
    assert normal.dtype == bool and normal.shape == (16, 16) and not normal.any()
    np.testing.assert_array_equal(ds.mask(1), masks[("bottle", "broken_large")])
    np.testing.assert_array_equal(ds.mask(2), masks[("bottle", "contamination")])

    train = load_dataset(f"mvtec:{tmp_path}:category=bottle,split=train")
    assert len(train) == 2 and train.labels.tolist() == [0, 0] and set(train.defect_types) == {"good"}
    assert load_dataset(f"mvtec:{tmp_path}", split="train").categories == ["bottle"] * 2 + ["cable"] * 2
    both = load_dataset(f"mvtec:{tmp_path}")
    assert len(both) == 6 and both.categories == ["bottle"] * 3 + ["cable"] * 3
    np.testing.assert_array_equal(both.mask(5), masks[("cable", "contamination")])
    one = load_dataset(f"mvtec:{tmp_path / 'cable'}")  # a category's own folder
    assert one.categories == ["cable"] * 3 and one.defect_types == ["good", "broken_large", "contamination"]


def test_mvtec_unknown_category_lists_those_present(tmp_path):
    _mvtec(tmp_path)
    for call in (load_dataset, check_data_spec):
        with pytest.raises(ValueError, match=r"unknown MVTec AD category 'screw'.*bottle, cable"):
            call(f"mvtec:{tmp_path}:category=screw")
    with pytest.raises(FileNotFoundError, match="not found"):
        check_data_spec(f"mvtec:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        check_data_spec(f"mvtec:{tmp_path}:split=val")


def test_mvtec_missing_or_missized_mask_names_the_file(tmp_path):
    _mvtec(tmp_path)
    missing = tmp_path / "bottle" / "ground_truth" / "contamination" / "000_mask.png"
    missing.unlink()
    with pytest.raises(ValueError, match=f"no mask file.*{missing}"):
        load_dataset(f"mvtec:{tmp_path}:category=bottle")
    load_dataset(f"mvtec:{tmp_path}:category=bottle,split=train")  # the train split needs no mask
    _mask(missing, (0, 4, 0, 4), size=(12, 16))
    with pytest.raises(ValueError, match=rf"mask {missing} is 12x16 but its image .* is 16x16"):
        load_dataset(f"mvtec:{tmp_path}:category=bottle")


def test_mvtec_fingerprint_covers_masks(tmp_path):
    _mvtec(tmp_path)
    spec = f"mvtec:{tmp_path}:category=bottle"
    before = load_dataset(spec).fingerprint()
    assert load_dataset(spec).fingerprint() == before
    assert load_dataset(f"{spec},split=train").fingerprint() != before
    mask = tmp_path / "bottle" / "ground_truth" / "broken_large" / "000_mask.png"
    st = os.stat(mask)
    _mask(mask, (1, 9, 3, 7))  # same size on disk, mtime set back: the ctime still moves
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_dataset(spec).fingerprint() != before


# ---------------------------------------------------------------------------------------------- VisA
def _visa(root, *, with_anno=True):
    rows = ["object,split,label,image,mask"]
    expected = {}
    for c, category in enumerate(("candle", "pcb1")):
        data = root / category / "Data"
        for k in range(3):
            rel = f"{category}/Data/Images/Normal/{k:04d}.JPG"
            _image(root / rel, seed=10 * c + k, fmt="JPEG")
            rows.append(f"{category},{'train' if k < 2 else 'test'},normal,{rel},")
        rel, mrel = f"{category}/Data/Images/Anomaly/000.JPG", f"{category}/Data/Masks/Anomaly/000.png"
        _image(root / rel, seed=50 + c, fmt="JPEG")
        expected[category] = _mask(root / mrel, (4, 11, 2, 6 + c), value=1 + c)  # VisA masks: small class ids
        rows.append(f"{category},test,anomaly,{rel},{mrel}")
        if with_anno:
            anno = ["image,label,mask", f"{category}/Data/Images/Normal/0000.JPG,normal,"]
            anno.append(f'{rel},"chunk of wax missing, wrong colour",{mrel}')
            (root / category / "image_anno.csv").write_text("\n".join(anno) + "\n")
        assert data.is_dir()
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return expected


def test_visa_layout_from_the_split_file(tmp_path):
    expected = _visa(tmp_path)
    ds = load_dataset(f"visa:{tmp_path}:category=candle")
    assert ds.labels.tolist() == [0, 1] and ds.categories == ["candle", "candle"]
    assert ds.defect_types == ["good", "chunk_of_wax_missing+wrong_colour"]
    assert not ds.mask(0).any() and ds.mask(0).shape == (16, 16)
    np.testing.assert_array_equal(ds.mask(1), expected["candle"])
    train = load_dataset(f"visa:{tmp_path}:split=train")
    assert len(train) == 4 and not train.labels.any() and train.categories == ["candle"] * 2 + ["pcb1"] * 2
    both = load_dataset(f"visa:{tmp_path}")
    assert both.categories == ["candle", "candle", "pcb1", "pcb1"]
    np.testing.assert_array_equal(both.mask(3), expected["pcb1"])


def test_visa_without_annotations_and_errors(tmp_path):
    _visa(tmp_path, with_anno=False)
    assert load_dataset(f"visa:{tmp_path}:category=pcb1").defect_types == ["good", "anomaly"]
    for call in (load_dataset, check_data_spec):
        with pytest.raises(ValueError, match=r"unknown VisA category 'capsules'.*candle, pcb1"):
            call(f"visa:{tmp_path}:category=capsules")
    mask = tmp_path / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png"
    mask.unlink()
    with pytest.raises(ValueError, match=f"no mask file.*{mask}"):
        load_dataset(f"visa:{tmp_path}:category=pcb1")
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,image\ncandle,train,x.JPG\n")
    with pytest.raises(ValueError, match="missing column"):
        check_data_spec(f"visa:{tmp_path}")
    (tmp_path / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"split_csv/1cls\.csv"):
        check_data_spec(f"visa:{tmp_path}")


# ---------------------------------------------------------------------------------------------- plain folder
def _plain(root, *, masks=True):
    for k in range(5):
        _image(root / "good" / f"n{k}.png", seed=k)
    expected = {}
    for d, defect in enumerate(("crack", "dent")):
        for k in range(2):
            _image(root / defect / f"{defect}{k}.png", seed=20 + 2 * d + k)
            if masks:  # both namings: <name>.png and <name>_mask.png
                name = f"{defect}{k}.png" if k == 0 else f"{defect}{k}_mask.png"
                expected[f"{defect}{k}"] = _mask(root / "masks" / defect / name, (k, 8 + d, 2, 9))
    return expected


def test_plain_folder_splits_types_and_masks(tmp_path):
    expected = _plain(tmp_path / "widget")
    root = tmp_path / "widget"
    test = load_dataset(f"anomaly-folder:{root}")
    train = load_dataset(f"anomaly-folder:{root}:split=train")
    names = lambda ds: [p.name for p in ds.paths]  # noqa: E731
    assert names(train) == ["n0.png", "n2.png", "n4.png"] and not train.labels.any()
    assert names(test) == ["n1.png", "n3.png", "crack0.png", "crack1.png", "dent0.png", "dent1.png"]
    assert test.labels.tolist() == [0, 0, 1, 1, 1, 1] and test.categories == ["widget"] * 6
    assert test.defect_types == ["good", "good", "crack", "crack", "dent", "dent"] and test.has_masks
    for i, key in enumerate(["crack0", "crack1", "dent0", "dent1"], start=2):
        np.testing.assert_array_equal(test.mask(i), expected[key])
    assert not test.mask(0).any()
    quarter = load_dataset(f"anomaly-folder:{root}:test_fraction=0.25,category=gear")
    assert names(quarter)[:2] == ["n3.png", "crack0.png"] and quarter.categories[0] == "gear"
    with pytest.raises(ValueError, match="test_fraction"):
        check_data_spec(f"anomaly-folder:{root}:test_fraction=1")


def test_plain_folder_without_masks_and_with_one_missing(tmp_path):
    _plain(tmp_path, masks=False)
    ds = load_dataset(f"anomaly-folder:{tmp_path}")
    assert not ds.has_masks and not ds.mask(0).any()
    with pytest.raises(ValueError, match="no ground-truth mask"):
        ds.mask(len(ds) - 1)
    (tmp_path / "masks" / "crack").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"crack0.png has no mask file.*{tmp_path / 'masks' / 'crack'}"):
        load_dataset(f"anomaly-folder:{tmp_path}")
    (tmp_path / "good").rename(tmp_path / "normal")
    with pytest.raises(ValueError, match="no good/ folder"):
        check_data_spec(f"anomaly-folder:{tmp_path}")


def test_the_loader_reads_anomaly_data(tmp_path):
    from cliplab.data import make_loader
    from cliplab.imaging.preprocess import Preprocess

    _mvtec(tmp_path)
    for spec in (f"mvtec:{tmp_path}", "shapes-defects:n=5,image_size=32"):
        ds = load_dataset(spec)
        batches = list(make_loader(ds, Preprocess(resize=(32, 32), crop=None), batch_size=4, num_workers=2))
        assert [int(i) for b in batches for i in b["index"]] == list(range(len(ds)))
        assert [int(v) for b in batches for v in b["label"]] == ds.labels.tolist()
        assert batches[0]["pixel_values"].shape[1:] == (3, 32, 32)
