"""Training side by side with open_clip's own trainer (``open_clip_train.main``), in one run.

The same small ViT CLIP (an open_clip architecture, randomly initialised once and saved, so both trainers
start from identical weights and use open_clip's tokenizer), the same data — built-in world images as JPEG
files listed in a CSV, and the same samples as webdataset tar shards —, the same batch size, AdamW
(lr, betas, eps, weight decay), warm-up + cosine schedule and number of steps, fp32 on CPU. Baseline (named):
``open_clip_train`` on the same input. Reported per trainer and input: steps/s (mean step time of the logged
windows after the first: data loading included, start-up excluded; the median over ``--repeats`` runs, the
trainers alternating), peak memory (max RSS of the training process, ``wait4``; loader worker processes not
counted) and zero-shot top-1 on a held-out built-in split after the same steps (first run; one evaluator,
cliplab's ``PeriodicEval``, for both models).

Known differences, by design: open_clip applies weight decay to the positional/token embeddings (cliplab
exempts embeddings); open_clip_train's CSV loader decodes with torchvision transforms in ``--workers``
processes, cliplab with threads; open_clip_train draws a fresh random order per epoch with a torch sampler.

Run it with the open_clip venv's Python (it needs open_clip and open_clip_train; cliplab is installed there):

    /work/venv-oc/bin/python benchmarks/open_clip_train.py [--steps 40] [--batch-size 32] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

ARCH = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}


def write_data(root: Path, n: int, shard_size: int) -> tuple[Path, str]:
    """``n`` built-in world training images as JPEGs + a CSV (image,caption), and the same pairs as shards."""
    from cliplab.data import shapes

    ds = shapes("train", n=n, image_size=64, seed=0)
    first = {}
    for c, i in zip(ds.captions, ds.text_to_image):
        first.setdefault(int(i), c)
    (root / "img").mkdir(parents=True)
    rows, shards = [], root / "shards"
    shards.mkdir()
    tf = None
    for i in range(n):
        buf = io.BytesIO()
        ds.image(i).save(buf, format="JPEG", quality=95)
        path = root / "img" / f"{i:06d}.jpg"
        path.write_bytes(buf.getvalue())
        rows.append((str(path), first[i]))
        if i % shard_size == 0:
            if tf is not None:
                tf.close()
            tf = tarfile.open(shards / f"{i // shard_size:06d}.tar", "w")
        for ext, data in (("jpg", buf.getvalue()), ("txt", first[i].encode())):
            info = tarfile.TarInfo(f"{i:06d}.{ext}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tf.close()
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    last = (n - 1) // shard_size
    return root / "train.csv", f"{shards}/{{000000..{last:06d}}}.tar"


def make_init(root: Path) -> Path:
    """The architecture randomly initialised (seed 0) and saved in open_clip's local-dir format."""
    import open_clip

    from cliplab.models import load_model

    (root / "cfg").mkdir()
    (root / "cfg" / "bench-vit.json").write_text(json.dumps(ARCH))
    open_clip.add_model_config(root / "cfg" / "bench-vit.json")
    torch.manual_seed(0)
    model = load_model("openclip:bench-vit")
    model.save(root / "init")
    return root / "init"


