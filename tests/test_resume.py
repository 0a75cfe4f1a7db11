"""Checkpoints: exact resume after a kill, atomic writes, pruning, the deterministic sampler."""

import numpy as np
import pytest
import torch

from cliplab.train import Trainer
from cliplab.train.batches import PairSampler, SamplerState
from cliplab.train.checkpoint import checkpoint_root, latest_checkpoint, list_checkpoints
from test_trainer import read_metrics, tiny_config


class Killed(Exception):
    """Stands for the process being killed in the middle of a step."""


def _config(tmp_path, name):
    # Patch dropout, GradCache and ZClip all carry state across steps: RNG, clipper statistics.
    return tiny_config(
        tmp_path / name,
        steps=8,
        batch_size=8,
        accum_steps=2,
        patch_dropout=0.5,
        grad_clip={"mode": "zclip", "options": {"warmup_steps": 2}},
        schedule={"warmup_steps": 2},
        checkpoint_every=4,
        log_every=1,
    )


def test_resume_after_kill_is_exact(tmp_path):
    straight = Trainer(_config(tmp_path, "straight"), progress=False)
    straight.fit()

    cfg = _config(tmp_path, "killed")
    first = Trainer(cfg, progress=False)
    first.setup()
    objective = first.objective

    def dies_at_step_6(*args, **kwargs):
        if first.step == 5:
            raise Killed
        return objective(*args, **kwargs)

    first.objective = dies_at_step_6
    first.objective.teacher_features = objective.teacher_features
    with pytest.raises(Killed):
        first.fit()
    out = tmp_path / "killed" / "run"
    assert latest_checkpoint(out).name == "step_00000004"
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5]

    resumed = Trainer(cfg, progress=False, resume=True)
    summary = resumed.fit()
    assert summary["steps_this_run"] == 4
    assert resumed.losses == straight.losses[4:]  # bitwise: same batches, same dropped patches, same state
    for (name, a), b in zip(straight.model.module.state_dict().items(), resumed.model.module.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.clipper.state_dict() == straight.clipper.state_dict()
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == list(range(1, 9))  # the records of the lost step 5 were dropped on resume


def test_resume_can_extend_a_finished_run(tmp_path):
    cfg = tiny_config(tmp_path, steps=2)
    Trainer(cfg, progress=False).fit()
    summary = Trainer(cfg.replace(steps=3), progress=False, resume=True).fit()
    assert summary["step"] == 3 and summary["steps_this_run"] == 1
    again = Trainer(cfg.replace(steps=3), progress=False, resume="auto").fit()
    assert again["steps_this_run"] == 0 and again["model_dir"]


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    cfg = tiny_config(tmp_path, steps=6, checkpoint_every=1, keep_checkpoints=2)
    Trainer(cfg, progress=False).fit()
    out = tmp_path / "run"
    assert [p.name for p in list_checkpoints(out)] == ["step_00000005", "step_00000006"]
    assert latest_checkpoint(out).name == "step_00000006"
    root = checkpoint_root(out)
    # a crash while writing leaves only a hidden temporary directory, which is never picked up
    (root / ".step_00000007.abc.tmp").mkdir()
    (root / "step_00000008").mkdir()  # incomplete (no weights/state): ignored too
    assert latest_checkpoint(out).name == "step_00000006"
    (root / "latest").unlink()
    assert latest_checkpoint(out).name == "step_00000006"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "step_00000005",
        "step_00000006",
        "step_00000008",
    ]


