"""A training run's checkpoint: what ``Trainer.save_checkpoint`` writes and ``resume`` restores (a ``TrainState``
beside the weights).

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
from cliplab.train.scaling import full_optimizer_state, load_optimizer_state
from cliplab.train.state import TrainState

log = logging.getLogger(__name__)


def gather_objects(env: Any, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` when not distributed). Collective."""
    if not env.distributed:
        return [obj]
    out = [obj] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def capture_state(trainer: Any) -> TrainState | None:
    """The trainer's ``TrainState`` now, on rank 0 (None elsewhere). Collective: every rank contributes its RNG
    state (and its stream position when each rank reads its own stream); under FSDP the optimizer state is
    gathered first.

    ``trainer``: anything with ``env``, ``config``, ``device``, ``step``, ``sampler``, ``sampler_state``,
    ``last_eval``, ``wrapper``, ``optimizer`` and ``stateful_objects()`` (the ``Trainer``).
    """
    env, cfg = trainer.env, trainer.config
    rngs = gather_objects(env, ckpt.rng_state(trainer.device))
    sampler = trainer.sampler_state.to_dict()
    samplers = gather_objects(env, sampler) if trainer.sampler.per_rank else None
    optimizer = full_optimizer_state(trainer.wrapper, trainer.optimizer) if cfg.fsdp else None
    if not env.is_main:
        return None
    parts = {k: None if v is None else v.state_dict() for k, v in trainer.stateful_objects().items()}
    if optimizer is not None:
        parts["optimizer"] = optimizer
    task = getattr(trainer, "training_objective", None)
    return TrainState(
        objective=task.state_dict() if task is not None else None,
        step=trainer.step,
        sampler=sampler,
        samplers=samplers,
        rng=rngs,
        config=cfg.to_dict(),
        eval=trainer.last_eval,
        **parts,
    )


def write_checkpoint(trainer: Any) -> Path | None:
    """Write the trainer's current step; returns the checkpoint path on rank 0 (the previous one elsewhere).
    Every rank must call it (``capture_state`` and ``Trainer.model_state`` are collective)."""
    state = capture_state(trainer)
    weights = trainer.model_state()
    if state is None:
        return trainer.checkpoint_path
    return ckpt.save_checkpoint(
        trainer.output_dir,
        state.step,
        weights,
        state.to_payload(),
        tokenizer=getattr(trainer.model, "tokenizer", None) if trainer.from_scratch else None,
        keep=trainer.config.keep_checkpoints,
    )


def read_checkpoint(path: Path) -> tuple[dict[str, Any], TrainState]:
    """``(weights, TrainState)`` of a trainer checkpoint directory (``ValueError`` naming it for another kind)."""
    weights, payload = ckpt.load_checkpoint(path)
    return weights, TrainState.from_payload(payload, Path(path) / ckpt.STATE_FILE)


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


def restore_checkpoint(trainer: Any, path: Path, *, resume_free: set[str]) -> TrainState:
    """Load ``path`` into the trainer: weights, optimizer and friends, sampler position, step, RNG states.

    Config keys outside ``resume_free`` that changed since the checkpoint are named in a warning
    (nested keys as ``section.key``: ``data.num_workers`` in ``resume_free`` frees that one setting only).
    Returns the checkpoint's ``TrainState``.
    """
    env, cfg = trainer.env, trainer.config
    weights, state = read_checkpoint(path)
    trainer.load_model_state(weights)
    changed = changed_config_keys(state.config, cfg.to_dict(), resume_free)
    if changed:
        log.warning("resuming %s with a changed config (%s): the run will not be exact", path, ", ".join(changed))
    saved = state.stateful()
    for key, obj in trainer.stateful_objects().items():
        part = saved.get(key)
        if obj is not None and part is not None:
            if key == "optimizer" and cfg.fsdp:
                load_optimizer_state(trainer.wrapper, obj, part)
            else:
                obj.load_state_dict(part)
    if trainer.sampler.per_rank and (not state.samplers or len(state.samplers) != env.world_size):
        raise ValueError(
            f"{path}: a stream of shards resumes only with the number of processes that wrote the checkpoint "
            f"({len(state.samplers or [])}), not {env.world_size}"
        )
    task = getattr(trainer, "training_objective", None)
    if task is not None and state.objective is not None:
        task.load_state_dict(state.objective)
    trainer.sampler_state = trainer.sampler.state_from_dict(state.sampler_of(env.rank))
    trainer.step = state.step
    if len(state.rng) != env.world_size:
        log.warning("checkpoint written by %d processes, resuming with %d", len(state.rng), env.world_size)
    ckpt.set_rng_state(state.rng_of(env.rank), trainer.device)
    trainer.last_eval = state.eval
    trainer.checkpoint_path = path
    log.info("resumed from %s (step %d)", path, trainer.step)
    return state


__all__ = [
    "capture_state",
    "changed_config_keys",
    "gather_objects",
    "read_checkpoint",
    "restore_checkpoint",
    "write_checkpoint",
]
