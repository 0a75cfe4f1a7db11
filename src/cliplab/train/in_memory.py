"""Contrastive training over an in-memory image–caption dataset (the built-in models' recipes).

It renders/loads every image once, tokenises every caption once, then runs the shared optimisation of
``cliplab.optimization`` (AdamW, linear warm-up + cosine decay, no weight decay on the logit scale, biases, norms
and embeddings) and clamps ``log logit_scale`` to ``ln 100`` after each step (CLIP). A recipe's weights are
shipped with the package, so its numbers must not change: this driver keeps its own batch sampling (numpy
generator) rather than the ``Trainer``'s data pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cliplab.data.base import Dataset
from cliplab.models.base import Model, prefetch
from cliplab.optimization import build_optimizer, param_groups
from cliplab.train.engine import OptimizerStep
from cliplab.train.setup import clamp_logit_scale, logit_scale_param


@dataclass
class ContrastiveLoopConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    render_batch: int = 512


def render_all(model: Model, dataset: Dataset, batch: int = 512, progress: bool = True) -> torch.Tensor:
    """Every image of ``dataset`` as a normalised tensor ``[N, 3, H, W]``."""
    n = len(dataset)
    chunks = []
    with tqdm(total=n, disable=not progress, desc="render", unit="img") as bar:
        for b in prefetch(
            lambda i: model.preprocess.batch(dataset.images(range(i * batch, min(n, (i + 1) * batch)))),
            -(-n // batch),
        ):
            chunks.append(b)
            bar.update(b.shape[0])
    return torch.cat(chunks)


def contrastive_step(
    model: Model,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    update: OptimizerStep,
    *,
    step: int = 0,
) -> float:
    """One optimizer step of the symmetric CLIP loss on ready features (Radford et al. 2021).

    ``L = ½·[CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)]`` with ``s = exp(module.logit_scale)``; then ``update`` (backward,
    clip, AdamW and schedule step: ``cliplab.train.engine.OptimizerStep``) and clamp ``log s ≤ ln 100``. A
    non-finite loss raises ``FloatingPointError`` before any update. Shared by ``fit_contrastive`` and
    ``cliplab.builtin_models.lit.fit_locked_text``. Returns the loss.
    """
    from cliplab.losses import clip_loss

    module = model.module
    loss = clip_loss(image_features, text_features, logit_scale_param(module).exp(), geometry=model.geometry)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()} at step {step}; training stopped")
    update.zero_grad()
    update.backward(loss)
    update.step()
    clamp_logit_scale(module)
    return loss.item()


def recipe_update(
    module: torch.nn.Module, config: ContrastiveLoopConfig | Any, params: list[torch.nn.Parameter] | None = None
) -> OptimizerStep:
    """The built-in recipes' optimisation: AdamW (β = (0.9, 0.98), ε = 1e-6; weight decay on matrices only),
    warm-up + cosine over ``config.steps``, the gradient norm of ``params`` (default: all of ``module``'s)
    clipped to 1."""
    optimizer, scheduler = build_optimizer(
        param_groups(module, config.weight_decay),
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        warmup=config.warmup_steps,
        total=config.steps,
    )
    params = list(module.parameters()) if params is None else params
    return OptimizerStep(params, optimizer, scheduler, max_norm=1.0)


def show_progress(bar: tqdm, losses: list[float], module: torch.nn.Module) -> None:
    """Every 10 steps: the mean loss of the last 10 and the logit scale on the progress bar."""
    if len(losses) % 10 == 0:
        scale = float(logit_scale_param(module).detach().exp())
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", scale=f"{scale:.1f}")


def fit_contrastive(
    model: Model, dataset: Dataset, config: ContrastiveLoopConfig, *, progress: bool = True
) -> list[float]:
    """Train ``model`` on (image, random one of its captions) pairs with the symmetric CLIP loss.

    Returns the per-step losses.
    """
    captions, t2i = dataset.captions, dataset.text_to_image
    if not captions or t2i is None:
        raise ValueError(f"dataset {dataset.name!r} has no captions to train on")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    pixels = render_all(model, dataset, config.render_batch, progress)
    hf: Any = model  # an HFModel: its tokenizer pads every caption to max_length
    tokens = hf.tokenizer(
        list(captions), padding="max_length", truncation=True, max_length=hf.max_length, return_tensors="pt"
    )
    order = np.argsort(t2i, kind="stable")
    counts = np.bincount(t2i, minlength=len(dataset))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has_caption = np.nonzero(counts > 0)[0]

    module = model.module
    module.train()
    update = recipe_update(module, config)
    losses: list[float] = []
    bar = tqdm(range(config.steps), disable=not progress, desc="train", unit="step")
    for _ in bar:
        img = rng.choice(has_caption, size=min(config.batch_size, has_caption.size), replace=False)
        cap = order[starts[img] + rng.integers(0, counts[img])]
        batch_tokens = {k: v[cap] for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        image_features = model.image_features(pixels[img].to(model.device))
        text_features = model.text_features({k: v.to(model.device) for k, v in batch_tokens.items()})
        losses.append(contrastive_step(model, image_features, text_features, update, step=len(losses)))
        show_progress(bar, losses, module)
    module.eval()
    return losses


__all__ = [
    "ContrastiveLoopConfig",
    "contrastive_step",
    "fit_contrastive",
    "recipe_update",
    "render_all",
    "show_progress",
]
