"""Worker processes for ``make_loader(parallel="process")``: batches made elsewhere, returned in shared memory.

As torch's ``DataLoader`` does, but with NumPy and PIL only on the workers (no torch kernel runs there; see
``Preprocess.normalize_array``): each worker holds a pickled copy of the batch function and its arguments (the
dataset and the preprocessing recipe), takes ``(batch, slot, indices)`` tasks from one queue, writes the batch's
float32 pixels into shared-memory slot ``slot`` (``multiprocessing.shared_memory``, allocated by the parent) and
answers with the batch's metadata. A batch larger than its slot (images without a fixed output size) comes back
pickled instead. The parent copies each slot out into a tensor it owns (``torch.from_numpy``), then reuses the
slot, so ``2 · num_workers`` slots bound the memory.

Start method: ``forkserver`` where the platform has it, else ``spawn`` — never ``fork``: a forked child inherits
an initialised CUDA context (unusable there) and the locks of the parent's other threads (the prefetcher, the
tokenizer's pool). The fork server is started once per parent process with ``cliplab.data.loader`` (so torch)
imported, so each later worker starts in milliseconds instead of re-importing torch.

Shutdown: ``close()`` (also run by ``with``, and by the loader's generator when it is closed early or raises)
stops the workers (a sentinel each, then ``terminate`` after a grace period) and unlinks the slots, so no process
or ``/dev/shm`` segment outlives the pass. A worker whose parent has died exits by itself.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import sys
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import shared_memory
from typing import Any

import numpy as np

#: seconds a worker waits for a task before checking that its parent is alive; the parent's poll interval
POLL_S = 1.0
#: seconds ``close`` gives the workers to exit before terminating them
GRACE_S = 5.0


def start_method() -> str:
    """``"forkserver"`` where available (Linux, macOS), else ``"spawn"``: both safe with CUDA initialised."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


#: whether a pool has started in this process (the fork server is then up: later pools start in a fraction of a second)
started = False


def main_is_importable() -> bool:
    """Whether a worker may import ``__main__`` safely: no main file (interactive, ``-c``), a module run with
    ``-m``, or a script with an ``if __name__ == "__main__"`` guard (its text is read: a script without one
    would run again in every worker, which multiprocessing refuses)."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    if path is None:
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    return "__name__" in text and "__main__" in text


def _context() -> Any:
    method = start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        # effective only before the fork server starts (the first pool of this process); later calls are no-ops
        ctx.set_forkserver_preload(["__main__", "cliplab.data.loader"])
    return ctx


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any exception must reach the parent, in some form
        return RuntimeError(f"{type(err).__name__}: {err}")


def _work(tasks: Any, results: Any, stop: Any, fn: Callable[..., Any], args: tuple, names: list[str]) -> None:
    """A worker's loop: ``fn(*args, indices) -> (pixels | None, indices kept, extra)`` per task, pixels to a slot."""
    parent = mp.parent_process()
    slots = [shared_memory.SharedMemory(name=n) for n in names]
    try:
        while True:
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
            if task is None or stop.is_set():
                if stop.is_set():
                    results.cancel_join_thread()  # the parent reads no more: exit without flushing
                return
            b, slot, indices = task
            try:
                pixels, kept, extra = fn(*args, indices)
                if pixels is not None and pixels.nbytes <= slots[slot].size:
                    view = np.ndarray(pixels.shape, pixels.dtype, buffer=slots[slot].buf)
                    view[...] = pixels
                    del view
                    results.put((b, "slot", (pixels.shape, pixels.dtype.str), kept, extra))
                else:
                    results.put((b, "inline", pixels, kept, extra))
            except BaseException as err:  # noqa: BLE001 - re-raised in the parent when its turn comes
                results.put((b, "error", _picklable(err), None, None))
    finally:
        for s in slots:
            s.close()


class ProcessPool:
    """``num_workers`` processes computing ``fn(*args, indices)`` for a stream of index chunks, results in order.

    ``fn`` must be a module-level function and ``args`` picklable; ``fn`` returns ``(pixels, kept, extra)``
    with ``pixels`` a float32 array (or None). ``slot_bytes``: the size of each shared-memory slot (the
    largest batch expected).
    """

    def __init__(self, fn: Callable[..., Any], args: tuple, num_workers: int, slot_bytes: int, ahead: int):
        self.ahead = max(1, ahead)
        self.slots: list[shared_memory.SharedMemory] = []
        self.procs: list[Any] = []
        self.names: list[str] = []  # the slots' shared-memory names (kept after close, for checks)
        ctx = _context()
        self.tasks, self.results, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        try:
            self.slots = [shared_memory.SharedMemory(create=True, size=max(1, slot_bytes)) for _ in range(self.ahead)]
            names = self.names = [s.name for s in self.slots]
            for i in range(num_workers):
                p = ctx.Process(
                    target=_work,
                    args=(self.tasks, self.results, self.stop, fn, args, names),
                    name=f"cliplab-loader-{i}",
                )
                p.daemon = True
                p.start()
                self.procs.append(p)
            global started
            started = True
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _result(self) -> tuple:
        while True:
            try:
                return self.results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"a loader worker process exited unexpectedly (exit code {dead[0].exitcode}); "
                        "try parallel='thread'"
                    ) from None

    def map(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray | None, Any, Any]]:
        """``(pixels copied out of shared memory, kept, extra)`` for each chunk, in order; a worker's exception
        is raised at its chunk's turn."""
        todo = enumerate(chunks)
        free = list(range(self.ahead))
        slot_of: dict[int, int] = {}
        done: dict[int, tuple] = {}
        submitted = 0
        for b in range(1 << 62):
            while free:
                nxt = next(todo, None)
                if nxt is None:
                    break
                slot = free.pop()
                slot_of[nxt[0]] = slot
                self.tasks.put((nxt[0], slot, nxt[1]))
                submitted += 1
            if b >= submitted:
                return
            while b not in done:
                r = self._result()
                done[r[0]] = r
            _, kind, payload, kept, extra = done.pop(b)
            slot = slot_of.pop(b)
            if kind == "error":
                raise payload
            if kind == "slot":
                shape, dtype = payload
                view = np.ndarray(shape, np.dtype(dtype), buffer=self.slots[slot].buf)
                pixels = view.copy()
                del view
            else:
                pixels = payload
            free.append(slot)
            yield pixels, kept, extra

    def close(self) -> None:
        """Stop the workers (queued tasks are dropped) and free the shared memory (idempotent)."""
        self.stop.set()
        for _ in self.procs:
            try:
                self.tasks.put(None)
            except (ValueError, OSError):  # pragma: no cover - queue already closed
                break
        for p in self.procs:
            p.join(GRACE_S)
            if p.is_alive():
                p.terminate()
                p.join(GRACE_S)
        self.procs = []
        for q in (self.tasks, self.results):
            q.close()
            q.cancel_join_thread()
        for s in self.slots:
            s.close()
            try:
                s.unlink()
            except FileNotFoundError:  # pragma: no cover
                pass
        self.slots = []
