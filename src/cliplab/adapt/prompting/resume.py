"""The prompt protocols' resume file: every finished run is recorded as it ends and skipped on a rerun.

One JSON file serves both protocols of ``cliplab.adapt.prompting.protocol``: a section per protocol
(``few_shot``: a job per method, shots and seed; ``base_to_new``: a job per method and seed), each with the key
of its run (model, data and settings: ``_run_key``) and its finished jobs. A rerun with the same key skips the
jobs it finds; another key is refused naming the file, so results of different settings never mix. Written
atomically after every job (``cliplab._io.write_text_atomic``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ResumeFile:
    """Section ``section`` of the resume file at ``path`` (None: nothing is read or written) for run ``key``."""

    def __init__(self, path: str | os.PathLike | None, section: str, key: str):
        self.path = None if path is None else Path(path)
        self.section, self.key = section, key
        entry = self._sections().get(section)
        if entry is not None and entry.get("key") != key:
            raise ValueError(
                f"the resume file {self.path} belongs to another run (model, data or settings differ); "
                "delete it or choose another file"
            )
        self.done: dict[str, Any] = dict(entry.get("done", {})) if entry else {}

    def _sections(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read the resume file {self.path}: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"the resume file {self.path} is not a cliplab resume file (no JSON object)")
        if "key" in data:  # a file written before the protocols had sections: the few-shot protocol's
            return {"few_shot": data}
        return dict(data.get("sections", {}))

    def get(self, job: str) -> Any:
        """The recorded result of ``job``, or None."""
        return self.done.get(job)

    def record(self, job: str, result: Any) -> None:
        """Record ``job`` as finished (the other sections of the file are kept)."""
        self.done[job] = result
        if self.path is None:
            return
        from cliplab._io import to_jsonable, write_text_atomic

        sections = self._sections()
        sections[self.section] = {"key": self.key, "done": self.done}
        write_text_atomic(self.path, json.dumps(to_jsonable({"sections": sections}), indent=1) + "\n")


__all__ = ["ResumeFile"]
