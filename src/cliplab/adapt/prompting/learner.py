"""What every prompt learner shares: inputs (cached features or images), the training loop, validation selection.

Contract (``/work/shared/API.md``)::

    fit(model, support, labels=None, classnames=None, *, val=None, val_labels=None, progress=False) -> self
    logits(x) -> [M, C]          predict(x) -> [M]

``support`` / ``x``: image features ``[N, D]`` from ``model`` (text-only methods train on these cached
features: a step is one text forward over the C class prompts), a pixel batch ``[N, 3, H, W]``, a cliplab
``Dataset`` or a list of PIL images / paths (encoded once through the frozen image tower). The model's weights
never change: training runs with its parameters frozen and gradients are taken only with respect to the
prompt parameters (``torch.autograd.grad``), so no model parameter ever gets a ``.grad``.

Validation-only selection: with ``val``/``val_labels`` the learner keeps the prompt state of the evaluation
(every ``eval_every`` epochs and at the end) with the best validation accuracy; the test set is never seen.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import torch
from torch import nn

from cliplab._validation import Estimator, Interval, Options, as_features, as_labels
from cliplab.models.base import Model
from cliplab.optimization import cosine_annealing, sgd
from cliplab.progress import step

POSITIVE = Interval(0, None, closed="neither")
NON_NEGATIVE = Interval(0, None, closed="left")
COUNT = Interval(0, None, closed="left", integer=True)
SIZE = Interval(1, None, closed="left", integer=True)
SEED = Interval(None, None, integer=True)
CTX = Interval(0, None, closed="left", integer=True, allow_none=True)


def _check_init(value: Any, name: str) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{name} must be None or a non-empty phrase, got {value!r}")


def inspect_default(cls: type, name: str) -> Any:
    import inspect

    param = inspect.signature(cls).parameters.get(name)  # the constructor's parameters
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def is_image_input(x: Any) -> bool:
    return not (isinstance(x, torch.Tensor) and x.ndim == 2)


def encode_images(model: Model, x: Any, *, batch_size: int = 64) -> torch.Tensor:
    """Frozen image features ``[N, D]`` of a pixel batch, a cliplab Dataset or a list of images."""
    from cliplab.data.base import Dataset

    if isinstance(x, Dataset):
        from cliplab.features.embedding import embed_images

        return embed_images(model, x, batch_size=batch_size, progress=False)
    return model.encode_images(x, batch_size=batch_size)


def as_pixels(model: Model, x: Any, what: str) -> torch.Tensor:
    """A preprocessed pixel batch ``[N, 3, H, W]`` from pixels, a Dataset or a list of images."""
    from cliplab.data.base import Dataset

    if isinstance(x, torch.Tensor):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{what} needs images (a pixel batch [N, 3, H, W]), got a tensor of shape {tuple(x.shape)}"
            )
        return x.float()
    if isinstance(x, Dataset):
        return model.preprocess.batch([x.image(i) for i in range(len(x))])
    if isinstance(x, Sequence) and not isinstance(x, str):
        return model.preprocess.batch(list(x))
    raise TypeError(
        f"{what} needs images: a pixel batch, a cliplab Dataset or a list of images, got {type(x).__name__}"
    )


def pair_logits(model: Model, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Logits of image ``b`` against its own class texts: ``image [B, D]``, ``text [B, C, D]`` → ``[B, C]``."""
    if model.geometry == "cosine":
        sim = torch.einsum("bd,bcd->bc", image, text)
    else:
        sim = -(image[:, None, :] - text).square().sum(-1)
    z = model.logit_scale * sim
    return z if model.logit_bias is None else z + model.logit_bias


