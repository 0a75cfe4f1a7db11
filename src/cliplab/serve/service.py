"""Queries against a saved image index: text or image in, ranked indexed files out (no web code here)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from cliplab.imaging.decoding import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLarge, decode_image
from cliplab.index.vector_index import MANIFEST, VectorIndex
from cliplab.models.base import Model

MAX_QUERY_CHARS = 1000
MAX_K = 200
UPLOAD_NAME = "the uploaded file"  # how errors name an upload
# What ``str.strip()`` removes: a query of nothing else is empty (every such character is below U+3001).
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


class QueryError(ValueError):
    """A query the service refuses, with a message meant for the user (HTTP 400)."""


class UnknownId(QueryError):
    """A query naming an id the index does not hold, or whose file is gone (HTTP 404)."""


@dataclass(frozen=True)
class Hit:
    id: int
    path: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "score": round(self.score, 6), "url": f"/image/{self.id}"}


class SearchService:
    """Text → image and image → image search over an index written by ``cliplab index``.

    The model is loaded from the index manifest (or given) and must be the one that built the index: its
    fingerprint is checked against the manifest, since vectors from another model are not comparable.
    Images above ``max_image_pixels`` (width × height; ≤ 0: no limit) are refused from their header, before
    decoding: :class:`~cliplab.imaging.decoding.ImageTooLarge` for an upload (HTTP 413), :class:`QueryError` for
    an indexed file. Thread-safe: model calls are serialised by a lock; index searches are read-only.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        model: Model | str | None = None,
        device: str | None = None,
        *,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        from cliplab.models import load_model

        self.max_image_pixels = max_image_pixels
        self.index_dir = Path(index_dir).expanduser().resolve()
        if not (self.index_dir / MANIFEST).is_file():
            raise FileNotFoundError(
                f"no index at {self.index_dir} (no {MANIFEST}); build one with `cliplab index MODEL IMAGE_DIR -o "
                f"{index_dir}`"
            )
        self.index = VectorIndex.load(self.index_dir)
        if len(self.index) == 0:
            raise ValueError(f"the index {self.index_dir} is empty")
        root = self.index.info.get("root")
        if not root:
            raise ValueError(f"the index {self.index_dir} names no image folder: build it with `cliplab index`")
        self.root = Path(root)
        spec = model if model is not None else self.index.model
        if spec is None:
            raise ValueError(f"the index {self.index_dir} does not name its model: pass one with --model")
        self.model = load_model(spec, device=device)
        expected = self.index.info.get("model_fingerprint")
        if expected and self.model.fingerprint() != expected:
            raise ValueError(
                f"the model {spec!r} is not the one that built {self.index_dir} (fingerprint {self.model.fingerprint()}"
                f" != {expected}): queries would not match the indexed vectors"
            )
        self.model.module.eval()
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "count": len(self.index),
            "kind": self.index.kind,
            "backend": self.index.backend,
            "dim": self.index.dim,
            "model": None if self.index.model is None else str(self.index.model),
            "root": str(self.root),
            "max_k": MAX_K,
        }

    @staticmethod
    def check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
        return k

    def _search(self, encode: Callable[[], torch.Tensor], k: int) -> tuple[list[Hit], float]:
        """Encode the query (model calls are serialised) and rank the index; ``(hits, milliseconds)``."""
        t0 = time.perf_counter()
        with self._lock:
            vector = encode()
        scores, ids = self.index.search(vector, k=k)
        hits = []
        for item, score, i in zip(self.index.get_metadata(ids[0]), scores[0].tolist(), ids[0].tolist()):
            if item is not None and i >= 0:
                hits.append(Hit(int(i), str(item.get("path", "")), float(score)))
        return hits, 1000 * (time.perf_counter() - t0)

    def search_text(self, text: str, k: int = 24) -> tuple[list[Hit], float]:
        """Images ranked by cosine to the text's embedding; returns ``(hits, milliseconds)``."""
        k = self.check_k(k)
        text = text or ""
        if len(text) > MAX_QUERY_CHARS:  # counted before stripping, as the API schema states it
            raise QueryError(f"query too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
        query = text.strip()
        if not query:
            raise QueryError("empty query: type a description of the images you are looking for")
        return self._search(lambda: self.model.encode_texts([query]), k)

    def _decode(self, data: bytes, name: str) -> Image.Image:
        """``data`` decoded to RGB; an undecodable image is a :class:`QueryError` naming it as ``name``."""
        try:
            return decode_image(data, name=name, max_pixels=self.max_image_pixels)
        except ImageTooLarge:
            raise
        except ValueError as err:  # decode_image's messages name the image (never a file object's repr)
            raise QueryError(str(err)) from err
        except Exception as err:  # noqa: BLE001 - PIL raises other types for some malformed files
            raise QueryError(f"cannot read image file {name}: {type(err).__name__}: {err}") from err

    def search_image(self, data: bytes, k: int = 24) -> tuple[list[Hit], float]:
        """Images ranked by cosine to an uploaded image's embedding (``data``: the file's bytes).

        Raises :class:`QueryError` for an empty or undecodable upload, and
        :class:`~cliplab.imaging.decoding.ImageTooLarge` for one above ``max_image_pixels`` (before decoding it).
        """
        k = self.check_k(k)
        if not data:
            raise QueryError("empty upload: choose an image file")
        image = self._decode(data, UPLOAD_NAME)
        return self._search(lambda: self.model.encode_images([image]), k)

    def similar(self, item_id: int, k: int = 24) -> tuple[list[Hit], float]:
        """Images like the indexed image ``item_id`` (re-embedded from its file)."""
        k = self.check_k(k)
        path = self.file_for(item_id)
        try:
            data = None if path is None else path.read_bytes()
        except OSError:  # removed (or made unreadable) since the check
            data = None
        if data is None:
            raise UnknownId(f"no indexed image with id {item_id} (or its file is gone)")
        try:
            image = self._decode(data, f"the indexed image {item_id}")
        except ImageTooLarge as err:  # the server's limit, not the client's upload: a refused query
            raise QueryError(str(err)) from err
        return self._search(lambda: self.model.encode_images([image]), k)

    def file_for(self, item_id: int) -> Path | None:
        """The file of an indexed id, if it still exists inside the index root; None otherwise.

        Only indexed files are ever returned, and only when their real path (symlinks resolved) lies inside
        the root, so no request can reach any other file.
        """
        if not 0 <= item_id < len(self.index):
            return None
        item = self.index.get_metadata([item_id])[0]
        if not item or not item.get("path"):
            return None
        root = self.root.resolve()
        path = (root / item["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path
