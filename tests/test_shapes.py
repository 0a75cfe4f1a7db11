import numpy as np
import pytest
from PIL import Image

from cliplab.data.base import Dataset
from cliplab.data.shapes_world import (
    COLOURS,
    HELD_OUT_COLOURS,
    HELD_OUT_COMBOS,
    HELD_OUT_SHAPES,
    SHAPES,
    TEMPLATES,
    VOCABULARY,
    ShapesDataset,
    shapes,
)

# Reference colours, independent of the renderer's table: the observed colour must be nearest its name's.
REFERENCE_RGB = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "pink": (255, 140, 200),
    "cyan": (40, 215, 225),
}


def _words(text):
    from cliplab.models.factory import words

    return words(text)


def _object_pixels(arr):
    """Mask of pixels clearly brighter than the dark background."""
    return arr.max(axis=2) > 110


def _nearest_colour(arr):
    pix = arr[_object_pixels(arr)].astype(float)
    med = np.median(pix, axis=0)
    names = list(REFERENCE_RGB)
    dist = [np.linalg.norm(med - np.array(REFERENCE_RGB[c])) for c in names]
    return names[int(np.argmin(dist))]


def test_basic_protocol():
    ds = shapes("test", n=40, seed=1)
    assert isinstance(ds, ShapesDataset) and isinstance(ds, Dataset)
    assert len(ds) == 40 and ds.name == "shapes-shape-test"
    img = ds.image(0)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 64)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (40,)
    assert ds.classnames == list(SHAPES) and ds.templates == TEMPLATES["shape"]
    assert len(ds.images([3, 1, 2])) == 3
    assert shapes("val", n=5, image_size=32).image(4).size == (32, 32)
    assert shapes("val", n=5, image_size=100).render(-1).shape == (100, 100, 3)
    with pytest.raises(IndexError):
        ds.image(40)


def test_deterministic_and_random_access():
    a = shapes("train", n=300, seed=3, objects="mixed")
    b = shapes("train", n=300, seed=3, objects="mixed")
    order = np.random.default_rng(0).permutation(300)[:60]
    np.testing.assert_array_equal(a.arrays(order), b.arrays(list(range(300)))[order])
    np.testing.assert_array_equal(a.arrays(order[::-1]), a.arrays(order)[::-1])
    # image i does not depend on n
    np.testing.assert_array_equal(shapes("train", n=20, seed=3, objects="mixed").arrays(), a.arrays(range(20)))
    assert a.captions == b.captions and a.fingerprint() == b.fingerprint()
    first = a.arrays(range(20))
    for other in (shapes("train", n=20, seed=4, objects="mixed"), shapes("val", n=20, seed=3, objects="mixed")):
        assert other.fingerprint() != a.fingerprint()
        assert not np.array_equal(other.arrays(), first)
    assert shapes("test", n=20).fingerprint() != shapes("test", n=21).fingerprint()
    assert shapes("test", n=20).fingerprint() != shapes("test", n=20, corruption="fog").fingerprint()


def test_labels_match_attributes_and_pixels():
    ds = shapes("test", n=120, seed=0, task="colour")
    att = ds.attributes
    assert set(att) >= {"shape", "colour", "size", "position", "n_objects"}
    assert (att["n_objects"] == 1).all() and (att["shape2"] == "").all()
    assert [COLOURS[k] for k in ds.labels] == att["colour"].tolist()
    np.testing.assert_array_equal(shapes("test", n=120, task="shape").labels, [SHAPES.index(s) for s in att["shape"]])
    sc = shapes("test", n=120, task="shape_colour")
    assert len(sc.classnames) == len(SHAPES) * len(COLOURS) and "red circle" in sc.classnames
    assert [sc.classnames[k] for k in sc.labels] == [f"{c} {s}" for c, s in zip(att["colour"], att["shape"])]
    areas = {"small": [], "large": []}
    for i in range(len(ds)):
        arr = ds.render(i)
        assert _nearest_colour(arr) == ds.classnames[ds.labels[i]]
        mask = _object_pixels(arr)
        areas[att["size"][i]].append(mask.sum())
        ys, xs = np.nonzero(mask)
        cx, cy = xs.mean() / 64, ys.mean() / 64
        expected = {"left": cx < 0.42, "right": cx > 0.58, "top": cy < 0.42, "bottom": cy > 0.58}
        expected["center"] = abs(cx - 0.5) < 0.1 and abs(cy - 0.5) < 0.1
        assert expected[att["position"][i]], (i, att["position"][i], cx, cy)
    assert np.mean(areas["large"]) > 1.8 * np.mean(areas["small"])


def test_two_objects():
    ds = shapes("test", n=200, objects=2, task="shape")
    att = ds.attributes
    assert (att["n_objects"] == 2).all()
    pairs = list(zip(att["shape"], att["colour"], att["shape2"], att["colour2"]))
    assert all((s, c) != (s2, c2) for s, c, s2, c2 in pairs)
    relation = {"left": "to the left of", "right": "to the right of", "top": "above", "bottom": "below"}
    for i in range(len(ds)):
        detailed = ds.captions[3 * i]
        assert relation[att["position"][i]] in detailed and att["shape2"][i] in detailed
        assert len(ds.describe(i)) == 2
    mixed = shapes("test", n=200, objects="mixed").attributes["n_objects"]
    assert 60 < (mixed == 2).sum() < 140


