"""``ADAPTERS``: the registry of feature adapters that ``run_few_shot``, ``base_to_new`` and ``cliplab adapt
--methods`` run, by name (a :class:`cliplab.extension.Registry`; entry-point group ``cliplab.adapters``).

``register_method(name, cls)`` adds an :class:`~cliplab.adapt.base.Adapter` subclass. A class's ``requires``
names the extra per-image inputs it needs (``amu``: ``aux_features`` from a second encoder). The built-ins are
registered here, in the order the protocol lists them.
"""

from __future__ import annotations

from cliplab.adapt.amu import AMU
from cliplab.adapt.base import Adapter
from cliplab.adapt.clip_adapter import CLIPAdapter
from cliplab.adapt.gda import GDA
from cliplab.adapt.linear_probe import LinearProbe
from cliplab.adapt.lpplusplus import LPPlusPlus
from cliplab.adapt.tip import TipAdapter, TipAdapterF
from cliplab.adapt.zeroshot import ZeroShot
from cliplab.extension import Registry

__all__ = ["ADAPTERS", "register_method"]


def _check(name: str, cls: type[Adapter]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"an adapter must be an Adapter subclass, got {cls!r}")


#: adapter name → estimator class
ADAPTERS: Registry[type[Adapter]] = Registry("adapter", group="cliplab.adapters", check=_check)


def register_method(name: str, cls: type[Adapter], *, replace: bool = False) -> type[Adapter]:
    """Add the adapter class ``cls`` to ``ADAPTERS`` under ``name`` (for ``run_few_shot``, ``cliplab adapt``);
    a taken name raises ValueError unless ``replace``."""
    return ADAPTERS.register(name, cls, replace=replace)


for _name, _cls in (
    ("zeroshot", ZeroShot),
    ("tip_adapter", TipAdapter),
    ("tip_adapter_f", TipAdapterF),
    ("gda", GDA),
    ("linear_probe", LinearProbe),
    ("clip_adapter", CLIPAdapter),
    ("lp++", LPPlusPlus),
    ("amu", AMU),
):
    register_method(_name, _cls)
