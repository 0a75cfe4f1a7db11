"""Memory and speed for big models: gradient checkpointing, ``torch.compile``, FSDP2 sharding.

- ``enable_grad_checkpointing``: the towers' layers keep no activations; the backward pass recomputes them
  (Chen et al. 2016, "Training deep nets with sublinear memory cost"): about one more forward per step for
  activation memory ``O(√L)`` instead of ``O(L)``. Hugging Face models: ``activation_checkpointing_enable``
  (transformers 5; ``gradient_checkpointing_enable`` before), non-reentrant; open_clip models:
  ``set_grad_checkpointing``. Chosen by what the module offers.
- ``compile_module``: ``torch.compile`` of the two-tower forward (inductor; the first steps compile).
- FSDP2 (``torch.distributed.fsdp.fully_shard``, Zhao et al. 2023): every ``nn.ModuleList`` entry (the towers'
  transformer layers) is one unit and the rest one root unit; parameters, gradients and AdamW state are
  sharded over the processes (each keeps ``1/W``), gathered per unit for its forward and backward.
  One-element parameters (logit scale and bias) are left out of the sharding — FSDP2 refuses 0-dim ones —
  and kept replicated, their gradients averaged by ``sync_replicated_grads``. Checkpoints hold the full
  (unsharded) state dicts (``torch.distributed.checkpoint.state_dict`` helpers), so they load with or without
  FSDP and with any number of processes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from cliplab.models.base import Model

log = logging.getLogger(__name__)


def enable_grad_checkpointing(model: Model) -> str:
    """Turn on activation checkpointing in ``model.module``; returns which API did it (``hf``/``open_clip``)."""
    module: Any = model.module
    if hasattr(module, "activation_checkpointing_enable") or hasattr(module, "gradient_checkpointing_enable"):
        if getattr(module, "supports_gradient_checkpointing", True) is False:
            raise ValueError(f"{type(module).__name__} does not support gradient checkpointing")
        if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return "hf"
    if hasattr(module, "set_grad_checkpointing"):
        module.set_grad_checkpointing(True)
        return "open_clip"
    raise ValueError(
        f"grad_checkpointing: {type(module).__name__} offers neither gradient_checkpointing_enable (Hugging Face) "
        "nor set_grad_checkpointing (open_clip)"
    )


def compile_module(module: nn.Module) -> nn.Module:
    """``torch.compile(module)`` (the wrapped module shares the parameters)."""
    return cast(nn.Module, torch.compile(module))


def replicated_params(module: nn.Module) -> list[nn.Parameter]:
    """Parameters FSDP2 leaves unsharded: those with one element (logit scale and bias)."""
    return [p for p in module.parameters() if p.numel() == 1]


def shard_fsdp(wrapper: nn.Module, model: Model) -> tuple[Model | None, list[nn.Parameter]]:
    """Apply FSDP2 to ``wrapper`` (the ``TwoTower`` holding ``model.module``), in place.

    Returns a parameter-less twin of ``model`` (weights on the meta device, rank 0 only; ``full_model``
    fills it for saving) and the replicated parameters. Needs an initialised process group.
    """
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("fsdp: true needs torchrun (an initialised process group)")
    twin = None
    if dist.get_rank() == 0:
        twin = copy.copy(model)
        twin.module = copy.deepcopy(model.module).to("meta")
    replicated = replicated_params(wrapper)
    for m in reversed(list(wrapper.modules())):  # innermost first, as fully_shard needs
        if isinstance(m, nn.ModuleList):
            for layer in m:
                if any(p.requires_grad for p in layer.parameters()):
                    fully_shard(layer, ignored_params=set(replicated))
    fully_shard(wrapper, ignored_params=set(replicated))
    return twin, replicated


def sync_replicated_grads(params: list[nn.Parameter]) -> None:
    """Average the replicated parameters' gradients over the processes (what FSDP does for its own)."""
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(wrapper: nn.Module) -> dict[str, torch.Tensor]:
    """The full model state dict (keys of ``model.module``) on rank 0, CPU; empty elsewhere. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(wrapper, options=_options(cpu_offload=True))
    return {k.removeprefix("inner."): cast(torch.Tensor, v) for k, v in state.items()}


def load_model_state(wrapper: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (keys of ``model.module``) into the sharded ``wrapper`` on every rank."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(wrapper, {f"inner.{k}": v for k, v in state.items()}, options=_options())


def full_optimizer_state(wrapper: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state (keyed by parameter names), on rank 0. Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(wrapper, optimizer, options=_options(cpu_offload=True))


def load_optimizer_state(wrapper: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(wrapper, optimizer, state, options=_options())


def full_model(twin: Model, state: dict[str, torch.Tensor]) -> Model:
    """``twin`` (from ``shard_fsdp``) with the full weights assigned: an ordinary model to save."""
    twin.module.load_state_dict(state, strict=True, assign=True)
    return twin


def grad_norm(params: list[nn.Parameter]) -> float:
    """The global gradient norm over sharded (DTensor) and replicated gradients. Collective under FSDP."""
    from torch.distributed.tensor import DTensor

    local, replicated = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.detach()
        if isinstance(g, DTensor):
            local += g.to_local().double().pow(2).sum().cpu()
        else:
            replicated += g.double().pow(2).sum().cpu()
    dist.all_reduce(local)
    return float((local + replicated).sqrt())


__all__ = [
    "compile_module",
    "enable_grad_checkpointing",
    "full_model",
    "full_model_state",
    "full_optimizer_state",
    "grad_norm",
    "load_model_state",
    "load_optimizer_state",
    "replicated_params",
    "shard_fsdp",
    "sync_replicated_grads",
]
