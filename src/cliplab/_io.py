"""Atomic file writes: write to a temporary sibling, fsync, then ``os.replace``.

What these helpers leave behind gets the permissions of any ordinary output: ``0o666 & ~umask`` for a file,
``0o777 & ~umask`` for a directory (``tempfile.mkstemp``/``mkdtemp`` would leave ``0o600``/``0o700``). The
temporary sibling is created with ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)``, so the kernel applies the
umask itself: nothing here reads or changes the process-wide umask.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TEMP_ATTEMPTS = 100


def _temp_sibling(path: Path, make: Any) -> tuple[Path, int]:
    """Create a fresh ``.<name>.<random>.tmp`` next to ``path`` with ``make(tmp)``; return it and its mode.

    ``make`` creates exclusively (``FileExistsError`` if taken), so a clash only means trying another name.
    """
    for _ in range(_TEMP_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            make(tmp)
        except FileExistsError:
            continue
        return tmp, os.stat(tmp).st_mode & 0o7777
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _new_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))


def _new_dir(tmp: Path) -> None:
    os.mkdir(tmp, 0o777)


def _normalize_tree(root: Path, dir_mode: int) -> None:
    """Give everything under ``root`` the modes ``open``/``mkdir`` would under the umask that made ``dir_mode``.

    Some writers leave ``0o600`` files (safetensors writes through a private temporary file); files keep
    their execute bits, symlinks are left alone.
    """
    file_mode = dir_mode & 0o666
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            entry = os.path.join(parent, name)
            st = os.lstat(entry)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(entry, dir_mode)
            elif stat.S_ISREG(st.st_mode):
                os.chmod(entry, file_mode | (st.st_mode & 0o111 and dir_mode & 0o111))
    os.chmod(root, dir_mode)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The file ends up ``0o666 & ~umask``, as if ``open(path, "w")`` had created it, even if the writer
    replaced the temporary file rather than writing into it. On error the temporary file is removed and
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path, mode = _temp_sibling(path, _new_file)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``.

    The directory and the directories in it end up ``0o777 & ~umask``, the files in it ``0o666 & ~umask``
    (plus execute bits they were written with), whatever modes the writers left. An existing directory at
    ``path`` is moved aside first and deleted only after the swap.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _temp_sibling(path, _new_dir)
    try:
        yield tmp
        _normalize_tree(tmp, mode)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def cache_home() -> Path:
    """Root of cliplab's caches: ``$CLIPLAB_HOME`` or ``~/.cache/cliplab``."""
    return Path(os.environ.get("CLIPLAB_HOME", Path.home() / ".cache" / "cliplab"))


def to_jsonable(obj: Any) -> Any:
    """Tensors/arrays → lists, NaN → None, recursively."""
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
