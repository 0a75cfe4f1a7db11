"""A training run's checkpoint payload: what ``Trainer.save_checkpoint`` writes and ``resume`` restores.

Every rank contributes its RNG state (and, for a stream of shards, its own stream position); under FSDP the
weights and the optimizer state are gathered as full state dicts first (``cliplab.train.scaling``), so
checkpoints look the same with or without sharding. Rank 0 writes through ``cliplab.train.checkpoint``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.distributed as dist

from cliplab.train import checkpoint as ckpt
from cliplab.train.scaling import full_optimizer_state, load_model_state, load_optimizer_state

log = logging.getLogger(__name__)


def gather_objects(env: Any, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` when not distributed). Collective."""
    if not env.distributed:
        return [obj]
    out = [obj] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def write_checkpoint(trainer: Any) -> Path | None:
    """Write the trainer's current step; returns the checkpoint path on rank 0 (the previous one elsewhere).
    Every rank must call it."""
    env, cfg = trainer.env, trainer.config
    rngs = gather_objects(env, ckpt.rng_state(trainer.device))
    sampler = trainer.sampler_state.to_dict()
    samplers = gather_objects(env, sampler) if trainer.sampler.per_rank else None
    weights = trainer._weights()
    optimizer = full_optimizer_state(trainer.wrapper, trainer.optimizer) if cfg.fsdp else None
    if not env.is_main:
        return trainer.checkpoint_path
    state = {k: None if v is None else v.state_dict() for k, v in trainer._stateful().items()}
    if optimizer is not None:
        state["optimizer"] = optimizer
    state.update(sampler=sampler, samplers=samplers, rng=rngs, config=cfg.to_dict(), eval=trainer.last_eval)
    return ckpt.save_checkpoint(
        trainer.output_dir,
        trainer.step,
        weights,
        state,
        tokenizer=getattr(trainer.model, "tokenizer", None) if trainer.from_scratch else None,
        keep=cfg.keep_checkpoints,
    )


def changed_config_keys(old: dict[str, Any], new: dict[str, Any], free: set[str], prefix: str = "") -> list[str]:
    """Keys (dotted for nested sections) whose value differs between ``old`` and ``new``, except ``free`` ones."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = prefix + key
        if name in free:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and any(f.startswith(name + ".") for f in free):
            out += changed_config_keys(a, b, free, name + ".")
        elif a != b:
            out.append(name)
    return out


def restore_checkpoint(trainer: Any, path: Path, *, resume_free: set[str]) -> None:
    """Load ``path`` into the trainer: weights, optimizer and friends, sampler position, step, RNG states.

    Config keys outside ``resume_free`` that changed since the checkpoint are named in a warning
    (nested keys as ``section.key``: ``data.num_workers`` in ``resume_free`` frees that one setting only).
    """
    env, cfg = trainer.env, trainer.config
    weights, state = ckpt.load_checkpoint(path)
    if cfg.fsdp:
        load_model_state(trainer.wrapper, weights)
    else:
        trainer.model.module.load_state_dict(weights, strict=True)
    now = cfg.to_dict()
    changed = changed_config_keys(state["config"], now, resume_free)
    if changed:
        log.warning("resuming %s with a changed config (%s): the run will not be exact", path, ", ".join(changed))
    for key, obj in trainer._stateful().items():
        if obj is not None and state.get(key) is not None:
            if key == "optimizer" and cfg.fsdp:
                load_optimizer_state(trainer.wrapper, obj, state[key])
            else:
                obj.load_state_dict(state[key])
    samplers = state.get("samplers")
    if trainer.sampler.per_rank and (not samplers or len(samplers) != env.world_size):
        raise ValueError(
            f"{path}: a stream of shards resumes only with the number of processes that wrote the checkpoint "
            f"({len(samplers or [])}), not {env.world_size}"
        )
    trainer.sampler_state = trainer.sampler.state_from_dict(samplers[env.rank] if samplers else state["sampler"])
    trainer.step = int(state["step"])
    rngs = state["rng"]
    if len(rngs) != env.world_size:
        log.warning("checkpoint written by %d processes, resuming with %d", len(rngs), env.world_size)
    ckpt.set_rng_state(rngs[min(env.rank, len(rngs) - 1)], trainer.device)
    trainer.last_eval = state.get("eval") or {}
    trainer.checkpoint_path = path
    log.info("resumed from %s (step %d)", path, trainer.step)


__all__ = ["changed_config_keys", "gather_objects", "restore_checkpoint", "write_checkpoint"]
