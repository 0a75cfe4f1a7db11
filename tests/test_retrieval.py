"""Retrieval recall@k, CLIPScore and RefCLIPScore against plain, independent computations."""

import numpy as np
import pytest
import torch

from cliplab.metrics import clipscore, refclipscore, retrieval
from cliplab.metrics.retrieval_metrics import retrieval_ranks


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _data(n=23, d=8, seed=0, captions=(1, 2, 5)):
    """Random unit features; image i gets captions[i % len(captions)] captions, shuffled order."""
    rng = np.random.default_rng(seed)
    images = _unit(rng.standard_normal((n, d))).astype(np.float32)
    t2i = np.concatenate([[i] * captions[i % len(captions)] for i in range(n)])
    t2i = t2i[rng.permutation(len(t2i))]
    texts = _unit(images[t2i] + 0.9 * rng.standard_normal((len(t2i), d))).astype(np.float32)
    return images, texts, t2i


def _tied_data(seed=0):
    """Small-integer features: every dot product is exact and ties are everywhere (duplicates included)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(-1, 2, size=(12, 3)).astype(np.float32)
    images[3] = images[7]
    t2i = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 3, 7, 7, 11])
    texts = rng.integers(-1, 2, size=(len(t2i), 3)).astype(np.float32)
    texts[5] = texts[6]
    return images, texts, t2i


def _plain_recalls(images, texts, t2i, ks):
    """Full similarity matrix, then per-query sorted lists with ties ordered against the relevant items."""
    n, m = len(images), len(texts)
    sim = (texts.astype(np.float64) @ images.astype(np.float64).T).astype(np.float32)  # [M, N]
    out = {}
    for k in ks:
        hits = 0
        for t in range(m):
            order = sorted(range(n), key=lambda i: (-float(sim[t, i]), i == t2i[t]))
            hits += t2i[t] in order[:k]
        out[f"image_retrieval_recall@{k}"] = hits / m
        hits = 0
        for i in range(n):
            order = sorted(range(m), key=lambda t: (-float(sim[t, i]), t2i[t] == i))
            hits += any(t2i[t] == i for t in order[:k])
        out[f"text_retrieval_recall@{k}"] = hits / n
    return out


def _assert_close_dict(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_matches_plain_loops(seed):
    images, texts, t2i = _data(seed=seed)
    ks = (1, 2, 5, 10, 100)
    _assert_close_dict(retrieval(images, texts, t2i, ks=ks), _plain_recalls(images, texts, t2i, ks))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_retrieval_with_ties_matches_plain_loops(seed):
    images, texts, t2i = _tied_data(seed)
    ks = (1, 2, 3, 5, 12)
    _assert_close_dict(retrieval(images, texts, t2i, ks=ks), _plain_recalls(images, texts, t2i, ks))


def test_hand_computed_example():
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    texts = np.array([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0], [0.6, 0.8]])
    t2i = np.array([0, 2, 1, 2])
    # caption 0 → image 0 first (hit@1); caption 1 → image 1 (0.1·0+1·1=1.0) beats image 2 (0.86): rank 1;
    # caption 2 → image 1 first; caption 3 → image 2 (1.0) first.
    # image 0 → captions by score: c0 (1.0), c3 (0.6), ...: hit@1. image 1 → c1 and c2 tie at 1.0 but c1 is
    # not its caption: the tie counts against c2, rank 1. image 2 → c3 (1.0): hit@1.
    out = retrieval(images, texts, t2i, ks=(1, 2))
    assert out["image_retrieval_recall@1"] == 0.75 and out["image_retrieval_recall@2"] == 1.0
    assert out["text_retrieval_recall@1"] == pytest.approx(2 / 3) and out["text_retrieval_recall@2"] == 1.0
    t2i_ranks, i2t_ranks = retrieval_ranks(images, texts, t2i)
    assert t2i_ranks.tolist() == [0, 1, 0, 0] and i2t_ranks.tolist() == [0, 1, 0]


def test_constant_features_give_pessimistic_recall():
    images, texts = np.ones((5, 4)), np.ones((9, 4))
    t2i = np.arange(9) % 5
    out = retrieval(images, texts, t2i, ks=(1, 4, 5))
    # text → image: 4 other images tie with the target; image → text: 7 other captions tie with the own ones.
    assert out["image_retrieval_recall@1"] == 0.0 and out["image_retrieval_recall@4"] == 0.0
    assert out["image_retrieval_recall@5"] == 1.0
    assert out["text_retrieval_recall@5"] == 0.0


def test_agrees_with_topk_definition_without_ties():
    """CLIP_benchmark's formulation (top-k indices, ≥ 1 positive among them) on tie-free data."""
    images, texts, t2i = _data(n=40, d=16, seed=5)
    sim = torch.from_numpy(texts).double() @ torch.from_numpy(images).double().T
    positive = torch.zeros_like(sim, dtype=torch.bool)
    positive[torch.arange(len(t2i)), torch.from_numpy(t2i)] = True
    out = retrieval(images, texts, t2i, ks=(1, 5, 10))
    for k in (1, 5, 10):
        top = sim.topk(k, dim=1).indices
        expected = positive.gather(1, top).any(dim=1).double().mean().item()
        assert out[f"image_retrieval_recall@{k}"] == pytest.approx(expected)
        top = sim.T.topk(k, dim=1).indices
        expected = positive.T.gather(1, top).any(dim=1).double().mean().item()
        assert out[f"text_retrieval_recall@{k}"] == pytest.approx(expected)


