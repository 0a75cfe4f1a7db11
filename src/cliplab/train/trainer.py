"""``Trainer``: contrastive training / fine-tuning of CLIP-family models from a ``TrainConfig``.

One optimizer step: sample and load the batch (on a background thread, from a deterministic sampler), forward
both towers under autocast, compute the loss (CLIP / SigLIP / InfoLOOB, plus distillation) on the whole
accumulated batch — GradCache when ``accum_steps > 1`` —, check it is finite, clip the gradients
(``none`` / ``norm`` / ``zclip`` / ``autoclip``), AdamW step, warm-up + cosine schedule, clamp the logit
scale to ``ln 100``. Under ``torchrun`` the towers are wrapped in DDP, the loss gathers features across
ranks, and only rank 0 logs and writes files.

Outputs in ``output_dir``: ``config.json``, ``metrics.jsonl`` (one JSON record per logged step or
evaluation), ``checkpoints/`` (see ``cliplab.train.checkpoint``) and the final model in Hugging Face
format in ``model/`` (``cliplab.load_model`` and ``transformers`` load it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from cliplab.models.base import Model
from cliplab.models.precision import autocast
from cliplab.train import checkpoint as ckpt
from cliplab.train.batches import Prefetcher
from cliplab.train.config import TrainConfig
from cliplab.train.engine import OptimizerStep, TrainingDiverged
from cliplab.train.objective import Objective
from cliplab.train.run_state import restore_checkpoint, write_checkpoint
from cliplab.train.runlog import MetricsLog
from cliplab.train.scaling import (
    compile_module,
    full_model,
    full_model_state,
    load_model_state,
    shard_fsdp,
    sync_replicated_grads,
)
from cliplab.train.scaling import grad_norm as fsdp_grad_norm
from cliplab.train.setup import (
    DistEnv,
    TwoTower,
    build_clipper,
    init_distributed,
    logit_bias_param,
    seed_everything,
    wrap_ddp,
)
from cliplab.train.state import TrainState
from cliplab.train.training_objective import ContrastivePretraining, TrainingObjective

log = logging.getLogger(__name__)

#: config keys that may change when resuming without breaking the run's exactness (``data.num_workers``:
#: decode threads, not part of the sample order)
_RESUME_FREE = {
    "steps",
    "output_dir",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval",
    "data.num_workers",
}


class Trainer:
    """Train ``config.model`` (or ``model``) on ``config.data``; see the module docstring.

    Args:
        config: the run's ``TrainConfig``.
        model: a ``Model`` to train instead of the one the config names.
        progress: show a progress bar (rank 0 only).
        resume: True continues the latest checkpoint in ``output_dir`` exactly (error if none),
            ``"auto"`` continues it when there is one, False starts afresh (error if checkpoints exist).
        objective: what the loop trains (``cliplab.train.training_objective``); default contrastive pre-training.
        desc: the progress bar's label.
    """

    #: the module the loop runs (set by the objective's ``prepare``; DDP wraps it under torchrun)
    wrapper: nn.Module

    def __init__(
        self,
        config: TrainConfig,
        model: Model | None = None,
        progress: bool = True,
        *,
        resume: bool | str = False,
        objective: TrainingObjective | None = None,
        desc: str | None = None,
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig (see TrainConfig.from_file), got {type(config).__name__}")
        if model is not None and not isinstance(model, Model):
            raise TypeError(f"model must be a cliplab Model, got {type(model).__name__}")
        self.config, self.progress, self.resume = config, progress, resume
        self.training_objective: TrainingObjective = objective if objective is not None else ContrastivePretraining()
        self.desc = desc
        # None until ``setup`` builds the model the config names
        self.model: Model = model  # type: ignore[assignment]
        self.step = 0
        self.losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] = {}
        #: the checkpoint's state when the run resumed (None for a fresh run)
        self.resumed_state: TrainState | None = None
        self._ready = False

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build everything (called by ``fit``); restores the checkpoint when resuming."""
        if self._ready:
            return
        cfg, task = self.config, self.training_objective
        task.check(self.model)  # before anything is loaded
        self.env, self.device = init_distributed(cfg.device)
        if cfg.fsdp and not self.env.distributed:
            raise ValueError("fsdp: true shards the model over torchrun processes: launch with torchrun")
        self.output_dir = Path(cfg.output_dir)
        seed_everything(cfg.seed + self.env.rank)
        resume_from = ckpt.resume_point(self.output_dir, self.resume) if task.uses_checkpoints else None
        self.from_scratch, self.added_bias = False, False
        self.locks: list[Any] = []
        self.patch_dropout: Any = None
        self.objective: Objective | None = None
        task.prepare(self, resume_from)  # the model on the device, self.wrapper, the objective's own parts
        model = self.model
        self.fsdp_twin: Any = None
        self.replicated: list[nn.Parameter] = []
        if cfg.fsdp:  # before the optimizer: sharding replaces the parameters
            if cfg.grad_clip.mode != "none":
                raise ValueError("fsdp: true supports grad_clip.mode none only")
            self.fsdp_twin, self.replicated = shard_fsdp(self.wrapper, model)
        seed_everything(cfg.seed + self.env.rank)  # model creation re-seeds; the training stream starts here
        self.params, self.optimizer, self.scheduler, self.scaler = task.optimization(self)
        self.clipper = build_clipper(cfg)
        max_norm = cfg.grad_clip.max_norm if cfg.grad_clip.mode == "norm" else None
        self.update = OptimizerStep(
            self.params, self.optimizer, self.scheduler, scaler=self.scaler, max_norm=max_norm, clipper=self.clipper
        )
        self.sampler, self.loader = task.batches(self)
        self.evaluator = None
        if self.env.is_main and (cfg.eval.zeroshot or cfg.eval.retrieval):
            from cliplab.train.evaluation import PeriodicEval

            self.evaluator = PeriodicEval(cfg.eval, model)
        self.ddp = None
        if self.env.distributed and not cfg.fsdp and task.wraps_ddp:
            self.ddp = wrap_ddp(self.wrapper, self.device)
        self.runner = self.ddp or self.wrapper
        if cfg.compile:
            self.runner = compile_module(self.runner)
        self.sampler_state = self.sampler.initial_state()
        self.checkpoint_path: Path | None = None
        if resume_from is not None:
            self._restore(resume_from)
        self._ready = True

    def _train_mode(self) -> None:
        self.model.module.train()
        for lock in self.locks:
            lock.apply_eval()

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.config.precision, self.device)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dtype = self.params[0].dtype if self.params else torch.float32
        out: dict[str, Any] = {}
        for k, v in batch.items():
            if isinstance(v, dict):
                out[k] = {n: t.to(self.device, non_blocking=True) for n, t in v.items()}
            else:
                out[k] = v.to(self.device, dtype=dtype if v.is_floating_point() else None, non_blocking=True)
        return out

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One optimizer step on a loaded batch; raises ``TrainingDiverged`` on a non-finite loss."""
        loss = self.training_objective.forward_backward(self, batch)
        if self.replicated:
            sync_replicated_grads(self.replicated)
        if self.env.distributed:
            loss = loss.clone()
            dist.all_reduce(loss)
            loss /= self.env.world_size
        value = float(loss)
        if not math.isfinite(value):
            raise TrainingDiverged(self.step + 1, value, self.checkpoint_path)
        out = self.update.step()
        self.training_objective.after_step(self)
        return {"loss": value, **out}

    def _grad_norm(self) -> float:
        if self.config.fsdp:
            return fsdp_grad_norm(self.params)
        grads = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self, resume: bool | str | None = None) -> dict[str, Any]:
        """Train until ``config.steps``; returns a summary (last loss, evaluation, output paths).

        A ``Trainer`` runs once; to continue a run, make a new one with ``resume=True``.
        """
        if getattr(self, "_finished", False):
            raise RuntimeError("this Trainer has already run; continue with Trainer(config, resume=True).fit()")
        if resume is not None and not self._ready:
            self.resume = resume
        self._finished = True
        start = time.perf_counter()
        try:
            self.setup()
            first = self.step
            self._loop()
            model_dir = self.save_model() if self.training_objective.writes_run_files else None
        finally:
            self._teardown()
        return {
            "status": "completed",
            "step": self.step,
            "loss": self.losses[-1] if self.losses else None,
            "eval": self.last_eval,
            "steps_this_run": self.step - first,
            "seconds": round(time.perf_counter() - start, 3),
            "output_dir": str(self.output_dir),
            "model_dir": str(model_dir) if model_dir else None,
            "checkpoint": str(self.checkpoint_path) if self.checkpoint_path else None,
        }

    def _loop(self) -> None:
        cfg, env = self.config, self.env
        files = self.training_objective.writes_run_files
        self.log = MetricsLog(self.output_dir / "metrics.jsonl", enabled=env.is_main and files)
        self.history = self.log.history
        if env.is_main and files:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.output_dir / "config.json")
        self.log.open(self.step)
        bar = tqdm(
            total=cfg.steps, initial=self.step, disable=not (self.progress and env.is_main), unit="step", desc=self.desc
        )
        window: list[float] = []
        window_start = time.perf_counter()
        pending = None
        prefetch = Prefetcher(self.sampler, self.loader)
        try:
            self._train_mode()
            if self.step < cfg.steps:
                pending = prefetch.submit(self.sampler_state)
            while self.step < cfg.steps:
                assert pending is not None  # submitted before the loop and after every step but the last
                batch, state = pending.result()
                if self.step + 1 < cfg.steps:  # sample and load the next batch while this one trains
                    pending = prefetch.submit(state)
                out = self.train_step(batch)
                self.step, self.sampler_state = self.step + 1, state
                self.losses.append(out["loss"])
                window.append(out["loss"])
                bar.update(1)
                last = self.step == cfg.steps
                if (cfg.log_every and self.step % cfg.log_every == 0) or last:
                    self._log_step(out, window, time.perf_counter() - window_start)
                    bar.set_postfix(loss=f"{np.mean(window):.4f}", scale=f"{self.model.logit_scale:.1f}")
                    window, window_start = [], time.perf_counter()
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                    self._wait(pending)
                    self.evaluate()
                every = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                if every or (last and self._final_checkpoint):
                    self._wait(pending)
                    self.save_checkpoint()
        except TrainingDiverged as err:
            self._record({"step": err.step, "event": "diverged", "loss": None, "checkpoint": str(err.checkpoint)})
            raise
        finally:
            bar.close()
            self._wait(pending)
            prefetch.close()
            self.loader.close()
            self.log.close()

    def _wait(self, pending: Any) -> None:
        """Let the background sampling and loading finish (the tokenizer and the sampler must not be shared by two
        threads at once)."""
        if pending is not None:
            with contextlib.suppress(Exception):
                pending.result()

    def evaluate(self) -> dict[str, Any]:
        """Run the periodic evaluation now (rank 0; others wait); the training RNG is left as it was."""
        if self.evaluator is not None:
            rng = ckpt.rng_state(self.device)
            try:
                self.last_eval = self.evaluator(self.model)
            finally:
                ckpt.set_rng_state(rng, self.device)
                self._train_mode()
            self._record({"step": self.step, "eval": self.last_eval})
        self._barrier()
        return self.last_eval

    # -- logging ----------------------------------------------------------------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        self.log.write(record)

    def _log_step(self, out: dict[str, Any], window: list[float], elapsed: float) -> None:
        cfg = self.config
        grad_norm = out["grad_norm"]
        grad_norm = self._grad_norm() if grad_norm is None else float(grad_norm)
        samples = len(window) * cfg.batch_size * cfg.accum_steps * self.env.world_size
        self._record(
            {
                "step": self.step,
                "epoch": self.sampler_state.epoch,
                "loss": float(np.mean(window)),
                "lr": out["lr"],
                "logit_scale": self.model.logit_scale,
                "logit_bias": self.model.logit_bias if logit_bias_param(self.model.module) is not None else None,
                "grad_norm": grad_norm,
                "clip": out["clip"],
                "samples_per_s": samples / elapsed if elapsed > 0 else None,
                "step_time_s": elapsed / max(1, len(window)),
            }
        )

    # -- checkpoints and the final model ----------------------------------------------------------------
    def _barrier(self) -> None:
        if self.env.distributed:
            dist.barrier()

    def stateful_objects(self) -> dict[str, Any]:
        """The objects whose ``state_dict`` a checkpoint keeps (``cliplab.train.state.STATEFUL``; None if absent)."""
        return dict(
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            clipper=self.clipper,
            distill_head=getattr(self.objective, "head", None),  # CLIP-KD's projections and ICL scale
        )

    def model_state(self) -> dict[str, torch.Tensor]:
        """The full model state dict (under FSDP gathered to rank 0: every rank must call this)."""
        return full_model_state(self.wrapper) if self.config.fsdp else self.model.module.state_dict()

    def load_model_state(self, weights: dict[str, torch.Tensor]) -> None:
        """Load a full model state dict (under FSDP each rank keeps its shards)."""
        if self.config.fsdp:
            load_model_state(self.wrapper, weights)
        else:
            self.model.module.load_state_dict(weights, strict=True)

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0; every rank contributes its RNG and stream state)."""
        self.checkpoint_path = write_checkpoint(self)
        self._barrier()
        return self.checkpoint_path

    def _restore(self, path: Path) -> None:
        self.resumed_state = restore_checkpoint(self, path, resume_free=_RESUME_FREE)

    def save_model(self, directory: str | os.PathLike | None = None) -> Path | None:
        """Save the model in Hugging Face format (default ``output_dir/model``; see ``checkpoint.save_hf_model``).

        Rank 0 writes; under FSDP every rank must call it (the weights are gathered first).
        """
        target = Path(directory) if directory is not None else self.output_dir / "model"
        model = self.model
        if self.config.fsdp:
            weights = self.model_state()
            if not self.env.is_main:
                return None
            model = full_model(self.fsdp_twin, weights)
        return ckpt.save_hf_model(model, target, bias_in_config=self.added_bias) if self.env.is_main else None

    @property
    def _final_checkpoint(self) -> bool:
        """A checkpoint at the last step: always for an objective with run files, else when checkpointing."""
        task = self.training_objective
        return task.writes_run_files or (task.uses_checkpoints and self.config.checkpoint_every > 0)

    def _teardown(self) -> None:
        if self._ready:
            self.training_objective.finish(self)
        if getattr(self, "loader", None) is not None:
            self.loader.close()
        patch_dropout = getattr(self, "patch_dropout", None)
        if patch_dropout is not None:
            patch_dropout.remove()
        if self.model is not None:
            self.model.module.eval()
        env = getattr(self, "env", None)
        if env is not None and env.owns_group:
            dist.destroy_process_group()


def train(
    config: TrainConfig | dict | str | os.PathLike,
    *,
    model: Model | None = None,
    resume: bool | str = False,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train from a config (object, dict or file path) with top-level ``overrides``; returns the summary."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        config = TrainConfig.from_file(config)
    if overrides:
        config = config.replace(**overrides)
    return Trainer(config, model=model, progress=progress, resume=resume).fit()


__all__ = ["DistEnv", "Trainer", "TrainingDiverged", "TwoTower", "train"]
