"""The built-in world's patterns (a task no caption names) and rendering styles (a shift)."""

import numpy as np
import pytest

from cliplab.data.shapes_world import PATTERNS, STYLES, VOCABULARY, shapes


def _paint(arr, bg_dark=True):
    """Pixels clearly off the background: bright on the dark background, dark-or-saturated on paper."""
    a = arr.astype(int)
    if bg_dark:
        return a.max(axis=2) > 110
    return (a.max(axis=2) - a.min(axis=2)) > 60  # coloured ink on grey paper


def test_pattern_task_labels_classnames_and_captions():
    ds = shapes("test", n=300, seed=2, task="pattern", objects="mixed")
    assert ds.classnames == list(PATTERNS) and ds.name == "shapes-pattern-test"
    assert ds.labels.tolist() == [PATTERNS.index(p) for p in ds.attributes["pattern"]]
    # roughly uniform over the four patterns
    assert np.bincount(ds.labels, minlength=4).min() > 40
    # no caption names a pattern: the captions are those of the plain world, word for word
    plain = shapes("test", n=300, seed=2, task="shape", objects="mixed")
    assert ds.captions == plain.captions
    assert not {w for c in ds.captions for w in c.replace(".", " ").split()} & set(PATTERNS)
    # the tokenizer knows the class names (they are words of the world, just never captioned)
    assert set(PATTERNS) <= set(VOCABULARY)
    # layout, shapes and colours are those of the plain world: only the fill changes
    for key in ("shape", "colour", "size", "position", "shape2", "colour2"):
        assert (ds.attributes[key] == plain.attributes[key]).all(), key
    assert set(plain.attributes["pattern"][plain.attributes["n_objects"] == 1]) == {"plain"}


def test_patterns_change_only_the_fill():
    plain = shapes("test", n=60, seed=4, objects=1, image_size=64)
    pat = shapes("test", n=60, seed=4, objects=1, image_size=64, patterns=True)
    expected = {"plain": 1.0, "striped": 0.5, "checkered": 0.5, "dotted": np.pi * 0.3**2}
    seen = set()
    for i in range(60):
        a, b = _paint(plain.render(i)), _paint(pat.render(i))
        assert not (b & ~a).any() or (b & ~a).sum() < 0.05 * a.sum()  # paint only inside the plain shape
        p = pat.attributes["pattern"][i]
        share = b.sum() / a.sum()
        if a.sum() > 300:  # large shapes: the painted share is close to the pattern's duty cycle
            assert share == pytest.approx(expected[p], abs=0.14), (i, p, share)
            seen.add(p)
    assert seen == set(PATTERNS)


def test_styles_keep_labels_and_shift_the_pixels():
    base = shapes("test", n=40, seed=5, task="colour")
    for style in STYLES[1:]:
        ds = shapes("test", n=40, seed=5, task="colour", style=style)
        assert ds.name == f"shapes-colour-test-{style}"
        assert (ds.labels == base.labels).all() and ds.captions == base.captions
        assert ds.fingerprint() != base.fingerprint()
        assert (ds.render(3) == shapes("test", n=40, seed=5, task="colour", style=style).render(3)).all()
    for i in range(10):
        solid, outline = base.render(i), shapes("test", n=40, seed=5, style="outline").render(i)
        # a hollow contour paints a fraction of the filled shape, on the same dark background
        assert 0.1 * _paint(solid).sum() < _paint(outline).sum() < 0.8 * _paint(solid).sum()
        sketch = shapes("test", n=40, seed=5, style="sketch").render(i)
        background = np.median(sketch.reshape(-1, 3), axis=0)
        assert background.min() > 150  # light paper
        assert _paint(sketch, bg_dark=False).sum() > 10


def test_style_and_pattern_errors():
    with pytest.raises(ValueError, match="style"):
        shapes("test", n=4, style="watercolour")
    with pytest.raises(ValueError, match="patterns=True"):
        shapes("test", n=4, task="pattern", patterns=False)
    with pytest.raises(ValueError, match="patterns must be"):
        shapes("test", n=4, patterns="yes")
