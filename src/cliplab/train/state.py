"""``TrainState``: everything a training checkpoint keeps beside the weights, typed.

``Trainer`` captures one at a checkpoint (``cliplab.train.run_state``) and ``cliplab.train.checkpoint`` writes it
as ``state.pt``; resuming reads it back with ``TrainState.from_payload``, which names the file and the missing
entries of a payload that is not a trainer checkpoint. The payload's keys are the ones checkpoints have always had,
so checkpoints written before this class existed resume unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: the trainer objects whose ``state_dict`` a checkpoint keeps, in payload order
STATEFUL = ("optimizer", "scheduler", "scaler", "clipper", "distill_head")
#: the payload entries every trainer checkpoint has
REQUIRED = ("step", "sampler", "rng", "config")


@dataclass
class TrainState:
    """A training run's position and the state of its stateful parts.

    ``sampler``: the sampler position (``epoch``, ``position`` in the epoch, stream readers) of rank 0, or of the
    one process; ``samplers``: every rank's, when each rank has its own stream of shards; ``rng``: every rank's
    random generator states (``cliplab.train.checkpoint.rng_state``); ``optimizer`` … ``distill_head``: the
    ``state_dict`` of the optimizer, LR scheduler, fp16 gradient scaler, adaptive clipper and distillation head
    (None when the run has none); ``config``: the run's ``TrainConfig`` as a dict; ``eval``: the last evaluation;
    ``objective``: the training objective's own state (e.g. fine-tuning's head and moving average; None for
    contrastive pre-training, and then absent from the payload).
    """

    step: int = 0
    sampler: dict[str, Any] = field(default_factory=dict)
    samplers: list[dict[str, Any]] | None = None
    rng: list[dict[str, Any]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    clipper: dict[str, Any] | None = None
    distill_head: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    objective: dict[str, Any] | None = None

    @property
    def epoch(self) -> int:
        """The epoch the sampler is in."""
        return int(self.sampler.get("epoch", 0))

    @property
    def position(self) -> int:
        """The sampler's position in the epoch (batches of a map-style sampler, samples of a stream)."""
        return int(self.sampler.get("position", 0))

    def sampler_of(self, rank: int) -> dict[str, Any]:
        """The sampler position ``rank`` resumes from (its own with per-rank streams, else the shared one)."""
        return self.samplers[rank] if self.samplers else self.sampler

    def rng_of(self, rank: int) -> dict[str, Any]:
        """``rank``'s RNG states (the last rank's when the run had fewer processes)."""
        return self.rng[min(rank, len(self.rng) - 1)]

    def stateful(self) -> dict[str, dict[str, Any] | None]:
        """``{name: state_dict}`` of the stateful parts (``STATEFUL``)."""
        return {name: getattr(self, name) for name in STATEFUL}

    def to_payload(self) -> dict[str, Any]:
        """The dict ``state.pt`` holds (the stateful parts first, then position, RNG, config, evaluation, step)."""
        payload = {
            **self.stateful(),
            "sampler": self.sampler,
            "samplers": self.samplers,
            "rng": self.rng,
            "config": self.config,
            "eval": self.eval,
            "step": self.step,
        }
        if self.objective is not None:
            payload["objective"] = self.objective
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "state.pt") -> TrainState:
        """The state of a ``state.pt`` payload; ``ValueError`` naming ``source`` when it is no trainer checkpoint."""
        if not isinstance(payload, dict):
            raise ValueError(f"{source}: not a training checkpoint (a {type(payload).__name__}, not a dict)")
        missing = [k for k in REQUIRED if k not in payload]
        if missing:
            raise ValueError(
                f"{source}: not a Trainer checkpoint (missing {', '.join(missing)}); it may have been written by "
                "another loop (e.g. cliplab.finetune before it ran in the trainer's loop) or another program"
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known}
        values["step"] = int(values["step"])
        values["eval"] = values.get("eval") or {}
        return cls(**values)


__all__ = ["REQUIRED", "STATEFUL", "TrainState"]
