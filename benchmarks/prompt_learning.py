"""Prompt learning speed: CoOp on cached image features vs a naive loop that re-encodes the images every step.

Both loops run the same model (``builtin:shapes`` by default), the same batch of support images, the same
CoOp prompt and optimizer; the only difference is that the naive loop passes the pixels through the frozen
image tower at every step (what a prompt-learning code base that does not cache features does), while
cliplab's CoOp encodes the images once. Printed: steps/s of each and the ratio (cached / naive), measured in
the same run, plus the wall time of a full 16-shot CoOp run on the built-in world's pattern task (its
default 200 epochs, one seed, the protocol's validation choice of the learning rate: two fits) with its test
accuracy and zero-shot's. ``cpu s`` is process CPU time.

    python benchmarks/prompt_learning.py [--model builtin:shapes] [--steps 40] [--batch 32] [--no-full-run]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from cliplab.adapt.prompting import CoOp, run_prompt_few_shot  # noqa: E402
from cliplab.adapt.prompting.text_prompts import frozen  # noqa: E402
from cliplab.data import load_dataset  # noqa: E402
from cliplab.models import load_model  # noqa: E402


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:shapes")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-full-run", action="store_true")
    args = ap.parse_args()

    model = load_model(args.model)
    train = load_dataset("shapes:task=pattern,n=400", split="train")
    px = model.preprocess.batch([train.image(i) for i in range(args.batch)])
    y = torch.as_tensor(train.labels[: args.batch])
    feats = model.encode_images(px).clone()
    est = CoOp(epochs=0).fit(model, feats, y, train.classnames)
    prompt = est.prompt_
    opt = torch.optim.SGD([prompt.ctx], lr=0.002, momentum=0.9)

    def step(f: torch.Tensor) -> None:
        loss = F.cross_entropy(model.logits(f, prompt()), y)
        (g,) = torch.autograd.grad(loss, [prompt.ctx])
        prompt.ctx.grad = g
        opt.step()

    def cached() -> None:
        for _ in range(args.steps):
            step(feats)

    def naive() -> None:
        for _ in range(args.steps):
            with torch.no_grad():
                f = model.image_features(px)  # the same frozen forward, every step
            step(f)

    with frozen(model.module):
        cached()  # warm-up
        naive()
        t_c, cpu_c = timed(cached)
        t_n, cpu_n = timed(naive)
    print(f"model {model.spec}, batch {args.batch}, {len(train.classnames)} classes, {args.steps} steps each")
    print(f"{'loop':<28}{'steps/s':>10}{'wall s':>9}{'cpu s':>9}")
    print(f"{'naive (re-encode images)':<28}{args.steps / t_n:>10.1f}{t_n:>9.2f}{cpu_n:>9.2f}")
    print(f"{'cliplab CoOp (cached)':<28}{args.steps / t_c:>10.1f}{t_c:>9.2f}{cpu_c:>9.2f}")
    print(f"ratio cached / naive steps/s: {t_n / t_c:.2f}x")

    if not args.no_full_run:
        test = load_dataset("shapes:task=pattern,n=400", split="test")
        run_prompt_few_shot(
            model,
            train,
            test,
            methods=["coop"],
            shots=[1],
            seeds=[1],
            progress=False,
            params={"coop": {"epochs": 1}},
            search=False,
        )  # embeds (and caches) both sets first
        res = {}

        def full() -> None:
            res.update(run_prompt_few_shot(model, train, test, methods=["coop"], shots=[16], seeds=[1], progress=False))

        wall, cpu = timed(full)
        acc = res["results"]["coop"][16]["mean"]
        lr = res["params"]["coop"][16][0].get("lr")
        print(
            f"16-shot CoOp (200 epochs, lr chosen on validation from {{0.002, 0.02}}: {lr}; 1 seed, cached "
            f"features): {wall:.2f} s wall, {cpu:.2f} s cpu; test accuracy {acc:.3f} (zero-shot {res['zeroshot']:.3f})"
        )


if __name__ == "__main__":
    main()
