"""TPT (Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization in Vision-Language Models", NeurIPS 2022).

For each test image: the original plus ``n_views − 1`` augmented views (``tpt_views.TPTViews``: random
resized crops of the original image, scale (0.08, 1), flipped with p = 1/2, and AugMix on top for data other
than ImageNet, as in the reference azshue/TPT) are encoded by the frozen image tower; the ``selection``
fraction of views with the lowest prediction entropy is kept (chosen at the first step, as in the reference);
each of ``steps`` AdamW steps (lr 5e-3) on the context minimises the entropy of their averaged prediction
``p̄ = mean_v softmax(z_v)`` (computed as ``log p̄ = logsumexp_v log softmax(z_v) − log V``); the image is then
predicted with the updated prompt, and the context and the optimizer are reset before the next image, so
every image is predicted independently of the others. Defaults: 63 views + the original, 10 %, the prompt
"a photo of a" (as in the reference on ImageNet).

``fit(model, classnames=..., init=coop)`` starts from a learned CoOp context instead (the paper's
"CoOp + TPT", the reference's ``--load``): the prompt is the fitted CoOp's and every image is reset to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from cliplab.adapt.prompting.learner import COUNT, POSITIVE, SIZE, PromptLearner, as_pixels
from cliplab.adapt.prompting.text_prompts import PromptedText
from cliplab.adapt.prompting.tpt_views import TPTViews, uses_augmix
from cliplab.models.base import Model

if TYPE_CHECKING:
    from cliplab.adapt.prompting.coop import CoOp


def _fraction(value: Any, name: str) -> None:
    if not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _scale(value: Any, name: str) -> None:
    ok = isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
    if not ok or not 0 < value[0] <= value[1] <= 1:
        raise ValueError(f"{name} must be a pair (min, max) with 0 < min <= max <= 1, got {value!r}")


def _optional_bool(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be True, False or None (the reference's rule), got {value!r}")


def prompt_from(init: Any, model: Model, classnames: list[str]) -> PromptedText:
    """A copy of a fitted CoOp's (or KgCoOp's, ProGrad's) prompt module over ``classnames`` (moved onto them
    with ``for_classes`` when they differ from the classes it was fitted on)."""
    from cliplab.adapt.prompting.coop import CoOp

    if not isinstance(init, CoOp):
        raise TypeError(f"TPT's init must be a fitted CoOp (or KgCoOp / ProGrad), got {type(init).__name__}")
    init._check_fitted()
    if init.model_ is not model and init.model_.fingerprint() != model.fingerprint():
        raise ValueError("TPT's init was fitted on another model than the one TPT is given")
    src = init if list(init.classnames_) == list(classnames) else init.for_classes(classnames)
    prompt = src._make_prompt(model, list(classnames))
    prompt.load_state_dict(src.prompt_.state_dict())
    return prompt


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
        "steps": COUNT,
        "crop_scale": _scale,
        "augmix": _optional_bool,
        "seed": PromptLearner._constraints["seed"],
    }
    #: the protocol hands TPT the test images (a Dataset), not cached features or preprocessed pixels
    predicts_on_images: ClassVar[bool] = True
    prompt_: PromptedText

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = "a photo of a",
        n_views: int = 64,
        selection: float = 0.1,
        lr: float = 5e-3,
        steps: int = 1,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        augmix: bool | None = None,
        seed: int = 0,
    ) -> None:
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.n_views = n_views
        self.selection = selection
        self.lr = lr
        self.steps = steps
        self.crop_scale = crop_scale
        self.augmix = augmix
        self.seed = seed

    def fit(
        self,
        model: Model,
        support: Any = None,
        labels: Any = None,
        classnames: Any = None,
        *,
        init: CoOp | None = None,
        **_: Any,
    ) -> Self:
        """Build the class prompts (TPT needs no training data; ``support`` only supplies class names).

        ``init``: a fitted CoOp whose learned prompt TPT starts from (and resets to); ``n_ctx``/``ctx_init``
        are then unused."""
        self._validate_params()
        if not isinstance(model, Model):
            raise TypeError(f"TPT needs a cliplab Model as its first argument, got {type(model).__name__}")
        if classnames is None:
            classnames = getattr(support, "classnames", None) or getattr(init, "classnames_", None) or []
        classnames = list(classnames)
        if not classnames:
            raise ValueError("TPT needs the class names")
        self.model_, self.classnames_, self.n_classes_ = model, classnames, len(classnames)
        self.init_ = init
        if init is not None:
            self.prompt_ = prompt_from(init, model, classnames).to(model.device)
            self.initial_ctx_ = self.prompt_.ctx.detach().clone()
            return self
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
        self._check_fitted()
        return type(self)(**self.get_params()).fit(self.model_, None, None, list(classnames), init=self.init_)

    def _tune_and_predict(self, views: torch.Tensor) -> torch.Tensor:
        ctx = self.prompt_.ctx
        opt = torch.optim.AdamW([ctx], lr=self.lr)
        with torch.no_grad():
            f = self.model_.image_features(views)
        keep = max(1, int(views.shape[0] * self.selection))
        idx = None
        for _ in range(self.steps):
            z = self.model_.logits(f, self.prompt_())
            if idx is None:  # the confident views are chosen once, at the first step (as the reference)
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

    def views(self, x: Any) -> tuple[list[Any], TPTViews]:
        """The per-image sources (PIL images / paths, or preprocessed pixels) and the view maker for ``x``."""
        from cliplab.data.base import Dataset

        n = self.n_views if self.steps else 1  # no step: only the image itself is predicted
        lo, hi = self.crop_scale  # a pair (checked by the constraint)
        maker = TPTViews(n, (lo, hi), uses_augmix(self.augmix, x))
        if isinstance(x, Dataset):
            return [x.image(i) for i in range(len(x))], maker
        if isinstance(x, Sequence) and not isinstance(x, str | torch.Tensor):
            return list(x), maker
        return list(as_pixels(self.model_, x, "TPT (test images)")), maker

    def logits(self, x: Any, *, progress: bool = False, **_: Any) -> torch.Tensor:
        """Per image: tune the prompt on its views, predict, reset. ``x``: a Dataset or a list of images (views
        from the original images), or a pixel batch (views from the preprocessed images)."""
        self._check_fitted()
        images, maker = self.views(x)
        self.augmix_used_ = maker.augmix
        out = []
        with self._frozen():
            for i in tqdm(range(len(images)), disable=not progress, desc="TPT", unit="image"):
                rng = np.random.default_rng([self.seed, i])  # image i's views do not depend on the others
                views = maker(images[i], self.model_.preprocess, rng).to(self.model_.device)
                out.append(self._tune_and_predict(views).float().cpu())
        return torch.stack(out)

    def zeroshot_logits(self, x: Any) -> torch.Tensor:
        """Logits with the initial prompt (no tuning), for comparison."""
        self._check_fitted()
        px = as_pixels(self.model_, x, "TPT (test images)").to(self.model_.device)
        with torch.no_grad(), self._frozen():
            return self.model_.logits(self.model_.image_features(px), self.prompt_()).float().cpu()
