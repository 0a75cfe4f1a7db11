"""Group robustness metrics on hand-made data: per-group accuracy, worst group, average and mean group accuracy."""

from __future__ import annotations

import pytest
import torch

from cliplab.metrics import group_accuracies, group_robustness, worst_group_accuracy


def test_hand_made_groups():
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    pred = [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    groups = [3, 3, 3, 3, 7, 7, 7, 0, 0, 0]  # group 3: 3/4; group 7: 1/3; group 0: 3/3
    assert group_accuracies(pred, labels, groups) == pytest.approx({0: 1.0, 3: 0.75, 7: 1 / 3})
    assert worst_group_accuracy(pred, labels, groups) == pytest.approx(1 / 3)
    report = group_robustness(pred, labels, groups)
    assert report["worst_group"] == 7
    assert report["average_accuracy"] == pytest.approx(7 / 10)
    assert report["mean_group_accuracy"] == pytest.approx((1.0 + 0.75 + 1 / 3) / 3)
    # logits are reduced by argmax
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 2).float()
    assert worst_group_accuracy(logits, labels, groups) == pytest.approx(1 / 3)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="groups has 2 entries"):
        worst_group_accuracy([0, 1, 1], [0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="labels has 2 entries"):
        worst_group_accuracy([0, 1, 1], [0, 1], [0, 1, 1])
