"""CoOp + TPT (Shu et al., NeurIPS 2022, Table 2's "CoOp + TPT" row): test-time prompt tuning started from a
context learned by CoOp on the few-shot support set (the reference's ``tpt_classification.py --load``).

``fit`` trains CoOp exactly as the ``coop`` method does (cached features, validation-selected epoch; the
protocol's learning-rate search applies to CoOp's ``lr``), then builds a ``TPT`` whose prompt is the learned
one; ``logits`` runs TPT on each test image from that prompt (views, entropy step, predict, reset to the
learned context). ``coop_logits`` gives CoOp's own prediction (``tpt_steps=0`` gives it too).
Registered as the prompt method ``coop_tpt``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import torch

from cliplab.adapt.prompting.coop import CoOp
from cliplab.adapt.prompting.learner import COUNT, POSITIVE, SIZE, PromptLearner
from cliplab.adapt.prompting.protocol import register_prompt_method
from cliplab.adapt.prompting.tpt import TPT
from cliplab.models.base import Model

_TPT_PARAMS = {"n_views": "n_views", "selection": "selection", "tpt_lr": "lr", "tpt_steps": "steps"}


class CoOpTPT(PromptLearner):
    """CoOp trained on the support set, then TPT per test image from its context (see the module docstring)."""

    method = "CoOp+TPT"
    #: the protocol hands the test images (a Dataset) to ``logits``; ``fit`` takes cached features
    predicts_on_images: ClassVar[bool] = True
    _constraints: ClassVar[dict[str, Any]] = {
        **CoOp._constraints,
        "n_views": SIZE,
        "selection": TPT._constraints["selection"],
        "tpt_lr": POSITIVE,
        "tpt_steps": COUNT,
        "crop_scale": TPT._constraints["crop_scale"],
        "augmix": TPT._constraints["augmix"],
    }

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = None,
        class_token_position: str = "end",
        class_specific: bool = False,
        epochs: int = 200,
        batch_size: int = 32,
        lr: float = 0.002,
        eval_every: int = 10,
        seed: int = 0,
        n_views: int = 64,
        selection: float = 0.1,
        tpt_lr: float = 5e-3,
        tpt_steps: int = 1,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        augmix: bool | None = None,
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
        self.n_views = n_views
        self.selection = selection
        self.tpt_lr = tpt_lr
        self.tpt_steps = tpt_steps
        self.crop_scale = crop_scale
        self.augmix = augmix

    def _coop(self) -> CoOp:
        return CoOp(**{k: getattr(self, k) for k in CoOp._param_names()})

    def _tpt(self, coop: CoOp) -> TPT:
        kw = {ours: getattr(self, mine) for mine, ours in _TPT_PARAMS.items()}
        tpt = TPT(**kw, crop_scale=self.crop_scale, augmix=self.augmix, seed=self.seed)
        return tpt.fit(coop.model_, None, None, coop.classnames_, init=coop)

    def fit(
        self,
        model: Model,
        support: Any,
        labels: Any = None,
        classnames: Sequence[str] | None = None,
        *,
        val: Any = None,
        val_labels: Any = None,
        progress: bool = False,
    ) -> Self:
        """Train CoOp on ``support`` (features, pixels or a Dataset) and prepare TPT from its prompt."""
        self._validate_params()
        self.coop_ = self._coop().fit(
            model, support, labels, classnames, val=val, val_labels=val_labels, progress=progress
        )
        self.tpt_ = self._tpt(self.coop_)
        self.model_, self.classnames_, self.n_classes_ = model, self.coop_.classnames_, self.coop_.n_classes_
        self.prompt_ = self.coop_.prompt_
        self.history_ = self.coop_.history_
        if hasattr(self.coop_, "val_accuracy_"):
            self.val_accuracy_ = self.coop_.val_accuracy_
        return self

    def logits(self, x: Any, *, progress: bool = False, **_: Any) -> torch.Tensor:
        """TPT from the learned context on each image of ``x`` (a Dataset, a list of images or a pixel batch)."""
        self._check_fitted()
        return self.tpt_.logits(x, progress=progress)

    def coop_logits(self, x: Any) -> torch.Tensor:
        """CoOp's logits (the learned prompt, no test-time step): features, pixels or images."""
        self._check_fitted()
        return self.coop_.logits(x)

    def for_classes(self, classnames: Sequence[str]) -> Self:
        """A copy whose learned context is moved onto ``classnames`` (base-to-new), TPT included."""
        self._check_fitted()
        new = copy.copy(self)
        new.coop_ = self.coop_.for_classes(classnames)
        new.tpt_ = self._tpt(new.coop_)
        new.classnames_, new.n_classes_, new.prompt_ = new.coop_.classnames_, new.coop_.n_classes_, new.coop_.prompt_
        return new


register_prompt_method("coop_tpt", CoOpTPT)

__all__ = ["CoOpTPT"]
