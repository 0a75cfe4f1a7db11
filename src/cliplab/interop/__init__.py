"""Models moving between ecosystems: ONNX export, open_clip ⇄ Hugging Face conversion, Long-CLIP stretching.

Layer: above ``models`` (it converts and exports ``Model``s), below ``cli`` (``cliplab export``, ``cliplab convert``).
Running exported ONNX models is a model source (``onnx:DIR``) in ``cliplab.models.onnx_runtime``.
"""

from cliplab.interop.clip_layout import UnmappableModel
from cliplab.interop.conversion import convert, convert_dir
from cliplab.interop.long_text import STRETCH_MODES, stretch_positions, stretched_positions

__all__ = ["STRETCH_MODES", "UnmappableModel", "convert", "convert_dir", "stretch_positions", "stretched_positions"]
