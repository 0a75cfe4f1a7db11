"""Building blocks of a training run: the model, its logit parameters, tower locking, distributed set-up."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from cliplab.models.base import Model
from cliplab.optimization import build_optimizer, grad_scaler, param_groups, schedule
from cliplab.train.config import TrainConfig

log = logging.getLogger(__name__)

MAX_LOG_SCALE = math.log(100.0)
SIGLIP_LOG_SCALE = math.log(10.0)
SIGLIP_BIAS = -10.0


def build_model(
    config: TrainConfig, captions: Iterable[str], device: torch.device, *, tokenizer_dir: Path | None = None
) -> tuple[Model, bool]:
    """The model ``config.model`` describes and whether it is new (trained from scratch).

    From scratch, the tokenizer is built from ``captions`` (plus ``extra_vocabulary``) unless
    ``tokenizer_dir`` holds one saved by a checkpoint.
    """
    opts = config.model
    if opts.spec is not None:
        from cliplab.models import load_model

        return load_model(opts.spec, device=device), False
    if opts.config is None:
        raise ValueError(
            "the config names no model: set model.spec (a model to fine-tune) or model.config (a new model), "
            "or pass model= to the Trainer"
        )
    from cliplab.models.factory import build_tokenizer, create_model

    if tokenizer_dir is not None and tokenizer_dir.is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        corpus = [*captions, *opts.extra_vocabulary]
        tokenizer = build_tokenizer(corpus, context_length=opts.config.context_length, min_count=opts.min_count)
    model = create_model(opts.config, tokenizer, spec="<training>", seed=config.seed)
    return model.to(device), True


def require_trainable(model: Model) -> None:
    """Refuse, before any step, a model the trainer could not train or save (its declared capabilities)."""
    name = f"{type(model).__name__} ({getattr(model, 'spec', '?')})"
    if not getattr(model, "can_train", False):
        raise ValueError(f"{name} cannot be trained: it declares can_train = False")
    if not getattr(model, "can_save", False):
        raise ValueError(
            f"{name} cannot be trained here: it declares can_save = False, so the trained model could not be "
            "saved; use a model that can be saved (e.g. a Hugging Face model: hf:<repo-id> or a local directory)"
        )


def prepare_logit_params(model: Model, loss: str, *, from_scratch: bool) -> bool:
    """Set up the logit scale/bias for ``loss``; returns True when a ``logit_bias`` parameter was added.

    SigLIP uses a learnable bias: a module without one (a ``CLIPModel``) gets ``module.logit_bias``
    (init −10). Trained from scratch, SigLIP starts at ``t' = ln 10, b = −10`` (Zhai et al. 2023). Other
    losses are shift-invariant, so an existing bias is frozen.
    """
    module = model.module
    scale = getattr(module, "logit_scale", None)
    if not isinstance(scale, nn.Parameter):
        raise TypeError(f"{type(module).__name__} has no logit_scale parameter to train")
    added = False
    bias = getattr(module, "logit_bias", None)
    if loss == "siglip":
        if bias is None:
            ref = scale.detach()
            module.logit_bias = nn.Parameter(torch.full((1,), SIGLIP_BIAS, dtype=ref.dtype, device=ref.device))
            added = True
        elif from_scratch:
            with torch.no_grad():
                bias.fill_(SIGLIP_BIAS)
        if from_scratch:
            with torch.no_grad():
                scale.fill_(SIGLIP_LOG_SCALE)
    elif isinstance(bias, nn.Parameter):
        bias.requires_grad_(False)
    return added


def logit_bias_param(module: nn.Module) -> nn.Parameter | None:
    bias = getattr(module, "logit_bias", None)
    return bias if isinstance(bias, nn.Parameter) and bias.requires_grad else None


def logit_scale_param(module: nn.Module) -> nn.Parameter:
    """``module.logit_scale`` (the log of CLIP's temperature), or ``TypeError`` when it is no parameter."""
    scale = getattr(module, "logit_scale", None)
    if not isinstance(scale, nn.Parameter):
        raise TypeError(f"{type(module).__name__} has no logit_scale parameter to train")
    return scale


@torch.no_grad()
def clamp_logit_scale(module: nn.Module) -> None:
    """CLIP: keep ``log logit_scale ≤ ln 100`` after every optimizer step."""
    logit_scale_param(module).clamp_(max=MAX_LOG_SCALE)


class TwoTower(nn.Module):
    """Both towers of a ``Model`` as one module (what DDP wraps): ``(pixels, tokens) → features, scale, bias``.

    A locked tower runs without gradients. Returns ``((image, text), (scale, bias))``; ``bias`` is None
    unless the module has a trainable ``logit_bias``.
    """

    def __init__(self, model: Model, *, lock_image: bool = False, lock_text: bool = False):
        super().__init__()
        self.inner = model.module
        self.model = model  # not an nn.Module: kept as a plain attribute
        self.lock_image, self.lock_text = lock_image, lock_text

    def forward(self, pixels: torch.Tensor, tokens: dict[str, torch.Tensor]) -> Any:
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and not self.lock_image):
            image = self.model.image_features(pixels)
        with torch.set_grad_enabled(grad and not self.lock_text):
            text = self.model.text_features(tokens)
        scale = logit_scale_param(self.inner).exp().reshape(())
        bias = logit_bias_param(self.inner)
        return (image, text), (scale, None if bias is None else bias.reshape(()))


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """The LR multiplier per step (``cliplab.optimization.warmup_cosine``): linear warm-up, then cosine to
    ``min_lr_ratio`` (or constant)."""
    sched = config.schedule
    return schedule(sched.warmup_steps, config.steps, min_ratio=sched.min_lr_ratio, constant=sched.name == "constant")


