"""Knowledge distillation between CLIP-family models (CLIP-KD's CKD and FD terms)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike, as_tensor
from cliplab.losses._common import Scalar, as_pair, as_scalar, check_geometry, pairwise_logits

FeatureArg = ArrayLike | Sequence[ArrayLike] | None


def _kl_rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean_i KL(softmax(t_i/T) ‖ softmax(s_i/T))`` over the rows."""
    return F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def _feature_list(x: FeatureArg, name: str) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor) or (x is not None and not isinstance(x, list | tuple)):
        return [as_tensor(x, name, dtype=None)]
    return [as_tensor(t, f"{name}[{k}]", dtype=None) for k, t in enumerate(x or [])]


def distill_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    student_features: FeatureArg = None,
    teacher_features: FeatureArg = None,
    feature_weight: float = 0.0,
) -> torch.Tensor:
    """Contrastive knowledge distillation (CLIP-KD, Yang et al., CVPR 2024: CKD + FD).

    ``L = ½·T²·[mean_i KL(p^t_i ‖ p^s_i) + mean_j KL(q^t_j ‖ q^s_j)] + w·Σ_k MSE(f^s_k, f^t_k)``
    where ``p_i = softmax(z_i·/T)`` are the image→text rows and ``q_j = softmax(z_·j/T)`` the
    text→image columns of the ``[N, M]`` logits, the teacher's are detached, ``T²`` is Hinton's
    factor (1 at the default ``T = 1``) and the MSE is the mean over elements (``feature_weight = w``;
    CLIP-KD uses 2000 on L2-normalised features).

    Args:
        student_logits, teacher_logits: ``[N, M]`` image→text logits (already scaled).
        temperature: ``T > 0``.
        student_features, teacher_features: a tensor or a sequence of tensors (e.g. ``(image, text)``)
            of matching shapes; required when ``feature_weight > 0``.
        feature_weight: ``w ≥ 0``.

    Raises:
        ValueError: shapes differ, non-2-D or non-finite logits, ``T ≤ 0``, ``w < 0``, or missing /
            mismatched features when ``w > 0``.
    """
    student = as_tensor(student_logits, "student_logits", dtype=None, ndim=2)
    teacher = as_tensor(teacher_logits, "teacher_logits", dtype=None, ndim=2)
    if student.shape != teacher.shape:
        raise ValueError(f"student_logits has shape {tuple(student.shape)} but teacher_logits {tuple(teacher.shape)}")
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not (isinstance(feature_weight, int | float) and feature_weight >= 0):
        raise ValueError(f"feature_weight must be a non-negative number, got {feature_weight!r}")
    student = student.float() if not student.is_floating_point() else student
    teacher = teacher.detach().to(student.dtype)
    t = float(temperature)
    loss = 0.5 * t * t * (_kl_rows(student, teacher, t) + _kl_rows(student.T, teacher.T, t))
    if feature_weight > 0:
        s_feats = _feature_list(student_features, "student_features")
        t_feats = _feature_list(teacher_features, "teacher_features")
        if not s_feats or len(s_feats) != len(t_feats):
            raise ValueError(
                f"feature_weight > 0 needs student_features and teacher_features of the same length, "
                f"got {len(s_feats)} and {len(t_feats)}"
            )
        for k, (fs, ft) in enumerate(zip(s_feats, t_feats)):
            if fs.shape != ft.shape:
                raise ValueError(
                    f"student_features[{k}] has shape {tuple(fs.shape)} but teacher_features[{k}] {tuple(ft.shape)}"
                )
            loss = loss + feature_weight * F.mse_loss(fs, ft.detach().to(fs.dtype))
    return loss


def clip_distill_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    teacher_image_features: ArrayLike,
    teacher_text_features: ArrayLike,
    logit_scale: Scalar,
    teacher_logit_scale: Scalar,
    *,
    temperature: float = 1.0,
    feature_weight: float = 0.0,
    geometry: str = "cosine",
) -> torch.Tensor:
    """``distill_loss`` from features: the student's and teacher's ``[B, B]`` logits are built with
    their own scales (``s·I·Tᵀ``, or ``−s·‖I_i − T_j‖²`` for ``geometry="euclidean"``, student and
    teacher alike) and the feature term compares ``(image, text)`` with the teacher's ``(image, text)``
    (same dimension needed when ``feature_weight > 0``)."""
    geometry = check_geometry(geometry)
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    t_image, t_text = as_pair(
        teacher_image_features, teacher_text_features, "teacher_image_features", "teacher_text_features"
    )
    if t_image.shape[0] != image.shape[0]:
        raise ValueError(f"the student has {image.shape[0]} pairs but the teacher {t_image.shape[0]}")
    scale = as_scalar(logit_scale, "logit_scale", image)
    t_scale = as_scalar(teacher_logit_scale, "teacher_logit_scale", t_image)
    with torch.no_grad():
        t_logits = pairwise_logits(t_image, t_text, t_scale, geometry)
    return distill_loss(
        pairwise_logits(image, text, scale, geometry),
        t_logits,
        temperature=temperature,
        student_features=(image, text) if feature_weight > 0 else None,
        teacher_features=(t_image, t_text) if feature_weight > 0 else None,
        feature_weight=feature_weight,
    )


__all__ = ["clip_distill_loss", "distill_loss"]
