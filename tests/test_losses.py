"""cliplab.losses against plainly written formulas (explicit loops), plus input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cliplab.losses import clip_distill_loss, clip_loss, distill_loss, infoloob_loss, siglip_loss

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _feats(b=6, d=4, seed=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, d, generator=g, dtype=dtype).requires_grad_(True)
    text = torch.randn(b, d, generator=g, dtype=dtype).requires_grad_(True)
    return image, text


def _scalar(v):
    return torch.tensor(v, dtype=D64, requires_grad=True)


def _logit(x, y, i, j, s, b, geometry):
    if geometry == "cosine":
        return s * sum(x[i, k] * y[j, k] for k in range(x.shape[1])) + b
    return -s * sum((x[i, k] - y[j, k]) ** 2 for k in range(x.shape[1])) + b


def ref_clip(x, y, s, b, geometry):
    n = x.shape[0]
    z = [[_logit(x, y, i, j, s, b, geometry) for j in range(n)] for i in range(n)]
    i2t = sum(-torch.log(torch.exp(z[i][i]) / sum(torch.exp(z[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = sum(-torch.log(torch.exp(z[j][j]) / sum(torch.exp(z[i][j]) for i in range(n))) for j in range(n)) / n
    return (i2t + t2i) / 2


def ref_siglip(x, y, s, b):
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if i == j else -1.0
            total = total - torch.log(1.0 / (1.0 + torch.exp(-label * _logit(x, y, i, j, s, b, "cosine"))))
    return total / n


def ref_infoloob_direction(x, y, inv_tau):
    """CLOOB methods.py: tau * (positives + negatives) with the diagonal left out of the LSE."""
    tau = 1.0 / inv_tau
    n = x.shape[0]
    pos = -sum(x[i] @ y[i] / tau for i in range(n)) / n
    neg = sum(torch.log(sum(torch.exp(x[i] @ y[j] / tau) for j in range(n) if j != i)) for i in range(n)) / n
    return tau * (pos + neg)


def ref_hopfield(state, stored, beta):
    rows = []
    for i in range(state.shape[0]):
        w = torch.stack([torch.exp(beta * (state[i] @ stored[k])) for k in range(stored.shape[0])])
        r = sum(w[k] * stored[k] for k in range(stored.shape[0])) / w.sum()
        rows.append(r / torch.sqrt((r * r).sum()))
    return torch.stack(rows)


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, retain_graph=True)


def _assert_close_all(a, b, **tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
@pytest.mark.parametrize("bias", [None, -1.5])
def test_clip_loss_matches_loop_formula(geometry, bias):
    x, y = _feats()
    s = _scalar(3.0)
    inputs = [x, y, s]
    b = None
    if bias is not None:
        b = _scalar(bias)
        inputs.append(b)
    got = clip_loss(x, y, s, b, geometry=geometry)
    want = ref_clip(x, y, s, b if b is not None else 0.0, geometry)
    torch.testing.assert_close(got, want)
    _assert_close_all(_grads(got, inputs), _grads(want, inputs))


def test_clip_loss_accepts_floats_numpy_and_shape1_scale():
    x, y = _feats(seed=1)
    want = clip_loss(x, y, _scalar(2.0)).detach()
    got = clip_loss(x.detach().numpy(), y.detach().numpy(), 2.0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(clip_loss(x, y, torch.tensor([2.0], dtype=D64)).detach(), want)
    assert clip_loss(x.float(), y.float(), 2.0).dtype == torch.float32


def test_clip_loss_perfect_alignment_and_bias_invariance():
    eye = torch.eye(5, dtype=D64)
    assert clip_loss(eye, eye, 100.0).item() < 1e-30
    x, y = _feats(seed=2)
    torch.testing.assert_close(clip_loss(x, y, 2.0, 7.0), clip_loss(x, y, 2.0))
    b = _scalar(3.0)
    (gb,) = torch.autograd.grad(clip_loss(x, y, 2.0, b), [b])
    assert abs(gb.item()) < 1e-12


def test_siglip_loss_matches_loop_formula():
    x, y = _feats(seed=3)
    s, b = _scalar(10.0**0.5), _scalar(-2.0)
    got = siglip_loss(x, y, s, b)
    want = ref_siglip(x, y, s, b)
    torch.testing.assert_close(got, want)
    _assert_close_all(_grads(got, [x, y, s, b]), _grads(want, [x, y, s, b]))


def test_siglip_loss_initial_value_is_near_ln2_times_batch_for_zero_logits():
    x, y = torch.zeros(8, 3), torch.zeros(8, 3)
    torch.testing.assert_close(siglip_loss(x, y, 1.0, 0.0), torch.tensor(8 * math.log(2.0)))
    torch.testing.assert_close(siglip_loss(x, y, 1.0, None), siglip_loss(x, y, 1.0, 0.0))


def test_infoloob_matches_cloob_formula_both_directions_summed():
    x, y = _feats(seed=4)
    inv_tau = _scalar(14.3)
    x_n = x / x.norm(dim=1, keepdim=True)
    y_n = y / y.norm(dim=1, keepdim=True)
    got = infoloob_loss(x_n, y_n, inv_tau)
    want = ref_infoloob_direction(x_n, y_n, inv_tau) + ref_infoloob_direction(y_n, x_n, inv_tau)
    torch.testing.assert_close(got, want)
    _assert_close_all(_grads(got, [x, y, inv_tau]), _grads(want, [x, y, inv_tau]))


def test_infoloob_default_inv_tau_and_can_be_negative():
    x = torch.eye(4)
    assert infoloob_loss(x, x).item() < 0  # leave-one-out: positives are not in the denominator
    torch.testing.assert_close(infoloob_loss(x, x), infoloob_loss(x, x, 14.3))


def test_infoloob_hopfield_matches_cloob():
    x, y = _feats(seed=5)
    x_n = (x / x.norm(dim=1, keepdim=True)).detach()
    y_n = (y / y.norm(dim=1, keepdim=True)).detach()
    x_n.requires_grad_(True)
    inv_tau, beta = _scalar(10.0), 8.0
    got = infoloob_loss(x_n, y_n, inv_tau, hopfield=True, scale_hopfield=beta)
    p_xx, p_yy = ref_hopfield(x_n, x_n, beta), ref_hopfield(y_n, y_n, beta)
    p_xy, p_yx = ref_hopfield(y_n, x_n, beta), ref_hopfield(x_n, y_n, beta)
    want = ref_infoloob_direction(p_xx, p_xy, inv_tau) + ref_infoloob_direction(p_yy, p_yx, inv_tau)
    torch.testing.assert_close(got, want)
    _assert_close_all(_grads(got, [x_n, inv_tau]), _grads(want, [x_n, inv_tau]))


def ref_kl_rows(s_logits, t_logits, temp):
    total = 0.0
    for i in range(s_logits.shape[0]):
        p = torch.softmax(t_logits[i] / temp, 0)
        q = torch.softmax(s_logits[i] / temp, 0)
        total = total + sum(p[j] * torch.log(p[j] / q[j]) for j in range(s_logits.shape[1]))
    return total / s_logits.shape[0]


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distill_loss_kl_both_directions(temperature):
    g = torch.Generator().manual_seed(6)
    student = torch.randn(5, 7, generator=g, dtype=D64, requires_grad=True)
    teacher = torch.randn(5, 7, generator=g, dtype=D64, requires_grad=True)
    got = distill_loss(student, teacher, temperature=temperature)
    rows = ref_kl_rows(student, teacher, temperature)
    cols = ref_kl_rows(student.T, teacher.T, temperature)
    want = 0.5 * temperature**2 * (rows + cols)
    torch.testing.assert_close(got, want)
    _assert_close_all(_grads(got, [student]), _grads(want, [student]))
    got.backward()
    assert teacher.grad is None  # the teacher is detached
    assert distill_loss(teacher, teacher).abs().item() < 1e-12


def test_distill_loss_feature_mse():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 4, generator=g)
    fs, ft = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    base = distill_loss(logits, logits.flip(0))
    got = distill_loss(logits, logits.flip(0), student_features=fs, teacher_features=ft, feature_weight=3.0)
    torch.testing.assert_close(got, base + 3.0 * ((fs - ft) ** 2).mean())
    pairs = distill_loss(logits, logits, student_features=(fs, ft), teacher_features=(ft, ft), feature_weight=2.0)
    torch.testing.assert_close(pairs, 2.0 * ((fs - ft) ** 2).mean())


def test_clip_distill_loss_builds_logits_from_features():
    x, y = _feats(seed=8)
    tx, ty = _feats(seed=9)
    got = clip_distill_loss(x, y, tx, ty, 3.0, 5.0, temperature=2.0, feature_weight=0.5)
    want = distill_loss(
        3.0 * x @ y.T,
        5.0 * tx @ ty.T,
        temperature=2.0,
        student_features=(x, y),
        teacher_features=(tx, ty),
        feature_weight=0.5,
    )
    torch.testing.assert_close(got, want)


# -- validation ------------------------------------------------------------------------------------------


def _ok():
    return torch.randn(4, 3), torch.randn(4, 3)


@pytest.mark.parametrize("loss", ["clip", "siglip", "infoloob"])
@pytest.mark.parametrize(
    "image, text, match",
    [
        (torch.randn(4, 3), torch.randn(5, 3), "rows"),
        (torch.randn(4, 3), torch.randn(4, 2), "dimension"),
        (torch.randn(4), torch.randn(4), "2 dimension"),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 3), "2 dimension"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), torch.randn(2, 2), "NaN"),
        (torch.randn(2, 2), torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), "NaN or infinite"),
        (torch.randn(0, 3), torch.randn(0, 3), "empty"),
    ],
)
def test_bad_features_raise(loss, image, text, match):
    call = {
        "clip": lambda: clip_loss(image, text, 1.0),
        "siglip": lambda: siglip_loss(image, text, 1.0, 0.0),
        "infoloob": lambda: infoloob_loss(image, text),
    }[loss]
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True, "8"])
def test_bad_chunk_size_raises(chunk_size):
    x, y = _ok()
    for call in (
        lambda: clip_loss(x, y, 1.0, chunk_size=chunk_size),
        lambda: siglip_loss(x, y, 1.0, 0.0, chunk_size=chunk_size),
        lambda: infoloob_loss(x, y, chunk_size=chunk_size),
    ):
        with pytest.raises(ValueError, match="chunk_size"):
            call()


def test_other_bad_arguments_raise():
    x, y = _ok()
    with pytest.raises(ValueError, match="geometry"):
        clip_loss(x, y, 1.0, geometry="hyperbolic")
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(x, y, float("nan"))
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        clip_loss(x, y, torch.ones(2))
    with pytest.raises(ValueError, match="logit_bias"):
        siglip_loss(x, y, 1.0, float("inf"))
    with pytest.raises(ValueError, match="at least 2"):
        infoloob_loss(x[:1], y[:1])
    with pytest.raises(ValueError, match="inv_tau"):
        infoloob_loss(x, y, 0.0)
    with pytest.raises(ValueError, match="hopfield"):
        infoloob_loss(x, y, hopfield=True, chunk_size=2)
    with pytest.raises(ValueError, match="shape"):
        distill_loss(torch.randn(3, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="temperature"):
        distill_loss(torch.randn(3, 3), torch.randn(3, 3), temperature=0.0)
    with pytest.raises(ValueError, match="feature_weight"):
        distill_loss(torch.randn(3, 3), torch.randn(3, 3), feature_weight=1.0)
    with pytest.raises(ValueError, match="NaN"):
        distill_loss(torch.full((2, 2), float("nan")), torch.randn(2, 2))
    with pytest.raises(ValueError, match="2 dimension"):
        distill_loss(np.zeros(3), np.zeros(3))