@pytest.mark.parametrize("make", [lambda: _data(n=30, d=32, seed=3), lambda: _tied_data(1)])
def test_chunked_equals_full(make):
    images, texts, t2i = make()
    full_ranks = retrieval_ranks(images, texts, t2i, chunk_size=10**9)
    full = retrieval(images, texts, t2i, ks=(1, 3, 10), chunk_size=10**9)
    for chunk in (1, 2, 3, 7, 64, None):
        ranks = retrieval_ranks(images, texts, t2i, chunk_size=chunk)
        assert torch.equal(ranks[0], full_ranks[0]) and torch.equal(ranks[1], full_ranks[1])
        assert retrieval(images, texts, t2i, ks=(1, 3, 10), chunk_size=chunk) == full


def test_chunk_scores_are_bitwise_reproducible():
    """The property behind chunk-size independence: a row's scores do not depend on the rows computed with it
    (a float32 matmul fails this: BLAS changes kernels and summation order with the number of rows)."""
    from cliplab.metrics.retrieval_metrics import _scores

    rng = np.random.default_rng(0)
    q = torch.from_numpy(_unit(rng.standard_normal((41, 256))).astype(np.float32))
    c = torch.from_numpy(_unit(rng.standard_normal((150, 256))).astype(np.float32))
    full = _scores(q, c)
    for rows in (1, 2, 5, 33):
        for start in range(0, 41, rows):
            assert torch.equal(_scores(q[start : start + rows], c), full[start : start + rows])


def test_automatic_chunks_bound_memory(monkeypatch):
    import cliplab.metrics.retrieval_metrics as mod

    images, texts, t2i = _data(n=60, d=8, seed=4)
    full = retrieval(images, texts, t2i)
    monkeypatch.setattr(mod, "_CHUNK_ELEMENTS", 100)  # ≤ 1 row of 100 scores per chunk
    seen = []
    real = mod._scores
    monkeypatch.setattr(mod, "_scores", lambda q, c: seen.append(q.shape[0] * c.shape[0]) or real(q, c))
    assert retrieval(images, texts, t2i) == full
    assert max(seen) <= 2 * max(len(images), len(texts))


def test_inputs_numpy_torch_and_keys():
    images, texts, t2i = _data(seed=7)
    a = retrieval(images, texts, t2i)
    b = retrieval(torch.from_numpy(images), torch.from_numpy(texts), torch.from_numpy(t2i))
    assert a == b
    assert sorted(a) == sorted(f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10))
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in a.values())


def test_function_export_is_the_function():
    """The module (``retrieval_metrics``) and the function (``retrieval``) have distinct names: no import order
    can rebind one to the other."""
    import importlib

    import cliplab.metrics as metrics

    mod = importlib.import_module("cliplab.metrics.retrieval_metrics")
    from cliplab.metrics import retrieval as again

    assert again is mod.retrieval and callable(again)
    assert metrics.clipscore is mod.clipscore is clipscore


