import os

import numpy as np
import pytest
import torch

from cliplab import Features, embed
from cliplab.data import ImageFolder
from cliplab.features import cache_key
from helpers import make_tiny_model


class CountingModel:
    """Counts image forward passes of a model."""

    def __init__(self, model):
        self.calls = 0
        original = model.image_features

        def counted(px):
            self.calls += 1
            return original(px)

        model.image_features = counted


def test_embed_equals_encode_images(tiny_model, image_folder, tmp_path):
    ds = ImageFolder(image_folder)
    feats = embed(tiny_model, ds, batch_size=3, cache_dir=tmp_path / "c", progress=False)
    direct = tiny_model.encode_images([ds.image(i) for i in range(len(ds))], batch_size=3)
    assert torch.allclose(feats.images, direct, atol=1e-6)
    assert feats.labels.tolist() == ds.labels.tolist()
    assert feats.classnames == ["blue square", "red circle"]
    assert feats.meta["model_fingerprint"] == tiny_model.fingerprint()


def test_cache_hit_miss_and_invalidation(image_folder, tmp_path):
    model = make_tiny_model()
    counter = CountingModel(model)
    ds = ImageFolder(image_folder)
    cache = tmp_path / "cache"
    first = embed(model, ds, batch_size=4, cache_dir=cache, progress=False)
    assert counter.calls == 2 and len(os.listdir(cache)) == 1
    again = embed(model, ds, batch_size=4, cache_dir=cache, progress=False)
    assert counter.calls == 2, "a second call with the same model and data must hit the cache"
    assert torch.equal(again.images, first.images)

    # data change -> miss
    from PIL import Image

    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(image_folder / "red_circle" / "new.png")
    embed(model, ImageFolder(image_folder), batch_size=4, cache_dir=cache, progress=False)
    assert counter.calls == 5 and len(os.listdir(cache)) == 2

    # weight change -> miss
    ds = ImageFolder(image_folder)
    key_before = cache_key(model, ds)
    with torch.no_grad():
        model.module.visual_projection.weight.mul_(1.5)
    assert cache_key(model, ds) != key_before

    # preprocessing change -> miss
    from dataclasses import replace

    key_before = cache_key(model, ds)
    model.preprocess = replace(model.preprocess, mean=(0.4, 0.4, 0.4))
    assert cache_key(model, ds) != key_before

    # no cache at all
    calls = counter.calls
    embed(model, ds, batch_size=100, cache_dir=False, progress=False)
    embed(model, ds, batch_size=100, cache_dir=False, progress=False)
    assert counter.calls == calls + 2


def test_damaged_cache_entry_is_recomputed(tiny_model, image_folder, tmp_path):
    ds = ImageFolder(image_folder)
    cache = tmp_path / "cache"
    good = embed(tiny_model, ds, cache_dir=cache, progress=False)
    (entry,) = cache.iterdir()
    entry.write_bytes(entry.read_bytes()[:100])  # truncated by a crash
    again = embed(tiny_model, ds, cache_dir=cache, progress=False)
    assert torch.allclose(again.images, good.images)
    assert Features.load(entry).images.shape == good.images.shape  # rewritten whole


def test_features_save_load_round_trip_and_subset(tmp_path):
    g = torch.Generator().manual_seed(0)
    feats = Features(
        images=torch.randn(5, 4, generator=g),
        labels=torch.tensor([0, 1, 1, 0, 2]),
        classnames=["a", "b", "c"],
        texts=torch.randn(7, 4, generator=g),
        text_to_image=torch.tensor([0, 0, 1, 2, 3, 4, 4]),
        captions=[f"c{i}" for i in range(7)],
        meta={"model": "m"},
    )
    feats.save(tmp_path / "f.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"]  # no temporary files left
    back = Features.load(tmp_path / "f.safetensors")
    for name in ("images", "labels", "texts", "text_to_image"):
        assert torch.equal(getattr(back, name), getattr(feats, name))
    assert back.captions == feats.captions and back.classnames == feats.classnames and back.meta == feats.meta
    sub = feats.subset([4, 1])
    assert torch.equal(sub.images, feats.images[[4, 1]])
    assert sub.text_to_image.tolist() == [1, 0, 0] and sub.captions == ["c2", "c5", "c6"]


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "f.safetensors"
    Features(images=torch.ones(2, 3)).save(path)
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        Features(images=torch.zeros(2, 3)).save(path)
    monkeypatch.undo()
    assert torch.equal(Features.load(path).images, torch.ones(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"]


def test_features_validation_errors(tmp_path):
    with pytest.raises(ValueError, match="labels has 3 entries but there are 2 samples"):
        Features(images=torch.zeros(2, 3), labels=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="only 2 classes"):
        Features(images=torch.zeros(2, 3), labels=torch.tensor([0, 2]), classnames=["a", "b"])
    with pytest.raises(ValueError, match="dimension 4, expected 3"):
        Features(images=torch.zeros(2, 3), texts=torch.zeros(1, 4), text_to_image=torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        Features(images=torch.tensor([[float("nan"), 0.0]]))
    (tmp_path / "x.safetensors").write_text("garbage")
    with pytest.raises(ValueError, match="not a readable cliplab features file"):
        Features.load(tmp_path / "x.safetensors")


def test_embed_rejects_empty_and_wrong_types(tiny_model, tmp_path):
    from cliplab.data import Subset

    ds = ImageFolder
    with pytest.raises(TypeError, match="cliplab Dataset"):
        embed(tiny_model, [1, 2, 3])
    with pytest.raises(TypeError, match="cliplab Model"):
        embed("not a model", ds)

    class Empty(Subset):
        pass

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a" / "x.png")
    empty = Subset(ImageFolder(tmp_path / "imgs"), [])
    with pytest.raises(ValueError, match="empty"):
        embed(tiny_model, empty, cache_dir=False)
