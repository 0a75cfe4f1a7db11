"""``cliplab adapt MODEL DATA``: the few-shot protocol — methods × shots × seeds, mean ± std.

Protocol (``cliplab.adapt.protocol``): support sets from DATA's train split; ``--views`` (default 10)
random-crop passes of the support images, each method taking its reference's share; each method runs its
reference recipe (``cliplab/recipes/<method>/<name>.yaml``; ``--recipe`` picks another or a file of yours), whose
hyper-parameters are searched on DATA's own validation split when it has one (as many clean images as the
recipe's ``validation`` says; ``--validation`` overrides), or on ``--val-data``, else on a split of the support
set; Tip-Adapter's per-dataset recipe by the dataset's name (``--settings-for`` picks another); the dataset's
own templates unless ``--templates``. ``--json`` records each method's recipe and resolved settings.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cliplab.cli import preflight
from cliplab.cli.common import (
    TEMPLATES_HELP,
    UsageError,
    add_common,
    cache_dir,
    int_list,
    load_templates,
    nonnegative_int,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from cliplab.data.spec import DataSpec


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
    p.add_argument(
        "--shots", type=int_list(1), default="1,2,4,8,16", help="comma-separated shots per class (default 1,2,4,8,16)"
    )
    p.add_argument("--seeds", type=int_list(0), default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (default: all feature adapters that apply); prompt learners: "
        "coop, cocoop, kgcoop, prograd, maple, tpt, coop_tpt (CoOp, then TPT from its context)",
    )
    p.add_argument(
        "--resume-file",
        default=None,
        help="JSON file recording each finished prompt-learner run; a rerun with it skips them",
    )
    p.add_argument(
        "--views",
        type=nonnegative_int,
        default=10,
        help="random-crop passes of the support images (default 10, as Tip-Adapter/GDA; 0: clean features only)",
    )
    p.add_argument(
        "--val-data",
        default=None,
        help="validation data for the hyper-parameter search (default: DATA's val split when it has one, "
        "else a split of each support set)",
    )
    p.add_argument(
        "--settings-for",
        default=None,
        metavar="NAME",
        help="use the Tip-Adapter settings of this dataset (default: chosen by DATA's name; see docs/settings.md)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        metavar="METHOD=NAME,...",
        help="the recipe each method runs (cliplab/recipes/<method>/<name>.yaml; default: the dataset's, else the "
        "method's default), e.g. 'tip=imagenet,gda=base2new' ('tip': both Tip-Adapters), or METHOD=FILE.yaml / "
        "FILE.yaml (its 'method:') for your own",
    )
    p.add_argument(
        "--validation",
        default=None,
        choices=("full", "k_per_class", "min_k_4", "none"),
        help="one validation policy for every method instead of each recipe's (full val split, k or min(k, 4) "
        "images per class, or no search)",
    )
    p.add_argument("--aux-model", default=None, help="second encoder for AMU's auxiliary features")
    p.add_argument("--base-to-new", action="store_true", help="also report base-to-new generalisation (16 shots)")
    p.add_argument("--no-search", action="store_true", help="use default hyper-parameters (no validation search)")
    p.add_argument("--templates", default=None, help=TEMPLATES_HELP)
    add_common(p, skip_images=True)
    return p


def _splits(spec: str | DataSpec) -> tuple[str, ...]:
    """The splits ``spec``'s data source declares (``()`` for data without splits, e.g. a folder)."""
    from cliplab.data.registry import prepare

    return tuple(prepare(spec, split="train")[0].splits or ())


def _has_val_split(spec: str | DataSpec) -> bool:
    """Whether ``spec``'s data source declares a ``val`` split (CoOp datasets, the built-in world)."""
    return "val" in _splits(spec)