def run(cmd: list[str], log: Path, pythonpath: str | None = None) -> float | None:
    """Run ``cmd``; returns the peak RSS (MiB) of that process, or None (and prints the log's end) if it failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = [x for x in log.read_text().splitlines() if not x.startswith(("I1", "W1"))][-12:]
        print(f"FAILED: {' '.join(cmd[:4])} ...:\n  " + "\n  ".join(tail))
        return None
    return usage.ru_maxrss / 1024


def open_clip_cmd(args, init: Path, data: str, kind: str, n: int, logs: Path, name: str) -> list[str]:
    cmd = [sys.executable, "-m", "open_clip_train.main", "--model", f"local-dir:{init}", "--train-data", data]
    if kind == "csv":
        cmd += ["--dataset-type", "csv", "--csv-img-key", "image", "--csv-caption-key", "caption"]
        cmd += ["--csv-separator", ","]
    else:
        cmd += ["--dataset-type", "webdataset", "--train-num-samples", str(n)]
    cmd += ["--batch-size", str(args.batch_size), "--epochs", "1", "--lr", str(args.lr), "--wd", "0.2"]
    cmd += ["--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--warmup", str(args.warmup)]
    precision = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}[args.precision]
    cmd += ["--workers", str(args.workers), "--precision", precision, "--device", args.device, "--seed", "0"]
    cmd += ["--logs", str(logs), "--name", name, "--save-frequency", "1", "--log-every-n-steps", "5"]
    return cmd


def open_clip_step_time(log: Path) -> float | None:
    times = [float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", log.read_text())]
    return float(np.mean(times[1:] if len(times) > 1 else times)) if times else None


def cliplab_cmd(args, init: Path, data: str, out: Path, root: Path) -> list[str]:
    cfg = {
        "model": f"openclip:{init}",
        "data": {"train": data, "num_workers": args.workers, "shuffle_buffer": 256, "cache_images": False},
        "steps": args.steps,
        "batch_size": args.batch_size,
        "optimizer": {"lr": args.lr, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.2},
        "schedule": {"name": "cosine", "warmup_steps": args.warmup},
        "log_every": 5,
        "precision": args.precision,
        "device": args.device,
        "output_dir": str(out),
    }
    path = root / f"{out.name}.json"
    path.write_text(json.dumps(cfg))
    return [sys.executable, "-m", "cliplab.cli.commands", "train", str(path), "--quiet", "--json"]


def cliplab_step_time(out: Path) -> float | None:
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time_s"] for r in records if r.get("step_time_s")]
    return float(np.mean(times[1:] if len(times) > 1 else times)) if times else None


def zeroshot(evaluator, init: Path, weights: dict[str, torch.Tensor] | None = None, spec: str | None = None) -> float:
    from cliplab.models import load_model

    model = load_model(spec or f"openclip:{init}")
    if weights is not None:
        model.module.load_state_dict({k.removeprefix("module."): v for k, v in weights.items()})
    return float(evaluator(model)["zeroshot_acc1"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--inputs", nargs="+", choices=["csv", "wds"], default=["csv", "wds"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--oc-pythonpath",
        default=None,
        help="prepended to open_clip_train's PYTHONPATH (e.g. a --target install of webdataset<=0.2.86, which "
        "open_clip_train needs: webdataset 1.x breaks its tar reader)",
    )
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3, help="runs per trainer and input (median step time)")
    args = ap.parse_args()
    from cliplab.train.config import EvalOptions
    from cliplab.train.evaluation import PeriodicEval

    n = args.steps * args.batch_size
    load = os.getloadavg()
    print(
        f"{n} pairs, {args.steps} steps of {args.batch_size}, {args.workers} workers, fp32 CPU; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {len(os.sched_getaffinity(0))} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv_path, shards = write_data(root / "data", n, shard_size=max(args.batch_size, n // 8))
        init = make_init(root)
        from cliplab.models import load_model

        evaluator = PeriodicEval(EvalOptions(zeroshot="shapes:n=400", split="val"), load_model(f"openclip:{init}"))
        rows = [("initial weights", "-", None, None, zeroshot(evaluator, init))]
        runs: dict[tuple[str, str], list[tuple[float | None, float | None, float | None]]] = {}
        for r in range(args.repeats):  # alternate the trainers, so load changes hit both alike
            for kind in args.inputs:
                data = str(csv_path) if kind == "csv" else shards
                name = f"oc-{kind}"
                log = root / f"{name}.log"
                subprocess.run(["rm", "-rf", str(root / "logs" / name)], check=True)
                rss = run(open_clip_cmd(args, init, data, kind, n, root / "logs", name), log, args.oc_pythonpath)
                acc = None
                if rss is not None and r == 0:
                    ckpts = sorted((root / "logs" / name / "checkpoints").glob("epoch_*.pt"))
                    sd = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
                    acc = zeroshot(evaluator, init, sd)
                step = open_clip_step_time(log) if rss is not None else None
                runs.setdefault(("open_clip_train (baseline)", kind), []).append((step, rss, acc))
                out = root / f"cl-{kind}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                spec = str(csv_path) if kind == "csv" else f"wds:{shards}"
                rss = run(cliplab_cmd(args, init, spec, out, root), root / f"cl-{kind}.log")
                acc = (
                    zeroshot(evaluator, init, spec=f"openclip:{out / 'model'}") if rss is not None and r == 0 else None
                )
                step = cliplab_step_time(out) if rss is not None else None
                runs.setdefault(("cliplab train", kind), []).append((step, rss, acc))
                base = runs[("open_clip_train (baseline)", kind)][-1][0]
                print(f"repeat {r + 1}, {kind}: s/step open_clip_train {base}, cliplab {step}", flush=True)
        for (label, kind), results in runs.items():
            steps = [x[0] for x in results if x[0] is not None]
            if steps:
                rss = max(x[1] for x in results if x[1] is not None)
                rows.append((label, kind, float(np.median(steps)), rss, results[0][2]))
    print(f"\n{'trainer':<28}{'input':<7}{'steps/s':>9}{'peak MiB':>10}{'zero-shot':>11}")
    for label, kind, step, rss, acc in rows:
        sps = "-" if step is None else f"{1 / step:.2f}"
        mem = "-" if rss is None else f"{rss:.0f}"
        zs = "-" if acc is None else f"{acc:.3f}"
        print(f"{label:<28}{kind:<7}{sps:>9}{mem:>10}{zs:>11}")
    for kind in args.inputs:
        oc = next((r for r in rows if r[0].startswith("open_clip") and r[1] == kind), None)
        cl = next((r for r in rows if r[0].startswith("cliplab") and r[1] == kind), None)
        if oc and cl and oc[2] and cl[2]:
            print(
                f"{kind}: cliplab steps/s / open_clip_train: {oc[2] / cl[2]:.2f}x (goal >= 1); "
                f"peak memory ratio {cl[3] / oc[3]:.2f}; zero-shot {cl[4]:.3f} vs {oc[4]:.3f}"
            )


if __name__ == "__main__":
    main()
