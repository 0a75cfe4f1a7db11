"""``convert``: open_clip ViT CLIP models ⇄ Hugging Face ``CLIPModel`` directories (weights, tokenizer, preprocessing).

The weights map one to one (``cliplab.interop.clip_layout``), so the converted model's features equal the source's
on the source's own preprocessing and tokens. The tokenizer: open_clip's OpenAI BPE (``SimpleTokenizer``) is
written as a ``CLIPTokenizer`` (``vocab.json`` + ``merges.txt``); a Hugging Face CLIP tokenizer with that vocabulary
becomes open_clip's default tokenizer again, any other is saved beside the weights (``hf_tokenizer_name``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

from cliplab._io import atomic_dir
from cliplab.imaging.preprocess import Preprocess
from cliplab.interop.clip_layout import (
    UnmappableModel,
    hf_to_open_clip_config,
    hf_to_open_clip_state,
    open_clip_to_hf_config,
    open_clip_to_hf_state,
)
from cliplab.models.base import Model

TARGETS = ("hf", "openclip")
_BICUBIC, _BILINEAR = 3, 2  # PIL resampling codes
#: CLIP's OpenAI BPE: 49408 tokens, start and end of text last (OpenAI's spelling, and open_clip's)
_OPENAI_SPECIALS = (
    {"<|startoftext|>": 49406, "<|endoftext|>": 49407},
    {"<start_of_text>": 49406, "<end_of_text>": 49407},
)


def convert(model: Model, to: str) -> Model:
    """``model`` (open_clip or Hugging Face CLIP) as a model of the other library, in memory.

    ``to="hf"`` gives an ``HFModel`` wrapping a ``CLIPModel``; ``to="openclip"`` an ``OpenCLIPModel`` (needs
    open_clip). Raises ``UnmappableModel`` listing what has no counterpart.
    """
    from cliplab.models.hf import HFModel
    from cliplab.models.openclip import OpenCLIPModel

    if to not in TARGETS:
        raise ValueError(f"unknown conversion target {to!r}; expected one of {TARGETS}")
    if to == "hf" and isinstance(model, OpenCLIPModel):
        return open_clip_to_hf(model)
    if to == "openclip" and isinstance(model, HFModel):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_open_clip_dir(model, Path(tmp) / "model")
            return OpenCLIPModel.from_dir(Path(tmp) / "model", spec=f"{model.spec} (as open_clip)", device="cpu")
    kind = type(model).__name__
    raise ValueError(f"cannot convert a {kind} to {to!r}: convert takes open_clip models to hf and HF CLIP to openclip")


def open_clip_to_hf(model: Any) -> Model:
    """An ``HFModel`` (``CLIPModel``) with ``model``'s weights, tokenizer and preprocessing."""
    from transformers import CLIPConfig, CLIPModel

    from cliplab.models.hf import HFModel

    if not model.model_cfg:
        raise UnmappableModel(model.spec, ["its open_clip model config is unknown"])
    kwargs = open_clip_to_hf_config(model.model_cfg)
    state = open_clip_to_hf_state(model.module.state_dict())
    tokenizer = hf_tokenizer_of(model.tokenizer, kwargs["text_config"]["max_position_embeddings"])
    text = kwargs["text_config"]
    text.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    text["eos_token_id"] = tokenizer.eos_token_id
    config = CLIPConfig(**kwargs)
    config.cliplab = {"geometry": model.geometry}
    if "logit_bias" in state:
        config.cliplab["logit_bias"] = float(state.pop("logit_bias").reshape(-1)[0])
    module = CLIPModel(config)
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise UnmappableModel(model.spec, [f"missing {missing[:5]}", f"unexpected {unexpected[:5]}"])
    return HFModel(module.float().eval(), tokenizer, model.preprocess, spec=f"{model.spec} (as hf)")


