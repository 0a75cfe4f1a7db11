"""cliplab.index: exact search == brute force, ANN recall, incremental add, save/load, bad inputs."""

import json
import sys

import numpy as np
import pytest
import torch

from cliplab.index import MetadataStore, VectorIndex


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _random(n, d=32, seed=0):
    return _unit(np.random.default_rng(seed).standard_normal((n, d)))


def _clustered(n, d=32, centers=40, noise=0.35, seed=0):
    """A fixed mixture of ``centers`` directions (same for every seed) plus noise; ``seed`` draws the sample."""
    c = _unit(np.random.default_rng(1234).standard_normal((centers, d)))
    rng = np.random.default_rng(seed)
    return _unit(c[rng.integers(0, centers, n)] + noise / np.sqrt(d) * rng.standard_normal((n, d)))


def _brute(db, q, k):
    """Plain exact top-k: float64 scores, stable sort (ties by id)."""
    s = _unit(q).astype(np.float64) @ db.astype(np.float64).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


def _recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())])


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError


# ----------------------------------------------------------------------------- exact NumPy fallback (always)


def _assert_top_k(ids, db, queries, k, tie=1e-6):
    """``ids`` are the exact top k of the float64 brute force. The index scores in float32 (another summation
    order), so two database vectors whose float64 scores are within ``tie`` may come in either order: the ranked
    float64 scores must match, and the ids themselves wherever the ranking is unambiguous."""
    s = _unit(queries).astype(np.float64) @ db.astype(np.float64).T
    want_s, want_i = _brute(db, queries, k)
    ids = np.asarray(ids)
    assert ids.shape == (len(queries), k) and all(len(set(row)) == k for row in ids.tolist())
    np.testing.assert_allclose(np.take_along_axis(s, ids, axis=1), want_s, rtol=0, atol=tie)
    near = (np.abs(s[:, None, :] - want_s[:, :, None]) <= tie).sum(axis=2) > 1  # another vector within `tie`
    np.testing.assert_array_equal(ids[~near], want_i[~near])
    return want_s


def _check_exact(index, db, queries, k=7):
    scores, ids = index.search(queries, k)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64
    want_s = _assert_top_k(ids.numpy(), db, queries, k)
    np.testing.assert_allclose(scores.numpy(), want_s, atol=1e-5)


def test_numpy_flat_equals_brute_force():
    db, q = _random(500, seed=0), np.random.default_rng(1).standard_normal((40, 32))
    index = VectorIndex.build(db * 3.0, backend="numpy")  # scaled: normalised on the way in
    assert (index.kind, index.backend, len(index), index.dim) == ("flat", "numpy", 500, 32)
    _check_exact(index, db, q)


def test_fallback_without_faiss(no_faiss, recwarn):
    db = _random(300)
    index = VectorIndex.build(db)
    assert index.backend == "numpy" and index.kind == "flat"
    _check_exact(index, db, _random(10, seed=3))
    with pytest.warns(UserWarning, match="FAISS is not installed"):
        big = VectorIndex.build(db, exact_threshold=100)
    assert big.kind == "flat"
    for kind in ("ivf", "hnsw"):
        with pytest.raises(ImportError, match="pip install faiss-cpu"):
            VectorIndex.build(db, kind=kind)
    with pytest.raises(ImportError, match="faiss-cpu"):
        VectorIndex.build(db, backend="faiss")


def test_k_larger_than_index_pads():
    index = VectorIndex.build(_random(5), backend="numpy")
    scores, ids = index.search(_random(2, seed=1), 8)
    assert (ids[:, 5:] == -1).all() and torch.isinf(scores[:, 5:]).all() and (ids[:, :5] >= 0).all()
    assert index.get_metadata(ids[0])[-1] is None


def test_exact_ties_are_ordered_by_id():
    db = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    _, ids = VectorIndex.build(db, backend="numpy").search(np.array([[1.0, 0.0]]), 4)
    assert ids.tolist() == [[0, 2, 3, 1]]


def test_incremental_add_and_metadata(tmp_path):
    db = _random(200, seed=4)
    index = VectorIndex.build(
        db[:120], backend="numpy", metadata=[{"path": f"img/{i}.png", "i": i} for i in range(120)]
    )
    new = index.add(db[120:], metadata=[f"img/{i}.png" for i in range(120, 200)])
    assert new.tolist() == list(range(120, 200)) and len(index) == 200
    _check_exact(index, db, _random(15, seed=5))
    assert index.get_metadata([0, 150, -1]) == [{"path": "img/0.png", "i": 0}, {"path": "img/150.png"}, None]
    assert index.ids_for_path("img/150.png") == [150]
    one = index.add(db[0], metadata=[None])  # a single 1-D vector
    assert one.tolist() == [200] and index.get_metadata([200]) == [{}]


