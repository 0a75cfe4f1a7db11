"""Fine-tuning runs in the trainer's loop: exact mid-run resume through ``TrainState`` and torchrun (gloo, CPU)."""

from __future__ import annotations

import shutil

import pytest
import torch

from cliplab.finetune import finetune
from cliplab.train.checkpoint import latest_checkpoint
from cliplab.train.run_state import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def labelled():
    from cliplab.data import shapes

    return shapes("train", n=32, seed=1, image_size=32, task="colour")


@pytest.mark.parametrize("method", ["clipood", "flyp"])
def test_killed_run_resumes_to_the_identical_weights(tiny, labelled, tmp_path, method):
    """Stop after 3 of 5 steps (only the step-3 checkpoint survives), resume: bit-identical to one straight run,
    the moving average (clipood) and logit scale (flyp) included."""
    kw = {"method": method, "steps": 5, "lr": 1e-3, "batch_size": 8, "warmup_steps": 2, "progress": False}
    straight = finetune(tiny, labelled, **kw)
    out = tmp_path / "run"
    finetune(tiny, labelled, output_dir=out, checkpoint_every=3, **kw)
    weights, state = read_checkpoint(latest_checkpoint(out))  # a Trainer checkpoint: TrainState reads it
    assert state.step == 5 and state.objective is not None and state.objective["method"] == method
    assert (state.objective["bma"] is not None) == (method == "clipood")
    for p in (out / "checkpoints").glob("step_*"):
        if p.name != "step_00000003":
            shutil.rmtree(p)
    (out / "checkpoints" / "latest").write_text("step_00000003\n")
    resumed = finetune(tiny, labelled, output_dir=out, checkpoint_every=3, resume=True, **kw)
    assert resumed.info["resumed_from"] == 3
    assert resumed.info["final_loss"] == straight.info["final_loss"]
    a, b = straight.model.module.state_dict(), resumed.model.module.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(resumed.head, straight.head)


def test_finetune_leaves_the_global_generators_alone(tiny, labelled):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    finetune(tiny, labelled, method="ce", steps=1, batch_size=4, progress=False)
    assert torch.equal(torch.rand(3), expected)


SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from helpers import make_tiny_model
from cliplab.data import shapes
from cliplab.finetune import finetune
torch.set_num_threads(1)
train = shapes("train", n=32, seed=1, image_size=32, task="colour")
clf = finetune(make_tiny_model(), train, method="ce", steps=3, lr=1e-3, batch_size={batch}, progress=False)
import torch.distributed as dist
if not dist.is_initialized() or dist.get_rank() == 0:
    torch.save({{"state": clf.model.module.state_dict(), "head": clf.head, "loss": clf.info["final_loss"]}}, {out!r})
"""


def test_torchrun_two_processes_match_one(tmp_path):
    """2 processes × batch 4 (gloo, DDP) take the same steps as 1 process × batch 8 (the CE mean decomposes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    (tmp_path / "one.py").write_text(SCRIPT.format(tests=tests, batch=8, out=str(one)))
    (tmp_path / "two.py").write_text(SCRIPT.format(tests=tests, batch=4, out=str(two)))
    proc = subprocess.run([sys.executable, str(tmp_path / "one.py")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(cmd + [str(tmp_path / "two.py")], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(one), torch.load(two)
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    torch.testing.assert_close(b["head"], a["head"], rtol=0, atol=1e-5)
    for k, v in a["state"].items():  # attention key biases: zero gradient in exact arithmetic, Adam amplifies noise
        torch.testing.assert_close(b["state"][k], v, rtol=0, atol=1e-3 if "k_proj.bias" in k else 1e-5, msg=k)
