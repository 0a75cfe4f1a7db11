"""TPT on the built-in world's pattern task: the reference's views (AugMix on / off) and CoOp + TPT vs CoOp.

The setting of the prompt-learning table in docs/prompt-learning.md: ``builtin:shapes``,
``shapes:task=pattern,n=400`` (400 train / 400 test images), 16 shots, seeds 1–3, ``run_prompt_few_shot``
with the learning rate picked on validation images from the training split (``val_shots=16``). Rows, all
measured in the same run: zero-shot, CoOp, TPT from "a photo of a" with the reference's views (AugMix, the
reference's rule for a non-ImageNet set) and with plain crops, CoOp + TPT (TPT from each seed's learned CoOp
context) with both views. Printed per row: accuracy mean ± std over the seeds, the difference to zero-shot
and to CoOp, and the wall time; the machine's load average before and after.

    python benchmarks/tpt_accuracy.py [--n-test 400] [--seeds 1,2,3] [--views 64]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from cliplab.adapt.prompting import run_prompt_few_shot  # noqa: E402
from cliplab.data import load_dataset  # noqa: E402
from cliplab.models import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:shapes")
    ap.add_argument("--n-test", type=int, default=400, help="test images (the table's 400)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--views", type=int, default=64, help="TPT views per image, the original included")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    model = load_model(args.model)
    train = load_dataset("shapes:task=pattern,n=400", split="train")
    test = load_dataset(f"shapes:task=pattern,n={args.n_test}", split="test")
    common = {"shots": [16], "seeds": seeds, "val_shots": 16, "progress": False}
    tpt = {"n_views": args.views}
    runs = [
        ("CoOp", "coop", {}),
        ("TPT, AugMix views (reference)", "tpt", {**tpt, "augmix": True}),
        ("TPT, crops only", "tpt", {**tpt, "augmix": False}),
        ("CoOp+TPT, AugMix views (reference)", "coop_tpt", {**tpt, "augmix": True}),
        ("CoOp+TPT, crops only", "coop_tpt", {**tpt, "augmix": False}),
    ]
    rows, zeroshot = [], None
    for label, method, params in runs:
        t0 = time.perf_counter()
        res = run_prompt_few_shot(model, train, test, methods=[method], params={method: params}, **common)
        wall = time.perf_counter() - t0
        r = res["results"][method][16]
        zeroshot = res["zeroshot"]
        rows.append((label, r["runs"], wall))
        print(f"{label}: runs {[round(a, 4) for a in r['runs']]} ({wall:.0f} s)", flush=True)

    coop = float(np.mean(rows[0][1]))
    print(f"\nmodel {model.spec}; pattern task, 16 shots, seeds {seeds}, {len(test)} test images, {args.views} views")
    print(f"{'method':<38}{'accuracy':>16}{'- zero-shot':>13}{'- CoOp':>9}{'wall s':>9}")
    print(f"{'zero-shot':<38}{zeroshot:>16.3f}{0:>13.3f}{zeroshot - coop:>9.3f}{'':>9}")
    for label, accs, wall in rows:
        m, s = float(np.mean(accs)), float(np.std(accs))
        print(f"{label:<38}{f'{m:.3f} ± {s:.3f}':>16}{m - zeroshot:>13.3f}{m - coop:>9.3f}{wall:>9.0f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
