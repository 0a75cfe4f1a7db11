"""Create new (untrained) Hugging Face CLIP models with a small config and a word-level tokenizer.

Models cliplab trains from scratch are plain ``transformers`` ``CLIPModel``s: ``Model.save`` writes a
directory that ``transformers`` and ``cliplab.load_model`` both load. The tokenizer is a word-level
``tokenizers`` model built from the training vocabulary and saved as ``tokenizer.json``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from cliplab.imaging.preprocess import Preprocess
from cliplab.models.hf import HFModel

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@dataclass
class ModelConfig:
    """A small CLIP (ViT image tower, causal text transformer), open_clip-style dataclass config."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    context_length: int = 16
    embed_dim: int = 128
    mlp_ratio: float = 4.0
    geometry: str = "cosine"
    logit_scale_init: float = math.log(1 / 0.07)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("vision", "text"):
            width, heads = getattr(self, f"{name}_width"), getattr(self, f"{name}_heads")
            if width % heads:
                raise ValueError(f"{name}_width {width} is not divisible by {name}_heads {heads}")
        if self.geometry not in ("cosine", "euclidean"):
            raise ValueError(f"unknown geometry {self.geometry!r}; expected 'cosine' or 'euclidean'")


def words(text: str) -> list[str]:
    """The word-level pre-tokenisation used by built tokenizers: lower-case words and punctuation."""
    return _WORD.findall(text.lower())


def build_tokenizer(corpus: Iterable[str], *, context_length: int = 16, min_count: int = 1):
    """A word-level ``PreTrainedTokenizerFast`` over the words of ``corpus`` (texts or single words).

    Lower-cases, splits words and punctuation, wraps each text in ``<bos> … <eos>``, pads with ``<pad>``
    (id 0) and maps unseen words to ``<unk>``.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts: dict[str, int] = {}
    for text in corpus:
        for w in words(text):
            counts[w] = counts.get(w, 0) + 1
    vocab_words = sorted(w for w, c in counts.items() if c >= min_count)
    if not vocab_words:
        raise ValueError("cannot build a tokenizer from an empty corpus")
    specials = [PAD, UNK, BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(specials + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^a-z0-9]"), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=context_length,
    )


def create_model(config: ModelConfig, tokenizer, *, spec: str = "<new>", seed: int | None = 0) -> HFModel:
    """A freshly initialised ``CLIPModel`` for ``config`` with ``tokenizer``, wrapped as ``HFModel``."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    if seed is not None:
        torch.manual_seed(seed)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.text_width,
        "intermediate_size": int(config.text_width * config.mlp_ratio),
        "num_hidden_layers": config.text_layers,
        "num_attention_heads": config.text_heads,
        "max_position_embeddings": config.context_length,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "hidden_act": "gelu",
    }
    vision = {
        "hidden_size": config.vision_width,
        "intermediate_size": int(config.vision_width * config.mlp_ratio),
        "num_hidden_layers": config.vision_layers,
        "num_attention_heads": config.vision_heads,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "hidden_act": "gelu",
    }
    hf_config = CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=config.embed_dim,
        logit_scale_init_value=config.logit_scale_init,
    )
    hf_config.cliplab = {"geometry": config.geometry, "model_config": asdict(config)}
    module = CLIPModel(hf_config)
    preprocess = Preprocess(
        resize=config.image_size,
        crop=(config.image_size, config.image_size),
        mean=tuple(config.mean),
        std=tuple(config.std),
    )
    return HFModel(module, tokenizer, preprocess, spec=spec, geometry=config.geometry)
