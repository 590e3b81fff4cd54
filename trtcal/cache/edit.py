"""Editing a calibration cache: set, scale and drop ranges, applied in the order given.

Pure. Each operation names tensors by exact name or glob (:mod:`trtcal.core.patterns`); an operation
that matches nothing is an error, so a typo never silently does nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trtcal.cache.format import CacheEntry, CalibrationCache
from trtcal.core import patterns
from trtcal.core.errors import TrtcalError


@dataclass(frozen=True)
class EditOp:
    kind: str  # "set" (value = amax), "scale" (value = factor) or "drop"
    pattern: str
    value: float | None = None


@dataclass(frozen=True)
class Change:
    tensor: str
    op: str
    old_amax: float | None
    new_amax: float | None


def parse_op(kind: str, text: str) -> EditOp:
    """Parse a command-line operation: ``set NAME=AMAX``, ``scale PATTERN=FACTOR``, ``drop PATTERN``."""
    if kind == "drop":
        if not text:
            raise TrtcalError("--drop: empty pattern")
        return EditOp("drop", text)
    what = "AMAX" if kind == "set" else "FACTOR"
    name, sep, value_text = text.rpartition("=")
    if not sep or not name:
        raise TrtcalError(f"--{kind} {text!r}: expected {'NAME' if kind == 'set' else 'PATTERN'}={what}")
    try:
        value = float(value_text)
    except ValueError:
        raise TrtcalError(f"--{kind} {text!r}: {what} {value_text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (kind == "scale" and value == 0):
        raise TrtcalError(f"--{kind} {text!r}: {what} must be a finite number {'> 0' if kind == 'scale' else '>= 0'}")
    return EditOp(kind, name, value)


def edit(cache: CalibrationCache, ops: list[EditOp], *, allow_new: bool = False) -> tuple[CalibrationCache, list[Change]]:
    """Apply ``ops`` to a copy of ``cache``; return it and the list of changes."""
    out = CalibrationCache(version=cache.version, algorithm=cache.algorithm, header=cache.header,
                           entries=[CacheEntry(e.name, e.bits, e.raw_hex) for e in cache.entries],
                           newline=cache.newline, final_newline=cache.final_newline)
    changes: list[Change] = []
    for op in ops:
        if op.kind == "set" and op.pattern not in out:
            if not allow_new:
                raise TrtcalError(f"--set {op.pattern}: no tensor of that name in the cache (pass --allow-new to add it)")
            out.set_amax(op.pattern, op.value)
            changes.append(Change(op.pattern, "add", None, out.amax(op.pattern)))
            continue
        names = [op.pattern] if op.kind == "set" else patterns.select(op.pattern, out.names())
        if not names:
            raise TrtcalError(f"--{op.kind} {op.pattern}: matches no tensor in the cache")
        for name in names:
            old = out.amax(name)
            if op.kind == "drop":
                out.drop(name)
                changes.append(Change(name, "drop", old, None))
            else:
                out.set_amax(name, op.value if op.kind == "set" else old * op.value)
                changes.append(Change(name, op.kind, old, out.amax(name)))
    return out, changes
