"""Few-shot adapters: fit + predict time at ImageNet scale on synthetic CLIP-like features.

Default problem: 1000 classes × 16 shots × 1024-d support set, 50 000 queries (the ImageNet val size),
1024-d auxiliary features for AMU. Baseline (named): scikit-learn ``LogisticRegression`` (lbfgs,
``max_iter`` = ``--sk-iter``, ``tol`` = 1e-5 like ``LinearProbe``) fitted on the same support set and
predicting the same queries; the ratio column is method wall seconds / baseline wall seconds. The
``cpu s`` column is the process CPU time (both threads), a load-independent measure on a busy
machine. Goals: each training-free method (ZeroShot, TipAdapter, GDA) fits and predicts in < 2 s;
every method together in < 60 s. The trained methods run with reduced epochs/iterations here
(flags below); the floor line is one zero-shot product, the least any method can cost.

    python benchmarks/adapt.py [--classes 1000] [--shots 16] [--dim 1024] [--queries 50000]
                               [--methods ZeroShot,GDA,...] [--tipf-epochs 1] [--sk-iter 30] [--repeat 1]
                               [--no-baseline] [--base-to-new]

``--base-to-new`` adds one row: GDA fitted on the first half of the classes and ``GDA.new_class_logits`` on
the other half (the official ``main_base2new.py`` classifier: one shrunk covariance per new class, inverted).
"""

from __future__ import annotations

import argparse
import os
import time

# On a shared (oversubscribed) machine OpenMP's default spin-waiting makes small parallel ops 10-50×
# slower and the timings erratic; passive waiting costs nothing measurable on the large products here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cliplab.adapt import AMU, GDA, CLIPAdapter, LinearProbe, LPPlusPlus, TipAdapter, TipAdapterF, ZeroShot  # noqa: E402


