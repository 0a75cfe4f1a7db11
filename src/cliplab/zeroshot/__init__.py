"""Zero-shot classification: templates, class weights, evaluation."""

from cliplab.zeroshot.evaluate import zeroshot_evaluate
from cliplab.zeroshot.templates import class_prompts, get_templates, template_sets
from cliplab.zeroshot.weights import zeroshot_logits, zeroshot_weights

__all__ = [
    "class_prompts",
    "get_templates",
    "template_sets",
    "zeroshot_evaluate",
    "zeroshot_logits",
    "zeroshot_weights",
]
