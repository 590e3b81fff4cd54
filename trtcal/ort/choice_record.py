"""The record of :func:`trtcal.ort.quantize.quantize`'s range choice kept in the provenance
sidecars of what it writes (key :data:`SIDECAR_KEY` of the Q/DQ model's and the cache's
``.trtcal.json``), so that ``trtcal report`` can say per tensor what was chosen and why.

``{"samples": N, "chosen": <the winning range set>, "scores": {range set: output SQNR dB on the
selection samples, 3 decimals}, "tensors": {name: entry}}``, each entry:

- ``amax``: the range finally written (8 significant digits); ``method``: the candidate whose amax
  that is (None if none is);
- ``by``: why: ``"layer error"`` (the per-tensor choice: the least relative error at the layers
  that read the tensor, ``measured_at``), ``"outputs"`` (a single method applied to every tensor,
  ``chosen``, scored best at the model's outputs) or ``"refined"`` (``refine`` changed it at the
  outputs);
- ``per_tensor``: the per-tensor choice, whatever was finally used; ``measured_at``: where its
  errors were measured (the consuming layers' outputs, or the tensor itself);
- ``amaxes``, ``errors``: every candidate's amax and its relative error (noise over signal power,
  4 significant digits) there;
- ``unsigned``: true when quantized unsigned; ``float``: true when the fallback left it in float.

NaN and infinite numbers are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
"""

from __future__ import annotations

import math

#: The sidecar key of the record.
SIDECAR_KEY = "range_choice"


def _num(x: float, digits: int, *, decimals: bool = False) -> float | str:
    """``x`` to ``digits`` significant digits (``decimals``: decimal places); NaN/Inf as strings."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return round(x, digits) if decimals else float(f"{x:.{digits}g}")


#: The steps ``quantize`` appends to the winning range set's label, in this order, each as
#: ``" + step"``: tensor-by-tensor refinement, searched weight scales, GPTQ weight rounding.
STEPS = ("refined", "weights", "gptq")


def label_parts(chosen: str) -> tuple[str, list[str]]:
    """``(range set, [steps])`` of a quantize label such as ``"mse + refined + gptq"``."""
    parts = chosen.split(" + ")
    return parts[0], parts[1:]


def choice_record(choice, ranges: dict, chosen: str, scores: dict[str, float], float_tensors=()) -> dict:
    """The record of ``choice`` (a :class:`~trtcal.ort.range_choice.RangeChoice`): ``ranges``
    the ranges finally written (name -> :class:`~trtcal.core.ranges.Range`), ``chosen`` the winning
    range set's label (``"per-tensor"`` or a candidate's, with quantize's :data:`STEPS` as
    suffixes), ``scores`` every range set's output SQNR on the selection samples,
    ``float_tensors`` those the fallback left in float."""
    base, steps = label_parts(chosen)
    refined = "refined" in steps
    left_float = set(float_tensors)
    tensors = {}
    for name, c in choice.choices.items():
        amax = ranges[name].amax if name in ranges else c.amax
        if base == "per-tensor":
            start = c.amax
        else:
            start = c.amaxes.get(base, c.amaxes.get("entropy2", c.amax))
        by = "refined" if refined and amax != start else "layer error" if base == "per-tensor" else "outputs"
        first = base if by == "outputs" else c.method
        method = next((label for label in [first, *c.amaxes] if c.amaxes.get(label) == amax), None)
        entry = {"method": method, "amax": _num(amax, 8), "by": by, "per_tensor": c.method,
                 "measured_at": list(c.measured_at),
                 "amaxes": {label: _num(a, 8) for label, a in c.amaxes.items()},
                 "errors": {label: _num(e, 4) for label, e in c.errors.items()}}
        if c.unsigned:
            entry["unsigned"] = True
        if name in left_float:
            entry["float"] = True
        tensors[name] = entry
    return {"samples": choice.samples, "chosen": chosen,
            "scores": {label: _num(db, 3, decimals=True) for label, db in scores.items()}, "tensors": tensors}
