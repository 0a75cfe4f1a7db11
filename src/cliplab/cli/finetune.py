"""``cliplab finetune CONFIG``: robust fine-tuning (CE head, FLYP, CLIPood) and the WiSE-FT α sweep.

Writes ``<output_dir>/model`` (the fine-tuned model, Hugging Face format, when the model can be saved),
``<output_dir>/head.safetensors`` (the classification head ``[C, D]`` and its class names),
``<output_dir>/results.json`` (ID and shifted accuracy per α) and, with ``checkpoint_every``,
``<output_dir>/checkpoints`` (``--resume`` continues from the latest).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliplab.cli import preflight
from cliplab.cli.common import default_output_dir, positive_int, print_json, print_table
from cliplab.cli.preflight import load_config

if TYPE_CHECKING:
    from cliplab.data.spec import DataSpec


def add_finetune(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab finetune`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser(
        "finetune",
        help="robust fine-tuning (zero-shot-initialised head, FLYP, CLIPood) with the WiSE-FT alpha sweep",
        description="Fine-tune from a YAML/JSON config (see configs/finetune-shapes.yaml); reports accuracy on "
        "the training distribution and under shift for each WiSE-FT alpha.",
    )
    p.add_argument("config", help="fine-tuning config (.yaml, .yml or .json)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output dir")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--steps", type=positive_int, default=None, help="override the number of optimizer steps")
    p.add_argument("--device", default=None, help="override the device (default: cuda if available, else cpu)")
    p.add_argument("--shift-data", action="append", default=None, help="a shifted test set (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log messages")
    return p


def check(config: Any) -> tuple[DataSpec, DataSpec, list[DataSpec]]:
    """Every spec and the output directory of a fine-tuning config, before any work.

    Returns the data specs, each parsed once: ``(data, eval.data, eval.shift)``.
    """
    preflight.output_dir(config.output_dir, "output_dir")
    preflight.model(config.model, "model")
    data = preflight.data(config.data, "data", split=config.split)
    if config.eval.data:
        eval_data = preflight.data(config.eval.data, "eval.data", split=config.eval.split)
    else:
        eval_data = preflight.data(data, "eval.data", split=config.eval.split)
    shift = [
        preflight.data(spec, f"eval.shift[{i}]", split=config.eval.split) for i, spec in enumerate(config.eval.shift)
    ]
    return data, eval_data, shift


def _save(clf: Any, out: Path) -> dict[str, str]:
    from safetensors.torch import save_file

    from cliplab._io import atomic_path

    written = {}
    if clf.model.can_save:
        clf.model.save(out / "model")
        written["model"] = str(out / "model")
    with atomic_path(out / "head.safetensors") as tmp:
        save_file(
            {"head": clf.head.detach().float().cpu().contiguous()},
            str(tmp),
            metadata={"classnames": json.dumps(clf.classnames)},
        )
    written["head"] = str(out / "head.safetensors")
    return written


def run(args: argparse.Namespace) -> int:
    from cliplab._io import to_jsonable, write_text_atomic
    from cliplab.data import load_dataset
    from cliplab.finetune import ImageClassifier, finetune, robustness_sweep
    from cliplab.finetune.config import FinetuneConfig
    from cliplab.models import load_model

    config = load_config(FinetuneConfig, args, "fine-tuning config")
    if args.shift_data:
        config = config.replace(eval=type(config.eval)(**{**config.eval.__dict__, "shift": list(args.shift_data)}))
    data, eval_data, shift = check(config)
    default_output_dir(config.output_dir, FinetuneConfig.output_dir)  # runs/finetune: a .gitignore of '*'
    progress = not args.quiet
    model = load_model(config.model, device=config.device)
    train = load_dataset(data, split=config.split)
    clf = finetune(
        model,
        train,
        method=config.method,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        precision=config.precision,
        grad_checkpointing=config.grad_checkpointing,
        templates=config.templates,
        mms_lambda=config.mms_lambda,
        bma_beta=config.bma_beta,
        seed=config.seed,
        output_dir=config.output_dir,
        checkpoint_every=config.checkpoint_every,
        resume="auto" if args.resume else False,
        progress=progress,
    )
    out = Path(config.output_dir)
    summary: dict[str, Any] = {"config": config.to_dict(), **clf.info, "outputs": _save(clf, out)}
    id_test = load_dataset(eval_data, split=config.eval.split)
    if config.eval.shift:
        shifted = {text: load_dataset(spec, split=config.eval.split) for text, spec in zip(config.eval.shift, shift)}
        zs = ImageClassifier.zero_shot(model, clf.classnames, clf.templates)
        summary["robustness"] = robustness_sweep(
            zs, clf, id_test, shifted, alphas=config.eval.alphas, progress=progress
        )
    else:
        summary["id_accuracy"] = clf.accuracy(id_test)
    write_text_atomic(out / "results.json", json.dumps(to_jsonable(summary), indent=2) + "\n")
    if args.json:
        print_json(summary)
        return 0
    if "robustness" in summary:
        r = summary["robustness"]
        rows = [[a, i, o] for a, i, o in zip(r["alphas"], r["id"], r["ood_mean"])]
        print_table(rows, ["alpha", "ID acc", "shifted acc"], title=f"WiSE-FT ({config.method}, {config.steps} steps)")
    else:
        print_table([["ID accuracy", summary["id_accuracy"]]], ["", "value"], title=f"fine-tuned ({config.method})")
    print(f"results: {out / 'results.json'}")
    return 0
