"""Knowledge distillation between CLIP-family models (CLIP-KD's CKD, FD and ICL terms)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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


#: CLIP-KD's initial ICL scale: ``cross_logit_scale = ln(1/0.07)``, used as the multiplier itself
ICL_SCALE_INIT = math.log(1 / 0.07)


class DistillHead(nn.Module):
    """CLIP-KD's trainable distillation parts (winycg/CLIP-KD ``KDClipLoss``).

    * ``cross_logit_scale``: the ICL logit multiplier, initialised to ``ln(1/0.07) ≈ 2.66`` and, as in the
      reference code, multiplied in as it is (no ``exp``).
    * ``visual_proj`` / ``text_proj``: ``nn.Linear(student_dim, teacher_dim)`` (with bias), present only
      when the dimensions differ; the student's features are projected, then L2-normalised, before the
      FD and ICL terms (CKD compares the student's own logits and needs no projection).

    Its parameters must be optimised with the student's (``cliplab.train`` adds them to the optimizer
    and the checkpoint).
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim, self.teacher_dim = int(student_dim), int(teacher_dim)
        self.cross_logit_scale = nn.Parameter(torch.tensor(ICL_SCALE_INIT))
        if self.student_dim != self.teacher_dim:
            self.visual_proj: nn.Module | None = nn.Linear(self.student_dim, self.teacher_dim)
            self.text_proj: nn.Module | None = nn.Linear(self.student_dim, self.teacher_dim)
        else:
            self.visual_proj = self.text_proj = None

    def project(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's features in the teacher's space, L2-normalised: ``norm(proj(x))`` (``norm(x)`` when
        the dimensions agree)."""
        if self.visual_proj is not None and self.text_proj is not None:  # both or neither
            image, text = self.visual_proj(image), self.text_proj(text)
        return F.normalize(image, dim=1), F.normalize(text, dim=1)


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
    icl_weight: float = 0.0,
    head: DistillHead | None = None,
    geometry: str = "cosine",
) -> torch.Tensor:
    """CLIP-KD (Yang et al., CVPR 2024) from features: ``CKD + icl_weight·ICL + feature_weight·FD``.

    * CKD (``distill_loss``): the student's and teacher's ``[B, B]`` logits, each with its own scale
      (``s·I·Tᵀ``, or ``−s·‖I_i − T_j‖²`` for ``geometry="euclidean"``), KL in both directions.
    * FD: ``MSE(Î, I_t) + MSE(T̂, T_t)`` where ``Î, T̂`` are the student's features projected to the
      teacher's space and L2-normalised (``head.project``; without a head they are used as given, which
      needs equal dimensions).
    * ICL (interactive contrastive learning): ``½·[CE(c·Î·T_tᵀ, arange) + CE(c·T̂·I_tᵀ, arange)]`` — the
      student's images against the teacher's texts and vice versa, ``c = head.cross_logit_scale``
      (``ICL_SCALE_INIT`` without a head).

    The paper's best combination is CKD + ICL + FD (``icl_weight = 1``, ``feature_weight = 2000``, the
    defaults of the trainer's distillation objective). The teacher's features are detached.
    """
    geometry = check_geometry(geometry)
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    t_image, t_text = as_pair(
        teacher_image_features, teacher_text_features, "teacher_image_features", "teacher_text_features"
    )
    if t_image.shape[0] != image.shape[0]:
        raise ValueError(f"the student has {image.shape[0]} pairs but the teacher {t_image.shape[0]}")
    if not (isinstance(icl_weight, int | float) and icl_weight >= 0):
        raise ValueError(f"icl_weight must be a non-negative number, got {icl_weight!r}")
    scale = as_scalar(logit_scale, "logit_scale", image)
    t_scale = as_scalar(teacher_logit_scale, "teacher_logit_scale", t_image)
    t_image, t_text = t_image.detach(), t_text.detach()
    with torch.no_grad():
        t_logits = pairwise_logits(t_image, t_text, t_scale, geometry)
    needs_teacher_space = feature_weight > 0 or icl_weight > 0
    s_image, s_text = image, text
    if needs_teacher_space:
        if head is not None:
            s_image, s_text = head.project(image, text)
        elif image.shape[1] != t_image.shape[1]:
            raise ValueError(
                f"the student's features have dimension {image.shape[1]} but the teacher's {t_image.shape[1]}: "
                "FD and ICL need a projection head (DistillHead)"
            )
    loss = distill_loss(
        pairwise_logits(image, text, scale, geometry),
        t_logits,
        temperature=temperature,
        student_features=(s_image, s_text) if feature_weight > 0 else None,
        teacher_features=(t_image, t_text) if feature_weight > 0 else None,
        feature_weight=feature_weight,
    )
    if icl_weight > 0:
        c = head.cross_logit_scale.to(s_image.dtype) if head is not None else as_scalar(ICL_SCALE_INIT, "c", image)
        labels = torch.arange(image.shape[0], device=image.device)
        icl = 0.5 * (
            F.cross_entropy(c * s_image @ t_text.to(s_image.dtype).T, labels)
            + F.cross_entropy(c * s_text @ t_image.to(s_text.dtype).T, labels)
        )
        loss = loss + icl_weight * icl
    return loss


__all__ = ["ICL_SCALE_INIT", "DistillHead", "clip_distill_loss", "distill_loss"]