def test_retrieval_validation():
    images, texts, t2i = _data(n=6, seed=0)
    with pytest.raises(ValueError, match="dimension"):
        retrieval(images, texts[:, :4], t2i)
    with pytest.raises(ValueError, match="only 6 images"):
        retrieval(images, texts, np.where(t2i == 0, 6, t2i))
    with pytest.raises(ValueError, match="non-negative"):
        retrieval(images, texts, np.where(t2i == 0, -1, t2i))
    with pytest.raises(ValueError, match="entries"):
        retrieval(images, texts, t2i[:-1])
    with pytest.raises(ValueError, match="no caption"):
        keep = t2i != 2
        retrieval(images, texts[keep], t2i[keep])
    bad = images.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval(bad, texts, t2i)
    bad = texts.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        retrieval(images, bad, t2i)
    with pytest.raises(ValueError, match="integers"):
        retrieval(images, texts, t2i + 0.5)
    with pytest.raises(ValueError, match="positive integer"):
        retrieval(images, texts, t2i, ks=(0,))
    with pytest.raises(ValueError, match="at least one"):
        retrieval(images, texts, t2i, ks=())
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval(images, texts, t2i, chunk_size=0)


# ----------------------------------------------------------------------------- CLIPScore


def test_clipscore_per_pair_formula():
    rng = np.random.default_rng(0)
    images, texts = rng.standard_normal((30, 16)) * 3, rng.standard_normal((30, 16))
    got = clipscore(images, texts)
    cos = np.array([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(images, texts)])
    assert isinstance(got, torch.Tensor) and got.shape == (30,)
    np.testing.assert_allclose(got.numpy(), 2.5 * np.maximum(cos, 0), atol=1e-6)
    assert (cos < 0).any() and bool((got[torch.from_numpy(cos < 0)] == 0).all())
    np.testing.assert_allclose(clipscore(images, texts, w=1.0).numpy(), np.maximum(cos, 0), atol=1e-6)


