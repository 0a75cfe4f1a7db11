"""Speed of the OOD scores, OOD/calibration metrics and accuracy estimators at ImageNet-like scale.

Synthetic data: N test features [N, D] (default 50 000 × 768), C = 1000 classes, linear head W, b;
a 200 000 × 768 training set for ViM's fit. Goals: every score (and metric/estimator) < 2 s on
N × C; ViM fit on 200k × 768 < 30 s. Fits other than ViM's are reported without a goal.

    python benchmarks/reliability.py [--n 50000] [--dim 768] [--classes 1000] [--train 200000]
                                     [--knn-bank 10000] [--negatives 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from cliplab.estimate import atc, average_confidence, doc, mano, nuclear_norm
from cliplab.metrics import (
    LogitNormConfidence,
    TemperatureScaling,
    aurc,
    ece,
    logit_norm_confidence,
    ood_metrics,
)
from cliplab.ood import KNN, Mahalanobis, NegLabel, ViM, energy, max_logit, mcm, msp

CPU_S: list[float] = []  # process CPU seconds of the best run of each timed() call


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    CPU_S.append(cpu)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--train", type=int, default=200_000)
    ap.add_argument("--knn-bank", type=int, default=10_000)
    ap.add_argument("--negatives", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (fits: 1 run)")
    args = ap.parse_args()
    n, d, c, r = args.n, args.dim, args.classes, args.repeat

    g = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=1)
    b = torch.randn(c, generator=g) * 0.1

    def features(m: int) -> tuple[torch.Tensor, torch.Tensor]:  # class weight + noise: ~67% top-1
        y = torch.randint(0, c, (m,), generator=g)
        return W[y] + torch.randn(m, d, generator=g) * 0.25, y

    x, y = features(n)
    logits = torch.addmm(b, x, W.T) * 10
    rows: list[tuple[str, str, float, float, float | None]] = []

    def add(name: str, shape: str, seconds: float, goal: float | None = 2.0) -> None:
        rows.append((name, shape, seconds, CPU_S[-1], goal))
        print(f"  {name:<34}{seconds:8.3f} s", flush=True)

    nc = f"{n}×{c}"
    for name, fn in (("msp", msp), ("max_logit", max_logit), ("energy", energy)):
        add(name, nc + " logits", timed(lambda fn=fn: fn(logits), r)[0])
    add("mcm", f"{n}×{d} feats, {c} classes", timed(lambda: mcm(x, W), r)[0])

    x_train, y_train = features(args.train)
    t, vim = timed(lambda: ViM().fit(x_train, W, b), 1)
    add(f"ViM fit (dim={vim.dim_})", f"{args.train}×{d}", t, 30.0)
    add("ViM score", f"{n}×{d}", timed(lambda: vim.score(x), r)[0])

    t, maha = timed(lambda: Mahalanobis().fit(x_train[:n], y_train[:n]), 1)
    add("Mahalanobis fit", f"{n}×{d}, {c} classes", t, None)
    add("Mahalanobis score", f"{n}×{d}, {c} classes", timed(lambda: maha.score(x), r)[0])

    knn = KNN(k=50).fit(x_train[: args.knn_bank])
    add("KNN score (k=50)", f"{n}×{d} vs bank {args.knn_bank}", timed(lambda: knn.score(x), r)[0])

    cand = torch.randn(int(args.negatives / 0.15), d, generator=g)
    t, nl = timed(lambda: NegLabel(n_negatives=args.negatives).fit(W, candidate_embeddings=cand), 1)
    add("NegLabel fit (mining)", f"{cand.shape[0]} candidates → {args.negatives}", t, None)
    add(
        f"NegLabel score ({nl.ngroup_} groups)",
        f"{n}×{d}, {c}+{args.negatives} labels",
        timed(lambda: nl.score(x), r)[0],
    )

    s_id, s_ood = msp(logits), msp(logits[torch.randperm(n, generator=g)] * 0.5)
    add("ood_metrics", f"{n} ID + {n} OOD", timed(lambda: ood_metrics(s_id, s_ood), r)[0])
    add("ece (15 bins)", nc, timed(lambda: ece(logits, y), r)[0])
    correct = logits.argmax(1) == y
    add("aurc", f"{n}", timed(lambda: aurc(s_id, correct), r)[0])
    add("logit_norm_confidence", nc, timed(lambda: logit_norm_confidence(logits, 2.0), r)[0])
    add("TemperatureScaling fit", nc, timed(lambda: TemperatureScaling().fit(logits, y), 1)[0], None)
    fit_lnc = timed(lambda: LogitNormConfidence().fit(logits, y), 1)[0]
    add("LogitNormConfidence fit (p=0..9)", nc, fit_lnc, None)

    half = n // 2
    add("mano", nc, timed(lambda: mano(logits), r)[0])
    add("nuclear_norm", nc, timed(lambda: nuclear_norm(logits), r)[0])
    add("average_confidence", nc, timed(lambda: average_confidence(logits), r)[0])
    # ATC fits the validation temperature first (the paper's protocol): a fit, reported without a goal
    atc_s = timed(lambda: atc(logits[:half], y[:half], logits[half:]), r)[0]
    add("atc (incl. temperature fit)", f"val {half} + target {half}", atc_s, None)
    atc_t = timed(lambda: atc(logits[:half], y[:half], logits[half:], temperature=1.5), r)[0]
    add("atc, given temperature", f"val {half} + target {half}", atc_t)
    add("doc", f"val {half} + target {half}", timed(lambda: doc(logits[:half], y[:half], logits[half:]), r)[0])

    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nthreads={threads} torch={torch.__version__}; best of {r} (fits: 1 run); load average {load:.1f}")
    print("cpu/thr = process CPU seconds / threads: what the wall time would be on idle cores")
    print(f"{'operation':<36}{'input':<36}{'seconds':>9}{'cpu/thr':>9}{'goal':>8}  ok")
    for name, shape, seconds, cpu, goal in rows:
        ok = "" if goal is None else ("yes" if seconds < goal else "NO")
        goal_s = "" if goal is None else f"< {goal:g}"
        print(f"{name:<36}{shape:<36}{seconds:>9.3f}{cpu / threads:>9.3f}{goal_s:>8}  {ok}")


if __name__ == "__main__":
    main()
