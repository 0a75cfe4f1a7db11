"""The trainer: config files, an end-to-end run, GradCache, locking, SigLIP bias, NaN stop, bad input, CLI."""

import json

import numpy as np
import pytest
import torch

from cliplab.train import TrainConfig, Trainer
from cliplab.train.trainer import TrainingDiverged, TwoTower
from helpers import make_tiny_model

TINY = {
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "context_length": 16,
    "embed_dim": 32,
}


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """A from-scratch tiny CLIP on 64 shapes images, a few steps."""
    data = {
        "model": {"config": dict(TINY)},
        "data": {"train": "shapes:n=64,image_size=32"},
        "optimizer": {"lr": 2e-3, "weight_decay": 0.0},
        "steps": 4,
        "batch_size": 16,
        "log_every": 1,
        "output_dir": str(tmp_path / "run"),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


def read_metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


# -- config files ---------------------------------------------------------------------------------------


def test_config_files_and_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("model: builtin:shapes\ndata: shapes:n=10\noptimizer: {lr: 1e-4, betas: [0.9, 0.95]}\nsteps: 7\n")
    cfg = TrainConfig.from_file(good)
    assert cfg.model.spec == "builtin:shapes" and cfg.data.train == "shapes:n=10"
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.betas == (0.9, 0.95) and cfg.steps == 7
    as_json = tmp_path / "good.json"
    as_json.write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_file(as_json) == cfg

    cases = {
        "stepz: 3\n": r"unknown key\(s\) in config: 'stepz' \(did you mean 'steps'\?\)",
        "model: {config: {image_sise: 32}}\n": r"model\.config: 'image_sise'",
        "loss: {name: triplet}\n": "loss.name must be one of",
        "steps: many\n": "steps must be an integer",
        "lock_image: yes please\n": "lock_image must be true or false",
        "optimizer: {betas: [0.9]}\n": "optimizer.betas must be a list of 2 values",
        "model: {config: {image_size: 30, patch_size: 8}}\n": "model.config: image_size 30 is not a multiple",
        "model: {spec: builtin:shapes, config: {}}\n": "either 'spec'",
        "- a list\n": "must be a mapping",
        "steps: [1\n": "cannot parse",
        "": "is empty",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_file(path)
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "cfg.toml").write_text("")
    with pytest.raises(ValueError, match="unsupported config file type"):
        TrainConfig.from_file(tmp_path / "cfg.toml")


# -- end to end ------------------------------------------------------------------------------------------


def test_end_to_end_loss_decreases_and_model_loads(tmp_path):
    from transformers import CLIPModel

    import cliplab

    cfg = tiny_config(
        tmp_path,
        data={"train": "shapes:n=128,image_size=32"},
        steps=50,
        batch_size=32,
        log_every=10,
        schedule={"warmup_steps": 5},
        grad_clip={"mode": "zclip"},
        eval_every=25,
        eval={"zeroshot": "shapes:n=40,image_size=32", "retrieval": "shapes:n=20,image_size=32"},
    )
    trainer = Trainer(cfg, progress=False)
    summary = trainer.fit()
    losses = trainer.losses
    assert len(losses) == 50 and summary["step"] == 50
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2
    assert set(summary["eval"]) == {"zeroshot_acc1", "image_retrieval_recall@1", "text_retrieval_recall@1"}

    out = tmp_path / "run"
    records = read_metrics(out)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [10, 20, 30, 40, 50]
    for key in ("lr", "logit_scale", "grad_norm", "clip", "samples_per_s", "epoch"):
        assert key in steps[0]
    assert [r["step"] for r in records if "eval" in r] == [25, 50]
    assert all(r["logit_scale"] <= 100.0 + 1e-4 for r in steps)
    assert json.loads((out / "config.json").read_text())["steps"] == 50

    model = trainer.model
    loaded = cliplab.load_model(out / "model", device="cpu")
    texts = ["a red circle.", "a blue square on the left."]
    assert torch.allclose(loaded.encode_texts(texts), model.encode_texts(texts), atol=1e-5)
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.encode_images(pixels), model.encode_images(pixels), atol=1e-5)
    assert loaded.logit_scale == pytest.approx(model.logit_scale, rel=1e-6)
    hf = CLIPModel.from_pretrained(out / "model")
    assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in model.module.parameters())