def synthetic(classes: int, shots: int, dim: int, queries: int, aux_dim: int, seed: int = 0):
    """CLIP-like features: a shared image/text offset (the modality gap), class directions, noise;
    text weights are noisy class directions so zero-shot is mediocre and the support set informative."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(2, dim, generator=g)
    common = F.normalize(torch.stack([common[0], common[1] + 0.4 * common[0]]), dim=1)  # image·text cos ≈ 0.3
    Q = torch.linalg.qr(common.T).Q
    mu = torch.randn(classes, dim, generator=g)
    mu = F.normalize(mu - (mu @ Q) @ Q.T, dim=1)  # class directions orthogonal to the offsets
    proj = torch.randn(aux_dim, dim, generator=g) / dim**0.5

    def sample(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.normalize(5.0 * common[0] + mu[y] + 4.0 * torch.randn(len(y), dim, generator=g) / dim**0.5, dim=1)
        noise = 4.0 * torch.randn(len(y), aux_dim, generator=g) / aux_dim**0.5
        return f, F.normalize(mu[y] @ proj.T + noise, dim=1)

    y = torch.arange(classes).repeat_interleave(shots)
    yq = torch.randint(classes, (queries,), generator=g)
    X, A = sample(y)
    Xq, Aq = sample(yq)
    W = F.normalize(5.0 * common[1] + mu + 1.5 * torch.randn(classes, dim, generator=g) / dim**0.5, dim=1)
    return X, A, y, Xq, Aq, yq, W


def timed(fn):
    """``(result, wall seconds, CPU seconds of this process)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--aux-dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--methods", default="ZeroShot,TipAdapter,GDA,TipAdapterF,LinearProbe,CLIPAdapter,LPPlusPlus,AMU")
    ap.add_argument("--tipf-epochs", type=int, default=1, help="Tip-Adapter-F epochs (official: 20)")
    ap.add_argument("--epochs", type=int, default=5, help="CLIP-Adapter / AMU epochs (defaults: 20)")
    ap.add_argument("--lpp-iters", type=int, default=30, help="LP++ iterations (default 300)")
    ap.add_argument("--lp-iter", type=int, default=30, help="LinearProbe L-BFGS iterations, C fixed at --lp-C")
    ap.add_argument("--lp-C", type=float, default=1.0)
    ap.add_argument("--sk-iter", type=int, default=30, help="scikit-learn LogisticRegression max_iter")
    ap.add_argument("--repeat", type=int, default=1, help="report the fastest of this many runs per method")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--base-to-new", action="store_true", help="also time GDA's new-class classifier")
    args = ap.parse_args()

    X, A, y, Xq, Aq, yq, W = synthetic(args.classes, args.shots, args.dim, args.queries, args.aux_dim)
    factories = {
        "ZeroShot": ZeroShot,
        "TipAdapter": TipAdapter,
        "GDA": GDA,
        "TipAdapterF": lambda: TipAdapterF(epochs=args.tipf_epochs),
        "LinearProbe": lambda: LinearProbe(C=args.lp_C, max_iter=args.lp_iter),
        "CLIPAdapter": lambda: CLIPAdapter(epochs=args.epochs, batch_size=256),
        "LPPlusPlus": lambda: LPPlusPlus(epochs=args.lpp_iters),
        "AMU": lambda: AMU(epochs=args.epochs, batch_size=256),
    }
    # Warm-up: first-use imports (the optimiser pulls in torch._dynamo) and thread pools.
    TipAdapterF(epochs=1).fit(X[:64], y[:64], text_weights=W).predict(Xq[:8])
    shapes = f"support {tuple(X.shape)}, {args.classes} classes, queries {tuple(Xq.shape)}"
    print(f"{shapes}, threads {torch.get_num_threads()}")

    load0 = os.getloadavg()[0]
    rows = []  # (name, fit wall, predict wall, cpu, accuracy)
    if not args.no_baseline:
        from sklearn.linear_model import LogisticRegression

        Xn, yn, Xqn = X.numpy(), y.numpy(), Xq.numpy()
        clf = LogisticRegression(C=args.lp_C, max_iter=args.sk_iter, tol=1e-5)  # LinearProbe's tolerance
        _, fit_s, fit_c = timed(lambda: clf.fit(Xn, yn))
        pred, pred_s, pred_c = timed(lambda: clf.predict(Xqn))
        name = f"sklearn LogisticRegression(C={args.lp_C}, lbfgs, {int(clf.n_iter_[0])}/{args.sk_iter} iter)"
        rows.append((name, fit_s, pred_s, fit_c + pred_c, float(np.mean(pred == yq.numpy()))))
    _, floor_s, floor_c = timed(lambda: Xq @ W.T)
    for name in args.methods.split(","):
        fit_kw = {"aux_features": A} if name == "AMU" else {}
        pred_kw = {"aux_features": Aq} if name == "AMU" else {}
        runs = []
        for _ in range(args.repeat):  # the fastest of --repeat runs (timings on a shared machine are noisy)
            est = factories[name]()
            _, fit_s, fit_c = timed(lambda est=est, kw=fit_kw: est.fit(X, y, text_weights=W, **kw))
            pred, pred_s, pred_c = timed(lambda est=est, kw=pred_kw: est.predict(Xq, **kw))
            runs.append((repr(est), fit_s, pred_s, fit_c + pred_c, float((pred == yq).float().mean())))
        rows.append(min(runs, key=lambda r: r[1] + r[2]))

    if args.base_to_new:
        half = args.classes // 2
        keep = y < half
        gda = GDA().fit(X[keep], y[keep], text_weights=W[:half])
        _, fit_s, fit_c = timed(lambda: gda.fit(X[keep], y[keep], text_weights=W[:half]))
        logits, pred_s, pred_c = timed(lambda: gda.new_class_logits(Xq, W[half:]))
        new = yq >= half
        acc = float((logits[new].argmax(1) == yq[new] - half).float().mean())
        rows.append((f"GDA base {half} -> new {args.classes - half} classes", fit_s, pred_s, fit_c + pred_c, acc))

    base = rows[0][1] + rows[0][2] if not args.no_baseline else None
    print(f"\n{'method':<64} {'fit s':>7} {'pred s':>7} {'total s':>8} {'cpu s':>7} {'vs base':>8} {'acc':>6}")
    for name, fit_s, pred_s, cpu_s, acc in rows:
        ratio = f"{(fit_s + pred_s) / base:8.3f}" if base else f"{'-':>8}"
        print(f"{name[:64]:<64} {fit_s:7.2f} {pred_s:7.2f} {fit_s + pred_s:8.2f} {cpu_s:7.2f} {ratio} {acc:6.3f}")
    methods_total = sum(r[1] + r[2] for r in rows[0 if args.no_baseline else 1 :])
    print(f"\nall cliplab methods: {methods_total:.1f} s wall")
    shape = f"[{len(Xq)}×{X.shape[1]}]·[{X.shape[1]}×{args.classes}]"
    print(f"floor: one {shape} matmul (= zero-shot logits) {floor_s:.2f} s ({floor_c:.2f} cpu s)")
    print(f"load average (1 min) before/after: {load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
