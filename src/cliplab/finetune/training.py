"""Fine-tuning as a ``TrainingObjective`` of the trainer's loop (``cliplab.train.trainer.Trainer``).

``FinetuneTraining`` trains a copy of a model on class-labelled images with a registered
:class:`~cliplab.finetune.objectives.FinetuneObjective`: the batch source is ``LabelledBatches`` (step ``s`` draws
``randperm(n)[:B·W]`` from ``torch.Generator().manual_seed(seed · 1_000_003 + s)``; rank ``r`` of ``W`` takes its
``B`` rows, so one process draws exactly the batches ``finetune`` always drew), the parameters it adds are the
trained head (``trains_head``), after each optimizer step it clamps the logit scale (``trains_logit_scale``) and
updates the Beta moving average (``weight_average``), and its checkpoint state (``TrainState.objective``) is the
head and the moving average. The loop itself (torchrun, gradient clipping, checkpoints and exact resume) is the
trainer's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cliplab.finetune.objectives import BetaMovingAverage, FinetuneObjective, ObjectiveBatch
from cliplab.models.base import Model
from cliplab.optimization import build_optimizer, grad_scaler, param_groups
from cliplab.train.batches import SamplerState
from cliplab.train.engine import check_finite
from cliplab.train.setup import clamp_logit_scale

if TYPE_CHECKING:
    from cliplab.train.trainer import Trainer

HEAD_KEY = "cliplab_finetune_head"


@contextlib.contextmanager
def checkpointing(model: Model, enabled: bool) -> Iterator[None]:
    """Gradient checkpointing of the towers while active (``gradient_checkpointing_enable`` of the module)."""
    if not enabled:
        yield
        return
    module = model.module
    # transformers >= 5.x names it activation checkpointing; older versions gradient checkpointing
    prefix = "activation" if hasattr(module, "activation_checkpointing_enable") else "gradient"
    enable = getattr(module, f"{prefix}_checkpointing_enable", None)
    if enable is None:
        raise ValueError(
            f"gradient checkpointing needs a module with gradient_checkpointing_enable(); "
            f"{type(module).__name__} ({model.spec}) has none"
        )
    enable(**{f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}})
    try:
        yield
    finally:
        getattr(module, f"{prefix}_checkpointing_disable")()


class LabelledBatches:
    """The batch source: a sampler (``batch(state)``) and loader (``load``) in one; see the module docstring.

    Its state is ``SamplerState(epoch=0, position=step)``: the draw depends on the step alone.
    """

    per_rank = False

    def __init__(
        self, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ):
        self.pixels, self.labels = pixels, labels
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world

    def initial_state(self) -> SamplerState:
        return SamplerState()

    def state_from_dict(self, data: dict[str, Any]) -> SamplerState:
        return SamplerState(**data)

    def batch(self, state: SamplerState) -> tuple[torch.Tensor, torch.Generator, SamplerState]:
        """The rows of step ``state.position`` and its generator (the objective draws from it too, e.g. FLYP's
        templates)."""
        step = state.position
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randperm(len(self.labels), generator=gen)[: self.batch_size * self.world]
        idx = idx[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return idx, gen, SamplerState(state.epoch, step + 1)

    def load(self, idx: torch.Tensor, gen: torch.Generator) -> dict[str, Any]:
        return {"pixels": self.pixels[idx], "labels": self.labels[idx], "generator": gen}

    def close(self) -> None:
        pass


def average_gradients(params: list[nn.Parameter], world_size: int) -> None:
    """``g ← (1/W)·Σ_ranks g`` for every parameter with a gradient (what DDP does), in one flat all-reduce."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


class ImageFeatures(nn.Module):
    """The module the loop runs: the model's image features; holds the trained head too."""

    def __init__(self, model: Model, head: nn.Parameter | None):
        super().__init__()
        self.model = model
        self.module = model.module
        self.head = head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image_features(pixels)


