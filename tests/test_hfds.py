"""``hfds:`` specs: ``save_to_disk`` directories, parquet files, column guessing and its errors, offline hub names."""

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from cliplab.data import check_data_spec, load_dataset  # noqa: E402

NAMES = ["golden_retriever", "tabby_cat", "goldfish"]


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (10 + i % 3, 12, 3), dtype=np.uint8)) for i in range(n)]


def make_hf(n=6, seed=0, *, captions=False, extra_image=False, extra_label=False):
    cols = {"img": _images(n, seed), "label": [(3 * i + 1) % 3 for i in range(n)], "id": [f"x{i}" for i in range(n)]}
    feats = {"img": datasets.Image(), "label": datasets.ClassLabel(names=NAMES), "id": datasets.Value("string")}
    if captions:
        cols["captions"] = [[f"picture {i}", f"photo {i}"] for i in range(n)]
        feats["captions"] = datasets.Sequence(datasets.Value("string"))
    if extra_image:
        cols["mask"], feats["mask"] = _images(n, seed + 1), datasets.Image()
    if extra_label:
        cols["coarse"], feats["coarse"] = [i % 2 for i in range(n)], datasets.ClassLabel(names=["a", "b"])
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats)), cols


def _quiet():
    datasets.disable_progress_bars()


def test_save_to_disk_dataset_dict_splits_labels_classnames(tmp_path):
    _quiet()
    train, train_cols = make_hf(6, 0)
    test, test_cols = make_hf(4, 1)
    val, _ = make_hf(2, 2)
    datasets.DatasetDict({"train": train, "validation": val, "test": test}).save_to_disk(str(tmp_path / "dd"))
    ds = load_dataset(f"hfds:{tmp_path / 'dd'}")  # default split: test
    assert len(ds) == 4 and ds.labels.tolist() == test_cols["label"]
    assert ds.classnames == ["golden retriever", "tabby cat", "goldfish"]
    for i in range(4):
        assert np.array_equal(np.asarray(ds.image(i)), np.asarray(test_cols["img"][i]))
    assert [im.size for im in ds.images([3, 0])] == [test_cols["img"][3].size, test_cols["img"][0].size]
    assert ds[1]["label"] == test_cols["label"][1]
    assert load_dataset(f"hfds:{tmp_path / 'dd'}:split=train").labels.tolist() == train_cols["label"]
    assert len(load_dataset(f"hfds:{tmp_path / 'dd'}:split=val")) == 2  # val finds "validation"
    assert ds.fingerprint() == load_dataset(f"hfds:{tmp_path / 'dd'}").fingerprint()
    assert ds.fingerprint() != load_dataset(f"hfds:{tmp_path / 'dd'}:split=train").fingerprint()


def test_parquet_file_and_hub_style_parquet_dir(tmp_path):
    _quiet()
    hf, cols = make_hf(5, 3, captions=True)
    hf.to_parquet(str(tmp_path / "one.parquet"))
    ds = load_dataset(f"hfds:{tmp_path / 'one.parquet'}")
    assert ds.labels.tolist() == cols["label"] and ds.classnames[0] == "golden retriever"  # ClassLabel kept
    assert ds.captions == [c for caps in cols["captions"] for c in caps]
    assert ds.text_to_image.tolist() == [i for i in range(5) for _ in range(2)]
    assert np.array_equal(np.asarray(ds.image(4)), np.asarray(cols["img"][4]))
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    hf.to_parquet(str(hub / "train-00000-of-00001.parquet"))
    make_hf(3, 4)[0].to_parquet(str(hub / "test-00000-of-00001.parquet"))
    assert len(load_dataset(f"hfds:{tmp_path / 'hub'}")) == 3
    assert len(load_dataset(f"hfds:{tmp_path / 'hub'}:split=train")) == 5
    with pytest.raises(ValueError, match="no parquet files of split 'val'"):
        load_dataset(f"hfds:{tmp_path / 'hub'}:split=val")
    check_data_spec(f"hfds:{tmp_path / 'one.parquet'}")


def test_columns_named_and_guessed(tmp_path):
    _quiet()
    hf, cols = make_hf(4, 5, extra_image=True, extra_label=True)
    hf.save_to_disk(str(tmp_path / "d"))
    spec = f"hfds:{tmp_path / 'd'}"
    with pytest.raises(ValueError, match=r"several columns could be the image \(img, mask\); pass image="):
        load_dataset(spec)
    with pytest.raises(ValueError, match=r"several columns could be the label \(label, coarse\); pass label="):
        load_dataset(f"{spec}:image=img")
    ds = load_dataset(f"{spec}:image=mask,label=coarse")
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.classnames == ["a", "b"]
    with pytest.raises(ValueError, match=r"no column 'picture' for image=; columns: img \(Image\)"):
        load_dataset(f"{spec}:image=picture,label=label")
    with pytest.raises(ValueError, match=r"column 'id' \(string\) cannot be the label"):
        load_dataset(f"{spec}:image=img,label=id")
    plain, _ = make_hf(3, 6)
    plain.remove_columns(["img"]).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(ValueError, match="no Image column"):
        load_dataset(f"hfds:{tmp_path / 'noimg'}")


def test_hub_name_without_a_network_is_a_clear_error(tmp_path):
    for call in (lambda: load_dataset("hfds:uoft-cs/cifar10"), lambda: check_data_spec("hfds:uoft-cs/cifar10")):
        with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
            call()
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="neither a save_to_disk directory"):
        load_dataset(f"hfds:{tmp_path / 'junk'}")


def test_bare_saved_dirs_and_parquet_files_are_detected(tmp_path):
    from cliplab.data.sources.hfds import HFDataset

    _quiet()
    hf, cols = make_hf(3, 7)
    hf.save_to_disk(str(tmp_path / "saved"))
    hf.to_parquet(str(tmp_path / "x.parquet"))
    for target in (tmp_path / "saved", tmp_path / "x.parquet"):
        ds = load_dataset(str(target))
        assert isinstance(ds, HFDataset) and ds.labels.tolist() == cols["label"]
