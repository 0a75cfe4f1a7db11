"""``coop:`` data: the Dassl/CoOp layout, CoOp's class names and prompts, Dassl's few-shot draw, base-to-new.

Fixtures are written in CoOp's layout: ``<root>/oxford_pets/split_zhou_OxfordPets.json`` (``[path, label,
classname]`` triples per split) with the images under ``images/``; FGVC-Aircraft's ``variants.txt`` +
``images_variant_<split>.txt``; ImageNet's ``images/{train,val}/<wnid>/``.
"""

import json
import random

import numpy as np
import pytest

from cliplab.data import check_data_spec, k_shot, load_dataset
from cliplab.data.sampling import base_new_classes, dassl_few_shot, sampler_for, subsample_classes
from helpers import write_random_images

PET_NAMES = ["abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle"]


def write_pets(root, counts=(("train", 7), ("val", 5), ("test", 3)), seed=0):
    """oxford_pets with 5 classes; items interleaved so labels first appear in the order 3, 0, 4, 1, 2."""
    folder = root / "oxford_pets"
    order = [3, 0, 4, 1, 2]
    split = {}
    names = []
    for name, per_class in counts:
        items = []
        for i in range(per_class):
            for label in order:
                n = per_class - 2 if label == 1 else per_class  # class 1 has fewer images
                if i < n:
                    path = f"{PET_NAMES[label].capitalize()}_{name}_{i}.jpg"
                    items.append([path, label, PET_NAMES[label]])
                    names.append(path)
        split[name] = items
    write_random_images(folder / "images", names, seed=seed)
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return folder, split


def dassl_reference(split, k, seed):
    """Dassl's generate_fewshot_dataset, written out: seed, group by label (first appearance), sample."""
    random.seed(seed)
    out = []
    for name, shots in (("train", k), ("val", min(k, 4))):
        tracker = {}
        for item in split[name]:
            tracker.setdefault(item[1], []).append(item)
        drawn = []
        for items in tracker.values():
            drawn.extend(random.sample(items, shots) if len(items) >= shots else items)
        out.append([item[0] for item in drawn])
    return out


def _names(subset):
    return [subset.parent.paths[i].name for i in subset.indices]


def test_split_json_labels_classnames_and_template(tmp_path):
    folder, split = write_pets(tmp_path)
    for name in ("train", "val", "test"):
        ds = load_dataset(f"coop:oxford_pets:root={tmp_path},split={name}")
        assert [p.name for p in ds.paths] == [item[0] for item in split[name]]
        assert ds.labels.tolist() == [item[1] for item in split[name]]
    assert ds.classnames == [n.replace("_", " ") for n in PET_NAMES]  # CoOp's clean-up
    assert ds.templates == ["a photo of a {}, a type of pet."]
    assert len(load_dataset(f"coop:OxfordPets:root={tmp_path}")) == len(split["test"])  # Dassl name, default split
    item = ds[2]
    assert item["label"] == split["test"][2][1] and item["image"].mode == "RGB"


@pytest.mark.parametrize("k", [1, 2, 4, 16])
def test_few_shot_is_dassls_draw(tmp_path, k):
    write_pets(tmp_path)
    train = load_dataset(f"coop:oxford_pets:root={tmp_path},split=train")
    val = load_dataset(f"coop:oxford_pets:root={tmp_path},split=val")
    for seed in (1, 2, 3):
        exp_train, exp_val = dassl_reference(
            json.loads((tmp_path / "oxford_pets/split_zhou_OxfordPets.json").read_text()), k, seed
        )
        assert _names(k_shot(train, k, seed)) == exp_train
        assert _names(k_shot(val, k, seed)) == exp_val
    # the label-array sampler the few-shot protocol uses is the same draw
    assert sampler_for(train)(train.labels, k, 2).tolist() == k_shot(train, k, 2).indices.tolist()


def test_dassl_draw_leaves_the_global_random_state_alone():
    random.seed(123)
    before = random.random()
    random.seed(123)
    dassl_few_shot([0, 1, 0, 1, 2, 2], 1, 7, [0, 1, 2])
    assert random.random() == before


def test_few_shot_from_test_is_refused(tmp_path):
    write_pets(tmp_path)
    with pytest.raises(ValueError, match="not test"):
        k_shot(load_dataset(f"coop:oxford_pets:root={tmp_path}"), 1, 1)


def test_base_to_new_uses_the_ceil_half(tmp_path):
    write_pets(tmp_path)
    assert base_new_classes([4, 0, 2, 1, 3, 0]) == ([0, 1, 2], [3, 4])  # m = ceil(5/2) = 3
    train = load_dataset(f"coop:oxford_pets:root={tmp_path},split=train")
    test = load_dataset(f"coop:oxford_pets:root={tmp_path}")
    base = subsample_classes(test, "base", reference=train)
    new = subsample_classes(test, "new", reference=train)
    assert base.classnames == ["abyssinian", "american bulldog", "american pit bull terrier"]
    assert new.classnames == ["basset hound", "beagle"]
    assert sorted(set(base.labels.tolist())) == [0, 1, 2] and sorted(set(new.labels.tolist())) == [0, 1]
    assert len(base) + len(new) == len(test)
    for sub, offset in ((base, 0), (new, 3)):  # relabelled: label + offset is the original label
        assert (test.labels[sub.indices] == sub.labels + offset).all()
    assert subsample_classes(test, "all") is test
    assert base.fingerprint() != new.fingerprint()


