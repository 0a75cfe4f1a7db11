import numpy as np
import pytest
import torch

from cliplab import zeroshot_weights
from cliplab.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    mean_per_class_recall,
    topk_accuracy,
)
from cliplab.zeroshot import class_prompts, get_templates, zeroshot_logits


def test_template_ensemble_normalise_average_renormalise(tiny_model):
    classes, templates = ["circle", "red square"], ["a {}.", "a photo of a {}.", "a small {} on the left"]
    W = zeroshot_weights(tiny_model, classes, templates).double().numpy()
    # independent: encode each prompt on its own, normalise, average, renormalise (float64)
    for c, name in enumerate(classes):
        embs = np.stack([tiny_model.encode_texts([t.format(name)])[0].double().numpy() for t in templates])
        embs /= np.linalg.norm(embs, axis=1, keepdims=True)
        mean = embs.mean(0)
        np.testing.assert_allclose(W[c], mean / np.linalg.norm(mean), atol=1e-5)


def test_description_dict_templates(tiny_model):
    desc = {"circle": ["a round red thing", "a circle"], "square": ["a square"]}
    W = zeroshot_weights(tiny_model, ["circle", "square"], desc)
    direct = tiny_model.encode_texts(["a square"])[0]
    assert torch.allclose(W[1], direct, atol=1e-5)
    with pytest.raises(ValueError, match="no sentences for classes"):
        zeroshot_weights(tiny_model, ["circle", "star"], desc)


def test_template_errors_and_sets():
    assert len(get_templates("imagenet80")) == 80 and len(set(get_templates("imagenet80"))) == 80
    assert len(get_templates("cifar18")) == 18
    with pytest.raises(ValueError, match="placeholder"):
        class_prompts(["a"], ["no placeholder here"])
    with pytest.raises(ValueError, match="duplicates"):
        class_prompts(["a", "a"], ["{}"])
    with pytest.raises(ValueError, match="unknown template set"):
        class_prompts(["a"], "nope")
    with pytest.raises(ValueError, match="empty"):
        class_prompts([], ["{}"])


def test_zeroshot_logits_formula():
    g = torch.Generator().manual_seed(0)
    f, w = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    assert torch.allclose(zeroshot_logits(f, w, 10.0, -1.0), 10.0 * f @ w.T - 1.0)
    d2 = ((f[:, None, :] - w[None]) ** 2).sum(-1)
    assert torch.allclose(zeroshot_logits(f, w, 2.0, geometry="euclidean"), -2.0 * d2 / 4, atol=1e-5)  # EuCLIP: /D
    with pytest.raises(ValueError, match="dimension"):
        zeroshot_logits(f, torch.randn(3, 5))


def test_classification_metrics_against_sklearn():
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score
    from sklearn.metrics import confusion_matrix as sk_cm

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, size=200)
    assert accuracy(logits, labels) == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert topk_accuracy(logits, labels, 5) == pytest.approx(top_k_accuracy_score(labels, logits, k=5))
    assert mean_per_class_recall(logits, labels) == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))
    np.testing.assert_array_equal(
        confusion_matrix(logits.argmax(1), labels, 7).numpy(),
        sk_cm(labels, logits.argmax(1), labels=range(7)),
    )
    rep = classification_report(logits, labels, [f"c{i}" for i in range(7)])
    assert set(rep["per_class_recall"]) == {f"c{i}" for i in range(7)}


def test_classification_metric_errors():
    with pytest.raises(ValueError, match="3 entries but there are 2"):
        accuracy(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="only 3 classes"):
        accuracy(np.zeros((2, 3)), [0, 5])
    with pytest.raises(ValueError, match="NaN"):
        accuracy(np.array([[np.nan, 0.0]]), [0])
    with pytest.raises(ValueError, match="2 class names"):
        classification_report(np.zeros((2, 3)), [0, 1], ["a", "b"])
