"""``cliplab adapt MODEL DATA``: the few-shot protocol — methods × shots × seeds, mean ± std."""

from __future__ import annotations

import argparse

from cliplab.cli import preflight
from cliplab.cli.common import UsageError, add_common, cache_dir, print_json, print_table
from cliplab.cli.zeroshot import load_templates
from cliplab.data.spec import is_builtin_world


def add_adapt(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab adapt`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("adapt", help="few-shot adaptation benchmark (Tip-Adapter, GDA, linear probes, ...)")
    p.add_argument("model", help="model spec")
    p.add_argument("data", help="labelled dataset: its train split gives the support sets")
    p.add_argument(
        "--test-data",
        default=None,
        help="test data (default: the test split of a built-in world, else a stratified half of DATA)",
    )
    p.add_argument("--shots", default="1,2,4,8,16", help="shots per class (default 1,2,4,8,16)")
    p.add_argument("--seeds", default="1,2,3", help="seeds (default 1,2,3)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all that apply)")
    p.add_argument("--views", type=int, default=0, help="augmented views of the support images (default 0)")
    p.add_argument("--aux-model", default=None, help="second encoder for AMU's auxiliary features")
    p.add_argument("--base-to-new", action="store_true", help="also report base-to-new generalisation (16 shots)")
    p.add_argument("--no-search", action="store_true", help="use default hyper-parameters (no validation search)")
    p.add_argument("--templates", default=None)
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    from cliplab.adapt.protocol import METHODS, base_to_new, run_few_shot
    from cliplab.assess import split_half
    from cliplab.data import load_dataset
    from cliplab.features import embed, embed_views
    from cliplab.models import load_model
    from cliplab.zeroshot import zeroshot_weights

    shots, seeds = preflight.ints(args.shots, "--shots"), preflight.ints(args.seeds, "--seeds")
    methods = preflight.names(args.methods, "--methods", METHODS) or None
    if args.views < 0:
        raise UsageError(f"--views must be >= 0, got {args.views}")
    preflight.common(args)
    preflight.templates(args.templates)
    preflight.data(args.data, split="train")
    builtin = is_builtin_world(args.data)
    if args.test_data or builtin:
        preflight.data(args.test_data or args.data, "--test-data" if args.test_data else "DATA", split="test")
    preflight.model(args.model)
    preflight.model(args.aux_model, "--aux-model")
    model = load_model(args.model, device=args.device)
    kw = {"batch_size": args.batch_size, "cache_dir": cache_dir(args), "progress": not args.quiet}
    train_ds = load_dataset(args.data, split="train")
    train = embed(model, train_ds, **kw)
    if train.labels is None or not train.classnames:
        raise UsageError(f"dataset {train_ds.name!r} has no labels; few-shot adaptation needs labelled data")
    views = embed_views(model, train_ds, args.views, **kw) if args.views > 0 else None
    if args.test_data or builtin:
        test_ds = load_dataset(args.test_data or args.data, split="test")
        test = embed(model, test_ds, **kw)
    else:  # one folder: support from one stratified half, test on the other
        tr, te = split_half(train.labels)
        test, train = train.subset(te), train.subset(tr)
        views = None if views is None else views[:, tr]
    aux_train = aux_test = None
    if args.aux_model:
        aux = load_model(args.aux_model, device=args.device)
        aux_train_f = embed(aux, train_ds, **kw).images
        aux_train = aux_train_f if (args.test_data or builtin) else aux_train_f[tr]
        aux_test = embed(aux, test_ds, **kw).images if (args.test_data or builtin) else aux_train_f[te]
    W = zeroshot_weights(model, train.classnames, load_templates(args.templates) or train_ds.templates)
    res = run_few_shot(
        train,
        test,
        W,
        logit_scale=model.logit_scale,
        methods=methods,
        shots=shots,
        seeds=seeds,
        train_views=views,
        aux_train=aux_train,
        aux_test=aux_test,
        search=not args.no_search,
        progress=not args.quiet,
    )
    if args.base_to_new:
        res["base_to_new"] = base_to_new(
            train, test, W, logit_scale=model.logit_scale, methods=res["methods"], k=min(16, max(shots)), seeds=seeds
        )
    if args.json:
        print_json(res)
        return 0
    rows = [
        [m, *(f"{100 * r[k]['mean']:.1f} ± {100 * r[k]['std']:.1f}" for k in shots)] for m, r in res["results"].items()
    ]
    print_table(
        rows,
        ["method", *(f"{k}-shot" for k in shots)],
        title=f"few-shot accuracy (%) over seeds {seeds}; zero-shot {100 * res['zeroshot']:.1f}",
    )
    if "base_to_new" in res:
        b2n = res["base_to_new"]["results"]
        print_table(
            [[m, r["base"], r["new"], r["hm"]] for m, r in b2n.items()],
            ["method", "base", "new", "HM"],
            title="\nbase-to-new",
        )
    return 0
