"""Optional open_clip backend, used only when open_clip imports.

Specs (target of ``openclip:``):

- ``<arch>``: open_clip's config ``arch``, randomly initialised (``create_model(arch, pretrained=None)``);
- ``<arch>/<tag>``: a pretrained tag (downloaded by open_clip), or ``<arch>/<path>``: a local checkpoint file;
- ``<dir>`` (or ``local-dir:<dir>``), and a bare ``<dir>`` given to ``load_model``: a directory in open_clip's
  own format, ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg``) plus ``open_clip_model.safetensors``
  (what ``OpenCLIPModel.save`` writes and ``open_clip.create_model_from_pretrained("local-dir:<dir>")`` loads);
- ``hf-hub:<org>/<repo>``: a Hub repository in that format.

Preprocessing is rebuilt from the model's ``preprocess_cfg`` without torchvision: ``resize_mode`` "shortest"
(resize the short side, centre crop rounded like torchvision's ``CenterCrop``), "longest" (fit the long side,
zero-pad) or "squash" (resize exactly).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from cliplab._io import atomic_dir
from cliplab.imaging.preprocess import Preprocess
from cliplab.models.base import GEOMETRIES, Model

INSTALL_HINT = (
    "the openclip: backend needs the optional package open_clip (and torchvision): pip install open_clip_torch"
)
#: open_clip's names for a model directory's config and weights
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
SCHEMAS = ("hf-hub:", "local-dir:")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _import_open_clip() -> Any:
    try:
        import open_clip
    except Exception as err:  # ImportError, or torchvision failing to load
        raise ImportError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    return open_clip


def is_open_clip_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory in open_clip's format (it holds ``open_clip_config.json``)."""
    return (Path(path).expanduser() / CONFIG_FILE).is_file()