def _draw(train_ds: object, train_labels: Any, val_labels: Any) -> Any:
    """The dataset's own few-shot draw for the protocol, or None (cliplab's): ``coop:`` data declares Dassl's
    (``k_shot_sampler``), whose validation draw follows the training draw from the same random state."""
    from cliplab.data.sampling import dassl_few_shot, dassl_k_shot_indices

    own = getattr(train_ds, "k_shot_sampler", None)
    if own is None:
        return None
    if own is dassl_k_shot_indices:
        return lambda k, seed: dassl_few_shot(train_labels, k, seed, val_labels)
    return lambda k, seed: (
        own(train_labels, k, seed),
        None if val_labels is None else own(val_labels, min(k, 4), seed),
    )


#: short names ``--recipe`` accepts for several methods at once
RECIPE_ALIASES = {"tip": ("tip_adapter", "tip_adapter_f")}


def parse_recipes(text: str | None) -> dict[str, str]:
    """``--recipe``: ``METHOD=NAME`` pairs (or a YAML file, alone or as ``METHOD=FILE``) → ``{method: name or
    path}``, each resolved now so that a wrong name fails before any encoder runs."""
    from cliplab.recipes import load_recipe

    out: dict[str, str] = {}
    for item in [t.strip() for t in (text or "").split(",") if t.strip()]:
        if "=" in item:
            method, _, name = (x.strip() for x in item.partition("="))
            methods: tuple[str, ...] = RECIPE_ALIASES.get(method, (method,))
        else:
            method, name, methods = "", item, ()
        try:
            if not methods:  # a file naming its method
                methods = (load_recipe("", name).method,)
            for m in methods:
                load_recipe(m, name)
                out[m] = name
        except (ValueError, LookupError) as e:
            raise UsageError(f"--recipe {item!r}: {e}") from None
    return out


