"""Built-in prompt-template sets (data in ``templates.json``) and template resolution.

Templates come in three forms, accepted everywhere a ``templates`` argument is (``zeroshot_weights``, the
bench, ``cliplab zeroshot/adapt/... --templates``):

* a list of format strings with the class name as ``{}`` (CLIP's notebooks) or ``{c}`` (CLIP_benchmark's
  ``zeroshot_classification_templates.txt``), or a built-in set's name (:func:`template_sets`);
* a dict class name → list of full sentences: per-class descriptions as CuPL publishes them (Pratt et al.,
  "What does a platypus look like? Generating customized prompts for zero-shot image classification", ICCV
  2023; the JSON files are in ``sarahpratt/CuPL``, ``all_prompts/full_prompts/*.json``);
* a list combining both (strings and dicts, or several dicts): each class's prompts are the union of every
  part's, in order. With the class weight ``W_c = norm(mean_p norm(enc(p)))`` over that union, this is the
  CuPL paper's "CuPL + standard templates" ensemble (its ``classify_imagenet.py`` pools both prompt sets
  before averaging).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

Templates = Sequence[str | Mapping[str, Sequence[str]]] | Mapping[str, Sequence[str]] | str | None

#: the class-name placeholders a template may use (CLIP's ``{}``, CLIP_benchmark's ``{c}``)
PLACEHOLDERS = ("{c}", "{}")


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


def fill(template: str, classname: str) -> str:
    """``template`` with its class-name placeholder (``{}`` or ``{c}``, every occurrence) replaced by the name.

    The same text as ``template.format(classname)`` / ``template.format(c=classname)`` for templates without
    other braces; literal braces are kept as written (no ``{{`` escaping is needed).
    """
    for placeholder in PLACEHOLDERS:
        template = template.replace(placeholder, classname)
    return template


def _check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates)
    if not templates:
        raise ValueError("templates is an empty list")
    not_str = [t for t in templates if not isinstance(t, str)]
    if not_str:
        raise ValueError(f"templates must be strings, got {not_str[:3]}")
    bad = [t for t in templates if not any(p in t for p in PLACEHOLDERS)]
    if bad:
        raise ValueError(f"templates need a '{{}}' or '{{c}}' placeholder for the class name: {bad[:5]}")
    return templates


def _descriptions(classnames: list[str], table: Mapping[str, Sequence[str]]) -> list[list[str]]:
    missing = [c for c in classnames if not table.get(c)]
    if missing:
        raise ValueError(
            f"the description dict has no sentences for classes {missing[:10]} ({len(missing)} in all; "
            f"its keys must be the class names; it has {len(table)} keys, e.g. {list(table)[:5]})"
        )
    out = []
    for c in classnames:
        sentences = table[c]
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"the descriptions of class {c!r} must be a list of sentences, got {sentences!r:.80}")
        out.append(list(sentences))
    return out


def class_prompts(classnames: Sequence[str], templates: Templates = None) -> list[list[str]]:
    """The prompts of each class.

    ``templates``: None (``"a photo of a {}."``), a set name, a list of format strings with ``{}`` or ``{c}``,
    a dict class → list of full sentences (CuPL-style descriptions), or a list mixing format strings, set
    names and such dicts (each class gets the union of every part's prompts: templates first, in the order
    given).
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
        return _descriptions(classnames, templates)
    parts = list(templates)
    if not parts:
        raise ValueError("templates is an empty list")
    out: list[list[str]] = [[] for _ in classnames]
    strings: list[str] = []
    for p in parts:  # a set name inside a list stands for its templates
        if isinstance(p, Mapping):
            continue
        in_sets = isinstance(p, str) and p in template_sets() and not any(h in p for h in PLACEHOLDERS)
        strings.extend(get_templates(p) if in_sets else [p])
    if strings:
        strings = _check_templates(strings)
        for prompts, c in zip(out, classnames):
            prompts.extend(fill(t, c) for t in strings)
    for table in (p for p in parts if isinstance(p, Mapping)):
        for prompts, sentences in zip(out, _descriptions(classnames, table)):
            prompts.extend(sentences)
    return out


def _template_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"templates file not found: {path}")
    if path.suffix == ".txt":  # CLIP_benchmark's zeroshot_classification_templates.txt: one template per line
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"templates file {path} is empty")
        return lines
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"templates file {path} is not valid JSON: {err}") from err
    if not isinstance(loaded, list | dict):
        raise ValueError(
            f"templates file {path} must hold a list of templates or a class → sentences dict, "
            f"got {type(loaded).__name__}"
        )
    return loaded


