"""Built-in prompt-template sets (data in ``templates.json``) and template resolution."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources

Templates = Sequence[str] | Mapping[str, Sequence[str]] | str | None


@cache
def template_sets() -> dict[str, list[str]]:
    """Named sets: ``imagenet80``, ``imagenet7``, ``cifar18``, ``simple``."""
    raw = json.loads(resources.files("cliplab.zeroshot").joinpath("templates.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def get_templates(name: str) -> list[str]:
    sets = template_sets()
    if name not in sets:
        raise ValueError(f"unknown template set {name!r}; available: {', '.join(sorted(sets))}")
    return list(sets[name])


def class_prompts(classnames: Sequence[str], templates: Templates = None) -> list[list[str]]:
    """The prompts of each class.

    ``templates``: None (``"a photo of a {}."``), a set name, a list of format strings with ``{}``,
    or a dict class → list of full sentences (CuPL-style descriptions).
    """
    classnames = list(classnames)
    if not classnames:
        raise ValueError("classnames is empty")
    if len(set(classnames)) != len(classnames):
        dup = sorted({c for c in classnames if classnames.count(c) > 1})
        raise ValueError(f"classnames contain duplicates: {dup}")
    if templates is None:
        templates = get_templates("simple")
    elif isinstance(templates, str):
        templates = get_templates(templates)
    if isinstance(templates, Mapping):
        missing = [c for c in classnames if not templates.get(c)]
        if missing:
            raise ValueError(f"the description dict has no sentences for classes {missing[:10]}")
        return [[str(s) for s in templates[c]] for c in classnames]
    templates = list(templates)
    if not templates:
        raise ValueError("templates is an empty list")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates need a '{{}}' placeholder for the class name: {bad[:5]}")
    return [[t.replace("{}", c) for t in templates] for c in classnames]
