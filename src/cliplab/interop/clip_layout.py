"""The one-to-one map between open_clip's ViT ``CLIP`` and Hugging Face's ``CLIPModel`` (weights and configs).

Per transformer block (``transformer.resblocks.i`` ↔ ``encoder.layers.i``): ``ln_1``/``ln_2`` ↔
``layer_norm1``/``layer_norm2``; the fused ``attn.in_proj_{weight,bias}`` = ``[q; k; v]`` ↔ ``self_attn.{q,k,v}_proj``;
``attn.out_proj`` ↔ ``self_attn.out_proj``; ``mlp.c_fc``/``mlp.c_proj`` ↔ ``mlp.fc1``/``mlp.fc2``. Image tower:
``conv1`` ↔ ``patch_embedding``, ``class_embedding``, ``positional_embedding`` ↔ ``position_embedding.weight``,
``ln_pre`` ↔ ``pre_layrnorm``, ``ln_post`` ↔ ``post_layernorm``, ``proj`` = ``visual_projection.weight``ᵀ. Text
tower: ``token_embedding``, ``positional_embedding``, ``ln_final`` ↔ ``final_layer_norm``, ``text_projection`` =
``text_projection.weight``ᵀ; ``logit_scale`` (and ``logit_bias``) as they are. QuickGELU ↔ ``hidden_act``
``"quick_gelu"``. Pure functions on state dicts and config dicts: neither library is imported here.
"""

from __future__ import annotations

from typing import Any

import torch

