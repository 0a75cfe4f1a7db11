"""The towers' internals (``cliplab.towers``) and the direct-effect decomposition (``cliplab.explain.decompose``).

The re-implemented forward is checked against the model's own outputs (pooled features, Hugging Face's hidden
states and attention weights); the decomposition's parts against an independent re-computation through forward
hooks on the real modules, with the final layer norm linearised as ``clip_text_span/prs_hook.py`` does.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import cliplab
from cliplab.explain import Decomposition, decompose
from cliplab.models.factory import ModelConfig, build_tokenizer, create_model
from cliplab.towers import UnsupportedTowerError, patch_features, trace, vit_tower
from cliplab.towers.internals import run_tower
from helpers import make_tiny_model

WORDS = ["a photo of a red blue green circle square star thing"]


@pytest.fixture(scope="module")
def shapes_model():
    return cliplab.load_model("builtin:shapes", device="cpu")


@pytest.fixture(scope="module")
def deep_model():
    """A random tiny CLIPModel with 3 layers, 4 heads and a projection narrower than the width."""
    cfg = ModelConfig(image_size=24, patch_size=8, vision_width=32, vision_layers=3, vision_heads=4, text_width=32,
                      text_layers=1, text_heads=2, context_length=12, embed_dim=12)  # fmt: skip
    model = create_model(cfg, build_tokenizer(WORDS, context_length=12), seed=3)
    with torch.no_grad():  # non-trivial norms and biases (initialised to 1 and 0), so every term is exercised
        for name, p in model.module.vision_model.named_parameters():
            if "layernorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def pixels(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *vit_tower(model).image_size, generator=g)


def rel_err(a, b):
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.mark.parametrize("which", ["shapes", "tiny", "deep"])
def test_reimplemented_forward_equals_the_models_features(which, shapes_model, deep_model):
    model = {"shapes": shapes_model, "tiny": make_tiny_model(), "deep": deep_model}[which]
    px = pixels(model)
    t = trace(model, px)
    own = model.encode_images(px, precision="fp32")
    assert torch.allclose(model.normalize(t.pooled), own, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(t.pooled, model.image_embeddings(px), atol=1e-5)


def test_trace_matches_hf_hidden_states_and_attention(deep_model):
    px = pixels(deep_model)
    vm = deep_model.module.vision_model
    deep_model.module.set_attn_implementation("eager")
    with torch.no_grad():
        ref = vm(pixel_values=px, output_attentions=True, output_hidden_states=True)
    t = trace(deep_model, px)
    tower = t.tower
    assert tower.kind == "hf-clip" and tower.n_prefix == 1 and t.grid == (3, 3)
    assert len(t.residual) == len(ref.hidden_states) == 4
    for ours, theirs in zip(t.residual, ref.hidden_states, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)
    att = t.last_attention
    assert att.weights.shape == (3, 4, 10, 10) and torch.allclose(att.weights, ref.attentions[-1], atol=1e-6)
    v = vm.encoder.layers[-1].self_attn.v_proj(vm.encoder.layers[-1].layer_norm1(ref.hidden_states[-2]))
    assert torch.allclose(att.v, v.view(3, 10, 4, 8).transpose(1, 2), atol=1e-5)
    assert t.patch_tokens().shape == (3, 9, 32)
    # patch tokens in the joint space, as the model projects its pooled token
    feats = patch_features(deep_model, px)
    expected = deep_model.module.visual_projection(vm.post_layernorm(ref.last_hidden_state[:, 1:]))
    assert feats.shape == (3, 9, 12) and torch.allclose(feats, expected, atol=1e-5)


def _reference_parts(model, px):
    """Embedding, attention and MLP outputs at the class token captured with forward hooks on the real modules,
    and the final norm's input statistics."""
    vm = model.module.vision_model
    got: dict[str, list] = {"emb": [], "attn": [], "mlp": [], "final": []}
    hooks = [vm.pre_layrnorm.register_forward_hook(lambda m, i, o: got["emb"].append(o[:, 0]))]
    for layer in vm.encoder.layers:
        hooks.append(layer.self_attn.register_forward_hook(lambda m, i, o: got["attn"].append(o[0][:, 0])))
        hooks.append(layer.mlp.register_forward_hook(lambda m, i, o: got["mlp"].append(o[:, 0])))
    hooks.append(vm.post_layernorm.register_forward_pre_hook(lambda m, i: got["final"].append(i[0])))
    try:
        with torch.no_grad():
            model.image_embeddings(px)
    finally:
        for h in hooks:
            h.remove()
    final = got["final"][0]
    return got, final.mean(-1), torch.sqrt(final.var(-1, unbiased=False) + vm.post_layernorm.eps)


