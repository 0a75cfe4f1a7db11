"""``load_model(spec)``: one entry point for every source of models, through a registry of model sources.

A *model source* handles the specs ``<prefix>:<target>`` (``hf:``, ``openclip:``, ``builtin:``, ``local:``) and
optionally recognises bare specs (``detect``: the local Hugging Face directory source claims existing
directories). Register one with ``register_model_source``; other packages add families through the
``cliplab.model_sources`` entry-point group (``name = "module:loader"``, the name being the prefix), loaded
only when a spec uses a prefix nobody registered. ``load_model`` and ``check_model_spec`` (the CLI's cheap
preflight) resolve a spec the same way.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch

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


_SOURCES: dict[str, ModelSource] = {}


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
    (e.g. a local directory); sources are asked in registration order. Registering a taken prefix raises
    ``ValueError`` unless ``replace=True``.
    """
    name = prefix[:-1] if prefix.endswith(":") else prefix
    if not _PREFIX.match(f"{name}:"):
        raise ValueError(f"invalid model source prefix {prefix!r}: letters, digits and _.+- (starting with a letter)")
    if not callable(loader):
        raise TypeError(f"the loader for {name}: must be callable, got {type(loader).__name__}")
    if name in _SOURCES and not replace:
        raise ValueError(f"model source prefix {name!r} is already registered (pass replace=True to override)")
    source = ModelSource(name, loader, detect, check, form or f"{name}:<target>")
    _SOURCES[name] = source
    return source


def unregister_model_source(prefix: str) -> None:
    """Remove a registered source (tests, plugins that unload)."""
    _SOURCES.pop(prefix.rstrip(":"), None)


def model_sources() -> dict[str, ModelSource]:
    """The registered sources, by prefix (entry points not yet loaded are not included)."""
    return dict(_SOURCES)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_point(prefix: str) -> ModelSource | None:
    """Register the entry point named ``prefix`` (if any package declares one) and return its source."""
    for ep in _entry_points():
        if ep.name != prefix:
            continue
        obj = ep.load()
        if prefix in _SOURCES:  # the module registered itself on import
            return _SOURCES[prefix]
        if isinstance(obj, ModelSource):
            _SOURCES[prefix] = obj
            return obj
        dist = getattr(getattr(ep, "dist", None), "name", None)
        return register_model_source(prefix, obj, form=f"{prefix}:<target> (from {dist or ep.value})")
    return None


class _Forms(Sequence[str]):
    """The accepted spec forms, read live from the registry (plus entry points not loaded yet)."""

    def _items(self) -> list[str]:
        forms = [s.describe() for s in _SOURCES.values()]
        try:
            pending = [ep for ep in _entry_points() if ep.name not in _SOURCES]
            forms += [f"{ep.name}:<target> (entry point {ep.value})" for ep in pending]
        except Exception:  # a broken installation must not hide the real error
            pass
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


def _unknown(spec: str, why: str) -> ValueError:
    forms = "\n  - ".join(SPEC_FORMS)
    return ValueError(f"unknown model spec {spec!r}: {why}. Accepted forms:\n  - {forms}")


def _resolve(s: str) -> tuple[ModelSource, str]:
    """The source that handles ``s`` and the target it is given, or the ``ValueError`` for an unknown spec."""
    m = _PREFIX.match(s)
    if m is not None:
        prefix, target = m.group(1), m.group(2)
        source = _SOURCES.get(prefix) or _load_entry_point(prefix)
        if source is not None:
            return source, target
    for source in list(_SOURCES.values()):
        if source.detect is not None and source.detect(s):
            return source, s
    path = Path(s).expanduser()
    if path.exists():
        raise _unknown(s, f"{path} is a file, not a model directory")
    if m is not None:
        raise _unknown(s, f"no model source is registered for the prefix {m.group(1)!r}")
    raise _unknown(s, "it is neither an existing directory nor a known prefix")


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


