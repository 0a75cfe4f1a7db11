"""Model sources (issue #12): a family registered once is loaded by ``load_model``, checked by the CLI's preflight
and used by the CLI; entry points add families lazily; models declare their capabilities and the trainer
refuses one it could not train or save."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence

import pytest
import torch
from torch import nn

from cliplab.cli.commands import main
from cliplab.imaging.preprocess import Preprocess
from cliplab.models import (
    SPEC_FORMS,
    Model,
    check_model_spec,
    load_model,
    model_sources,
    register_model_source,
    unregister_model_source,
)
from cliplab.models.openclip import OpenCLIPModel


class ToyModel(Model):
    """A two-tower model of no existing family: linear image tower on 8×8 pixels, bag-of-bytes text tower."""

    def __init__(self, seed: int = 0, *, spec: str = "<toy>", trainable: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.module = nn.Module()
        self.module.image = nn.Linear(3 * 8 * 8, 6, bias=False)
        self.module.text = nn.Embedding(256, 6)
        with torch.no_grad():
            self.module.image.weight.copy_(torch.randn(6, 3 * 8 * 8, generator=g))
            self.module.text.weight.copy_(torch.randn(256, 6, generator=g))
        self.module.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.preprocess = Preprocess(resize=(8, 8), crop=None)
        self.spec = spec
        self.seed = seed
        self.can_train = trainable

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        codes = [list(t.encode()[:16]) or [0] for t in texts]
        ids = torch.zeros(len(codes), 16, dtype=torch.int64)
        mask = torch.zeros(len(codes), 16, dtype=torch.int64)
        for i, c in enumerate(codes):
            ids[i, : len(c)], mask[i, : len(c)] = torch.tensor(c), 1
        return {"input_ids": ids, "attention_mask": mask}

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.module.image(pixel_values.flatten(1))

    def text_embeddings(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return (self.module.text(tokens["input_ids"]) * mask).sum(1) / mask.sum(1)


CALLS: list[tuple[str, str, str]] = []


def load_toy(target: str, *, spec: str, device: str | None) -> Model:
    CALLS.append((target, spec, str(device)))
    if not target.isdigit():
        raise ValueError(f"toy: needs a seed, got {target!r}")
    return ToyModel(int(target), spec=spec).to(device or "cpu")


@pytest.fixture
def toy_source():
    CALLS.clear()
    register_model_source("toy", load_toy, form="toy:<seed> (the test's toy family)")
    yield "toy"
    unregister_model_source("toy")


def test_a_registered_source_is_loaded_by_load_model(toy_source):
    model = load_model("toy:3", device="cpu")
    assert isinstance(model, ToyModel) and model.seed == 3 and model.spec == "toy:3"
    assert CALLS == [("3", "toy:3", "cpu")]
    assert torch.equal(model.module.image.weight, ToyModel(3).module.image.weight)
    f, t = model.encode_images(torch.rand(2, 3, 8, 8)), model.encode_texts(["a", "bb"])
    assert f.shape == (2, 6) and t.shape == (2, 6)
    assert "toy" in model_sources()
    assert any(form.startswith("toy:<seed>") for form in SPEC_FORMS)
    check_model_spec("toy:3")  # no check registered: the prefix is accepted, nothing is loaded
    assert len(CALLS) == 1


def test_unknown_specs_list_the_registered_forms(toy_source):
    with pytest.raises(ValueError, match="no model source is registered for the prefix 'nosuch'") as err:
        load_model("nosuch:thing")
    message = str(err.value)
    for form in ("toy:<seed> (the test's toy family)", "hf:<repo-id>", "openclip:<arch>", "builtin:<name>"):
        assert form in message
    with pytest.raises(ValueError, match="Accepted forms"):
        check_model_spec("nosuch:thing")
    unregister_model_source("toy")
    with pytest.raises(ValueError) as err:
        load_model("toy:1")
    assert "toy:<seed>" not in str(err.value)


def test_registration_rules(toy_source):
    with pytest.raises(ValueError, match="already registered"):
        register_model_source("toy", load_toy)
    register_model_source("toy:", load_toy, form="toy:<seed> again", replace=True)  # the colon is optional
    assert model_sources()["toy"].form == "toy:<seed> again"
    with pytest.raises(ValueError, match="invalid model source prefix"):
        register_model_source("9bad", load_toy)
    with pytest.raises(TypeError, match="callable"):
        register_model_source("other", "not a function")


def test_check_runs_in_preflight_and_detect_claims_bare_specs(tmp_path):
    def check(target: str, spec: str) -> None:
        if not target.endswith(".toy"):
            raise ValueError(f"{spec!r} is not a .toy file")

    def load(target: str, *, spec: str, device: str | None) -> Model:
        return ToyModel(int(json.loads((tmp_path / target).read_text())["seed"]), spec=spec)

    path = tmp_path / "m.toy"
    path.write_text('{"seed": 5}')
    register_model_source("toyfile", load, detect=lambda s: s.endswith(".toy"), check=check)
    try:
        with pytest.raises(ValueError, match="not a .toy file"):
            check_model_spec("toyfile:m.txt")
        with pytest.raises(ValueError, match="not a .toy file"):
            load_model("toyfile:m.txt", device="cpu")
        check_model_spec("m.toy")
        assert load_model("m.toy", device="cpu").seed == 5  # a bare spec claimed by detect
    finally:
        unregister_model_source("toyfile")
    with pytest.raises(ValueError, match="neither an existing directory nor a known prefix"):
        load_model("m.toy")


def test_the_cli_uses_a_registered_source(toy_source, image_folder, tmp_path, capsys):
    out = tmp_path / "f.safetensors"
    argv = ["embed", "toy:4", str(image_folder), "-o", str(out), "--quiet", "--json", "--no-cache"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == [8, 6]
    assert CALLS and CALLS[-1][:2] == ("4", "toy:4")
    assert main(["embed", "nosuch:4", str(image_folder), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "toy:<seed>" in err


def test_an_entry_point_adds_a_family_lazily(tmp_path, monkeypatch):
    (tmp_path / "toyplug_mod.py").write_text(
        textwrap.dedent(
            """
            from test_model_sources import ToyModel

            def load(target, *, spec, device):
                return ToyModel(int(target), spec=spec)
            """
        )
    )
    info = tmp_path / "toyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cliplab.model_sources]\ntoyep = toyplug_mod:load\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "toyep" not in model_sources()
        assert any(form.startswith("toyep:<target> (entry point toyplug_mod:load)") for form in SPEC_FORMS)
        check_model_spec("toyep:2")  # loads the entry point
        assert "toyep" in model_sources()
        model = load_model("toyep:2", device="cpu")
        assert isinstance(model, ToyModel) and model.seed == 2 and model.spec == "toyep:2"
        assert "from toyplug" in model_sources()["toyep"].form
    finally:
        unregister_model_source("toyep")


def test_capabilities_are_declared(tiny_model_dir):
    hf = load_model(tiny_model_dir, device="cpu")
    assert hf.can_save and hf.can_train and hf.has_token_embeddings
    emb = hf.token_embeddings()
    assert isinstance(emb, nn.Embedding) and emb.num_embeddings == len(hf.tokenizer)
    assert emb is hf.module.text_model.get_input_embeddings()
    toy = ToyModel()
    assert not toy.can_save and toy.can_train and not toy.has_token_embeddings
    with pytest.raises(NotImplementedError):
        toy.token_embeddings()
    assert OpenCLIPModel.save is not Model.save and OpenCLIPModel.can_train is True  # saves open_clip's format


@pytest.mark.parametrize("trainable, capability", [(True, "can_save"), (False, "can_train")])
def test_the_trainer_refuses_a_model_it_could_not_train_or_save(trainable, capability, tmp_path, monkeypatch):
    from cliplab.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict(
        {"model": {"spec": "toy:1"}, "data": {"train": "shapes:n=16,image_size=16"}, "steps": 2, "batch_size": 4}
        | {"output_dir": str(tmp_path / "run")}
    )
    steps = []
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch: steps.append(1))
    with pytest.raises(ValueError, match=capability):
        Trainer(cfg, model=ToyModel(trainable=trainable)).fit()
    register_model_source("toy", lambda target, *, spec, device: ToyModel(int(target), spec=spec, trainable=trainable))
    try:
        with pytest.raises(ValueError, match=capability):
            Trainer(cfg).fit()  # the model the config names: refused once loaded, before any step
    finally:
        unregister_model_source("toy")
    assert steps == []
    assert not list((tmp_path / "run").glob("checkpoint*"))
