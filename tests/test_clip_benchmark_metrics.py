"""CLIP_benchmark's metrics, computed independently here: zero-shot classification (acc1, acc5 — NaN below 5
classes —, mean per-class recall), retrieval recall@k with several captions per image, the linear probe, and the
bench's numbers on a webdataset fixture in CLIP_benchmark's layout."""

import io
import math
import tarfile

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from cliplab.metrics import retrieval
from cliplab.metrics.classification import classification_report
from helpers import make_tiny_model


def _topk_np(z, y, k):
    order = np.argsort(-z, axis=1, kind="stable")[:, :k]
    return float(np.mean([y[i] in order[i] for i in range(len(y))]))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_classification_report_matches_numpy_and_sklearn():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 7)).astype(np.float32)
    y = rng.integers(0, 6, size=200)  # class 6 never occurs in the labels (it may be predicted)
    rep = classification_report(z, y)
    assert rep["acc1"] == pytest.approx(float(np.mean(z.argmax(1) == y)))
    assert rep["acc5"] == pytest.approx(_topk_np(z, y, 5))
    assert rep["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, z.argmax(1)))
    assert rep["n"] == 200


@pytest.mark.parametrize("classes", [2, 4])
def test_acc5_is_nan_with_fewer_than_five_classes(classes):
    rng = np.random.default_rng(classes)
    z, y = rng.normal(size=(30, classes)), rng.integers(0, classes, size=30)
    rep = classification_report(z, y)
    assert math.isnan(rep["acc5"]) and rep["acc1"] == pytest.approx(float(np.mean(z.argmax(1) == y)))


def test_acc5_with_exactly_five_classes_is_one():
    rng = np.random.default_rng(5)
    assert classification_report(rng.normal(size=(20, 5)), rng.integers(0, 5, size=20))["acc5"] == 1.0


def _recall_np(img, txt, t2i, k):
    """CLIP_benchmark's recall@k: per query, 1 when at least one positive is among the top k."""
    s = txt @ img.T  # [M, N]
    pos = np.zeros_like(s, dtype=bool)
    pos[np.arange(len(t2i)), t2i] = True
    top_i = np.argsort(-s, axis=1)[:, :k]
    t2i_hit = pos[np.arange(len(t2i))[:, None], top_i].any(1)
    top_t = np.argsort(-s.T, axis=1)[:, :k]
    i2t_hit = pos.T[np.arange(img.shape[0])[:, None], top_t].any(1)
    return t2i_hit.mean(), i2t_hit.mean()


def test_retrieval_recall_with_several_captions_per_image():
    rng = np.random.default_rng(1)
    n, d = 40, 8
    img = rng.normal(size=(n, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    t2i = np.concatenate([np.arange(n), rng.integers(0, n, size=80)])  # 1 to many captions per image
    txt = img[t2i] + 0.9 * rng.normal(size=(len(t2i), d))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    out = retrieval(img.astype(np.float32), txt.astype(np.float32), t2i, ks=(1, 5, 10))
    for k in (1, 5, 10):
        t2i_r, i2t_r = _recall_np(img.astype(np.float32), txt.astype(np.float32), t2i, k)
        assert out[f"image_retrieval_recall@{k}"] == pytest.approx(t2i_r)
        assert out[f"text_retrieval_recall@{k}"] == pytest.approx(i2t_r)


# -- the linear probe ------------------------------------------------------------------------------------------


def _blobs(n, c=6, d=12, seed=0, noise=1.6):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(c, d, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, c, (n,), generator=g)
    return mu[y] + noise * torch.randn(n, d, generator=g), y


def _reference_probe(xtr, ytr, xva, yva, xte, yte, lr=0.1, epochs=10, batch_size=64, seed=0):
    """CLIP_benchmark's procedure, written out: DataLoader over (feature, label) pairs, AdamW, cosine lr per
    step, the 7-point then bisection weight-decay sweep (retraining the peak each round), train + val refit."""
    from torch.utils.data import DataLoader, TensorDataset

    xtr, xva, xte = (torch.nn.functional.normalize(x, dim=-1) for x in (xtr, xva, xte))
    c = int(max(ytr.max(), yva.max(), yte.max())) + 1

    def train(x, y, wd):
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = torch.nn.Linear(x.shape[1], c)
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        steps = epochs * len(loader)
        for epoch in range(epochs):
            for i, (xb, yb) in enumerate(loader):
                step = i + epoch * len(loader)
                for group in opt.param_groups:
                    group["lr"] = 0.5 * (1 + np.cos(np.pi * step / steps)) * lr
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
        torch.random.set_rng_state(state)
        return model

    grid = np.logspace(-6, 2, num=97).tolist()
    start = [i for i, v in enumerate(grid) if v in np.logspace(-6, 2, num=7).tolist()]

    def peak(idxs):
        best, best_acc = 0, 0
        for i in idxs:
            model = train(xtr, ytr, grid[i])
            with torch.no_grad():
                z = model(xva)
            acc = float((z.argmax(1) == yva).float().mean()) if torch.isfinite(z).all() else 0.0
            if best_acc < acc:
                best, best_acc = i, acc
        return best

    at = peak(start)
    span = 8
    while span > 0:
        at = peak([max(at - span, 0), at, min(at + span, len(grid) - 1)])
        span //= 2
    model = train(torch.cat([xtr, xva]), torch.cat([ytr, yva]), grid[at])
    with torch.no_grad():
        z = model(xte).numpy()
    return grid[at], z


def test_linear_probe_matches_clip_benchmarks_procedure():
    from cliplab.assess.linear_probe_benchmark import linear_probe_benchmark

    xtr, ytr = _blobs(150, seed=1)
    xva, yva = _blobs(60, seed=2)
    xte, yte = _blobs(120, seed=3)
    out = linear_probe_benchmark(xtr, ytr, xte, yte, val_features=xva, val_labels=yva, epochs=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only slow it down (the result does not depend on them)
    try:
        wd, z = _reference_probe(xtr, ytr, xva, yva, xte, yte, epochs=4)
    finally:
        torch.set_num_threads(threads)
    assert out["weight_decay"] == pytest.approx(wd)
    y = yte.numpy()
    assert out["lp_acc1"] == pytest.approx(float(np.mean(z.argmax(1) == y)), abs=1e-6)
    assert out["lp_acc5"] == pytest.approx(_topk_np(z, y, 5), abs=1e-6)
    assert out["lp_mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, z.argmax(1)), abs=1e-6)
    assert out["n_train"] == 210 and out["n_val"] == 60 and out["lr"] == 0.1 and out["batch_size"] == 64
    assert 0.5 < out["lp_acc1"] <= 1  # it learns


def test_linear_probe_without_validation_proportion_and_few_shot():
    from cliplab.assess.linear_probe_benchmark import linear_probe_benchmark

    xtr, ytr = _blobs(100, c=3, seed=4)
    xte, yte = _blobs(40, c=3, seed=5)
    plain = linear_probe_benchmark(xtr, ytr, xte, yte, epochs=2)
    assert plain["weight_decay"] == 0.0 and plain["val_acc1"] == {} and math.isnan(plain["lp_acc5"])
    split = linear_probe_benchmark(xtr, ytr, xte, yte, val_proportion=0.2, epochs=2)
    assert (split["n_val"], split["n_train"]) == (20, 100)  # trained again on train + val
    few = linear_probe_benchmark(xtr, ytr, xte, yte, val_proportion=0.2, fewshot_k=4, epochs=2)
    assert few["n_train"] == 12  # k per class; the few-shot probe is not retrained on the val split
    with pytest.raises(ValueError, match="fewshot_k=40"):
        linear_probe_benchmark(xtr, ytr, xte, yte, fewshot_k=40)
    with pytest.raises(ValueError, match="val_proportion"):
        linear_probe_benchmark(xtr, ytr, xte, yte, val_proportion=1.5)


# -- the bench on a webdataset in CLIP_benchmark's layout -------------------------------------------------------

CLASSES = ["red circle", "blue square", "green star", "red star", "blue circle", "green square"]
TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}."]


def _member(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _png(image):
    buf = io.BytesIO()
    image.save(buf, format="png")
    return buf.getvalue()


def _write_wds(root, samples, captions=False, split="test"):
    """``root/<split>/{0,1}.tar`` + ``nshards.txt`` (+ classnames and {c} templates): clip_benchmark's layout."""
    (root / split).mkdir(parents=True)
    half = len(samples) // 2
    for s, part in enumerate([samples[:half], samples[half:]]):
        with tarfile.open(root / split / f"{s}.tar", "w") as tf:
            for j, (image, target) in enumerate(part):
                key = f"s{s * 1000 + j:07d}"
                _member(tf, f"{key}.png", _png(image))
                if captions:
                    _member(tf, f"{key}.txt", "\n".join(target).encode())
                else:
                    _member(tf, f"{key}.cls", str(target).encode())
    (root / split / "nshards.txt").write_text("2\n")
    if captions:
        (root / "dataset_type.txt").write_text("retrieval\n")
    else:
        (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")


def _images(n, seed):
    from cliplab.data import shapes

    ds = shapes("test", n=n, seed=seed, image_size=32)
    return [ds.image(i) for i in range(n)], ds


def test_bench_on_a_webdataset_equals_clip_benchmarks_definitions(tmp_path):
    from cliplab.bench import run_bench

    model = make_tiny_model()
    rng = np.random.default_rng(0)
    images, ds = _images(24, seed=7)
    labels = rng.integers(0, len(CLASSES), size=24).tolist()
    _write_wds(tmp_path / "cls", list(zip(images, labels)))
    # distinct captions in the tiny tokenizer's vocabulary (no exact ties: CLIP_benchmark's topk breaks them
    # arbitrarily, cliplab against the relevant item), one or two per image
    words = [f"a {c} {s} on the {p}" for c in ("red", "blue", "green") for s in ("circle", "square", "star", "thing")
             for p in ("left", "right", "above", "below")]  # fmt: skip
    order = rng.permutation(len(words))
    caps, at = [], 0
    for i in range(24):
        caps.append([words[j] for j in order[at : at + 1 + i % 2]])
        at += 1 + i % 2
    _write_wds(tmp_path / "ret", list(zip(images, caps)), captions=True)

    res = run_bench(model, f"wds:{tmp_path / 'cls'}", tmp_path / "o1", only=["zeroshot"], progress=False,
                    cache_dir=False)  # fmt: skip
    zs = res["stages"]["zeroshot"]["classes"]
    # independently: CLIP_benchmark's zero_shot_classifier (template.format(c=name), normalise, mean, normalise)
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.encode_images(images).double(), dim=-1)
        w = []
        for name in CLASSES:
            prompts = [t.format(c=name) for t in TEMPLATES]
            e = torch.nn.functional.normalize(model.encode_texts(prompts).double(), dim=-1)
            w.append(torch.nn.functional.normalize(e.mean(0), dim=0))
        z = (100.0 * f @ torch.stack(w).T).numpy()
    y = np.array(labels)
    assert zs["acc1"] == pytest.approx(float(np.mean(z.argmax(1) == y)))
    assert zs["acc5"] == pytest.approx(_topk_np(z, y, 5))
    assert zs["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, z.argmax(1)))
    assert zs["classnames"] == CLASSES and zs["n"] == 24

    res = run_bench(model, f"wds:{tmp_path / 'ret'}", tmp_path / "o2", only=["retrieval"], progress=False,
                    cache_dir=False)  # fmt: skip
    ret = res["stages"]["retrieval"]
    flat = [c for group in caps for c in group]
    t2i = np.array([i for i, group in enumerate(caps) for _ in group])
    with torch.no_grad():
        t = torch.nn.functional.normalize(model.encode_texts(flat).double(), dim=-1).numpy()
    for k in (1, 5, 10):
        t2i_r, i2t_r = _recall_np(f.numpy(), t, t2i, k)
        assert ret[f"image_retrieval_recall@{k}"] == pytest.approx(t2i_r)
        assert ret[f"text_retrieval_recall@{k}"] == pytest.approx(i2t_r)
    assert ret["n_images"] == 24 and ret["n_captions"] == len(flat)
    assert ret["ties"] == "topk"  # CLIP_benchmark's convention on its webdatasets (issue #26)


def test_linear_probe_stage_trains_on_the_train_split_of_a_webdataset(tmp_path):
    """Data with a train split: the probe trains on it and tests on the whole test split; without one, the test
    split is halved per class (as on a folder)."""
    from cliplab.bench import run_bench

    model = make_tiny_model()
    rng = np.random.default_rng(3)
    images, _ = _images(40, seed=11)
    labels = np.tile(np.arange(len(CLASSES)), 7)[:40].tolist()
    _write_wds(tmp_path / "d", list(zip(images[:16], labels[:16])))
    _write_wds(tmp_path / "d", list(zip(images[16:], labels[16:])), split="train")
    res = run_bench(model, f"wds:{tmp_path / 'd'}", tmp_path / "o", only=["linear_probe"], progress=False,
                    cache_dir=False)  # fmt: skip
    lp = res["stages"]["linear_probe"]
    # a fifth held out: floor(24 · 0.2) = 4 (random_split gives the remainder to the first part)
    assert (lp["n_train"], lp["n_test"], lp["n_val"]) == (24, 16, 4) and lp["n_classes"] == len(CLASSES)
    assert 0 <= lp["lp_acc1"] <= 1 and lp["weight_decay"] >= 0
    _write_wds(tmp_path / "t", list(zip(images[:24], rng.permutation(labels[:24]).tolist())))
    only_test = run_bench(model, f"wds:{tmp_path / 't'}", tmp_path / "o2", only=["linear_probe"], progress=False,
                          cache_dir=False)["stages"]["linear_probe"]  # fmt: skip
    assert only_test["n_train"] + only_test["n_test"] == 24
