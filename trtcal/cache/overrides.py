"""Hand-set ranges: one overrides file, applied the same way to a cache, to Q/DQ and to a TensorRT network.

The file is YAML or JSON (a document, or just the list of entries)::

    version: 1
    overrides:
      - tensor: /relu1/Relu_output_0     # an exact tensor name ...
        amax: 4.0                        # symmetric range [-4, 4]
        reason: ReLU6 upstream; the calibration set lacks bright images
      - pattern: "/layer4/*"             # ... or a glob over tensor names
        min: 0.0                         # an asymmetric range
        max: 6.0
        reason: Clip(0, 6)
      - tensor: logits
        scale: 0.125                     # amax = scale * qmax(bits)
        bits: 8                          # optional, 2..16, default 8
        reason: keep the logits' range stable across retrains

Each entry names its tensors by ``tensor`` (exact) or ``pattern`` (glob, see
:mod:`trtcal.core.patterns`), gives exactly one of ``amax``, ``min`` + ``max`` or ``scale``, and a
non-empty ``reason``. An entry that names no tensor of the target is an error. When several
entries set the same tensor, the last one wins and the earlier ones are reported.

Where the target is symmetric only (TensorRT's caches, networks and Q/DQ), an asymmetric range is
symmetrized to ``amax = max(|min|, |max|)`` with a warning naming the tensor and the codes the
range can no longer reach.

Pure: parsing text (YAML needs PyYAML, imported on use; ``safe_load`` only) and resolving entries
against a list of tensor names. Reading the file is the caller's job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from trtcal.cache.format import CacheEntry, CalibrationCache
from trtcal.core import patterns
from trtcal.core.errors import TrtcalError

SCHEMA_VERSION = 1
_KEYS = {"tensor", "pattern", "amax", "min", "max", "scale", "bits", "reason"}


@dataclass(frozen=True)
class Override:
    """One entry of an overrides file, validated."""

    index: int  # position in the file, from 1
    selector: str
    is_pattern: bool
    low: float  # the range [low, high]; symmetric entries have low == -high
    high: float
    bits: int
    reason: str
    given: str  # "amax", "min/max" or "scale"

    @property
    def symmetric(self) -> bool:
        return self.low == -self.high

    @property
    def amax(self) -> float:
        return max(abs(self.low), abs(self.high))

    def describe(self) -> str:
        what = "pattern" if self.is_pattern else "tensor"
        return f"override {self.index} ({what} {self.selector!r})"


@dataclass(frozen=True)
class Applied:
    """An override resolved to one tensor."""

    tensor: str
    override: Override
    amax: float  # what a symmetric target uses
    low: float
    high: float
    codes_lost: int = 0  # codes of 2**bits the symmetrized range cannot reach (0 when symmetric)
    replaced: tuple[int, ...] = ()  # indices of earlier overrides of the same tensor

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "amax": self.amax, "min": self.low, "max": self.high,
                "bits": self.override.bits, "reason": self.override.reason, "override": self.override.index,
                "codes_lost": self.codes_lost, "replaced": list(self.replaced)}


def parse(text: str, source: str = "<overrides>") -> list[Override]:
    """Parse an overrides document (YAML or JSON) into validated entries."""
    doc = _load(text, source)
    if isinstance(doc, dict):
        unknown = set(doc) - {"version", "overrides"}
        if unknown:
            raise TrtcalError(f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))} "
                              "(expected version, overrides)")
        version = doc.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise TrtcalError(f"{source}: schema version {version!r} is not supported (this trtcal reads {SCHEMA_VERSION})")
        entries = doc.get("overrides")
    else:
        entries = doc
    if not isinstance(entries, list):
        raise TrtcalError(f"{source}: expected a list of overrides (or a mapping with 'overrides: [...]')")
    if not entries:
        raise TrtcalError(f"{source}: no overrides in the file")
    return [_entry(item, i, source) for i, item in enumerate(entries, 1)]


def read(path) -> list[Override]:
    """Read and parse an overrides file (YAML or JSON)."""
    from trtcal.core import fileio

    return parse(fileio.read_text(path, max_bytes=16 * 2**20, what="overrides file"), str(path))


def _load(text: str, source: str):
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if not source.endswith((".yaml", ".yml")):
                raise TrtcalError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    try:
        import yaml
    except ImportError:
        raise TrtcalError(f"{source}: reading YAML needs PyYAML (pip install 'trtcal[yaml]'), or write the "
                          "overrides as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TrtcalError(f"{where}: not valid YAML: {problem}") from None


def _number(item: dict, key: str, where: str) -> float:
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TrtcalError(f"{where}: {key} must be a finite number, not {value!r}")
    return float(value)


def _entry(item, index: int, source: str) -> Override:
    where = f"{source}: override {index}"
    if not isinstance(item, dict):
        raise TrtcalError(f"{where}: expected a mapping with tensor/pattern, a range and a reason, not {item!r}")
    unknown = set(item) - _KEYS
    if unknown:
        raise TrtcalError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(allowed: {', '.join(sorted(_KEYS))})")
    if ("tensor" in item) == ("pattern" in item):
        raise TrtcalError(f"{where}: give exactly one of tensor (an exact name) or pattern (a glob)")
    is_pattern = "pattern" in item
    selector = item["pattern" if is_pattern else "tensor"]
    if not isinstance(selector, str) or not selector:
        raise TrtcalError(f"{where}: {'pattern' if is_pattern else 'tensor'} must be a non-empty string")
    where = f"{source}: override {index} ({'pattern' if is_pattern else 'tensor'} {selector!r})"
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise TrtcalError(f"{where}: needs a reason (a sentence saying why this range is set by hand)")
    bits = item.get("bits", 8)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise TrtcalError(f"{where}: bits must be an integer from 2 to 16, not {bits!r}")
    kinds = [k for k in ("amax", "scale") if k in item] + (["min/max"] if "min" in item or "max" in item else [])
    if len(kinds) != 1:
        raise TrtcalError(f"{where}: give exactly one of amax, scale, or min and max")
    qmax = 2 ** (bits - 1) - 1
    if kinds[0] == "amax":
        amax = _number(item, "amax", where)
        if amax <= 0:
            raise TrtcalError(f"{where}: amax must be > 0, not {amax!r}")
        low, high = -amax, amax
    elif kinds[0] == "scale":
        scale = _number(item, "scale", where)
        if scale <= 0:
            raise TrtcalError(f"{where}: scale must be > 0, not {scale!r}")
        low, high = -scale * qmax, scale * qmax
    else:
        if "min" not in item or "max" not in item:
            raise TrtcalError(f"{where}: min and max go together")
        low, high = _number(item, "min", where), _number(item, "max", where)
        if not low < high or (low > 0 or high < 0):
            raise TrtcalError(f"{where}: need min < max with 0 inside [min, max] (zero must be exact), "
                              f"not [{low!r}, {high!r}]")
    return Override(index, selector, is_pattern, low, high, bits, reason.strip(), kinds[0])


def codes_lost(low: float, high: float, bits: int = 8) -> int:
    """Codes of a ``bits``-bit symmetric quantizer over ``[-amax, amax]`` (``2 * qmax + 1`` of them,
    e.g. -127..127) that values in ``[low, high]`` never reach."""
    amax = max(abs(low), abs(high))
    if amax == 0:
        return 0
    total = 2**bits - 1
    step = amax / (2 ** (bits - 1) - 1)
    reached = int(round(-low / step)) + int(round(high / step)) + 1  # codes from low to high, zero included
    return max(0, total - reached)


def resolve(overrides: list[Override], names: list[str], *, symmetric: bool = True,
            target: str = "the target") -> tuple[dict[str, Applied], list[str]]:
    """Resolve ``overrides`` against the tensor ``names`` of ``target``.

    Returns the applied ranges by tensor (in ``names`` order) and warnings (symmetrization, a
    tensor set twice). An override that names no tensor raises :class:`TrtcalError`.
    """
    applied: dict[str, Applied] = {}
    warnings: list[str] = []
    for ov in overrides:
        if ov.is_pattern:
            chosen = patterns.select(ov.selector, names)
        else:
            chosen = [ov.selector] if ov.selector in set(names) else []
        if not chosen:
            raise TrtcalError(f"{ov.describe()} names no tensor of {target}")
        for name in chosen:
            lost = 0
            if symmetric and not ov.symmetric:
                lost = codes_lost(ov.low, ov.high, ov.bits)
                warnings.append(f"tensor {name!r}: {ov.describe()} range [{ov.low:g}, {ov.high:g}] symmetrized to "
                                f"amax {ov.amax:g} for a symmetric target: {lost} of {2 ** ov.bits - 1} codes unreachable")
            earlier = applied.get(name)
            replaced: tuple[int, ...] = ()
            if earlier is not None:
                replaced = earlier.replaced + (earlier.override.index,)
                warnings.append(f"tensor {name!r}: {ov.describe()} replaces override "
                                f"{', '.join(map(str, replaced))}")
            applied[name] = Applied(name, ov, ov.amax, ov.low, ov.high, lost, replaced)
    order = {n: i for i, n in enumerate(names)}
    return dict(sorted(applied.items(), key=lambda kv: order[kv[0]])), warnings


def apply_to_cache(cache, overrides: list[Override], *, allow_new: bool = False):
    """A copy of ``cache`` with the overrides applied (TensorRT caches are symmetric 8-bit).

    Returns ``(new cache, applied, warnings)``. With ``allow_new``, exact-name overrides of
    tensors the cache lacks add entries; patterns only match tensors the cache has.
    """
    names = cache.names()
    if allow_new:
        names = names + [o.selector for o in overrides if not o.is_pattern and o.selector not in set(names)]
    applied, warnings = resolve(overrides, names, symmetric=True, target="the cache")
    out = CalibrationCache(version=cache.version, algorithm=cache.algorithm, header=cache.header,
                           entries=[CacheEntry(e.name, e.bits, e.raw_hex) for e in cache.entries],
                           newline=cache.newline, final_newline=cache.final_newline)
    for name, a in applied.items():
        if a.override.bits != 8:
            warnings.append(f"tensor {name!r}: {a.override.describe()} asks for {a.override.bits} bits; a TensorRT "
                            "cache is 8-bit, so its amax is kept and the bit width is not")
        out.set_amax(name, a.amax)
    return out, applied, warnings
