"""The text-tower adapter layer of prompt learning: class prompts whose context tokens are learned vectors.

A prompt is ``[prefix specials] ctx₁ … ctx_M  <class name> . [suffix specials]`` (class token at the
``end``; ``front``: the name first, ``middle``: half of the context on each side). The prompts are tokenised
by the model's own tokenizer, so the end-of-text position, the attention mask and padding are the model's;
a forward hook on the text tower's token-embedding module (``Model.token_embeddings()``) then replaces the
embeddings at the context positions with the learned vectors, and the tower runs unchanged (HF CLIP:
token + position embeddings → causal encoder → final LN → EOS pooling → projection; open_clip: the same
through its own modules). No model code is forked and the model's weights are never written.

CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022) initialises the context from
a phrase (``ctx_init="a photo of a"``: its token embeddings) or randomly (N(0, 0.02²)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cliplab.models.base import Model

POSITIONS = ("end", "middle", "front")
#: the word CoOp fills context slots with before their embeddings are replaced
PLACEHOLDER = "X"


def require_token_embeddings(model: Model, method: str) -> nn.Embedding:
    """The model's token-embedding module, or a ``ValueError`` naming what the model lacks."""
    if not isinstance(model, Model):
        raise TypeError(f"{method} needs a cliplab Model (from cliplab.load_model), got {type(model).__name__}")
    if not model.has_token_embeddings:
        raise ValueError(
            f"{method} needs a text tower that takes embedding inputs, but {type(model).__name__} "
            f"({model.spec}) does not expose its token embeddings (Model.has_token_embeddings is False; "
            "Model.token_embeddings() must return the nn.Embedding the text tower reads)"
        )
    emb = model.token_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ValueError(
            f"{method} needs the text tower's token embeddings as an nn.Embedding, got {type(emb).__name__}"
        )
    return emb


def context_length(model: Model) -> int:
    """How many tokens the text tower holds (tokenizer limit, position-embedding table, open_clip's attribute)."""
    limits = [getattr(model, "max_length", None), getattr(model.module, "context_length", None)]
    text_model = getattr(model.module, "text_model", None)
    pos = getattr(getattr(text_model, "embeddings", None), "position_embedding", None)
    if isinstance(pos, nn.Embedding):
        limits.append(pos.num_embeddings)
    pe = getattr(model.module, "positional_embedding", None)
    if isinstance(pe, torch.Tensor):
        limits.append(pe.shape[0])
    ints = [int(v) for v in limits if isinstance(v, int) and v > 0]
    if not ints:
        raise ValueError(f"cannot tell the context length of {type(model).__name__}'s text tower")
    return min(ints)


class _Tokens:
    """The model's tokenizer seen as content tokens between fixed special-token prefix and suffix."""

    def __init__(self, model: Model):
        self.model = model
        empty, one = self._ids(""), self._ids(PLACEHOLDER)
        p = 0
        while p < min(len(empty), len(one)) and empty[p] == one[p]:
            p += 1
        self.prefix, self.suffix = p, len(empty) - p

    def _ids(self, text: str) -> list[int]:
        tok = self.model.tokenize([text])
        ids = tok["input_ids"][0]
        if "attention_mask" in tok:
            return ids[: int(tok["attention_mask"][0].sum())].tolist()
        nz = torch.nonzero(ids).flatten()
        return ids[: int(nz[-1]) + 1].tolist() if len(nz) else []

    def content(self, text: str) -> list[int]:
        ids = self._ids(text)
        return ids[self.prefix : len(ids) - self.suffix]


@dataclass
class PromptLayout:
    """Tokenised class prompts and where their context slots are: ``input_ids``/``attention_mask`` ``[C, L]``,
    ``slots`` ``[C, M]`` (token positions of the M context vectors), ``init_ids`` ``[M]`` (ids the context
    starts from, or None for a random start)."""

    tokens: dict[str, torch.Tensor]
    slots: torch.Tensor
    init_ids: torch.Tensor | None
    prompts: list[str]