@pytest.mark.parametrize("centering", ["linear", "reference"])
def test_parts_match_an_independent_recomputation(deep_model, centering):
    px = pixels(deep_model)
    d = decompose(deep_model, px, centering=centering)
    got, mu, sigma = _reference_parts(deep_model, px)
    ln = deep_model.module.vision_model.post_layernorm
    proj = deep_model.module.visual_projection.weight.T
    n = 2 * 3 + 1

    def joint(p):
        if centering == "linear":
            return (ln.weight * (p - p.mean(-1, keepdim=True)) / sigma[:, None]) @ proj
        return (ln.weight * (p - mu[:, None] / n) / sigma[:, None] + ln.bias / n) @ proj

    with torch.no_grad():
        assert torch.allclose(d.embedding, joint(got["emb"][0]), atol=1e-5)
        for layer in range(3):
            assert torch.allclose(d.attention[:, layer], joint(got["attn"][layer]), atol=1e-5)
            assert torch.allclose(d.mlp[:, layer], joint(got["mlp"][layer]), atol=1e-5)
        expected_bias = ln.bias @ proj if centering == "linear" else torch.zeros(12)
        assert torch.allclose(d.bias, expected_bias.expand(3, -1), atol=1e-6)


@pytest.mark.parametrize("centering", ["linear", "reference"])
def test_per_head_and_per_token_contributions(deep_model, centering):
    px = pixels(deep_model)
    d = decompose(deep_model, px, layers=[-1], centering=centering)
    assert d.layers == (2,) and d.tokens.shape == (3, 1, 10, 4, 12) and d.heads.shape == (3, 3, 4, 12)
    assert torch.allclose(d.heads.sum(2), d.attention, atol=1e-5)
    assert torch.allclose(d.tokens[:, 0].sum((1, 2)), d.attention[:, 2], atol=1e-5)
    assert torch.allclose(d.tokens[:, 0].sum(1), d.heads[:, 2], atol=1e-5)
    # one entry by hand: a[h, cls, t] · v_t W_O^h (+ b_O / (H·T)) through the linearised norm
    vm = deep_model.module.vision_model
    deep_model.module.set_attn_implementation("eager")
    with torch.no_grad():
        ref = vm(pixel_values=px, output_attentions=True, output_hidden_states=True)
        last = vm.encoder.layers[-1].self_attn
        v = last.v_proj(vm.encoder.layers[-1].layer_norm1(ref.hidden_states[-2])).view(3, 10, 4, 8)
        h, t = 1, 5
        entry = ref.attentions[-1][:, h, 0, t, None] * v[:, t, h] @ last.out_proj.weight[:, 8 * h : 8 * h + 8].T
        entry = entry + last.out_proj.bias / 40
        _, mu, sigma = _reference_parts(deep_model, px)
        ln, proj = vm.post_layernorm, deep_model.module.visual_projection.weight.T
        if centering == "linear":
            expected = (ln.weight * (entry - entry.mean(-1, keepdim=True)) / sigma[:, None]) @ proj
        else:
            expected = (ln.weight * (entry - mu[:, None] / (7 * 40)) / sigma[:, None] + ln.bias / (7 * 40)) @ proj
    assert torch.allclose(d.tokens[:, 0, t, h], expected, atol=1e-6)


