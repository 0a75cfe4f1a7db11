import numpy as np
import pytest

from cliplab.data.corruptions import CORRUPTIONS, corrupt
from cliplab.data.shapes_world import shapes


@pytest.fixture(scope="module")
def clean():
    return shapes("test", n=8, seed=2, objects="mixed").arrays()


def test_corruption_names():
    required = {"gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "defocus_blur", "contrast"}
    required |= {"brightness", "saturate", "pixelate", "jpeg_compression", "fog"}
    assert required <= set(CORRUPTIONS) and len(set(CORRUPTIONS)) == len(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_changes_image_and_grows_with_severity(clean, name):
    before = clean.copy()
    distances = []
    for severity in range(1, 6):
        out = [corrupt(img, name, severity, np.random.default_rng([k, severity])) for k, img in enumerate(clean)]
        out = np.stack(out)
        assert out.dtype == np.uint8 and out.shape == clean.shape
        distances.append(np.abs(out.astype(float) - clean).mean())
    np.testing.assert_array_equal(clean, before)  # input untouched
    assert distances[0] > 0.3, distances
    assert all(b >= a - 0.05 for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] > 1.2 * distances[0], distances


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_deterministic_given_rng(clean, name):
    a = corrupt(clean[0], name, 3, np.random.default_rng(7))
    b = corrupt(clean[0], name, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_corrupt_works_on_other_sizes():
    img = shapes("test", n=1, image_size=37).render(0)
    for name in CORRUPTIONS:
        assert corrupt(img, name, 5, np.random.default_rng(0)).shape == (37, 37, 3)


def test_corrupt_bad_arguments(clean):
    with pytest.raises(ValueError, match="unknown corruption 'snow'.*gaussian_noise"):
        corrupt(clean[0], "snow", 3)
    for severity in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="severity"):
            corrupt(clean[0], "fog", severity)
    with pytest.raises(ValueError, match="shape"):
        corrupt(clean[0, :, :, 0], "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(clean[0].astype(np.float32), "fog", 1)


def test_shapes_corruption_keeps_content_and_is_deterministic():
    base = shapes("test", n=12, seed=1, task="colour")
    corrupted = shapes("test", n=12, seed=1, task="colour", corruption="gaussian_noise", severity=4)
    assert corrupted.name == "shapes-colour-test-gaussian_noise4"
    np.testing.assert_array_equal(corrupted.labels, base.labels)
    assert corrupted.captions == base.captions
    a = corrupted.arrays([5, 0, 3])
    np.testing.assert_array_equal(
        a, shapes("test", n=12, seed=1, task="colour", corruption="gaussian_noise", severity=4).arrays([5, 0, 3])
    )
    np.testing.assert_array_equal(a[1], corrupted.render(0))
    assert not np.array_equal(a, base.arrays([5, 0, 3]))
    assert corrupted.fingerprint() != base.fingerprint()
    assert (
        corrupted.fingerprint()
        != shapes("test", n=12, seed=1, task="colour", corruption="gaussian_noise").fingerprint()
    )