def test_logit_scale_is_clamped(tmp_path):
    model = make_tiny_model()
    with torch.no_grad():
        model.module.logit_scale.fill_(np.log(100.0) + 0.5)
    cfg = tiny_config(tmp_path, model={"config": None}, steps=1)
    trainer = Trainer(cfg, model=model, progress=False)
    trainer.fit()
    assert float(model.module.logit_scale.detach()) <= np.log(100.0) + 1e-6


# -- GradCache -------------------------------------------------------------------------------------------


def _grads(accum, batch_size, tmp_path, chunk_size=None):
    model = make_tiny_model()
    model.module.double()
    cfg = tiny_config(
        tmp_path,
        model={"config": None},
        batch_size=batch_size,
        accum_steps=accum,
        steps=1,
        loss={"chunk_size": chunk_size},
    )
    trainer = Trainer(cfg, model=model, progress=False)
    trainer.setup()
    images, captions, _ = trainer.sampler.batch(trainer.sampler_state)
    trainer._train_mode()
    trainer.train_step(trainer.loader.load(images, captions))
    trainer.loader.close()
    return {n: p.grad.clone() for n, p in model.module.named_parameters() if p.grad is not None}


def test_gradcache_equals_full_batch_gradient(tmp_path):
    full = _grads(1, 16, tmp_path / "a")
    cached = _grads(4, 4, tmp_path / "b", chunk_size=5)  # the tiled loss gives the same gradients too
    assert full.keys() == cached.keys() and "logit_scale" in full
    for name in full:
        assert torch.allclose(full[name], cached[name], rtol=1e-9, atol=1e-12), name


def test_gradcache_replays_patch_dropout():
    """With patch dropout, pass 2 must drop the same patches as pass 1 (RNG restored)."""
    from cliplab.losses import clip_loss
    from cliplab.train.gradcache import gradcache_backward, split_batch
    from cliplab.train.patch_dropout import PatchDropout

    model = make_tiny_model()
    model.module.double().train()
    PatchDropout(model.module, 0.5)
    tower = TwoTower(model)
    pixels = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    tokens = model.tokenize(["a red circle", "a blue square", "a star", "a thing", "a green star", "a square"])
    chunks = split_batch({"pixels": pixels, "tokens": tokens}, 2)

    def forward(b):
        return tower(b["pixels"], b["tokens"])

    def loss_fn(per, shared):
        return clip_loss(per[0], per[1], shared[0])

    torch.manual_seed(0)  # reference: the same micro-batch forwards, all kept in one graph
    outs = [forward(c) for c in chunks]
    loss_fn(tuple(torch.cat([o[0][j] for o in outs]) for j in range(2)), outs[0][1]).backward()
    ref = {n: p.grad.clone() for n, p in model.module.named_parameters() if p.grad is not None}
    model.module.zero_grad()
    torch.manual_seed(0)
    gradcache_backward(forward, loss_fn, chunks)
    for n, p in model.module.named_parameters():
        if n in ref:
            assert torch.allclose(p.grad, ref[n], rtol=1e-9, atol=1e-12), n


# -- locking, SigLIP --------------------------------------------------------------------------------------


