"""GPTQ rounding: integer weight codes on fixed per-channel grids that cost a linear layer's output
less than rounding each weight to nearest (Frantar et al., "GPTQ", ICLR 2023; the Optimal Brain
Quantizer's closed form, column by column).

For output channel ``c`` with float weights ``w`` (``K`` inputs), scale ``s_c`` and the layer's
input second-moment matrix ``H = sum_p a_p a_p^T`` over calibration positions (the unfolded,
already quantized input: what the layer sees in the INT8 model), the squared output error of codes
``q`` is ``(s_c q - w)^T H (s_c q - w)`` (:func:`output_error`). Rounding to nearest minimises each
term alone and ignores ``H``; GPTQ quantizes one input column at a time and moves the channel's
still-unquantized weights to absorb that column's error, optimally for ``H`` (the update uses the
Cholesky factor of ``H``'s inverse, so all channels of a group move in one product).

:func:`gptq_codes` contract:

- ``rows`` ``[C, K]`` float weights, channel ``c`` in group ``c // (C / groups)``; ``hessian``
  ``[groups, K, K]`` (or ``[K, K]`` for one group), symmetric positive semi-definite;
- ``scales`` ``[C]`` the grid of each channel (what the Q/DQ writer stores); codes are
  ``clip(rint(.), -qmax, qmax)``, rounding half to even as QuantizeLinear does; a channel with
  scale 0 gets codes 0;
- ``damp`` times the mean diagonal of each group's ``H`` is added to its diagonal (GPTQ's
  dampening: ``H`` from few positions is singular);
- an input whose diagonal is 0 (never nonzero on the samples) rounds to nearest and moves no
  other weight; so does every input of a group whose ``H`` is all zero;
- ``act_order``: columns in order of decreasing ``H`` diagonal (GPTQ's "act-order"; the
  inputs that carry most energy are quantized while the most weights can still compensate);
- ``block``: columns per lazy batch update (the result does not depend on it beyond float
  rounding).

Pure numpy, float64 throughout; no ONNX. The gathering of ``H`` for ONNX layers lives in
:mod:`trtcal.ort.weight_rounding`.
"""

from __future__ import annotations

import numpy as np

from trtcal.core.errors import TrtcalError

#: GPTQ's default dampening (a fraction of the mean diagonal).
DAMP = 0.01


