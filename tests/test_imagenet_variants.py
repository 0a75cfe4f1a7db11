"""``imagenet:`` folders (val, V2, Sketch, A, R), the shipped class files, and flat OOD folders."""

import re

import pytest

from cliplab.data import ImageFiles, check_data_spec, load_dataset
from cliplab.data.sources.imagenet import imagenet_classes, imagenet_subset, imagenet_templates
from helpers import write_random_images

WNID = re.compile(r"^n\d{8}$")


def test_shipped_class_files_are_consistent():
    wnids, names = imagenet_classes()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert all(WNID.match(w) for w in wnids)
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    templates = imagenet_templates()
    assert len(templates) == 80 and all(t.count("{c}") == 1 for t in templates)
    a, r = imagenet_subset("a"), imagenet_subset("r")
    assert len(set(a)) == len(set(r)) == 200 and a == sorted(a) and r == sorted(r)
    assert set(a) != set(r) and 0 <= min(a + r) and max(a + r) < 1000
    assert wnids[a[0]] == "n01498041" and wnids[r[0]] == "n01443537"  # stingray; goldfish
    with pytest.raises(ValueError):
        imagenet_subset("v2")


def test_val_and_sketch_label_by_wordnet_id(tmp_path):
    wnids, names = imagenet_classes()
    picked = [wnids[0], wnids[417], wnids[999]]
    write_random_images(tmp_path / "val", [f"{w}/{i}.JPEG" for w in picked for i in range(2)])
    for spec in (f"imagenet:{tmp_path / 'val'}", f"imagenet:{tmp_path / 'val'}:variant=sketch"):
        ds = load_dataset(spec)
        assert ds.labels.tolist() == [0, 0, 417, 417, 999, 999]
        assert ds.classnames == names and ds.templates == imagenet_templates() and ds.class_subset is None
    assert ds.variant == "sketch" and ds[2]["label"] == 417


def test_v2_numeric_folders(tmp_path):
    write_random_images(tmp_path / "v2", [f"{c}/{i}.jpeg" for c in (0, 10, 999) for i in range(2)])
    ds = load_dataset(f"imagenet:{tmp_path / 'v2'}")  # numeric folders: V2 without saying so
    assert ds.variant == "v2" and ds.labels.tolist() == [0, 0, 10, 10, 999, 999]
    assert ds.classnames[10] == imagenet_classes()[1][10]


@pytest.mark.parametrize("variant", ["a", "r"])
def test_a_and_r_are_200_class_subsets(tmp_path, variant):
    wnids, names = imagenet_classes()
    subset = imagenet_subset(variant)
    picked = [wnids[subset[3]], wnids[subset[150]]]
    write_random_images(tmp_path / variant, [f"{w}/{i}.jpg" for w in picked for i in range(3)])
    (tmp_path / variant / "README.txt").write_text("ImageNet-A/R ship a README beside the class folders")
    ds = load_dataset(f"imagenet:{tmp_path / variant}:variant={variant}")
    assert ds.labels.tolist() == [3] * 3 + [150] * 3
    assert len(ds.classnames) == 200 and ds.class_subset.tolist() == subset
    assert [names[i] for i in ds.class_subset] == ds.classnames  # the 1000-way logits restricted = these classes
    assert ds.classnames[3] == names[subset[3]]
    other = next(w for i, w in enumerate(wnids) if i not in set(subset))
    write_random_images(tmp_path / variant, [f"{other}/x.jpg"])
    with pytest.raises(ValueError, match=f"{other}.*200 ImageNet-{variant.upper()}"):
        load_dataset(f"imagenet:{tmp_path / variant}:variant={variant}")


def test_bad_imagenet_inputs(tmp_path):
    write_random_images(tmp_path / "x", ["cats/1.png"])
    with pytest.raises(ValueError, match="cats.*WordNet ids"):
        load_dataset(f"imagenet:{tmp_path / 'x'}")
    with pytest.raises(ValueError, match="unknown ImageNet variant"):
        check_data_spec(f"imagenet:{tmp_path / 'x'}:variant=v3")
    with pytest.raises(FileNotFoundError, match="ImageNet folder not found"):
        check_data_spec(f"imagenet:{tmp_path / 'nope'}")


def test_flat_ood_folders_load_as_unlabelled_images(tmp_path):
    """MCM/NegLabel OOD sets (iNaturalist, SUN, Places subsets) are plain image folders: usable as --ood-data."""
    flat = tmp_path / "iNaturalist"
    write_random_images(flat, [f"{i:04d}.jpg" for i in range(4)])
    check_data_spec(str(flat))
    ds = load_dataset(str(flat))
    assert isinstance(ds, ImageFiles) and len(ds) == 4 and ds.labels is None
    nested = tmp_path / "Places"  # MCM keeps some sets as <name>/images/*.jpg (torchvision ImageFolder style)
    write_random_images(nested / "images", ["a.jpg", "b.jpg"])
    assert len(load_dataset(str(nested))) == 2