def build_optimization(config: TrainConfig, module: nn.Module, device: torch.device) -> tuple[list, Any, Any, Any]:
    """``(trainable parameters, AdamW, LambdaLR, GradScaler or None)`` (``cliplab.optimization``).

    Weight decay on weight matrices only (not the logit scale/bias, biases, norms, embeddings); a gradient
    scaler for fp16 autocast.
    """
    opt, sched = config.optimizer, config.schedule
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(
        param_groups(module, opt.weight_decay),
        lr=opt.lr,
        betas=opt.betas,
        eps=opt.eps,
        warmup=sched.warmup_steps,
        total=config.steps,
        min_ratio=sched.min_lr_ratio,
        constant=sched.name == "constant",
    )
    return params, optimizer, scheduler, grad_scaler(config.precision, device)


def build_clipper(config: TrainConfig) -> Any:
    """The ``ZClip`` / ``AutoClip`` object ``grad_clip`` asks for, or None."""
    opts = config.grad_clip
    if opts.mode not in ("zclip", "autoclip"):
        if opts.options:
            raise ValueError(f"grad_clip.options are only for zclip/autoclip, not {opts.mode!r}")
        return None
    from cliplab.train.clipping import AutoClip, ZClip

    cls = ZClip if opts.mode == "zclip" else AutoClip
    try:
        return cls(**opts.options)
    except TypeError as err:
        raise ValueError(f"grad_clip.options: {err}") from err


# -- towers -------------------------------------------------------------------------------------------


def _probe_image(model: Model) -> torch.Tensor:
    size = model.preprocess.output_size or (224, 224)
    return model.preprocess.batch([Image.new("RGB", (int(size[1]), int(size[0])))])


def tower_parameters(model: Model) -> tuple[set[int], set[int]]:
    """Ids of the parameters each tower's embeddings depend on, found by one tiny forward (no name rules)."""
    module = model.module
    params = [p for p in module.parameters()]
    was_training = module.training
    module.eval()
    found = []
    try:
        with torch.enable_grad():
            param_dtype = params[0].dtype
            img = model.image_embeddings(_probe_image(model).to(model.device, param_dtype))
            txt = model.text_embeddings({k: v.to(model.device) for k, v in model.tokenize(["a"]).items()})
            for out in (img, txt):
                need = [p for p in params if p.requires_grad]
                grads = torch.autograd.grad(out.sum(), need, allow_unused=True, retain_graph=True)
                found.append({id(p) for p, g in zip(need, grads) if g is not None})
    finally:
        module.train(was_training)
    return found[0], found[1]


def tower_modules(module: nn.Module, param_ids: set[int]) -> list[nn.Module]:
    """The largest sub-modules all of whose parameters are in ``param_ids`` (the tower's modules)."""
    out: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            own = [id(p) for p in child.parameters()]
            if own and all(i in param_ids for i in own):
                out.append(child)
            elif own:
                visit(child)

    visit(module)
    return out


@dataclass
class TowerLock:
    """A locked tower (LiT): its parameters frozen and its modules kept in eval mode."""

    name: str
    modules: list[nn.Module]
    n_params: int

    def apply_eval(self) -> None:
        for m in self.modules:
            m.eval()


def lock_tower(model: Model, which: str) -> TowerLock:
    """Freeze the ``"image"`` or ``"text"`` tower: ``requires_grad=False`` and eval mode (call
    ``apply_eval`` again after every ``module.train()``)."""
    image_ids, text_ids = tower_parameters(model)
    ids = (image_ids - text_ids) if which == "image" else (text_ids - image_ids)
    if not ids:
        raise ValueError(f"cannot lock the {which} tower: no parameters found that only it uses")
    n = 0
    for p in model.module.parameters():
        if id(p) in ids:
            p.requires_grad_(False)
            n += p.numel()
    lock = TowerLock(which, tower_modules(model.module, ids), n)
    lock.apply_eval()
    return lock


# -- distributed ----------------------------------------------------------------------------------------


@dataclass
class DistEnv:
    """This process's place in a ``torchrun`` job (``world_size`` 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` without per-forward buffer broadcasts (the buffers never change)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    params = inspect.signature(DDP.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    sync: dict[str, Any] = {key: False}
    return DDP(module, device_ids=ids, **sync)


def init_distributed(device: str | None) -> tuple[DistEnv, torch.device]:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if world <= 1 or "RANK" not in os.environ:
        return DistEnv(), torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}") if want_cuda else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, owns), dev


__all__ = [
    "DistEnv",
    "MAX_LOG_SCALE",
    "TowerLock",
    "TwoTower",
    "build_clipper",
    "build_model",
    "build_optimization",
    "clamp_logit_scale",
    "init_distributed",
    "lock_tower",
    "logit_bias_param",
    "logit_scale_param",
    "lr_lambda",
    "prepare_logit_params",
    "tower_parameters",
    "seed_everything",
    "tower_modules",
    "wrap_ddp",
]
