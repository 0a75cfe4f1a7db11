"""``DataSpec``: a dataset spec string parsed once, into a scheme, a target and options.

Forms (the scheme names are those registered with ``register_data_source``):

- ``shapes``, ``shapes:task=colour,n=2000``, ``builtin:shapes:...``: a scheme without a target; everything
  after ``scheme:`` is ``key=value`` options, comma-separated.
- ``folder:<path>``, ``captions:<path>[:key=value,...]``: an explicit scheme with a target.
- ``<path>[:key=value,...]``: a bare path (``scheme`` None); which source reads it is detected from the path
  when the dataset is loaded (see ``cliplab.data.registry``).

A target may contain ``:``; options are split off after its *last* ``:``, and only when that part looks
like ``key=value[,key=value...]`` (``/data/a:b`` is the path ``/data/a:b``, ``/data/a:n=3`` the path
``/data/a`` with ``n=3``). Values are read as int, float, none/true/false, or kept as strings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from cliplab.data.schemes import DATA_SOURCES

_OPTION = r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=[^,:=]*"
_OPTIONS = re.compile(rf"^{_OPTION}(,{_OPTION})*,?\s*$")


def _parse_value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(v.lower(), v)


def parse_options(text: str) -> dict[str, Any]:
    """``"task=colour,n=200"`` → ``{"task": "colour", "n": 200}``."""
    opts: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad dataset option {part!r}: expected key=value")
        opts[key.strip()] = _parse_value(value.strip())
    return opts


def looks_like_options(text: str) -> bool:
    """Whether ``text`` has the ``key=value[,key=value...]`` form of spec options."""
    return bool(_OPTIONS.match(text))


@dataclass(frozen=True)
class DataSpec:
    """A parsed dataset spec: ``scheme`` (None for a bare path), ``target`` (a path, or ``""``), ``options``."""

    scheme: str | None
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    #: the text it was parsed from (for messages)
    text: str = ""

    @classmethod
    def parse(cls, spec: str | os.PathLike | DataSpec) -> DataSpec:
        """Parse ``spec`` (see the module docstring); raises ValueError for malformed options."""
        if isinstance(spec, DataSpec):
            return spec
        text = os.fspath(spec)
        if not isinstance(text, str):
            raise TypeError(f"a dataset spec must be a string or a path, got {type(spec).__name__}")
        rest = text.removeprefix("builtin:")
        name, colon, tail = rest.partition(":")
        source = DATA_SOURCES.get(name, None)  # a plug-in's entry point of that name is loaded here
        if source is not None:
            if not source.target:
                try:
                    return cls(name, "", parse_options(tail), text)
                except ValueError as err:
                    raise ValueError(f"dataset spec {text!r}: {err}") from err
            target, options = _split_options(tail) if colon else ("", {})
            return cls(name, target, options, text)
        target, options = _split_options(text)
        return cls(None, target, options, text)

    def with_options(self, **options: Any) -> DataSpec:
        """The same data with ``options`` added (or replacing those of the same name)."""
        return DataSpec(self.scheme, self.target, {**self.options, **options})

    def __str__(self) -> str:
        return self.text or ":".join(filter(None, [self.scheme, self.target, _format_options(self.options)]))


def _split_options(text: str) -> tuple[str, dict[str, Any]]:
    head, sep, last = text.rpartition(":")
    if sep and head and looks_like_options(last):
        return head, parse_options(last)
    return text, {}


def _format_options(options: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def is_builtin_world(spec: str | os.PathLike | DataSpec) -> bool:
    """Whether ``spec`` names the built-in shapes world (``shapes``, ``builtin:shapes[:...]``)."""
    try:
        return DataSpec.parse(spec).scheme == "shapes"
    except ValueError:  # malformed options: still the shapes world by name
        text = spec.text if isinstance(spec, DataSpec) else os.fspath(spec)
        return text.removeprefix("builtin:").partition(":")[0] == "shapes"