def build_layout(
    model: Model,
    classnames: Sequence[str],
    *,
    n_ctx: int | None,
    ctx_init: str | None = None,
    position: str = "end",
    method: str = "prompt learning",
) -> PromptLayout:
    """Tokenise the class prompts and locate the ``n_ctx`` context slots in each.

    With ``ctx_init`` the prompt text is ``"<ctx_init> <name>."`` and the first ``n_ctx`` tokens of
    ``ctx_init`` are the slots (``n_ctx=None``: all of them); otherwise ``n_ctx`` placeholders.
    """
    if position not in POSITIONS:
        raise ValueError(f"class_token_position must be one of {POSITIONS}, got {position!r}")
    if not classnames:
        raise ValueError(f"{method} needs at least one class name")
    tok = _Tokens(model)
    if ctx_init:
        if position != "end":
            raise ValueError("ctx_init is supported with class_token_position='end' (as in CoOp)")
        init_ids = tok.content(ctx_init)
        n_ctx = len(init_ids) if n_ctx is None else n_ctx
        if n_ctx > len(init_ids):
            raise ValueError(f"n_ctx={n_ctx} but ctx_init {ctx_init!r} has only {len(init_ids)} tokens")
        ctx_words = [ctx_init]
    else:
        if n_ctx is None:
            raise ValueError(f"{method}: give n_ctx (the number of context tokens) or ctx_init")
        one = tok.content(PLACEHOLDER)
        if len(one) != 1:
            raise ValueError(f"the tokenizer splits the placeholder {PLACEHOLDER!r} into {len(one)} tokens")
        init_ids = one * n_ctx
        half = n_ctx // 2
        ctx_words = [" ".join([PLACEHOLDER] * k) for k in ((n_ctx,) if position != "middle" else (half, n_ctx - half))]
    limit = context_length(model)
    prompts, offsets = [], []
    for name in classnames:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class names must be non-empty strings, got {name!r}")
        n_name = len(tok.content(name))
        n_dot = len(tok.content("."))
        if position == "end" or ctx_init:
            text, starts = f"{ctx_words[0]} {name}.", [0]
            spans = [len(init_ids)]
        elif position == "front":
            text, starts, spans = f"{name} {ctx_words[0]}.", [n_name], [n_ctx]
        else:
            text = " ".join(w for w in (ctx_words[0], name, ctx_words[1]) if w) + "."
            starts, spans = [0, half + n_name], [half, n_ctx - half]
        need = tok.prefix + len(init_ids) + n_name + n_dot + tok.suffix
        if need > limit:
            raise ValueError(
                f"class name {name!r} is too long for {method}: it takes {n_name} tokens, and with "
                f"{len(init_ids)} context tokens the prompt needs {need} but the text tower holds {limit}"
                f" (shorten the class name or use fewer context tokens)"
            )
        pos = [tok.prefix + s + j for s, n in zip(starts, spans) for j in range(n)]
        prompts.append(text)
        offsets.append(pos[:n_ctx])
    tokens = {k: v for k, v in model.tokenize(prompts).items()}
    slots = torch.tensor(offsets, dtype=torch.long).reshape(len(classnames), n_ctx)
    ids = tokens["input_ids"]
    expected = torch.tensor(init_ids[:n_ctx], dtype=ids.dtype)
    if n_ctx and not torch.equal(ids.gather(1, slots), expected.expand(len(classnames), -1)):
        raise ValueError(
            f"{method}: cannot locate the context tokens in the tokenised prompts (the tokenizer merges "
            "tokens across words?)"
        )
    init = torch.tensor(init_ids[:n_ctx], dtype=torch.long) if ctx_init else None
    return PromptLayout(tokens=tokens, slots=slots, init_ids=init, prompts=prompts)


@contextlib.contextmanager
def replaced_embeddings(module: nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, ``module``'s output ``e`` becomes ``replace(e)`` (a forward hook, removed on exit)."""
    handle = module.register_forward_hook(lambda _m, _inp, out: replace(out))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and no ``requires_grad`` on ``module``'s parameters while active; both restored on exit."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def scatter_context(embeddings: torch.Tensor, slots: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """``embeddings [N, L, d]`` with rows ``slots [N, M]`` replaced by ``ctx [N, M, d]`` (differentiable in ctx)."""
    if slots.shape[1] == 0:
        return embeddings
    index = slots.to(embeddings.device)[..., None].expand(-1, -1, embeddings.shape[-1])
    return embeddings.scatter(1, index, ctx.to(embeddings.dtype))


class PromptedText(nn.Module):
    """Learned context vectors and the class prompts they go into; ``forward(ctx_shift)`` → text features.

    ``ctx``: ``[M, d]`` (one context for all classes) or ``[C, M, d]`` (``class_specific``). ``forward()``
    gives ``[C, D]``; ``forward(shift)`` with ``shift [B, d]`` adds a per-image shift to every context vector
    (CoCoOp) and gives ``[B, C, D]``. Features are in the model's geometry (L2-normalised for cosine).
    """

    # plain attributes (set with object.__setattr__ in __init__), not sub-modules
    model: Model
    embedding: nn.Embedding

    def __init__(
        self,
        model: Model,
        classnames: Sequence[str],
        *,
        n_ctx: int | None = 4,
        ctx_init: str | None = None,
        position: str = "end",
        class_specific: bool = False,
        method: str = "prompt learning",
        seed: int = 0,
    ):
        super().__init__()
        emb = require_token_embeddings(model, method)
        # plain attributes, not sub-modules: the prompt's state_dict holds only what it learns
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "embedding", emb)
        self.layout = build_layout(model, classnames, n_ctx=n_ctx, ctx_init=ctx_init, position=position, method=method)
        self.n_classes = len(classnames)
        self.n_ctx = self.layout.slots.shape[1]
        d = emb.embedding_dim
        with torch.no_grad():
            if self.layout.init_ids is not None:
                base = emb.weight[self.layout.init_ids.to(emb.weight.device)].detach().clone().float()
            else:
                gen = torch.Generator().manual_seed(seed)
                base = torch.randn(self.n_ctx, d, generator=gen) * 0.02
        if class_specific:
            base = base[None].repeat(self.n_classes, 1, 1)
        self.ctx = nn.Parameter(base.to(model.device))
        self.class_specific = class_specific

    @property
    def ctx_dim(self) -> int:
        return int(self.embedding.embedding_dim)

    def context(self, shift: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Context per prompt ``[B·C, M, d]`` and B (1 without a shift)."""
        ctx = self.ctx if self.class_specific else self.ctx[None].expand(self.n_classes, -1, -1)
        if shift is None:
            return ctx, 1
        full = ctx[None] + shift[:, None, None, :]
        return full.reshape(-1, *ctx.shape[1:]), shift.shape[0]

    def forward(
        self, shift: torch.Tensor | None = None, *, extra: contextlib.AbstractContextManager | None = None
    ) -> torch.Tensor:
        ctx, b = self.context(shift)
        dev = self.model.device
        tokens = {k: v.to(dev).repeat(b, 1) for k, v in self.layout.tokens.items()}
        slots = self.layout.slots.repeat(b, 1)
        with replaced_embeddings(self.embedding, lambda e: scatter_context(e, slots, ctx)):
            with extra if extra is not None else contextlib.nullcontext():
                feats = self.model.text_features(tokens)
        return feats if shift is None else feats.reshape(b, self.n_classes, -1)
