"""``karpathy:`` split files (COCO / Flickr30k retrieval) as caption datasets, through ``cliplab retrieve``."""

import json

import numpy as np
import pytest
import torch

from cliplab.cli.commands import main
from cliplab.data import check_data_spec, load_dataset
from helpers import write_random_images

COLOURS, SHAPES, PLACES = ["red", "blue", "green"], ["circle", "square", "star", "thing", "shape"], ["left", "right"]


def caption(i, j):
    """Distinct captions in the tiny model's vocabulary (unknown words would all tokenize alike and tie)."""
    return f"a {['small', 'large'][j % 2]} {COLOURS[i % 3]} {SHAPES[j % 5]} on the {PLACES[(i + j) % 2]}"


def write_karpathy(root, *, coco=True):
    """A dataset_coco.json (with filepath) or dataset_flickr30k.json (without) and its images under root."""
    splits = ["test", "train", "test", "val", "restval", "test"]
    images, files = [], []
    for i, split in enumerate(splits):
        folder = ("val2014" if split != "train" else "train2014") if coco else ""
        name = f"COCO_{folder}_{i:012d}.jpg" if coco else f"{1000 + i}.jpg"
        entry = {
            "split": split,
            "filename": name,
            "imgid": i,
            "sentids": [5 * i + j for j in range(5 + (i == 2))],
            "sentences": [
                {"raw": f" {caption(i, j)} ", "tokens": ["image", str(i)], "imgid": i, "sentid": 5 * i + j}
                for j in range(5 + (i == 2))  # COCO has images with six captions
            ],
        }
        if coco:
            entry["filepath"] = folder
            entry["cocoid"] = 100 + i
        images.append(entry)
        files.append(f"{folder}/{name}" if folder else name)
    path = root / ("dataset_coco.json" if coco else "dataset_flickr30k.json")
    path.write_text(json.dumps({"images": images, "dataset": "coco" if coco else "flickr30k"}))
    return path, files


def test_coco_test_split_captions_in_order(tmp_path):
    path, files = write_karpathy(tmp_path)
    write_random_images(tmp_path / "images", files)
    ds = load_dataset(f"karpathy:{path}:root={tmp_path / 'images'}")
    assert [p.name for p in ds.paths] == [files[i].split("/")[-1] for i in (0, 2, 5)]
    assert ds.captions[:6] == [caption(0, j) for j in range(5)] + [caption(2, 0)]
    assert len(ds.captions) == 16 and np.bincount(ds.text_to_image).tolist() == [5, 6, 5]
    assert ds[1]["captions"] == [caption(2, j) for j in range(6)]
    val = load_dataset(f"karpathy:{path}:root={tmp_path / 'images'},split=val")
    assert len(val) == 1 and val.paths[0].parent.name == "val2014"
    assert len(load_dataset(f"karpathy:{path}:root={tmp_path / 'images'},split=restval")) == 1


def test_flickr_without_filepath_and_default_root(tmp_path):
    path, files = write_karpathy(tmp_path, coco=False)
    write_random_images(tmp_path, files)  # images beside the JSON: root defaults to its folder
    ds = load_dataset(f"karpathy:{path}")
    assert [p.name for p in ds.paths] == ["1000.jpg", "1002.jpg", "1005.jpg"]
    assert load_dataset(str(path)).captions == ds.captions  # a bare dataset_flickr30k.json is Karpathy's
    assert ds.fingerprint() == load_dataset(f"karpathy:{path}:split=test").fingerprint()
    assert ds.fingerprint() != load_dataset(f"karpathy:{path}:split=train").fingerprint()


def test_bad_karpathy_inputs_name_the_file(tmp_path):
    path, files = write_karpathy(tmp_path)
    write_random_images(tmp_path, files[:1])
    with pytest.raises(FileNotFoundError, match=r"2 of the 3 test images named in .*dataset_coco\.json"):
        load_dataset(f"karpathy:{path}")
    with pytest.raises(ValueError, match="unknown split 'val2'"):
        load_dataset(f"karpathy:{path}:split=val2")
    only_test = tmp_path / "only_test.json"
    only_test.write_text(json.dumps({"images": [{"split": "test", "filename": "a.jpg", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(ValueError, match=r"only_test\.json: no images in split 'val' \(splits in the file: test\)"):
        load_dataset(f"karpathy:{only_test}:split=val")
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [{"split": "test"}]}')
    with pytest.raises(ValueError, match=r"broken\.json: images\[0\]"):
        load_dataset(f"karpathy:{bad}")
    with pytest.raises(FileNotFoundError, match="image root not found"):
        check_data_spec(f"karpathy:{path}:root={tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError, match="split file not found"):
        check_data_spec(f"karpathy:{tmp_path / 'dataset_flickr8k.json'}")


def _recalls(img, txt, t2i, k):
    """CLIP_benchmark's definitions, written out: t→i (caption's image in top k), i→t (any caption in top k)."""
    sim = img @ txt.T  # [N, M]
    t2i_hits = [t2i[m] in np.argsort(-sim[:, m])[:k] for m in range(sim.shape[1])]
    i2t_hits = [bool(set(np.argsort(-sim[n])[:k]) & set(np.nonzero(t2i == n)[0])) for n in range(sim.shape[0])]
    return float(np.mean(t2i_hits)), float(np.mean(i2t_hits))


def test_retrieve_cli_on_karpathy_matches_the_definitions(tmp_path, tiny_model_dir, capsys):
    from cliplab.models import load_model

    path, files = write_karpathy(tmp_path)
    write_random_images(tmp_path, files)
    spec = f"karpathy:{path}"
    argv = ["retrieve", str(tiny_model_dir), spec, "--ks", "1,2", "--json", "--quiet", "--no-cache"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == 3 and out["n_captions"] == 16
    ds = load_dataset(spec)
    model = load_model(str(tiny_model_dir))
    with torch.no_grad():
        img = model.encode_images([ds.image(i) for i in range(len(ds))]).numpy()
        txt = model.encode_texts(ds.captions).numpy()
    for k in (1, 2):
        t2i, i2t = _recalls(img, txt, ds.text_to_image, k)
        assert out[f"image_retrieval_recall@{k}"] == pytest.approx(t2i)
        assert out[f"text_retrieval_recall@{k}"] == pytest.approx(i2t)
