"""Does curation pay? Train the same small model on raw vs curated noisy built-in data for the same steps.

Writes a noisy caption dataset from the built-in world (``cliplab.curate.write_noisy_world``: mismatched
captions, near-duplicate images, an over-represented shape, short and non-Latin captions), curates it with
``cliplab.curate.curate`` (caption length and script rules, CLIP-score top fraction scored by ``builtin:shapes``,
image near-duplicates, MetaCLIP balancing over the shape names), trains the same model from scratch on each for
the same steps (DataComp's fixed-compute protocol) and prints zero-shot shape accuracy and retrieval recall@1 on
the clean test split, plus how well each filter found the injected noise.

    python benchmarks/curation_gain.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

MODEL = {"image_size": 32, "patch_size": 8, "vision_width": 64, "vision_layers": 2, "vision_heads": 2,
         "text_width": 64, "text_layers": 2, "text_heads": 2, "context_length": 16, "embed_dim": 64}  # fmt: skip


def train_on(data: Path, out: Path, steps: int, seed: int) -> dict:
    from cliplab.data.shapes_world import VOCABULARY
    from cliplab.train import train

    config = {
        "model": {"config": MODEL, "extra_vocabulary": VOCABULARY},
        "data": str(data),
        "optimizer": {"lr": 1e-3, "weight_decay": 0.1},
        "schedule": {"name": "cosine", "warmup_steps": min(50, steps // 5)},
        "eval": {
            "zeroshot": "shapes:n=500,image_size=32",
            "retrieval": "shapes:n=300,objects=mixed,image_size=32",
            "split": "test",
        },  # fmt: skip
        "steps": steps,
        "batch_size": 64,
        "log_every": 0,
        "output_dir": str(out),
        "seed": seed,
    }
    t0 = time.perf_counter()
    summary = train(config, progress=False)
    return {"seconds": round(time.perf_counter() - t0, 1), **summary["eval"]}


def main() -> None:
    from cliplab.curate import CurateConfig, curate_dataset, write_noisy_world
    from cliplab.data.shapes_world import SHAPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n", type=int, default=1500, help="distinct images in the noisy data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # no unreadable files here: the trainer (rightly) refuses them, so the raw run could not train
        raw = write_noisy_world(root / "raw", n=args.n, seed=args.seed, unreadable=0.0)
        noise = json.loads((root / "raw" / "noise.json").read_text())
        t0 = time.perf_counter()
        config = CurateConfig(min_words=2, min_latin=0.9, clip_top_fraction=0.65, dedup="images",
                              dedup_threshold=0.97, concepts=list(SHAPES), balance_t=args.n // 4,
                              model="builtin:shapes")  # fmt: skip
        report = curate_dataset(raw, root / "curated.csv", config, progress=False)
        curate_s = time.perf_counter() - t0
        removed = {r["row"] for r in report["removed"]}
        found = {k: (sum(i in removed for i in rows), len(rows)) for k, rows in noise["rows"].items() if rows}
        noisy = {i for rows in noise["rows"].values() for i in rows}
        precision = len(removed & noisy) / max(1, len(removed))
        runs = {name: train_on(path, root / f"run-{name}", args.steps, args.seed)
                for name, path in (("raw", raw), ("curated", root / "curated.csv"))}  # fmt: skip
    result = {"counts": report["counts"], "noise_removed": found, "precision": precision,
              "curate_seconds": round(curate_s, 1), "runs": runs}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    c = report["counts"]
    print(f"raw: {c['input_pairs']} pairs / {c['input_images']} images; curated: {c['kept_pairs']} / "
          f"{c['kept_images']} ({curate_s:.1f} s); removed by filter: {c['by_filter']}")  # fmt: skip
    print("injected noise removed: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in found.items()))
    print(f"share of removed pairs that carried injected noise: {precision:.3f}")
    print(f"{'metric (test split)':<34}{'raw':>8}{'curated':>9}{'diff':>8}")
    for key in sorted(runs["raw"]):
        x, y = runs["raw"][key], runs["curated"][key]
        if isinstance(x, float) and key != "seconds":
            print(f"{key:<34}{x:>8.3f}{y:>9.3f}{y - x:>+8.3f}")
    print(
        f"train seconds: raw {runs['raw']['seconds']}, curated {runs['curated']['seconds']} ({args.steps} steps each)"
    )


if __name__ == "__main__":
    main()
