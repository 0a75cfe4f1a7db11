"""WinCLIP's compositional prompt ensemble (Jeong et al., "WinCLIP: Zero-/Few-Shot Anomaly Classification and
Segmentation", CVPR 2023, Sec. 4.1 and Appendix A).

Each state word is a phrase about the object (``"flawless {}"``, ``"{} with defect"``), each template a
sentence around it (``"a cropped photo of the {}."``); every (state, template) pair is one prompt. The text
embeddings of all normal prompts are averaged into one "normal" vector and those of all anomalous prompts into
one "anomalous" vector (after L2-normalising each prompt's embedding, as a prompt ensemble is averaged in CLIP).
The lists are the paper's, as released in anomalib's ``winclip/prompting.py`` (7 normal × 21 templates = 147
prompts, 4 anomalous × 21 = 84; the duplicated "jpeg corrupted" template is the released list's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["ANOMALOUS_STATES", "NORMAL_STATES", "TEMPLATES", "prompt_ensemble", "state_embeddings"]

NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ANOMALOUS_STATES: tuple[str, ...] = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)


def prompt_ensemble(object_name: str) -> tuple[list[str], list[str]]:
    """``(normal, anomalous)`` prompts: every template around every state of ``object_name`` (state-major)."""
    name = str(object_name).strip()
    if not name:
        raise ValueError("the object name for the prompts is empty")
    normal = [t.format(s.format(name)) for s in NORMAL_STATES for t in TEMPLATES]
    anomalous = [t.format(s.format(name)) for s in ANOMALOUS_STATES for t in TEMPLATES]
    return normal, anomalous


def state_embeddings(model: Any, object_name: str) -> torch.Tensor:
    """``[2, E]`` L2-normalised: the mean normalised text embedding of the normal prompts, then the anomalous."""
    rows = []
    for prompts in prompt_ensemble(object_name):
        emb = F.normalize(model.encode_texts(prompts).float(), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)
