""":class:`VectorIndex`: nearest-neighbour search over L2-normalised embeddings, with per-vector metadata."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplab._io import atomic_dir
from cliplab._validation import ArrayLike, as_tensor, l2_normalize
from cliplab.index.backends import (
    FaissBackend,
    NumpyFlatBackend,
    exact_search,
    have_faiss,
    require_faiss,
)
from cliplab.index.metadata import MetadataStore, normalize_metadata

__all__ = ["VectorIndex", "KINDS", "MANIFEST", "METADATA_FILE"]

KINDS = ("auto", "flat", "ivf", "hnsw")
MANIFEST = "manifest.json"
METADATA_FILE = "metadata.sqlite"
FORMAT = "cliplab-vector-index"
FORMAT_VERSION = 1

Backend = FaissBackend | NumpyFlatBackend


def _unit_vectors(x: ArrayLike, name: str, dim: int | None = None) -> np.ndarray:
    """float32 C-contiguous ``[N, D]`` rows scaled to unit L2 norm (a 1-D input is one row)."""
    t = as_tensor(x, name)
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions [N, D], got shape {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} has dimension {t.shape[1]}, expected {dim} (the index's)")
    t = t.detach().cpu()
    zero = t.norm(dim=1) == 0
    if bool(zero.any()):
        raise ValueError(f"{name} contains {int(zero.sum())} all-zero vector(s), which have no direction")
    return np.ascontiguousarray(l2_normalize(t).numpy(), dtype=np.float32)


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of ``|found_i ∩ truth_i| / k`` (the usual "k-recall@k")."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found[:, :k], truth[:, :k])]
    return float(np.mean(hits)) / k


def _drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Per row: remove the query's own id (or, if absent, the last entry) from a top-(k+1) list."""
    out = np.empty((ids.shape[0], k), dtype=np.int64)
    for row, (r, s) in enumerate(zip(ids, self_ids)):
        where = np.flatnonzero(r == s)
        out[row] = np.delete(r, where[0] if where.size else k)[:k]
    return out