#: open_clip model_cfg keys (vision_cfg / text_cfg) whose non-default values have no Hugging Face CLIP counterpart
_VISION_UNMAPPABLE = {
    "timm_model_name": None,
    "attentional_pool": False,
    "attn_pooler_queries": None,
    "no_ln_pre": False,
    "final_ln_after_pool": False,
    "pool_type": "tok",
    "global_average_pool": False,
    "input_patchnorm": False,
    "ls_init_value": None,
    "pos_embed_type": "learnable",
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_TEXT_UNMAPPABLE = {
    "hf_model_name": None,
    "embed_cls": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "no_causal_mask": False,
    "ls_init_value": None,
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_LAYER = (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
          ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))  # fmt: skip


class UnmappableModel(ValueError):
    """The model has parts with no one-to-one counterpart in the other library (each one is listed)."""

    def __init__(self, what: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{what} cannot be converted one to one: " + "; ".join(problems))


def open_clip_problems(model_cfg: dict[str, Any]) -> list[str]:
    """What in an open_clip ``model_cfg`` has no counterpart in a Hugging Face ``CLIPModel`` (empty: mappable)."""
    problems = []
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    if isinstance(vision.get("layers"), list | tuple):
        problems.append("vision_cfg.layers is a ModifiedResNet (a ResNet image tower), not a ViT")
    for tower, cfg, table in (("vision_cfg", vision, _VISION_UNMAPPABLE), ("text_cfg", text, _TEXT_UNMAPPABLE)):
        for key, default in table.items():
            value = cfg.get(key, default)
            if value is not None and value != default and not (not value and not default):
                problems.append(f"{tower}.{key}={value!r} (only {default!r} maps)")
    if text.get("pad_id", 0) != 0:
        problems.append(f"text_cfg.pad_id={text['pad_id']!r} (only 0 maps)")
    for key in ("custom_text", "multimodal_cfg", "cast_dtype"):
        if model_cfg.get(key):
            problems.append(f"{key}={model_cfg[key]!r} (a custom text tower or a captioning model)")
    mlp = [cfg.get("mlp_ratio", 4.0) for cfg in (vision, text)]
    for tower, cfg, ratio in (("vision_cfg", vision, mlp[0]), ("text_cfg", text, mlp[1])):
        if float(cfg.get("width", 0)) * float(ratio) % 1:
            problems.append(f"{tower}: width·mlp_ratio is not an integer")
    return problems


def hf_problems(config: dict[str, Any]) -> list[str]:
    """What in a Hugging Face CLIP config (``to_dict()``) has no counterpart in open_clip's ``CLIP``."""
    problems = []
    if config.get("model_type") != "clip":
        problems.append(f"model_type={config.get('model_type')!r} (only 'clip' maps)")
        return problems
    text, vision = config["text_config"], config["vision_config"]
    acts = {text.get("hidden_act", "quick_gelu"), vision.get("hidden_act", "quick_gelu")}
    if len(acts) > 1 or not acts <= {"gelu", "quick_gelu"}:
        problems.append(f"hidden_act {sorted(acts)} (open_clip has one activation: gelu or quick_gelu)")
    for tower, cfg in (("text_config", text), ("vision_config", vision)):
        if abs(float(cfg.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
            problems.append(f"{tower}.layer_norm_eps={cfg['layer_norm_eps']} (open_clip uses 1e-5)")
        if cfg["hidden_size"] % cfg["num_attention_heads"]:
            problems.append(f"{tower}: hidden_size not divisible by num_attention_heads")
    if int(vision.get("num_channels", 3)) != 3:
        problems.append(f"vision_config.num_channels={vision['num_channels']} (open_clip takes RGB)")
    if (config.get("cliplab") or {}).get("text_pooling", "model") != "model":
        problems.append("cliplab text_pooling 'mean' (open_clip's CLIP pools at the end-of-text token)")
    eos, vocab = text.get("eos_token_id"), int(text["vocab_size"])
    if eos not in (
        2,
        vocab - 1,
    ):  # 2: the legacy argmax pooling; otherwise the first eos, = argmax when it is the top id
        problems.append(
            f"text_config.eos_token_id={eos} is not the highest token id {vocab - 1} (open_clip pools at the argmax id)"
        )
    return problems


def open_clip_to_hf_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """``CLIPConfig`` keyword arguments for an open_clip ViT ``model_cfg``; raises ``UnmappableModel``."""
    problems = open_clip_problems(model_cfg)
    if problems:
        raise UnmappableModel("this open_clip model", problems)
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    v_width = int(vision.get("width", 768))
    head_width = int(vision.get("head_width", 64))
    t_width = int(text.get("width", 512))
    vocab = int(text.get("vocab_size", 49408))
    return {
        "projection_dim": int(model_cfg["embed_dim"]),
        "logit_scale_init_value": 2.6592,
        "vision_config": {
            "hidden_size": v_width,
            "intermediate_size": int(v_width * float(vision.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(vision.get("layers", 12)),
            "num_attention_heads": v_width // head_width,
            "image_size": _square(vision.get("image_size", 224), "vision_cfg.image_size"),
            "patch_size": _square(vision.get("patch_size", 16), "vision_cfg.patch_size"),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
        },
        "text_config": {
            "vocab_size": vocab,
            "hidden_size": t_width,
            "intermediate_size": int(t_width * float(text.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(text.get("layers", 12)),
            "num_attention_heads": int(text.get("heads", 8)),
            "max_position_embeddings": int(text.get("context_length", 77)),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "bos_token_id": vocab - 2,
            "eos_token_id": vocab - 1,
            "pad_token_id": 0,
        },
    }


def hf_to_open_clip_config(config: dict[str, Any]) -> dict[str, Any]:
    """open_clip ``model_cfg`` for a Hugging Face CLIP config dict; raises ``UnmappableModel``."""
    problems = hf_problems(config)
    if problems:
        raise UnmappableModel("this Hugging Face model", problems)
    text, vision = config["text_config"], config["vision_config"]
    v_width, t_width = int(vision["hidden_size"]), int(text["hidden_size"])
    cfg: dict[str, Any] = {
        "embed_dim": int(config["projection_dim"]),
        "vision_cfg": {
            "image_size": int(vision["image_size"]),
            "layers": int(vision["num_hidden_layers"]),
            "width": v_width,
            "head_width": v_width // int(vision["num_attention_heads"]),
            "mlp_ratio": int(vision["intermediate_size"]) / v_width,
            "patch_size": int(vision["patch_size"]),
        },
        "text_cfg": {
            "context_length": int(text["max_position_embeddings"]),
            "vocab_size": int(text["vocab_size"]),
            "width": t_width,
            "heads": int(text["num_attention_heads"]),
            "layers": int(text["num_hidden_layers"]),
            "mlp_ratio": int(text["intermediate_size"]) / t_width,
        },
    }
    if text.get("hidden_act", "quick_gelu") == "quick_gelu":
        cfg["quick_gelu"] = True
    return cfg


def _square(value: Any, name: str) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise UnmappableModel("this open_clip model", [f"{name}={value!r} is not square (HF CLIP is)"])
        value = value[0]
    return int(value)


def _blocks(prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}.{a}", b) for a, b in _LAYER]


def open_clip_to_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape an open_clip ViT ``CLIP`` state dict into ``CLIPModel``'s (every tensor used once)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return state[key]

    def tower(src: str, dst: str) -> None:
        n = 0
        while f"{src}transformer.resblocks.{n}.ln_1.weight" in state:
            n += 1
        for i in range(n):
            s, d = f"{src}transformer.resblocks.{i}", f"{dst}encoder.layers.{i}"
            for a, b in _LAYER:
                for p in ("weight", "bias"):
                    out[f"{d}.{b}.{p}"] = take(f"{s}.{a}.{p}")
            for p in ("weight", "bias"):
                q, k, v = take(f"{s}.attn.in_proj_{p}").chunk(3, dim=0)
                out[f"{d}.self_attn.q_proj.{p}"], out[f"{d}.self_attn.k_proj.{p}"] = q, k
                out[f"{d}.self_attn.v_proj.{p}"] = v

    v, t = "vision_model.", "text_model."
    out[f"{v}embeddings.patch_embedding.weight"] = take("visual.conv1.weight")
    out[f"{v}embeddings.class_embedding"] = take("visual.class_embedding")
    out[f"{v}embeddings.position_embedding.weight"] = take("visual.positional_embedding")
    for p in ("weight", "bias"):
        out[f"{v}pre_layrnorm.{p}"] = take(f"visual.ln_pre.{p}")
        out[f"{v}post_layernorm.{p}"] = take(f"visual.ln_post.{p}")
        out[f"{t}final_layer_norm.{p}"] = take(f"ln_final.{p}")
    tower("visual.", v)
    out["visual_projection.weight"] = take("visual.proj").T
    out[f"{t}embeddings.token_embedding.weight"] = take("token_embedding.weight")
    out[f"{t}embeddings.position_embedding.weight"] = take("positional_embedding")
    tower("", t)
    out["text_projection.weight"] = take("text_projection").T
    out["logit_scale"] = take("logit_scale").reshape(())
    if "logit_bias" in state:
        out["logit_bias"] = take("logit_bias")
    left = sorted(set(state) - used - {"attn_mask", "visual.attn_mask"})
    if left:
        raise UnmappableModel("this open_clip model", [f"weights with no counterpart: {', '.join(left[:8])}"])
    return {k: x.detach().contiguous() for k, x in out.items()}


def hf_to_open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``open_clip_to_hf_state`` (``position_ids`` buffers are dropped)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return state[key]

    def tower(src: str, dst: str) -> None:
        n = 0
        while f"{src}encoder.layers.{n}.layer_norm1.weight" in state:
            n += 1
        for i in range(n):
            s, d = f"{src}encoder.layers.{i}", f"{dst}transformer.resblocks.{i}"
            for a, b in _LAYER:
                for p in ("weight", "bias"):
                    out[f"{d}.{a}.{p}"] = take(f"{s}.{b}.{p}")
            for p in ("weight", "bias"):
                qkv = [take(f"{s}.self_attn.{x}_proj.{p}") for x in "qkv"]
                out[f"{d}.attn.in_proj_{p}"] = torch.cat(qkv, dim=0)

    v, t = "vision_model.", "text_model."
    out["visual.class_embedding"] = take(f"{v}embeddings.class_embedding")
    out["visual.positional_embedding"] = take(f"{v}embeddings.position_embedding.weight")
    out["visual.proj"] = take("visual_projection.weight").T
    out["visual.conv1.weight"] = take(f"{v}embeddings.patch_embedding.weight")
    for p in ("weight", "bias"):
        out[f"visual.ln_pre.{p}"] = take(f"{v}pre_layrnorm.{p}")
        out[f"visual.ln_post.{p}"] = take(f"{v}post_layernorm.{p}")
    tower(v, "visual.")
    out["positional_embedding"] = take(f"{t}embeddings.position_embedding.weight")
    out["text_projection"] = take("text_projection.weight").T
    tower(t, "")
    out["token_embedding.weight"] = take(f"{t}embeddings.token_embedding.weight")
    for p in ("weight", "bias"):
        out[f"ln_final.{p}"] = take(f"{t}final_layer_norm.{p}")
    out["logit_scale"] = take("logit_scale").reshape(())
    if "logit_bias" in state:
        out["logit_bias"] = take("logit_bias")
    left = sorted(k for k in set(state) - used if not k.endswith("position_ids"))
    if left:
        raise UnmappableModel("this Hugging Face model", [f"weights with no counterpart: {', '.join(left[:8])}"])
    return {k: x.detach().contiguous() for k, x in out.items()}
