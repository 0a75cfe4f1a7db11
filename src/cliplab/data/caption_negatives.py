"""Hard-negative captions rewritten from a caption's own words (NegCLIP / TripletCLIP-style, rule based).

``caption_negatives(caption, rng)`` returns, for each type that applies to the caption, a caption that reuses
its words but says something else:

* ``swap_att`` / ``swap_obj``: two colour / shape words exchanged — only when the caption names both colours and
  shapes, so that the swap moves a binding ("something red and something blue" swapped says the same);
* ``swap_rel``: spatial words flipped (left ↔ right, above ↔ below, top ↔ bottom);
* ``replace_att`` / ``replace_obj``: one colour / shape word replaced by one the caption does not use;
* ``shuffle``: the words in another order.

The lexicon defaults to the built-in world's colours and shapes; pass ``lexicon`` for other data. Used by the
trainer's hard negatives (``loss.hard_negatives``) and by the probes of caption files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from cliplab.data.shapes_world import COLOURS, SHAPES

__all__ = ["CAPTION_NEGATIVE_TYPES", "DEFAULT_LEXICON", "caption_negatives"]

CAPTION_NEGATIVE_TYPES = ("swap_att", "swap_obj", "swap_rel", "replace_att", "replace_obj", "shuffle")
#: word classes: ``att`` (attributes, e.g. colours) and ``obj`` (objects, e.g. shapes)
DEFAULT_LEXICON: dict[str, tuple[str, ...]] = {"att": COLOURS, "obj": SHAPES}
FLIPS = {"left": "right", "right": "left", "above": "below", "below": "above", "top": "bottom", "bottom": "top"}
_SPLIT = re.compile(r"([A-Za-z0-9]+)")


def _swap(tokens: list[str], words: set[str]) -> list[str] | None:
    pos = [i for i, t in enumerate(tokens) if t.lower() in words]
    for j in pos[1:]:
        if tokens[j].lower() != tokens[pos[0]].lower():
            out = list(tokens)
            out[pos[0]], out[j] = tokens[j], tokens[pos[0]]
            return out
    return None


def _replace(tokens: list[str], vocab: Sequence[str], rng: np.random.Generator) -> list[str] | None:
    pos = [i for i, t in enumerate(tokens) if t.lower() in vocab]
    others = [w for w in vocab if w not in {tokens[i].lower() for i in pos}]
    if not pos or not others:
        return None
    out = list(tokens)
    out[pos[int(rng.integers(0, len(pos)))]] = others[int(rng.integers(0, len(others)))]
    return out


def caption_negatives(
    caption: str,
    rng: np.random.Generator,
    *,
    types: Sequence[str] = CAPTION_NEGATIVE_TYPES,
    lexicon: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """The hard negatives of ``caption`` by type (only the types that apply; each differs from ``caption``)."""
    lex = {k: tuple(w.lower() for w in v) for k, v in (lexicon or DEFAULT_LEXICON).items()}
    parts = _SPLIT.split(caption)  # odd positions are words, even positions what lies between them
    words = parts[1::2]
    out: dict[str, list[str] | None] = {}
    for t in types:
        if t in ("swap_att", "swap_obj"):
            # a swap changes the meaning only when attributes are bound to objects ("a red circle and a blue
            # square"); "something red and something blue" swapped says the same thing, so it needs both classes
            mine, other = ("att", "obj") if t == "swap_att" else ("obj", "att")
            bound = any(w.lower() in lex.get(other, ()) for w in words)
            out[t] = _swap(words, set(lex.get(mine, ()))) if bound else None
        elif t == "swap_rel":
            flipped = [FLIPS.get(w.lower(), w) for w in words]
            out[t] = flipped if flipped != words else None
        elif t == "replace_att":
            out[t] = _replace(words, lex.get("att", ()), rng)
        elif t == "replace_obj":
            out[t] = _replace(words, lex.get("obj", ()), rng)
        elif t == "shuffle":
            out[t] = None
            if len(set(words)) > 1:
                while out[t] is None or out[t] == words:
                    out[t] = [words[i] for i in rng.permutation(len(words))]
        else:
            raise ValueError(f"unknown caption negative type {t!r}; accepted: {', '.join(CAPTION_NEGATIVE_TYPES)}")
    result = {}
    for t, new in out.items():
        if new is not None:
            joined = list(parts)
            joined[1::2] = new
            result[t] = "".join(joined)
    return result
