"""FLIP patch dropout on the HF CLIP vision tower."""

import pytest
import torch
from torch import nn

from cliplab.train.patch_dropout import PatchDropout, PatchDropoutUnsupported, keep_count
from helpers import make_tiny_model


def _encoder_lengths(module):
    """Record the sequence length the vision encoder receives."""
    seen = []

    def hook(mod, args, kwargs):
        x = kwargs.get("inputs_embeds", args[0] if args else None)
        seen.append(tuple(x.shape))

    handle = module.vision_model.encoder.register_forward_pre_hook(hook, with_kwargs=True)
    return seen, handle


@pytest.fixture
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_zero_dropout_is_identity(pixels):
    model = make_tiny_model()
    model.module.train()
    with torch.no_grad():
        ref = model.image_features(pixels)
        pd = PatchDropout(model.module, 0.0)
        out = model.image_features(pixels)
    assert torch.equal(ref, out)
    pd.remove()


def test_half_dropout_halves_patch_tokens_and_keeps_cls(pixels):
    model = make_tiny_model()  # 32 px, patch 8: 16 patches + CLS
    module = model.module
    module.train()
    with torch.no_grad():
        full = module.vision_model.embeddings(pixels)
    assert full.shape[1] == 17
    pd = PatchDropout(module, 0.5)
    seen, handle = _encoder_lengths(module)
    captured = []
    h2 = module.vision_model.embeddings.register_forward_hook(lambda m, a, o: captured.append(o))
    model.image_features(pixels).sum().backward()  # differentiable through the gather
    assert seen[-1] == (3, 1 + keep_count(16, 0.5), 32) == (3, 9, 32)
    kept = captured[-1]
    assert torch.equal(kept[:, 0], full[:, 0])  # the class token is always kept
    for b in range(3):  # every kept token is one of the image's own patch tokens, none twice
        d = torch.cdist(kept[b, 1:].detach(), full[b, 1:])
        assert torch.all(d.min(1).values < 1e-6)
        assert len(set(d.argmin(1).tolist())) == 8
    assert module.vision_model.embeddings.patch_embedding.weight.grad is not None

    module.eval()  # eval mode: the whole sequence
    with torch.no_grad():
        model.image_features(pixels)
    assert seen[-1] == (3, 17, 32)
    handle.remove()
    h2.remove()
    pd.remove()


def test_eval_mode_unaffected_and_remove_restores(pixels):
    model = make_tiny_model()
    model.module.eval()
    with torch.no_grad():
        ref = model.image_features(pixels)
        pd = PatchDropout(model.module, 0.75)
        assert torch.equal(model.image_features(pixels), ref)
        model.module.train()
        assert not torch.allclose(model.image_features(pixels), ref)
        pd.remove()
        assert torch.allclose(model.image_features(pixels), ref, atol=1e-6)


def test_same_rng_same_tokens(pixels):
    model = make_tiny_model()
    model.module.train()
    PatchDropout(model.module, 0.5)
    with torch.no_grad():
        torch.manual_seed(3)
        a = model.image_features(pixels)
        torch.manual_seed(3)
        b = model.image_features(pixels)
    assert torch.equal(a, b)


def test_unsupported_towers_raise():
    with pytest.raises(PatchDropoutUnsupported, match="vision_model.embeddings"):
        PatchDropout(nn.Linear(3, 3), 0.5)

    class NoPatches(nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = nn.Module()
            self.vision_model.embeddings = nn.Linear(3, 3)

    with pytest.raises(PatchDropoutUnsupported, match="num_patches"):
        PatchDropout(NoPatches(), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PatchDropout(make_tiny_model().module, 1.0)
