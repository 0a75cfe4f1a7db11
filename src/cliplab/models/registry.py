"""``load_model(spec)``: one entry point for every source of models, through a registry of model sources.

A *model source* handles the specs ``<prefix>:<target>`` (``hf:``, ``openclip:``, ``builtin:``, ``local:``) and
optionally recognises bare specs (``detect``: the local Hugging Face directory source claims existing
directories; newest registration first, so a plug-in claims a spec before the built-ins). The registry is
``MODEL_SOURCES`` (a :class:`cliplab.extension.Registry`; the built-ins live in
:mod:`cliplab.models.builtin_sources`, imported on first use). Register one with ``register_model_source``;
other packages add families through the ``cliplab.model_sources`` entry-point group (``name =
"module:loader"``, the name being the prefix), loaded only when a spec uses a prefix nobody registered (or a
bare spec is matched). ``load_model`` and ``check_model_spec`` (the CLI's cheap preflight) resolve a spec the
same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch

from cliplab.extension import Registry
from cliplab.models.base import Model

#: ``loader(target, *, spec, device) -> Model``; ``target`` is the spec without its ``prefix:``
Loader = Callable[..., Model]
#: entry-point group through which other packages register model sources (name = prefix)
ENTRY_POINT_GROUP = "cliplab.model_sources"
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]*):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class ModelSource:
    """One way of naming models: ``prefix:target`` specs, and bare specs that ``detect`` claims.

    ``check(target, spec)`` raises what loading would raise for a malformed spec without loading anything
    (default: accept); ``form`` is the line the error messages list.
    """

    prefix: str
    loader: Loader
    detect: Callable[[str], bool] | None = None
    check: Callable[[str, str], None] | None = None
    form: str = ""

    def describe(self) -> str:
        return self.form or f"{self.prefix}:<target>"


def _check(prefix: str, source: ModelSource) -> None:
    if not _PREFIX.match(f"{prefix}:"):
        raise ValueError(f"invalid model source prefix {prefix!r}: letters, digits and _.+- (starting with a letter)")
    if not isinstance(source, ModelSource):
        raise TypeError(f"model source {prefix!r} must be a ModelSource (see register_model_source), got {source!r}")


def _adopt(prefix: str, loaded: Any) -> ModelSource:
    """An entry point's object: a ``ModelSource``, or a loader (its form names the distribution)."""
    if isinstance(loaded, ModelSource):
        return loaded
    if not callable(loaded):
        raise TypeError(f"the entry point {prefix!r} of {ENTRY_POINT_GROUP} must be a loader, got {loaded!r}")
    ep = next((e for e in MODEL_SOURCES.entry_points() if e.name == prefix), None)
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return ModelSource(prefix, loaded, form=f"{prefix}:<target> (from {dist or (ep.value if ep else prefix)})")


#: prefix → :class:`ModelSource`; built-ins in :mod:`cliplab.models.builtin_sources`
MODEL_SOURCES: Registry[ModelSource] = Registry(
    "model source",
    group=ENTRY_POINT_GROUP,
    builtins=("cliplab.models.builtin_sources",),
    check=_check,
    adopt=_adopt,
)


def register_model_source(
    prefix: str,
    loader: Loader,
    detect: Callable[[str], bool] | None = None,
    *,
    check: Callable[[str, str], None] | None = None,
    form: str | None = None,
    replace: bool = False,
) -> ModelSource:
    """Register ``loader`` for specs ``<prefix>:<target>`` (``prefix`` with or without the colon).

    ``loader(target, *, spec, device) -> Model``. ``detect(spec) -> bool`` lets the source claim bare specs
    (e.g. a local directory); sources are asked newest registration first. Registering a taken prefix raises
    ``ValueError`` unless ``replace=True``.
    """
    name = prefix[:-1] if prefix.endswith(":") else prefix
    if not _PREFIX.match(f"{name}:"):
        raise ValueError(f"invalid model source prefix {prefix!r}: letters, digits and _.+- (starting with a letter)")
    if not callable(loader):
        raise TypeError(f"the loader for {name}: must be callable, got {type(loader).__name__}")
    source = ModelSource(name, loader, detect, check, form or f"{name}:<target>")
    return MODEL_SOURCES.register(name, source, replace=replace)


def unregister_model_source(prefix: str) -> None:
    """Remove a registered source (tests, plugins that unload); an unknown prefix is ignored."""
    MODEL_SOURCES.pop(prefix.rstrip(":"), None)


def model_sources() -> dict[str, ModelSource]:
    """The registered sources, by prefix (entry points not yet loaded are not included)."""
    return dict(MODEL_SOURCES.items())


class _Forms(Sequence[str]):
    """The accepted spec forms, read live from the registry (plus entry points not loaded yet)."""

    def _items(self) -> list[str]:
        forms = [s.describe() for s in MODEL_SOURCES.values()]
        forms += [f"{ep.name}:<target> (entry point {ep.value})" for ep in MODEL_SOURCES.pending()]
        return forms

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: Any) -> Any:
        return self._items()[i]

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __repr__(self) -> str:
        return repr(tuple(self._items()))


#: the accepted forms of a model spec (one line per registered source)
SPEC_FORMS: Sequence[str] = _Forms()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def unknown_spec(spec: str, why: str) -> ValueError:
    forms = "\n  - ".join(SPEC_FORMS)
    return ValueError(f"unknown model spec {spec!r}: {why}. Accepted forms:\n  - {forms}")


def _resolve(s: str) -> tuple[ModelSource, str]:
    """The source that handles ``s`` and the target it is given, or the ``ValueError`` for an unknown spec."""
    m = _PREFIX.match(s)
    if m is not None:
        prefix, target = m.group(1), m.group(2)
        source = MODEL_SOURCES.get(prefix, None)  # loads an entry point of that name
        if source is not None:
            return source, target
    found = MODEL_SOURCES.detect(lambda source: source.detect is not None and source.detect(s))
    if found is not None:
        return found[1], s
    path = Path(s).expanduser()
    if path.exists():
        raise unknown_spec(s, f"{path} is a file, not a model directory")
    if m is not None:
        close = MODEL_SOURCES.unknown(m.group(1)).close
        hint = f" (did you mean {' or '.join(f'{c}:' for c in close)}?)" if close else ""
        raise unknown_spec(s, f"no model source is registered for the prefix {m.group(1)!r}{hint}")
    raise unknown_spec(s, "it is neither an existing directory nor a known prefix")


def load_model(spec: str | os.PathLike | Model, device: str | torch.device | None = None) -> Model:
    """Load a CLIP-family model from ``spec`` (see ``SPEC_FORMS``) onto ``device`` (default: CUDA if any).

    Raises ``ValueError`` naming the accepted forms for an unknown spec.
    """
    if isinstance(spec, Model):
        return spec.to(device) if device is not None else spec
    device = str(device) if device is not None else default_device()
    s = str(spec)
    source, target = _resolve(s)
    if source.check is not None:
        source.check(target, s)
    return source.loader(target, spec=s, device=device)


def check_model_spec(spec: str | os.PathLike | Model) -> None:
    """Raise what ``load_model(spec)`` would raise for a spec of no known form, without loading anything.

    Cheap: the spec is resolved to its source like ``load_model`` does and the source's ``check`` runs (a
    prefix needs its argument, ``openclip:`` the open_clip package found but not imported, a ``builtin:`` name
    must be registered, a local path must be a directory with a ``config.json``).
    """
    if isinstance(spec, Model):
        return
    s = str(spec)
    source, target = _resolve(s)
    if source.check is not None:
        source.check(target, s)