@pytest.mark.parametrize("which", ["shapes", "tiny", "deep"])
@pytest.mark.parametrize("centering", ["linear", "reference"])
def test_decomposition_sums_to_the_models_embedding(which, centering, shapes_model, deep_model):
    model = {"shapes": shapes_model, "tiny": make_tiny_model(seed=1), "deep": deep_model}[which]
    px = pixels(model, n=5)
    d = decompose(model, px, centering=centering, batch_size=2)  # batches concatenated
    with torch.no_grad():
        own = model.image_embeddings(px)
    assert isinstance(d, Decomposition) and d.embedding.shape == own.shape
    assert rel_err(d.total(), own) <= 1e-4
    assert torch.allclose(d.normalized().total(), model.encode_images(px, precision="fp32"), atol=1e-5)


def test_logit_is_the_sum_of_the_parts_dot_products(shapes_model):
    ds = cliplab.data.shapes("test", n=4, seed=0)
    ims = ds.images(range(4))
    texts = ["a red circle", "a blue square", "a green star"]
    tf = shapes_model.encode_texts(texts)
    d = decompose(shapes_model, ims)
    img = shapes_model.encode_images(ims, precision="fp32")
    assert torch.allclose(d.dot(tf).total(), d.total() @ tf.T, atol=1e-4)
    parts = d.dot(tf)
    summed = parts.embedding + parts.attention.sum(1) + parts.mlp.sum(1) + parts.bias
    assert torch.allclose(summed, d.total() @ tf.T, atol=1e-4)
    contrib = d.logit_contributions(shapes_model, tf)
    assert torch.allclose(contrib.total(), shapes_model.logits(img, tf), atol=1e-3)
    # PIL input and the preprocessed tensor give the same decomposition
    d2 = decompose(shapes_model, shapes_model.preprocess.batch(ims))
    assert torch.equal(d.total(), d2.total())


def test_token_map(deep_model):
    px = pixels(deep_model)
    d = decompose(deep_model, px, layers=[1, 2])
    tf = torch.randn(2, 12)
    maps = d.token_map(tf)
    assert maps.shape == (3, 2, 3, 3)
    expected = d.tokens[:, :, 1:].sum((1, 3)) @ tf.T  # patch tokens of both layers, all heads
    assert torch.allclose(maps.flatten(2), expected.permute(0, 2, 1), atol=1e-5)
    assert torch.allclose(d.token_map(layers=[2]).reshape(3, 9, 12), d.tokens[:, 1, 1:].sum(2), atol=1e-6)
    with pytest.raises(ValueError, match=r"layers \[0\]"):
        d.token_map(tf, layers=[0])


