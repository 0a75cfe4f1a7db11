"""The shared optimisation module: parameter groups and the warm-up + cosine schedule, recomputed by hand."""

import math

import pytest
import torch
from torch import nn

from cliplab.optimization import build_optimizer, grad_scaler, param_groups, schedule, warmup_cosine


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.token_embedding = nn.Embedding(5, 3)
        self.proj = nn.Linear(3, 3)
        self.layer_norm = nn.LayerNorm(3)
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def _ids(group):
    return {id(p) for p in group["params"]}


def test_training_groups_spare_embeddings_norms_and_logits():
    m = Tiny()
    decay, rest = param_groups(m, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert _ids(decay) == {id(m.proj.weight)}
    assert _ids(rest) == {id(m.token_embedding.weight), id(m.proj.bias), id(m.layer_norm.weight),
                          id(m.layer_norm.bias), id(m.logit_scale)}  # fmt: skip
    assert id(m.frozen.weight) not in _ids(decay) | _ids(rest)


def test_fine_tuning_groups_decide_by_shape_only():
    m = Tiny()
    decay, rest = param_groups(m.named_parameters(), 0.1, decay_embeddings=True)
    assert _ids(decay) == {id(m.proj.weight), id(m.token_embedding.weight)}
    assert id(m.logit_scale) in _ids(rest) and id(m.layer_norm.weight) in _ids(rest)


@pytest.mark.parametrize("warmup,total,min_ratio", [(0, 10, 0.0), (3, 10, 0.0), (4, 20, 0.1), (1, 1, 0.0)])
def test_schedule_formula(warmup, total, min_ratio):
    for s in range(total + 3):
        if s < warmup:
            want = (s + 1) / warmup
        else:
            t = min(1.0, (s - warmup) / max(1, total - warmup))
            want = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        assert warmup_cosine(s, warmup, total, min_ratio=min_ratio) == pytest.approx(want, abs=1e-12)
    assert warmup_cosine(warmup + 1, warmup, total, constant=True) == 1.0


def test_optimizer_follows_the_schedule_and_is_checkpointable():
    m = Tiny()
    opt, sched = build_optimizer(param_groups(m, 0.1), lr=0.5, betas=(0.9, 0.98), eps=1e-6, warmup=2, total=6)
    fn = schedule(2, 6)
    for s in range(6):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * fn(s))
        opt.step()
        sched.step()
    assert sched.state_dict()["lr_lambdas"] == [None, None]  # a plain function: the step count may change on resume


def test_grad_scaler_only_for_fp16():
    assert grad_scaler("bf16", torch.device("cpu")) is None
    assert grad_scaler("fp16", torch.device("cpu"), cuda_only=True) is None
