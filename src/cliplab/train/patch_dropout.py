"""FLIP patch dropout (Li et al. 2023, "Scaling Language-Image Pre-training via Masking").

While training, each image keeps a random ``1 − p`` share of its patch tokens (the class token, if the
tower has one, is always kept), so the ViT encoder sees a shorter sequence and runs faster. In eval
mode nothing changes.

It works on any image tower laid out like the Hugging Face ViTs (CLIP, SigLIP, …): the model module has
``vision_model.embeddings``, a module with an integer ``num_patches`` whose output is the token sequence
``[B, prefix + P, W]`` (``prefix`` is 1 with a class token, 0 without). The capability is detected from
that structure, never from a model name; anything else raises ``PatchDropoutUnsupported``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn


class PatchDropoutUnsupported(ValueError):
    """The image tower has no patch-embedding stage patch dropout can hook into."""


def find_patch_embeddings(module: nn.Module) -> nn.Module:
    """The ViT embedding module (``vision_model.embeddings`` with ``num_patches``), or raise."""
    vision = getattr(module, "vision_model", None)
    embeddings = getattr(vision, "embeddings", None) if isinstance(vision, nn.Module) else None
    if not isinstance(embeddings, nn.Module):
        raise PatchDropoutUnsupported(
            f"patch_dropout needs a ViT image tower with a token-embedding stage (module.vision_model.embeddings); "
            f"{type(module).__name__} has none (e.g. a ResNet or open_clip tower). Set patch_dropout to 0."
        )
    n = getattr(embeddings, "num_patches", None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PatchDropoutUnsupported(
            f"patch_dropout: {type(embeddings).__name__} has no integer 'num_patches', so patch tokens cannot be "
            "told apart from prefix tokens. Set patch_dropout to 0."
        )
    return embeddings


def keep_count(num_patches: int, prob: float) -> int:
    """Patches kept out of ``num_patches`` at drop probability ``prob`` (at least one, as in open_clip)."""
    return max(1, int(num_patches * (1.0 - prob)))


class PatchDropout:
    """Install FLIP patch dropout on ``module``'s ViT image tower (a forward hook on its embeddings).

    Args:
        module: the model's ``nn.Module`` (e.g. ``model.module`` of an ``HFModel``).
        prob: fraction of patch tokens dropped per image while training, in ``[0, 1)``.

    The kept patches are drawn with ``torch.rand`` on the tokens' device (the global generator), so
    restoring the RNG state replays the same choice. ``remove()`` uninstalls the hook.
    """

    def __init__(self, module: nn.Module, prob: float):
        if not 0.0 <= float(prob) < 1.0:
            raise ValueError(f"patch dropout probability must be in [0, 1), got {prob}")
        self.prob = float(prob)
        self.embeddings = find_patch_embeddings(module)
        self.num_patches = int(cast(Any, self.embeddings).num_patches)
        self._handle = self.embeddings.register_forward_hook(self._hook)

    def _hook(self, mod: nn.Module, args: Any, output: Any) -> Any:
        if not mod.training or self.prob == 0.0:
            return None
        if not isinstance(output, torch.Tensor) or output.ndim != 3:
            raise PatchDropoutUnsupported(
                f"patch_dropout: {type(mod).__name__} returned {type(output).__name__}"
                f"{tuple(output.shape) if isinstance(output, torch.Tensor) else ''}, not a token tensor [B, N, W]"
            )
        batch, seq, width = output.shape
        prefix = seq - self.num_patches
        if prefix not in (0, 1):
            raise PatchDropoutUnsupported(
                f"patch_dropout: {type(mod).__name__} returned {seq} tokens for {self.num_patches} patches "
                "(expected the patches plus at most one class token; is the input at the trained resolution?)"
            )
        keep = keep_count(self.num_patches, self.prob)
        scores = torch.rand(batch, self.num_patches, device=output.device)
        kept = scores.topk(keep, dim=1).indices
        patches = output[:, prefix:].gather(1, kept.unsqueeze(-1).expand(-1, -1, width))
        return torch.cat([output[:, :prefix], patches], dim=1) if prefix else patches

    def remove(self) -> None:
        """Uninstall the hook (the tower behaves as before)."""
        self._handle.remove()

    def __repr__(self) -> str:
        return f"PatchDropout(prob={self.prob}, num_patches={self.num_patches})"


__all__ = ["PatchDropout", "PatchDropoutUnsupported", "find_patch_embeddings", "keep_count"]
