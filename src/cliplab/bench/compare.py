"""``cliplab bench --compare A.json B.json``: the headline numbers of two runs side by side."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cliplab.bench.figures import finite


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(res, dict) or "schema_version" not in res or "stages" not in res:
        raise ValueError(f"{path} is not a cliplab bench results.json (no schema_version/stages)")
    return res


def headline(res: dict[str, Any]) -> dict[str, float | None]:
    """Flatten a run into comparable ``metric -> value`` rows."""
    out: dict[str, float | None] = {}
    st = res["stages"]
    for task, r in st.get("zeroshot", {}).items():
        if "acc1" in r:
            out[f"zeroshot/{task}/acc1"] = r["acc1"]
    adapt = st.get("adapt", {})
    for m, r in adapt.get("results", {}).items():
        for k, v in r.items():
            out[f"adapt/{m}/{k}-shot"] = v["mean"]
    for k, v in st.get("retrieval", {}).items():
        if "recall@" in k:
            out[f"retrieval/{k}"] = v
    for task, r in st.get("ood", {}).items():
        if isinstance(r, dict) and "mean" in r:
            for m, v in r["mean"].items():
                out[f"ood/{task}/{m}/auroc"] = v["auroc"]
                out[f"ood/{task}/{m}/fpr95"] = v["fpr95"]
    cal = st.get("calibration", {})
    for k in ("accuracy", "ece", "ece_scaled", "aurc_msp", "aurc_logit_norm"):
        if k in cal:
            out[f"calibration/{k}"] = cal[k]
    for name, r in st.get("estimate", {}).get("estimators", {}).items():
        out[f"estimate/{name}/spearman"] = r["spearman"]
        out[f"estimate/{name}/mae"] = r["mae"]
    for k, v in res.get("timings", {}).items():
        out[f"seconds/{k}"] = v
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[metric, A, B, B − A]`` over the union of both runs' metrics."""
    ha, hb = headline(a), headline(b)
    rows = []
    for key in list(dict.fromkeys([*ha, *hb])):
        va, vb = ha.get(key), hb.get(key)
        delta = vb - va if finite(va) and finite(vb) else None  # None (or NaN) on either side: no difference
        rows.append([key, va, vb, delta])
    return rows
