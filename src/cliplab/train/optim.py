"""The trainer's optimizer, parameter groups, warm-up + cosine schedule and gradient scaler: the shared
definitions of ``cliplab.optimization`` (a lower layer, so prompt learning uses the same ones), re-exported here
for the trainer, the built-in recipes and fine-tuning."""

from __future__ import annotations

from cliplab.optimization import ParamGroups, build_optimizer, grad_scaler, param_groups, schedule, warmup_cosine

__all__ = ["ParamGroups", "build_optimizer", "grad_scaler", "param_groups", "schedule", "warmup_cosine"]
