"""Direct-effect decomposition of a ViT image embedding (Gandelsman, Efros & Steinhardt, ICLR 2024,
"Interpreting CLIP's Image Representation via Text-Based Decomposition"; reference code:
yossigandelsman/clip_text_span, ``prs_hook.py``).

The class token leaving the last block is a sum of what was written into it::

    r = z⁰ + Σ_l A^l + Σ_l M^l,     A^l = Σ_h Σ_t a^{l,h}_{cls,t} · v^{l,h}_t W_O^{l,h} + b_O^l

(``z⁰`` the embedded class token after the pre-norm, ``A^l`` the attention output at the class position,
``M^l`` the MLP output there; layer scale multiplies both). With the final norm's statistics of the *full*
residual, ``μ = mean(r)`` and ``σ = sqrt(var(r) + ε)`` held fixed, ``LN(r) = γ ⊙ (r − μ)/σ + β`` is affine in
``r``, so the embedding ``e = LN(r) @ P`` is the sum of the parts ``c(p) = (γ ⊙ C(p)/σ) @ P`` and a bias term
``β @ P`` (plus the projection's bias, if any). The centring ``C`` is

- ``"linear"`` (default): each part minus its own mean over channels — the centring matrix applied to each
  part, so a part's contribution does not depend on the other parts (only on ``σ``);
- ``"reference"``: as ``prs_hook.py`` does: each part minus ``μ·s`` and plus ``β·s``, where ``s`` is the part's
  share: ``1/(2L+1)`` for the embedding, each attention layer and each MLP, split evenly over heads and tokens
  (``1/((2L+1)·H·T)`` per head and token); the bias term is then only the projection's bias.

Both sum exactly to the model's pooled embedding (before L2 normalisation); they differ on single parts by a
constant vector per part. ``b_O`` is split evenly over heads and tokens in both, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from cliplab.towers.internals import _eval, _scaled, pixels_for, run_block
from cliplab.towers.vit import UnsupportedTowerError, ViTTower, vit_tower

CENTERINGS = ("linear", "reference")


@dataclass
class Decomposition:
    """The direct contributions to ``B`` image embeddings, each already in the joint space (last dim ``E``).

    ``total()`` = ``embedding + Σ_l attention[:, l] + Σ_l mlp[:, l] + bias`` equals the model's own image
    embedding before normalisation. ``heads[:, l].sum(1) == attention[:, l]`` and, for ``layers[k]``,
    ``tokens[:, k].sum((1, 2)) == attention[:, layers[k]]``.
    """

    #: ``[B, E]``: the embedded class token (after the pre-norm)
    embedding: torch.Tensor
    #: ``[B, L, E]``: each layer's attention output at the class token
    attention: torch.Tensor
    #: ``[B, L, E]``: each layer's MLP output at the class token
    mlp: torch.Tensor
    #: ``[B, L, H, E]``: per head (summed over tokens), every layer
    heads: torch.Tensor
    #: ``[B, K, T, H, E]``: per image token (class token first) and head, for the layers in ``layers``
    tokens: torch.Tensor
    layers: tuple[int, ...]
    #: ``[B, E]``: the final norm's bias through the projection (and the projection's bias)
    bias: torch.Tensor
    grid: tuple[int, int]
    centering: str = "linear"
    n_prefix: int = 1

    def total(self) -> torch.Tensor:
        """The sum of the parts ``[B, E]`` (the model's image embedding before normalisation)."""
        return self.embedding + self.attention.sum(1) + self.mlp.sum(1) + self.bias

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Decomposition:
        """Apply a map on the last dimension (linear, for the sum to carry over) to every part."""
        return replace(
            self,
            embedding=fn(self.embedding),
            attention=fn(self.attention),
            mlp=fn(self.mlp),
            heads=fn(self.heads),
            tokens=fn(self.tokens),
            bias=fn(self.bias),
        )

    def _per_image(self, scale: torch.Tensor) -> Decomposition:
        def fn(x: torch.Tensor) -> torch.Tensor:
            return x * scale.view(-1, *([1] * (x.ndim - 1)))

        return self.map(fn)

    def dot(self, text_features: torch.Tensor) -> Decomposition:
        """Each part's dot product with each text ``[M, E]``: the last dim becomes ``M`` and ``total()`` is
        ``features @ text_features.T``."""
        t = torch.as_tensor(text_features, dtype=self.embedding.dtype, device=self.embedding.device)
        if t.ndim != 2 or t.shape[1] != self.embedding.shape[-1]:
            raise ValueError(f"text features must be [M, {self.embedding.shape[-1]}], got {tuple(t.shape)}")
        return self.map(lambda x: x @ t.T)

    def normalized(self) -> Decomposition:
        """Every part divided by its image's embedding norm, so ``total()`` is the L2-normalised feature (as the
        reference reports contributions)."""
        return self._per_image(1.0 / self.total().norm(dim=-1).clamp_min(1e-12))

    def logit_contributions(self, model: Any, text_features: torch.Tensor) -> Decomposition:
        """Contributions to the model's logits ``s·cos(f, t) + b`` ``[..., M]``: each part's ``s·(p·t)/‖f‖``, the
        logit bias added to the ``bias`` part, so ``total()`` equals ``model.logits(features, text_features)``."""
        if getattr(model, "geometry", "cosine") != "cosine":
            raise ValueError(f"model {model.spec!r}: logit contributions need the cosine geometry (its logits are "
                             "distances, not sums of dot products)")  # fmt: skip
        out = self.normalized().dot(text_features)._per_image(torch.full((len(self.bias),), model.logit_scale))
        if model.logit_bias is not None:
            out.bias = out.bias + model.logit_bias
        return out

    def token_map(self, text_features: torch.Tensor | None = None, layers: Iterable[int] | None = None) -> torch.Tensor:
        """Spatial map of the patch tokens' direct contributions over ``layers`` (default: all in ``layers``):
        ``[B, M, gh, gw]`` dot products with ``text_features`` ``[M, E]``, or ``[B, gh, gw, E]`` without texts.
        The class token's own term is left out."""
        chosen = self.layers if layers is None else tuple(layers)
        missing = [layer for layer in chosen if layer not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} have no per-token contributions; decompose with layers={missing}")
        idx = [self.layers.index(layer) for layer in chosen]
        per_token = self.tokens[:, idx, self.n_prefix :].sum(dim=(1, 3))  # [B, N, E]
        gh, gw = self.grid
        if text_features is None:
            return per_token.reshape(len(per_token), gh, gw, -1)
        scores = per_token @ torch.as_tensor(text_features, dtype=per_token.dtype).T  # [B, N, M]
        return scores.permute(0, 2, 1).reshape(len(scores), -1, gh, gw)

    def mean_ablated(
        self,
        *,
        attention: Iterable[int] = (),
        mlp: Iterable[int] = (),
        heads: Iterable[tuple[int, int]] = (),
        embedding: bool = False,
        reference: Decomposition | None = None,
    ) -> torch.Tensor:
        """``total()`` with the chosen parts replaced by their mean over ``reference`` (a decomposition of a
        dataset; default: this one), as the paper's mean-ablation: ``e' = e − p + E_data[p]``. ``[B, E]``."""
        ref = self if reference is None else reference
        n_layers = self.attention.shape[1]

        def norm_layers(values: Iterable[int], what: str) -> list[int]:
            out = []
            for v in values:
                if not -n_layers <= int(v) < n_layers:
                    raise ValueError(f"{what} layer {v} out of range (the tower has {n_layers} layers)")
                out.append(int(v) % n_layers)
            return sorted(set(out))

        att_layers = norm_layers(attention, "attention")
        out = self.total().clone()
        for layer in att_layers:
            out += ref.attention[:, layer].mean(0) - self.attention[:, layer]
        for layer in norm_layers(mlp, "mlp"):
            out += ref.mlp[:, layer].mean(0) - self.mlp[:, layer]
        n_heads = self.heads.shape[2]
        for layer, head in heads:
            (layer,) = norm_layers([layer], "head")
            if layer in att_layers:
                raise ValueError(f"head ({layer}, {head}) is in an attention layer already ablated")
            if not 0 <= head < n_heads:
                raise ValueError(f"head {head} out of range (each layer has {n_heads} heads)")
            out += ref.heads[:, layer, head].mean(0) - self.heads[:, layer, head]
        if embedding:
            out += ref.embedding.mean(0) - self.embedding
        return out


def _to_joint(
    tower: ViTTower, sigma: torch.Tensor, mu: torch.Tensor, centering: str
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``p, share ↦ (γ ⊙ C(p)/σ [+ β·share]) @ P`` with the full residual's ``μ``, ``σ`` (see the module doc)."""
    ln = tower.ln_post
    gamma = sigma.new_ones(()) if ln.weight is None else ln.weight
    beta = None if ln.bias is None else ln.bias

    def fn(p: torch.Tensor, share: float) -> torch.Tensor:
        shape = (-1, *([1] * (p.ndim - 1)))
        if centering == "linear":
            y = (p - p.mean(-1, keepdim=True)) * gamma / sigma.view(shape)
        else:
            y = (p - mu.view(shape) * share) * gamma / sigma.view(shape)
            if beta is not None:
                y = y + beta * share
        return y @ tower.proj if tower.proj is not None else y

    return fn


def _decompose_batch(tower: ViTTower, pixels: torch.Tensor, layers: Sequence[int], centering: str) -> Decomposition:
    x = tower.embed(pixels)
    n_layers = tower.layers
    emb = x[:, 0]
    attn, mlp, heads, tokens = [], [], [], []
    for i, block in enumerate(tower.blocks):
        x, step = run_block(block, x)
        att = step.attended
        h = block.attention.heads
        width = block.attention.out_weight.shape[0]
        w_o = block.attention.out_weight.reshape(width, h, -1).permute(1, 2, 0)  # [H, dh, D]
        b_o = block.attention.out_bias
        cls_w, v = att.weights[:, :, 0], att.v  # [B, H, T], [B, H, T, dh]
        n_tokens = cls_w.shape[-1]
        per_head = torch.einsum("bhc,hcd->bhd", torch.einsum("bht,bhtc->bhc", cls_w, v), w_o)
        if b_o is not None:
            per_head = per_head + b_o / h
        heads.append(_scaled(per_head, block.ls1))
        if i in layers:
            per_token = torch.einsum("bht,bhtc,hcd->bthd", cls_w, v, w_o)
            if b_o is not None:
                per_token = per_token + b_o / (h * n_tokens)
            tokens.append(_scaled(per_token, block.ls1))
        attn.append(step.attention[:, 0])
        mlp.append(step.mlp[:, 0])
    final = x[:, 0]
    mu = final.mean(-1)
    sigma = torch.sqrt(final.var(-1, unbiased=False) + tower.ln_post.eps)
    joint = _to_joint(tower, sigma, mu, centering)
    n_parts = 2 * n_layers + 1
    n_heads = tower.blocks[0].attention.heads
    n_tokens = x.shape[1]
    e_dim = tower.proj.shape[1] if tower.proj is not None else x.shape[-1]
    bias = torch.zeros(len(x), e_dim, dtype=x.dtype, device=x.device)
    if centering == "linear" and tower.ln_post.bias is not None:
        bias = bias + (tower.ln_post.bias @ tower.proj if tower.proj is not None else tower.ln_post.bias)
    if tower.proj_bias is not None:
        bias = bias + tower.proj_bias
    token_part = (
        joint(torch.stack(tokens, 1), 1 / (n_parts * n_heads * n_tokens))
        if tokens
        else x.new_zeros(len(x), 0, n_tokens, n_heads, e_dim)
    )
    return Decomposition(
        embedding=joint(emb, 1 / n_parts),
        attention=joint(torch.stack(attn, 1), 1 / n_parts),
        mlp=joint(torch.stack(mlp, 1), 1 / n_parts),
        heads=joint(torch.stack(heads, 1), 1 / (n_parts * n_heads)),
        tokens=token_part,
        layers=tuple(layers),
        bias=bias,
        grid=tower.grid,
        centering=centering,
        n_prefix=tower.n_prefix,
    )


def decompose(
    model: Any,
    images: Sequence[Any] | torch.Tensor,
    layers: Iterable[int] | None = None,
    *,
    centering: str = "linear",
    batch_size: int = 64,
    progress: bool = False,
) -> Decomposition:
    """The direct-effect decomposition of ``model``'s image embeddings of ``images`` (fp32).

    ``images``: PIL images or paths (through ``model.preprocess``) or a pixel tensor at the model's resolution.
    ``layers``: the layers whose per-token, per-head contributions are kept (``[B, K, T, H, E]`` floats each;
    default all, ``()`` none); per-layer and per-head totals are always kept. See the module doc for the formula.
    ``progress`` shows a bar over the batches.
    """
    if centering not in CENTERINGS:
        raise ValueError(f"unknown centering {centering!r}; expected one of {CENTERINGS}")
    tower = vit_tower(model)
    if tower.pooling != "class-token":
        raise UnsupportedTowerError(
            f"model {tower.spec!r}: the direct-effect decomposition needs a class-token tower; this one pools "
            "with an attention-pooling head (SigLIP), which is not linear in the residual stream"
        )
    n_layers = tower.layers
    chosen = list(range(n_layers)) if layers is None else list(layers)
    for layer in chosen:
        if not -n_layers <= int(layer) < n_layers:
            raise ValueError(f"layer {layer} out of range: model {tower.spec!r} has {n_layers} layers")
    chosen = sorted({int(layer) % n_layers for layer in chosen})
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    pixels = pixels_for(model, images, tower)
    module, was = _eval(model)
    try:
        with torch.no_grad():
            starts = range(0, len(pixels), batch_size)
            parts = [
                _decompose_batch(tower, pixels[i : i + batch_size], chosen, centering)
                for i in tqdm(starts, disable=not progress, desc="decompose", unit="batch")
            ]
    finally:
        module.train(was)
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in parts])

    return replace(
        parts[0],
        embedding=cat("embedding"),
        attention=cat("attention"),
        mlp=cat("mlp"),
        heads=cat("heads"),
        tokens=cat("tokens"),
        bias=cat("bias"),
    )