def preprocess_from_cfg(cfg: dict[str, Any]) -> Preprocess:
    """open_clip's eval transform for ``preprocess_cfg`` (``open_clip.image_transform``), as a ``Preprocess``.

    "shortest": ``Resize(size)`` of the short side (``ResizeKeepRatio`` for a non-square size) then
    ``CenterCrop(size)``; "longest": ``ResizeKeepRatio(longest=1)`` then ``CenterCropOrPad`` with zeros;
    "squash": ``Resize((h, w))``.
    """
    size = cfg.get("size", 224)
    h, w = (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))
    mode = cfg.get("resize_mode", "shortest")
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in _RESAMPLE:
        raise ValueError(f"open_clip preprocess_cfg: unsupported interpolation {interpolation!r} (bicubic, bilinear)")
    mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    resample = _RESAMPLE[interpolation]
    if int(cfg.get("fill_color", 0)) != 0:
        raise ValueError(f"open_clip preprocess_cfg: fill_color {cfg['fill_color']!r} is not supported (only 0)")
    if mode == "squash":
        return Preprocess(resize=(h, w), crop=None, mean=mean, std=std, resample=resample)
    if mode == "shortest" and h == w:
        return Preprocess(resize=h, crop=(h, w), crop_round=True, mean=mean, std=std, resample=resample)
    if mode in ("shortest", "longest"):  # ResizeKeepRatio, then CenterCrop / CenterCropOrPad (zeros)
        if mode == "shortest":  # open_clip builds this ResizeKeepRatio without its interpolation: bicubic
            resample = Image.Resampling.BICUBIC
        return Preprocess(
            resize=(h, w), crop=(h, w), crop_round=True, keep_ratio=mode, mean=mean, std=std, resample=resample
        )
    raise ValueError(
        f"open_clip preprocess_cfg: unknown resize_mode {mode!r} (open_clip has 'shortest', 'longest', 'squash')"
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


class OpenCLIPModel(Model):
    """An open_clip model with its tokenizer; ``save`` writes open_clip's own directory format."""

    can_train = True
    #: ``save`` keeps a ``logit_bias`` the trainer added (SigLIP loss) as ``model_cfg.init_logit_bias`` + weights
    saves_logit_bias = True
    #: an open_clip ``CLIP`` / ``CustomTextCLIP`` (open_clip ships no type information)
    module: Any

    def __init__(self, arch: str, pretrained: str | None, *, spec: str, device: str | None = None):
        open_clip = _import_open_clip()
        if arch.startswith(SCHEMAS):
            name, pretrained = arch, None
            if arch.startswith("local-dir:"):
                _check_dir(Path(arch[len("local-dir:") :]).expanduser())
            model_cfg = open_clip.get_model_config(arch) if arch.startswith("local-dir:") else None
        else:
            name = arch
            model_cfg = open_clip.get_model_config(arch)
            if model_cfg is None:
                raise ValueError(
                    f"model spec {spec!r}: open_clip has no architecture {arch!r} (open_clip.list_models() lists "
                    "them; open_clip.add_model_config adds one)"
                )
            if pretrained and _looks_like_path(pretrained) and not Path(pretrained).expanduser().is_file():
                raise FileNotFoundError(f"model spec {spec!r}: checkpoint file not found: {pretrained}")
        module = open_clip.create_model(name, pretrained=pretrained)
        self.module = module.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.spec = spec
        self.arch, self.pretrained = arch, pretrained
        if model_cfg is None and arch.startswith("hf-hub:"):
            from open_clip.factory import _get_hf_config

            model_cfg = _get_hf_config(arch[len("hf-hub:") :]).get("model_cfg")
        self.model_cfg: dict[str, Any] = copy.deepcopy(model_cfg or {})
        self.preprocess_cfg: dict[str, Any] = dict(open_clip.get_model_preprocess_cfg(module))
        self.preprocess = preprocess_from_cfg(self.preprocess_cfg)
        if device is not None:
            self.to(device)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, *, spec: str | None = None, device: str | None = None) -> OpenCLIPModel:
        """Load a directory in open_clip's format (``open_clip_config.json`` + weights), e.g. one ``save`` wrote."""
        path = Path(path).expanduser()
        _check_dir(path)
        model = cls(f"local-dir:{path}", None, spec=spec or str(path), device=device)
        meta = json.loads((path / CONFIG_FILE).read_text()).get("cliplab") or {}
        geometry = meta.get("geometry", "cosine")
        if geometry not in GEOMETRIES:
            raise ValueError(
                f"{path / CONFIG_FILE}: unknown cliplab geometry {geometry!r}; expected one of {GEOMETRIES}"
            )
        model.geometry = geometry
        return model

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.module.encode_image(pixel_values)

    def text_embeddings(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module.encode_text(tokens["input_ids"])

    def token_embeddings(self) -> torch.nn.Module:
        emb = getattr(self.module, "token_embedding", None)
        if not isinstance(emb, torch.nn.Module):
            raise NotImplementedError(f"open_clip model {self.arch} has no token_embedding (e.g. a HF text tower)")
        return emb

    @property
    def has_token_embeddings(self) -> bool:
        return isinstance(getattr(self.module, "token_embedding", None), torch.nn.Module)

    @property
    def can_save(self) -> bool:
        """False only when the model config is unknown or open_clip picked the tokenizer by the architecture's
        name (SigLIP archs), which a saved directory cannot record."""
        return bool(self.model_cfg) and self._unsaveable_tokenizer() is None

    def _unsaveable_tokenizer(self) -> str | None:
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", None)
        if hasattr(hf_tokenizer, "save_pretrained") and "hf_tokenizer_name" not in self.model_cfg.get("text_cfg", {}):
            return type(self.tokenizer).__name__
        return None

    def save(self, directory: str | os.PathLike) -> None:
        """Write open_clip's directory format atomically: ``open_clip_model.safetensors`` (the state dict),
        ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg``, and cliplab's ``geometry``), and the
        tokenizer's files when it is a Hugging Face one (open_clip reads them from a ``local-dir:``)."""
        from safetensors.torch import save_file

        if not self.model_cfg:
            raise NotImplementedError(f"{self.spec}: the open_clip model config is unknown, so it cannot be saved")
        model_cfg = copy.deepcopy(self.model_cfg)
        bias = getattr(self.module, "logit_bias", None)
        if bias is not None and model_cfg.get("init_logit_bias") is None:
            model_cfg["init_logit_bias"] = float(bias.detach().reshape(-1)[0])  # so open_clip creates the parameter
        config = {
            "model_cfg": model_cfg,
            "preprocess_cfg": self.preprocess_cfg,
            "cliplab": {"geometry": self.geometry, "arch": self.arch},
        }
        unsaveable = self._unsaveable_tokenizer()
        if unsaveable is not None:
            raise NotImplementedError(
                f"{self.spec}: its tokenizer ({unsaveable}) is chosen by open_clip from the architecture's name, "
                "which a saved directory does not keep"
            )
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", None)
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.module.state_dict().items()}
        with atomic_dir(directory) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            (tmp / CONFIG_FILE).write_text(json.dumps(_jsonable(config), indent=2) + "\n")
            if hf_tokenizer is not None and hasattr(hf_tokenizer, "save_pretrained"):
                hf_tokenizer.save_pretrained(str(tmp))

    def _identity(self) -> dict[str, Any]:
        """The architecture (model config without its initial bias) and the tokenizer: not where it was loaded
        from, so a saved copy keys the feature cache like the original."""
        cfg = {k: v for k, v in self.model_cfg.items() if k != "init_logit_bias"}
        arch = json.dumps(_jsonable(cfg), sort_keys=True) if cfg else self.arch
        return {"open_clip": arch, "tokenizer": type(self.tokenizer).__name__}


def _looks_like_path(tag: str) -> bool:
    return os.sep in tag or "/" in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"open_clip model directory not found: {path}")
    cfg = path / CONFIG_FILE
    if not cfg.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}, so it is not an open_clip model directory")
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise ValueError(f"{cfg} has no 'model_cfg' mapping (open_clip's model config)")
