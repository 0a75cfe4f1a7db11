"""``cliplab train CONFIG``: train or fine-tune a model from a YAML/JSON training config."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cliplab.cli import preflight
from cliplab.cli.common import default_output_dir, positive_int, print_json, print_table
from cliplab.cli.preflight import load_config

if TYPE_CHECKING:
    from cliplab.train.config import TrainConfig


def add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab train`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser(
        "train",
        help="train or fine-tune a CLIP-family model from a config file",
        description="Contrastive training from a YAML/JSON config (see configs/shapes-tiny.yaml). "
        "Under torchrun every process trains its share of the batch.",
    )
    p.add_argument("config", help="training config (.yaml, .yml or .json)")
    p.add_argument(
        "--resume", action="store_true", help="continue exactly from the latest checkpoint in the output dir"
    )
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--steps", type=positive_int, default=None, help="override the number of optimizer steps")
    p.add_argument("--device", default=None, help="override the device (default: cuda if available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log messages")
    return p


def check(config: TrainConfig) -> None:
    """Every model and dataset spec and the output directory of a training config, before any work."""
    preflight.output_dir(config.output_dir, "output_dir")
    from cliplab.data.sources.wds import check_stream, is_stream

    if is_stream(config.data.train):  # streamed, not loaded: its shards are checked (hub ones downloaded later)
        with preflight._about("data.train"):
            check_stream(config.data.train)
    else:
        preflight.data(config.data.train, "data.train", split=config.data.split, **config.data.options)
    preflight.data(config.eval.zeroshot, "eval.zeroshot", split=config.eval.split)
    preflight.data(config.eval.retrieval, "eval.retrieval", split=config.eval.split)
    if isinstance(config.eval.templates, str):
        preflight.templates(config.eval.templates, "eval.templates", files=False)
    preflight.model(config.model.spec, "model.spec")
    if config.loss.distill is not None:
        preflight.model(config.loss.distill.teacher, "loss.distill.teacher")


def run(args: argparse.Namespace) -> int:
    from cliplab.train.config import TrainConfig
    from cliplab.train.trainer import Trainer, TrainingDiverged

    config = load_config(TrainConfig, args, "training config")
    check(config)
    default_output_dir(config.output_dir, TrainConfig.output_dir)  # runs/train: a .gitignore of '*'
    trainer = Trainer(config, progress=not args.quiet, resume=bool(args.resume))
    try:
        summary = trainer.fit()
    except TrainingDiverged as err:
        print(f"cliplab: error: {err}", file=sys.stderr)
        return 3
    if trainer.env.rank != 0:
        return 0
    if args.json:
        print_json(summary)
    else:
        rows = [["step", summary["step"]], ["loss", summary["loss"]], ["seconds", summary["seconds"]]]
        rows += [[f"eval {k}", v] for k, v in summary["eval"].items()]
        rows += [["model", summary["model_dir"]], ["checkpoint", summary["checkpoint"]]]
        print_table(rows, ["", "value"], title=f"trained {args.config}")
    return 0
