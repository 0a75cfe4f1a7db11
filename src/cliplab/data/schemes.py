"""The registry of data sources (``DATA_SOURCES``): a scheme (``shapes``, ``folder``, ``captions``, ``wds``, ...)
and the loader that reads its specs; ``register_data_source`` adds one.

Built-in schemes are the modules of :mod:`cliplab.data.sources`, imported the first time the registry is
used; other packages add schemes through the ``cliplab.data_sources`` entry-point group (name = scheme,
object = a loader or a :class:`DataSource`). A bare path goes to the newest-registered source whose
``detect(path)`` is true (:meth:`cliplab.extension.Registry.detect`), so a plug-in claims paths before the
built-ins. Loading a spec is :mod:`cliplab.data.registry`'s (``load_dataset``); this module sits below the
spec parser (:mod:`cliplab.data.spec`), which asks it which schemes exist.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cliplab.data.base import Dataset
from cliplab.extension import Registry

__all__ = [
    "DATA_SOURCES",
    "DataSource",
    "data_source",
    "data_sources",
    "make_data_source",
    "register_data_source",
    "unregister_data_source",
]

Loader = Callable[..., Dataset]
SCHEME = re.compile(r"^[a-z][a-z0-9_-]+$")


@dataclass(frozen=True)
class DataSource:
    """A registered scheme; see ``register_data_source``."""

    scheme: str
    loader: Loader
    detect: Callable[[str], bool] | None = None
    #: accepted option names (``split`` aside); None: any (the loader checks them)
    options: tuple[str, ...] | None = None
    #: the splits it has, or None for data without splits
    splits: tuple[str, ...] | None = None
    #: whether specs name a target (a path): ``scheme:<target>[:options]``; else ``scheme[:options]``
    target: bool = True
    #: a cheap ``check(target, split=..., **options)`` that raises what the loader would, without loading
    check: Callable[..., None] | None = None
    description: str = ""


def _check(scheme: str, source: DataSource) -> None:
    if not SCHEME.match(scheme):
        raise ValueError(f"a data source scheme is lower-case letters, digits, '_' or '-' (2+ chars), got {scheme!r}")
    if not isinstance(source, DataSource):
        raise TypeError(f"data source {scheme!r} must be a DataSource (see register_data_source), got {source!r}")


def _adopt(scheme: str, loaded: Any) -> DataSource:
    return loaded if isinstance(loaded, DataSource) else make_data_source(scheme, loaded)


#: scheme → :class:`DataSource`; the built-ins are the modules of ``cliplab.data.sources``
DATA_SOURCES: Registry[DataSource] = Registry(
    "data source", group="cliplab.data_sources", builtins=("cliplab.data.sources",), check=_check, adopt=_adopt
)


def make_data_source(
    scheme: str,
    loader: Loader,
    detect: Callable[[str], bool] | None = None,
    *,
    options: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    target: bool = True,
    check: Callable[..., None] | None = None,
    description: str = "",
) -> DataSource:
    """The :class:`DataSource` ``register_data_source`` registers (options read from the loader's signature)."""
    if not callable(loader):
        raise TypeError(f"the loader of data source {scheme!r} must be callable, got {type(loader).__name__}")
    if options is None:
        params = inspect.signature(loader).parameters.values()
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            names = [p.name for p in params if p.kind in kinds]
            options = [n for n in names[1:] if n != "split"]  # the first is the target
    return DataSource(
        scheme=scheme,
        loader=loader,
        detect=detect,
        options=None if options is None else tuple(options),
        splits=None if splits is None else tuple(splits),
        target=target,
        check=check,
        description=description or f"{scheme}:{'<path>' if target else ''}[:key=value,...]",
    )


def register_data_source(
    scheme: str,
    loader: Loader,
    detect: Callable[[str], bool] | None = None,
    *,
    options: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    target: bool = True,
    check: Callable[..., None] | None = None,
    description: str = "",
    replace: bool = False,
) -> DataSource:
    """Register ``loader`` for specs ``scheme:<target>[:key=value,...]`` (and bare paths ``detect`` accepts).

    ``loader(target, split=..., **options)`` returns a ``Dataset``. ``options``: the option names it accepts
    (default: its keyword parameters other than ``target`` and ``split``); any other is refused with a
    ValueError naming the spec. ``splits``: the splits the data has (None: none; ``split`` is then refused
    unless it is ``test``/None, and the loader gets ``split=None``). ``target=False`` for a scheme that
    takes no path (``shapes:n=100``). ``check``: a cheap validation for the CLI's pre-flight (default: only
    the options are checked). A taken scheme raises ValueError unless ``replace=True`` (the replacement is
    then the newest source, asked first for bare paths).
    """
    if not SCHEME.match(scheme):
        raise ValueError(f"a data source scheme is lower-case letters, digits, '_' or '-' (2+ chars), got {scheme!r}")
    source = make_data_source(
        scheme, loader, detect, options=options, splits=splits, target=target, check=check, description=description
    )
    return DATA_SOURCES.register(scheme, source, replace=replace)


def unregister_data_source(scheme: str) -> DataSource:
    """Remove a registered scheme (tests, plug-ins that unload); returns its source."""
    return DATA_SOURCES.unregister(scheme)


def data_sources() -> dict[str, DataSource]:
    """Every registered source by scheme (built-ins first, in registration order)."""
    return dict(DATA_SOURCES.items())


def data_source(scheme: str) -> DataSource:
    """The source registered for ``scheme`` (a ValueError with the closest schemes for an unknown one)."""
    return DATA_SOURCES.get(scheme)
