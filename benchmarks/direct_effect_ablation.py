"""Mean-ablation of direct effects (Gandelsman et al., ICLR 2024, Sec. 3.2; ``compute_ablations.py`` of
yossigandelsman/clip_text_span) on the built-in model: zero-shot accuracy when parts of the image embedding are
replaced by their mean over the evaluation set.

Contributions are taken from the decomposition normalised by each image's embedding norm (as the reference
stores them) and the means are over the same set (as the reference does on ImageNet val). Rows:

- baseline: the sum of all parts (equals the model's own zero-shot accuracy);
- MLPs + embedding mean-ablated (the reference's "MLPs ablation": its ``mlps`` include the embedding term);
- attention layers ``0..k`` mean-ablated (accumulated, every MLP kept), for each ``k``;
- every direct effect of the layers before the last ``n`` (attention, MLP) and the embedding mean-ablated,
  the last ``n`` layers' attention and MLP kept;
- as above, but every MLP mean-ablated too (only the last ``n`` layers' attention kept).

    PYTHONPATH=src python benchmarks/direct_effect_ablation.py [--model builtin:shapes] [--n 1000]
                                                               [--tasks shape,colour] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import cliplab
from cliplab.explain import decompose


def accuracy(features: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> float:
    return float(((features @ weights.T).argmax(1) == labels).float().mean() * 100)


def run(model_spec: str, task: str, n: int) -> dict:
    model = cliplab.load_model(model_spec, device="cpu")
    ds = cliplab.data.shapes("test", n=n, seed=0, task=task)
    weights = cliplab.zeroshot_weights(model, ds.classnames, ds.templates)
    labels = torch.as_tensor(ds.labels)
    start = time.perf_counter()
    d = decompose(model, ds.images(range(n)), layers=()).normalized()
    seconds = time.perf_counter() - start
    n_layers = d.attention.shape[1]
    everything = range(n_layers)
    own = model.encode_images(ds.images(range(n)), precision="fp32")
    rows = {
        "model (encode_images)": accuracy(own, weights, labels),
        "baseline (sum of parts)": accuracy(d.total(), weights, labels),
        "MLPs + embedding mean-ablated": accuracy(d.mean_ablated(mlp=everything, embedding=True), weights, labels),
    }
    for k in range(n_layers):
        rows[f"attention layers 0..{k} mean-ablated"] = accuracy(
            d.mean_ablated(attention=range(k + 1)), weights, labels
        )
    for keep in range(1, n_layers):
        early = range(n_layers - keep)
        rows[f"all but the last {keep} layer(s)' direct effects mean-ablated (attention, MLP, embedding)"] = accuracy(
            d.mean_ablated(attention=early, mlp=early, embedding=True), weights, labels
        )
    for keep in range(1, n_layers):
        if keep < n_layers:
            rows[f"all but the last {keep} layer(s)' attention mean-ablated (MLPs, embedding too)"] = accuracy(
                d.mean_ablated(attention=range(n_layers - keep), mlp=everything, embedding=True), weights, labels
            )
    return {"model": model_spec, "task": task, "n": n, "classes": len(ds.classnames), "layers": n_layers,
            "decompose_seconds": round(seconds, 2), "accuracy": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--tasks", default="shape,colour")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = [run(args.model, task, args.n) for task in args.tasks.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"\n{r['model']}, task {r['task']}: {r['n']} test images, {r['classes']} classes, "
              f"{r['layers']} layers (decomposition {r['decompose_seconds']} s)")  # fmt: skip
        for name, acc in r["accuracy"].items():
            print(f"  {acc:6.2f}%  {name}")


if __name__ == "__main__":
    main()
