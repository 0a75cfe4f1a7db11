"""What the trainer's loop trains: a ``TrainingObjective``, with contrastive pre-training as the default.

``Trainer`` owns the run (torchrun, the optimizer step, logging, periodic evaluation, checkpoints and exact
resume); its objective supplies the parts that differ between kinds of training:

* ``check(model)``: refuse a model before anything is loaded;
* ``prepare(trainer, resume_from)``: the model on ``trainer.device`` and the module the loop runs
  (``trainer.wrapper``), plus the parameters the objective adds (e.g. fine-tuning's classification head);
* ``optimization(trainer)``: ``(parameters, optimizer, scheduler, gradient scaler)``;
* ``batches(trainer)``: the batch source, ``(sampler, loader)`` (``cliplab.train.batches.Prefetcher`` calls
  ``sampler.batch(state) -> (a, b, next state)`` and ``loader.load(a, b) -> batch``);
* ``forward_backward(trainer, batch)``: the loss of one batch, back-propagated; returns it detached;
* ``after_step(trainer)``: what follows the optimizer step (``trainer.step`` is still the step's 0-based index);
* ``state_dict()`` / ``load_state_dict(state)``: its extra checkpoint state (``TrainState.objective``);
* ``finish(trainer)``: undo what ``prepare`` changed on the model once the loop ends.

Flags: ``writes_run_files`` (``config.json``, ``metrics.jsonl``, a checkpoint at the last step, the final model in
``model/``), ``uses_checkpoints`` (resume from and write to ``output_dir/checkpoints``), ``wraps_ddp`` (under
torchrun the trainer wraps ``trainer.wrapper`` in DDP; an objective whose loss uses parameters outside that module's
forward averages its gradients itself in ``forward_backward``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from cliplab.models.base import Model
from cliplab.train import checkpoint as ckpt
from cliplab.train.batches import build_batches, load_training_data, training_captions
from cliplab.train.engine import TrainingDiverged
from cliplab.train.gradcache import direct_backward, gradcache_backward, split_batch
from cliplab.train.objective import Objective
from cliplab.train.scaling import enable_grad_checkpointing
from cliplab.train.setup import (
    TwoTower,
    build_model,
    build_optimization,
    clamp_logit_scale,
    lock_tower,
    prepare_logit_params,
    require_trainable,
)

#: the ``cliplab.train.trainer.Trainer`` running the objective (``Any``: the trainer imports this module)
Trainer = Any

log = logging.getLogger(__name__)


class TrainingObjective(Protocol):
    """What ``Trainer``'s loop trains (module docstring)."""

    writes_run_files: bool
    uses_checkpoints: bool
    wraps_ddp: bool

    def check(self, model: Model | None) -> None: ...

    def prepare(self, trainer: Trainer, resume_from: Path | None) -> None: ...

    def optimization(self, trainer: Trainer) -> tuple[list[nn.Parameter], Any, Any, Any]: ...

    def batches(self, trainer: Trainer) -> tuple[Any, Any]: ...

    def forward_backward(self, trainer: Trainer, batch: dict[str, Any]) -> torch.Tensor: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any] | None: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def finish(self, trainer: Trainer) -> None: ...


