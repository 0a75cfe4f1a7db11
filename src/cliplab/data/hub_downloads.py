"""Downloads of webdatasets from the Hugging Face Hub into the cliplab cache, each complete or not at all.

``download_from_hub(repo_id, split)``: one split of a dataset in CLIP_benchmark's layout (``wds:<owner>/<name>``);
``download_hub_file(repo_id, filename)``: one shard of a training stream (``wds:hf://<owner>/<name>/<pattern>``).
Both land under ``hub_cache_dir(repo_id)`` through a temporary sibling, so an interrupted download leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cliplab._io import cache_home


def hub_cache_dir(repo_id: str) -> Path:
    """Where ``wds:<repo_id>`` is downloaded: ``<cliplab cache>/datasets/wds/<owner>--<name>``."""
    return cache_home() / "datasets" / "wds" / repo_id.replace("/", "--")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _split_complete(root: Path, split: str) -> bool:
    return (root / split / "nshards.txt").is_file()


def _hub(name: str, purpose: str) -> Any:
    """``huggingface_hub.<name>``, looked up when called."""
    try:
        import huggingface_hub
    except ImportError as err:  # pragma: no cover - a dependency of transformers
        raise ImportError(f"{purpose} needs huggingface_hub: pip install huggingface_hub") from err
    return getattr(huggingface_hub, name)


@contextlib.contextmanager
def _staging(dest: Path, what: str, hint: str = "") -> Iterator[Path]:
    """A temporary sibling of ``dest`` to download ``what`` into (what is moved out of it into place stays, the
    rest is removed, so a failed download leaves nothing). Offline (``HF_HUB_OFFLINE=1``) or failed:
    ``FileNotFoundError`` naming ``what`` (``hint``: what else the user could do)."""
    if _offline():
        raise FileNotFoundError(
            f"{what} is not in the cliplab cache ({dest}) and HF_HUB_OFFLINE=1 forbids downloading it; unset "
            f"HF_HUB_OFFLINE on a machine with a network{hint}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
    except FileNotFoundError:
        raise
    except Exception as err:  # network, auth, unknown repo or file: all end the same way for the user
        raise FileNotFoundError(f"could not download {what}: {type(err).__name__}: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_from_hub(repo_id: str, split: str) -> Path:
    """The local copy of hub dataset ``repo_id`` with ``split`` (downloaded into the cliplab cache if needed).

    Progress bars are huggingface_hub's (``HF_HUB_DISABLE_PROGRESS_BARS=1``, which ``--quiet`` sets, hides them).
    Only ``<split>/*`` and the top-level ``*.txt`` files are fetched, into a temporary sibling; the split's
    folder moves into place last, so a failed download leaves no partial split behind.
    """
    dest = hub_cache_dir(repo_id)
    if _split_complete(dest, split):
        return dest
    what = f"wds:{repo_id}: the Hugging Face Hub dataset {repo_id!r} (no local directory {repo_id!r} either)"
    snapshot_download = _hub("snapshot_download", "wds:<hub id>")
    with _staging(dest, what, ", or pass a local directory in CLIP_benchmark's webdataset layout") as tmp:
        snapshot_download(repo_id, repo_type="dataset", allow_patterns=[f"{split}/*", "*.txt"], local_dir=str(tmp))
        if not _split_complete(tmp, split):
            raise FileNotFoundError(
                f"wds:{repo_id}: the hub dataset has no {split}/nshards.txt, so it is not in CLIP_benchmark's "
                f"webdataset layout or has no split {split!r}"
            )
        dest.mkdir(exist_ok=True)
        for meta in tmp.glob("*.txt"):
            os.replace(meta, dest / meta.name)
        if (dest / split).exists():
            shutil.rmtree(dest / split)
        shutil.rmtree(tmp / split / ".cache", ignore_errors=True)
        os.replace(tmp / split, dest / split)
    return dest


def download_hub_file(repo_id: str, filename: str) -> Path:
    """One file of hub dataset ``repo_id`` (a training shard), kept at ``hub_cache_dir(repo_id) / filename``.

    A file already there is used as it is (no network); otherwise it is downloaded into a temporary sibling
    and moved into place, so an interrupted download leaves nothing behind. Offline (``HF_HUB_OFFLINE=1``) or
    failed: ``FileNotFoundError`` naming the repository and the file."""
    dest = hub_cache_dir(repo_id) / filename
    if dest.is_file():
        return dest
    hf_hub_download = _hub("hf_hub_download", "hub shards")
    with _staging(dest, f"{filename} of the Hugging Face Hub dataset {repo_id!r}") as tmp:
        os.replace(hf_hub_download(repo_id, filename, repo_type="dataset", local_dir=str(tmp)), dest)
    return dest
