"""Compositional probes: readers on tiny fixtures in the released formats, the generated built-in probes
(deterministic, each negative type differs in exactly the intended way), the metrics, the CLI."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data.shapes_world import COLOURS, SHAPES


def _png(path, size=(40, 30), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


# -- readers -------------------------------------------------------------------------------------------------
def test_sugarcrepe_reader(tmp_path):
    from cliplab.probes import load_sugarcrepe

    root = tmp_path / "sugar"
    for name in ("000000000001.jpg", "000000000002.jpg"):
        _png(root / "val2017" / name)
    swap = {
        "0": {"filename": "000000000001.jpg", "caption": "a red cat", "negative_caption": "a cat red"},
        "1": {"filename": "000000000002.jpg", "caption": "a dog on a box", "negative_caption": "a box on a dog"},
    }
    add = {"0": {"filename": "000000000001.jpg", "caption": "a cat", "negative_caption": "a cat and a hat"}}
    (root / "swap_att.json").write_text(json.dumps(swap))
    (root / "add_ent.json").write_text(json.dumps(add))  # the released name of add_obj in some revisions
    probe = load_sugarcrepe(root)
    assert probe.kinds == ["add_obj", "swap_att", "swap_att"]
    assert probe.captions[0] == ["a cat", "a cat and a hat"]
    assert len(probe.images) == 2 and probe.image_index.tolist() == [0, 0, 1]
    assert probe.info["types"] == ["add_obj", "swap_att"]

    swap["2"] = {"filename": "000000000099.jpg", "caption": "x", "negative_caption": "y"}
    (root / "swap_att.json").write_text(json.dumps(swap))
    with pytest.raises(FileNotFoundError, match="000000000099.jpg"):
        load_sugarcrepe(root)
    (root / "swap_att.json").write_text(json.dumps({"0": {"filename": "a.jpg", "caption": "x"}}))
    with pytest.raises(ValueError, match="swap_att.json.*negative_caption"):
        load_sugarcrepe(root)
    with pytest.raises(FileNotFoundError, match="no SugarCrepe file"):
        load_sugarcrepe(tmp_path / "sugar" / "val2017")


def test_winoground_reader_and_scores(tmp_path):
    from cliplab.probes import load_winoground, winoground_metrics

    data = tmp_path / "winoground" / "data"
    rows = []
    for k in range(3):
        for j in range(2):
            _png(data / "images" / f"ex_{k}_{j}.png", value=40 * k + j)
        rows.append(
            {
                "id": k,
                "caption_0": f"an old person kisses a young person {k}",
                "caption_1": f"a young person kisses an old person {k}",
                "image_0": f"ex_{k}_0",
                "image_1": f"ex_{k}_1",
                "tag": "Object",
                "collapsed_tag": "Relation" if k else "Object",
            }
        )
    (data / "examples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    probe = load_winoground(tmp_path / "winoground")
    assert len(probe) == 3 and probe.image_index.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert probe.tags == ["Object", "Relation", "Relation"]

    # s[m, c, i]: item 0 all right, item 1 text right / image wrong, item 2 image right / text wrong
    s = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.9, 0.95], [0.2, 0.99]], [[0.9, 0.1], [0.95, 0.99]]])
    text = [all([s[m, 0, 0] > s[m, 1, 0], s[m, 1, 1] > s[m, 0, 1]]) for m in range(3)]
    image = [all([s[m, 0, 0] > s[m, 0, 1], s[m, 1, 1] > s[m, 1, 0]]) for m in range(3)]
    assert text == [True, True, False] and image == [True, False, True]
    out = winoground_metrics(s, probe.tags)
    assert out["text"] == pytest.approx(2 / 3) and out["image"] == pytest.approx(2 / 3)
    assert out["group"] == pytest.approx(1 / 3)
    assert out["by_tag"]["Relation"] == {"text": 0.5, "image": 0.5, "group": 0.0, "n": 2}

    (data / "examples.jsonl").write_text('{"caption_0": "a"}\n')
    with pytest.raises(ValueError, match="examples.jsonl:1: missing key"):
        load_winoground(tmp_path / "winoground")


def test_aro_visual_genome_readers_crop_the_box(tmp_path):
    from cliplab.probes import load_vg_attribution, load_vg_relation

    root = tmp_path / "aro"
    _png(root / "images" / "1.jpg", size=(100, 80))
    case = {
        "image_id": "1",
        "image_path": "1.jpg",
        "bbox_x": 10,
        "bbox_y": 5,
        "bbox_w": 30,
        "bbox_h": 20,
        "true_caption": "the horse is eating the grass",
        "false_caption": "the grass is eating the horse",
    }
    (root / "visual_genome_relation.json").write_text(json.dumps([{**case, "relation_name": "eating"}]))
    (root / "visual_genome_attribution.json").write_text(json.dumps([{**case, "attributes": ["white", "brown"]}]))
    rel = load_vg_relation(root)
    assert rel.kinds == ["eating"] and rel.captions[0][0] == case["true_caption"]
    assert rel.images.image(0).size == (30, 20)
    assert load_vg_attribution(root).kinds == ["white_brown"]
    (root / "visual_genome_relation.json").write_text("[{")
    with pytest.raises(ValueError, match="visual_genome_relation.json: invalid JSON"):
        load_vg_relation(root)


def test_aro_order_negatives_are_permutations_of_the_true_caption(tmp_path):
    from cliplab.probes import load_aro_order

    root = tmp_path / "coco"
    _png(root / "val2014" / "a.jpg")
    caps = ["A man riding a wave on top of a surfboard.", "Two dogs play with a red ball in the park!"]
    (root / "coco_karpathy_test.json").write_text(json.dumps([{"image": "val2014/a.jpg", "caption": caps}]))
    probe = load_aro_order(root, "coco")
    assert len(probe) == 2 and probe.kinds == ["order", "order"]
    assert probe.captions[0][0] == "a man riding a wave on top of a surfboard"  # BLIP's clean-up
    for options in probe.captions:
        assert len(options) >= 3
        for neg in options[1:]:
            assert sorted(neg.split()) == sorted(options[0].split())
    assert load_aro_order(root, "coco").captions == probe.captions  # deterministic
    with pytest.raises(FileNotFoundError, match="flickr30k_test.json"):
        load_aro_order(root, "flickr")


def test_probe_specs():
    from cliplab.probes import load_probe

    probe = load_probe("shapes:n=12,image_size=16,seed=3")
    assert probe.name == "shapes" and len(probe.images) == 12
    with pytest.raises(ValueError, match="accepted forms.*sugarcrepe"):
        load_probe("crepes:/x")
    with pytest.raises(ValueError, match="unknown option"):
        load_probe("winoground:/tmp:images=/x")


# -- built-in probes ---------------------------------------------------------------------------------------
_W = re.compile(r"[a-z]+")
_REL = {"left", "right", "above", "below"}


def _words(caption):
    return _W.findall(caption)


def test_builtin_probes_deterministic_per_seed_and_independent_of_n():
    from cliplab.data.shapes_probes import generate_probes

    a, b = generate_probes(n=40, seed=1, image_size=16), generate_probes(n=40, seed=1, image_size=16)
    assert [(p.positive, p.negatives) for p in a.probes] == [(p.positive, p.negatives) for p in b.probes]
    c = generate_probes(n=20, seed=1, image_size=16)
    assert [p.negatives for p in c.probes] == [p.negatives for p in a.probes[:20]]
    d = generate_probes(n=40, seed=2, image_size=16)
    assert [p.negatives for p in d.probes] != [p.negatives for p in a.probes]


def test_each_negative_type_differs_from_the_true_caption_in_exactly_the_intended_way():
    from cliplab.data.shapes_probes import NEGATIVE_TYPES, generate_probes

    probes = generate_probes(n=120, seed=0, image_size=16)
    seen = set()
    for p in probes.probes:
        t = _words(p.positive)
        shapes_in = {o["shape"] for o in p.objects}
        colours_in = {o["colour"] for o in p.objects}
        # the true caption names every object's colour and shape
        assert shapes_in <= set(t) and colours_in <= set(t)
        for kind, neg in p.negatives.items():
            seen.add(kind)
            n = _words(neg)
            assert neg != p.positive
            diff = [i for i, (x, y) in enumerate(zip(t, n)) if x != y] if len(t) == len(n) else None
            if kind in ("swap_att", "swap_obj"):
                vocab = COLOURS if kind == "swap_att" else SHAPES
                assert len(p.objects) == 2 and sorted(n) == sorted(t) and len(diff) == 2
                i, j = diff
                assert t[i] in vocab and t[j] in vocab and (n[i], n[j]) == (t[j], t[i])
            elif kind == "swap_rel":
                assert len(p.objects) == 2 and len(diff) == 1
                assert {t[diff[0]], n[diff[0]]} in ({"left", "right"}, {"above", "below"})
            elif kind in ("replace_obj", "replace_att"):
                vocab, present = (SHAPES, shapes_in) if kind == "replace_obj" else (COLOURS, colours_in)
                assert len(diff) == 1 and t[diff[0]] in vocab and n[diff[0]] in vocab and n[diff[0]] not in present
            elif kind == "add_obj":
                assert neg.startswith(p.positive[:-1] + " and a ")
                colour, shape = n[len(t) + 2 :]
                assert colour in COLOURS and colour not in colours_in and shape in SHAPES and shape not in shapes_in
            elif kind == "shuffle":
                assert sorted(n) == sorted(t) and n != t
            else:
                raise AssertionError(kind)
        assert ("swap_rel" in p.negatives) == (len(p.objects) == 2)
    assert seen == set(NEGATIVE_TYPES)


def test_caption_negatives_only_swap_bound_attributes():
    from cliplab.data.caption_negatives import caption_negatives

    rng = np.random.default_rng(0)
    out = caption_negatives("a red circle to the left of a blue square.", rng)
    assert out["swap_att"] == "a blue circle to the left of a red square."
    assert out["swap_obj"] == "a red square to the left of a blue circle."
    assert out["swap_rel"] == "a red circle to the right of a blue square."
    assert "swap_att" not in caption_negatives("something red and something blue.", rng)  # same meaning swapped
    assert set(caption_negatives("A dog.", rng)) == {"shuffle"}


# -- metrics and scoring -----------------------------------------------------------------------------------
def test_selection_metrics_ties_are_wrong():
    from cliplab.probes import selection_metrics

    scores = [np.array([0.9, 0.1]), np.array([0.5, 0.5]), np.array([0.2, 0.3]), np.array([0.8, 0.1, 0.7])]
    out = selection_metrics(scores, ["a", "a", "b", "b"])
    assert out["by_type"] == {"a": {"accuracy": 0.5, "n": 2}, "b": {"accuracy": 0.5, "n": 2}}
    assert out["accuracy"] == 0.5 and out["macro_accuracy"] == 0.5


def test_evaluate_probe_matches_independent_scoring(tiny_model):
    from cliplab.probes import builtin_probe, evaluate_probe

    probe = builtin_probe("test", n=16, seed=0, image_size=32)
    out = evaluate_probe(tiny_model, probe, cache_dir=False)
    imgs = tiny_model.encode_images([probe.images.image(i) for i in range(len(probe.images))])
    correct = {}
    for m, (caps, kind) in enumerate(zip(probe.captions, probe.kinds)):
        t = tiny_model.encode_texts(caps)
        cos = (t @ imgs[probe.image_index[m]]).numpy()
        correct.setdefault(kind, []).append(cos[0] > cos[1:].max())
    for kind, hits in correct.items():
        assert out["by_type"][kind]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-9)
        assert out["by_type"][kind]["n"] == len(hits)


def test_winoground_scores_with_a_model(tmp_path, tiny_model):
    from cliplab.probes import PairProbe, ProbeImages, evaluate_probe
    from cliplab.probes.evaluation import pair_scores

    for j in range(4):
        _png(tmp_path / f"{j}.png", value=60 * j)
    probe = PairProbe(
        "toy",
        ProbeImages([tmp_path / f"{j}.png" for j in range(4)]),
        [[0, 1], [2, 3]],
        [("a red circle", "a blue square"), ("a green star", "a red thing")],
        ["x", "y"],
    )
    s = pair_scores(tiny_model, probe, cache_dir=False)
    img = tiny_model.encode_images([tmp_path / f"{j}.png" for j in range(4)])
    for m, ((c0, c1), (i0, i1)) in enumerate(zip(probe.captions, probe.image_index)):
        t = tiny_model.encode_texts([c0, c1])
        expected = (t @ img[[i0, i1]].T).numpy()
        np.testing.assert_allclose(s[m], expected, atol=1e-5)
    assert set(evaluate_probe(tiny_model, probe, cache_dir=False)) >= {"text", "image", "group", "by_tag"}


def test_cli_probe_json(tmp_path, tiny_model_dir, capsys):
    from cliplab.cli.commands import main

    out = tmp_path / "probe.json"
    assert main(["probe", str(tiny_model_dir), "shapes:n=10,image_size=32", "--json", "--quiet", "--no-cache",
                 "-o", str(out)]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    r = printed["probes"]["shapes:n=10,image_size=32"]
    assert set(r["by_type"]) >= {"replace_obj", "replace_att", "add_obj", "shuffle"}
    assert json.loads(out.read_text()) == printed
    assert main(["probe", str(tiny_model_dir), "nope:/x", "--quiet"]) == 2
    # several models side by side: a bar chart per probe
    plot = tmp_path / "bars.png"
    args = ["probe", str(tiny_model_dir), "shapes:n=8,image_size=32", "--compare", str(tiny_model_dir)]
    assert main([*args, "--plot", str(plot), "--quiet", "--no-cache"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert text.count("mean over types") == 2


def test_hard_negative_loss_matches_an_independent_computation():
    from cliplab.losses import clip_loss
    from cliplab.losses.hard_negatives import hard_negative_clip_loss

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    neg = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    s = 7.0
    a, t, n = img.double().numpy(), txt.double().numpy(), neg.double().numpy()
    i2t = s * a @ np.concatenate([t, n]).T
    t2i = s * t @ a.T

    def ce(z):
        return np.mean([np.log(np.exp(row).sum()) - row[k] for k, row in enumerate(z)])

    expected = 0.5 * (ce(i2t) + ce(t2i))
    assert float(hard_negative_clip_loss(img, txt, neg, s)) == pytest.approx(expected, rel=1e-5)
    assert float(hard_negative_clip_loss(img, txt, neg[:0], s)) == pytest.approx(
        float(clip_loss(img, txt, s)), rel=1e-6
    )
    d2 = ((a[:, None] - np.concatenate([t, n])[None]) ** 2).sum(-1)
    d2t = ((t[:, None] - a[None]) ** 2).sum(-1)
    expected = 0.5 * (ce(-s * d2) + ce(-s * d2t))
    got = hard_negative_clip_loss(img, txt, neg, s, geometry="euclidean")
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_trainer_adds_hard_negatives_to_the_batch(tmp_path, monkeypatch):
    from cliplab.losses import hard_negatives as hn
    from cliplab.train import TrainConfig, Trainer

    calls = []
    real = hn.hard_negative_clip_loss

    def spy(image, text, negatives, *args, **kwargs):
        calls.append((image.shape[0], negatives.shape[0], negatives.requires_grad))
        return real(image, text, negatives, *args, **kwargs)

    monkeypatch.setattr(hn, "hard_negative_clip_loss", spy)
    model = {
        "image_size": 32,
        "patch_size": 16,
        "vision_width": 32,
        "vision_layers": 1,
        "vision_heads": 2,
        "text_width": 32,
        "text_layers": 1,
        "text_heads": 2,
        "context_length": 16,
        "embed_dim": 16,
    }
    cfg = TrainConfig.from_dict({
        "model": {"config": model}, "data": "shapes:n=64,objects=2,image_size=32",
        "loss": {"name": "clip", "hard_negatives": {"per_caption": 2, "types": ["swap_att", "swap_rel"]}},
        "steps": 2, "batch_size": 16, "log_every": 0, "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    summary = Trainer(cfg, progress=False).fit()
    assert summary["status"] == "completed" and len(calls) == 2
    assert all(b == 16 and 1 <= k <= 32 and grad for b, k, grad in calls)  # up to 2 per caption, where they apply
    with pytest.raises(ValueError, match="hard_negatives needs the clip loss"):
        TrainConfig.from_dict({"loss": {"name": "siglip", "hard_negatives": {}}})
    with pytest.raises(ValueError, match="accepted: swap_att"):
        TrainConfig.from_dict({"loss": {"hard_negatives": {"types": ["nope"]}}})
