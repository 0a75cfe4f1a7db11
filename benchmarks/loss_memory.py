"""Peak memory and time of the chunked vs the materialised CLIP loss (forward + backward).

    python benchmarks/loss_memory.py                      # B = 4096, 16384, 32768; D = 512
    python benchmarks/loss_memory.py --sizes 4096 8192 --chunk-size 512 --device cuda

Each variant runs on random L2-normalised ``[B, D]`` features with a learnable scale (100):
``clip_loss(I, T, s)`` (materialised ``B × B`` logits) and ``clip_loss(..., chunk_size=C)`` (tiled).

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus the memory held before the loss. On CPU,
each measurement runs in a fresh subprocess and reports the growth of its peak resident set size
(``resource.getrusage(...).ru_maxrss``) from just before the first loss call, so it counts what the
loss allocates (logits, softmax buffers, gradients of the features) beyond the inputs. Time: the best
of ``--repeats`` forward+backward passes (the first pass is included; it also sets the peak).
Sizes whose materialised loss is estimated above ``--limit-gib`` are skipped for that variant.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from cliplab.losses import clip_loss

# The materialised loss keeps about this many B×B float32 matrices alive at its peak (logits, the two
# log-softmax outputs and their gradients; measured ≈ 4 on CPU, 5 leaves a margin): only used to skip sizes.
MATRICES_AT_PEAK = 5


def _run(batch: int, dim: int, chunk: int | None, repeats: int, device: str, seed: int = 0) -> dict:
    """Measure one variant in this process."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_(True)
    text = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_(True)
    scale = torch.tensor(100.0, device=device, requires_grad=True)
    cuda = device.startswith("cuda")
    # warm up on a small problem (same code path) so library set-up is not counted as loss memory
    small = [t.detach()[:64].clone().requires_grad_(True) for t in (image, text)]
    clip_loss(*small, scale, chunk_size=min(chunk, 32) if chunk else None).backward()
    scale.grad = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, value = [], None
    for _ in range(repeats):
        image.grad = text.grad = scale.grad = None
        start = time.perf_counter()
        loss = clip_loss(image, text, scale, chunk_size=chunk)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        value = float(loss)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"batch": batch, "chunk": chunk, "seconds": min(times), "peak_bytes": peak, "loss": value}


def _measure(batch: int, dim: int, chunk: int | None, repeats: int, device: str) -> dict:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        return _run(batch, dim, chunk, repeats, device)
    cmd = [sys.executable, __file__, "--threads", str(torch.get_num_threads())]
    cmd += ["--_child", str(batch), str(dim), str(chunk or 0), str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(n: float) -> str:
    return f"{n / 2**30:8.3f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768], help="batch sizes B")
    p.add_argument("--dim", type=int, default=512, help="feature dimension D")
    p.add_argument("--chunk-size", type=int, default=1024, help="rows per tile of the chunked loss")
    p.add_argument("--repeats", type=int, default=2, help="forward+backward passes per measurement (best time)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--limit-gib", type=float, default=16.0, help="skip materialised runs estimated above this")
    p.add_argument("--_child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        batch, dim, chunk, repeats = args._child
        print(json.dumps(_run(batch, dim, chunk or None, repeats, "cpu")))
        return

    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, D = {args.dim}, "
        f"chunk = {args.chunk_size}, forward + backward, best of {args.repeats}"
    )
    header = (
        f"{'B':>6} | {'materialised GiB':>16} {'s':>7} | {'chunked GiB':>11} {'s':>7} | "
        f"{'mem ratio':>9} {'time ratio':>10} | {'|Δloss|':>8}"
    )
    rows = []
    for batch in args.sizes:
        estimate = MATRICES_AT_PEAK * batch * batch * 4
        full = None
        if estimate > args.limit_gib * 2**30:
            print(
                f"B = {batch}: materialised loss skipped (estimated {estimate / 2**30:.1f} GiB > {args.limit_gib} GiB)"
            )
        else:
            full = _measure(batch, args.dim, None, args.repeats, args.device)
        chunked = _measure(batch, args.dim, args.chunk_size, args.repeats, args.device)
        rows.append((batch, full, chunked))
        print(f"B = {batch}: done", file=sys.stderr)
    print(header)
    print("-" * len(header))
    for batch, full, chunked in rows:
        if full is None:
            print(
                f"{batch:>6} | {'skipped':>16} {'':>7} | {_gib(chunked['peak_bytes']):>11} "
                f"{chunked['seconds']:7.2f} | {'':>9} {'':>10} |"
            )
            continue
        mem = chunked["peak_bytes"] / max(full["peak_bytes"], 1)
        tim = chunked["seconds"] / full["seconds"]
        print(
            f"{batch:>6} | {_gib(full['peak_bytes']):>16} {full['seconds']:7.2f} | {_gib(chunked['peak_bytes']):>11} "
            f"{chunked['seconds']:7.2f} | {mem:9.3f} {tim:10.2f} | {abs(full['loss'] - chunked['loss']):8.1e}"
        )


if __name__ == "__main__":
    main()
