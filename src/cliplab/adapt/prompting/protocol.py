"""The few-shot protocol for prompt learners: methods × shots × seeds, and base-to-new (CoCoOp's setting).

Results have the shape of :func:`cliplab.adapt.protocol.run_few_shot` (``{"results": {method: {k: {mean, std,
runs}}}, "zeroshot", "params", "seconds", "shots", "seeds", "methods"}``), so the CLI, report and bench show
them beside the feature adapters.

Per seed and ``k``: the support set is ``k`` training images per class (``k_shot_indices``); a validation set
of ``min(k, 4)`` further training images per class (Dassl's rule) selects the prompt state (the best
evaluation epoch); the test set is only passed to ``logits`` of the final learner. Text-only methods get the
cached training features; MaPLe gets the support images. With ``search``, each
method's ``default_grid()`` (its reference learning rate and 10×) is tried and the fit with the best
validation accuracy is kept. TPT uses no training data: it runs once per seed
and its accuracy is reported for every ``k``; it gets the test images themselves (a ``Subset``, so its views
are cut from the original images), as does ``coop_tpt`` (CoOp on the k shots, then TPT from its context).

Base-to-new: classes sorted by label, the first half is base. Learners are fit on base classes only and
scored on base test images over base classes; the learned (class-independent) prompt is then moved to the
new class names (``PromptLearner.for_classes``) and scored on new test images over new classes; the harmonic
mean ``HM = 2·base·new / (base + new)`` summarises both.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cliplab.adapt.prompting.cocoop import CoCoOp
from cliplab.adapt.prompting.coop import CoOp, KgCoOp, ProGrad
from cliplab.adapt.prompting.learner import PromptLearner
from cliplab.adapt.prompting.maple import MaPLe
from cliplab.adapt.prompting.resume import ResumeFile
from cliplab.adapt.prompting.tpt import TPT
from cliplab.adapt.protocol_settings import DEFAULT_SHOTS, FewShotProtocol
from cliplab.data.base import Dataset
from cliplab.data.sampling import k_shot_indices
from cliplab.extension import Registry
from cliplab.models.base import Model
from cliplab.progress import track


def _check(name: str, cls: type[PromptLearner]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, PromptLearner)):
        raise TypeError(f"a prompt method must be a PromptLearner subclass, got {cls!r}")


#: name → prompt-learner class (``register_prompt_method`` adds one; entry-point group
#: ``cliplab.prompt_methods``); ``cliplab adapt --methods`` accepts these
PROMPT_METHODS: Registry[type[PromptLearner]] = Registry("prompt method", group="cliplab.prompt_methods", check=_check)


def register_prompt_method(name: str, cls: type[PromptLearner], *, replace: bool = False) -> type[PromptLearner]:
    """Add ``cls`` (a ``PromptLearner`` subclass) to ``PROMPT_METHODS`` under ``name``; a taken name raises
    ValueError unless ``replace``."""
    return PROMPT_METHODS.register(name, cls, replace=replace)


for _name, _cls in (("coop", CoOp), ("cocoop", CoCoOp), ("kgcoop", KgCoOp), ("prograd", ProGrad), ("maple", MaPLe)):
    register_prompt_method(_name, _cls)
register_prompt_method("tpt", TPT)


class _Data:
    """A labelled dataset with its cached features and, when asked, its preprocessed pixels."""

    def __init__(self, model: Model, dataset: Dataset, features: Any, embed_kw: dict[str, Any]):
        from cliplab.features import embed

        if dataset.labels is None:
            raise ValueError(f"dataset {dataset.name!r} has no labels; prompt learning needs labelled data")
        self.dataset = dataset
        self.features = features if features is not None else embed(model, dataset, **embed_kw)
        self.images = self.features.images
        self.labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.long)
        self.model = model
        self._pixels: dict[int, torch.Tensor] = {}

    def pixels(self, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
        missing = [int(i) for i in idx if int(i) not in self._pixels]
        if missing:
            batch = self.model.preprocess.batch([self.dataset.image(i) for i in missing])
            self._pixels.update(zip(missing, batch))
        return torch.stack([self._pixels[int(i)] for i in idx])

    def inputs(self, cls: type[PromptLearner], idx: torch.Tensor) -> torch.Tensor:
        return self.pixels(idx) if cls.needs_pixels else self.images[idx]

    def test_inputs(self, cls: type[PromptLearner], idx: torch.Tensor) -> Any:
        """What ``cls.logits`` gets: the images themselves (a Subset) for test-time methods, else ``inputs``."""
        if getattr(cls, "predicts_on_images", False):
            return self.dataset.subset([int(i) for i in idx])
        return self.inputs(cls, idx)


def _validation_indices(
    labels: torch.Tensor, support: np.ndarray, k: int, seed: int, n_cls: int, val_shots: int = 4
) -> np.ndarray | None:
    """``min(k, val_shots)`` images per class drawn from the training images outside the support set (or None)."""
    rest = np.setdiff1d(np.arange(len(labels)), support)
    counts = torch.bincount(labels[rest], minlength=n_cls)
    kv = min(k, val_shots, int(counts.min())) if len(rest) else 0
    if kv < 1:
        return None
    return rest[k_shot_indices(labels[rest], kv, seed + 1000, num_classes=n_cls)]


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _make(name: str, seed: int, params: Mapping[str, Mapping[str, Any]] | None) -> PromptLearner:
    cls = PROMPT_METHODS[name]
    kw = dict((params or {}).get(name, {}))
    if "seed" in cls._param_names():
        kw.setdefault("seed", seed)
    return cls(**kw)


def _fit_selected(
    name: str,
    seed: int,
    params: Mapping[str, Mapping[str, Any]] | None,
    model: Model,
    tr: _Data,
    support: torch.Tensor,
    val_idx: np.ndarray | None,
    classnames: list[str],
    search: bool,
) -> tuple[PromptLearner, dict[str, Any]]:
    """Fit ``name``; with a validation set, try its ``default_grid()`` (values not fixed in ``params``) and keep
    the fit with the best validation accuracy (the first on ties)."""
    cls = PROMPT_METHODS[name]
    fixed = dict((params or {}).get(name, {}))
    grid = {k: v for k, v in cls.default_grid().items() if k not in fixed} if search and val_idx is not None else {}
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*grid.values())] if keys else [{}]
    val: dict[str, Any] = {}
    if val_idx is not None:
        val = {"val": tr.inputs(cls, torch.as_tensor(val_idx)), "val_labels": tr.labels[val_idx]}
    best: tuple[float, PromptLearner, dict[str, Any]] | None = None
    for combo in combos:
        est = _make(name, seed, {name: {**fixed, **combo}})
        est.fit(model, tr.inputs(cls, support), tr.labels[support], classnames, **val)
        score = getattr(est, "val_accuracy_", None)
        if best is None or (score is not None and score > best[0]):
            best = (-1.0 if score is None else score, est, combo)
    assert best is not None
    return best[1], {"val_accuracy": best[0] if val_idx is not None else None, **best[2]}


def _run_key(model: Model, train: Dataset, test: Dataset, *settings: Any) -> str:
    from cliplab.data.base import stable_hash

    return stable_hash(
        {
            "model": model.fingerprint(),
            "train": train.fingerprint(),
            "test": test.fingerprint(),
            "settings": json.loads(json.dumps(settings, default=str)),
        }
    )


def _zeroshot(model: Model, test: _Data, classnames: list[str], templates: Any) -> float:
    from cliplab.zeroshot import zeroshot_weights

    W = zeroshot_weights(model, classnames, templates)
    return _accuracy(test.images @ W.T, test.labels)


def _settings(protocol: FewShotProtocol | None, caller: str, settings: dict[str, Any]) -> FewShotProtocol:
    """``FewShotProtocol.resolve``, with ``params`` accepted for ``method_params`` (the older keyword)."""
    if "params" in settings:
        if "method_params" in settings:
            raise TypeError(f"{caller}() got both params and method_params (the same setting)")
        settings["method_params"] = settings.pop("params")
    return FewShotProtocol.resolve(protocol, caller, **settings)


def _job_note(job: tuple[int, int]) -> str:
    return f"{job[0]} shot{'s' if job[0] != 1 else ''}, seed {job[1]}"


def run_prompt_few_shot(
    model: Model,
    train: Dataset,
    test: Dataset,
    protocol: FewShotProtocol | None = None,
    *,
    templates: Any = None,
    train_features: Any = None,
    test_features: Any = None,
    embed_kw: Mapping[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Accuracy of each prompt method per shot count over the seeds (see the module docstring).

    ``protocol`` (``FewShotProtocol``, or its fields as keywords in ``settings``): ``methods``, ``shots``,
    ``seeds``; ``method_params`` (or ``params``): per method, constructor keyword arguments (``{"coop":
    {"epochs": 50}}``); ``search``: pick the values of each method's ``default_grid()`` on the validation images
    (never on the test set); ``val_shots``: validation images per class, ``min(k, val_shots)`` (4: Dassl's
    rule); ``resume_file``: a JSON file written atomically after every (method, k, seed) run
    (``cliplab.adapt.prompting.resume``); a later call with the same file, model, data and settings skips the
    runs it holds (other settings: ``ValueError`` naming the file). ``templates``: the zero-shot baseline's
    templates (default: the dataset's). ``train_features``/``test_features``: cached ``Features`` of the two
    datasets (embedded here when absent, with ``embed_kw``).
    """
    protocol = _settings(protocol, "run_prompt_few_shot", settings)
    shots, seeds, params = protocol.shots, protocol.seeds, protocol.method_params
    search, val_shots = protocol.search, protocol.val_shots
    methods = list(protocol.methods or PROMPT_METHODS)
    unknown = [m for m in methods if m not in PROMPT_METHODS]
    if unknown:
        raise ValueError(f"unknown prompt method(s) {unknown}; choose from {list(PROMPT_METHODS)}")
    kw = {"progress": False, **dict(embed_kw or {})}
    tr, te = _Data(model, train, train_features, kw), _Data(model, test, test_features, kw)
    classnames = list(train.classnames or [])
    n_cls = len(classnames)
    counts = torch.bincount(tr.labels, minlength=n_cls)
    if max(shots) > int(counts.min()):
        raise ValueError(f"asked for {max(shots)} shots but the smallest class has {int(counts.min())} training images")
    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    chosen: dict[str, dict[int, list[Any]]] = {m: {} for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    test_all = torch.arange(len(te.labels))
    tpt_runs: dict[int, float] = {}
    done = ResumeFile(
        protocol.resume_file,
        "few_shot",
        _run_key(model, train, test, methods, shots, seeds, params, search, val_shots),
    )
    jobs = [(k, s) for k in shots for s in seeds]
    for k, seed in track(jobs, "prompt few-shot", unit="run", enabled=protocol.progress, note=_job_note):
        idx = k_shot_indices(tr.labels, k, seed, num_classes=n_cls)
        val_idx = _validation_indices(tr.labels, idx, k, seed, n_cls, val_shots)
        support = torch.as_tensor(idx)
        for m in methods:
            cls = PROMPT_METHODS[m]
            t0 = time.perf_counter()
            job = f"{m}|{k}|{seed}"
            if (finished := done.get(job)) is not None:
                acc, note, secs = finished["accuracy"], finished["params"], finished["seconds"]
                results[m].setdefault(k, {"runs": []})["runs"].append(acc)
                chosen[m].setdefault(k, []).append(note)
                seconds[m] += secs
                continue
            if m == "tpt" or cls is TPT:
                if seed not in tpt_runs:
                    est = _make(m, seed, params).fit(model, None, None, classnames)
                    tpt_runs[seed] = _accuracy(est.logits(te.test_inputs(cls, test_all)), te.labels)
                acc, note = tpt_runs[seed], "no training data (test-time tuning)"
            else:
                est, note = _fit_selected(m, seed, params, model, tr, support, val_idx, classnames, search)
                acc = _accuracy(est.logits(te.test_inputs(cls, test_all)), te.labels)
            secs = time.perf_counter() - t0
            seconds[m] += secs
            results[m].setdefault(k, {"runs": []})["runs"].append(acc)
            chosen[m].setdefault(k, []).append(note)
            done.record(job, {"accuracy": acc, "params": note, "seconds": secs})
    for m in methods:
        for r in results[m].values():
            r["mean"], r["std"] = float(np.mean(r["runs"])), float(np.std(r["runs"]))
    zs = _zeroshot(model, te, classnames, templates if templates is not None else train.templates)
    return {
        "results": results,
        "zeroshot": zs,
        "params": chosen,
        "seconds": seconds,
        "shots": list(shots),
        "seeds": list(seeds),
        "methods": methods,
    }


def prompt_base_to_new(
    model: Model,
    train: Dataset,
    test: Dataset,
    protocol: FewShotProtocol | None = None,
    *,
    k: int | None = None,
    templates: Any = None,
    train_features: Any = None,
    test_features: Any = None,
    embed_kw: Mapping[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Base / new accuracy and harmonic mean per method (and zero-shot), averaged over the seeds.

    ``protocol``: as ``run_prompt_few_shot``'s; ``k``: shots per base class (default
    ``protocol.base_to_new_shots``, ``min(16, max(shots))``). ``resume_file``: as ``run_prompt_few_shot``'s (the
    same file can serve both: each protocol has its own section); a job is one method and seed."""
    protocol = _settings(protocol, "prompt_base_to_new", settings)
    k = protocol.base_to_new_shots if k is None else int(k)
    seeds, params, search, val_shots = protocol.seeds, protocol.method_params, protocol.search, protocol.val_shots
    methods = list(protocol.methods or PROMPT_METHODS)
    kw = {"progress": False, **dict(embed_kw or {})}
    tr, te = _Data(model, train, train_features, kw), _Data(model, test, test_features, kw)
    done = ResumeFile(
        protocol.resume_file,
        "base_to_new",
        _run_key(model, train, test, methods, k, seeds, params, search, val_shots),
    )
    classnames = list(train.classnames or [])
    n_cls = len(classnames)
    if n_cls < 2:
        raise ValueError("base-to-new needs at least 2 classes")
    n_base = (n_cls + 1) // 2
    base_names, new_names = classnames[:n_base], classnames[n_base:]
    base_train = torch.nonzero(tr.labels < n_base).flatten()
    base_test = torch.nonzero(te.labels < n_base).flatten()
    new_test = torch.nonzero(te.labels >= n_base).flatten()
    tmpl = templates if templates is not None else train.templates
    from cliplab.zeroshot import zeroshot_weights

    def zs_acc(rows: torch.Tensor, names: list[str], offset: int) -> float:
        W = zeroshot_weights(model, names, tmpl)
        return _accuracy(te.images[rows] @ W.T, te.labels[rows] - offset)

    out: dict[str, dict[str, float]] = {
        "zeroshot": {"base": zs_acc(base_test, base_names, 0), "new": zs_acc(new_test, new_names, n_base)}
    }
    for m in track(methods, "base-to-new", unit="method", enabled=protocol.progress, note=str):
        cls = PROMPT_METHODS[m]
        base_runs, new_runs = [], []
        for seed in seeds:
            if (finished := done.get(f"{m}|{seed}")) is not None:
                base_runs.append(finished["base"])
                new_runs.append(finished["new"])
                continue
            if cls is TPT:
                base_est = _make(m, seed, params).fit(model, None, None, base_names)
            else:
                base_labels = tr.labels[base_train]
                rel = k_shot_indices(base_labels, k, seed, num_classes=n_base)
                rel_val = _validation_indices(base_labels, rel, k, seed, n_base, val_shots)
                idx = base_train[torch.as_tensor(rel)]
                val_idx = None if rel_val is None else base_train[torch.as_tensor(rel_val)].numpy()
                base_est, _ = _fit_selected(m, seed, params, model, tr, idx, val_idx, base_names, search)
            base_runs.append(_accuracy(base_est.logits(te.test_inputs(cls, base_test)), te.labels[base_test]))
            new_est = base_est.for_classes(new_names)
            new_runs.append(_accuracy(new_est.logits(te.test_inputs(cls, new_test)), te.labels[new_test] - n_base))
            done.record(f"{m}|{seed}", {"base": base_runs[-1], "new": new_runs[-1]})
        out[m] = {"base": float(np.mean(base_runs)), "new": float(np.mean(new_runs))}
    for r in out.values():
        b, n = r["base"], r["new"]
        r["hm"] = 2 * b * n / (b + n) if b + n > 0 else 0.0
    return {"k": k, "n_base_classes": n_base, "n_new_classes": n_cls - n_base, "results": out}


__all__ = ["DEFAULT_SHOTS", "PROMPT_METHODS", "prompt_base_to_new", "register_prompt_method", "run_prompt_few_shot"]
