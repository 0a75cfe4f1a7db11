"""CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022).

A meta-network ``π = h(f)`` (Linear d→d/16, ReLU, Linear d/16→d_ctx) maps each image's feature to a shift
added to every context vector: ``ctx_m(f) = ctx_m + π(f)``, so each image has its own class prompts and
``z_c(f) = s · f·t(ctx(f), c)``. The image tower stays frozen, so it trains on cached features: a step is
one text forward over B×C prompts. Defaults follow the reference (4 context tokens from "a photo of a",
batch 1, SGD lr 0.002, 10 epochs).
"""

from __future__ import annotations

import torch
from torch import nn

from cliplab.adapt.prompting.learner import PromptLearner, pair_logits
from cliplab.adapt.prompting.text_prompts import PromptedText
from cliplab.models.base import Model


class MetaNet(nn.Module):
    """``Linear(d_in, max(1, d_in // 16)) → ReLU → Linear(·, d_ctx)``."""

    def __init__(self, d_in: int, d_ctx: int):
        super().__init__()
        hidden = max(1, d_in // 16)
        self.linear1 = nn.Linear(d_in, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(hidden, d_ctx)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(f)))


class ConditionalPrompt(nn.Module):
    def __init__(self, text: PromptedText, d_image: int):
        super().__init__()
        self.text = text
        self.meta_net = MetaNet(d_image, text.ctx_dim)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image class text features ``[B, C, D]``."""
        return self.text(self.meta_net(image_features))


class CoCoOp(PromptLearner):
    """Conditional context: ``ctx + meta_net(f)`` per image (see the module docstring)."""

    method = "CoCoOp"
    prompt_: ConditionalPrompt

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = "a photo of a",
        class_token_position: str = "end",
        class_specific: bool = False,
        epochs: int = 10,
        batch_size: int = 1,
        lr: float = 0.002,
        eval_every: int = 1,
        seed: int = 0,
    ) -> None:
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.class_token_position = class_token_position
        self.class_specific = class_specific
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.eval_every = eval_every
        self.seed = seed

    def _make_prompt(self, model: Model, classnames: list[str]) -> ConditionalPrompt:
        text = PromptedText(
            model,
            classnames,
            n_ctx=None if self.ctx_init else self.n_ctx,
            ctx_init=self.ctx_init,
            position=self.class_token_position,
            class_specific=self.class_specific,
            method=self.method,
            seed=self.seed,
        )
        return ConditionalPrompt(text, self.dim_)

    def meta_shift(self, features: torch.Tensor) -> torch.Tensor:
        """``π(f)`` ``[B, d_ctx]``: the shift the meta-net adds to the context for each image."""
        self._check_fitted()
        with torch.no_grad():
            return self.prompt_.meta_net(features.to(self.model_.device)).cpu()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return pair_logits(self.model_, x, self.prompt_(x))

    def logits(self, x: object, *, batch_size: int = 32) -> torch.Tensor:
        return super().logits(x, batch_size=batch_size)
