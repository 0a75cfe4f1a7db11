"""WordNet 3.0 lemmas for NegLabel's candidate pool, read from the dict files (``nltk``'s corpus or Debian's).

NegLabel (Jiang et al., ICLR 2024) mines negative labels from WordNet's nouns and adjectives. The dict
directory is looked up in this order: the ``root`` argument, ``$CLIPLAB_WORDNET``, ``nltk``'s data path
(``<dir>/corpora/wordnet``, where ``nltk.download("wordnet")`` unpacks it), then Debian's ``wordnet-base``
(``/usr/share/wordnet``). A directory qualifies when it holds ``index.noun`` and ``index.adj``.

The lemmas are read from ``index.noun`` / ``index.adj``, the files behind ``nltk``'s
``WordNetCorpusReader.all_lemma_names(pos)``: the first field of every line that does not start with a
space (those are the licence header). (nltk 3.10's reader itself cannot open Debian's directory: it needs a
``lexnames`` file, which ``wordnet-base`` does not ship, and for any directory other than its own corpus
it also loads ``nltk``'s installed ``wordnet`` corpus to map versions.)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEBIAN_WORDNET", "find_wordnet", "wordnet_words"]

#: where Debian's ``wordnet-base`` package installs the WordNet 3.0 dict files
DEBIAN_WORDNET = Path("/usr/share/wordnet")
_POS = {"noun": "noun", "adj": "adj"}


def _is_dict_dir(path: Path) -> bool:
    return (path / "index.noun").is_file() and (path / "index.adj").is_file()


def _candidates() -> list[Path]:
    out = []
    if os.environ.get("CLIPLAB_WORDNET"):
        out.append(Path(os.environ["CLIPLAB_WORDNET"]))
    try:
        import nltk

        out += [Path(p) / "corpora" / "wordnet" for p in nltk.data.path]
    except ImportError:
        pass
    out.append(DEBIAN_WORDNET)
    return out


def find_wordnet(root: str | os.PathLike | None = None) -> Path | None:
    """The WordNet dict directory (see the module docstring), or None when none is installed.

    An explicit ``root`` that is not a dict directory is a ``FileNotFoundError`` naming what is missing.
    """
    if root is not None:
        path = Path(root)
        if not _is_dict_dir(path):
            raise FileNotFoundError(
                f"{path} is not a WordNet dict directory (needs index.noun and index.adj); "
                "install nltk's corpus (python -m nltk.downloader wordnet) or Debian's wordnet-base"
            )
        return path
    return next((p for p in _candidates() if _is_dict_dir(p)), None)


def _read_index(path: Path) -> list[str]:
    lemmas = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(" ") or not line.strip():
                continue  # the licence header
            lemmas.append(line.split(" ", 1)[0])
    return lemmas


def wordnet_words(pos: str, root: str | os.PathLike | None = None, *, multiword: bool = False) -> list[str]:
    """WordNet's lemmas of one part of speech (``"noun"`` or ``"adj"``), sorted, as written in WordNet
    (lower case). ``multiword=False`` (NegLabel's pool: about 57.5k nouns and 21k adjectives) leaves out
    the collocations written with ``_``; True keeps them with spaces.

    Raises ``FileNotFoundError`` when no WordNet is installed (or ``root`` is not a dict directory).
    """
    if pos not in _POS:
        raise ValueError(f"pos must be 'noun' or 'adj', got {pos!r}")
    path = find_wordnet(root)
    if path is None:
        raise FileNotFoundError(
            "WordNet not found: install nltk's corpus (python -m nltk.downloader wordnet), Debian's "
            "wordnet-base, or set CLIPLAB_WORDNET to a dict directory"
        )
    lemmas = _read_index(path / f"index.{_POS[pos]}")
    if not multiword:
        lemmas = [w for w in lemmas if "_" not in w]
    return sorted({w.replace("_", " ") for w in lemmas})
