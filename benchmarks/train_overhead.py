"""Trainer overhead: ``Trainer`` step time vs a bare forward/backward/AdamW loop on the same model and batch.

Baseline (named): ``bare loop`` = ``image_features`` + ``text_features`` on one pre-made batch (pixels and
tokens already tensors), ``clip_loss``, ``zero_grad``, ``backward``, ``AdamW.step`` — nothing else.
The trainer adds the sampler, batch loading on a background thread (images cached in memory after their
first epoch, captions tokenised per batch), the finite-loss check, the LR schedule, the logit-scale clamp,
gradient clipping if asked, and logging. Goal (issue 3): trainer ≤ 1.05× the bare loop per step.

The trainer's time is the mean step time of its second logging window (steps ``warmup+1 .. warmup+steps``,
data loading and logging included; the first window fills the image cache). Runs alternate and repeat;
medians are reported.

    python benchmarks/train_overhead.py [--arch shapes|tiny] [--batch-size 64] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch

from cliplab.builtin_models.shapes import ShapesRecipe
from cliplab.data.shapes_world import VOCABULARY
from cliplab.models.factory import ModelConfig, build_tokenizer, create_model
from cliplab.optimization import param_groups
from cliplab.train import TrainConfig, Trainer

ARCHS = {
    "shapes": ShapesRecipe().model,  # the builtin:shapes architecture: 64 px, patch 16, ViT 128×4, text 128×2
    "tiny": ModelConfig(
        image_size=32,
        patch_size=8,
        vision_width=64,
        vision_layers=2,
        vision_heads=2,
        text_width=64,
        text_layers=2,
        text_heads=2,
        embed_dim=64,
    ),  # fmt: skip
}


def bare_loop(model, pixels, tokens, steps: int, warmup: int, lr: float) -> float:
    """Seconds per step of the plain loop (after ``warmup`` untimed steps)."""
    from cliplab.losses import clip_loss

    module = model.module.train()
    opt = torch.optim.AdamW(param_groups(module, 0.1), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = clip_loss(model.image_features(pixels), model.text_features(tokens), module.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def trainer_run(model, config: TrainConfig) -> float:
    """Seconds per step of the trainer's second logging window."""
    trainer = Trainer(config, model=model, progress=False)
    trainer.fit()
    windows = [r for r in trainer.history if "loss" in r]
    return windows[1]["step_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="shapes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (also the untimed warm-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grad-clip", choices=["none", "norm", "zclip", "autoclip"], default="none")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--num-workers", type=int, default=None, help="data.num_workers (default: available cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = ARCHS[args.arch]
    model = create_model(arch, build_tokenizer(VOCABULARY, context_length=arch.context_length), seed=0)
    n_images = args.batch_size * args.steps  # one epoch = the warm-up window: later windows read the cache
    spec = f"shapes:n={n_images},objects=mixed,image_size={arch.image_size}"

    from cliplab.data import load_dataset

    data = load_dataset(spec, split="train")
    pixels = model.preprocess.batch(data.images(range(args.batch_size)))
    tokens = model.tokenize(data.captions[: args.batch_size])

    bare, trained = [], []
    for r in range(args.repeats):
        bare.append(bare_loop(copy.deepcopy(model), pixels, tokens, args.steps, args.steps, 1e-3))
        with tempfile.TemporaryDirectory() as out:
            config = TrainConfig.from_dict(
                {
                    "data": {"train": spec, "num_workers": args.num_workers},
                    "steps": 2 * args.steps,
                    "batch_size": args.batch_size,
                    "log_every": args.steps,
                    "optimizer": {"lr": 1e-3, "weight_decay": 0.1},
                    "grad_clip": {"mode": args.grad_clip},
                    "output_dir": out,
                    "seed": r,
                }
            )
            trained.append(trainer_run(copy.deepcopy(model), config))
        print(f"repeat {r + 1}: bare loop {bare[-1] * 1e3:.1f} ms/step, trainer {trained[-1] * 1e3:.1f} ms/step")

    b, t = statistics.median(bare), statistics.median(trained)
    print(
        f"\narch={args.arch} batch={args.batch_size} grad_clip={args.grad_clip} threads={torch.get_num_threads()} "
        f"num_workers={args.num_workers} load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n"
        f"bare loop : {b * 1e3:8.1f} ms/step (median of {args.repeats})\n"
        f"trainer   : {t * 1e3:8.1f} ms/step\n"
        f"ratio vs 'bare loop': {t / b:.3f}x (goal <= 1.05x)"
    )


if __name__ == "__main__":
    main()
