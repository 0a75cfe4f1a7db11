"""``cliplab ood``, ``cliplab calibrate``, ``cliplab estimate``: reliability on cached features."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cliplab.cli import preflight
from cliplab.cli.common import (
    SPLIT_HELP,
    TEMPLATES_HELP,
    UsageError,
    add_common,
    cache_dir,
    load_templates,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from cliplab.data.spec import DataSpec


def add_ood(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ood", help="OOD detection: a table per OOD set and the mean over sets")
    p.add_argument("model", help="model spec")
    p.add_argument("id_data", help="in-distribution (labelled) dataset spec")
    p.add_argument("ood_data", nargs="+", help="one or more OOD dataset specs")
    p.add_argument(
        "--train-data",
        default=None,
        help="labelled ID training data for KNN/ViM/Mahalanobis (default: the train split of a "
        "built-in world; skipped otherwise)",
    )
    p.add_argument("--methods", default=None, help="comma-separated subset of methods")
    p.add_argument("--templates", default=None, help=TEMPLATES_HELP)
    p.add_argument(
        "--neglabel-words",
        choices=("auto", "wordnet", "builtin"),
        default="auto",
        help="NegLabel's candidates: WordNet nouns+adjectives (the paper's; auto uses them when WordNet is "
        "installed) or the small built-in list (the offline fallback)",
    )
    p.add_argument(
        "--wordnet", default=None, help="WordNet dict directory (default: nltk's data path, then /usr/share/wordnet)"
    )
    _shared(p)
    return p


def add_calibrate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    c = sub.add_parser("calibrate", help="calibration (ECE, temperature scaling) and selective classification")
    c.add_argument("model", help="model spec")
    c.add_argument("data", help="labelled dataset spec (test)")
    c.add_argument("--val-data", default=None, help="validation data (default: a stratified half of DATA)")
    c.add_argument("--templates", default=None, help=TEMPLATES_HELP)
    _shared(c)
    return c


def add_estimate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    e = sub.add_parser("estimate", help="label-free accuracy estimation over shifted datasets")
    e.add_argument("model", help="model spec")
    e.add_argument("data", nargs="+", help="shifted labelled datasets (>= 3), or one built-in spec with --family")
    e.add_argument("--val-data", default=None, help="ID validation data (default: the built-in val split)")
    e.add_argument(
        "--family",
        choices=["corruptions"],
        default=None,
        help="expand a built-in spec into every corruption × severity 1–5",
    )
    e.add_argument("--templates", default=None, help=TEMPLATES_HELP)
    _shared(e)
    return e


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test", help=SPLIT_HELP)
    add_common(p, skip_images=True)


class _Session:
    """Model + embedding with the CLI's cache/progress settings; zero-shot weights from the ID data."""

    def __init__(self, args: argparse.Namespace):
        from cliplab.models import load_model

        self.args = args
        self.model = load_model(args.model, device=args.device)
        self.templates = load_templates(getattr(args, "templates", None))

    def dataset(self, spec: str | DataSpec, split: str | None = None) -> Any:
        from cliplab.data import load_dataset

        return load_dataset(spec, split=split or self.args.split)

    def features(self, ds: Any) -> Any:
        from cliplab.features import embed

        a = self.args
        return embed(self.model, ds, batch_size=a.batch_size, cache_dir=cache_dir(a), progress=not a.quiet)

    def weights(self, ds: Any) -> Any:
        from cliplab.zeroshot import zeroshot_weights

        if not ds.classnames:
            raise UsageError(f"dataset {ds.name!r} has no class names; a labelled dataset is needed")
        return zeroshot_weights(self.model, ds.classnames, self.templates or ds.templates)

    def logits(self, feats: Any, weights: Any) -> Any:
        from cliplab.zeroshot import zeroshot_logits

        m = self.model
        return zeroshot_logits(feats.images, weights, m.logit_scale, m.logit_bias, m.geometry)


def _check(args: argparse.Namespace, *data: tuple[str | DataSpec | None, str, str | None]) -> dict[str, DataSpec]:
    """The shared options, ``(spec, option, split)`` data specs (split None: ``--split``) and the model.

    Returns each data spec given, parsed once: its text -> the ``DataSpec`` the command loads.
    """
    preflight.common(args)
    preflight.templates(getattr(args, "templates", None))
    parsed: dict[str, DataSpec] = {}
    for spec, option, split in data:
        if spec is not None:
            parsed[str(spec)] = preflight.data(parsed.get(str(spec), spec), option, split=split or args.split)
    preflight.model(args.model)
    return parsed


def _parse_early(spec: str) -> str | DataSpec:
    """``spec`` parsed, to decide what to check; a malformed one as given (``_check`` reports it, in order)."""
    from cliplab.data.spec import DataSpec

    try:
        return DataSpec.parse(spec)
    except ValueError:
        return spec