def test_lock_image_tower(tmp_path):
    model = make_tiny_model()
    vision_before = {n: p.clone() for n, p in model.module.named_parameters() if "vision" in n or "visual" in n}
    text_before = {n: p.clone() for n, p in model.module.named_parameters() if n.startswith("text_")}
    cfg = tiny_config(tmp_path, model={"config": None}, steps=3, lock_image=True, precision="bf16")
    trainer = Trainer(cfg, model=model, progress=False)
    trainer.setup()
    trainer._train_mode()
    assert not model.module.vision_model.training and not model.module.visual_projection.training
    assert model.module.text_model.training
    trainer.fit()
    after = dict(model.module.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in vision_before.items())
    assert all(not after[n].requires_grad for n in vision_before)
    assert any(not torch.equal(after[n], p) for n, p in text_before.items())


def test_siglip_from_scratch_adds_bias_and_saves_it(tmp_path):
    from transformers import CLIPModel

    import cliplab

    cfg = tiny_config(tmp_path, loss={"name": "siglip"}, steps=2, optimizer={"lr": 1e-6})
    trainer = Trainer(cfg, progress=False)
    trainer.setup()
    module = trainer.model.module
    assert float(module.logit_scale.detach()) == pytest.approx(np.log(10.0))
    assert trainer.model.logit_bias == pytest.approx(-10.0)
    trainer.fit()
    assert trainer.model.logit_bias == pytest.approx(-10.0, abs=1e-3)
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["cliplab"]["logit_bias"] == pytest.approx(trainer.model.logit_bias)
    CLIPModel.from_pretrained(tmp_path / "run" / "model")  # no unexpected weights
    assert cliplab.load_model(tmp_path / "run" / "model", device="cpu").logit_scale == pytest.approx(10.0, rel=1e-3)


def test_infoloob_and_distillation_run(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path / "loob", loss={"name": "infoloob", "options": {"hopfield": True}}, steps=2)
    assert np.isfinite(Trainer(cfg, progress=False).fit()["loss"])
    distill = {"teacher": str(tiny_model_dir), "weight": 0.5, "options": {"feature_weight": 10.0}}
    cfg = tiny_config(tmp_path / "kd", model={"config": {**TINY, "embed_dim": 16}}, loss={"distill": distill}, steps=2)
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    assert trainer.objective.teacher is not None and np.isfinite(trainer.losses).all()


# -- failures ---------------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from cliplab.train.checkpoint import latest_checkpoint, load_checkpoint

    cfg = tiny_config(tmp_path, steps=6, checkpoint_every=2)
    trainer = Trainer(cfg, progress=False)
    trainer.setup()
    objective = trainer.objective

    def poisoned(*args, **kwargs):
        loss = objective(*args, **kwargs)
        return loss * float("nan") if trainer.step == 3 else loss

    trainer.objective = poisoned
    trainer.objective.teacher_features = objective.teacher_features
    with pytest.raises(TrainingDiverged, match="loss is nan at step 4") as err:
        trainer.fit()
    out = tmp_path / "run"
    good = latest_checkpoint(out)
    assert good is not None and good.name == "step_00000002" and err.value.checkpoint == good
    weights, state = load_checkpoint(good)
    assert state["step"] == 2 and all(torch.isfinite(t).all() for t in weights.values())
    assert read_metrics(out)[-1]["event"] == "diverged"
    assert not (out / "model").exists()
    resumed = Trainer(cfg, progress=False, resume=True)  # the run can go on from the good checkpoint
    assert resumed.fit()["step"] == 6
    with pytest.raises(RuntimeError, match="already run"):
        resumed.fit()

    model = make_tiny_model()  # NaN weights: the loss rejects the features, reported as divergence too
    with torch.no_grad():
        model.module.visual_projection.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        Trainer(tiny_config(tmp_path / "nan", model={"config": None}), model=model, progress=False).fit()


