"""Progress of long work: steps that nest, and one status line for a whole run.

Library code reports what it is doing with :func:`step` (or :func:`track` around a loop)::

    with progress.step(f"embed {name}", total=n, unit="img", enabled=show) as s:
        for batch in loader:
            ...
            s.update(len(batch))

The current step is context-local (a ``ContextVar``): a step opened inside another nests under it, and
``enabled=None`` inherits the enclosing step's setting (off at top level), so a helper reports into whatever
its caller shows without a ``progress`` argument of its own.

Where the steps go:

* inside :func:`display` (``cliplab bench`` opens one for the whole run, on a terminal only) every enabled step
  reports into its single status line — stage k of n, the nested steps with their counts and notes, and an
  estimate of the time left — instead of drawing a bar of its own;
* elsewhere an enabled step is a tqdm bar (nested steps: nested bars), as before.

Time left: the share ``f`` done of the outermost counted step is read from the nested counts (a step at
``d`` of ``t`` whose counted child is at ``g`` is at ``(d + g) / t``), and its time left is
``elapsed·(1 − f)/f``. With expected durations of the stages (``display(..., expected=...)``, e.g. the
timings of an earlier run of the same settings) the whole run's time left is shown too: what the current stage
has left of its expected time (at least the counted step's estimate) plus the remaining stages'.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO, TypeVar

__all__ = ["Display", "Step", "current_display", "display", "duration", "step", "track"]

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Step:
    """One unit of work in progress: ``label``, ``done`` of ``total`` (None: unknown) and a free-form note."""

    def __init__(
        self, label: str, total: int | None, unit: str, enabled: bool, parent: Step | None, root: Display | None
    ) -> None:
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.parent, self.root = parent, root
        self.done = 0
        self.note = ""
        self.started = time.perf_counter()
        self._bar: Any = None

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.root is not None and self.enabled:
            self.root.refresh()

    def describe(self, note: str) -> None:
        """Set the note shown after the counts (e.g. ``"4 shots, seed 2"``)."""
        self.note = note
        if self._bar is not None:
            self._bar.set_postfix_str(note, refresh=False)
        elif self.root is not None and self.enabled:
            self.root.refresh(force=True)

    def fraction(self) -> float | None:
        """The share of this step done (counting the nested step's share of the current unit), or None."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def text(self) -> str:
        parts = [self.label]
        if self.total:
            parts.append(f"{min(self.done, self.total)}/{self.total}")
        elif self.done:
            parts.append(f"{self.done}")
        if self.unit and (self.total or self.done):
            parts.append(self.unit)
        if self.note:
            parts.append(f"({self.note})")
        return " ".join(parts)


#: the innermost open step of this context (None at top level)
_CURRENT: ContextVar[Step | None] = ContextVar("cliplab_progress_step", default=None)
#: the display of this context, if a run opened one
_DISPLAY: ContextVar[Display | None] = ContextVar("cliplab_progress_display", default=None)


class Display:
    """One status line on a terminal stream, rewritten in place (``\\r`` and erase-to-end-of-line).

    ``stages``: how many stages the run has (None: no stage counter); ``expected``: stage name → expected
    seconds (for the whole run's time left); ``title``: the line's prefix.
    """

    #: the shortest time between two redraws of the line for count updates (a new step redraws at once)
    MIN_INTERVAL = 0.1

    def __init__(
        self,
        stream: TextIO,
        *,
        stages: int | None = None,
        expected: Mapping[str, float] | None = None,
        title: str = "",
    ) -> None:
        self.stream, self.n_stages, self.title = stream, stages, title
        self.expected = dict(expected or {})
        self.stage_index, self.stage_name, self.stage_started = 0, "", time.perf_counter()
        self.remaining: list[str] = []
        self.started = time.perf_counter()
        self.steps: list[Step] = []  # the open enabled steps, outermost first
        self._last = 0.0
        self._shown = ""

    # -- stages --------------------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str, remaining: Sequence[str] = ()) -> Iterator[None]:
        """Run stage ``name`` (the next of ``stages``); ``remaining``: the stages after it (time left)."""
        self.stage_index += 1
        self.stage_name, self.stage_started, self.remaining = name, time.perf_counter(), list(remaining)
        self.refresh(force=True)
        try:
            yield
        finally:
            self.stage_name = ""

    # -- time left -----------------------------------------------------------------------------------------
    def counted(self) -> tuple[Step, float] | None:
        """The outermost open step with a count and the share of it done, counting its nested steps' shares
        (a step at ``d`` of ``t`` whose counted child is at ``g`` is at ``(d + g) / t``); None: none counts."""
        chain = list(self.steps)
        while chain and not chain[0].total:
            chain.pop(0)
        if not chain:
            return None
        f, scale = 0.0, 1.0
        for s in chain:
            if not s.total:
                break
            f += scale * min(s.done, s.total) / s.total
            scale /= s.total
        return chain[0], f

    def time_left(self) -> tuple[str | None, float | None, float | None]:
        """``(counted step's label, seconds left in it, seconds left in the run)``; None where there is no
        estimate. The run's needs the expected durations of this stage and the remaining ones."""
        now = time.perf_counter()
        label = step_left = run_left = None
        counted = self.counted()
        if counted is not None:
            s, f = counted
            label = s.label
            step_left = (now - s.started) * (1 - f) / f if f > 0 else None
        rest = [self.expected.get(name) for name in (self.stage_name, *self.remaining)]
        if self.stage_name and rest and all(r is not None for r in rest):
            this: float | None = (rest[0] or 0.0) - (now - self.stage_started)
            if step_left is not None:
                this = max(this or 0.0, step_left)
            elif this is not None and this <= 0:
                this = None  # the stage runs over its expected time and nothing counts: no estimate
            if this is not None:
                run_left = this + sum(r or 0.0 for r in rest[1:])
        return label, step_left, run_left

    # -- drawing -------------------------------------------------------------------------------------------
    def line(self, width: int | None = None) -> str:
        """The status line, at most ``width`` characters (the nested steps are shortened first)."""
        if not self.stage_name and not self.steps:
            return ""  # between stages: nothing to show
        head = self.title
        if self.stage_name:
            counter = f"stage {self.stage_index}/{self.n_stages}" if self.n_stages else "stage"
            head = f"{head} {counter} {self.stage_name}".strip()
        inner = " › ".join(s.text() for s in self.steps)
        label, step_left, run_left = self.time_left()
        left = []
        if step_left is not None:
            left.append(f"~{duration(step_left)} left in {label}")
        if run_left is not None:
            left.append(f"~{duration(run_left)} left in all")
        tail = " · ".join(left)
        text = " · ".join(p for p in (head, inner, tail) if p)
        if width is not None and len(text) > width:
            room = width - len(" · ".join(p for p in (head, tail) if p)) - 3
            inner = inner[: max(room - 1, 0)] + "…" if room > 1 else ""
            text = " · ".join(p for p in (head, inner, tail) if p)[:width]
        return text

    def refresh(self, *, force: bool = False) -> None:
        """Redraw the line (at most every ``MIN_INTERVAL`` seconds unless ``force``)."""
        now = time.perf_counter()
        if not force and now - self._last < self.MIN_INTERVAL:
            return
        self._last = now
        text = self.line(shutil.get_terminal_size((100, 20)).columns - 1)
        if text != self._shown:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._shown = text

    def clear(self) -> None:
        """Erase the line (before a log message, and at the end)."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = ""

    def print(self, message: str, file: TextIO | None = None) -> None:
        """Write ``message`` on a line of its own above the status line."""
        self.clear()
        print(message, file=file or self.stream, flush=True)
        self.refresh(force=True)


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def current_display() -> Display | None:
    """The display of this context (None outside one)."""
    return _DISPLAY.get()


@contextmanager
def display(
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
    stages: int | None = None,
    expected: Mapping[str, float] | None = None,
    title: str = "",
) -> Iterator[Display | None]:
    """Show one status line on ``stream`` (default stderr) for everything reported inside, if ``enabled`` and
    the stream is a terminal; yields the :class:`Display`, or None when there is none (then steps behave as
    outside). Inside an existing display, yields that one (a nested run reports into the outer line)."""
    outer = _DISPLAY.get()
    if outer is not None:
        yield outer
        return
    stream = sys.stderr if stream is None else stream
    if not enabled or not is_terminal(stream):
        yield None
        return
    shown = Display(stream, stages=stages, expected=expected, title=title)
    token = _DISPLAY.set(shown)
    step_token = _CURRENT.set(None)
    # log records (the ``logging`` handlers writing to this stream) go on lines of their own above the status line
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is stream]
    for h in handlers:
        h.setStream(_AboveStatusLine(shown))
    try:
        yield shown
    finally:
        for h in handlers:
            h.setStream(stream)
        _CURRENT.reset(step_token)
        _DISPLAY.reset(token)
        shown.clear()


class _AboveStatusLine:
    """A stream for ``logging`` handlers while a :class:`Display` is shown: each message erases the status line,
    is written, and the line is drawn again below it."""

    def __init__(self, shown: Display) -> None:
        self.shown = shown

    def write(self, text: str) -> int:
        self.shown.clear()
        n = self.shown.stream.write(text)
        if text.endswith("\n"):
            self.shown.refresh(force=True)
        return n

    def flush(self) -> None:
        self.shown.stream.flush()


@contextmanager
def step(
    label: str, total: int | None = None, *, unit: str = "", enabled: bool | None = None, bar: bool = True
) -> Iterator[Step]:
    """Report one piece of work (see the module docstring); ``enabled=None`` inherits the enclosing step's.
    ``bar=False``: only in a display's line, no tqdm bar of its own outside one (a stage's outer loop)."""
    parent = _CURRENT.get()
    root = _DISPLAY.get()
    on = (parent.enabled if parent is not None else False) if enabled is None else bool(enabled)
    s = Step(label, total, unit, on, parent, root)
    if on and root is not None:
        root.steps.append(s)
        root.refresh(force=True)
    elif on and bar:
        from tqdm.auto import tqdm

        s._bar = tqdm(total=total, desc=label, unit=unit or "it", leave=parent is None)
    token = _CURRENT.set(s)
    try:
        yield s
    finally:
        try:
            _CURRENT.reset(token)
        except ValueError:  # closed from another context (a generator of ``track`` collected elsewhere)
            _CURRENT.set(parent)
        if s._bar is not None:
            s._bar.close()
        elif on and root is not None:
            if s in root.steps:
                root.steps.remove(s)
            root.refresh(force=True)


def track(
    items: Iterable[T],
    label: str,
    *,
    total: int | None = None,
    unit: str = "",
    enabled: bool | None = None,
    note: Any = None,
    bar: bool = True,
) -> Iterator[T]:
    """``items`` one by one inside a :func:`step` counting them; ``note(item) -> str`` describes the current one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with step(label, total, unit=unit, enabled=enabled, bar=bar) as s:
        for item in items:
            if note is not None:
                s.describe(note(item))
            yield item
            s.update()