def test_mean_ablation(deep_model):
    d = decompose(deep_model, pixels(deep_model, n=6), layers=())
    assert torch.equal(d.mean_ablated(), d.total())
    out = d.mean_ablated(attention=[0], mlp=[-1], heads=[(1, 2)])
    expected = (
        d.total() - d.attention[:, 0] + d.attention[:, 0].mean(0) - d.mlp[:, 2] + d.mlp[:, 2].mean(0)
        - d.heads[:, 1, 2] + d.heads[:, 1, 2].mean(0)
    )  # fmt: skip
    assert torch.allclose(out, expected, atol=1e-6)
    # the mean comes from the reference set when one is given
    ref = decompose(deep_model, pixels(deep_model, n=4, seed=9), layers=())
    out = d.mean_ablated(attention=[1], reference=ref)
    assert torch.allclose(out, d.total() - d.attention[:, 1] + ref.attention[:, 1].mean(0), atol=1e-6)
    # ablating every part leaves the dataset mean for every image
    every = d.mean_ablated(attention=range(3), mlp=range(3), embedding=True)
    assert torch.allclose(every, d.total().mean(0).expand(6, -1), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        d.mean_ablated(attention=[3])
    with pytest.raises(ValueError, match="already ablated"):
        d.mean_ablated(attention=[1], heads=[(1, 0)])


def test_determinism(shapes_model):
    px = pixels(shapes_model, n=2)
    a, b = decompose(shapes_model, px), decompose(shapes_model, px)
    for name in ("embedding", "attention", "mlp", "heads", "tokens", "bias"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_bad_input(shapes_model):
    with pytest.raises(ValueError, match=r"image size \(32, 32\) does not match .*\(64, 64\)"):
        decompose(shapes_model, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        trace(shapes_model, torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="layer 4 out of range"):
        decompose(shapes_model, torch.zeros(1, 3, 64, 64), layers=[4])
    with pytest.raises(ValueError, match="centering"):
        decompose(shapes_model, torch.zeros(1, 3, 64, 64), centering="mean")
    with pytest.raises(ValueError, match="no images"):
        decompose(shapes_model, [])
    # PIL images of another size are preprocessed to the model's resolution, so they are fine
    im = Image.fromarray(np.zeros((40, 90, 3), dtype=np.uint8))
    assert decompose(shapes_model, [im]).embedding.shape == (1, 128)


class _ConvTower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1))


class _FakeModel:
    spec = "my-resnet"
    module = _ConvTower()


def test_a_tower_without_vit_internals_is_refused():
    with pytest.raises(UnsupportedTowerError, match=r"model 'my-resnet': its image tower \(Sequential\) is not a ViT"):
        decompose(_FakeModel(), torch.zeros(1, 3, 32, 32))


@pytest.fixture(scope="module")
def siglip():
    from transformers import SiglipConfig, SiglipModel

    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2}  # fmt: skip
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 100, "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0}  # fmt: skip
    torch.manual_seed(0)
    return SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).eval()


def test_siglip_internals_and_refusals(siglip):
    tower = vit_tower(siglip)
    assert tower.kind == "hf-siglip" and tower.n_prefix == 0 and tower.pooling == "attention-head"
    px = torch.randn(2, 3, 32, 32)
    t = run_tower(tower, px)
    with torch.no_grad():
        own = siglip.get_image_features(pixel_values=px)
    own = own if isinstance(own, torch.Tensor) else own.pooler_output
    assert torch.allclose(t.pooled, own, atol=1e-5)
    assert t.patch_tokens().shape == (2, 16, 32) and t.last_attention.weights.shape == (2, 2, 16, 16)
    with pytest.raises(UnsupportedTowerError, match="attention-pooling head"):
        decompose(siglip, px)
    # patch features: the head applied to each token alone (a single key: attention weight 1)
    feats = patch_features(siglip, px)
    vm = siglip.vision_model
    with torch.no_grad():
        last = vm.post_layernorm(vm(pixel_values=px).last_hidden_state)
        one = vm.head(last[:, 5:6])
        a = vm.head.attention
        v = last[:, 5] @ a.in_proj_weight[64:].T + a.in_proj_bias[64:]
        by_hand = a.out_proj(v)
        by_hand = by_hand + vm.head.mlp(vm.head.layernorm(by_hand))
    assert feats.shape == (2, 16, 32)
    assert torch.allclose(feats[:, 5], one.reshape(2, 32), atol=1e-5)
    assert torch.allclose(feats[:, 5], by_hand, atol=1e-5)


