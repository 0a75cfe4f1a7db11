"""Zero-/few-shot anomaly detection (issue 27): WinCLIP's prompt ensemble and harmonic aggregation, WinCLIP+ and
PatchCore against hand computations, detection on the built-in defects, and ``cliplab anomaly``."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cliplab.anomaly import METHODS, PatchCore, WinCLIP, anomaly_evaluate, dense_features, harmonic_aggregation
from cliplab.anomaly.detectors import greedy_coreset
from cliplab.anomaly.prompts import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES, prompt_ensemble
from cliplab.anomaly.windows import DenseFeatures, window_indices
from cliplab.cli.commands import main


@pytest.fixture(scope="module")
def shapes_model():
    from cliplab.models import load_model

    return load_model("builtin:shapes")


# -- the prompt ensemble ----------------------------------------------------------------------------------------------


def test_prompt_ensemble_is_every_state_in_every_template():
    # WinCLIP (CVPR 2023) Appendix A as released in anomalib's winclip/prompting.py
    normal_states = ["{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                     "{} without damage"]  # fmt: skip
    anomalous_states = ["damaged {}", "{} with flaw", "{} with defect", "{} with damage"]
    assert list(NORMAL_STATES) == normal_states and list(ANOMALOUS_STATES) == anomalous_states
    assert len(TEMPLATES) == 21 and TEMPLATES[0] == "a cropped photo of the {}."
    assert TEMPLATES[-1] == "a photo of a {} for anomaly detection."
    normal, anomalous = prompt_ensemble("bottle")
    assert len(normal) == 7 * 21 and len(anomalous) == 4 * 21
    assert normal[0] == "a cropped photo of the bottle." and normal[21] == "a cropped photo of the flawless bottle."
    assert "a photo of the bottle without defect for visual inspection." in normal
    assert anomalous[0] == "a cropped photo of the damaged bottle."
    assert anomalous[-1] == "a photo of a bottle with damage for anomaly detection."
    assert not set(normal) & set(anomalous)
    with pytest.raises(ValueError, match="object name"):
        prompt_ensemble(" ")


# -- windows and harmonic aggregation ---------------------------------------------------------------------------------


def test_window_indices_and_harmonic_aggregation_by_hand():
    w = window_indices((2, 3), 2)
    assert w.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5]]
    scores = torch.tensor([[0.2, 0.8]])
    got = harmonic_aggregation(scores, (2, 3), w)[0]
    both = 2 / (1 / 0.2 + 1 / 0.8)  # patches 1 and 4 lie in both windows
    want = torch.tensor([[0.2, both, 0.8], [0.2, both, 0.8]])
    assert torch.allclose(got, want)
    w3 = window_indices((3, 3), 2)  # centre patch in all four windows
    s = torch.tensor([[0.1, 0.2, 0.4, 0.5]])
    assert float(harmonic_aggregation(s, (3, 3), w3)[0, 1, 1]) == pytest.approx(4 / (10 + 5 + 2.5 + 2))
    with pytest.raises(ValueError, match="window size"):
        window_indices((3, 3), 4)


def _features(n, grid=(2, 2), dim=5, seed=0, scales=(2,)):
    g = torch.Generator().manual_seed(seed)
    unit = lambda *s: F.normalize(torch.randn(*s, dim, generator=g), dim=-1)  # noqa: E731
    windows = {s: unit(n, window_indices(grid, s).shape[0]) for s in scales}
    return DenseFeatures(unit(n), unit(n, grid[0] * grid[1]), windows, grid, (4, 4), "mean")


def test_patchcore_matches_brute_force_nearest_neighbour():
    ref, test = _features(3, seed=1), _features(4, seed=2)
    pc = PatchCore(None).fit(ref)
    scores, maps = pc.score(test)
    memory = ref.patches.reshape(-1, 5).numpy().astype(np.float64)
    for i in range(4):
        d = [min(np.linalg.norm(p - m) for m in memory) for p in test.patches[i].numpy().astype(np.float64)]
        assert scores[i] == pytest.approx(max(d), abs=1e-5)
        assert maps.shape == (4, 4, 4)
    # a coreset keeps a subset: greedy k-centre picks the farthest row next
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 0.0]])
    picked = greedy_coreset(x, 3, seed=0).tolist()
    first = picked[0]
    far = int(torch.cdist(x, x[first : first + 1]).squeeze(1).argmax())
    assert picked[1] == far and len(set(picked)) == 3
    assert PatchCore(None, coreset=0.5).fit(ref).memory_.shape[0] == 6
    with pytest.raises(ValueError, match="shots >= 1"):
        PatchCore(None).fit([])


def test_winclip_scores_follow_the_paper_by_hand():
    test, ref = _features(2, seed=3), _features(2, seed=4)
    text = F.normalize(torch.randn(2, 5, generator=torch.Generator().manual_seed(5)), dim=-1)
    tau = 0.07
    zs = WinCLIP(None, "thing", scales=(2,), text=text).fit()
    scores, maps = zs.score(test)
    ascore = lambda f: torch.softmax(f @ text.T / tau, -1)[..., 1]  # noqa: E731
    assert np.allclose(scores, ascore(test.image).numpy(), atol=1e-6)
    # grid 2×2, one 2×2 window covering every patch: zero-shot map = harmonic mean of image and window scores
    zero = 2 / (1 / ascore(test.image) + 1 / ascore(test.windows[2][:, 0]))
    assert np.allclose(maps, zero.view(-1, 1, 1).expand(-1, 4, 4).numpy(), atol=1e-6)
    few = WinCLIP(None, "thing", scales=(2,), text=text).fit(ref)
    s2, m2 = few.score(test)
    vpatch = ((1 - test.patches @ ref.patches.reshape(-1, 5).T).amin(-1) / 2).view(2, 2, 2)
    vwin = (1 - test.windows[2][:, 0] @ ref.windows[2][:, 0].T).amin(-1) / 2
    fmap = (vpatch + vwin.view(-1, 1, 1)) / 2
    assert np.allclose(s2, ((ascore(test.image) + fmap.flatten(1).amax(1)) / 2).numpy(), atol=1e-6)
    combined = (zero.view(-1, 1, 1) + fmap) / 2
    assert np.allclose(m2[:, ::2, ::2].max(), combined.max().item(), atol=1e-2)  # bilinear upsampling of 2×2
    with pytest.raises(RuntimeError, match="fit"):
        WinCLIP(None, "thing").score(test)


def test_maps_go_back_to_the_image_frame_through_resize_and_centre_crop():
    from cliplab.anomaly.evaluation import to_image_frame
    from cliplab.imaging.preprocess import Preprocess

    pre = Preprocess(resize=64, crop=(64, 64))
    amap = np.zeros((64, 64), np.float32)
    amap[:, 32:] = 1.0  # the right half of the crop
    back = to_image_frame(amap, (96, 128), pre)  # a 128×96 image: resized to 85×64, crop from column 10
    assert back.shape == (96, 128)
    # crop columns 10..73 of 85 → image columns 15..110 of 128; the crop's right half starts at 42/85·128 ≈ 63
    assert back[:, :14].max() == 0 and back[:, 112:].max() == 0  # cut off by the crop: the map's minimum
    assert back[:, 66:108].min() == pytest.approx(1.0) and back[:, 18:60].max() == 0
    square = to_image_frame(amap, (64, 64), pre)
    assert np.array_equal(square, amap)


# -- on the built-in model --------------------------------------------------------------------------------------------


def test_window_embeddings_are_the_tower_on_masked_tokens(shapes_model):
    from cliplab.data import load_dataset
    from cliplab.towers import patch_features, trace

    ds = load_dataset("shapes-defects:n=3", split="test")
    images = [ds.image(i) for i in range(3)]
    full = dense_features(shapes_model, images, scales=(4, 2))  # a 4×4 window on the 4×4 grid is the image
    pooled = F.normalize(trace(shapes_model, images).pooled, dim=-1)
    assert torch.allclose(full.windows[4][:, 0], pooled, atol=1e-5)
    assert torch.allclose(full.image, pooled, atol=1e-5)
    patches = F.normalize(patch_features(shapes_model, images), dim=-1)
    assert torch.allclose(full.patches, patches, atol=1e-5)
    mean = dense_features(shapes_model, images, scales=(2,), window_features="mean")
    want = F.normalize(patch_features(shapes_model, images)[:, window_indices((4, 4), 2)].mean(2), dim=-1)
    assert torch.allclose(mean.windows[2], want, atol=1e-5)


def test_few_shot_detection_beats_random_scores_and_maps(shapes_model):
    from cliplab.data import load_dataset
    from cliplab.metrics import anomaly_metrics

    test = load_dataset("shapes-defects:n=48,category=circle,defects=missing", split="test")
    train = load_dataset("shapes-defects:n=16,category=circle", split="train")
    out = anomaly_evaluate(shapes_model, test, train, methods=["patchcore"], shots=[16], window_features="mean")
    row = out["mean"][0]
    masks = [test.mask(i) for i in range(len(test))]
    rng = np.random.default_rng(0)
    rand = [anomaly_metrics(rng.random(len(test)), test.labels, [rng.random((64, 64)) for _ in masks], masks)
            for _ in range(5)]  # fmt: skip
    random_image = np.mean([r["image_auroc"] for r in rand])
    random_pixel = np.mean([r["pixel_auroc"] for r in rand])
    assert abs(random_pixel - 0.5) < 0.02
    assert row["pixel_auroc"] >= random_pixel + 0.25  # measured 0.86
    assert row["image_auroc"] >= random_image + 0.10  # measured 0.67
    assert row["pro"] >= 0.4  # measured 0.61; random maps give ≈ 0.15
    assert out["seconds_per_image"]["patchcore"] > 0


# -- the command ------------------------------------------------------------------------------------------------------


def _folder(root, n_good=6, n_bad=2):
    rng = np.random.default_rng(0)
    for sub in ("good", "scratch", "masks/scratch"):
        (root / sub).mkdir(parents=True)
    for i in range(n_good):
        a = np.full((64, 64, 3), 40, np.uint8)
        a[16:48, 16:48] = 200 + rng.integers(-5, 6)
        Image.fromarray(a).save(root / "good" / f"{i:03d}.png")
    for i in range(n_bad):
        a = np.full((64, 64, 3), 40, np.uint8)
        a[16:48, 16:48] = 200
        a[20:28, 30 + i : 34 + i] = (255, 0, 0)
        m = np.zeros((64, 64), np.uint8)
        m[20:28, 30 + i : 34 + i] = 255
        Image.fromarray(a).save(root / "scratch" / f"{i:03d}.png")
        Image.fromarray(m).save(root / "masks" / "scratch" / f"{i:03d}_mask.png")
    return root


def test_cli_end_to_end_with_json(tmp_path, capsys, monkeypatch, shapes_model):
    import cliplab.models

    monkeypatch.setattr(cliplab.models, "load_model", lambda spec, device=None: shapes_model)
    root = _folder(tmp_path / "widget")
    out = tmp_path / "out"
    rc = main(["anomaly", "builtin:shapes", str(root), "--shots", "0,1", "--window-features", "mean", "--json",
               "--quiet", "-o", str(out)])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == f"anomaly-folder:{root}"
    rows = {(r["method"], r["shots"]): r for r in result["rows"]}
    assert set(rows) == {("winclip", 0), ("winclip", 1), ("patchcore", 1)}
    for r in rows.values():
        assert r["category"] == "widget" and r["n"] == 5
        assert all(0 <= r[k] <= 1 for k in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pro"))
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == result["rows"] and saved["overlays"]
    assert all((out / name).is_file() for name in saved["overlays"])
    assert set(result["seconds_per_image"]) == {"winclip", "patchcore"}


def test_cli_methods_agree_with_the_package():
    from cliplab.anomaly.windows import WINDOW_FEATURES as WF
    from cliplab.cli.anomaly import METHOD_NAMES, WINDOW_FEATURES

    assert METHOD_NAMES == METHODS and WINDOW_FEATURES == WF


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--methods", "winclip,padim"], "--methods"),
        (["--shots", "0,-1"], "--shots"),
        (["--seeds", "x"], "--seeds"),
        (["--coreset", "1.5"], "--coreset"),
    ],
)
def test_cli_bad_options_are_parse_errors(argv, option, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["anomaly", "builtin:shapes", str(tmp_path), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err


def test_cli_bad_data_is_an_error_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import cliplab.models

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cliplab.models, "load_model", refuse)
    root = _folder(tmp_path / "empty", n_good=0)
    assert main(["anomaly", "builtin:shapes", str(root), "--shots", "0,1"]) == 2
    assert "DATA" in capsys.readouterr().err
    root = _folder(tmp_path / "few", n_good=2)  # one reference in train, two shots asked
    assert main(["anomaly", "builtin:shapes", str(root), "--shots", "2"]) == 2
    assert "--shots 2" in capsys.readouterr().err
    assert main(["anomaly", "builtin:shapes", str(root), "--methods", "patchcore", "--shots", "0"]) == 2
    assert "--methods patchcore" in capsys.readouterr().err
    assert main(["anomaly", "builtin:shapes", str(tmp_path / "nope")]) == 2
    assert "DATA" in capsys.readouterr().err


def test_bench_stage_is_opt_in_documented_and_renders():
    from pathlib import Path

    import cliplab.bench.runner  # noqa: F401  (registers the built-in stages)
    from cliplab.bench.stage import STAGES

    stage = STAGES["anomaly"]
    assert not stage.default
    doc = (Path(__file__).parents[1] / "docs" / "bench-results.md").read_text().split("## `stages.anomaly`", 1)[1]
    assert all(m.path.split(".")[-1] in doc for m in stage.metrics)
    r = {"data": "shapes-defects:n=8", "n_test": 8, "window_features": "tokens", "seconds_per_image": {"winclip": 0.1},
         "mean": {"winclip@0": {"image_auroc": 0.5, "pixel_auroc": 0.6, "pro": 0.2}},
         "rows": [{"category": "circle", "method": "winclip", "shots": 0, "image_auroc": 0.5}]}  # fmt: skip
    html = stage.section({"stages": {"anomaly": r}}, None)
    assert "Anomaly detection" in html and "winclip@0" in html and "circle" in html
    assert "winclip@0/image_auroc" in [v[0].split("/", 1)[1] for v in stage.values(r)]
    assert "no anomaly" in stage.section({"stages": {"anomaly": {"skipped": "no anomaly data"}}}, None)
