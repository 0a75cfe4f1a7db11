"""The built-in shapes world's splits are independent random streams: same seed, same options, different images.

Agreement between two independent draws of an attribute is the chance rate Σ_v p_v² (1/6 for the 6 shapes
and 6 colours, 1/2 for the 2 sizes, 1/5 for the 5 positions, all drawn uniformly); the same stream would
agree everywhere.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cliplab.data.shapes_world import shapes

N, SEED = 600, 3
PAIRS = list(itertools.combinations(("train", "val", "test"), 2))
CHANCE = {"shape": 1 / 6, "colour": 1 / 6, "size": 1 / 2, "position": 1 / 5}


def _agreement(a, b, key):
    return float(np.mean(a.attributes[key] == b.attributes[key]))


@pytest.mark.parametrize("combos", ["held_in", None])
@pytest.mark.parametrize(("split_a", "split_b"), PAIRS)
def test_splits_draw_independent_attributes(split_a, split_b, combos):
    """``combos="held_in"``: identical options for both splits; ``None``: each split's default."""
    a = shapes(split_a, n=N, seed=SEED, image_size=32, combos=combos)
    b = shapes(split_b, n=N, seed=SEED, image_size=32, combos=combos)
    # a binomial agreement rate over 600 images has a standard deviation of at most 0.02: 5σ margins
    assert float(np.mean(a.labels == b.labels)) == pytest.approx(1 / 6, abs=0.08)
    for key, chance in CHANCE.items():
        assert _agreement(a, b, key) == pytest.approx(chance, abs=0.1), key
    # the same split and seed is the same stream
    again = shapes(split_a, n=N, seed=SEED, image_size=32, combos=combos)
    assert np.array_equal(again.labels, a.labels)
    assert all(_agreement(a, again, key) == 1.0 for key in CHANCE)


@pytest.mark.parametrize(("split_a", "split_b"), PAIRS)
def test_splits_render_different_images(split_a, split_b):
    a = shapes(split_a, n=20, seed=SEED, image_size=32, combos="held_in")
    b = shapes(split_b, n=20, seed=SEED, image_size=32, combos="held_in")
    assert not any(np.array_equal(a.render(i), b.render(i)) for i in range(20))
    assert np.array_equal(a.render(7), shapes(split_a, n=20, seed=SEED, image_size=32, combos="held_in").render(7))


@pytest.mark.parametrize(("split_a", "split_b"), PAIRS)
def test_splits_draw_independent_corruption_noise(split_a, split_b):
    """Gaussian noise added to image i: uncorrelated across splits, identical for the same split."""

    def residual(split, i):
        kw = dict(n=8, seed=SEED, image_size=32, combos="held_in")
        noisy = shapes(split, corruption="gaussian_noise", severity=3, **kw).render(i).astype(float)
        return (noisy - shapes(split, **kw).render(i)).ravel()

    for i in range(4):
        ra, rb = residual(split_a, i), residual(split_b, i)
        assert ra.std() > 5 and rb.std() > 5  # visibly noisy
        assert abs(np.corrcoef(ra, rb)[0, 1]) < 0.3
        np.testing.assert_array_equal(residual(split_a, i), ra)
