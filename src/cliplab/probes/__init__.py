"""Compositional probes: does a model pick the true caption over hard negatives that reuse its words?

Readers for the released benchmarks (SugarCrepe, Winoground, ARO) and the same probes generated on the
built-in world, scored with any cliplab model (``evaluate_probe``) and by ``cliplab probe``. See
``docs/probes-and-curation.md``.
"""

from cliplab.probes.aro import load_aro_order, load_vg_attribution, load_vg_relation
from cliplab.probes.base import PairProbe, ProbeImages, SelectionProbe
from cliplab.probes.builtin_probes import builtin_probe
from cliplab.probes.evaluation import evaluate_probe, selection_metrics, winoground_metrics
from cliplab.probes.formats import PROBE_FORMATS, ProbeFormat, load_probe, register_probe_format
from cliplab.probes.sugarcrepe import SUGARCREPE_TYPES, load_sugarcrepe
from cliplab.probes.winoground import load_winoground

__all__ = [
    "PROBE_FORMATS",
    "SUGARCREPE_TYPES",
    "PairProbe",
    "ProbeFormat",
    "ProbeImages",
    "SelectionProbe",
    "builtin_probe",
    "evaluate_probe",
    "load_aro_order",
    "load_probe",
    "load_sugarcrepe",
    "load_vg_attribution",
    "load_vg_relation",
    "load_winoground",
    "register_probe_format",
    "selection_metrics",
    "winoground_metrics",
]
