"""``cliplab adapt --methods coop,cocoop,kgcoop,prograd,maple,tpt,coop_tpt``: prompt learners beside the adapters.

``split_methods`` sorts ``--methods`` into feature adapters (``cliplab.adapt.ADAPTERS``) and prompt learners
(``cliplab.adapt.prompting.PROMPT_METHODS``); ``add_prompt_methods`` runs the prompt learners' protocol
(``run_prompt_few_shot``, and ``prompt_base_to_new`` with ``--base-to-new``) on the same support/test data and
merges their rows into the feature adapters' result, which has the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cliplab.cli.common import UsageError

if TYPE_CHECKING:
    from cliplab.adapt.protocol_settings import FewShotProtocol


def split_methods(arg: str | None) -> tuple[list[str] | None, list[str]]:
    """``(feature methods or None for all, prompt methods)``; only prompt methods → ``(["zeroshot"], ...)``."""
    from cliplab.adapt.prompting import PROMPT_METHODS
    from cliplab.adapt.registry import ADAPTERS
    from cliplab.cli import preflight

    names = preflight.names(arg, "--methods", [*ADAPTERS, *PROMPT_METHODS])
    if names is None:
        return None, []
    if not names:
        raise UsageError("--methods is empty")
    prompt = [n for n in names if n in PROMPT_METHODS]
    feature = [n for n in names if n not in PROMPT_METHODS]
    return (feature or ["zeroshot"]), prompt


def add_prompt_methods(
    res: dict[str, Any],
    model: Any,
    support_ds: Any,
    test_ds: Any,
    train: Any,
    test: Any,
    methods: Sequence[str],
    protocol: FewShotProtocol | None = None,
    *,
    base_to_new: bool = False,
    templates: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run the prompt learners ``methods`` on ``support_ds``/``test_ds`` (with their cached ``train``/``test``
    features) under ``protocol`` (the adapters' shots, seeds, search, ...; ``settings``: fields overriding it)
    and merge ``results``, ``params``, ``seconds``, ``methods`` (and ``base_to_new.results``) into ``res``."""
    from cliplab.adapt.prompting import prompt_base_to_new, run_prompt_few_shot

    if not methods:
        return res
    kw = {"templates": templates, "train_features": train, "test_features": test, **settings, "methods": methods}
    out = run_prompt_few_shot(model, support_ds, test_ds, protocol, **kw)
    for key in ("results", "params", "seconds"):
        res.setdefault(key, {}).update(out[key])
    res["methods"] = [*res.get("methods", []), *out["methods"]]
    if base_to_new:  # min(16, max(shots)) shots per base class
        b2n = prompt_base_to_new(model, support_ds, test_ds, protocol, **kw)
        if "base_to_new" in res:
            res["base_to_new"]["results"].update({m: r for m, r in b2n["results"].items() if m != "zeroshot"})
        else:
            res["base_to_new"] = b2n
    return res