def test_bad_input_errors(tmp_path, image_folder):
    with pytest.raises(ValueError, match="has no captions"):
        Trainer(tiny_config(tmp_path, data={"train": str(image_folder)}), progress=False).fit()
    with pytest.raises(ValueError, match="needs 128"):
        Trainer(tiny_config(tmp_path, batch_size=64, accum_steps=2), progress=False).fit()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(tiny_config(tmp_path), progress=False, resume=True).fit()
    with pytest.raises(ValueError, match="names no model"):
        Trainer(tiny_config(tmp_path, model={"config": None}), progress=False).fit()
    with pytest.raises(ValueError, match="needs cosine geometry"):
        Trainer(tiny_config(tmp_path, loss={"name": "siglip", "geometry": "euclidean"}), progress=False).fit()
    Trainer(tiny_config(tmp_path, steps=1), progress=False).fit()
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(tiny_config(tmp_path, steps=1), progress=False).fit()
    from cliplab.train.patch_dropout import PatchDropoutUnsupported

    with pytest.raises(PatchDropoutUnsupported):
        model = make_tiny_model()
        model.module.vision_model.embeddings = None  # not a ViT token stage any more
        Trainer(tiny_config(tmp_path / "pd", model={"config": None}, patch_dropout=0.5), model=model).setup()


# -- CLI ----------------------------------------------------------------------------------------------------


def test_cli_train(tmp_path, capsys):
    from cliplab.cli.commands import main

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(tiny_config(tmp_path).to_dict()))
    out = tmp_path / "cli-run"
    assert main(["train", str(path), "--steps", "2", "--output-dir", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and (out / "model" / "config.json").is_file()
    assert main(["train", str(path), "--steps", "3", "--output-dir", str(out), "--quiet", "--json", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_this_run"] == 1
    path.write_text('{"steps": 2, "stepz": 1}')
    assert main(["train", str(path), "--quiet"]) == 2
    assert "stepz" in capsys.readouterr().err


def test_cli_train_shorter_than_the_warmup(tmp_path, capsys, monkeypatch):
    """``cliplab train CONFIG --steps N`` with N below the config's warm-up: clamped, noted in config.json; the
    default output folder (runs/train) gets a .gitignore of '*'."""
    from cliplab.cli.commands import main

    config = tiny_config(tmp_path, steps=20, schedule={"warmup_steps": 10}).to_dict()
    del config["output_dir"]  # the default, runs/train
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(path), "--steps", "2", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    out = tmp_path / "runs" / "train"
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["schedule"]["warmup_steps"] == 2
    assert recorded["notes"] == ["schedule.warmup_steps (10) exceeds steps (2): the warm-up is clamped to 2 steps"]
    assert (out / ".gitignore").read_text().splitlines()[-1] == "*"


# -- torchrun -------------------------------------------------------------------------------------------------


def test_torchrun_two_processes_match_one(tmp_path):
    """2 processes × batch 8 (gloo, DDP, gathered loss) take the same steps as 1 process × batch 16."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    pytest.importorskip("cliplab.train.distributed")
    single = tiny_config(tmp_path / "one", steps=3, batch_size=16, checkpoint_every=2)
    ref = Trainer(single, progress=False)
    ref.fit()
    cfg = tmp_path / "ddp.json"
    single.replace(batch_size=8, output_dir=str(tmp_path / "two")).save(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "cliplab.cli.commands", "train", str(cfg), "--quiet", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])  # rank 0 prints, rank 1 does not
    assert summary["step"] == 3
    losses = [r["loss"] for r in read_metrics(tmp_path / "two") if "loss" in r]
    assert losses == pytest.approx(ref.losses, abs=1e-5)
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "run" / "model" / "model.safetensors"))
    assert two.keys() == one.keys()
    for k in one:  # attention key biases have zero gradient in exact arithmetic: Adam amplifies rounding noise
        assert torch.allclose(two[k], one[k], atol=1e-3 if "k_proj.bias" in k else 1e-5), k
    from cliplab.train.checkpoint import latest_checkpoint, load_checkpoint

    assert len(load_checkpoint(latest_checkpoint(tmp_path / "two"))[1]["rng"]) == 2
