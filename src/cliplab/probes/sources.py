"""Probe specs: ``shapes[:k=v,...]`` (generated), ``sugarcrepe:<dir>[:images=<dir>]``, ``winoground:<dir>``,
``aro-relation:<dir>``, ``aro-attribution:<dir>``, ``aro-coco-order:<dir>``, ``aro-flickr-order:<dir>``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cliplab.data.spec import looks_like_options, parse_options
from cliplab.probes.aro import load_aro_order, load_vg_attribution, load_vg_relation
from cliplab.probes.base import PairProbe, SelectionProbe
from cliplab.probes.builtin_probes import builtin_probe
from cliplab.probes.sugarcrepe import load_sugarcrepe
from cliplab.probes.winoground import load_winoground


def _shapes(target: str, **options: Any) -> SelectionProbe:
    split = options.pop("split", "test")
    return builtin_probe(split, **options)


#: scheme -> (loader(target, **options), accepted options or None for any, description)
PROBE_SOURCES: dict[str, tuple[Callable[..., Any], tuple[str, ...] | None, str]] = {
    "shapes": (_shapes, None, "shapes[:n=..,seed=..,image_size=..] (generated on the built-in world)"),
    "sugarcrepe": (lambda t, **o: load_sugarcrepe(t, **o), ("images",), "sugarcrepe:<dir>[:images=<val2017 dir>]"),
    "winoground": (lambda t: load_winoground(t), (), "winoground:<dir> (examples.jsonl + images/)"),
    "aro-relation": (lambda t: load_vg_relation(t), (), "aro-relation:<dir>"),
    "aro-attribution": (lambda t: load_vg_attribution(t), (), "aro-attribution:<dir>"),
    "aro-coco-order": (lambda t, **o: load_aro_order(t, "coco", **o), ("split", "seed"), "aro-coco-order:<dir>"),
    "aro-flickr-order": (lambda t, **o: load_aro_order(t, "flickr", **o), ("split", "seed"), "aro-flickr-order:<dir>"),
}


def load_probe(spec: str) -> SelectionProbe | PairProbe:
    """The probe set a spec names (see the module docstring); a ValueError lists the forms for anything else."""
    spec = str(spec)
    scheme, _, rest = spec.partition(":")
    if scheme not in PROBE_SOURCES:
        forms = "; ".join(d for _, _, d in PROBE_SOURCES.values())
        raise ValueError(f"unknown probe spec {spec!r}; accepted forms: {forms}")
    loader, accepted, _ = PROBE_SOURCES[scheme]
    options: dict[str, Any] = {}
    target = rest
    if scheme == "shapes":
        target, options = "", (parse_options(rest) if rest else {})
    else:
        head, sep, tail = rest.rpartition(":")
        if sep and looks_like_options(tail):
            target, options = head, parse_options(tail)
        if not target:
            raise ValueError(f"probe spec {spec!r} names no folder ({scheme}:<dir>)")
    if accepted is not None:
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise ValueError(f"probe spec {spec!r}: unknown option(s) {unknown}; accepted: {list(accepted) or 'none'}")
    return loader(target, **options)
