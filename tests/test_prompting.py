"""Prompt learning through the encoders: CoOp, CoCoOp, KgCoOp, ProGrad, MaPLe, TPT (cliplab.adapt.prompting)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from cliplab.adapt.prompting import (
    PROMPT_METHODS,
    TPT,
    CoCoOp,
    CoOp,
    KgCoOp,
    MaPLe,
    ProGrad,
    prompt_base_to_new,
    run_prompt_few_shot,
)
from cliplab.adapt.prompting.coop import project_conflicting
from cliplab.adapt.prompting.tpt import average_entropy

CLASSES = ["red circle", "blue square", "green star"]


@pytest.fixture(scope="module")
def data(tiny):
    g = torch.Generator().manual_seed(0)
    px = torch.randn(12, 3, 32, 32, generator=g)
    y = torch.arange(12) % 3
    return px, tiny.encode_images(px), y


def plain_logits(model, features, prompts):
    """Independent reference: encode the full sentences with the model, normalise, scale."""
    t = F.normalize(model.encode_texts(prompts), dim=-1)
    return model.logit_scale * features @ t.T


def snapshot(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


# -- equivalences -------------------------------------------------------------------------------
def test_coop_from_phrase_untrained_equals_zero_shot_template(tiny, data):
    _, f, y = data
    coop = CoOp(ctx_init="a photo of a", epochs=0).fit(tiny, f, y, CLASSES)
    ref = plain_logits(tiny, f, [f"a photo of a {c}." for c in CLASSES])
    torch.testing.assert_close(coop.logits(f), ref, atol=1e-4, rtol=1e-5)


def test_coop_on_builtin_model_untrained_equals_zero_shot():
    from cliplab.data import shapes
    from cliplab.models import load_model

    model = load_model("builtin:shapes")
    ds = shapes("test", n=40, task="shape")
    f = model.encode_images([ds.image(i) for i in range(len(ds))])
    coop = CoOp(ctx_init="a photo of a", epochs=0).fit(model, f, ds.labels, ds.classnames)
    ref = plain_logits(model, f, [f"a photo of a {c}." for c in ds.classnames])
    torch.testing.assert_close(coop.logits(f), ref, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize(
    ("position", "sentence"),
    [("end", "{w} {c}."), ("front", "{c} {w}."), ("middle", "{w1} {c} {w2}.")],
)
def test_context_vectors_enter_at_the_class_token_position(tiny, data, position, sentence):
    """Setting the learned context to the embeddings of real words gives the sentence with those words."""
    _, f, y = data
    words = ["small", "large", "shape", "thing"]
    coop = CoOp(n_ctx=4, class_token_position=position, epochs=0).fit(tiny, f, y, CLASSES)
    ids = [tiny.tokenizer.convert_tokens_to_ids(w) for w in words]
    with torch.no_grad():
        coop.prompt_.ctx.copy_(tiny.token_embeddings().weight[ids])
    texts = [sentence.format(w=" ".join(words), c=c, w1=" ".join(words[:2]), w2=" ".join(words[2:])) for c in CLASSES]
    torch.testing.assert_close(coop.logits(f), plain_logits(tiny, f, texts), atol=1e-4, rtol=1e-5)


def test_class_specific_contexts_are_per_class(tiny, data):
    _, f, y = data
    coop = CoOp(n_ctx=2, class_specific=True, epochs=0).fit(tiny, f, y, CLASSES)
    assert coop.prompt_.ctx.shape == (3, 2, 32)
    emb = tiny.token_embeddings().weight
    picks = [["small", "shape"], ["large", "thing"], ["left", "right"]]
    with torch.no_grad():
        for c, pair in enumerate(picks):
            coop.prompt_.ctx[c] = emb[[tiny.tokenizer.convert_tokens_to_ids(w) for w in pair]]
    texts = [f"{' '.join(p)} {c}." for p, c in zip(picks, CLASSES)]
    torch.testing.assert_close(coop.logits(f), plain_logits(tiny, f, texts), atol=1e-4, rtol=1e-5)


def test_maple_with_zero_length_prompts_equals_plain_model(tiny, data):
    px, f, y = data
    maple = MaPLe(n_ctx=0, epochs=0).fit(tiny, px, y, CLASSES)
    ref = plain_logits(tiny, f, [f"a photo of a {c}." for c in CLASSES])
    torch.testing.assert_close(maple.logits(px), ref, atol=1e-4, rtol=1e-5)


def test_maple_prompts_reach_both_towers_and_hooks_are_removed(tiny, data):
    px, f, y = data
    maple = MaPLe(epochs=0).fit(tiny, px, y, CLASSES)
    with torch.no_grad():
        prompted = maple.prompt_.image_features(tiny, px)
    assert not torch.allclose(prompted, f, atol=1e-4)  # appended vision prompts change the image features
    torch.testing.assert_close(tiny.encode_images(px), f)  # and nothing is left hooked afterwards


# -- only prompt parameters learn -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["coop", "cocoop", "kgcoop", "prograd", "maple"])
def test_only_prompt_parameters_receive_gradients(tiny, data, name):
    px, f, y = data
    before = snapshot(tiny)
    flags = [p.requires_grad for p in tiny.module.parameters()]
    cls = PROMPT_METHODS[name]
    est = cls(epochs=2, lr=0.05, batch_size=6)
    est.fit(tiny, px if cls.needs_pixels else f, y, CLASSES)
    after = snapshot(tiny)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert all(p.grad is None for p in tiny.module.parameters())
    assert [p.requires_grad for p in tiny.module.parameters()] == flags
    fresh = cls(epochs=0).fit(tiny, px if cls.needs_pixels else f, y, CLASSES)
    moved = [
        not torch.equal(a, b) for a, b in zip(est.prompt_.state_dict().values(), fresh.prompt_.state_dict().values())
    ]
    assert any(moved)  # the prompt itself did learn
    assert not any(k.startswith("model") or "embedding.weight" in k for k in est.prompt_.state_dict())


def test_coop_learns_the_support_set(tiny, data):
    _, f, y = data
    zs = CoOp(ctx_init="a photo of a", epochs=0).fit(tiny, f, y, CLASSES)
    coop = CoOp(ctx_init="a photo of a", class_specific=True, epochs=15, lr=0.1).fit(tiny, f, y, CLASSES)
    loss0 = F.cross_entropy(zs.logits(f), y)
    loss1 = F.cross_entropy(coop.logits(f), y)
    assert loss1 < loss0


def test_validation_selects_the_best_epoch(tiny, data):
    _, f, y = data
    coop = CoOp(epochs=6, eval_every=2, lr=0.05).fit(tiny, f[:6], y[:6], CLASSES, val=f[6:], val_labels=y[6:])
    accs = [h["val_accuracy"] for h in coop.history_]
    assert [h["epoch"] for h in coop.history_] == [2, 4, 6]
    assert coop.val_accuracy_ == max(accs)
    assert float((coop.predict(f[6:]) == y[6:]).float().mean()) == pytest.approx(coop.val_accuracy_)


# -- method-specific rules ------------------------------------------------------------------------
def test_cocoop_meta_net_output_changes_with_the_image(tiny, data):
    _, f, y = data
    est = CoCoOp(epochs=1, batch_size=4).fit(tiny, f, y, CLASSES)
    shift = est.meta_shift(f[:2])
    assert shift.shape == (2, 32)
    assert not torch.allclose(shift[0], shift[1])
    # each image is scored against its own prompts: the logits of image 0 do not depend on the batch
    torch.testing.assert_close(est.logits(f[:1]), est.logits(f[:3])[:1], atol=1e-5, rtol=1e-5)


def test_kgcoop_stays_closer_to_the_hand_crafted_prompts(tiny, data):
    _, f, y = data
    kw = {"epochs": 12, "lr": 0.1, "class_specific": True}
    coop = CoOp(**kw).fit(tiny, f, y, CLASSES)
    kg = KgCoOp(lam=50.0, **kw).fit(tiny, f, y, CLASSES)
    w = F.normalize(tiny.encode_texts([f"a photo of a {c}." for c in CLASSES]), dim=-1)
    assert (kg.text_features() - w).norm() < (coop.text_features() - w).norm()


def test_prograd_projection_rule():
    g = (torch.tensor([1.0, 0.0]), torch.tensor([2.0]))
    r = (torch.tensor([-1.0, 1.0]), torch.tensor([0.0]))  # g·r = −1 < 0: conflicting
    out = project_conflicting(g, r, 1.0)
    flat, ref = torch.cat(out), torch.cat(r)
    assert float(flat @ ref) == pytest.approx(0.0, abs=1e-6)  # the conflicting component is removed
    expected = torch.cat(g) - (-1.0 / 2.0) * ref
    torch.testing.assert_close(flat, expected)
    agree = (torch.tensor([1.0, 1.0]), torch.tensor([0.0]))
    assert all(torch.equal(a, b) for a, b in zip(project_conflicting(g, agree), g))


def test_prograd_trains(tiny, data):
    _, f, y = data
    est = ProGrad(epochs=3, lr=0.05).fit(tiny, f, y, CLASSES)
    assert est.logits(f).shape == (12, 3)


def test_tpt_entropy_of_the_mean_prediction():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    p = torch.softmax(z, 1).mean(0)
    assert float(average_entropy(z)) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)


def test_tpt_restores_the_prompt_after_every_image(tiny, data):
    px, _, _ = data
    tpt = TPT(n_views=16).fit(tiny, None, None, CLASSES)
    start = tpt.prompt_.ctx.detach().clone()
    both = tpt.logits(px[[0, 2]])
    assert torch.equal(tpt.prompt_.ctx.detach(), start)
    other = tpt.logits(px[[1, 2]])  # image 2 at the same position after a different first image
    torch.testing.assert_close(both[1], other[1])
    untuned = tpt.zeroshot_logits(px[[0, 2]])
    assert not torch.allclose(both, untuned)  # the step changed the prediction
    ref = plain_logits(tiny, tiny.encode_images(px[[0, 2]]), [f"a photo of a {c}." for c in CLASSES])
    torch.testing.assert_close(untuned, ref, atol=1e-4, rtol=1e-5)


# -- bad input ------------------------------------------------------------------------------------
def test_model_without_embedding_input_gets_a_clear_error(tiny, data):
    _, f, y = data

    class Opaque(type(tiny)):
        @property
        def has_token_embeddings(self):
            return False

    model = Opaque(tiny.module, tiny.tokenizer, tiny.preprocess, spec="opaque")
    for cls in (CoOp, CoCoOp, KgCoOp, ProGrad):
        with pytest.raises(ValueError, match="token embeddings"):
            cls(epochs=0).fit(model, f, y, CLASSES)
    with pytest.raises(ValueError, match="token embeddings"):
        TPT().fit(model, None, None, CLASSES)


def test_class_name_longer_than_the_context_leaves(tiny, data):
    _, f, y = data
    long_name = " ".join(["red"] * 9)  # 12 tokens of context length: BOS + 4 ctx + 9 + "." + EOS = 16
    with pytest.raises(ValueError, match="too long") as err:
        CoOp(n_ctx=4, epochs=0).fit(tiny, f, y, ["circle", "square", long_name])
    assert long_name in str(err.value)
    CoOp(n_ctx=1, epochs=0).fit(tiny, f, y, ["circle", "square", " ".join(["red"] * 5)])  # fits


def test_bad_inputs(tiny, data):
    px, f, y = data
    with pytest.raises(ValueError, match="class_token_position"):
        CoOp(class_token_position="side").fit(tiny, f, y, CLASSES)
    with pytest.raises(ValueError, match="labels"):
        CoOp(epochs=0).fit(tiny, f, torch.tensor([0, 1, 5] * 4), CLASSES)
    with pytest.raises(ValueError, match="images"):
        MaPLe(epochs=0).fit(tiny, f, y, CLASSES)  # MaPLe prompts the image tower: features are not enough
    with pytest.raises(RuntimeError, match="not fitted"):
        CoOp().logits(f)
    with pytest.raises(ValueError, match="dimension"):
        CoOp(epochs=0).fit(tiny, f, y, CLASSES).logits(torch.randn(2, 7))


# -- protocol -------------------------------------------------------------------------------------
def test_prompt_protocol_has_the_few_shot_shape(tiny, colour_world):
    train, test = colour_world
    params = {
        "coop": {"epochs": 2},
        "cocoop": {"epochs": 1, "batch_size": 8},
        "maple": {"epochs": 1, "batch_size": 8},
        "tpt": {"n_views": 4},
    }
    res = run_prompt_few_shot(
        tiny,
        train,
        test,
        methods=["coop", "tpt"],
        shots=[1, 2],
        seeds=[1],
        params=params,
        embed_kw={"cache_dir": False},
        progress=False,
    )
    assert set(res) >= {"results", "zeroshot", "params", "seconds", "shots", "seeds", "methods"}
    for m in ("coop", "tpt"):
        for k in (1, 2):
            r = res["results"][m][k]
            assert len(r["runs"]) == 1 and 0 <= r["mean"] <= 1
    assert res["results"]["tpt"][1]["runs"] == res["results"]["tpt"][2]["runs"]  # no training data used
    chosen = res["params"]["coop"][2][0]  # the learning rate picked on the validation images
    assert chosen["lr"] in (0.002, 0.02) and 0 <= chosen["val_accuracy"] <= 1
    b2n = prompt_base_to_new(
        tiny, train, test, methods=["coop"], k=2, seeds=[1], params=params, embed_kw={"cache_dir": False}, search=False
    )
    r = b2n["results"]["coop"]
    assert r["hm"] == pytest.approx(2 * r["base"] * r["new"] / (r["base"] + r["new"]) if r["base"] + r["new"] else 0)
    assert "zeroshot" in b2n["results"] and b2n["n_base_classes"] + b2n["n_new_classes"] == len(train.classnames)


def test_cli_dispatch_merges_prompt_methods_into_the_adapter_table(tiny, colour_world):
    from cliplab.adapt.protocol import run_few_shot
    from cliplab.cli.common import UsageError
    from cliplab.cli.prompt_methods import add_prompt_methods, split_methods
    from cliplab.features import embed
    from cliplab.zeroshot import zeroshot_weights

    assert split_methods(None) == (None, [])
    assert split_methods("gda,coop") == (["gda"], ["coop"])
    assert split_methods("coop,tpt") == (["zeroshot"], ["coop", "tpt"])
    with pytest.raises(UsageError, match="unknown"):
        split_methods("coop,lora")
    train, test = colour_world
    tr, te = embed(tiny, train, cache_dir=False, progress=False), embed(tiny, test, cache_dir=False, progress=False)
    W = zeroshot_weights(tiny, train.classnames, train.templates)
    res = run_few_shot(
        tr, te, W, logit_scale=tiny.logit_scale, methods=["zeroshot"], shots=[1], seeds=[1], progress=False
    )
    add_prompt_methods(
        res,
        tiny,
        train,
        test,
        tr,
        te,
        ["coop"],
        shots=[1],
        seeds=[1],
        progress=False,
        search=False,
        params={"coop": {"epochs": 2}},
    )
    assert res["methods"] == ["zeroshot", "coop"]
    assert set(res["results"]) == {"zeroshot", "coop"} and set(res["results"]["coop"]) == {1}


class _OpenCLIPStyle(torch.nn.Module):
    """An open_clip-shaped text tower: token_embedding, positional_embedding, causal transformer, ln_final,
    text_projection, EOT pooling at the highest token id (OpenAI's tokenizer convention)."""

    def __init__(self, vocab: int = 20, width: int = 16, length: int = 10):
        super().__init__()
        torch.manual_seed(0)
        self.context_length = length
        self.token_embedding = torch.nn.Embedding(vocab, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(length, width) * 0.1)
        self.block = torch.nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.ln_final = torch.nn.LayerNorm(width)
        self.text_projection = torch.nn.Parameter(torch.randn(width, 8) * 0.2)
        self.visual = torch.nn.Linear(12, 8)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        x = self.ln_final(self.block(x, src_mask=mask, is_causal=True))
        return x[torch.arange(len(ids)), ids.argmax(-1)] @ self.text_projection


def _openclip_style_model():
    from cliplab.models.base import Model

    words = ["<pad>", "a", "photo", "of", "red", "blue", "green", "circle", "square", "x", "."]
    vocab = {w: i for i, w in enumerate(words)} | {"<sot>": 18, "<eot>": 19}

    class Tiny(Model):
        spec = "openclip-style"

        def __init__(self):
            self.module = _OpenCLIPStyle()

        @property
        def has_token_embeddings(self):
            return True

        def token_embeddings(self):
            return self.module.token_embedding

        def tokenize(self, texts):
            rows = []
            for t in texts:
                toks = t.lower().replace(".", " .").split()
                rows.append([18, *(vocab[w] for w in toks), 19][: self.module.context_length])
            out = torch.zeros(len(rows), self.module.context_length, dtype=torch.long)  # fixed length, 0-padded
            for i, r in enumerate(rows):
                out[i, : len(r)] = torch.tensor(r)
            return {"input_ids": out}

        def image_embeddings(self, pixel_values):
            return self.module.visual(pixel_values)

        def text_embeddings(self, tokens):
            return self.module.encode_text(tokens["input_ids"])

    return Tiny()


def test_coop_on_an_open_clip_style_text_tower():
    model = _openclip_style_model()
    classes = ["red circle", "blue square"]
    f = F.normalize(torch.randn(6, 8), dim=-1)
    y = torch.tensor([0, 1] * 3)
    coop = CoOp(ctx_init="a photo of", epochs=0).fit(model, f, y, classes)
    assert coop.prompt_.layout.slots.tolist() == [[1, 2, 3], [1, 2, 3]]
    ref = plain_logits(model, f, [f"a photo of {c}." for c in classes])
    torch.testing.assert_close(coop.logits(f), ref, atol=1e-5, rtol=1e-5)
    before = snapshot(model)
    CoOp(n_ctx=2, epochs=3, lr=0.1).fit(model, f, y, classes)
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    with pytest.raises(ValueError, match="too long"):  # the 10-token context: sot + 2 ctx + 6 + . + eot = 11
        CoOp(n_ctx=2, epochs=0).fit(model, f, y, ["red blue red blue red circle", "square"])


def test_class_name_exactly_filling_the_context_is_accepted(tiny):
    """The boundary of the length check (issue #26: ``>=`` for ``>`` survived): a prompt that needs exactly the text
    tower's length fits; one token more does not."""
    from cliplab.adapt.prompting.text_prompts import _Tokens, build_layout, context_length

    limit, tok = context_length(tiny), _Tokens(tiny)
    per_word = len(tok.content("red"))
    free = limit - tok.prefix - 4 - len(tok.content(".")) - tok.suffix  # tokens left for the name with 4 ctx
    assert free % per_word == 0 and free > 0
    name = " ".join(["red"] * (free // per_word))
    assert len(tok.content(name)) == free
    layout = build_layout(tiny, ["circle", name], n_ctx=4)  # needs exactly `limit` tokens
    assert layout.slots.shape == (2, 4)
    with pytest.raises(ValueError, match="too long"):
        build_layout(tiny, ["circle", name + " red"], n_ctx=4)


def test_cocoop_shift_is_added_to_the_context(tiny, data):
    """``ctx_m(f) = ctx_m + π(f)`` (KaiyangZhou/CoOp ``cocoop.py``: ``ctx_shifted = ctx + bias``), not ``π(f)`` alone
    (issue #26: the replacement survived): each image's text features equal those of a plain prompt whose
    context is the learned one plus that image's shift."""
    _, f, y = data
    est = CoCoOp(epochs=1, batch_size=4).fit(tiny, f, y, CLASSES)
    text = est.prompt_.text
    shift = est.meta_shift(f[:2])
    assert not torch.allclose(text.ctx.detach(), torch.zeros_like(text.ctx))
    with torch.no_grad():
        per_image = est.prompt_(f[:2])  # [2, C, D]
        learned = text.ctx.detach().clone()
        for i in range(2):
            text.ctx.copy_(learned + shift[i].to(learned))
            torch.testing.assert_close(per_image[i], text(), atol=1e-5, rtol=1e-5)
        text.ctx.copy_(learned)


def test_maple_inserts_the_deep_prompts_from_the_second_layer_on():
    """MaPLe (muzairkhattak/multimodal-prompt-learning): with depth J, layers 1 … J−1 of both towers receive the
    deep prompts (text: ``deep_text[j−1]`` at the context slots; vision: ``proj_j(deep_text[j−1])`` as the last M
    tokens). The one-layer test model cannot see layer 1 (issue #26: ``range(2, depth)`` survived), so this
    builds a two-layer tiny model and reads the inputs of layer 1 of each tower."""
    from cliplab.models.factory import ModelConfig, build_tokenizer, create_model
    from helpers import WORDS

    cfg = ModelConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2, text_width=32,
                      text_layers=2, text_heads=2, context_length=12, embed_dim=16)  # fmt: skip
    model = create_model(cfg, build_tokenizer(WORDS, context_length=12), seed=0)
    px = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maple = MaPLe(epochs=0, prompt_depth=2).fit(model, px, torch.arange(6) % 3, CLASSES)
    prompt = maple.prompt_
    assert maple.depth_ == 2
    seen: dict[str, torch.Tensor] = {}

    def grab(name):
        return lambda module, args: seen.__setitem__(name, args[0].detach().clone())

    hooks = [
        prompt.towers.text_layers[1].layer_norm1.register_forward_pre_hook(grab("text")),
        prompt.towers.vision_layers[1].layer_norm1.register_forward_pre_hook(grab("vision")),
    ]
    try:
        with torch.no_grad():
            prompt.text_features()
            prompt.image_features(model, px)
    finally:
        for h in hooks:
            h.remove()
    slots, m = prompt.text.layout.slots, prompt.text.n_ctx
    deep = prompt.deep_text[0].detach()
    text_in = seen["text"]
    for c in range(len(CLASSES)):
        torch.testing.assert_close(text_in[c, slots[c]], deep)
    with torch.no_grad():
        expected = prompt.proj[1](deep)
    torch.testing.assert_close(seen["vision"][:, -m:], expected[None].expand(len(px), -1, -1))


def test_best_epoch_snapshot_is_a_copy_not_a_view(tiny, data, monkeypatch):
    """The prompt kept is the one of the epoch whose ``val_accuracy_`` is reported, not the last one (issue #26: a
    shallow ``dict(state_dict())`` snapshot, aliasing the parameters, survived). Validation accuracies are scripted
    so that the first check is the best."""
    _, f, y = data
    scripted = iter([0.9, 0.2, 0.1])
    contexts: list[torch.Tensor] = []

    def fake_accuracy(self, xv, yv):
        contexts.append(self.prompt_.ctx.detach().clone())
        return next(scripted)

    monkeypatch.setattr(CoOp, "_accuracy", fake_accuracy)
    coop = CoOp(epochs=3, eval_every=1, lr=0.05).fit(tiny, f[:6], y[:6], CLASSES, val=f[6:], val_labels=y[6:])
    assert coop.val_accuracy_ == 0.9 and len(contexts) == 3
    assert not torch.allclose(contexts[0], contexts[2])
    torch.testing.assert_close(coop.prompt_.ctx.detach(), contexts[0], atol=0, rtol=0)
    best = CoOp(epochs=0).fit(tiny, f[:6], y[:6], CLASSES)
    with torch.no_grad():
        best.prompt_.ctx.copy_(contexts[0])
    monkeypatch.undo()
    torch.testing.assert_close(coop.logits(f), best.logits(f), atol=1e-5, rtol=1e-5)
