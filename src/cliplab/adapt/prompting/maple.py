"""MaPLe (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023): deep prompts in both towers.

Text: the first ``n_ctx`` tokens of ``ctx_init`` are learned (layer 0), and at each layer ``j = 1 … J−1`` the
hidden states at those positions are replaced by new learned prompts ``P_j``. Vision: the prompts are
coupled from language to vision, ``P̃_j = Linear_j(P_j)`` (``P̃_0 = Linear_0(ctx)``): ``P̃_0`` is appended to the
patch + position embeddings (before the pre-LN) and ``P̃_j`` replaces those tokens at layer ``j``. Only the
prompts and the coupling layers are trained (SGD lr 0.0035, batch 4, 5 epochs, J = 9, n_ctx = 2 in the
reference; J is capped at the shallower tower). ViT image towers only; it needs images, not cached features.
With ``n_ctx=0`` nothing is inserted and the model is the plain model with the ``ctx_init`` template.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
from torch import nn

from cliplab.adapt.prompting.learner import SIZE, PromptLearner
from cliplab.adapt.prompting.text_prompts import PromptedText
from cliplab.adapt.prompting.towers import Edit, Towers, editing_inputs, editing_output, find_towers
from cliplab.models.base import Model


class MultiModalPrompt(nn.Module):
    """Text context, deep text prompts ``[J−1, M, d_t]`` and the language→vision coupling layers."""

    def __init__(self, text: PromptedText, towers: Towers, depth: int, seed: int = 0):
        super().__init__()
        self.text = text
        self.towers = towers
        self.depth = depth
        m = text.n_ctx
        gen = torch.Generator().manual_seed(seed + 1)
        self.deep_text = nn.Parameter(torch.randn(max(depth - 1, 0), m, towers.text_width, generator=gen) * 0.02)
        self.proj = nn.ModuleList([nn.Linear(towers.text_width, towers.vision_width) for _ in range(depth)])

    def text_features(self) -> torch.Tensor:
        slots = self.text.layout.slots
        edits: list[tuple[nn.Module, Edit, bool]] = []
        for j in range(1, self.depth):
            prompt = self.deep_text[j - 1]

            def edit(h: torch.Tensor, prompt: torch.Tensor = prompt) -> torch.Tensor:
                from cliplab.adapt.prompting.text_prompts import scatter_context

                return scatter_context(h, slots, prompt[None].expand(h.shape[0], -1, -1))

            edits.append((self.towers.text_layers[j], edit, self.towers.text_batch_first))
        return self.text(extra=editing_inputs(edits) if edits else None)

    def vision_prompts(self) -> list[torch.Tensor]:
        ctx = self.text.ctx if not self.text.class_specific else self.text.ctx.mean(0)
        return [self.proj[0](ctx), *(self.proj[j](self.deep_text[j - 1]) for j in range(1, self.depth))]

    def image_features(self, model: Model, pixels: torch.Tensor) -> torch.Tensor:
        m = self.text.n_ctx
        if m == 0 or self.depth == 0:
            return model.image_features(pixels)
        prompts = self.vision_prompts()

        def append(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, prompts[0][None].expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)

        edits: list[tuple[nn.Module, Edit, bool]] = []
        for j in range(1, self.depth):

            def replace(x: torch.Tensor, p: torch.Tensor = prompts[j]) -> torch.Tensor:
                return torch.cat([x[:, :-m], p[None].expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)

            edits.append((self.towers.vision_layers[j], replace, self.towers.vision_batch_first))
        entry, kind = self.towers.vision_entry
        enter = editing_output(entry, append) if kind == "output" else editing_inputs([(entry, append, True)])
        with enter, editing_inputs(edits) if edits else contextlib.nullcontext():
            return model.image_features(pixels)


class MaPLe(PromptLearner):
    """Multi-modal prompt learning (see the module docstring); ``fit`` and ``logits`` take images."""

    method = "MaPLe"
    prompt_: MultiModalPrompt
    needs_pixels = True
    _constraints: ClassVar[dict[str, Any]] = {**PromptLearner._constraints, "prompt_depth": SIZE}

    def __init__(
        self,
        n_ctx: int | None = 2,
        ctx_init: str | None = "a photo of a",
        prompt_depth: int = 9,
        class_token_position: str = "end",
        epochs: int = 5,
        batch_size: int = 4,
        lr: float = 0.0035,
        eval_every: int = 1,
        seed: int = 0,
    ) -> None:
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.prompt_depth = prompt_depth
        self.class_token_position = class_token_position
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.eval_every = eval_every
        self.seed = seed

    def _make_prompt(self, model: Model, classnames: list[str]) -> MultiModalPrompt:
        towers = find_towers(model, self.method)
        text = PromptedText(
            model,
            classnames,
            n_ctx=self.n_ctx,
            ctx_init=self.ctx_init,
            position=self.class_token_position,
            method=self.method,
            seed=self.seed,
        )
        depth = min(self.prompt_depth, len(towers.text_layers), len(towers.vision_layers))
        self.depth_ = depth
        return MultiModalPrompt(text, towers, depth, seed=self.seed)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model_.logits(self.prompt_.image_features(self.model_, x), self.prompt_.text_features())

    def logits(self, x: object, *, batch_size: int = 64) -> torch.Tensor:
        return super().logits(x, batch_size=batch_size)
