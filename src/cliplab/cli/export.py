"""``cliplab export MODEL -o DIR --format onnx [--fp16]``: the encoders as ONNX graphs (``onnx:DIR`` runs them)."""

from __future__ import annotations

import argparse
import importlib.util

from cliplab.cli import preflight
from cliplab.cli.common import UsageError, print_json

FORMATS = ("onnx",)


def add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab export`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("export", help="export a model's image and text encoders (ONNX), to run with onnxruntime")
    p.add_argument("model", help="model spec (Hugging Face or open_clip CLIP-family model)")
    p.add_argument("-o", "--output", required=True, help="directory to write (replaced atomically)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default onnx)")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the size)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check after writing")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or log messages")
    return p


def run(args: argparse.Namespace) -> int:
    preflight.output_dir(args.output, "--output")
    for package in ("onnx",):  # torch.onnx writes through it; --fp16 rewrites the graphs with it
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"--format onnx needs the {package} package: pip install onnx (or 'cliplab[onnx]')")
    preflight.model(args.model)

    import torch

    from cliplab.interop.onnx_export import export_onnx
    from cliplab.models import load_model

    model = load_model(args.model, device="cpu")
    manifest = export_onnx(model, args.output, fp16=args.fp16)
    info = {"model": args.model, "output": args.output, "format": args.format, "dtype": manifest["dtype"]}
    if not args.no_check and importlib.util.find_spec("onnxruntime") is not None:
        onnx = load_model(f"onnx:{args.output}")
        size = model.preprocess.output_size or (224, 224)
        px = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        texts = ["a photo of a cat", "a diagram"]
        diff = max(
            float((onnx.encode_images(px) - model.encode_images(px)).abs().max()),
            float((onnx.encode_texts(texts) - model.encode_texts(texts)).abs().max()),
        )
        info["max_abs_feature_diff"] = diff
    if args.json:
        print_json(info)
    elif not args.quiet:
        for k, v in info.items():
            print(f"{k:>21}: {v}")
    return 0