def read_templates(value: str, base: str | Path | None = None) -> Any:
    """Templates named by text: a set name, a file, or several joined by ``+`` (combined, see ``class_prompts``).

    Files: ``.json`` holding a list of templates (``{}`` or ``{c}``) or a class → sentences dict (CuPL's
    descriptions), or ``.txt`` with one template per line (CLIP_benchmark's
    ``zeroshot_classification_templates.txt``). ``imagenet80+cupl_imagenet.json`` is CuPL's combined ensemble.
    ``base``: the directory relative file names are read from (default: the working directory). A single set
    name is returned as is; in a combination it is expanded (and checked).
    """
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if path.is_file() or ("+" not in value and path.suffix in (".json", ".txt")):
        return _template_file(path)
    if "+" not in value:
        return value
    parts: list[Any] = []
    for piece in value.split("+"):
        if not piece:
            raise ValueError(f"templates {value!r}: an empty part between '+'")
        loaded = read_templates(piece, base)
        if isinstance(loaded, str):
            loaded = get_templates(loaded)
        parts.extend(loaded if isinstance(loaded, list) else [loaded])
    return parts


#: the set a dataset without templates of its own falls back to (CLIP's plain ``"a photo of a {}."``)
FALLBACK_SET = "simple"


def templates_key(templates: Templates) -> str | None:
    """How records name templates: None, a set name, or ``sha256:<12 hex>`` of the templates as canonical JSON
    (a CuPL description file is too big to copy into every results file)."""
    import hashlib

    from cliplab._io import to_jsonable

    if templates is None or isinstance(templates, str):
        return templates
    text = json.dumps(to_jsonable(templates), sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _is_set_name(part: Any) -> bool:
    return isinstance(part, str) and part in template_sets() and not any(h in part for h in PLACEHOLDERS)


def describe_templates(templates: Templates, source: str) -> dict[str, Any]:
    """A JSON record of templates: ``source`` (``given``, ``dataset`` or ``fallback``), ``name`` (a set name, or
    a hash: :func:`templates_key`), ``count`` (format strings, set names expanded), ``examples`` (the first
    three) and, for CuPL-style descriptions, ``described_classes``."""
    parts: list[Any] = [templates] if isinstance(templates, str | Mapping) else list(templates or [])
    strings: list[str] = []
    described = 0
    for p in parts:
        if isinstance(p, Mapping):
            described = max(described, len(p))
        else:
            strings.extend(get_templates(p) if _is_set_name(p) else [str(p)])
    record: dict[str, Any] = {
        "source": source,
        "name": templates_key(templates),
        "count": len(strings),
        "examples": strings[:3],
    }
    if described:
        record["described_classes"] = described
    return record


def templates_for(
    templates: Templates, dataset: Any, notify: Callable[[str], None] | None = None
) -> tuple[Templates, dict[str, Any]]:
    """``(templates, record)`` a zero-shot classifier of ``dataset`` uses: ``templates`` when given, else the
    dataset's own (``Dataset.templates``), else the ``FALLBACK_SET`` — then with a one-line notice through
    ``notify`` (default: the ``cliplab`` log at INFO), since the same images score differently under other
    templates (an ``hfds:`` copy of a ``wds:`` set with its own). ``record``: :func:`describe_templates`."""
    if templates is not None:
        return templates, describe_templates(templates, "given")
    own = getattr(dataset, "templates", None)
    if own:
        return own, describe_templates(own, "dataset")
    name = getattr(dataset, "name", None) or "the dataset"
    first = get_templates(FALLBACK_SET)[0]
    message = f"note: {name} has no prompt templates of its own; using {first!r} (--templates chooses others)"
    (notify or logging.getLogger("cliplab.zeroshot").info)(message)
    return FALLBACK_SET, describe_templates(FALLBACK_SET, "fallback")
