"""The built-in model sources: ``local:`` (and bare directories), ``hf:``, ``openclip:``, ``builtin:``.

Imported by ``MODEL_SOURCES`` (:mod:`cliplab.models.registry`) the first time it is used.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from cliplab.models.base import Model
from cliplab.models.registry import register_model_source, unknown_spec


def _check_hf(target: str, spec: str) -> None:
    if not target:
        raise unknown_spec(spec, "the hf: prefix needs a repository id, e.g. hf:openai/clip-vit-base-patch32")


def _load_hf(target: str, *, spec: str, device: str | None) -> Model:
    from cliplab.models.hf import HFModel

    return HFModel.from_pretrained(target, spec=spec, device=device)


def _check_openclip(target: str, spec: str) -> None:
    from cliplab.models.openclip import INSTALL_HINT

    if not target.partition("/")[0] and not (target and _is_dir(target)):
        raise unknown_spec(spec, "the openclip: prefix needs an architecture, e.g. openclip:ViT-B-32/laion2b_s34b_b79k")
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


#: the built-in models' recipes train (``cliplab.train``), so they live in a package above ``cliplab.models``,
#: imported by name when a ``builtin:`` spec is first checked or loaded
_CATALOG = "cliplab.builtin_models.catalog"


def _check_builtin(target: str, spec: str) -> None:
    BUILTIN_MODELS = importlib.import_module(_CATALOG).BUILTIN_MODELS

    if target not in BUILTIN_MODELS:
        raise unknown_spec(spec, f"no built-in model {target!r} (available: {', '.join(sorted(BUILTIN_MODELS))})")


def _load_builtin(target: str, *, spec: str, device: str | None) -> Model:
    return importlib.import_module(_CATALOG).load_builtin(target, device=device)


def _is_dir(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def _is_open_clip_dir(path: Path) -> bool:
    """A directory in open_clip's format (``open_clip_config.json``, no Hugging Face ``config.json``)."""
    return (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()


def _check_local(target: str, spec: str) -> None:
    path = Path(target).expanduser()
    if not path.is_dir():
        why = f"{path} is a file, not a model directory" if path.exists() else f"no directory {path}"
        raise unknown_spec(spec, why)
    if _is_open_clip_dir(path):
        _check_openclip(str(path), spec)
    elif not (path / "config.json").is_file():
        raise unknown_spec(
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


def _check_onnx(target: str, spec: str) -> None:
    importlib.import_module("cliplab.models.onnx_runtime").check_onnx(target, spec)


def _load_onnx(target: str, *, spec: str, device: str | None) -> Model:
    return importlib.import_module("cliplab.models.onnx_runtime").load_onnx(target, spec=spec, device=device)


register_model_source(
    "onnx",
    _load_onnx,
    check=_check_onnx,
    form="onnx:<dir> (encoders exported by `cliplab export --format onnx`, run by onnxruntime)",
)
