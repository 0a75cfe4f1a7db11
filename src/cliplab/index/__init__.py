"""Vector index over L2-normalised embeddings, with per-vector metadata, saved to a directory.

>>> from cliplab.index import VectorIndex
>>> meta = [{"path": p} for p in paths]
>>> index = VectorIndex.build(image_features, metadata=meta, model="hf:openai/clip-vit-base-patch32")
>>> scores, ids = index.search(text_features, k=10)        # cosines and ids, best first
>>> index.get_metadata(ids[0])                              # [{"path": ...}, ...]
>>> index.save("my-index"); index = VectorIndex.load("my-index")

FAISS (``pip install faiss-cpu``) provides the exact ``IndexFlatIP`` and the approximate IVF and HNSW
indexes; without it an exact NumPy/torch search is used. The saved directory holds ``index.faiss`` (or
``vectors.npy``), ``metadata.sqlite`` (table ``items(id, path, data)``) and ``manifest.json`` (model spec,
dim, kind, count, parameters). This module only stores and searches vectors: embedding images is the
caller's job.
"""

from __future__ import annotations

from cliplab.index.backends import have_faiss
from cliplab.index.metadata import MetadataStore
from cliplab.index.vector_index import KINDS, VectorIndex

__all__ = ["VectorIndex", "MetadataStore", "KINDS", "have_faiss"]