def test_clipscore_validation():
    with pytest.raises(ValueError, match="one per pair"):
        clipscore(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="dimension"):
        clipscore(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="all-zero"):
        clipscore(np.zeros((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        clipscore(np.full((3, 4), np.nan), np.ones((3, 4)))


def _plain_refclipscore(images, texts, refs, w=2.5):
    out = []
    for v, c, r in zip(images, texts, refs):
        cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
        clip_s = w * max(cos(c, v), 0.0)
        ref = max(max(cos(c, x) for x in r), 0.0)
        out.append(0.0 if clip_s + ref == 0 else 2 * clip_s * ref / (clip_s + ref))
    return np.array(out)


def test_refclipscore_tensor_and_list_forms():
    rng = np.random.default_rng(1)
    images, texts = rng.standard_normal((12, 8)), rng.standard_normal((12, 8))
    refs = rng.standard_normal((12, 3, 8)) + texts[:, None, :]
    expected = _plain_refclipscore(images, texts, refs)
    np.testing.assert_allclose(refclipscore(images, texts, refs).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(refclipscore(images, texts, list(refs)).numpy(), expected, atol=1e-6)
    ragged = [refs[i, : 1 + i % 3] for i in range(12)]
    np.testing.assert_allclose(
        refclipscore(images, texts, ragged).numpy(), _plain_refclipscore(images, texts, ragged), atol=1e-6
    )


def test_refclipscore_edge_cases():
    img, txt = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])
    # identical reference: H(2.5, 1) = 5/3.5
    assert refclipscore(img, txt, [np.array([[2.0, 0.0]])]).item() == pytest.approx(2 * 2.5 / 3.5)
    # all references opposite → reference term clipped to 0 → score 0, never NaN
    assert refclipscore(img, txt, [np.array([[-1.0, 0.0]])]).item() == 0.0
    # image orthogonal and reference opposite → 0/0 defined as 0
    assert refclipscore(np.array([[0.0, 1.0]]), txt, [np.array([[-1.0, 0.0]])]).item() == 0.0


def test_refclipscore_validation():
    img, txt = np.ones((2, 4)), np.ones((2, 4))
    with pytest.raises(ValueError, match="groups"):
        refclipscore(img, txt, [np.ones((1, 4))])
    with pytest.raises(ValueError, match="expected"):
        refclipscore(img, txt, np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="dimension"):
        refclipscore(img, txt, [np.ones((1, 4)), np.ones((2, 3))])
    with pytest.raises(ValueError, match="empty"):
        refclipscore(img, txt, [np.ones((1, 4)), np.ones((0, 4))])


def _clip_benchmark_recall(images: torch.Tensor, texts: torch.Tensor, t2i: torch.Tensor, k: int) -> dict[str, float]:
    """CLIP_benchmark's ``recall_at_k`` (clip_benchmark/metrics/zeroshot_retrieval.py): ``torch.topk`` over the
    score matrix ``texts @ imagesᵀ``, a hit when a positive is among the top k."""
    scores = (texts.double() @ images.double().T).float()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), t2i] = True

    def recall(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        top = torch.topk(s, k, dim=1)[1]
        onehot = torch.nn.functional.one_hot(top, num_classes=s.shape[1])
        return (onehot * p[:, None, :]).sum(dim=(1, 2)) / p.sum(dim=1)

    return {
        f"image_retrieval_recall@{k}": float((recall(scores, positive) > 0).float().mean()),
        f"text_retrieval_recall@{k}": float((recall(scores.T, positive.T) > 0).float().mean()),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_index_ties_match_clip_benchmark_topk_on_duplicate_captions(seed):
    """Issue #26: class-style captions repeat exactly; CLIP_benchmark breaks the ties by index."""
    g = torch.Generator().manual_seed(seed)
    n_images, n_strings = 30, 4
    images = torch.nn.functional.normalize(torch.randn(n_images, 8, generator=g), dim=1)
    strings = torch.nn.functional.normalize(torch.randn(n_strings, 8, generator=g), dim=1)
    caption_of = torch.randint(n_strings, (n_images, 2), generator=g)  # two captions per image, few strings
    texts = strings[caption_of.flatten()]
    t2i = torch.arange(n_images).repeat_interleave(2)
    got_any_difference = False
    for k in (1, 2, 5):
        ref = _clip_benchmark_recall(images, texts, t2i, k)
        for chunk in (None, 7):
            got = retrieval(images, texts, t2i, ks=(k,), ties="topk", chunk_size=chunk)
            assert got == pytest.approx(ref, abs=1e-6)
        got_any_difference |= retrieval(images, texts, t2i, ks=(k,)) != pytest.approx(ref, abs=1e-6)
    assert got_any_difference  # the pessimistic convention differs on these ties


def test_ties_option_is_checked_and_default_follows_the_data():
    from cliplab.metrics.retrieval_metrics import default_ties

    with pytest.raises(ValueError, match="ties"):
        retrieval(torch.eye(3), torch.eye(3), [0, 1, 2], ties="random")
    assert default_ties("wds:clip-benchmark/wds_mscoco_captions") == "topk"
    with pytest.raises(ValueError, match="ties"):
        retrieval_ranks(torch.eye(3), torch.eye(3), [0, 1, 2], ties="topk")
    assert default_ties("shapes") == "pessimistic"


@pytest.mark.parametrize("seed", [0, 1])
def test_index_ties_order_equal_scores_by_index(seed):
    """``ties="index"``: the rank of the first relevant item in the order ``(−score, index)``, by brute force."""
    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(12, 6, generator=g), dim=1)
    strings = torch.nn.functional.normalize(torch.randn(3, 6, generator=g), dim=1)
    texts = strings[torch.randint(3, (24,), generator=g)]
    t2i = torch.arange(12).repeat_interleave(2)
    s = (texts.double() @ images.double().T).float()
    t2i_ranks, i2t_ranks = retrieval_ranks(images, texts, t2i, ties="index", chunk_size=5)
    for t in range(24):
        order = sorted(range(12), key=lambda i: (-float(s[t, i]), i))
        assert int(t2i_ranks[t]) == order.index(int(t2i[t]))
    for i in range(12):
        order = sorted(range(24), key=lambda t: (-float(s[t, i]), t))
        assert int(i2t_ranks[i]) == min(r for r, t in enumerate(order) if int(t2i[t]) == i)
