"""Probe set formats, by spec: ``shapes[:k=v,...]`` (generated), ``sugarcrepe:<dir>[:images=<dir>]``,
``winoground:<dir>``, ``aro-relation:<dir>``, ``aro-attribution:<dir>``, ``aro-coco-order:<dir>``,
``aro-flickr-order:<dir>``.

``PROBE_FORMATS`` is their registry (a :class:`cliplab.extension.Registry`; entry-point group
``cliplab.probe_formats``); ``register_probe_format(name, loader, options=...)`` adds one, which ``load_probe``
and ``cliplab probe`` then read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cliplab.data.spec import looks_like_options, parse_options
from cliplab.extension import Registry
from cliplab.probes.aro import load_aro_order, load_vg_attribution, load_vg_relation
from cliplab.probes.base import PairProbe, SelectionProbe
from cliplab.probes.builtin_probes import builtin_probe
from cliplab.probes.sugarcrepe import load_sugarcrepe
from cliplab.probes.winoground import load_winoground


def _shapes(target: str, **options: Any) -> SelectionProbe:
    split = options.pop("split", "test")
    return builtin_probe(split, **options)


@dataclass(frozen=True)
class ProbeFormat:
    """A probe set format: ``loader(target, **options)`` for specs ``<name>:<dir>[:key=value,...]`` (or
    ``<name>[:key=value,...]`` with ``target=False``); ``options``: the accepted option names (None: any)."""

    loader: Callable[..., Any]
    options: tuple[str, ...] | None = None
    description: str = ""
    target: bool = True


def _check(name: str, fmt: ProbeFormat) -> None:
    if not isinstance(fmt, ProbeFormat):
        raise TypeError(f"probe format {name!r} must be a ProbeFormat (see register_probe_format), got {fmt!r}")


#: format name → :class:`ProbeFormat` (entry-point group ``cliplab.probe_formats``)
PROBE_FORMATS: Registry[ProbeFormat] = Registry("probe format", group="cliplab.probe_formats", check=_check)


def register_probe_format(
    name: str,
    loader: Callable[..., Any],
    *,
    options: Sequence[str] | None = (),
    description: str = "",
    target: bool = True,
    replace: bool = False,
) -> ProbeFormat:
    """Read specs ``<name>:<dir>[:key=value,...]`` with ``loader(target, **options)`` (a ``SelectionProbe`` or
    ``PairProbe``) in ``load_probe`` and ``cliplab probe``. ``options``: the accepted option names (None: any);
    ``target=False``: the spec names no folder. A taken name raises ValueError unless ``replace``."""
    fmt = ProbeFormat(loader, None if options is None else tuple(options), description or f"{name}:<dir>", target)
    PROBE_FORMATS.register(name, fmt, replace=replace)
    return fmt


register_probe_format(
    "shapes",
    _shapes,
    options=None,
    description="shapes[:n=..,seed=..,image_size=..] (generated on the built-in world)",
    target=False,
)
register_probe_format(
    "sugarcrepe",
    lambda t, **o: load_sugarcrepe(t, **o),
    options=("images",),
    description="sugarcrepe:<dir>[:images=<val2017 dir>]",
)
register_probe_format(
    "winoground", lambda t: load_winoground(t), description="winoground:<dir> (examples.jsonl + images/)"
)
register_probe_format("aro-relation", lambda t: load_vg_relation(t), description="aro-relation:<dir>")
register_probe_format("aro-attribution", lambda t: load_vg_attribution(t), description="aro-attribution:<dir>")
register_probe_format(
    "aro-coco-order",
    lambda t, **o: load_aro_order(t, "coco", **o),
    options=("split", "seed"),
    description="aro-coco-order:<dir>",
)
register_probe_format(
    "aro-flickr-order",
    lambda t, **o: load_aro_order(t, "flickr", **o),
    options=("split", "seed"),
    description="aro-flickr-order:<dir>",
)


def probe_forms() -> list[str]:
    """One line per registered probe format."""
    return [fmt.description for fmt in PROBE_FORMATS.values()]


def load_probe(spec: str) -> SelectionProbe | PairProbe:
    """The probe set a spec names (see the module docstring); a ValueError lists the forms for anything else."""
    spec = str(spec)
    scheme, _, rest = spec.partition(":")
    if scheme not in PROBE_FORMATS:
        raise ValueError(f"unknown probe spec {spec!r}; accepted forms: {'; '.join(probe_forms())}")
    fmt = PROBE_FORMATS[scheme]
    options: dict[str, Any] = {}
    target = rest
    if not fmt.target:
        target, options = "", (parse_options(rest) if rest else {})
    else:
        head, sep, tail = rest.rpartition(":")
        if sep and looks_like_options(tail):
            target, options = head, parse_options(tail)
        if not target:
            raise ValueError(f"probe spec {spec!r} names no folder ({scheme}:<dir>)")
    if fmt.options is not None:
        unknown = [k for k in options if k not in fmt.options]
        if unknown:
            accepted = list(fmt.options) or "none"
            raise ValueError(f"probe spec {spec!r}: unknown option(s) {unknown}; accepted: {accepted}")
    return fmt.loader(target, **options)
