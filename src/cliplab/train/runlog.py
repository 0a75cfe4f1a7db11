"""The run's metrics log: ``metrics.jsonl``, one JSON record per line, written by rank 0 only.

Training records carry ``step``, ``epoch``, ``loss`` (mean since the previous record), ``lr``,
``logit_scale``, ``logit_bias`` (null unless trained), ``grad_norm`` (total norm before clipping, last
step), ``clip`` (``norm`` mode: ``max_norm``; ``zclip``/``autoclip``: the norm the gradients were clipped
to on the last step, null when they were not; ``none``: null), ``samples_per_s`` and ``step_time_s``
(wall time per step over the window, data waits included); evaluation records carry ``step`` and
``eval``; a diverged run ends with ``{"step", "event": "diverged", ...}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cliplab._io import to_jsonable, write_text_atomic


class MetricsLog:
    """Append-only JSONL log; ``history`` keeps every record of this process in memory too."""

    def __init__(self, path: str | Path, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self._fh: Any = None

    def open(self, resumed_step: int) -> None:
        """Start writing. A resumed run drops the records newer than its checkpoint; a new run starts empty."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_step > 0 and self.path.is_file():
            keep = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if line.strip() and json.loads(line).get("step", 0) <= resumed_step:
                        keep.append(line + "\n")
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
            write_text_atomic(self.path, "".join(keep))
        elif self.path.exists():
            self.path.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(to_jsonable(record)) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


__all__ = ["MetricsLog"]
