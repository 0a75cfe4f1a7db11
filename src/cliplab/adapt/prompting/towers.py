"""Where deep prompts go in each tower family, found from the modules a model has (never from its name).

A :class:`Towers` names the text tower's transformer layers, the vision tower's layers and the point where
extra vision tokens are appended (after the patch + position embeddings, before the pre-LN, as MaPLe does).
Supported: Hugging Face CLIP-style models (``text_model.encoder.layers``, ``vision_model.embeddings`` with a
class token, ``vision_model.encoder.layers``) and open_clip ``CLIP`` models (``transformer.resblocks``,
``visual.ln_pre``, ``visual.transformer.resblocks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cliplab.models.base import Model

#: replace(hidden [B, T, d]) -> hidden
Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Towers:
    text_layers: list[nn.Module]
    vision_layers: list[nn.Module]
    #: (module, kind): "output" = append to this module's output, "input" = to its first input
    vision_entry: tuple[nn.Module, str]
    text_width: int
    vision_width: int
    #: open_clip transformers may run sequence-first ([T, B, d]); HF is always batch-first
    text_batch_first: bool = True
    vision_batch_first: bool = True


def find_towers(model: Model, method: str) -> Towers:
    """The deep-prompt sites of ``model``, or a ``ValueError`` saying which module is missing."""
    m = model.module
    text_model, vision_model = getattr(m, "text_model", None), getattr(m, "vision_model", None)
    if text_model is not None and vision_model is not None:
        layers = getattr(getattr(text_model, "encoder", None), "layers", None)
        v_layers = getattr(getattr(vision_model, "encoder", None), "layers", None)
        emb = getattr(vision_model, "embeddings", None)
        if layers is None or v_layers is None or emb is None:
            raise ValueError(f"{method} needs transformer towers (encoder.layers) in both towers of {type(m).__name__}")
        if not isinstance(getattr(emb, "class_embedding", None), torch.Tensor):
            raise ValueError(f"{method} needs a ViT image tower with a class token; {type(emb).__name__} has none")
        return Towers(
            list(layers),
            list(v_layers),
            (emb, "output"),
            int(text_model.config.hidden_size),
            int(vision_model.config.hidden_size),
        )
    visual = getattr(m, "visual", None)
    transformer, v_transformer = getattr(m, "transformer", None), getattr(visual, "transformer", None)
    resblocks = getattr(transformer, "resblocks", None)
    v_blocks = getattr(v_transformer, "resblocks", None)
    ln_pre = getattr(visual, "ln_pre", None)
    if (
        transformer is not None
        and v_transformer is not None
        and resblocks is not None
        and v_blocks is not None
        and isinstance(ln_pre, nn.Module)
    ):
        return Towers(
            list(resblocks),
            list(v_blocks),
            (ln_pre, "input"),
            int(transformer.width),
            int(v_transformer.width),
            bool(getattr(transformer, "batch_first", True)),
            bool(getattr(v_transformer, "batch_first", True)),
        )
    raise ValueError(
        f"{method} needs a ViT image tower and a transformer text tower it can reach (Hugging Face CLIP-style "
        f"text_model/vision_model, or open_clip transformer/visual.transformer); {type(m).__name__} has neither"
    )


@contextlib.contextmanager
def editing_inputs(edits: list[tuple[nn.Module, Edit, bool]]) -> Iterator[None]:
    """While active, the first input of each module is replaced by ``edit(x)`` (``[B, T, d]`` view)."""
    handles = []
    for module, edit, batch_first in edits:

        def hook(_m: nn.Module, args: tuple, kwargs: dict, edit: Edit = edit, bf: bool = batch_first) -> tuple:
            x = args[0] if args else kwargs["hidden_states"]
            x = edit(x) if bf else edit(x.transpose(0, 1)).transpose(0, 1)
            if args:
                return (x, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": x}

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def editing_output(module: nn.Module, edit: Edit) -> Iterator[None]:
    handle = module.register_forward_hook(lambda _m, _i, out: edit(out))
    try:
        yield
    finally:
        handle.remove()