def test_gradient_times_input_matches_finite_differences():
    from cliplab.towers.saliency import gradient_times_input

    model = make_tiny_model(seed=2)
    px = pixels(model, n=2)
    tf = model.encode_texts(["a red circle", "a blue star"])
    maps = gradient_times_input(model, px, tf)
    assert maps.shape == (2, 2, 32, 32)
    patches = gradient_times_input(model, px, tf, per_patch=True)
    assert patches.shape == (2, 2, 4, 4)
    assert torch.allclose(patches, maps.reshape(2, 2, 4, 8, 4, 8).sum((3, 5)), atol=1e-6)

    def logit(x):
        with torch.no_grad():
            return model.logits(model.image_features(x), tf)

    base = logit(px)
    eps = 1e-3
    for b, m in [(0, 0), (1, 1)]:
        i, j = divmod(int(maps[b, m].abs().argmax()), 32)
        bumped = px.clone()
        bumped[b, :, i, j] *= 1 + eps  # z(x + εx_ij) − z(x) ≈ ε Σ_c x_cij ∂z/∂x_cij
        fd = (logit(bumped)[b, m] - base[b, m]) / eps
        assert float(fd) == pytest.approx(float(maps[b, m, i, j]), rel=0.05, abs=1e-3)


def test_direct_effect_map(shapes_model):
    from cliplab.towers.saliency import direct_effect_map

    px = pixels(shapes_model, n=2)
    texts = ["a red circle", "a blue square"]
    maps = direct_effect_map(shapes_model, px, texts, layers=[-1])
    d = decompose(shapes_model, px, layers=[-1])
    assert maps.shape == (2, 2, 4, 4)
    assert torch.allclose(maps, d.token_map(shapes_model.encode_texts(texts)), atol=1e-6)


def test_direct_effect_map_points_at_the_named_object(shapes_model):
    """Pointing game on two-object images of the built-in world (``benchmarks/pointing_game.py``): the direct
    effect map of "a <colour> <shape>." peaks nearer that object than the other far more often than chance (½)."""
    from cliplab.data.shapes_world import COLOURS, SHAPES
    from cliplab.towers.saliency import direct_effect_map

    ds = cliplab.data.shapes("test", n=40, seed=1, objects=2)
    attrs = ds._a  # the world's object table: centres (x, y) as fractions of the side
    centres = np.stack(np.meshgrid((np.arange(4) + 0.5) / 4, (np.arange(4) + 0.5) / 4), -1).reshape(-1, 2)
    hits = []
    for obj in (0, 1):
        texts = [f"a {COLOURS[attrs['colour'][i, obj]]} {SHAPES[attrs['shape'][i, obj]]}." for i in range(40)]
        maps = direct_effect_map(shapes_model, ds.images(range(40)), shapes_model.encode_texts(texts))
        for i in range(40):
            best = int(maps[i, i].flatten().argmax())
            d = np.linalg.norm(centres[best] - attrs["xy"][i], axis=-1)
            hits.append(d[obj] < d[1 - obj])
    assert np.mean(hits) >= 0.8


def test_every_block_and_gradients_through_the_internals(deep_model):
    px = pixels(deep_model)
    t = trace(deep_model, px, every_block=True)
    assert len(t.steps) == 3 and t.steps[-1].attended is not None
    assert torch.equal(t.steps[-1].attended.weights, t.last_attention.weights)
    for layer, step in enumerate(t.steps):  # each block's writes rebuild the stream
        assert torch.allclose(t.residual[layer] + step.attention + step.mlp, t.residual[layer + 1], atol=1e-5)
    x = px.clone().requires_grad_(True)
    with torch.enable_grad():
        pooled = run_tower(vit_tower(deep_model), x).pooled
        (grad,) = torch.autograd.grad(pooled.sum(), x)
    with torch.enable_grad():
        y = px.clone().requires_grad_(True)
        (own,) = torch.autograd.grad(deep_model.image_embeddings(y).sum(), y)
    assert torch.allclose(grad, own, atol=1e-5)


def test_euclidean_geometry_decomposes_but_has_no_logit_sum():
    model = make_tiny_model(geometry="euclidean")
    px = pixels(model, n=2)
    d = decompose(model, px)
    with torch.no_grad():
        assert rel_err(d.total(), model.image_embeddings(px)) <= 1e-4
    with pytest.raises(ValueError, match="cosine geometry"):
        d.logit_contributions(model, model.encode_texts(["a red circle"]))
