import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data import ImageFolder
from cliplab.data.augment import RandomResizedCrop, augmented_views
from cliplab.features import embed_views


def test_random_resized_crop_box_respects_scale_and_ratio():
    t = RandomResizedCrop(size=16, scale=(0.3, 0.6), ratio=(0.8, 1.25), flip=0.0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = t.box(100, 80, rng)
        assert 0 <= left and left + w <= 100 and 0 <= top and top + h <= 80
        assert 0.3 * 8000 * 0.85 <= w * h <= 0.6 * 8000 * 1.15  # rounding slack
        assert 0.8 * 0.9 <= w / h <= 1.25 * 1.1


def test_crop_output_and_flip():
    arr = np.zeros((20, 20, 3), dtype=np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    full = RandomResizedCrop(size=20, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0)
    out = np.asarray(full(img, np.random.default_rng(0)))
    assert out.shape == (20, 20, 3)
    assert out[:, 15:].mean() > 200 and out[:, :5].mean() < 50  # flipped: white moved right


def test_views_are_deterministic_and_distinct(image_folder):
    ds = ImageFolder(image_folder)
    t = RandomResizedCrop(size=16)
    a = augmented_views(ds, 2, t, seed=3)
    b = augmented_views(ds, 2, t, seed=3)
    assert np.array_equal(np.asarray(a[1].image(2)), np.asarray(b[1].image(2)))
    assert not np.array_equal(np.asarray(a[0].image(2)), np.asarray(a[1].image(2)))
    assert a[0].fingerprint() != a[1].fingerprint()
    assert [np.asarray(x).tolist() for x in a[0].images([1, 2])] == [np.asarray(a[0].image(i)).tolist() for i in (1, 2)]


def test_embed_views_shape(tiny_model, image_folder, tmp_path):
    ds = ImageFolder(image_folder)
    v = embed_views(tiny_model, ds, 3, cache_dir=tmp_path, progress=False)
    assert v.shape == (3, len(ds), 16)
    assert not torch.allclose(v[0], v[1])


def test_bad_augmentation_arguments():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="flip"):
        RandomResizedCrop(flip=2.0)
