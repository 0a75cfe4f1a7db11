"""Where a built-in model lives when it is trained or assembled on this machine, and the lock that makes
concurrent first uses train it once."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from cliplab._io import cache_home


def cache_dir(name: str, key: str) -> Path:
    """``$CLIPLAB_HOME/models/builtin-<name>-<key>``: ``builtin:<name>`` of recipe ``key``, trained or assembled."""
    return cache_home() / "models" / f"builtin-{name}-{key}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so concurrent first uses train once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(target: Path) -> Path:
    """The lock file beside ``target``."""
    return target.with_name(target.name + ".lock")


__all__ = ["cache_dir", "lock_path", "locked"]
