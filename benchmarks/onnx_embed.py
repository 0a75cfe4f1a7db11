"""Embedding throughput of the same model in torch and in onnxruntime (``cliplab export`` → ``onnx:DIR``), one run.

For each architecture: images/s of ``encode_images`` on pre-made pixel batches and texts/s of ``encode_texts``,
torch (fp32, this machine's threads) against onnxruntime (CPU provider) on the exported fp32 graphs, plus the
largest feature difference. Architectures: ``shapes`` (the built-in, 64 px) and ``vit-b32`` (a ViT-B/32-sized
random tower at 224 px, 12-layer 512-wide text tower). On a shared machine the ratio, measured in one run and
interleaved (best of ``--repeats``), is what counts.

    python benchmarks/onnx_embed.py [--n 128] [--batch-size 32] [--arch shapes vit-b32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from cliplab.data.shapes_world import VOCABULARY
from cliplab.interop.onnx_export import export_onnx
from cliplab.models import load_model
from cliplab.models.builtin import ShapesRecipe
from cliplab.models.factory import ModelConfig, build_tokenizer, create_model

ARCHS = {
    "shapes": ShapesRecipe().model,
    "vit-b32": ModelConfig(
        image_size=224,
        patch_size=32,
        vision_width=768,
        vision_layers=12,
        vision_heads=12,
        text_width=512,
        text_layers=12,
        text_heads=8,
        context_length=77,
        embed_dim=512,
    ),  # fmt: skip
}


def encode(model, what: str, inputs, batch_size: int, precision: str | None) -> torch.Tensor:
    if what == "images":
        return model.encode_images(inputs, batch_size=batch_size, precision=precision)
    return model.encode_texts(inputs, batch_size=batch_size, precision=precision)


def best_rate(fn, fn_args: tuple, n: int, repeats: int) -> float:
    fn(*fn_args)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*fn_args)
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images and texts per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    words = list(VOCABULARY)
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 10)) for i in range(args.n)]
    rows = []
    for arch in args.arch:
        cfg = ARCHS[arch]
        if arch == "shapes":
            model = load_model("builtin:shapes", device="cpu")
        else:
            model = create_model(cfg, build_tokenizer(words, context_length=cfg.context_length))
        px = torch.randn(args.n, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, Path(tmp) / "onnx")
            onnx = load_model(f"onnx:{Path(tmp) / 'onnx'}")
            bs = args.batch_size
            diff = float((onnx.encode_images(px[:8]) - model.encode_images(px[:8])).abs().max())
            for what, inputs in (("images", px), ("texts", texts)):
                t_rate = best_rate(encode, (model, what, inputs, bs, "fp32"), args.n, args.repeats)
                o_rate = best_rate(encode, (onnx, what, inputs, bs, None), args.n, args.repeats)
                rows.append((arch, what, t_rate, o_rate, o_rate / t_rate, diff))
    print(f"{'arch':<8} {'input':<7} {'torch/s':>9} {'onnxrt/s':>9} {'ratio':>6} {'max|Δ|':>9}")
    for arch, what, t_rate, o_rate, ratio, diff in rows:
        print(f"{arch:<8} {what:<7} {t_rate:9.1f} {o_rate:9.1f} {ratio:6.2f} {diff:9.2e}")


if __name__ == "__main__":
    main()