def test_fgvc_aircraft_layout(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F/A-18"]
    (folder).mkdir()
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    names = []
    for split, ids in (("train", ["0001", "0002", "0003"]), ("val", ["0004"]), ("test", ["0005", "0006"])):
        lines = [f"{i} {variants[int(i) % 3]}" for i in ids]
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        names += [f"{i}.jpg" for i in ids]
    write_random_images(folder / "images", names)
    ds = load_dataset(f"coop:fgvc_aircraft:root={tmp_path}")
    assert [p.name for p in ds.paths] == ["0005.jpg", "0006.jpg"]
    assert ds.labels.tolist() == [2, 0] and ds.classnames == variants
    assert ds.templates == ["a photo of a {}, a type of aircraft."]


def test_imagenet_layout_with_and_without_classnames_txt(tmp_path):
    folder = tmp_path / "imagenet"
    wnids = ["n01440764", "n01443537", "n01484850"]
    names = [f"{split}/{w}/{w}_{i}.JPEG" for split in ("train", "val") for w in wnids for i in range(2)]
    write_random_images(folder / "images", names)
    test = load_dataset(f"coop:imagenet:root={tmp_path}")
    assert test.classnames == ["tench", "goldfish", "great white shark"]  # the shipped CLIP names
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.parent.parent.name for p in test.paths] == ["val"] * 6
    assert not test.has_validation_split
    with pytest.raises(ValueError, match="has no validation split"):  # CoOp's val is the test set: refused
        load_dataset(f"coop:imagenet:root={tmp_path},split=val")
    (folder / "classnames.txt").write_text("n01440764 tench fish\nn01443537 goldfish\nn01484850 white shark\n")
    assert load_dataset(f"coop:imagenet:root={tmp_path}").classnames == ["tench fish", "goldfish", "white shark"]
    train = load_dataset(f"coop:imagenet:root={tmp_path},split=train")
    random.seed(1)  # ImageNet: only the train draw (CoOp validates on the test set)
    expected = [
        p for lab in range(3) for p in random.sample([q for q, y in zip(train.paths, train.labels) if y == lab], 1)
    ]
    assert [train.paths[i] for i in k_shot(train, 1, 1).indices] == expected


def test_bad_inputs_name_the_file(tmp_path):
    folder, split = write_pets(tmp_path)
    split_file = folder / "split_zhou_OxfordPets.json"
    (folder / "images" / split["test"][1][0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 13 test images named in .*split_zhou_OxfordPets\.json"):
        load_dataset(f"coop:oxford_pets:root={tmp_path}")
    load_dataset(f"coop:oxford_pets:root={tmp_path},split=train")  # other splits are whole
    split_file.write_text("{not json")
    with pytest.raises(ValueError, match="split_zhou_OxfordPets.json: not valid JSON"):
        load_dataset(f"coop:oxford_pets:root={tmp_path}")
    split_file.unlink()
    for call in (
        lambda: load_dataset(f"coop:oxford_pets:root={tmp_path}"),
        lambda: check_data_spec(f"coop:oxford_pets:root={tmp_path}"),
    ):
        with pytest.raises(FileNotFoundError, match="split_zhou_OxfordPets.json"):
            call()
    with pytest.raises(ValueError, match="unknown dataset 'petz'"):
        load_dataset(f"coop:petz:root={tmp_path}")
    with pytest.raises(ValueError, match="give the data root"):
        load_dataset("coop:oxford_pets")
    with pytest.raises(FileNotFoundError, match="food-101"):
        load_dataset(f"coop:food101:root={tmp_path}")
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset(f"coop:oxford_pets:root={tmp_path},shots=3")


def test_every_coop_dataset_has_its_prompt():
    from cliplab.data.sources.coop import DATASETS, coop_dataset, coop_templates

    prompts = coop_templates()
    assert len(DATASETS) == 11
    for info in DATASETS.values():
        assert "{}" in prompts[info.name]
        assert coop_dataset(info.folder) is info and coop_dataset(info.name.upper()) is info
    assert prompts["DescribableTextures"] == "{} texture." and prompts["EuroSAT"] == "a centered satellite photo of {}."
    assert np.array_equal(dassl_few_shot([1, 1, 0], 5, 0)[0], [0, 1, 2])  # fewer than k: all of them


def test_adapt_cli_on_coop_imagenet_never_validates_on_test(tmp_path, tiny_model_dir, capsys):
    import json as _json

    from cliplab.cli.commands import main

    wnids = ["n01440764", "n01443537", "n01484850"]
    write_random_images(
        tmp_path / "imagenet" / "images",
        [f"{s}/{w}/{i}.JPEG" for s in ("train", "val") for w in wnids for i in range(2)],
    )
    argv = [
        "adapt",
        str(tiny_model_dir),
        f"coop:imagenet:root={tmp_path}",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--views",
        "0",
        "--methods",
        "tip_adapter",
        "--json",
        "--quiet",
        "--no-cache",
    ]
    assert main(argv) == 0
    out = _json.loads(capsys.readouterr().out)
    assert out["sampler"] == "dataset"  # Dassl's draw
    assert out["protocol"]["validation"] == "support"  # not CoOp's val (= the test images)