def _groups_of(rows: np.ndarray, hessian: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(rows, dtype=np.float64)
    h = np.asarray(hessian, dtype=np.float64)
    if h.ndim == 2:
        h = h[None]
    if rows.ndim != 2 or groups < 1 or rows.shape[0] % groups:
        raise TrtcalError(f"weight rounding: {rows.shape} weight rows do not split into {groups} groups")
    if h.shape != (groups, rows.shape[1], rows.shape[1]):
        raise TrtcalError(f"weight rounding: a {h.shape} input matrix for {groups} groups of {rows.shape[1]} inputs")
    return rows.reshape(groups, rows.shape[0] // groups, rows.shape[1]), h


def output_error(rows: np.ndarray, quantized: np.ndarray, hessian: np.ndarray, groups: int = 1) -> np.ndarray:
    """Per output channel, ``(quantized - rows)^T H (quantized - rows)``: the squared error the
    rounding adds to the layer's output over the positions ``H`` was summed on."""
    w, h = _groups_of(rows, hessian, groups)
    e = np.asarray(quantized, dtype=np.float64).reshape(w.shape) - w  # [g, Cg, K]
    return ((e @ h) * e).sum(-1).reshape(-1)


def round_to_nearest(rows: np.ndarray, scales: np.ndarray, qmax: int = 127) -> np.ndarray:
    """The codes the Q/DQ writer stores: ``clip(rint(rows / scale), -qmax, qmax)``, 0 where the scale is 0."""
    s = np.asarray(scales, dtype=np.float64).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(np.where(s > 0, np.asarray(rows, np.float64) / np.where(s > 0, s, 1), 0)), -qmax, qmax)
    return q.astype(np.int8 if qmax <= 127 else np.int32)


def _lower_inverse(lower: np.ndarray) -> np.ndarray:
    """The inverse of lower-triangular matrices ``[g, n, n]``, by halves (two half-size inverses
    and two products: about half the work of a general inverse)."""
    n = lower.shape[-1]
    if n <= 128:
        return np.linalg.inv(lower)
    m = n // 2
    top, bottom = _lower_inverse(lower[:, :m, :m]), _lower_inverse(lower[:, m:, m:])
    out = np.zeros_like(lower)
    out[:, :m, :m] = top
    out[:, m:, m:] = bottom
    out[:, m:, :m] = -(bottom @ (lower[:, m:, :m] @ top))
    return out


def _inverse_factor(h: np.ndarray, mean: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean I)^-1`` per group (``U^T U``), the
    dampening raised tenfold until every group's matrix factors. With ``J`` the order reversal and
    ``J H J = L L^T``, ``U = J L^-1 J`` (one factorisation and one triangular inverse, no inverse
    of ``H`` formed)."""
    k = h.shape[-1]
    diagonal = np.arange(k)
    d = damp
    for _ in range(8):
        damped = h[:, ::-1, ::-1].copy()  # J H J
        damped[:, diagonal, diagonal] += (d * np.maximum(mean, 1e-300))[:, None]
        try:
            lower = np.linalg.cholesky(damped)
        except np.linalg.LinAlgError:
            d = max(d * 10, 1e-6)
            continue
        return np.ascontiguousarray(_lower_inverse(lower)[:, ::-1, ::-1])
    raise TrtcalError("weight rounding: the input matrix does not factor even with strong dampening")


def gptq_codes(rows: np.ndarray, scales: np.ndarray, hessian: np.ndarray, *, groups: int = 1,
               damp: float = DAMP, act_order: bool = True, qmax: int = 127, block: int = 128) -> np.ndarray:
    """Integer codes ``[C, K]`` for ``rows`` on the grids ``scales``; see the module doc."""
    if not damp > 0:
        raise TrtcalError(f"weight rounding damp {damp!r}: must be > 0")
    if not isinstance(block, int) or block < 1:
        raise TrtcalError(f"weight rounding block {block!r}: must be a whole number >= 1")
    w, h = _groups_of(rows, hessian, groups)
    g, cg, k = w.shape
    s = np.asarray(scales, dtype=np.float64).reshape(-1)
    if s.size != g * cg or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise TrtcalError(f"weight rounding: {s.size} scales for {g * cg} channels (finite, >= 0)")
    s = s.reshape(g, cg, 1)
    live = s > 0
    h = h.copy()
    diag = np.einsum("gkk->gk", h)
    dead = ~(diag > 0)  # inputs that are zero on every sample: isolated, round to nearest
    mean = np.where(dead, 0, diag).sum(1) / np.maximum((~dead).sum(1), 1)  # of the live diagonal
    gi, ki = np.nonzero(dead)
    h[gi, :, ki] = 0
    h[gi, ki, :] = 0
    h[gi, ki, ki] = 1.0
    order = np.argsort(-np.where(dead, -1.0, diag), axis=1, kind="stable") if act_order else np.tile(np.arange(k), (g, 1))
    back = np.argsort(order, axis=1)
    gsel = np.arange(g)[:, None, None]
    h = h[gsel, order[:, :, None], order[:, None, :]]
    u = _inverse_factor(h, mean, damp)
    work = np.take_along_axis(w, order[:, None, :], axis=2).transpose(0, 2, 1).copy()  # [g, K, Cg]: a column a row
    codes = np.empty_like(work)
    step = s[:, :, 0]  # [g, Cg]
    safe = np.where(live[:, :, 0], step, np.inf)  # a scale of 0: codes 0
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        part = work[:, i1:i2, :]  # updated in place: these rows are not read after the block
        errs = np.empty_like(part)
        ub = u[:, i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = part[:, j, :]
            q = np.rint(col / safe)
            np.clip(q, -qmax, qmax, out=q)
            codes[:, i1 + j, :] = q
            err = errs[:, j, :]
            np.multiply(q, step, out=err)
            np.subtract(col, err, out=err)
            err /= ub[:, j, j][:, None]
            if j + 1 < i2 - i1:
                part[:, j + 1:, :] -= ub[:, j, j + 1:, None] * err[:, None, :]
        if i2 < k:
            work[:, i2:, :] -= u[:, i1:i2, i2:].transpose(0, 2, 1) @ errs
    codes = codes.transpose(0, 2, 1)
    codes = np.take_along_axis(codes, back[:, None, :], axis=2)
    return codes.reshape(g * cg, k).astype(np.int8 if qmax <= 127 else np.int32)