class FinetuneTraining:
    """Fine-tuning with ``objective`` (module docstring). ``model``: the copy to train; ``zs_head``: the zero-shot
    head ``s·W_zs`` of the original model ``[C, D]``; ``scale``: the original logit scale; ``output_dir``: where
    checkpoints go (None: none, and no resume)."""

    writes_run_files = False
    #: no DDP: the losses use parameters outside the image forward (the head, FLYP's text tower) and some get no
    #: gradient (the text tower under "ce"); ``forward_backward`` averages the gradients over the processes
    wraps_ddp = False

    def __init__(
        self,
        objective: FinetuneObjective,
        *,
        method: str,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        zs_head: torch.Tensor,
        scale: float,
        classnames: list[str],
        templates: Any,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        bma_beta: float,
        options: dict[str, Any],
        grad_checkpointing: bool,
        output_dir: Any,
    ):
        self.objective, self.method = objective, method
        self.pixels, self.labels, self.zs_head, self.scale = pixels, labels, zs_head, scale
        self.classnames, self.templates, self.options = classnames, templates, options
        self.lr, self.weight_decay, self.warmup_steps, self.bma_beta = lr, weight_decay, warmup_steps, bma_beta
        self.grad_checkpointing = grad_checkpointing
        self.uses_checkpoints = output_dir is not None
        self.head: nn.Parameter | None = None
        self.bma: BetaMovingAverage | None = None
        self.flags: dict[str, bool] = {}
        self._stack = contextlib.ExitStack()

    def check(self, model: Model | None) -> None:
        if model is None or not model.can_train:
            raise ValueError(f"{getattr(model, 'spec', model)} cannot be trained (Model.can_train is False)")

    def prepare(self, trainer: Trainer, resume_from: Path | None) -> None:
        model = trainer.model
        model.to(trainer.device)
        module = model.module
        self.text_weights = (self.zs_head / self.scale).to(trainer.device)  # normalised class text features
        self.head = nn.Parameter(self.zs_head.clone().to(trainer.device)) if self.objective.trains_head else None
        self.flags = {n: p.requires_grad for n, p in module.named_parameters()}
        for p in module.parameters():
            p.requires_grad_(True)
        if self.objective.weight_average:
            self.bma = BetaMovingAverage(module, trainer.config.steps, self.bma_beta)
        trainer.wrapper = ImageFeatures(model, self.head)
        self._stack.enter_context(checkpointing(model, self.grad_checkpointing))

    def optimization(self, trainer: Trainer) -> tuple[list[nn.Parameter], Any, Any, Any]:
        named = list(trainer.model.module.named_parameters())
        if self.head is not None:
            named.append((HEAD_KEY, self.head))
        opt, sched = build_optimizer(
            param_groups(named, self.weight_decay, decay_embeddings=True),
            lr=self.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            warmup=self.warmup_steps,
            total=trainer.config.steps,
        )
        params = [p for group in opt.param_groups for p in group["params"]]
        return params, opt, sched, grad_scaler(trainer.config.precision, trainer.device, cuda_only=True)

    def batches(self, trainer: Trainer) -> tuple[Any, Any]:
        cfg, env = trainer.config, trainer.env
        source = LabelledBatches(self.pixels, self.labels, cfg.batch_size, cfg.seed, env.rank, env.world_size)
        return source, source

    def forward_backward(self, trainer: Trainer, batch: dict[str, Any]) -> torch.Tensor:
        device = trainer.device
        px, y = batch["pixels"].to(device), batch["labels"].to(device)
        with trainer._autocast():
            f = trainer.runner(px)
            ob = ObjectiveBatch(
                trainer.model,
                f,
                y,
                self.head,
                self.text_weights,
                self.scale,
                self.classnames,
                self.templates,
                batch["generator"],
                self.options,
            )
            loss = self.objective.loss(ob)
        check_finite(float(loss.detach()), trainer.step + 1)
        trainer.update.zero_grad()
        trainer.update.backward(loss)
        if trainer.env.distributed:
            average_gradients(trainer.params, trainer.env.world_size)
        return loss.detach()

    def after_step(self, trainer: Trainer) -> None:
        module = trainer.model.module
        if self.objective.trains_logit_scale:
            clamp_logit_scale(module)
        if self.bma is not None:
            self.bma.update(module, trainer.step)

    def state_dict(self) -> dict[str, Any] | None:
        return {
            "method": self.method,
            "head": None if self.head is None else self.head.detach().cpu(),
            "bma": None if self.bma is None else self.bma.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.method:
            raise ValueError(f"the checkpoint fine-tuned with {state.get('method')!r}, not {self.method!r}")
        if self.head is not None:
            self.head.data.copy_(state["head"])
        if self.bma is not None:
            self.bma.load_state_dict(state["bma"])

    def finish(self, trainer: Trainer) -> None:
        self._stack.close()
        module = trainer.model.module
        module.eval()
        trainer.optimizer.zero_grad(set_to_none=True)
        for n, p in module.named_parameters():
            p.requires_grad_(self.flags[n])
        if self.bma is not None:
            self.bma.copy_to(module)


__all__ = ["HEAD_KEY", "FinetuneTraining", "ImageFeatures", "LabelledBatches", "average_gradients", "checkpointing"]
