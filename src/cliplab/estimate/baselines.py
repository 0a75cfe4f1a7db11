"""Label-free accuracy estimators for a shifted test set (baselines for MaNo).

* ``average_confidence``: mean max softmax probability (Hendrycks & Gimpel 2017).
* ``doc``: Difference of Confidences (Guillory et al., ICCV 2021).
* ``atc``: Average Thresholded Confidence (Garg et al., ICLR 2022): threshold as ``find_threshold_balance``,
  on temperature-scaled logits (the paper's protocol).
* ``nuclear_norm``: normalised nuclear norm of the softmax matrix (Deng et al., ICML 2023).

``average_confidence``, ``doc`` and ``atc`` return accuracy estimates in [0, 1]; ``nuclear_norm`` (like
``mano``) returns a score that correlates with accuracy.
"""

from __future__ import annotations

import math

import torch

from cliplab._validation import ArrayLike, as_labels
from cliplab.ood.scores import as_logits


def _val(val_logits: ArrayLike, val_labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    z = as_logits(val_logits, "val_logits", dtype=torch.float64)
    y = as_labels(val_labels, "val_labels", n=z.shape[0], num_classes=z.shape[1])
    return z, y


def _max_prob(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    return torch.exp(z.max(1).values - torch.logsumexp(z, 1))


def average_confidence(logits: ArrayLike) -> float:
    """Mean over samples of ``max_k softmax(z)_k`` (an accuracy estimate)."""
    return float(_max_prob(as_logits(logits, dtype=torch.float64)).mean())


def doc(val_logits: ArrayLike, val_labels: ArrayLike, logits: ArrayLike) -> float:
    """Difference of Confidences: ``acc_val − (conf_val − conf_target)``, conf = average max softmax."""
    zv, yv = _val(val_logits, val_labels)
    z = as_logits(logits, dtype=torch.float64)
    if z.shape[1] != zv.shape[1]:
        raise ValueError(f"logits have {z.shape[1]} classes but val_logits have {zv.shape[1]}")
    acc = float((zv.argmax(1) == yv).double().mean())
    return acc - (float(_max_prob(zv).mean()) - float(_max_prob(z).mean()))


def _atc_score(z: torch.Tensor, score: str) -> torch.Tensor:
    if score == "maxconf":
        return _max_prob(z)
    if score == "entropy":  # negative entropy Σ p log p (higher = more confident)
        logp = torch.log_softmax(z.double(), 1)
        return (logp.exp() * logp).sum(1)
    raise ValueError(f"score must be 'maxconf' or 'entropy', got {score!r}")


Temperature = float | str | None


def atc_temperature(val_logits: ArrayLike, val_labels: ArrayLike, temperature: Temperature = "fit") -> float:
    """The temperature ATC divides the logits by: ``"fit"`` = NLL-optimal on the validation set
    (``TemperatureScaling``, as Garg et al.'s ``getATC_acc.py`` calibrates with ``TempScaling`` first),
    a positive number = that temperature, ``None`` = 1 (raw logits)."""
    if temperature is None:
        return 1.0
    if isinstance(temperature, str):
        if temperature != "fit":
            raise ValueError(f"temperature must be 'fit', a positive number or None, got {temperature!r}")
        from cliplab.metrics.calibration import TemperatureScaling

        zv, yv = _val(val_logits, val_labels)
        return float(TemperatureScaling().fit(zv, yv).temperature_)
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    return t


def atc_threshold(
    val_logits: ArrayLike, val_labels: ArrayLike, score: str = "maxconf", *, temperature: Temperature = "fit"
) -> float:
    """The ATC threshold ``t`` as Garg et al.'s ``find_threshold_balance`` computes it (ATC_code).

    Validation scores (of the temperature-scaled logits, see ``atc_temperature``) are sorted ascending
    (stable); moving them one by one below the threshold, ``fp`` = wrong predictions still above and
    ``fn`` = right predictions already below; ``t`` is the score at which ``|fp − fn|`` first reaches its
    minimum (strictly improving on the start, ``|#wrong − 0|``; otherwise ``t = 0``, as the reference).
    The sample at ``t`` itself counts as above, so on the validation set the share with ``score ≥ t`` is
    the validation accuracy plus ``1/n`` when the balance is exact.
    """
    zv, yv = _val(val_logits, val_labels)
    temp = atc_temperature(zv, yv, temperature)
    s = _atc_score(zv / temp, score)
    correct = (zv.argmax(1) == yv).double()
    order = torch.sort(s, stable=True).indices
    fn = torch.cumsum(correct[order], 0)  # right predictions at or below each position
    fp = (1.0 - correct).sum() - torch.cumsum(1.0 - correct[order], 0)  # wrong predictions above it
    gap = (fp - fn).abs()
    start = float((1.0 - correct).sum())
    best = int(torch.argmin(gap))  # the first minimum
    if not float(gap[best]) < start:
        return 0.0
    return float(s[order][best])


def atc(
    val_logits: ArrayLike,
    val_labels: ArrayLike,
    logits: ArrayLike,
    score: str = "maxconf",
    *,
    temperature: Temperature = "fit",
) -> float:
    """Average Thresholded Confidence (Garg et al., ICLR 2022): share of target samples with
    ``score ≥ t`` (``atc_threshold``), the target logits divided by the same validation temperature.

    ``score="maxconf"`` (ATC-MC, max softmax) or ``"entropy"`` (ATC-NE, negative entropy).
    ``temperature="fit"`` (the paper's protocol: temperature scaling on the validation set first),
    a number, or None for the raw logits.
    """
    zv, yv = _val(val_logits, val_labels)
    z = as_logits(logits, dtype=torch.float64)
    if z.shape[1] != zv.shape[1]:
        raise ValueError("logits and val_logits have a different number of classes")
    temp = atc_temperature(zv, yv, temperature)
    t = atc_threshold(zv, yv, score, temperature=temp)
    return float((_atc_score(z / temp, score) >= t).double().mean())


def nuclear_norm(logits: ArrayLike) -> float:
    """``‖P‖_* / sqrt(min(N, K)·N)`` with ``P = softmax(z)`` ``[N, K]`` (Deng et al. 2023), in [0, 1].

    The singular values come from the eigenvalues of the smaller Gram matrix (``PᵀP`` or ``PPᵀ``),
    computed in float64.
    """
    z = as_logits(logits, dtype=torch.float64)
    P = torch.softmax(z, 1)
    n, k = P.shape
    gram = P.T @ P if n >= k else P @ P.T
    singular = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt()
    return float(singular.sum() / math.sqrt(min(n, k) * n))