def test_held_out_sets():
    ood = shapes("test", n=150, held_out="shapes", objects="mixed")
    att = ood.attributes
    assert set(att["shape"]) <= set(HELD_OUT_SHAPES) and set(att["shape2"]) <= set(HELD_OUT_SHAPES) | {""}
    assert set(att["colour"]) <= set(COLOURS)
    assert ood.labels is None and ood.classnames == list(SHAPES)
    assert shapes("test", n=10, held_out="shapes", task="colour").labels is not None
    assert shapes("test", n=10, held_out="shapes", task="shape_colour").labels is None
    ood = shapes("test", n=80, held_out="colours", task="colour")
    att = ood.attributes
    assert set(att["colour"]) <= set(HELD_OUT_COLOURS) and set(att["shape"]) <= set(SHAPES)
    assert ood.labels is None and ood.classnames == list(COLOURS)
    assert shapes("test", n=10, held_out="colors", task="shape").labels is not None
    for i in range(40):
        assert _nearest_colour(ood.render(i)) == att["colour"][i]
    assert set(HELD_OUT_SHAPES).isdisjoint(SHAPES) and set(HELD_OUT_COLOURS).isdisjoint(COLOURS)


def test_held_out_combos():
    bad = set(HELD_OUT_COMBOS)
    train = shapes("train", n=3000, objects="mixed").attributes
    for suffix in ("", "2"):
        seen = set(zip(train["shape" + suffix], train["colour" + suffix]))
        assert not seen & bad
    test = shapes("test", n=3000).attributes
    assert set(zip(test["shape"], test["colour"])) >= bad
    held_in = shapes("test", n=500, combos="held_in").attributes
    assert not set(zip(held_in["shape"], held_in["colour"])) & bad
    held = shapes("test", n=200, combos="held_out", task="shape_colour")
    assert set(zip(held.attributes["shape"], held.attributes["colour"])) <= bad
    assert all(held.classnames[k] in {f"{c} {s}" for s, c in bad} for k in held.labels)
    train_all = shapes("train", n=3000, combos="held_out").attributes
    assert set(zip(train_all["shape"], train_all["colour"])) <= bad


def test_captions_vocabulary_and_templates():
    ds = shapes("train", n=300, objects="mixed", seed=5)
    caps, t2i = ds.captions, ds.text_to_image
    assert len(caps) == 3 * len(ds) and t2i.dtype == np.int64 and t2i.tolist() == np.repeat(np.arange(300), 3).tolist()
    att = ds.attributes
    vocab = set(VOCABULARY)
    assert VOCABULARY == sorted(vocab) and {"pentagon", "pink", "cyan", "moon", "."} <= vocab
    for i in range(len(ds)):
        mine = [caps[m] for m in np.nonzero(t2i == i)[0]]
        assert att["shape"][i] in mine[0] and att["colour"][i] in mine[0]
        for c in mine:
            toks = _words(c)
            assert set(toks) <= vocab and len(toks) <= 14, c  # fits a 16-token context with <bos>/<eos>
    assert {"a circle.", "a red shape."} <= set(caps)
    for task, templates in TEMPLATES.items():
        names = shapes("test", n=2, task=task).classnames
        for t in templates:
            for name in names:
                assert set(_words(t.format(name))) <= vocab
    ood_caps = shapes("test", n=50, held_out="shapes").captions
    assert all(set(_words(c)) <= vocab for c in ood_caps)
    sub = ds.subset([2, 0])
    assert sub.captions == caps[0:3] + caps[6:9] and sub.text_to_image.tolist() == [1, 1, 1, 0, 0, 0]


def test_templates_follow_task():
    assert shapes("test", n=2, task="color").templates == TEMPLATES["colour"]
    assert shapes("test", n=2, task="colour").name == "shapes-colour-test"
    assert "a circle." in [t.format("circle") for t in shapes("test", n=2).templates]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "size"}, "task"),
        ({"split": "dev"}, "split"),
        ({"held_out": "sizes"}, "held_out"),
        ({"corruption": "snow"}, "corruption"),
        ({"n": 0}, "n must be"),
        ({"n": -3}, "n must be"),
        ({"severity": 0}, "severity"),
        ({"severity": 6, "corruption": "fog"}, "severity"),
        ({"image_size": 8}, "image_size"),
        ({"objects": 3}, "objects"),
        ({"combos": "some"}, "combos"),
        ({"held_out": "shapes", "combos": "held_out"}, "combos"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shapes(**{"split": "test", "n": 4, **kwargs})


def test_error_lists_accepted_values():
    with pytest.raises(ValueError, match="'shape', 'colour', 'shape_colour'"):
        shapes(task="nope")


def test_throughput_sanity():
    ds = shapes("train", n=500, objects="mixed")
    imgs = ds.images(range(500))
    assert len(imgs) == 500 and all(im.size == (64, 64) for im in imgs[:10])
    arr = ds.arrays(range(0, 500, 50))
    assert arr.dtype == np.uint8 and arr.shape == (10, 64, 64, 3)
