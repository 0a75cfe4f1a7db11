import json

import numpy as np
import pytest
import torch

from cliplab import Features
from cliplab.assess import calibration_evaluation, estimation_evaluation, ood_evaluation, split_half
from cliplab.cli.commands import main
from cliplab.metrics import ood_metrics


def _clusters(n_per, centers, noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([c + noise * torch.randn(n_per, c.numel(), generator=g) for c in centers])
    labels = torch.arange(len(centers)).repeat_interleave(n_per)
    return torch.nn.functional.normalize(x, dim=1), labels


def test_ood_evaluation_separates_far_ood_and_matches_direct_metrics():
    d = 16
    eye = torch.eye(d)
    W = eye[:4]
    x, y = _clusters(50, list(W), 0.2, 0)
    xt, yt = _clusters(50, list(W), 0.2, 1)
    ood_x, _ = _clusters(100, [eye[8] + eye[9]], 0.2, 2)
    res = ood_evaluation(
        Features(images=xt, labels=yt, classnames=list("abcd")),
        {"far": Features(images=ood_x)},
        W,
        100.0,
        train_features=Features(images=x, labels=y, classnames=list("abcd")),
    )
    assert set(res["methods"]) == {"msp", "max_logit", "energy", "mcm", "knn", "vim", "mahalanobis"}
    assert res["skipped"] == {"neglabel": "needs a text encoder for the negative word list"}
    for m in res["methods"]:
        assert res["sets"]["far"][m]["auroc"] > 0.8, m
    # the table equals ood_metrics on the scores computed by hand
    from cliplab.ood import max_logit

    direct = ood_metrics(max_logit(100 * xt @ W.T), max_logit(100 * ood_x @ W.T))
    assert res["sets"]["far"]["max_logit"] == pytest.approx(direct)
    assert res["mean"]["msp"] == pytest.approx(res["sets"]["far"]["msp"])


def test_ood_evaluation_errors():
    f = Features(images=torch.eye(3))
    with pytest.raises(ValueError, match="no OOD sets"):
        ood_evaluation(f, {}, torch.eye(3), 10.0)
    with pytest.raises(ValueError, match="unknown OOD method"):
        ood_evaluation(f, {"x": f}, torch.eye(3), 10.0, methods=["nope"])


def test_calibration_evaluation_improves_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4000, 5, generator=g)
    labels = torch.distributions.Categorical(logits=logits).sample()
    overconfident = 4 * logits
    vi, ti = split_half(labels)
    assert len(set(vi.tolist()) & set(ti.tolist())) == 0 and len(vi) + len(ti) == 4000
    res = calibration_evaluation(overconfident[vi], labels[vi], overconfident[ti], labels[ti])
    assert res["temperature"] == pytest.approx(4.0, rel=0.15)
    assert res["ece_scaled"] < res["ece"] and res["nll_scaled"] < res["nll"]
    assert len(res["risk_coverage"]["msp"]["x"]) <= 200


def test_estimation_evaluation_runs_all_estimators():
    g = torch.Generator().manual_seed(0)
    sets = []
    for i, scale in enumerate([4.0, 2.0, 1.0, 0.5]):
        labels = torch.randint(0, 5, (500,), generator=g)
        logits = torch.randn(500, 5, generator=g) + scale * torch.nn.functional.one_hot(labels, 5)
        sets.append((f"s{i}", logits, labels))
    res = estimation_evaluation(sets[0][1], sets[0][2], sets)
    assert {"mano", "average_confidence", "atc", "doc", "nuclear_norm"} <= set(res["estimators"])
    accs = [res["accuracy"][f"s{i}"] for i in range(4)]
    assert accs == sorted(accs, reverse=True)
    assert res["estimators"]["average_confidence"]["spearman"] == pytest.approx(1.0)


def test_ood_and_estimate_cli_on_builtin_world(tiny_model_dir, tmp_path, capsys):
    model = str(tiny_model_dir)
    common = ["--quiet", "--json", "--cache-dir", str(tmp_path / "c")]
    rc = main(
        [
            "ood",
            model,
            "shapes:n=60,image_size=32",
            "shapes:n=40,image_size=32,held_out=shapes",
            "--methods",
            "msp,energy,knn",
            *common,
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["sets"]) == {"shapes:n=40,image_size=32,held_out=shapes"} and res["methods"] == [
        "msp",
        "energy",
        "knn",
    ]
    rc = main(["estimate", model, "shapes:n=20,image_size=32", "--family", "corruptions", *common])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["accuracy"]) >= 3 * 5
    rc = main(["calibrate", model, "shapes:n=80,image_size=32", *common])
    assert rc == 0 and "temperature" in json.loads(capsys.readouterr().out)


def test_estimate_cli_needs_three_sets(tiny_model_dir, image_folder, capsys):
    assert main(["estimate", str(tiny_model_dir), str(image_folder), "--quiet"]) == 2
    assert "at least 3" in capsys.readouterr().err


def test_split_half_is_stratified():
    labels = torch.tensor(np.repeat(np.arange(3), [10, 20, 31]))
    vi, ti = split_half(labels, seed=1)
    assert np.bincount(labels[vi].numpy()).tolist() == [5, 10, 15]