def test_save_load_round_trip_numpy(tmp_path):
    db = _random(150, seed=6)
    meta = [{"path": f"a/{i}.jpg", "label": i % 3, "tags": ["x", {"y": i}]} for i in range(150)]
    index = VectorIndex.build(db, backend="numpy", metadata=meta, model="builtin:shapes", info={"dataset": "toy"})
    out = index.save(tmp_path / "idx")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "metadata.sqlite", "vectors.npy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "builtin:shapes" and manifest["dim"] == 32 and manifest["count"] == 150
    assert manifest["kind"] == "flat" and manifest["info"] == {"dataset": "toy"}
    loaded = VectorIndex.load(out)
    q = _random(9, seed=7)
    for a, b in zip(index.search(q, 5), loaded.search(q, 5)):
        assert torch.equal(a, b)
    assert loaded.get_metadata(range(150)) == meta and loaded.model == "builtin:shapes"
    loaded.add(_random(3, seed=8))  # a loaded index keeps growing and re-saves over itself
    loaded.save(out)
    assert len(VectorIndex.load(out)) == 153
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary directories left behind


def test_metadata_store_is_plain_sqlite(tmp_path):
    import sqlite3

    store = MetadataStore()
    store.add(0, [{"path": "p0", "v": 1}, {"w": [1, 2]}])
    store.save(tmp_path / "m.sqlite")
    rows = sqlite3.connect(tmp_path / "m.sqlite").execute("SELECT id, path, data FROM items ORDER BY id").fetchall()
    assert rows == [(0, "p0", '{"path": "p0", "v": 1}'), (1, None, '{"w": [1, 2]}')]
    assert MetadataStore.load(tmp_path / "m.sqlite").get([1, 0]) == [{"w": [1, 2]}, {"path": "p0", "v": 1}]


def test_bad_inputs(tmp_path):
    db = _random(50)
    with pytest.raises(ValueError, match="kind"):
        VectorIndex.build(db, kind="lsh")
    with pytest.raises(ValueError, match="backend"):
        VectorIndex.build(db, backend="annoy")
    with pytest.raises(ValueError, match="only offers exact"):
        VectorIndex.build(db, backend="numpy", kind="ivf")
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex.build(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="all-zero"):
        VectorIndex.build(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="empty"):
        VectorIndex.build(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="2 dimensions"):
        VectorIndex.build(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="metadata has 2 entries"):
        VectorIndex.build(db, metadata=[{}, {}])
    with pytest.raises(ValueError, match="JSON"):
        VectorIndex.build(db[:1], metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="must be a dict"):
        VectorIndex.build(db[:1], metadata=[3])
    with pytest.raises(ValueError, match="target_recall"):
        VectorIndex.build(db, target_recall=1.5)
    index = VectorIndex.build(db, backend="numpy")
    with pytest.raises(ValueError, match="dimension 16, expected 32"):
        index.search(np.ones((2, 16)), 3)
    with pytest.raises(ValueError, match="positive integer"):
        index.search(db[:2], 0)
    with pytest.raises(ValueError, match="dimension"):
        index.add(np.ones((2, 16)))
    with pytest.raises(ValueError, match="no search parameters"):
        index.set_params(nprobe=3)
    assert len(index) == 50  # failed adds changed nothing
    with pytest.raises(FileNotFoundError, match="manifest"):
        VectorIndex.load(tmp_path)
    index.save(tmp_path / "i")
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    (tmp_path / "i" / "manifest.json").write_text(json.dumps({**manifest, "count": 51}))
    with pytest.raises(ValueError, match="inconsistent"):
        VectorIndex.load(tmp_path / "i")


# ----------------------------------------------------------------------------- FAISS


