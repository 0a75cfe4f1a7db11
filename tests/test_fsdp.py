"""Memory for big models: FSDP2 under a real 2-process torchrun (gloo, CPU), gradient checkpointing, compile."""

import json
import os
import subprocess
import sys

import pytest
import torch

from cliplab.train import Trainer
from cliplab.train.scaling import enable_grad_checkpointing
from helpers import make_tiny_model
from test_trainer import tiny_config

FSDP_SCRIPT = """
import json, sys
import torch.distributed as dist
from cliplab.train import TrainConfig, Trainer
dist.init_process_group("gloo")  # one group for both trainers (a second rendezvous would wait for a new one)
cfg = TrainConfig.from_file(sys.argv[1])
first = Trainer(cfg.replace(steps=2), progress=False)
first.fit()
second = Trainer(cfg, progress=False, resume=True)
summary = second.fit()
if second.env.rank == 0:
    json.dump({"first": first.losses, "second": second.losses, "summary": summary}, open(sys.argv[2], "w"))
dist.destroy_process_group()
"""


def test_fsdp2_two_processes_match_one_and_resume_from_their_checkpoint(tmp_path):
    """2 processes × batch 8 under FSDP2 take the steps of 1 process × batch 16; stopped after 2 steps and
    resumed from the checkpoint written under FSDP, they continue the same curve; the saved model is whole."""
    from safetensors.torch import load_file

    from cliplab.train.checkpoint import latest_checkpoint, load_checkpoint

    common = {"steps": 4, "schedule": {"name": "constant"}, "checkpoint_every": 2}
    ref = Trainer(tiny_config(tmp_path / "one", batch_size=16, **common), progress=False)
    ref.fit()
    cfg = tmp_path / "fsdp.json"
    tiny_config(tmp_path / "two", batch_size=8, fsdp=True, **common).save(cfg)
    script, out = tmp_path / "run.py", tmp_path / "out.json"
    script.write_text(FSDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(script), str(cfg), str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(out.read_text())
    assert got["summary"]["steps_this_run"] == 2
    assert got["first"] + got["second"] == pytest.approx(ref.losses, abs=1e-4)
    weights, state = load_checkpoint(latest_checkpoint(tmp_path / "two" / "run"))
    one = load_file(str(tmp_path / "one" / "run" / "model" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "run" / "model" / "model.safetensors"))
    assert weights.keys() == ref.model.module.state_dict().keys() and two.keys() == one.keys()
    for k in one:  # attention key biases: zero gradient in exact arithmetic, Adam amplifies rounding noise
        assert torch.allclose(two[k], one[k], atol=1e-2 if "k_proj.bias" in k else 1e-4), k
    assert len(state["rng"]) == 2 and state["optimizer"]["state"]  # full optimizer state, by parameter name


def test_fsdp_needs_torchrun(tmp_path):
    with pytest.raises(ValueError, match="torchrun"):
        Trainer(tiny_config(tmp_path, fsdp=True), progress=False).fit()


def test_grad_checkpointing_keeps_fewer_activations_and_the_same_gradients():
    model = make_tiny_model()
    ref = make_tiny_model()
    assert enable_grad_checkpointing(model) == "hf"
    pixels = torch.randn(4, 3, 32, 32)
    tokens = model.tokenize(["a red circle", "a blue square", "a star", "a thing"])
    saved = {}
    for name, m in (("checkpointed", model), ("plain", ref)):
        m.module.train()
        count = [0]

        def pack(t, count=count):
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = (m.image_features(pixels) @ m.text_features(tokens).T).logsumexp(1).mean()
        loss.backward()
        saved[name] = count[0]
    assert saved["checkpointed"] < 0.6 * saved["plain"]  # the layers' activations are recomputed, not kept
    for (name, a), b in zip(model.module.named_parameters(), ref.module.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_grad_checkpointing_for_open_clip_style_and_refusal():
    class OpenClipLike:
        def __init__(self):
            self.on = False

        def set_grad_checkpointing(self, enable=True):
            self.on = enable

    class Bare:
        pass

    class M:
        def __init__(self, module):
            self.module = module

    oc = M(OpenClipLike())
    assert enable_grad_checkpointing(oc) == "open_clip" and oc.module.on
    with pytest.raises(ValueError, match="grad_checkpointing"):
        enable_grad_checkpointing(M(Bare()))


def test_training_with_grad_checkpointing_takes_the_same_steps(tmp_path):
    plain = Trainer(tiny_config(tmp_path / "a", steps=2), progress=False)
    plain.fit()
    ckpt = Trainer(tiny_config(tmp_path / "b", steps=2, grad_checkpointing=True), progress=False)
    ckpt.fit()
    assert ckpt.losses == pytest.approx(plain.losses, abs=1e-5)


@pytest.mark.slow
def test_compile_option_trains(tmp_path):
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile (inductor) needs a C++ compiler")
    plain = Trainer(tiny_config(tmp_path / "a", steps=2), progress=False)
    plain.fit()
    compiled = Trainer(tiny_config(tmp_path / "b", steps=2, compile=True), progress=False)
    compiled.fit()
    assert compiled.losses == pytest.approx(plain.losses, abs=1e-4)
