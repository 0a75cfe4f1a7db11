"""Prompt learning through the encoders (``cliplab.adapt.prompting``).

Every learner: ``fit(model, support, labels=None, classnames=None, *, val=None, val_labels=None) -> self``,
``logits(x) -> [M, C]``, ``predict(x)``; the model's weights never change (only prompt parameters get
gradients). ``support``/``x``: cached image features ``[N, D]`` (text-only methods), a pixel batch, a cliplab
Dataset or a list of images.

* ``CoOp`` — learned context vectors (unified or class-specific; class token at the end, middle or front).
* ``CoCoOp`` — a meta-network conditions the context on each image.
* ``KgCoOp`` — CoOp plus ``λ·‖t − w_clip‖²`` toward the hand-crafted prompts.
* ``ProGrad`` — gradients projected off the direction that conflicts with the zero-shot KL gradient.
* ``MaPLe`` — deep prompts in both towers, coupled language → vision (ViT towers; needs images).
* ``TPT`` — test-time prompt tuning on augmented views of each test image, reset after each.
* ``CoOpTPT`` (``coop_tpt``) — CoOp trained on the support set, then TPT from its learned context.

``PromptedText`` is the text-tower adapter layer they share (a forward hook on ``Model.token_embeddings()``);
``run_prompt_few_shot`` / ``prompt_base_to_new`` are the protocol (``PROMPT_METHODS`` registry).
"""

from cliplab.adapt.prompting.cocoop import CoCoOp
from cliplab.adapt.prompting.coop import CoOp, KgCoOp, ProGrad
from cliplab.adapt.prompting.coop_tpt import CoOpTPT
from cliplab.adapt.prompting.learner import PromptLearner
from cliplab.adapt.prompting.maple import MaPLe
from cliplab.adapt.prompting.protocol import (
    PROMPT_METHODS,
    prompt_base_to_new,
    register_prompt_method,
    run_prompt_few_shot,
)
from cliplab.adapt.prompting.text_prompts import PromptedText, build_layout
from cliplab.adapt.prompting.tpt import TPT

__all__ = [
    "PROMPT_METHODS",
    "TPT",
    "CoCoOp",
    "CoOp",
    "CoOpTPT",
    "KgCoOp",
    "MaPLe",
    "ProGrad",
    "PromptLearner",
    "PromptedText",
    "build_layout",
    "prompt_base_to_new",
    "register_prompt_method",
    "run_prompt_few_shot",
]
