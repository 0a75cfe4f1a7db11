"""Pointing game on the built-in world: does the spatial map of "a <colour> <shape>" peak on that object?

Images with two objects that differ in colour or shape; each object is queried with "a <colour> <shape>.". A hit:
the map's maximum patch has its centre nearer the queried object's centre than the other object's (the world's
exact object centres). Chance: the share of patches nearer the queried object (a uniformly random patch).

Maps (``cliplab.towers.saliency``): the direct effect of the patch tokens through every layer's attention (and
through the last layer's only), and gradient × input summed per patch.

    PYTHONPATH=src python benchmarks/pointing_game.py [--model builtin:shapes] [--n 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import cliplab
from cliplab.data.shapes_world import COLOURS, SHAPES
from cliplab.towers import vit_tower
from cliplab.towers.saliency import direct_effect_map, gradient_times_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    model = cliplab.load_model(args.model, device="cpu")
    ds = cliplab.data.shapes("test", n=args.n, seed=0, objects=2)
    attrs = ds._a  # the world's object table: centres (x, y) and radii as fractions of the side
    pairs = np.stack([attrs["shape"], attrs["colour"]], -1)  # [n, 2 objects, (shape, colour)]
    keep = [i for i in range(args.n) if tuple(pairs[i, 0]) != tuple(pairs[i, 1])]
    images = ds.images(keep)
    px = model.preprocess.batch(images)
    gh, gw = vit_tower(model).grid
    centres = np.stack(np.meshgrid((np.arange(gw) + 0.5) / gw, (np.arange(gh) + 0.5) / gh), -1).reshape(-1, 2)
    n_layers = vit_tower(model).layers
    methods = {
        "direct effect, all layers": lambda t: direct_effect_map(model, px, t),
        "direct effect, last layer": lambda t: direct_effect_map(model, px, t, layers=[n_layers - 1]),
        "gradient x input (per patch)": lambda t: gradient_times_input(model, px, t, per_patch=True),
    }
    texts = sorted({f"a {COLOURS[c]} {SHAPES[s]}." for c in range(len(COLOURS)) for s in range(len(SHAPES))})
    tf = model.encode_texts(texts, precision="fp32")
    index = {t: j for j, t in enumerate(texts)}
    print(f"{args.model}: {len(keep)} two-object images, {2 * len(keep)} queries, {gh}x{gw} patches")
    chance = []
    for obj in (0, 1):
        for i in keep:
            xy = attrs["xy"][i]
            d = np.linalg.norm(centres[:, None] - xy[None], axis=-1)  # [patches, 2]
            chance.append(float((d[:, obj] < d[:, 1 - obj]).mean()))
    print(f"  {100 * np.mean(chance):5.1f}%  chance (a random patch)")
    for name, fn in methods.items():
        start = time.perf_counter()
        maps = fn(tf)  # [B, M, gh, gw]
        seconds = time.perf_counter() - start
        hits = []
        for obj in (0, 1):
            for b, i in enumerate(keep):
                q = index[f"a {COLOURS[attrs['colour'][i, obj]]} {SHAPES[attrs['shape'][i, obj]]}."]
                best = int(torch.as_tensor(maps[b, q]).flatten().argmax())
                d = np.linalg.norm(centres[best] - attrs["xy"][i], axis=-1)
                hits.append(d[obj] < d[1 - obj])
        print(f"  {100 * np.mean(hits):5.1f}%  {name}  ({1000 * seconds / len(keep):.1f} ms/image for "
              f"{len(texts)} texts)")  # fmt: skip


if __name__ == "__main__":
    main()
