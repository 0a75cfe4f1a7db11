"""``Registry``: the one type behind every extension point of cliplab (data sources, model sources, adapters,
prompt learners, fine-tuning objectives, OOD scorers, accuracy estimators, bench stages, bench data kinds,
probe formats, suites; the table in ``docs/architecture.md`` lists them).

Every registry behaves the same way:

- ``register(name, obj, *, replace=False)``: a taken name raises ``ValueError`` unless ``replace`` (registering
  the very same object again under its name is a no-op). A registration, a replacing one included, is the
  newest.
- ``unregister(name)``, ``get(name)`` / ``registry[name]`` (an unknown name raises :class:`UnknownNameError`, a
  ``ValueError`` and ``KeyError``, with the closest registered names: "did you mean ...?"), ``names()``,
  ``name in registry``, iteration, ``items()``.
- Built-ins are loaded lazily: ``builtins`` names modules (a package: every module in it, in name order),
  imported the first time the registry is used; each registers its own objects, so a built-in is one file.
- Other packages extend cliplab through the entry-point group ``cliplab.<kind>`` (``group``): an entry point
  named ``name`` is loaded the first time ``get(name)`` misses, and all of them before ``detect`` runs. Its
  object is registered under its name (unless importing it registered that name already).
- ``detect(test)`` asks the objects newest registration first (so a user's plug-in claims an input before a
  built-in does, and among built-ins the module last in name order first): the first with ``test(obj)`` true
  wins.
- Iteration follows registration order (oldest first), or ``order(obj)`` when given (ties: registration
  order); e.g. bench stages run in the order each declares (``Stage(order=...)``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import itertools
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")
_MISSING: Any = object()


class UnknownNameError(ValueError, KeyError):
    """No object is registered under a name; the message lists the closest names (also in ``close``)."""

    close: list[str]

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named objects of one kind; see the module docstring.

    ``kind``: what the objects are, for messages ("data source"). ``group``: the entry-point group.
    ``builtins``: modules that register the built-ins. ``check(name, obj)``: raises for an invalid name or
    object. ``order``: the iteration key. ``adopt(name, loaded)``: what an entry point's object becomes
    (default: itself).
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        builtins: Sequence[str] = (),
        check: Callable[[str, T], None] | None = None,
        order: Callable[[T], Any] | None = None,
        adopt: Callable[[str, Any], T] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self.builtins = tuple(builtins)
        self._check = check
        self._order = order
        self._adopt = adopt
        self._items: dict[str, T] = {}
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()
        self._builtins_loaded = not self.builtins
        self._entry_points_loaded = False
        self._entry_point_cache: tuple[tuple[str, ...], list[importlib.metadata.EntryPoint]] | None = None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()!r})"

    # -- built-ins and entry points -------------------------------------------------------------------------
    def load_builtins(self) -> None:
        """Import the ``builtins`` modules (once); each registers its objects."""
        if self._builtins_loaded:
            return
        self._builtins_loaded = True  # before importing: the modules call register()
        for name in self.builtins:
            module = importlib.import_module(name)
            path = getattr(module, "__path__", None)
            if path is not None:  # a package: every module in it
                for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
                    importlib.import_module(f"{name}.{info.name}")

    def entry_points(self) -> list[importlib.metadata.EntryPoint]:
        """The entry points of ``group`` that installed packages declare (none without a group); read again only
        when ``sys.path`` changes (scanning the installed distributions is slow)."""
        if self.group is None:
            return []
        key = tuple(sys.path)
        if self._entry_point_cache is None or self._entry_point_cache[0] != key:
            self._entry_point_cache = (key, list(importlib.metadata.entry_points(group=self.group)))
        return list(self._entry_point_cache[1])

    def pending(self) -> list[importlib.metadata.EntryPoint]:
        """Entry points whose name is not registered yet (not loaded); a broken installation gives none."""
        try:
            return [ep for ep in self.entry_points() if ep.name not in self._items]
        except Exception:
            return []

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> T:
        loaded = ep.load()
        if ep.name in self._items:  # importing it registered the name
            return self._items[ep.name]
        obj = self._adopt(ep.name, loaded) if self._adopt is not None else loaded
        if ep.name not in self._items:  # adopt may register it itself
            self.register(ep.name, obj)
        return self._items[ep.name]

    def load_entry_points(self) -> None:
        """Load every entry point of ``group`` not registered yet (a failing one is a warning, not an error)."""
        self.load_builtins()
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in self.pending():
            try:
                self._load_entry_point(ep)
            except Exception as err:  # one broken plug-in must not break every lookup
                warnings.warn(f"cliplab: cannot load {self.kind} {ep.name!r} ({ep.value}): {err}", stacklevel=2)

    # -- registering ----------------------------------------------------------------------------------------
    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Register ``obj`` under ``name``; a taken name raises ValueError unless ``replace``. Returns ``obj``."""
        self.load_builtins()  # so that a user's registration is newer than every built-in
        if self._check is not None:
            self._check(name, obj)
        if name in self._items and not replace:
            if self._items[name] is obj:
                return obj
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
        self._items.pop(name, None)
        self._items[name] = obj
        self._seq[name] = next(self._counter)
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (UnknownNameError if it is not registered)."""
        self.load_builtins()
        if name not in self._items:
            raise self.unknown(name)
        obj = self._items.pop(name)
        self._seq.pop(name, None)
        return obj

    @contextmanager
    def restoring(self) -> Iterator[Registry[T]]:
        """Undo, on exit, every registration and removal made inside the block (tests)."""
        self.load_builtins()
        items, seq = dict(self._items), dict(self._seq)
        try:
            yield self
        finally:
            self._items, self._seq = items, seq

    # -- looking up -----------------------------------------------------------------------------------------
    @overload
    def get(self, name: str) -> T: ...
    @overload
    def get(self, name: str, default: Any) -> Any: ...
    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The object registered as ``name`` (an entry point of that name is loaded on a miss).

        Without ``default`` an unknown name raises :class:`UnknownNameError` naming the closest names.
        """
        self.load_builtins()
        if name in self._items:
            return self._items[name]
        for ep in self.pending():
            if ep.name == name:
                return self._load_entry_point(ep)
        if default is not _MISSING:
            return default
        raise self.unknown(name)

    def unknown(self, name: str) -> UnknownNameError:
        """The error for an unknown ``name``: the registered names, the closest first."""
        names = self.names() + [ep.name for ep in self.pending()]
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        err = UnknownNameError(f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(names) or 'none'})")
        err.close = close
        return err

    def names(self) -> list[str]:
        """The registered names, in iteration order."""
        self.load_builtins()
        names = sorted(self._items, key=lambda n: self._seq.get(n, 0))
        if self._order is not None:
            order = self._order
            names.sort(key=lambda n: order(self._items[n]))  # stable: ties keep registration order
        return names

    def detect(self, test: Callable[[T], bool]) -> tuple[str, T] | None:
        """``(name, obj)`` of the newest registration with ``test(obj)`` true, or None."""
        self.load_entry_points()
        for name in sorted(self._items, key=lambda n: self._seq.get(n, 0), reverse=True):
            if test(self._items[name]):
                return name, self._items[name]
        return None

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, obj: T) -> None:
        """``registry[name] = obj``: ``register(name, obj, replace=True)``, but a replaced object keeps its place
        (as a dict's; ``monkeypatch.setitem`` works and its undo leaves the order as it was)."""
        seq = self._seq.get(name) if name in self else None
        self.register(name, obj, replace=True)
        if seq is not None:
            self._seq[name] = seq

    def __delitem__(self, name: str) -> None:
        self.unregister(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load_builtins()
        return len(self._items)

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[T]:
        return [self._items[n] for n in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    def pop(self, name: str, default: Any = _MISSING) -> Any:
        """Remove and return ``name`` (``default`` if given and not registered)."""
        if default is not _MISSING and name not in self:
            return default
        return self.unregister(name)