class ContrastivePretraining:
    """The default objective: image–caption pairs of ``config.data``, the contrastive loss of ``config.loss``
    (CLIP / SigLIP / InfoLOOB, distillation, hard negatives; GradCache when ``accum_steps > 1``), the logit scale
    clamped to ``ln 100`` after each step."""

    writes_run_files = True
    uses_checkpoints = True
    wraps_ddp = True

    def __init__(self) -> None:
        self.data: Any = None

    def check(self, model: Model | None) -> None:
        if model is not None:
            require_trainable(model)

    def prepare(self, trainer: Trainer, resume_from: Path | None) -> None:
        cfg = trainer.config
        data = self.data = load_training_data(cfg.data.train, cfg.data.split, cfg.data.options)
        tok_dir = resume_from / ckpt.TOKENIZER_DIR if resume_from else None
        new_vocabulary = trainer.model is None and cfg.model.spec is None and not (tok_dir and tok_dir.is_dir())
        captions = training_captions(data, vocabulary=new_vocabulary)
        if trainer.model is None:
            trainer.model, from_scratch = build_model(cfg, captions, trainer.device, tokenizer_dir=tok_dir)
        else:
            trainer.model.to(trainer.device)
            from_scratch = False
        model = trainer.model
        require_trainable(model)
        if cfg.loss.geometry is not None:
            model.geometry = cfg.loss.geometry
        trainer.from_scratch = from_scratch
        trainer.added_bias = prepare_logit_params(model, cfg.loss.name, from_scratch=from_scratch)
        trainer.locks = [lock_tower(model, t) for t, on in (("image", cfg.lock_image), ("text", cfg.lock_text)) if on]
        if cfg.patch_dropout > 0:
            from cliplab.train.patch_dropout import PatchDropout

            if cfg.lock_image:
                log.warning("patch_dropout has no effect on a locked (eval-mode) image tower")
            trainer.patch_dropout = PatchDropout(model.module, cfg.patch_dropout)
        trainer.objective = Objective(cfg.loss, model, trainer.env, trainer.device)
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(model)
        trainer.wrapper = TwoTower(model, lock_image=cfg.lock_image, lock_text=cfg.lock_text)

    def optimization(self, trainer: Trainer) -> tuple[list[nn.Parameter], Any, Any, Any]:
        assert trainer.objective is not None
        return build_optimization(trainer.config, trainer.objective.optimized(trainer.model.module), trainer.device)

    def batches(self, trainer: Trainer) -> tuple[Any, Any]:
        assert trainer.objective is not None
        return build_batches(trainer.config, self.data, trainer.model, trainer.env, trainer.objective.teacher)

    def forward_backward(self, trainer: Trainer, batch: dict[str, Any]) -> torch.Tensor:
        cfg, objective = trainer.config, trainer.objective
        assert objective is not None
        batch = trainer._to_device(batch)
        trainer.update.zero_grad()
        teacher = objective.teacher_features(batch, cfg.batch_size, trainer._autocast)
        inputs = {"pixels": batch["pixels"], "tokens": batch["tokens"]}
        if "negative_tokens" in batch:  # hard negatives (one process, no accumulation: checked at set-up)
            inputs["negative_tokens"] = batch["negative_tokens"]
        run = trainer.runner

        def forward(b: dict[str, Any], module: nn.Module = run) -> Any:
            with trainer._autocast():
                out = module(b["pixels"], b["tokens"])
                if "negative_tokens" in b:
                    with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.lock_text):
                        out = ((*out[0], trainer.model.text_features(b["negative_tokens"])), out[1])
                return out

        def loss_fn(per: Any, shared: Any) -> torch.Tensor:
            try:
                negatives = per[2] if len(per) > 2 else None
                return objective(per[0], per[1], shared[0], shared[1], teacher, negatives=negatives)
            except ValueError as err:  # the losses reject non-finite inputs: the model itself diverged
                if all(bool(torch.isfinite(t.detach()).all()) for t in (*per, *shared) if t is not None):
                    raise
                raise TrainingDiverged(trainer.step + 1, float("nan"), trainer.checkpoint_path) from err

        backward = trainer.update.backward_fn
        if cfg.accum_steps == 1:
            return direct_backward(forward, loss_fn, inputs, backward=backward)
        ddp: Any = trainer.ddp
        return gradcache_backward(
            forward,
            loss_fn,
            split_batch(inputs, cfg.accum_steps),
            first_pass=lambda b: forward(b, trainer.wrapper),
            backward=backward,
            no_sync=ddp.no_sync if ddp is not None else None,
            device=trainer.device,
        )

    def after_step(self, trainer: Trainer) -> None:
        clamp_logit_scale(trainer.model.module)

    def state_dict(self) -> dict[str, Any] | None:
        return None  # the distillation head is one of the trainer's stateful objects (``TrainState.distill_head``)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def finish(self, trainer: Trainer) -> None:
        pass


__all__ = ["ContrastivePretraining", "TrainingObjective"]
