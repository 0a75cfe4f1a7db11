"""Robust fine-tuning of a CLIP-family model on a labelled dataset: ``finetune(model, dataset, method=...)``.

``method`` (see :mod:`cliplab.finetune.objectives`): ``"ce"`` (zero-shot-initialised head + cross-entropy,
WiSE-FT's fine-tuning), ``"flyp"`` (contrastive loss against class prompts) or ``"clipood"`` (margin metric
softmax + Beta moving average). The optimisation is the trainer's (``cliplab.train.optim``,
``cliplab.train.engine.OptimizerStep``): AdamW (weight decay on every weight matrix, embeddings included:
``decay_embeddings=True``), linear warm-up then cosine decay, optional gradient-norm clipping (``max_grad_norm``),
``precision`` ``fp32 | bf16 | fp16`` autocast (``cliplab.models.precision``; fp16 with a gradient scaler on
CUDA), a non-finite loss stops the run (``FloatingPointError``) before the update; optional gradient
checkpointing (the towers' own ``gradient_checkpointing_enable``). The input model is never modified: a copy
is trained. Batches are drawn per step from a generator seeded by ``(seed, step)``, so a resumed run (from
``output_dir/checkpoints``, written atomically every ``checkpoint_every`` steps) continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cliplab.finetune.classifier import ImageClassifier, zeroshot_head
from cliplab.finetune.objectives import FINETUNE_OBJECTIVES, BetaMovingAverage, ObjectiveBatch
from cliplab.finetune.weight_space import clone_model
from cliplab.models.base import Model
from cliplab.models.precision import PRECISIONS, autocast
from cliplab.train.engine import OptimizerStep, check_finite
from cliplab.train.optim import build_optimizer, grad_scaler, param_groups
from cliplab.train.setup import clamp_logit_scale

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


def _pixels(model: Model, dataset: Any, progress: bool) -> torch.Tensor:
    n = len(dataset)
    chunks = []
    for i in tqdm(range(0, n, 256), disable=not progress, desc="preprocess", unit="batch"):
        chunks.append(model.preprocess.batch([dataset.image(j) for j in range(i, min(n, i + 256))]))
    return torch.cat(chunks)


def finetune(
    model: Model,
    train: Any,
    *,
    method: str = "ce",
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 1e-5,
    weight_decay: float = 0.1,
    warmup_steps: int = 0,
    precision: str = "fp32",
    grad_checkpointing: bool = False,
    max_grad_norm: float | None = None,
    templates: Any = None,
    mms_lambda: float = 0.3,
    bma_beta: float = 0.5,
    seed: int = 0,
    output_dir: Any = None,
    checkpoint_every: int = 0,
    resume: bool | str = False,
    progress: bool = True,
) -> ImageClassifier:
    """Fine-tune a copy of ``model`` on ``train`` (a labelled cliplab Dataset); returns the classifier."""
    if method not in FINETUNE_OBJECTIVES:
        raise ValueError(f"method must be one of {FINETUNE_OBJECTIVES.names()}, got {method!r}")
    objective = FINETUNE_OBJECTIVES[method]
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not model.can_train:
        raise ValueError(f"{model.spec} cannot be trained (Model.can_train is False)")
    labels_np = getattr(train, "labels", None)
    classnames = list(getattr(train, "classnames", None) or [])
    if labels_np is None or not classnames:
        raise ValueError(f"dataset {getattr(train, 'name', train)!r} needs labels and class names to fine-tune on")
    if checkpoint_every and output_dir is None:
        raise ValueError("checkpoint_every needs an output_dir")
    templates = templates if templates is not None else (list(getattr(train, "templates", None) or []) or None)
    device = model.device
    zs_head = zeroshot_head(model, classnames, templates).to(device)
    ft = clone_model(model)
    module = ft.module
    labels = torch.as_tensor(np.asarray(labels_np), dtype=torch.long)
    pixels = _pixels(model, train, progress)
    head = torch.nn.Parameter(zs_head.clone()) if objective.trains_head else None
    text_w = (zs_head / model.logit_scale).to(device)  # normalised class text features (clipood)
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    for p in module.parameters():
        p.requires_grad_(True)
    params = dict(module.named_parameters())
    if head is not None:
        params[HEAD_KEY] = head
    opt, sched = build_optimizer(
        param_groups(params.items(), weight_decay, decay_embeddings=True),
        lr=lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        warmup=warmup_steps,
        total=steps,
    )
    update = OptimizerStep(
        [p for group in opt.param_groups for p in group["params"]],
        opt,
        sched,
        scaler=grad_scaler(precision, device, cuda_only=True),
        max_norm=max_grad_norm,
    )
    bma = BetaMovingAverage(module, steps, bma_beta) if objective.weight_average else None
    start = 0
    if output_dir is not None:
        from cliplab.train.checkpoint import load_checkpoint, resume_point

        point = resume_point(output_dir, resume)
        if point is not None:
            weights, state = load_checkpoint(point)
            if head is not None:
                head.data.copy_(weights.pop(HEAD_KEY))
            module.load_state_dict(weights)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if bma is not None:
                bma.load_state_dict(state["bma"])
            start = int(state["step"])
    scale = model.logit_scale
    options = {"mms_lambda": mms_lambda}
    module.train()
    losses: list[float] = []
    bar = tqdm(range(start, steps), disable=not progress, desc=f"finetune ({method})", unit="step")
    with checkpointing(ft, grad_checkpointing):
        for step in bar:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            idx = torch.randperm(len(labels), generator=gen)[:batch_size]
            px, y = pixels[idx].to(device), labels[idx].to(device)
            with autocast(precision, device):
                f = ft.image_features(px)
                batch = ObjectiveBatch(ft, f, y, head, text_w, scale, classnames, templates, gen, options)
                loss = objective.loss(batch)
            value = float(loss.detach())
            check_finite(value, step + 1)
            update.zero_grad()
            update.backward(loss)
            update.step()
            if objective.trains_logit_scale:
                clamp_logit_scale(module)
            if bma is not None:
                bma.update(module, step)
            losses.append(value)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            done = step + 1
            if output_dir is not None and checkpoint_every and (done % checkpoint_every == 0 or done == steps):
                from cliplab.train.checkpoint import save_checkpoint

                weights = dict(module.state_dict())
                if head is not None:
                    weights[HEAD_KEY] = head.detach()
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "method": method}
                if bma is not None:
                    state["bma"] = bma.state_dict()
                save_checkpoint(output_dir, done, weights, state)
    module.eval()
    opt.zero_grad(set_to_none=True)
    for n, p in module.named_parameters():
        p.requires_grad_(flags[n])
    if bma is not None:
        bma.copy_to(module)
    info = {"method": method, "steps": steps, "final_loss": losses[-1] if losses else None, "resumed_from": start}
    if head is not None:
        return ImageClassifier(ft, head.detach().clone(), classnames, templates, text_head=False, info=info)
    out_head = zeroshot_head(ft, classnames, templates) if objective.text_head else zs_head.detach().cpu()
    return ImageClassifier(ft, out_head, classnames, templates, text_head=objective.text_head, info=info)

