"""Mixed-precision inference: bf16/fp16 autocast vs fp32 image features, speed and worst cosine, in one run.

Baseline (named): ``fp32`` = ``model.image_features`` on the same pre-made pixel batches in float32. For each
of ``bf16`` and ``fp16`` (``cliplab.models.precision.autocast``): images/s, the ratio to fp32, and the worst
cosine between the fp32 and low-precision features. Models: the built-in architecture (``shapes``, 64 px)
and a ViT-B/32-sized random tower (``vit-b32``, 224 px). On CPU, fp16 autocast is emulated (slow); the
point of fp16/bf16 is a GPU (``benchmarks/gpu_check.sh``).

    python benchmarks/precision.py [--n 64] [--batch-size 32] [--arch shapes vit-b32] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cliplab.data.shapes_world import VOCABULARY
from cliplab.models.factory import build_tokenizer, create_model
from cliplab.models.precision import autocast

try:  # the same architectures as benchmarks/embed.py
    from embed import ARCHS
except ImportError:  # pragma: no cover - run from another directory
    from benchmarks.embed import ARCHS


def features(model, batches, precision: str, device: str) -> tuple[torch.Tensor, float]:
    with torch.inference_mode(), autocast(precision, device):
        model.image_features(batches[0][:2])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = [model.image_features(b).float() for b in batches]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return torch.cat(out).cpu(), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=["shapes", "vit-b32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"device={args.device} threads={torch.get_num_threads()} load average {os.getloadavg()[0]:.2f}")
    print(f"{'arch':<9}{'precision':<11}{'seconds':>9}{'images/s':>10}{'vs fp32':>9}{'worst cos':>11}")
    for arch in args.arch:
        cfg = ARCHS[arch]
        model = create_model(cfg, build_tokenizer(VOCABULARY, context_length=cfg.context_length), seed=0)
        model.to(args.device).module.eval()
        g = torch.Generator().manual_seed(0)
        size = cfg.image_size
        pixels = torch.randn(args.n, 3, size, size, generator=g).to(args.device)
        batches = list(pixels.split(args.batch_size))
        ref, ref_s = features(model, batches, "fp32", args.device)
        print(f"{arch:<9}{'fp32':<11}{ref_s:>9.3f}{args.n / ref_s:>10.1f}{1.0:>9.2f}{1.0:>11.6f}")
        for precision in ("bf16", "fp16"):
            low, s = features(model, batches, precision, args.device)
            cos = torch.nn.functional.cosine_similarity(ref, low, dim=1).min()
            print(f"{arch:<9}{precision:<11}{s:>9.3f}{args.n / s:>10.1f}{ref_s / s:>9.2f}{float(cos):>11.6f}")


if __name__ == "__main__":
    main()
