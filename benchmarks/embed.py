"""Embedding throughput: ``embed()`` end to end vs the model's forward alone; cache reload vs first embed.

Baseline (named): ``forward-only`` = ``model.image_features`` on pre-made pixel tensors, same batches.
Goals (issue 2): embed ≥ 0.8× forward-only images/s; cached reload ≥ 50× faster than the first embed.

    python benchmarks/embed.py [--n 2048] [--batch-size 128] [--arch shapes|vit-b32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from cliplab.data import shapes
from cliplab.data.shapes_world import VOCABULARY
from cliplab.features import embed, embed_images
from cliplab.models.builtin import ShapesRecipe
from cliplab.models.factory import ModelConfig, build_tokenizer, create_model

ARCHS = {
    "shapes": ShapesRecipe().model,  # the builtin:shapes architecture (64 px, ViT 96×3)
    # ViT-B/32-sized image tower at 224 px (the most common real CLIP), random weights
    "vit-b32": ModelConfig(
        image_size=224,
        patch_size=32,
        vision_width=768,
        vision_layers=12,
        vision_heads=12,
        text_width=512,
        text_layers=2,
        text_heads=8,
        embed_dim=512,
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="shapes")
    args = ap.parse_args()
    cfg = ARCHS[args.arch]
    model = create_model(cfg, build_tokenizer(VOCABULARY, context_length=cfg.context_length))
    data = shapes("test", n=args.n, image_size=64)  # 64 px images; the preprocessing resizes for vit-b32
    pixels = model.preprocess.batch(data.images(range(min(args.n, args.batch_size))))
    n_batches = -(-args.n // args.batch_size)

    with torch.inference_mode():  # warm-up
        model.image_features(pixels[:8])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in range(n_batches):
            model.image_features(pixels[: min(args.batch_size, args.n - b * args.batch_size)])
    forward_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    embed_images(model, data, batch_size=args.batch_size, progress=False)
    images_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        embed(model, data, batch_size=args.batch_size, cache_dir=cache, progress=False)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            embed(model, data, batch_size=args.batch_size, cache_dir=cache, progress=False)
        cached_s = (time.perf_counter() - t0) / reps

    print(f"arch={args.arch} n={args.n} batch={args.batch_size} threads={torch.get_num_threads()}")
    print(f"{'variant':<28}{'seconds':>10}{'images/s':>12}{'ratio':>10}")
    print(f"{'forward-only (baseline)':<28}{forward_s:>10.3f}{args.n / forward_s:>12.0f}{1.0:>10.2f}")
    print(f"{'embed_images() (pipeline)':<28}{images_s:>10.3f}{args.n / images_s:>12.0f}{forward_s / images_s:>10.2f}")
    print(f"{'embed() first call':<28}{first_s:>10.3f}{args.n / first_s:>12.0f}{forward_s / first_s:>10.2f}")
    print(f"{'embed() cached reload':<28}{cached_s:>10.4f}{args.n / cached_s:>12.0f}{forward_s / cached_s:>10.1f}")
    print(f"image pipeline (render + preprocess + forward) / forward-only: {forward_s / images_s:.2f} (goal >= 0.8)")
    print(f"embed() incl. {len(data.captions)} captions and cache write / forward-only: {forward_s / first_s:.2f}")
    print(f"cached reload speed-up over first embed: {first_s / cached_s:.0f}x (goal >= 50x)")


if __name__ == "__main__":
    main()
