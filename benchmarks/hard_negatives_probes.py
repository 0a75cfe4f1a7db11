"""Effect of training with hard-negative captions (``loss.hard_negatives``) on the built-in compositional probes.

Trains the same small model from scratch on the built-in world twice — plain CLIP loss, then with one rewritten
caption per caption as extra negatives — for the same steps, seed and data, and prints probe accuracy per
negative type on the test split, zero-shot shape accuracy and retrieval R@1 for both.

    python benchmarks/hard_negatives_probes.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

MODEL = {"image_size": 32, "patch_size": 8, "vision_width": 64, "vision_layers": 2, "vision_heads": 2,
         "text_width": 64, "text_layers": 2, "text_heads": 2, "context_length": 16, "embed_dim": 64}  # fmt: skip


def train_and_probe(out: Path, steps: int, hard: dict | None, n_train: int, seed: int) -> dict:
    from cliplab.models import load_model
    from cliplab.probes import builtin_probe, evaluate_probe
    from cliplab.train import train

    config = {
        "model": {"config": MODEL},
        "data": f"shapes:n={n_train},objects=mixed,image_size=32",
        "loss": {"name": "clip", **({"hard_negatives": hard} if hard else {})},
        "optimizer": {"lr": 1e-3, "weight_decay": 0.1},
        "schedule": {"name": "cosine", "warmup_steps": min(50, steps // 5)},
        "eval": {"zeroshot": "shapes:n=300,image_size=32", "retrieval": "shapes:n=200,objects=mixed,image_size=32"},
        "steps": steps,
        "batch_size": 64,
        "log_every": 0,
        "output_dir": str(out),
        "seed": seed,
    }
    t0 = time.perf_counter()
    summary = train(config, progress=False)
    seconds = time.perf_counter() - t0
    model = load_model(summary["model_dir"])
    probe = evaluate_probe(model, builtin_probe("test", n=400, seed=seed, image_size=32), cache_dir=False)
    return {"seconds": round(seconds, 1), "eval": summary["eval"], "probes": probe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-caption", type=int, default=2, help="hard negatives per caption")
    parser.add_argument("--types", default=None, help="comma-separated rewrite types (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    hard = {"per_caption": args.per_caption, **({"types": args.types.split(",")} if args.types else {})}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: train_and_probe(Path(tmp) / name, args.steps, options, args.n_train, args.seed)
                for name, options in (("plain", None), ("hard_negatives", hard))}  # fmt: skip
    if args.json:
        print(json.dumps(runs, indent=2))
        return
    a, b = runs["plain"]["probes"], runs["hard_negatives"]["probes"]
    print(f"{'probe type':<16}{'plain':>8}{'hard neg':>10}{'diff':>8}")
    for k in a["by_type"]:
        x, y = a["by_type"][k]["accuracy"], b["by_type"][k]["accuracy"]
        print(f"{k:<16}{x:>8.3f}{y:>10.3f}{y - x:>+8.3f}")
    print(f"{'mean over types':<16}{a['macro_accuracy']:>8.3f}{b['macro_accuracy']:>10.3f}"
          f"{b['macro_accuracy'] - a['macro_accuracy']:>+8.3f}")  # fmt: skip
    for key in sorted(runs["plain"]["eval"]):
        x, y = runs["plain"]["eval"][key], runs["hard_negatives"]["eval"][key]
        if isinstance(x, float):
            print(f"{key:<32}{x:>8.3f}{y:>10.3f}{y - x:>+8.3f}")
    print(f"train seconds: plain {runs['plain']['seconds']}, hard negatives {runs['hard_negatives']['seconds']}")


if __name__ == "__main__":
    main()