def test_faiss_flat_equals_brute_force(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    db, q = _random(800, seed=10), _random(30, seed=11)
    index = VectorIndex.build(db)
    assert (index.kind, index.backend) == ("flat", "faiss")
    _check_exact(index, db, q)
    index.add(_random(100, seed=12))
    _check_exact(index, np.concatenate([db, _random(100, seed=12)]), q)
    index.save(tmp_path / "f")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        VectorIndex.load(tmp_path / "f")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_on_clustered_data(kind):
    pytest.importorskip("faiss")
    db = _clustered(6000, seed=13)
    q = _clustered(200, seed=14)  # same mixture (same centres), not in the index
    index = VectorIndex.build(db, kind=kind, target_recall=0.95)
    assert index.kind == kind and index.tuning["recall"] >= 0.95
    _, ids = index.search(q, 10)
    assert _recall(ids.numpy(), _brute(db, q, 10)[1]) >= 0.9
    _, own = index.search(db, 1)  # the tuning sample was inserted last under its own ids
    assert (own[:, 0].numpy() == np.arange(len(db))).mean() >= 0.99
    if kind == "ivf":
        assert index.params["nlist"] == min(round(4 * np.sqrt(6000)), 6000 // 39)  # ≥ 39 training points per cell
        assert index.params["nprobe"] < index.params["nlist"]


def test_hnsw_tuning_holds_out_its_queries():
    """A stored vector is an easy HNSW query (the graph links it to its neighbours): tuning on stored vectors
    under-tunes efSearch. The build tunes on vectors kept out of the graph, so held-out recall meets the target."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((16, 64))

    def lowrank(n, seed):  # intrinsic dimension 16: no clusters, the hard-ish case for graph search
        r = np.random.default_rng(seed)
        return _unit(r.standard_normal((n, 16)) @ basis + 0.05 * r.standard_normal((n, 64)))

    db, q = lowrank(5000, 1), lowrank(200, 2)
    index = VectorIndex.build(db, kind="hnsw", hnsw_m=16, ef_construction=40)
    assert index.tuning["queries"] == 256 and len(index) == 5000
    assert _recall(index.search(q, 10)[1].numpy(), _brute(db, q, 10)[1]) >= 0.92
    assert (index.search(db, 1)[1][:, 0].numpy() == np.arange(5000)).mean() >= 0.99


def test_auto_switches_to_ivf_and_tunes_on_given_queries():
    pytest.importorskip("faiss")
    db = _clustered(3000, seed=15)
    index = VectorIndex.build(db, exact_threshold=1000, tune_queries=_clustered(50, seed=16), nlist=40)
    assert index.kind == "ivf" and index.params["nlist"] == 40
    fixed = VectorIndex.build(db, kind="ivf", nlist=40, nprobe=40)
    assert fixed.params["nprobe"] == 40 and fixed.tuning == {}
    _assert_top_k(fixed.search(db[:20], 5)[1].numpy(), db, db[:20], 5)  # all cells = exact
    with pytest.raises(ValueError, match="nprobe must be"):
        fixed.set_params(nprobe=41)
    with pytest.raises(ValueError, match="search parameters"):
        fixed.set_params(efSearch=10)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_save_load_and_incremental_add(tmp_path, kind):
    pytest.importorskip("faiss")
    db = _clustered(2500, seed=17)
    index = VectorIndex.build(db[:2000], kind=kind, metadata=[{"i": i} for i in range(2000)], model="hf:x/y")
    new = index.add(db[2000:], metadata=[{"i": i} for i in range(2000, 2500)])
    assert new[0].item() == 2000 and len(index) == 2500
    _, ids = index.search(db[2000:2100], 1)  # added vectors find themselves
    assert (ids[:, 0].numpy() == np.arange(2000, 2100)).mean() >= 0.95
    index.save(tmp_path / kind)
    assert (tmp_path / kind / "index.faiss").is_file()
    loaded = VectorIndex.load(tmp_path / kind)
    assert (loaded.kind, loaded.backend, loaded.params, loaded.model) == (kind, "faiss", index.params, "hf:x/y")
    q = _clustered(20, seed=18)
    for a, b in zip(index.search(q, 10), loaded.search(q, 10)):
        assert torch.equal(a, b)
    assert loaded.get_metadata([2499]) == [{"i": 2499}]


def test_auto_falls_back_to_flat_when_ivf_cannot_help():
    pytest.importorskip("faiss")
    db = _random(3000, d=64, seed=21)  # no structure: recall 0.95 needs most of the cells
    with pytest.warns(UserWarning, match="falls back to 'flat'"):
        index = VectorIndex.build(db, exact_threshold=1000, metadata=[{"i": i} for i in range(3000)])
    assert index.kind == "flat" and len(index) == 3000 and index.get_metadata([2999]) == [{"i": 2999}]
    _check_exact(index, db, _random(5, d=64, seed=22))


def test_tune_method_and_warning(monkeypatch):
    pytest.importorskip("faiss")
    db = _random(4000, d=64, seed=19)  # uniform on the sphere: the hard case
    index = VectorIndex.build(db, kind="ivf", target_recall=None)
    assert index.params["nprobe"] == max(1, index.params["nlist"] // 64)
    result = index.tune(target_recall=0.9)
    assert result["param"] == "nprobe" and result["recall"] >= 0.9 and index.params["nprobe"] == result["value"]
    assert VectorIndex.build(db[:100], kind="flat").tune() == {}
    hnsw = VectorIndex.build(db, kind="hnsw", hnsw_m=8, ef_construction=16, target_recall=None)
    assert hnsw.params["efSearch"] == 64
    monkeypatch.setattr("cliplab.index.vector_index._recall", lambda found, truth, k: 0.0)  # never good enough
    with pytest.warns(UserWarning, match="keeping it"):
        result = hnsw.tune(_random(5, d=64, seed=20))
    assert result["value"] == hnsw.params["efSearch"] == 8192