def hf_tokenizer_of(tokenizer: Any, context_length: int) -> Any:
    """A ``transformers`` tokenizer equivalent to an open_clip tokenizer (BPE vocabulary and merges kept)."""
    inner = getattr(tokenizer, "tokenizer", None)
    if hasattr(inner, "save_pretrained"):  # open_clip's HFTokenizer
        return inner
    encoder, ranks = getattr(tokenizer, "encoder", None), getattr(tokenizer, "bpe_ranks", None)
    if not isinstance(encoder, dict) or not isinstance(ranks, dict):
        raise UnmappableModel("this open_clip model", [f"tokenizer {type(tokenizer).__name__} (not a BPE one)"])
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps(encoder, ensure_ascii=False))
        pairs = [" ".join(p) for p, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
        merges.write_text("#version: 0.2\n" + "\n".join(pairs) + "\n")
        decoder = {v: k for k, v in encoder.items()}
        sot, eot = decoder[max(encoder.values()) - 1], decoder[max(encoder.values())]  # open_clip: last two ids
        specials = {"bos_token": sot, "eos_token": eot, "pad_token": eot, "unk_token": eot}
        out = CLIPTokenizer(str(vocab), str(merges), model_max_length=context_length, **specials)
    return out


def is_openai_bpe(tokenizer: Any) -> bool:
    """Whether a Hugging Face tokenizer is CLIP's OpenAI BPE (what open_clip uses by default)."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return False
    return len(vocab) == 49408 and any(all(vocab.get(k) == v for k, v in s.items()) for s in _OPENAI_SPECIALS)


def preprocess_cfg_of(preprocess: Preprocess) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg`` for a cliplab ``Preprocess`` (the inverse of ``preprocess_from_cfg``)."""
    if preprocess.keep_ratio or not isinstance(preprocess, Preprocess):
        raise UnmappableModel("this preprocessing", [f"{preprocess!r} has no open_clip preprocess_cfg"])
    interpolation = {_BICUBIC: "bicubic", _BILINEAR: "bilinear"}.get(int(preprocess.resample))
    if interpolation is None or abs(preprocess.rescale - 1 / 255) > 1e-12:
        raise UnmappableModel("this preprocessing", [f"resample {preprocess.resample} / rescale {preprocess.rescale}"])
    cfg: dict[str, Any] = {"mean": list(preprocess.mean), "std": list(preprocess.std), "interpolation": interpolation}
    resize, crop = preprocess.resize, preprocess.crop
    if crop is None and isinstance(resize, tuple):
        return {**cfg, "size": list(resize), "resize_mode": "squash"}
    if isinstance(resize, int) and crop is not None and crop[0] == crop[1] == resize:
        return {**cfg, "size": resize, "resize_mode": "shortest"}
    raise UnmappableModel("this preprocessing", [f"resize {resize} + crop {crop} (open_clip resizes to the crop)"])


def write_open_clip_dir(model: Any, directory: str | os.PathLike) -> Path:
    """Write ``model`` (an ``HFModel`` wrapping a ``CLIPModel``) in open_clip's directory format, atomically.

    ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg``) and ``open_clip_model.safetensors``, which
    ``open_clip.create_model_from_pretrained("local-dir:<dir>")`` loads; no open_clip needed to write it.
    """
    from safetensors.torch import save_file

    from cliplab.models.openclip import CONFIG_FILE, WEIGHTS_FILE

    config = model.module.config.to_dict()
    model_cfg = hf_to_open_clip_config(config)
    state = hf_to_open_clip_state(dict(model.module.state_dict()))
    bias = (config.get("cliplab") or {}).get("logit_bias")
    if bias is not None and "logit_bias" not in state:
        state["logit_bias"] = torch.tensor([float(bias)])
    if "logit_bias" in state:
        model_cfg["init_logit_bias"] = float(state["logit_bias"].reshape(-1)[0])
    openai = is_openai_bpe(model.tokenizer)
    if not openai:
        model_cfg["text_cfg"]["hf_tokenizer_name"] = "local-dir"  # open_clip reads the tokenizer from the directory
    out = {
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess_cfg_of(model.preprocess),
        "cliplab": {"geometry": model.geometry},
    }
    state = {k: v.detach().to("cpu", torch.float32, copy=True).contiguous() for k, v in state.items()}
    with atomic_dir(directory) as tmp:
        save_file(state, str(Path(tmp) / WEIGHTS_FILE), metadata={"format": "pt"})
        (Path(tmp) / CONFIG_FILE).write_text(json.dumps(out, indent=2) + "\n")
        if not openai:
            model.tokenizer.save_pretrained(str(tmp))
    return Path(directory)


def convert_dir(
    source: str | os.PathLike | Model,
    destination: str | os.PathLike,
    *,
    to: str,
    stretch_text: int | None = None,
    keep: int = 20,
    stretch_mode: str = "knowledge_preserved",
) -> dict[str, Any]:
    """Load ``source``, optionally stretch its text positions (``stretch_positions``), write ``destination`` in
    the ``to`` library's format; returns a summary. ``to`` may name the source's own library (stretch only)."""
    from cliplab.interop.long_text import stretch_positions
    from cliplab.models import load_model
    from cliplab.models.hf import HFModel
    from cliplab.models.openclip import OpenCLIPModel

    if to not in TARGETS:
        raise ValueError(f"--to must be one of {TARGETS}, got {to!r}")
    if not isinstance(source, Model):
        check_source_config(source, to)  # a model that cannot map is refused before its weights load
    model = source if isinstance(source, Model) else load_model(source, device="cpu")
    if not isinstance(model, HFModel | OpenCLIPModel):
        raise ValueError(f"{model.spec}: only Hugging Face and open_clip models convert, not {type(model).__name__}")
    if stretch_text is not None:
        stretch_positions(model, stretch_text, keep=keep, mode=stretch_mode)
    diff: float | None = None
    if to == "hf":
        out = open_clip_to_hf(model) if isinstance(model, OpenCLIPModel) else model
        if out is not model:
            diff = feature_difference(model, out)
        out.save(destination)
    elif isinstance(model, HFModel):
        write_open_clip_dir(model, destination)
        if importlib.util.find_spec("open_clip") is not None:
            diff = feature_difference(model, OpenCLIPModel.from_dir(destination, device="cpu"))
    else:
        model.save(destination)
    return {
        "source": model.spec,
        "destination": str(destination),
        "to": to,
        "text_positions": stretch_text,
        "stretch_mode": stretch_mode if stretch_text else None,
        "max_abs_feature_diff": diff,
    }


def feature_difference(source: Model, converted: Model, texts: tuple[str, ...] = ("a photo of a dog", "x")) -> float:
    """``max |f_source − f_converted|`` over the raw image and text embeddings of two random images and ``texts``,
    both models fed the source's own pixels and tokens."""
    size = source.preprocess.output_size or (224, 224)
    px = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    tokens = source.tokenize(list(texts))
    with torch.no_grad():
        image = (source.image_embeddings(px) - converted.image_embeddings(px)).abs().max()
        ids = tokens["input_ids"]
        width = int(converted.tokenize(["a"])["input_ids"].shape[1])
        if ids.shape[1] < width and getattr(converted, "padding", None) is None:  # open_clip: exactly its length
            ids = torch.nn.functional.pad(ids, (0, width - ids.shape[1]))  # after the end of text: never attended
        text = (source.text_embeddings(tokens) - converted.text_embeddings({"input_ids": ids})).abs().max()
    return float(max(image, text))


def check_source_config(source: str | os.PathLike, to: str) -> None:
    """Refuse an unmappable local model directory from its config file alone (nothing loaded)."""
    path = Path(str(source).removeprefix("local:")).expanduser()
    if not path.is_dir():
        return
    from cliplab.interop.clip_layout import hf_problems, open_clip_problems

    if to == "openclip" and (path / "config.json").is_file():
        problems = hf_problems(json.loads((path / "config.json").read_text()))
    elif to == "hf" and (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file():
        problems = open_clip_problems(json.loads((path / "open_clip_config.json").read_text()).get("model_cfg") or {})
    else:
        return
    if problems:
        raise UnmappableModel(str(path), problems)