def _tune(
    be: Backend,
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    target: float,
    *,
    db_ids: np.ndarray | None = None,
    self_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """See :meth:`VectorIndex.tune`. ``db``: the indexed vectors (ground truth by brute force), row i having id
    ``db_ids[i]`` (default i); ``self_ids``: the ids of ``queries`` when they are themselves indexed."""
    k = min(k, db.shape[0] - (self_ids is not None))
    if k < 1 or queries.shape[0] == 0:
        return {}
    kk = k + 1 if self_ids is not None else k
    truth = exact_search(db, queries, kk)[1]
    if db_ids is not None:
        truth = db_ids[truth]
    if self_ids is not None:
        truth = _drop_self(truth, self_ids, k)
    name = "nprobe" if be.kind == "ivf" else "efSearch"

    def measure(value: int) -> float:
        be.set_params(**{name: value})
        found = be.search(queries, kk)[1]
        return _recall(found if self_ids is None else _drop_self(found, self_ids, k), truth, k)

    low, high = (1, int(be.params()["nlist"])) if be.kind == "ivf" else (max(k, 16), 8192)
    value, prev, recall = low, 0, measure(low)
    while recall < target and value < high:
        prev, value = value, min(2 * value, high)
        recall = measure(value)
    if recall < target:
        warnings.warn(f"{name}={value} reaches recall@{k} {recall:.3f} < target {target}; keeping it", stacklevel=3)
    elif prev > 0:
        lo, hi = prev, value  # recall(lo) < target <= recall(hi)
        while hi - lo > max(1, hi // 16):
            mid = (lo + hi) // 2
            r = measure(mid)
            if r >= target:
                hi, recall = mid, r
            else:
                lo = mid
        value = hi
    be.set_params(**{name: value})
    return {"param": name, "value": value, "recall": recall, "queries": int(queries.shape[0])}


class VectorIndex:
    """Cosine nearest-neighbour index over embeddings, backed by FAISS when installed.

    Vectors (and queries) are L2-normalised on the way in, so the score is the cosine similarity
    ``⟨x/‖x‖, q/‖q‖⟩`` ranked by maximum inner product. Ids are consecutive integers from 0 in insertion
    order. Every vector carries a JSON metadata dict (e.g. ``{"path": "img/001.jpg", "label": 3}``).

    Kinds: ``"flat"`` (exact; FAISS ``IndexFlatIP``, or NumPy/torch matmul when FAISS is missing), ``"ivf"``
    (inverted file, ``nlist ≈ 4·√N`` k-means cells, ``nprobe`` scanned per query), ``"hnsw"`` (graph search),
    and ``"auto"``: exact below ``exact_threshold`` vectors (default 100 000), IVF above — unless the tuned IVF
    would scan more than a quarter of its cells (data without cluster structure, e.g. uniform on the sphere),
    where brute force is as fast, and ``auto`` keeps the exact index (with a warning). Approximate kinds tune
    their search knob (``nprobe`` / ``efSearch``) to the smallest value whose measured recall@10 reaches
    ``target_recall`` (see :meth:`tune`).

    Build with :meth:`build`, search with :meth:`search`, grow with :meth:`add`, persist with :meth:`save` /
    :meth:`load`. Not safe for concurrent writes.
    """

    def __init__(self, backend: Backend, store: MetadataStore, *, model: str | None = None, info: Any = None) -> None:
        self._backend = backend
        self._store = store
        self.model = model
        self.info = info if info is not None else {}
        self.tuning: dict[str, Any] = {}  # last result of tune(), kept in the manifest

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        vectors: ArrayLike,
        *,
        kind: str = "auto",
        metadata: Sequence[Mapping[str, Any] | str | None] | None = None,
        model: str | None = None,
        backend: str = "auto",
        exact_threshold: int = 100_000,
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int | None = None,
        target_recall: float | None = 0.95,
        tune_queries: ArrayLike | None = None,
        seed: int = 0,
        info: Mapping[str, Any] | None = None,
    ) -> VectorIndex:
        """Index ``vectors [N, D]`` with one metadata dict per vector.

        Args:
            vectors: embeddings, normalised here.
            kind: ``"auto"``, ``"flat"``, ``"ivf"`` or ``"hnsw"`` (the last two need FAISS).
            metadata: N dicts (JSON-serialisable), ``None`` entries or path strings (→ ``{"path": ...}``).
            model: spec of the model that produced the vectors (kept in the manifest).
            backend: ``"auto"`` (FAISS if importable), ``"faiss"`` or ``"numpy"`` (exact only).
            exact_threshold: ``auto`` uses exact search below this many vectors.
            nlist: IVF cells (default ``round(4·√N)``, at most N/39).
            nprobe / ef_search: fix the search knob instead of tuning it.
            hnsw_m / ef_construction: HNSW graph degree and build beam width.
            target_recall: recall@10 the tuning aims for (``None``: no tuning, FAISS-style defaults).
            tune_queries: queries to tune on (best: real queries, e.g. text embeddings for text → image search,
                which sit elsewhere on the sphere than image embeddings). Default: min(256, N/5) of the vectors,
                drawn at random and kept out of the index while tuning, then added under their own ids.
            seed: seeds the IVF k-means sample and the tuning sample.
            info: extra JSON for the manifest.
        """
        x = _unit_vectors(vectors, "vectors")
        n, d = x.shape
        items = normalize_metadata(metadata, n)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if backend not in ("auto", "faiss", "numpy"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'numpy', got {backend!r}")
        if isinstance(exact_threshold, bool) or not isinstance(exact_threshold, int) or exact_threshold < 0:
            raise ValueError(f"exact_threshold must be a non-negative integer, got {exact_threshold!r}")
        if target_recall is not None and not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1] or None, got {target_recall!r}")
        faiss_ok = backend != "numpy" and have_faiss()
        if backend == "faiss" and not faiss_ok:
            require_faiss("backend='faiss'")
        auto = kind == "auto"
        if auto:
            if n < exact_threshold:
                kind = "flat"
            elif faiss_ok:
                kind = "ivf"
            else:
                if backend == "auto":
                    warnings.warn(
                        f"{n} vectors but FAISS is not installed: using exact NumPy search (pip install faiss-cpu "
                        "for an approximate index)",
                        stacklevel=2,
                    )
                kind = "flat"
        if backend == "numpy" and kind != "flat":
            raise ValueError(f"backend='numpy' only offers exact search (kind='flat'), got kind={kind!r}")
        if kind == "flat":
            be: Backend = FaissBackend.create("flat", x) if faiss_ok else NumpyFlatBackend(d)
        else:
            be = FaissBackend.create(kind, x, nlist=nlist, hnsw_m=hnsw_m, ef_construction=ef_construction, seed=seed)
        index = cls(be, MetadataStore(), model=model, info=dict(info or {}))
        index._store.add(0, items)
        knob = "nprobe" if kind == "ivf" else "efSearch"
        fixed = {"ivf": nprobe, "hnsw": ef_search}.get(kind)
        if kind == "flat":
            be.add(x)
        elif fixed is not None or target_recall is None:
            be.add(x)
            default = max(1, be.params()["nlist"] // 64) if kind == "ivf" else 64
            be.set_params(**{knob: default if fixed is None else fixed})
        elif tune_queries is not None:
            be.add(x)
            q = _unit_vectors(tune_queries, "tune_queries", dim=d)
            index.tuning = _tune(be, x, q, 10, target_recall)
        else:
            # Tune on vectors held out of the index, inserted afterwards under their own ids: a stored vector
            # is an easy query (HNSW links it straight to its neighbours), which would under-tune the knob.
            rng = np.random.default_rng(seed)
            hold = np.sort(rng.choice(n, size=min(256, n // 5), replace=False))
            rest = np.setdiff1d(np.arange(n), hold)
            be.add(x[rest], ids=rest)
            if hold.size:
                index.tuning = _tune(be, x[rest], x[hold], 10, target_recall, db_ids=rest)
                be.add(x[hold], ids=hold)
        if auto and kind == "ivf" and index.tuning.get("value", 0) > be.params()["nlist"] // 4:
            # Scanning > 1/4 of the cells is no faster than brute force (BLAS beats list scans):
            # the data has no cluster structure the IVF can use at this recall.
            warnings.warn(
                f"IVF needs nprobe={index.tuning['value']} of nlist={be.params()['nlist']} for recall@10 "
                f"{target_recall}: no faster than exact search, so kind='auto' falls back to 'flat'",
                stacklevel=2,
            )
            flat = cls(FaissBackend.create("flat", x), index._store, model=model, info=dict(info or {}))
            flat._backend.add(x)
            return flat
        return index

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._backend.dim

    @property
    def kind(self) -> str:
        return self._backend.kind

    @property
    def backend(self) -> str:
        """``"faiss"`` or ``"numpy"``."""
        return self._backend.name

    @property
    def params(self) -> dict[str, Any]:
        """Index parameters (``nlist``/``nprobe`` for IVF, ``M``/``efConstruction``/``efSearch`` for HNSW)."""
        return self._backend.params()

    def set_params(self, **params: Any) -> None:
        """Change the search knob: ``nprobe=`` (IVF) or ``efSearch=`` (HNSW)."""
        self._backend.set_params(**params)

    def __len__(self) -> int:
        return self._backend.ntotal

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self.kind!r}, backend={self.backend!r}, n={len(self)}, dim={self.dim}, {self.params})"
        )

    # ------------------------------------------------------------------ use
    def add(self, vectors: ArrayLike, metadata: Sequence[Mapping[str, Any] | str | None] | None = None) -> torch.Tensor:
        """Append vectors (normalised here) with their metadata; returns their new ids ``[n]`` (int64).

        IVF keeps the cells learnt at build time (re-build after the data grows a lot or drifts); HNSW links
        the new nodes into the graph; the search knob is not re-tuned.
        """
        x = _unit_vectors(vectors, "vectors", dim=self.dim)
        items = normalize_metadata(metadata, x.shape[0])
        start = len(self)
        self._backend.add(x)
        self._store.add(start, items)
        return torch.arange(start, start + x.shape[0], dtype=torch.int64)

    def search(self, queries: ArrayLike, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The k stored vectors most similar to each query.

        Returns ``(scores [Q, k] float32, ids [Q, k] int64)``, best first; scores are cosines. Slots beyond
        what was found (k > N, or an approximate index that reached too few vectors) hold id −1, score −inf.
        A 1-D query is treated as ``[1, D]``.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = _unit_vectors(queries, "queries", dim=self.dim)
        scores, ids = self._backend.search(q, k)
        return torch.from_numpy(np.ascontiguousarray(scores)), torch.from_numpy(np.ascontiguousarray(ids))

    def get_metadata(self, ids: ArrayLike | Sequence[int]) -> list[dict[str, Any] | None]:
        """Metadata dicts of ``ids`` (flattened, in order); ``None`` for −1 or unknown ids."""
        flat = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        return self._store.get(flat.tolist())

    def ids_for_path(self, path: str | os.PathLike) -> list[int]:
        """Ids whose metadata ``"path"`` equals ``path``."""
        return self._store.ids_for_path(path)

    def tune(
        self,
        queries: ArrayLike | None = None,
        *,
        k: int = 10,
        target_recall: float = 0.95,
        n_queries: int = 256,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Set ``nprobe`` (IVF) / ``efSearch`` (HNSW) to the smallest value reaching ``target_recall``.

        Recall is the k-recall@k ``(1/Q) Σ_q |A_q ∩ E_q| / k`` of the approximate top-k A against the exact
        top-k E (brute force over the stored vectors). Pass representative queries (for text → image search,
        text embeddings: they sit elsewhere on the sphere than image embeddings). Without ``queries``,
        ``n_queries`` stored vectors are used, each excluded from its own results; that is optimistic,
        markedly so for HNSW, whose graph links every stored vector to its neighbours (:meth:`build` avoids
        it by tuning on vectors held out of the index until the tuning is done).

        Candidate values double from 1 (IVF) or max(k, 16) (HNSW); the first that passes is refined by
        bisection to within ~6% (recall is close to monotone in the knob). If none passes, the largest is
        kept and a warning issued.

        Returns ``{"param": name, "value": v, "recall": r}`` (``{}`` for an exact index).
        """
        if self.kind == "flat":
            return {}
        db = self._backend.reconstruct_all()
        if queries is None:
            self_ids = np.sort(np.random.default_rng(seed).choice(len(db), size=min(n_queries, len(db)), replace=False))
            self.tuning = _tune(self._backend, db, db[self_ids], k, target_recall, self_ids=self_ids)
        else:
            self.tuning = _tune(self._backend, db, _unit_vectors(queries, "queries", dim=self.dim), k, target_recall)
        return self.tuning

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        """What :meth:`save` writes to ``manifest.json``."""
        from cliplab import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "dim": self.dim,
            "kind": self.kind,
            "backend": self.backend,
            "count": len(self),
            "metric": "cosine (inner product of L2-normalised vectors)",
            "params": self.params,
            "files": {"index": self._backend.filename, "metadata": METADATA_FILE},
            "tuning": self.tuning,
            "info": self.info,
            "cliplab_version": __version__,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``index.faiss`` (or ``vectors.npy``), ``metadata.sqlite`` and ``manifest.json`` to ``directory``.

        Everything goes to a temporary sibling directory that then replaces ``directory`` (``os.replace``), so
        readers see the old index or the new one, never a mix; an existing index there is replaced.
        """
        directory = Path(directory)
        manifest = self.manifest()
        with atomic_dir(directory) as tmp:
            self._backend.write(tmp / self._backend.filename)
            self._store.save(tmp / METADATA_FILE)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> VectorIndex:
        """Read an index written by :meth:`save` (FAISS indexes need FAISS installed)."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {os.fspath(directory)!r}: not a saved VectorIndex")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)!r} is not a cliplab vector index manifest (version {FORMAT_VERSION})")
        kind, dim, count = manifest["kind"], int(manifest["dim"]), int(manifest["count"])
        file = directory / manifest["files"]["index"]
        if manifest["backend"] == "faiss":
            be: Backend = FaissBackend.read(file, kind)
        elif manifest["backend"] == "numpy":
            be = NumpyFlatBackend.read(file, dim)
        else:
            raise ValueError(f"unknown backend {manifest['backend']!r} in {os.fspath(path)!r}")
        store = MetadataStore.load(directory / manifest["files"]["metadata"])
        if be.dim != dim or be.ntotal != count or len(store) != count:
            raise ValueError(
                f"inconsistent index in {os.fspath(directory)!r}: manifest says {count} × {dim}, "
                f"index holds {be.ntotal} × {be.dim}, metadata {len(store)} rows"
            )
        knob = {key: v for key, v in (manifest.get("params") or {}).items() if key in ("nprobe", "efSearch")}
        if knob:
            be.set_params(**knob)
        index = cls(be, store, model=manifest.get("model"), info=manifest.get("info") or {})
        index.tuning = manifest.get("tuning") or {}
        return index
