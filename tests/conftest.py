import os

import pytest
import torch

from helpers import make_tiny_model, write_random_images, write_shapes_folder

# Tests never touch the user's cache and never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny tensors: no OpenMP hand-off latency, immune to a busy machine's contention.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path_factory.getbasetemp() / "cliplab_home"))


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def tiny():
    """``make_tiny_model()`` shared by the tests of one module (for modules whose tests leave it unchanged)."""
    return make_tiny_model()


@pytest.fixture(scope="module")
def colour_world():
    """(train, test): 60 and 30 built-in world images of the colour task at 32 px (the prompt protocols' tests)."""
    from cliplab.data import shapes

    train = shapes("train", n=60, seed=1, image_size=32, task="colour")
    test = shapes("test", n=30, seed=2, image_size=32, task="colour")
    return train, test


@pytest.fixture
def tiny_model_dir(tmp_path):
    path = tmp_path / "tiny-clip"
    make_tiny_model().save(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """root/<class>/*.png with 2 classes × 4 random images of varying sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in ("red_circle", "blue_square"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            h, w = rng.integers(24, 60, size=2)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


# -- shared by several test modules ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """A whole bench run (every stage) of the tiny model on 32-px built-in data: (output dir, results)."""
    from cliplab.bench import run_bench

    out = tmp_path_factory.mktemp("bench")
    model = make_tiny_model()
    # tiny everything: 32-px images, few shots and seeds
    results = run_bench(
        model, "shapes:image_size=32", out, n=96, cache_dir=out / "cache", progress=False, seeds=(1,), shots=(1, 2)
    )
    return out, results


@pytest.fixture(scope="module")
def bench_folder_run(tmp_path_factory):
    """A whole bench run of a saved tiny model on a 60-image folder with an OOD folder: (output dir, results)."""
    from cliplab.bench import run_bench
    from cliplab.models import load_model

    root = tmp_path_factory.mktemp("bench_folder")
    make_tiny_model().save(root / "model")
    data = write_shapes_folder(root / "images", 60, seed=0)
    ood = write_shapes_folder(root / "novel", 20, seed=1, held_out="shapes")
    model = load_model(root / "model")
    out = root / "out"
    results = run_bench(
        model, str(data), out, ood_data=[str(ood)], cache_dir=root / "cache", progress=False, seeds=(1,), shots=(1, 2)
    )
    return out, results


@pytest.fixture
def served(tmp_path, tiny_model_dir):
    """(index dir, image root, sorted names, model) for a 10-image index built with the tiny HF model."""
    root = tmp_path / "photos"
    names = write_random_images(root, [f"{'sub/' if i % 3 == 0 else ''}img{i:02d}.png" for i in range(10)])
    from cliplab.index.collection import index_images
    from cliplab.models import load_model

    model = load_model(tiny_model_dir)
    index_images(model, root, tmp_path / "idx", model_spec=str(tiny_model_dir), progress=False)
    return tmp_path / "idx", root, names, model