class PromptLearner(Estimator):
    """Base class: subclasses build ``self._make_prompt(model, classnames)`` and define ``_loss`` / ``_logits``."""

    #: the method's display name (error messages)
    method: ClassVar[str] = "prompt learning"
    #: whether the method needs images (it prompts the image tower) rather than cached features
    needs_pixels: ClassVar[bool] = False
    # hyper-parameters every learner's constructor takes and stores (``Estimator``); declared for the loop here
    epochs: int
    batch_size: int
    lr: float
    seed: int
    eval_every: int
    #: the learned prompt module (``_make_prompt``'s; subclasses declare its type)
    prompt_: nn.Module
    _constraints: ClassVar[dict[str, Any]] = {
        "n_ctx": CTX,
        "ctx_init": _check_init,
        "class_token_position": Options("end", "middle", "front"),
        "epochs": COUNT,
        "batch_size": SIZE,
        "lr": POSITIVE,
        "seed": SEED,
        "eval_every": SIZE,
    }

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        """Values the protocol tries on the validation set: the reference learning rate and 10× it (the
        reference rates were tuned for ViT-B/16; small models often need larger steps)."""
        lr = inspect_default(cls, "lr")
        return {} if lr is None else {"lr": [lr, 10 * lr]}

    # -- inputs ---------------------------------------------------------------------------------
    def _inputs(self, model: Model, x: Any, what: str) -> torch.Tensor:
        # clone: features made under inference mode cannot be saved for backward
        if self.needs_pixels:
            return as_pixels(model, x, f"{self.method} ({what})").clone()
        if is_image_input(x):
            return encode_images(model, x).clone()
        return as_features(x, what, dim=self.dim_ if hasattr(self, "dim_") else None).clone()

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
        """Learn the prompts on ``support`` (features, pixels or a Dataset) with ``labels`` over ``classnames``."""
        self._validate_params()
        if not isinstance(model, Model):
            raise TypeError(f"{self.method} needs a cliplab Model as its first argument, got {type(model).__name__}")
        labels = getattr(support, "labels", None) if labels is None else labels
        classnames = list(getattr(support, "classnames", None) or []) if classnames is None else list(classnames)
        if labels is None:
            raise ValueError(f"{self.method} needs labels for the support set")
        if not classnames:
            raise ValueError(f"{self.method} needs the class names")
        self.__dict__.pop("dim_", None)
        self.model_ = model
        self.classnames_ = classnames
        self.n_classes_ = len(classnames)
        x = self._inputs(model, support, "support")
        y = as_labels(labels, "labels", n=x.shape[0], num_classes=self.n_classes_)
        if not self.needs_pixels:
            self.dim_ = x.shape[1]
        xv = yv = None
        if val is not None:
            xv = self._inputs(model, val, "val")
            given = val_labels if val_labels is not None else getattr(val, "labels", None)
            if given is None:
                raise ValueError(f"{self.method} needs val_labels with val (or a labelled val Dataset)")
            yv = as_labels(
                given,
                "val_labels",
                n=xv.shape[0],
                num_classes=self.n_classes_,
            )
        torch.manual_seed(self.seed)
        self.prompt_ = self._make_prompt(model, classnames).to(model.device)
        self._prepare(model, x, y)
        with self._frozen():
            self._train(x.to(model.device), y.to(model.device), xv, yv, progress)
        self._finish()
        return self

    def _frozen(self) -> Any:
        from cliplab.adapt.prompting.text_prompts import frozen

        return frozen(self.model_.module)

    def _make_prompt(self, model: Model, classnames: list[str]) -> nn.Module:
        raise NotImplementedError

    def _prepare(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> None:
        """Anything computed once before training (hand-crafted text weights, ...)."""

    def _finish(self) -> None:
        """Anything computed once after training (cached text features)."""

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD, momentum 0.9, weight decay 5e-4 (CoOp's recipe; ``cliplab.optimization.sgd``)."""
        return sgd(params, lr=self.lr, momentum=0.9, weight_decay=5e-4)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self._logits(x), y)

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, params: list[nn.Parameter]) -> tuple[torch.Tensor, ...]:
        loss = self._loss(x, y)
        return torch.autograd.grad(loss, params, allow_unused=True)

    def _train(self, x: torch.Tensor, y: torch.Tensor, xv: Any, yv: Any, progress: bool) -> None:
        params = [p for p in self.prompt_.parameters() if p.requires_grad]
        self.history_: list[dict[str, float]] = []
        if not params or self.epochs == 0:
            return
        opt = self._optimizer(params)
        n = x.shape[0]
        steps_per_epoch = math.ceil(n / self.batch_size)
        total = steps_per_epoch * self.epochs
        sched = cosine_annealing(opt, total)  # stepped per batch: to 0 at the last step of the last epoch
        gen = torch.Generator().manual_seed(self.seed)
        best: tuple[float, dict[str, torch.Tensor]] | None = None
        # one update per epoch, into whatever the caller reports (progress=False inherits it: a protocol's run)
        with step(self.method, self.epochs, unit="epoch", enabled=progress or None) as bar:
            for epoch in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                for i in range(0, n, self.batch_size):
                    idx = order[i : i + self.batch_size].to(x.device)
                    grads = self._gradients(x[idx], y[idx], params)
                    for p, g in zip(params, grads):
                        p.grad = torch.zeros_like(p) if g is None else g
                    opt.step()
                    sched.step()
                bar.update(1)
                last = epoch + 1 == self.epochs
                if xv is not None and ((epoch + 1) % self.eval_every == 0 or last):
                    acc = self._accuracy(xv, yv)
                    self.history_.append({"epoch": epoch + 1, "val_accuracy": acc})
                    if best is None or acc > best[0]:
                        best = (acc, copy.deepcopy(self.prompt_.state_dict()))
        for p in params:
            p.grad = None
        if best is not None:
            self.prompt_.load_state_dict(best[1])
            self.val_accuracy_ = best[0]

    @torch.no_grad()
    def _accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        preds = torch.cat(
            [self._logits(x[i : i + 256].to(self.model_.device)).argmax(1).cpu() for i in range(0, len(x), 256)]
        )
        return float((preds == y).float().mean())

    # -- prediction -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "prompt_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(model, support, labels, classnames)")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: Any, *, batch_size: int = 256) -> torch.Tensor:
        """Logits ``[M, C]`` of test features (or images) against the learned class prompts."""
        self._check_fitted()
        feats = self._inputs(self.model_, x, "x")
        with torch.no_grad(), self._frozen():
            out = [
                self._logits(feats[i : i + batch_size].to(self.model_.device)).float().cpu()
                for i in range(0, len(feats), batch_size)
            ]
        return torch.cat(out)

    def for_classes(self, classnames: Sequence[str]) -> Self:
        """A copy whose learned, class-independent prompt is moved onto ``classnames`` (base-to-new)."""
        self._check_fitted()
        if getattr(self, "class_specific", False):
            raise ValueError(f"{self.method} with class-specific contexts cannot move to new classes")
        new = copy.copy(self)
        new.classnames_, new.n_classes_ = list(classnames), len(classnames)
        new.prompt_ = self._make_prompt(self.model_, new.classnames_).to(self.model_.device)
        new.prompt_.load_state_dict(self.prompt_.state_dict())
        return new

    def predict(self, x: Any) -> torch.Tensor:
        return self.logits(x).argmax(1)
