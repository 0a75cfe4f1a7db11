"""The built-in world's defects (``shapes-defects:``) with exact masks, and the shapes world's class maps."""

import numpy as np
import pytest

from cliplab.data import check_data_spec, load_dataset, shapes
from cliplab.data.shapes_defects import DEFECT_TYPES, ShapesDefects
from cliplab.data.shapes_segmentation import segmentation_classes
from cliplab.data.shapes_world import COLOURS, SHAPES


@pytest.fixture(scope="module")
def test_set():
    return load_dataset("shapes-defects:n=60,seed=3")


def _normal_twin(ds, i):
    """The same image without its defect: same object, background and noise."""
    twin = ShapesDefects(split=ds.split, n=ds.n, seed=ds.seed, image_size=ds.image_size)
    twin._params = list(ds._params)
    twin._params[i] = {**ds._params[i], "label": 0, "defect": "good"}
    return twin.render(i)


def test_splits_labels_and_determinism(test_set):
    ds = test_set
    assert ds.classnames == ["normal", "anomalous"] and set(ds.labels.tolist()) == {0, 1}
    assert set(ds.defect_types) == {"good", *DEFECT_TYPES}
    assert all((t == "good") == (lab == 0) for t, lab in zip(ds.defect_types, ds.labels))
    assert set(ds.categories) <= set(SHAPES) and len(set(ds.categories)) > 3
    item = ds[0]
    assert set(item) == {"image", "index", "label", "defect_type", "category"} and item["image"].size == (64, 64)
    again = load_dataset("shapes-defects:n=60,seed=3")
    assert again.fingerprint() == ds.fingerprint() and again.defect_types == ds.defect_types
    for i in (0, 7, 59):
        np.testing.assert_array_equal(again.render(i), ds.render(i))
        np.testing.assert_array_equal(again.mask(i), ds.mask(i))
    longer = load_dataset("shapes-defects:n=80,seed=3")  # image i does not depend on n
    np.testing.assert_array_equal(longer.render(59), ds.render(59))
    train = load_dataset("shapes-defects:n=40,seed=3,category=star", split="train")
    assert not train.labels.any() and set(train.defect_types) == {"good"} and set(train.categories) == {"star"}
    assert train.fingerprint() != ds.fingerprint()
    assert not any(train.mask(i).any() for i in range(5))


def test_masks_are_exactly_the_pixels_the_defect_changed(test_set):
    ds = test_set
    seen = set()
    for i in np.nonzero(ds.labels)[0][:24]:
        image, mask = ds.render(i).astype(int), ds.mask(i)
        assert mask.dtype == bool and mask.shape == (64, 64) and mask.sum() >= 6
        diff = np.abs(image - _normal_twin(ds, i)).max(axis=2)
        # every pixel the defect covers (at least half of it) changed visibly ...
        assert diff[mask].min() >= 8, ds.defect_type(i)
        # ... and outside the mask only pixels on its border (under half covered) changed at all
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
        assert not (diff[~grown] > 0).any(), ds.defect_type(i)
        seen.add(ds.defect_type(i))
    assert seen == set(DEFECT_TYPES)
    normal = int(np.nonzero(ds.labels == 0)[0][0])
    np.testing.assert_array_equal(_normal_twin(ds, normal), ds.render(normal))


def test_missing_part_shows_the_background(test_set):
    ds = test_set
    i = ds.defect_types.index("missing")
    bg = ds._params[i]["bg"]
    mask = ds.mask(i)
    inner = mask.copy()  # pixels wholly inside the cut (the mask's border pixels are partly object)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    assert inner.sum() >= 4
    pixels = ds.render(i)[inner].astype(int)
    assert np.abs(pixels - bg).max() <= 14  # background plus the sensor noise (std 3)
    seg = ds.segmentation(i)
    assert not seg[ds.mask(i)].any()  # the cut-out part is no longer the object


def test_defects_segmentation_by_shape_and_colour(test_set):
    ds = test_set
    i = ds.defect_types.index("good")
    p = ds._params[i]
    by_shape, by_colour = ds.segmentation(i), ds.segmentation(i, by="colour")
    assert set(np.unique(by_shape)) == {0, 1 + SHAPES.index(ds.category(i))}
    assert set(np.unique(by_colour)) == {0, 1 + p["colour"]}
    image = ds.render(i).astype(int)
    assert np.abs(image[by_shape > 0] - p["rgb"]).mean() < 12
    assert np.abs(image[by_shape == 0] - p["bg"]).mean() < 12
    with pytest.raises(ValueError, match="'shape' or 'colour'"):
        ds.segmentation(i, by="size")


def test_spec_options_are_checked():
    ds = load_dataset("shapes-defects:n=12,defects=scratch+stain,anomaly_rate=1,image_size=48")
    assert set(ds.defect_types) <= {"scratch", "stain"} and ds.labels.all() and ds.render(0).shape == (48, 48, 3)
    for spec, message in (
        ("shapes-defects:category=hexagon", "unknown category 'hexagon'"),
        ("shapes-defects:defects=dent", "unknown defect type"),
        ("shapes-defects:anomaly_rate=0", "anomaly_rate"),
        ("shapes-defects:image_size=16", "image_size"),
        ("shapes-defects:split=val", "unknown split"),
        ("shapes-defects:colour=red", "unknown option"),
    ):
        with pytest.raises(ValueError, match=message):
            check_data_spec(spec)


def test_shapes_world_segmentation_matches_the_rendered_objects():
    ds = shapes("test", n=12, seed=1, objects=2)
    assert segmentation_classes("shape")[: 1 + len(SHAPES)] == ["background", *SHAPES]
    assert segmentation_classes("colour")[1:7] == list(COLOURS)
    for i in range(4):
        image = ds.render(i).astype(int)
        objects = ds.describe(i)
        by_shape, by_colour = ds.segmentation(i), ds.segmentation(i, by="colour")
        assert set(np.unique(by_shape)) == {0, *(1 + SHAPES.index(o["shape"]) for o in objects)}
        assert set(np.unique(by_colour)) == {0, *(1 + COLOURS.index(o["colour"]) for o in objects)}
        for k in range(2):
            region = (by_shape == 1 + SHAPES.index(objects[k]["shape"])) & (
                by_colour == 1 + COLOURS.index(objects[k]["colour"])
            )
            assert region.sum() > 20
            assert np.abs(image[region] - ds._a["rgb"][i, k]).mean() < 12
        assert np.abs(image[by_shape == 0] - ds._a["bg"][i]).mean() < 12


def test_defects_follow_the_anomaly_protocol(test_set):
    from cliplab.data.anomaly_files import AnomalyData

    assert isinstance(test_set, AnomalyData)
    assert not isinstance(shapes("test", n=2), AnomalyData)
    mask = test_set.mask(int(np.nonzero(test_set.labels)[0][0]))
    mask[:] = False  # the caller's copy: the dataset's cached render is untouched
    assert test_set.mask(int(np.nonzero(test_set.labels)[0][0])).any()
