"""``TrainState``: the typed checkpoint state the trainer writes and resumes from."""

import pytest
import torch

from cliplab.train import Trainer
from cliplab.train.checkpoint import STATE_FILE, latest_checkpoint, load_checkpoint, save_checkpoint
from cliplab.train.run_state import read_checkpoint
from cliplab.train.state import STATEFUL, TrainState
from test_trainer import tiny_config


def test_checkpoint_payload_round_trips_through_train_state(tmp_path):
    cfg = tiny_config(tmp_path, steps=3, batch_size=16, grad_clip={"mode": "zclip"}, checkpoint_every=3)
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    path = latest_checkpoint(cfg.output_dir)
    _, payload = load_checkpoint(path)  # the raw state.pt, as every earlier version wrote it
    state = TrainState.from_payload(payload, path / STATE_FILE)
    assert state.step == 3 and state.config == cfg.to_dict()
    # the map-style sampler: 64 pairs / 16 per step, so after 3 steps epoch 0 at batch 3
    assert (state.epoch, state.position) == (trainer.sampler_state.epoch, trainer.sampler_state.position)
    assert len(state.rng) == 1 and state.rng_of(3) is state.rng[0]
    assert state.clipper == trainer.clipper.state_dict() and state.scaler is None
    # same keys in the same order, same values: a checkpoint written before TrainState reads and writes identically
    again = state.to_payload()
    assert list(again) == list(payload)
    assert set(STATEFUL) <= set(again)
    for key in payload:
        if key not in ("optimizer", "rng"):
            assert again[key] == payload[key], key
    assert again["optimizer"]["param_groups"] == payload["optimizer"]["param_groups"]
    weights, read = read_checkpoint(path)
    assert read.step == 3 and set(weights) == set(trainer.model.module.state_dict())

    resumed = Trainer(cfg.replace(steps=4), progress=False, resume=True)
    resumed.fit()
    assert resumed.resumed_state is not None and resumed.resumed_state.step == 3 and resumed.step == 4


def test_a_checkpoint_of_another_loop_is_refused_by_name(tmp_path):
    out = tmp_path / "run"
    save_checkpoint(out, 2, {"w": torch.zeros(1)}, {"optimizer": {}, "scheduler": {}, "method": "ce"})
    path = latest_checkpoint(out)
    with pytest.raises(ValueError, match=r"step_00000002/state\.pt: not a Trainer checkpoint \(missing sampler, rng"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="not a Trainer checkpoint"):
        Trainer(tiny_config(tmp_path), progress=False, resume=True).fit()
