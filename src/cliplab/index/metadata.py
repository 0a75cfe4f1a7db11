"""Per-vector metadata kept in SQLite: one row per vector id with an optional path and a JSON object.

The store lives in memory while the index is used and is copied to / from a single SQLite file on
save / load with SQLite's online-backup API, so a saved file is a plain database any tool can read::

    CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT, data TEXT NOT NULL);  -- data: JSON object

``path`` duplicates ``data["path"]`` when the metadata has one (a string), so it can be looked up by index.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MetadataStore", "normalize_metadata"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, path TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_path ON items(path);
"""


def normalize_metadata(metadata: Sequence[Any] | None, n: int) -> list[dict[str, Any]]:
    """Validate per-vector metadata: ``None`` (n empty dicts) or n items, each a dict, ``None`` or a path string.

    Raises ``ValueError`` on a length mismatch or a value that is not JSON-serialisable.
    """
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, str | bytes | Mapping) or not isinstance(metadata, Sequence):
        raise ValueError("metadata must be a sequence with one dict (or None, or a path string) per vector")
    if len(metadata) != n:
        raise ValueError(f"metadata has {len(metadata)} entries but there are {n} vectors")
    out = []
    for i, item in enumerate(metadata):
        if item is None:
            item = {}
        elif isinstance(item, str | os.PathLike):
            item = {"path": os.fspath(item)}
        elif not isinstance(item, Mapping):
            raise ValueError(f"metadata[{i}] must be a dict, None or a path string, got {type(item).__name__}")
        item = dict(item)
        try:
            json.dumps(item, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata[{i}] is not JSON-serialisable: {err}") from err
        out.append(item)
    return out


class MetadataStore:
    """In-memory SQLite table of ``id → (path, JSON data)``; ids are consecutive from 0."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._conn.executescript(_SCHEMA)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def add(self, start_id: int, items: Iterable[Mapping[str, Any]]) -> None:
        """Insert ``items`` (already validated) with ids ``start_id, start_id + 1, …``."""
        rows = []
        for offset, item in enumerate(items):
            path = item.get("path")
            rows.append((start_id + offset, path if isinstance(path, str) else None, json.dumps(item, allow_nan=False)))
        with self._conn:
            self._conn.executemany("INSERT INTO items (id, path, data) VALUES (?, ?, ?)", rows)

    def get(self, ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """Metadata of each id, in order; ``None`` for an id not stored (e.g. the −1 of a missing result)."""
        ids = [int(i) for i in ids]
        found: dict[int, dict[str, Any]] = {}
        wanted = sorted({i for i in ids if i >= 0})
        for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
            part = wanted[start : start + 900]
            marks = ",".join("?" * len(part))
            for row_id, data in self._conn.execute(f"SELECT id, data FROM items WHERE id IN ({marks})", part):
                found[int(row_id)] = json.loads(data)
        return [found.get(i) for i in ids]

    def ids_for_path(self, path: str | os.PathLike) -> list[int]:
        """Ids of the vectors whose metadata ``path`` equals ``path``."""
        rows = self._conn.execute("SELECT id FROM items WHERE path = ? ORDER BY id", (os.fspath(path),))
        return [int(r[0]) for r in rows]

    def save(self, file: str | os.PathLike) -> None:
        """Copy the whole store into a new SQLite file (the caller makes the write atomic)."""
        dest = sqlite3.connect(os.fspath(file))
        try:
            self._conn.backup(dest)
        finally:
            dest.close()

    @classmethod
    def load(cls, file: str | os.PathLike) -> MetadataStore:
        """Read a file written by :meth:`save` into memory."""
        if not os.path.isfile(file):
            raise FileNotFoundError(f"metadata file {os.fspath(file)!r} not found")
        store = cls()
        src = sqlite3.connect(Path(file).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            src.backup(store._conn)
        finally:
            src.close()
        store._conn.executescript(_SCHEMA)
        return store

    def close(self) -> None:
        self._conn.close()
