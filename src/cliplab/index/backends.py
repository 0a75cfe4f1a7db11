"""Search backends behind :class:`cliplab.index.VectorIndex`: FAISS (flat, IVF, HNSW) and an exact NumPy/torch one.

Every backend stores float32 vectors (L2-normalised by the caller) and ranks by inner product, which is the
cosine on the unit sphere. Results follow the FAISS convention: when fewer than k vectors are found the
missing slots hold id −1 and score −inf.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

__all__ = ["have_faiss", "require_faiss", "NumpyFlatBackend", "FaissBackend", "exact_search"]

_SEARCH_ELEMENTS = 1 << 24  # scores per chunk in exact search (64 MiB of float32)


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def require_faiss(what: str) -> Any:
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            f"{what} needs FAISS, which is not installed: pip install faiss-cpu (or pip install 'cliplab[index]'); "
            "without it only the exact 'flat' index (NumPy/torch) is available"
        ) from err
    return faiss


def exact_search(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with torch matmul + topk, in query chunks of about 2**24 scores.

    Results are sorted by score (descending), equal scores by id (ascending); which of several vectors tied
    at the k-th score makes the cut is unspecified.
    """
    n, q = database.shape[0], queries.shape[0]
    scores = np.full((q, k), -np.inf, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    kk = min(k, n)
    if kk == 0 or q == 0:
        return scores, ids
    db = torch.from_numpy(database)
    rows = max(1, _SEARCH_ELEMENTS // max(1, n))
    for start in range(0, q, rows):
        s = torch.from_numpy(queries[start : start + rows]) @ db.T
        top_s, top_i = torch.topk(s, kk, dim=1)
        # deterministic order among equal scores: id ascending, then score descending (stable sorts)
        order = torch.argsort(top_i, dim=1, stable=True)
        top_s, top_i = top_s.gather(1, order), top_i.gather(1, order)
        order = torch.argsort(top_s, dim=1, descending=True, stable=True)
        scores[start : start + rows, :kk] = top_s.gather(1, order).numpy()
        ids[start : start + rows, :kk] = top_i.gather(1, order).numpy()
    return scores, ids


class NumpyFlatBackend:
    """Exact search without FAISS: vectors in a growable float32 array, scored with torch."""

    name = "numpy"
    kind = "flat"
    filename = "vectors.npy"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._data = np.empty((0, dim), dtype=np.float32)
        self._n = 0

    @property
    def ntotal(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        return self._data[: self._n]

    def add(self, x: np.ndarray, ids: np.ndarray | None = None) -> None:
        if ids is not None:
            raise ValueError("a flat index numbers its vectors in insertion order; ids are not accepted")
        need = self._n + x.shape[0]
        if need > self._data.shape[0]:  # amortised O(1) appends: grow geometrically
            grown = np.empty((max(need, 2 * self._data.shape[0], 1024), self.dim), dtype=np.float32)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : need] = x
        self._n = need

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.vectors, queries, k)

    def params(self) -> dict[str, Any]:
        return {}

    def set_params(self, **params: Any) -> None:
        if params:
            raise ValueError(f"the exact flat index has no search parameters, got {sorted(params)}")

    def reconstruct_all(self) -> np.ndarray:
        return self.vectors

    def write(self, path: str | os.PathLike) -> None:
        np.save(path, self.vectors)

    @classmethod
    def read(cls, path: str | os.PathLike, dim: int) -> NumpyFlatBackend:
        data = np.load(path, allow_pickle=False)
        if data.ndim != 2 or data.shape[1] != dim or data.dtype != np.float32:
            raise ValueError(f"{os.fspath(path)!r} holds {data.dtype} {data.shape}, expected float32 [N, {dim}]")
        backend = cls(dim)
        backend._data, backend._n = np.ascontiguousarray(data), data.shape[0]
        return backend


class FaissBackend:
    """A FAISS index with the inner-product metric.

    * ``flat``: ``IndexFlatIP``, exact brute force.
    * ``ivf``: ``IndexIVFFlat`` (Jégou et al., "Product quantization for nearest neighbor search", TPAMI 2011;
      Johnson et al., "Billion-scale similarity search with GPUs", 2017): k-means coarse quantiser with ``nlist``
      cells, a query scans the ``nprobe`` nearest cells. Default ``nlist ≈ 4·√N``.
    * ``hnsw``: ``IndexHNSWFlat`` (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
      search using Hierarchical Navigable Small World graphs", TPAMI 2018), ``M`` links per node, beam width
      ``efConstruction`` at build and ``efSearch`` at query time; wrapped in ``IndexIDMap2`` so vectors can be
      inserted in any order under their own ids.

    IVF and HNSW take explicit ids (:meth:`add` with ``ids``), which lets the build hold a tuning sample out
    of the index and insert it last without changing anyone's id.
    """

    name = "faiss"
    filename = "index.faiss"

    def __init__(self, index: Any, kind: str) -> None:
        self.index = index
        self.kind = kind
        self.dim = int(index.d)

    @classmethod
    def create(
        cls,
        kind: str,
        train: np.ndarray,
        *,
        nlist: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        train_points_per_list: int = 64,
        kmeans_iters: int = 10,
        seed: int = 0,
    ) -> FaissBackend:
        """An empty index of ``kind``; IVF is trained (k-means) on a seeded sample of ``train``."""
        faiss = require_faiss(f"kind={kind!r}")
        n, d = train.shape
        if kind == "flat":
            return cls(faiss.IndexFlatIP(d), kind)
        if kind == "hnsw":
            graph = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = int(ef_construction)
            return cls(faiss.IndexIDMap2(graph), kind)
        if kind == "ivf":
            if nlist is None:
                nlist = default_nlist(n)
            if not 1 <= nlist <= n:
                raise ValueError(f"nlist must be in [1, {n}] for {n} training vectors, got {nlist}")
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, int(nlist), faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = int(kmeans_iters)
            index.cp.seed = int(seed)
            index.cp.min_points_per_centroid = 1  # we choose nlist ourselves; silence FAISS's warning
            cap = max(nlist, int(train_points_per_list) * nlist)
            index.cp.max_points_per_centroid = max(1, cap // nlist)
            sample = train
            if n > cap:
                rng = np.random.default_rng(seed)
                sample = train[np.sort(rng.choice(n, size=cap, replace=False))]
            index.train(np.ascontiguousarray(sample))
            return cls(index, kind)
        raise ValueError(f"unknown FAISS index kind {kind!r}")

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, x: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append ``x``; ``ids`` (IVF/HNSW only) default to ``ntotal, ntotal + 1, …``."""
        x = np.ascontiguousarray(x)
        if self.kind == "flat":
            if ids is not None:
                raise ValueError("a flat index numbers its vectors in insertion order; ids are not accepted")
            self.index.add(x)
            return
        if ids is None:
            ids = np.arange(self.ntotal, self.ntotal + x.shape[0])
        self.index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    def _hnsw(self) -> Any:
        faiss = require_faiss("HNSW")
        return faiss.downcast_index(self.index.index).hnsw

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(queries), int(k))
        scores = scores.astype(np.float32, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def params(self) -> dict[str, Any]:
        if self.kind == "ivf":
            return {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        if self.kind == "hnsw":
            h = self._hnsw()
            return {"M": int(h.nb_neighbors(1)), "efConstruction": int(h.efConstruction), "efSearch": int(h.efSearch)}
        return {}

    def set_params(self, **params: Any) -> None:
        allowed = {"ivf": {"nprobe"}, "hnsw": {"efSearch"}}.get(self.kind, set())
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"a {self.kind!r} index takes search parameters {sorted(allowed)}, got {sorted(unknown)}")
        if "nprobe" in params:
            value = int(params["nprobe"])
            if not 1 <= value <= self.index.nlist:
                raise ValueError(f"nprobe must be in [1, nlist={self.index.nlist}], got {value}")
            self.index.nprobe = value
        if "efSearch" in params:
            value = int(params["efSearch"])
            if value < 1:
                raise ValueError(f"efSearch must be ≥ 1, got {value}")
            self._hnsw().efSearch = value

    def reconstruct_all(self) -> np.ndarray:
        """Row i = the vector with id i (ids are always 0..N-1)."""
        if self.kind == "ivf":
            self.index.make_direct_map(True)
        return self.index.reconstruct_n(0, self.ntotal)

    def write(self, path: str | os.PathLike) -> None:
        require_faiss("saving a FAISS index").write_index(self.index, os.fspath(path))

    @classmethod
    def read(cls, path: str | os.PathLike, kind: str) -> FaissBackend:
        faiss = require_faiss(f"loading a {kind!r} index saved with FAISS")
        return cls(faiss.read_index(os.fspath(path)), kind)


def default_nlist(n: int) -> int:
    """``round(4·√N)`` IVF cells, capped so that each cell gets ≥ 39 training points (FAISS's minimum)."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39)))
