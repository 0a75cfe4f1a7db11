"""TPT (Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization in Vision-Language Models", NeurIPS 2022).

For each test image: the original plus ``n_views − 1`` random resized crops (with horizontal flips) are
encoded by the frozen image tower; the ``selection`` fraction of views with the lowest prediction entropy is
kept; one AdamW step (lr 5e-3) on the context minimises the entropy of their averaged prediction
``p̄ = mean_v softmax(z_v)`` (computed as ``log p̄ = logsumexp_v log softmax(z_v) − log V``); the image is then
predicted with the updated prompt, and the context and the optimizer are reset before the next image, so
every image is predicted independently of the others. Defaults: 63 views + the original, 10 %, the prompt
"a photo of a" (as in the reference on ImageNet).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from cliplab.adapt.prompting.learner import POSITIVE, SIZE, PromptLearner, as_pixels
from cliplab.adapt.prompting.text_prompts import PromptedText
from cliplab.data.augment import RandomResizedCrop
from cliplab.models.base import Model


def _fraction(value: Any, name: str) -> None:
    if not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def augmented_views(pixels: torch.Tensor, n: int, rng: np.random.Generator, scale: tuple[float, float]) -> torch.Tensor:
    """``[n, 3, H, W]``: the image itself, then ``n − 1`` random resized crops of it (flipped with p = 0.5)."""
    _, h, w = pixels.shape
    crop = RandomResizedCrop(size=(h, w), scale=scale)
    views = [pixels]
    for _ in range(n - 1):
        left, top, cw, ch = crop.box(w, h, rng)
        v = pixels[:, top : top + ch, left : left + cw][None]
        v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)[0]
        if rng.random() < 0.5:
            v = v.flip(-1)
        views.append(v)
    return torch.stack(views)


def average_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``mean_v softmax(logits_v)`` (``logits [V, C]``)."""
    logp = F.log_softmax(logits, dim=-1)
    avg = torch.logsumexp(logp, dim=0) - math.log(logits.shape[0])
    return -(avg.exp() * avg).sum()


class TPT(PromptLearner):
    """Test-time prompt tuning (see the module docstring). ``fit`` builds the prompts; ``logits`` takes images."""

    method = "TPT"
    _constraints: ClassVar[dict[str, Any]] = {
        "n_ctx": PromptLearner._constraints["n_ctx"],
        "ctx_init": PromptLearner._constraints["ctx_init"],
        "n_views": SIZE,
        "selection": _fraction,
        "lr": POSITIVE,
        "steps": SIZE,
        "seed": PromptLearner._constraints["seed"],
    }

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = "a photo of a",
        n_views: int = 64,
        selection: float = 0.1,
        lr: float = 5e-3,
        steps: int = 1,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        seed: int = 0,
    ) -> None:
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.n_views = n_views
        self.selection = selection
        self.lr = lr
        self.steps = steps
        self.crop_scale = crop_scale
        self.seed = seed

    def fit(self, model: Model, support: Any = None, labels: Any = None, classnames: Any = None, **_: Any) -> Self:
        """Build the class prompts (TPT needs no training data; ``support`` only supplies class names)."""
        self._validate_params()
        if not isinstance(model, Model):
            raise TypeError(f"TPT needs a cliplab Model as its first argument, got {type(model).__name__}")
        classnames = list(getattr(support, "classnames", None) or []) if classnames is None else list(classnames)
        if not classnames:
            raise ValueError("TPT needs the class names")
        self.model_, self.classnames_, self.n_classes_ = model, classnames, len(classnames)
        self.prompt_ = PromptedText(
            model,
            classnames,
            n_ctx=None if self.ctx_init else self.n_ctx,
            ctx_init=self.ctx_init,
            method=self.method,
            seed=self.seed,
        ).to(model.device)
        self.initial_ctx_ = self.prompt_.ctx.detach().clone()
        return self

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        return {}

    def for_classes(self, classnames: Any) -> Self:
        return type(self)(**self.get_params()).fit(self.model_, None, None, list(classnames))

    def _tune_and_predict(self, views: torch.Tensor) -> torch.Tensor:
        ctx = self.prompt_.ctx
        opt = torch.optim.AdamW([ctx], lr=self.lr)
        with torch.no_grad():
            f = self.model_.image_features(views)
        keep = max(1, int(views.shape[0] * self.selection))
        for _ in range(self.steps):
            z = self.model_.logits(f, self.prompt_())
            ent = -(F.softmax(z, 1) * F.log_softmax(z, 1)).sum(1)
            idx = torch.argsort(ent.detach())[:keep]
            loss = average_entropy(z[idx])
            (g,) = torch.autograd.grad(loss, [ctx])
            ctx.grad = g
            opt.step()
        with torch.no_grad():
            out = self.model_.logits(f[:1], self.prompt_())[0]
            ctx.copy_(self.initial_ctx_)  # reset: the next image starts from the same prompt
        ctx.grad = None
        return out

    def logits(self, x: Any, *, progress: bool = False, **_: Any) -> torch.Tensor:
        """Per image: tune the prompt on its views, predict, reset. ``x``: images (pixels, Dataset, list)."""
        self._check_fitted()
        px = as_pixels(self.model_, x, "TPT (test images)")
        out = []
        with self._frozen():
            for i in tqdm(range(len(px)), disable=not progress, desc="TPT", unit="image"):
                rng = np.random.default_rng([self.seed, i])  # image i's views do not depend on the others
                views = augmented_views(px[i], self.n_views, rng, tuple(self.crop_scale)).to(self.model_.device)
                out.append(self._tune_and_predict(views).float().cpu())
        return torch.stack(out)

    def zeroshot_logits(self, x: Any) -> torch.Tensor:
        """Logits with the initial prompt (no tuning), for comparison."""
        self._check_fitted()
        px = as_pixels(self.model_, x, "TPT (test images)").to(self.model_.device)
        with torch.no_grad(), self._frozen():
            return self.model_.logits(self.model_.image_features(px), self.prompt_()).float().cpu()
