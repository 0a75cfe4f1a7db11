"""Robust fine-tuning of a CLIP-family model on a labelled dataset: ``finetune(model, dataset, method=...)``.

``method`` (see :mod:`cliplab.finetune.objectives`): ``"ce"`` (zero-shot-initialised head + cross-entropy,
WiSE-FT's fine-tuning), ``"flyp"`` (contrastive loss against class prompts) or ``"clipood"`` (margin metric
softmax + Beta moving average). The optimisation is the trainer's (``cliplab.optimization``,
``cliplab.train.engine.OptimizerStep``): AdamW (weight decay on every weight matrix, embeddings included:
``decay_embeddings=True``), linear warm-up then cosine decay, optional gradient-norm clipping (``max_grad_norm``),
``precision`` ``fp32 | bf16 | fp16`` autocast (``cliplab.models.precision``; fp16 with a gradient scaler on
CUDA), a non-finite loss stops the run (``FloatingPointError``) before the update; optional gradient
checkpointing (the towers' own ``gradient_checkpointing_enable``). The input model is never modified: a copy
is trained. Batches are drawn per step from a generator seeded by ``(seed, step)``.

The loop is the trainer's (``cliplab.train.trainer.Trainer`` with the ``FinetuneTraining`` objective of
:mod:`cliplab.finetune.training`): a resumed run (from ``output_dir/checkpoints``, written atomically every
``checkpoint_every`` steps, ``cliplab.train.state.TrainState``) continues exactly, and under ``torchrun`` each of
``W`` processes trains on its ``batch_size`` rows of the step's ``batch_size · W`` (the gradients averaged as
DDP does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cliplab.finetune.classifier import ImageClassifier, zeroshot_head
from cliplab.finetune.objectives import FINETUNE_OBJECTIVES
from cliplab.finetune.training import FinetuneTraining
from cliplab.finetune.weight_space import clone_model
from cliplab.models.base import Model
from cliplab.models.precision import PRECISIONS
from cliplab.train.checkpoint import rng_state, set_rng_state
from cliplab.train.config import GradClipOptions, TrainConfig
from cliplab.train.trainer import Trainer


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
    labels = torch.as_tensor(np.asarray(labels_np), dtype=torch.long)
    pixels = _pixels(model, train, progress)
    task = FinetuneTraining(
        objective,
        method=method,
        pixels=pixels,
        labels=labels,
        zs_head=zs_head,
        scale=model.logit_scale,
        classnames=classnames,
        templates=templates,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        bma_beta=bma_beta,
        options={"mms_lambda": mms_lambda},
        grad_checkpointing=grad_checkpointing,
        output_dir=output_dir,
    )
    config = loop_config(
        steps=steps,
        batch_size=batch_size,
        precision=precision,
        max_grad_norm=max_grad_norm,
        seed=seed,
        output_dir=output_dir,
        checkpoint_every=checkpoint_every,
        device=str(device),
    )
    trainer = Trainer(config, model=ft, progress=progress, resume=resume, objective=task, desc=f"finetune ({method})")
    rng = rng_state(device)  # the trainer seeds the global generators; the caller's stream is left as it was
    try:
        trainer.fit()
    finally:
        set_rng_state(rng, device)
    start = trainer.resumed_state.step if trainer.resumed_state is not None else 0
    losses = trainer.losses
    info = {"method": method, "steps": steps, "final_loss": losses[-1] if losses else None, "resumed_from": start}
    head = task.head
    if head is not None:
        return ImageClassifier(ft, head.detach().clone(), classnames, templates, text_head=False, info=info)
    out_head = zeroshot_head(ft, classnames, templates) if objective.text_head else zs_head.detach().cpu()
    return ImageClassifier(ft, out_head, classnames, templates, text_head=objective.text_head, info=info)


def loop_config(
    *,
    steps: int,
    batch_size: int,
    precision: str,
    max_grad_norm: float | None,
    seed: int,
    output_dir: Any,
    checkpoint_every: int,
    device: str,
) -> TrainConfig:
    """The trainer's ``TrainConfig`` of a fine-tuning run (only the loop's settings: the optimizer, schedule and
    data are ``FinetuneTraining``'s)."""
    clip = GradClipOptions("norm", max_grad_norm) if max_grad_norm is not None else GradClipOptions()
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        precision=precision,
        grad_clip=clip,
        seed=seed,
        output_dir=str(output_dir) if output_dir is not None else "",
        checkpoint_every=checkpoint_every,
        keep_checkpoints=2,
        log_every=0,
        device=device,
    )