def run_ood(args: argparse.Namespace) -> int:
    from cliplab.assess import ood_evaluation
    from cliplab.assess.reliability import ood_methods
    from cliplab.data.spec import is_builtin_world

    methods = preflight.names(args.methods, "--methods", ood_methods()) or None
    id_spec = _parse_early(args.id_data)
    train_spec = args.train_data or (id_spec if is_builtin_world(id_spec) else None)
    parsed = _check(
        args,
        (id_spec, "ID_DATA", None),
        *((spec, "OOD_DATA", None) for spec in args.ood_data),
        (train_spec, "--train-data" if args.train_data else "ID_DATA", "train"),
    )
    s = _Session(args)
    id_ds = s.dataset(parsed[args.id_data])
    id_feats = s.features(id_ds)
    ood = {}
    for spec in args.ood_data:
        ds = s.dataset(parsed[spec])
        ood[spec] = s.features(ds)
    train = None if train_spec is None else s.features(s.dataset(parsed[str(train_spec)], split="train"))
    res = ood_evaluation(
        id_feats,
        ood,
        s.weights(id_ds),
        s.model.logit_scale,
        train_features=train,
        encode_texts=s.model.encode_texts,
        methods=methods,
        neglabel_options={"source": args.neglabel_words, "wordnet_root": args.wordnet},
    )
    if args.json:
        print_json(res)
        return 0
    cols = ["auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_vim", "fpr95_mcm", "fpr95_openood"]
    for name, table in [*res["sets"].items(), ("mean over OOD sets", res["mean"])]:
        print_table(
            [[m, *(table[m][c] for c in cols)] for m in res["methods"]], ["method", *cols], title=f"\nOOD: {name}"
        )
    for m, why in res["skipped"].items():
        print(f"(skipped {m}: {why})")
    if "neglabel" in res:
        n = res["neglabel"]
        print(f"(neglabel: {n['n_negatives']} negatives of {n['n_candidates']} candidates from {n['source']})")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from cliplab.assess import calibration_evaluation, split_half

    parsed = _check(args, (args.data, "DATA", None), (args.val_data, "--val-data", "val"))
    s = _Session(args)
    ds = s.dataset(parsed[args.data])
    feats = s.features(ds)
    if feats.labels is None:
        raise UsageError(f"dataset {ds.name!r} has no labels; calibration needs labelled data")
    logits = s.logits(feats, s.weights(ds))
    if args.val_data:
        vds = s.dataset(parsed[args.val_data], split="val")
        vf = s.features(vds)
        val_logits, val_labels, test_logits, test_labels = s.logits(vf, s.weights(ds)), vf.labels, logits, feats.labels
    else:
        vi, ti = split_half(feats.labels)
        val_logits, val_labels, test_logits, test_labels = logits[vi], feats.labels[vi], logits[ti], feats.labels[ti]
    res = calibration_evaluation(val_logits, val_labels, test_logits, test_labels)
    if args.json:
        print_json(res)
        return 0
    rows = [
        ["accuracy", res["accuracy"]],
        ["temperature (fit on val)", res["temperature"]],
        ["ECE", res["ece"]],
        ["ECE after temperature scaling", res["ece_scaled"]],
        ["NLL", res["nll"]],
        ["NLL after temperature scaling", res["nll_scaled"]],
        ["AURC (MSP)", res["aurc_msp"]],
        [
            "AURC (MSP fallback chosen on val)"
            if res["logit_norm_p"] is None
            else f"AURC (logit norm, p={res['logit_norm_p']:g})",
            res["aurc_logit_norm"],
        ],
    ]
    print_table(rows, ["metric", "value"], title=f"calibration: {args.model} on {ds.name}")
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    from cliplab.assess import estimation_evaluation
    from cliplab.data.spec import DataSpec, is_builtin_world

    first = _parse_early(args.data[0])
    specs: list[str | DataSpec] = [first, *args.data[1:]]
    if args.family == "corruptions":
        if len(specs) != 1 or not is_builtin_world(first):
            raise UsageError("--family corruptions expands exactly one built-in (shapes) dataset spec")
        from cliplab.data.corruptions import CORRUPTIONS

        with preflight._about("DATA"):
            base = DataSpec.parse(first)  # a DataSpec already, unless malformed: then this names the error
        specs = [base.with_options(corruption=c, severity=v) for c in CORRUPTIONS for v in range(1, 6)]
    if len(specs) < 3:
        raise UsageError(f"estimation needs at least 3 shifted datasets to correlate over, got {len(specs)}")
    val_spec: str | DataSpec
    if args.val_data:
        val_spec, val_option = args.val_data, "--val-data"
    elif is_builtin_world(first):
        val_spec, val_option = first, "DATA"
    else:
        raise UsageError("--val-data is required for non-built-in data (ATC and DoC need labelled ID data)")
    parsed = _check(args, (val_spec, val_option, "val"), *((spec, "DATA", None) for spec in specs))
    s = _Session(args)
    val_ds = s.dataset(parsed[str(val_spec)], split="val")
    weights = s.weights(val_ds)
    vf = s.features(val_ds)
    sets = []
    for spec in map(str, specs):
        f = s.features(s.dataset(parsed[spec]))
        if f.labels is None:
            raise UsageError(f"dataset {spec!r} has no labels; the true accuracy cannot be measured")
        sets.append((spec, s.logits(f, weights), f.labels))
    res = estimation_evaluation(s.logits(vf, weights), vf.labels, sets)
    if args.json:
        print_json(res)
        return 0
    rows = [[name, r["r2"], r["spearman"], r["mae"]] for name, r in res["estimators"].items()]
    print_table(rows, ["estimator", "R²", "Spearman ρ", "MAE"], title=f"accuracy estimation over {len(sets)} sets")
    return 0
