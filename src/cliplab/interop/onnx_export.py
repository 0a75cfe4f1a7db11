"""``export_onnx``: a model's image and text encoders as two ONNX graphs with a dynamic batch axis.

Each graph gives the raw projected embeddings (``Model.image_embeddings`` / ``text_embeddings``); the runtime
(``cliplab.models.onnx_runtime``, ``onnx:DIR``) applies the geometry's normalisation, the exported preprocessing
recipe and the tokenizer, so its features equal cliplab's. Exported with the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``); ``fp16`` then stores every float32 weight as float16 with a ``Cast``
back to float32 in front of its use (``half_weights``): half the file size, float32 arithmetic (onnxruntime's CPU
provider lacks float16 kernels for most operators), inputs and outputs float32.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cliplab._io import atomic_dir
from cliplab.imaging.preprocess import PatchPreprocess, Preprocess
from cliplab.models.base import Model
from cliplab.models.onnx_runtime import FORMAT_VERSION, IMAGE_FILE, MANIFEST, TEXT_FILE

OPSET = 17
FORMATS = ("onnx",)


class _ImageTower(nn.Module):
    def __init__(self, model: Model):
        super().__init__()
        self.model, self.module = model, model.module

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.image_embeddings(pixel_values)


class _TextTower(nn.Module):
    def __init__(self, model: Model, names: list[str]):
        super().__init__()
        self.model, self.module, self.names = model, model.module, names

    def forward(self, *tokens: torch.Tensor) -> torch.Tensor:
        return self.model.text_embeddings(dict(zip(self.names, tokens)))


def _tokenizer_of(model: Model) -> tuple[Any, str, int, list[str]]:
    """The Hugging Face tokenizer to ship, its padding, max length, and the text graph's input names."""
    from cliplab.models.hf import HFModel
    from cliplab.models.openclip import OpenCLIPModel

    if isinstance(model, HFModel):
        return model.tokenizer, model.padding or "longest", int(model.max_length or 77), ["input_ids", "attention_mask"]
    if isinstance(model, OpenCLIPModel):
        from cliplab.interop.conversion import hf_tokenizer_of

        length = int(model.tokenize(["a"])["input_ids"].shape[1])
        return hf_tokenizer_of(model.tokenizer, length), "max_length", length, ["input_ids"]
    raise ValueError(f"{model.spec}: ONNX export handles Hugging Face and open_clip models, not {type(model).__name__}")


def half_weights(path: Path) -> None:
    """Rewrite the ONNX file at ``path`` with its float32 initializers stored as float16, each cast back to float32
    by a ``Cast`` node at the start of the graph (needs the ``onnx`` package)."""
    try:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise ImportError(
            f"--fp16 export needs the onnx package: pip install onnx (or 'cliplab[onnx]') ({err})"
        ) from err
    model = onnx.load(str(path))
    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(model: Model, directory: str | os.PathLike, *, fp16: bool = False, opset: int = OPSET) -> dict:
    """Write ``model``'s encoders, tokenizer and preprocessing to ``directory`` (atomically); return the manifest."""
    if isinstance(model.preprocess, PatchPreprocess) or not isinstance(model.preprocess, Preprocess):
        raise ValueError(f"{model.spec}: patch-sequence (NaFlex) inputs cannot be exported to ONNX yet")
    size = model.preprocess.output_size
    if size is None:
        raise ValueError(f"{model.spec}: its preprocessing has no fixed output size, so the image graph has no shape")
    tokenizer, padding, max_length, names = _tokenizer_of(model)
    work = copy.copy(model)
    # gradients on while tracing: under no_grad nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which has no ONNX export
    work.module = copy.deepcopy(model.module).to("cpu", torch.float32).eval().requires_grad_(True)
    pixels = torch.zeros(2, 3, *size)
    texts = ["a photo", "a photo of something"]
    if padding == "longest":
        texts[1] = " ".join(["a photo"] * max(1, max_length // 4))
    tokens = model.tokenize(texts)
    token_inputs = tuple(tokens[k].cpu() for k in names)
    seq_axis = {1: "sequence"} if padding == "longest" else {}
    manifest = {
        "format": FORMAT_VERSION,
        "source": model.spec,
        "geometry": model.geometry,
        "logit_scale": model.logit_scale,
        "logit_bias": model.logit_bias,
        "dtype": "float16" if fp16 else "float32",
        "preprocess": {k: v for k, v in dataclasses.asdict(model.preprocess).items() if k != "extra"},
        "max_length": max_length,
        "padding": padding,
        "text_inputs": names,
        "opset": opset,
    }
    with atomic_dir(directory) as tmp, torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python control flow on shapes
        torch.onnx.export(
            _ImageTower(work),
            (pixels,),
            str(Path(tmp) / IMAGE_FILE),
            input_names=["pixel_values"],
            output_names=["image_embeddings"],
            dynamic_axes={"pixel_values": {0: "batch"}, "image_embeddings": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        torch.onnx.export(
            _TextTower(work, names),
            token_inputs,
            str(Path(tmp) / TEXT_FILE),
            input_names=names,
            output_names=["text_embeddings"],
            dynamic_axes={**{k: {0: "batch", **seq_axis} for k in names}, "text_embeddings": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        if fp16:
            for name in (IMAGE_FILE, TEXT_FILE):
                half_weights(Path(tmp) / name)
        tokenizer.save_pretrained(str(tmp))
        (Path(tmp) / "preprocessor_config.json").write_text(json.dumps(model.preprocess.to_hf_config(), indent=2))
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