# --------------------------------------------------------------------- the built-in sources
def _check_hf(target: str, spec: str) -> None:
    if not target:
        raise _unknown(spec, "the hf: prefix needs a repository id, e.g. hf:openai/clip-vit-base-patch32")


def _load_hf(target: str, *, spec: str, device: str | None) -> Model:
    from cliplab.models.hf import HFModel

    return HFModel.from_pretrained(target, spec=spec, device=device)


def _check_openclip(target: str, spec: str) -> None:
    from cliplab.models.openclip import INSTALL_HINT

    if not target.partition("/")[0] and not (target and _is_dir(target)):
        raise _unknown(spec, "the openclip: prefix needs an architecture, e.g. openclip:ViT-B-32/laion2b_s34b_b79k")
    if importlib.util.find_spec("open_clip") is None:
        raise ImportError(f"model spec {spec!r}: {INSTALL_HINT}")


def _load_openclip(target: str, *, spec: str, device: str | None) -> Model:
    from cliplab.models.openclip import SCHEMAS, OpenCLIPModel

    if target and _is_dir(target):
        return OpenCLIPModel.from_dir(target, spec=spec, device=device)
    if target.startswith(SCHEMAS):
        return OpenCLIPModel(target, None, spec=spec, device=device)
    arch, _, tag = target.partition("/")
    return OpenCLIPModel(arch, tag or None, spec=spec, device=device)


def _check_builtin(target: str, spec: str) -> None:
    from cliplab.models.builtin import BUILTIN_MODELS

    if target not in BUILTIN_MODELS:
        raise _unknown(spec, f"no built-in model {target!r} (available: {', '.join(sorted(BUILTIN_MODELS))})")


def _load_builtin(target: str, *, spec: str, device: str | None) -> Model:
    from cliplab.models.builtin import load_builtin

    return load_builtin(target, device=device)


def _is_dir(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def _is_open_clip_dir(path: Path) -> bool:
    """A directory in open_clip's format (``open_clip_config.json``, no Hugging Face ``config.json``)."""
    return (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()


def _check_local(target: str, spec: str) -> None:
    path = Path(target).expanduser()
    if not path.is_dir():
        why = f"{path} is a file, not a model directory" if path.exists() else f"no directory {path}"
        raise _unknown(spec, why)
    if _is_open_clip_dir(path):
        _check_openclip(str(path), spec)
    elif not (path / "config.json").is_file():
        raise _unknown(
            spec,
            f"directory {path} has no config.json (Hugging Face) nor open_clip_config.json (open_clip), so it is "
            "not a model directory",
        )


def _load_local(target: str, *, spec: str, device: str | None) -> Model:
    from cliplab.models.hf import HFModel

    if _is_open_clip_dir(Path(target).expanduser()):
        return _load_openclip(str(Path(target).expanduser()), spec=spec, device=device)
    path = str(Path(target).expanduser())
    return HFModel.from_pretrained(path, spec=path, device=device)


register_model_source(
    "local",
    _load_local,
    detect=_is_dir,
    check=_check_local,
    form="a local model directory, bare or as local:<dir> (what Model.save writes: a saved transformers "
    "CLIP-family model, or open_clip's open_clip_config.json + weights)",
)
register_model_source("hf", _load_hf, check=_check_hf, form="hf:<repo-id> (downloaded through transformers)")
register_model_source(
    "openclip",
    _load_openclip,
    check=_check_openclip,
    form="openclip:<arch>[/<pretrained-tag or checkpoint file>] or openclip:<dir> (needs open_clip installed)",
)
register_model_source(
    "builtin",
    _load_builtin,
    check=_check_builtin,
    form="builtin:<name> (the small models trained on the built-in shapes world, e.g. builtin:shapes)",
)
register_model_source("onnx", lambda t, **kw: importlib.import_module("cliplab.models.onnx_runtime").load_onnx(t, **kw), check=lambda t, s: importlib.import_module("cliplab.models.onnx_runtime").check_onnx(t, s), form="onnx:<dir> (encoders exported by `cliplab export --format onnx`, run by onnxruntime)")  # noqa: E501