def run(args: argparse.Namespace) -> int:
    from cliplab.adapt.base_new_protocol import base_to_new
    from cliplab.adapt.protocol import run_few_shot
    from cliplab.adapt.protocol_settings import FewShotProtocol
    from cliplab.adapt.views import embed_support_views
    from cliplab.assess import split_half
    from cliplab.cli.prompt_methods import add_prompt_methods, split_methods
    from cliplab.data import load_dataset
    from cliplab.data.spec import is_builtin_world
    from cliplab.features import embed
    from cliplab.features.embedding import images_read as read_images  # --skip-bad-images: rows = images
    from cliplab.models import load_model
    from cliplab.zeroshot import zeroshot_weights

    shots, seeds = list(args.shots), list(args.seeds)  # checked by argparse (int_list)
    methods, prompt_methods = split_methods(args.methods)
    recipes = parse_recipes(args.recipe)
    preflight.common(args)
    preflight.templates(args.templates)
    data = preflight.data(args.data, split="train")
    builtin = is_builtin_world(data)
    separate_test = bool(args.test_data or builtin or "test" in _splits(data))
    test_data = data
    if separate_test:
        if args.test_data:
            test_data = preflight.data(args.test_data, "--test-data", split="test")
        else:
            preflight.data(data, "DATA", split="test")
    val_data = preflight.data(args.val_data, "--val-data", split="val") if args.val_data else None
    preflight.model(args.model)
    preflight.model(args.aux_model, "--aux-model")
    model = load_model(args.model, device=args.device)
    kw = {"batch_size": args.batch_size, "cache_dir": cache_dir(args), "progress": not args.quiet}
    train_ds = load_dataset(data, split="train")
    train = embed(model, train_ds, **kw)
    if train.labels is None or not train.classnames:
        raise UsageError(f"dataset {train_ds.name!r} has no labels; few-shot adaptation needs labelled data")
    classnames: list[str] = train.classnames
    support_ds = read_images(train_ds, train)  # train_ds itself unless --skip-bad-images left images out
    if separate_test:
        test_ds = load_dataset(test_data, split="test")
        test = embed(model, test_ds, **kw)
        test_ds = read_images(test_ds, test)
    else:  # one folder: support from one stratified half, test on the other
        tr, te = split_half(train.labels)
        test, train = train.subset(te), train.subset(tr)
        support_ds, test_ds = support_ds.subset(tr.tolist()), support_ds.subset(te.tolist())
    support_labels = train.labels
    assert support_labels is not None  # checked above; a subset keeps its labels
    val_ds = None
    if val_data is not None:
        val_ds = load_dataset(val_data, split="val")
    elif _has_val_split(data) and getattr(train_ds, "has_validation_split", True):  # coop ImageNet: none
        val_ds = load_dataset(data, split="val")
    val = embed(model, val_ds, **kw) if val_ds is not None else None
    if val is not None and val_ds is not None:
        val_ds = read_images(val_ds, val)
    n_cls = len(classnames)
    draw = _draw(train_ds, support_labels, None if val is None else val.labels) if separate_test else None
    sampler = None if draw is None else (lambda labels, k, seed: draw(k, seed)[0])
    views_kw = {"num_classes": n_cls, "sampler": sampler, **kw}
    if args.base_to_new:
        shots_for_views = sorted({*shots, min(16, max(shots))})
    else:
        shots_for_views = shots
    views = (
        embed_support_views(model, support_ds, support_labels, shots_for_views, seeds, args.views, **views_kw)
        if args.views > 0
        else None
    )
    aux_train = aux_test = aux_val = aux_views = None
    if args.aux_model:
        aux = load_model(args.aux_model, device=args.device)
        aux_train = embed(aux, support_ds, **kw).images
        aux_test = embed(aux, test_ds, **kw).images
        aux_val = embed(aux, val_ds, **kw).images if val_ds is not None else None
        if args.views > 0:  # the same crops of the same images, through the second encoder
            aux_views = embed_support_views(
                aux, support_ds, support_labels, shots_for_views, seeds, args.views, **views_kw
            )
    W = zeroshot_weights(model, classnames, load_templates(args.templates) or train_ds.templates)
    protocol = FewShotProtocol(
        methods=tuple(methods) if methods is not None else None,
        shots=tuple(shots),
        seeds=tuple(seeds),
        search=not args.no_search,
        dataset=args.settings_for or train_ds.name,
        recipes=recipes or None,
        validation=args.validation,
        resume_file=args.resume_file,  # the prompt learners'
        progress=not args.quiet,
    )
    res = run_few_shot(
        train,
        test,
        W,
        protocol,
        logit_scale=model.logit_scale,
        train_views=views,
        val=val,
        aux_train=aux_train,
        aux_test=aux_test,
        aux_val=aux_val,
        aux_views=aux_views,
        draw=draw,
    )
    res["sampler"] = "dataset" if draw is not None else "cliplab"
    res["templates"] = "--templates" if args.templates else ("dataset" if train_ds.templates else "default")
    if args.base_to_new:
        res["base_to_new"] = base_to_new(  # min(16, max(shots)) shots per base class
            train,
            test,
            W,
            protocol,
            logit_scale=model.logit_scale,
            methods=res["methods"],
            train_views=views,
            val=val,
            draw=draw,
        )
    add_prompt_methods(
        res,
        model,
        support_ds,
        test_ds,
        train,
        test,
        prompt_methods,
        protocol,
        base_to_new=args.base_to_new,
        templates=load_templates(args.templates) or train_ds.templates,
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
    print(res["protocol"]["text"])
    if res.get("recipes"):
        ran = ", ".join(f"{m}: {r['recipe']} ({r['validation']})" for m, r in res["recipes"].items())
        print(f"Recipes (validation): {ran}")
    if "base_to_new" in res:
        b2n = res["base_to_new"]["results"]
        print_table(
            [[m, r["base"], r["new"], r["hm"]] for m, r in b2n.items()],
            ["method", "base", "new", "HM"],
            title="\nbase-to-new",
        )
    return 0