def test_sampler_is_deterministic_and_sharded():
    t2i = np.repeat(np.arange(20), 3)
    sampler = PairSampler(t2i, 20, batch_size=4, seed=1)
    state, seen = SamplerState(), []
    for _ in range(5):  # one epoch: 5 batches of 4, every image once
        images, captions, state = sampler.batch(state)
        assert np.all(t2i[captions] == images)
        seen.extend(images.tolist())
    assert sorted(seen) == list(range(20)) and sampler.steps_per_epoch == 5
    images, _, nxt = sampler.batch(state)
    assert nxt == SamplerState(1, 4)
    again, _, _ = PairSampler(t2i, 20, batch_size=4, seed=1).batch(state)
    assert np.array_equal(images, again)  # the state alone fixes the batch

    shards = [
        PairSampler(t2i, 20, batch_size=2, seed=1, rank=r, world_size=2).batch(SamplerState(1, 0)) for r in (0, 1)
    ]
    assert np.array_equal(np.concatenate([s[0] for s in shards]), images)
    with pytest.raises(ValueError, match="needs 40"):
        PairSampler(t2i, 20, batch_size=20, seed=0, world_size=2)


@pytest.mark.parametrize("padding", ["longest", "max_length"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_token_cache_pads_like_the_tokenizer(padding, side):
    from cliplab.train.batches import TokenCache
    from helpers import make_tiny_model

    model = make_tiny_model()
    model.padding, model.tokenizer.padding_side = padding, side
    captions = ["a red circle.", "a small blue square on the left.", "thing", "a star above a large green circle."]
    cache = TokenCache.for_model(model, captions)
    idx = np.array([3, 0, 2, 0, 1])
    ours, theirs = cache(idx), model.tokenize([captions[i] for i in idx])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


class _FixedWidth:
    """open_clip's tokenizer contract: every text becomes one zero-padded, truncated row of ``width`` ids."""

    tokenizer = padding = None

    def __init__(self, width: int = 12, as_dict: bool = False):
        self.width, self.as_dict = width, as_dict

    def tokenize(self, texts):
        out = torch.zeros(len(texts), self.width, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [1 + ord(ch) % 90 for ch in text][: self.width]
            out[i, : len(ids)] = torch.tensor(ids)
        return {"input_ids": out} if self.as_dict else out


@pytest.mark.parametrize("as_dict", [False, True])
def test_fixed_width_tokens_are_cached_once(as_dict):
    from cliplab.train.batches import FixedTokenCache, TokenCache

    model = _FixedWidth(as_dict=as_dict)
    captions = ["a red circle.", "a small blue square on the far left of a big picture.", "x", ""]
    cache = TokenCache.for_model(model, captions)
    assert isinstance(cache, FixedTokenCache)
    calls = []
    model.tokenize = lambda texts, real=model.tokenize: calls.append(texts) or real(texts)
    idx = np.array([1, 3, 0, 1, 2])
    ours, theirs = cache(idx), _FixedWidth(as_dict=as_dict).tokenize([captions[i] for i in idx])
    assert calls == []  # a batch is a gather, no tokenisation
    if as_dict:
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    else:
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def test_variable_width_tokens_are_not_cached_as_fixed():
    from cliplab.train.batches import TokenCache

    class Variable(_FixedWidth):
        def tokenize(self, texts):
            width = max(1, max(len(t) for t in texts))
            return torch.ones(len(texts), width, dtype=torch.long)

    assert TokenCache.for_model(Variable(), ["a", "a longer caption"]) is None


def test_resume_warns_only_for_settings_that_change_the_run():
    from cliplab.train.run_state import changed_config_keys
    from cliplab.train.trainer import _RESUME_FREE

    old = {"steps": 5, "lr": 1e-3, "data": {"train": "shapes", "num_workers": 1, "shuffle_buffer": 10}}
    workers = {"steps": 9, "lr": 1e-3, "data": {"train": "shapes", "num_workers": 2, "shuffle_buffer": 10}}
    assert changed_config_keys(old, workers, _RESUME_FREE) == []
    both = {"steps": 5, "lr": 1e-2, "data": {"train": "shapes", "num_workers": 2, "shuffle_buffer": 20}}
    assert changed_config_keys(old, both, _RESUME_FREE) == ["data.shuffle_buffer", "lr"]
