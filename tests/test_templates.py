"""Templates with ``{}`` and ``{c}``, CuPL-style per-class descriptions, and their combination."""

import json

import numpy as np
import pytest
import torch

from cliplab.zeroshot import class_prompts, zeroshot_weights
from helpers import make_tiny_model

NAMES = ["red circle", "blue square", "green star"]
#: a CuPL-style file: class name -> list of sentences (the format of sarahpratt/CuPL all_prompts/*.json)
CUPL = {
    "red circle": ["a red circle is round.", "a photo of a round red thing."],
    "blue square": ["a blue square has four sides."],
    "green star": ["a green star has five points.", "a green thing on the left.", "a star shape."],
}


def _reference_weights(model, prompts_per_class):
    """norm(mean(norm(enc(p)))) per class, from the texts themselves."""
    out = []
    for prompts in prompts_per_class:
        e = model.encode_texts(prompts, progress=False).double()
        e = e / e.norm(dim=1, keepdim=True)
        m = e.mean(0)
        out.append(m / m.norm())
    return torch.stack(out)


def test_brace_and_c_placeholders_give_the_same_prompts():
    a = class_prompts(NAMES, ["a photo of a {}.", "a {} on the left."])
    b = class_prompts(NAMES, ["a photo of a {c}.", "a {c} on the left."])
    assert a == b == [[f"a photo of a {n}.", f"a {n} on the left."] for n in NAMES]
    # the same text as CLIP_benchmark's template.format(c=name)
    assert class_prompts(["cat"], ["itap of a {c}."]) == [["itap of a {c}.".format(c="cat")]]


def test_template_without_placeholder_is_refused():
    with pytest.raises(ValueError, match=r"'\{\}' or '\{c\}' placeholder"):
        class_prompts(NAMES, ["a photo."])


def test_descriptions_and_missing_classes():
    assert class_prompts(NAMES, CUPL) == [CUPL[n] for n in NAMES]
    with pytest.raises(ValueError, match=r"no sentences for classes \['yellow thing'\] \(1 in all"):
        class_prompts([*NAMES, "yellow thing"], CUPL)


def test_combined_ensemble_pools_templates_and_descriptions():
    prompts = class_prompts(NAMES, ["a photo of a {c}.", CUPL])
    assert prompts == [[f"a photo of a {n}.", *CUPL[n]] for n in NAMES]
    # a set name inside a list stands for its templates
    assert class_prompts(NAMES, ["simple", CUPL])[0][0] == "a photo of a red circle."


def test_weights_from_every_form_match_an_independent_computation():
    model = make_tiny_model()
    for templates, prompts in [
        (["a photo of a {c}.", "a {} thing."], [[f"a photo of a {n}.", f"a {n} thing."] for n in NAMES]),
        (CUPL, [CUPL[n] for n in NAMES]),
        (["a photo of a {}.", CUPL], [[f"a photo of a {n}.", *CUPL[n]] for n in NAMES]),
    ]:
        w = zeroshot_weights(model, NAMES, templates)
        ref = _reference_weights(model, prompts)
        np.testing.assert_allclose(w.double().numpy(), ref.numpy(), atol=1e-5)


def test_cli_loads_json_txt_and_plus_combinations(tmp_path):
    from cliplab.cli.common import UsageError, load_templates

    (tmp_path / "cupl.json").write_text(json.dumps(CUPL))
    (tmp_path / "t.txt").write_text("a photo of a {c}.\n\na drawing of a {c}.\n")
    assert load_templates(str(tmp_path / "cupl.json")) == CUPL
    assert load_templates(str(tmp_path / "t.txt")) == ["a photo of a {c}.", "a drawing of a {c}."]
    combined = load_templates(f"simple+{tmp_path / 'cupl.json'}")
    assert combined == ["a photo of a {}.", CUPL]
    with pytest.raises(UsageError, match="imagenet81"):
        load_templates(f"imagenet81+{tmp_path / 'cupl.json'}")
    with pytest.raises(UsageError, match="not found"):
        load_templates(str(tmp_path / "nope.json"))
    (tmp_path / "n.json").write_text("3")
    with pytest.raises(UsageError, match="n.json"):
        load_templates(str(tmp_path / "n.json"))


def test_zeroshot_command_with_descriptions(tmp_path, capsys):
    """``cliplab zeroshot --templates simple+cupl.json`` runs end to end on a class folder."""
    from cliplab.cli.commands import main
    from helpers import write_shapes_folder

    model_dir = tmp_path / "m"
    make_tiny_model().save(model_dir)
    data = write_shapes_folder(tmp_path / "imgs", 12, seed=0)
    names = sorted(p.name for p in data.iterdir())
    (tmp_path / "d.json").write_text(json.dumps({n: [f"a {n} shape.", f"a photo of a {n}."] for n in names}))
    argv = ["zeroshot", str(model_dir), str(data), "--templates", f"simple+{tmp_path / 'd.json'}", "--json", "-q"]
    assert main([*argv, "--no-cache"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classnames"] == names and 0 <= report["acc1"] <= 1


def test_bench_templates_option_reaches_the_zero_shot_stage(tmp_path, capsys):
    """``cliplab bench --templates``: every zero-shot classifier uses them, recorded as ``config.templates``."""
    from cliplab.cli.commands import main
    from helpers import write_shapes_folder

    model_dir = tmp_path / "m"
    make_tiny_model().save(model_dir)
    data = write_shapes_folder(tmp_path / "imgs", 12, seed=0)
    names = sorted(p.name for p in data.iterdir())
    (tmp_path / "d.json").write_text(json.dumps({n: [f"a {n} shape."] for n in names}))
    argv = ["bench", "--model", str(model_dir), "--data", str(data), "--only", "zeroshot", "-o", str(tmp_path / "o")]
    argv += ["--templates", f"simple+{tmp_path / 'd.json'}", "--no-cache", "--json", "-q"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["config"]["templates"].startswith("sha256:") and res["stages"]["zeroshot"]["classes"]["n"] == 12
    assert main([*argv[:-3], "--templates", "imagenet81", "-q"]) == 2
    assert "imagenet81" in capsys.readouterr().err
