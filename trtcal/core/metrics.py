"""Streaming comparison of a reference tensor (FP32) with a test tensor (INT8), batch by batch.

Pure numpy. Each :class:`Comparison` keeps a few sums, so memory does not grow with the data:

- SQNR in dB: ``10 log10(sum(ref^2) / sum((ref - test)^2))`` over every value seen (inf when
  the two agree exactly; -inf when the reference is all zeros and the test is not).
- cosine similarity per sample (axis 0 is the batch), averaged, and the worst sample's.
- max |ref - test|.
- for class-score outputs (``classes`` set: the caller says which outputs are class scores;
  the class axis is the last, every other position is one prediction: a row of ``[N, C]``, each
  ``(n, t)`` of a sequence ``[N, T, C]``): top-1 agreement of the two argmaxes per position, the
  mean KL divergence ``KL(softmax(ref) || softmax(test))`` per position in nats (it weighs the
  classes by the reference's probabilities, so it follows top-1 flips more closely than SQNR,
  which weighs all logits alike), the top-1 agreement over the positions the reference is sure
  of (its top-1 probability at least ``confidence``: on unlabelled, out-of-distribution data most
  flips are near-ties, and this separates them), and, for ``[N, C]`` outputs, top-1 accuracy of
  each against labels when labels are given. ``classes="logits"``: the values are logits (or
  log-probabilities); ``"probabilities"``: a softmax's output, whose logarithm (floored at
  1e-30) stands for the logits, so the KL divergence is that of the probabilities themselves.

**Outputs that mix scales.** A detector's head often writes box coordinates in pixels and class
scores in 0..1 into one tensor (YOLOv8: ``[N, 4 + C, boxes]``), where the plain SQNR is the boxes'
alone: a range that wrecks every class score moves it by nothing. So the signal and noise are
also summed per channel along axis 1 and along the last axis (outputs of rank 3 or more); when
along one of them a minority of the channels (fewer than half) each have more than
:data:`MIXED_SCALES` (20 dB) the signal power of every other channel (YOLOv8n: the 4 box rows
over the 18 score rows, by 78 dB; not all-MiniLM-L6-v2's embedding, whose 3 near-zero dimensions
of 384 are the majority's outliers, not a minority above it),
:attr:`Comparison.noise_ratio`, the error that searches and fallbacks minimise, is the mean over
that axis's channels of each one's noise-to-signal ratio, capped at 1 (a channel lost is lost,
whatever its scale; channels with no signal are left out). :attr:`Comparison.balanced_sqnr_db` is
its ``-10 log10``; :attr:`Comparison.sqnr_db` stays the plain one.

Sums are accumulated in float64. Non-finite values are counted and left out of the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: What :class:`Comparison` takes for ``classes``.
CLASSES = (None, "logits", "probabilities")
#: Channels whose signal powers span more than this factor (20 dB) make an output "mixed-scale".
MIXED_SCALES = 100.0
#: Probabilities below this count as this much before their logarithm is taken.
PROB_FLOOR = 1e-30


def sqnr_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` with the edge cases defined (see module doc)."""
    if noise == 0:
        return math.inf if signal > 0 else math.nan
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class Comparison:
    """Running agreement between reference and test values of one tensor."""

    name: str
    signal: float = 0.0  # sum ref^2
    noise: float = 0.0  # sum (ref - test)^2
    count: int = 0
    nonfinite: int = 0
    max_abs_error: float = 0.0
    cosine_sum: float = 0.0
    cosine_min: float = math.inf
    samples: int = 0
    classes: str | None = None  # None (not class scores), "logits" or "probabilities" (see module doc)
    positions: int = 0  # predictions scored as class scores (rows of [N, C], (n, t) of [N, T, C])
    agree: int = 0
    kl_sum: float = 0.0
    correct_ref: int = 0
    correct_test: int = 0
    labelled: int = 0
    shape: tuple = field(default_factory=tuple)
    confidence: float = 0.5  # reference top-1 probability from which a sample counts as sure
    sure: int = 0  # samples the reference is sure of
    sure_agree: int = 0
    channel_signal: dict = field(default_factory=dict)  # axis -> per-channel sum ref^2 (rank >= 3)
    channel_noise: dict = field(default_factory=dict)  # axis -> per-channel sum (ref - test)^2
    sqnr_only: bool = False  # count only what the SQNR needs (no cosine, max error, top-1 or KL)

    def __post_init__(self) -> None:
        if self.classes not in CLASSES:
            raise ValueError(f"classes {self.classes!r}: choose from {', '.join(map(str, CLASSES))}")

    @property
    def classifier(self) -> bool:
        return self.classes is not None

    def update(self, ref: np.ndarray, test: np.ndarray, labels: np.ndarray | None = None) -> None:
        ref = np.asarray(ref)
        test = np.asarray(test)
        if ref.shape != test.shape:
            raise ValueError(f"tensor {self.name!r}: shapes differ: {ref.shape} vs {test.shape}")
        if self.classes is not None and not has_class_axis(ref.shape):
            raise ValueError(f"output {self.name!r}: shape {list(ref.shape)} has no class axis (class scores "
                             "need rank >= 2 and a last axis > 1)")
        if labels is not None and (self.classes is None or ref.ndim != 2):
            raise ValueError(f"tensor {self.name!r}: labels are one per sample, for [N, C] class scores, "
                             f"not for shape {list(ref.shape)}")
        self.shape = ref.shape
        r = ref.astype(np.float64, copy=False)
        t = test.astype(np.float64, copy=False)
        finite = np.isfinite(r) & np.isfinite(t)
        if not finite.all():
            self.nonfinite += int(finite.size - np.count_nonzero(finite))
            r = np.where(finite, r, 0.0)
            t = np.where(finite, t, 0.0)
        err = r - t
        self.signal += float(np.einsum("i,i->", r.ravel(), r.ravel()))
        self.noise += float(np.einsum("i,i->", err.ravel(), err.ravel()))
        self.count += int(np.count_nonzero(finite))
        if r.ndim >= 3:
            for axis in dict.fromkeys((1, r.ndim - 1)):
                others = tuple(a for a in range(r.ndim) if a != axis)
                sig, noi = np.square(r).sum(axis=others), np.square(err).sum(axis=others)
                if axis in self.channel_signal and self.channel_signal[axis].shape == sig.shape:
                    self.channel_signal[axis] += sig
                    self.channel_noise[axis] += noi
                else:
                    self.channel_signal[axis], self.channel_noise[axis] = sig, noi
        if self.sqnr_only:
            return
        if err.size:
            self.max_abs_error = max(self.max_abs_error, float(np.abs(err).max()))
        if r.ndim >= 1 and r.shape[0] > 0:
            rs = r.reshape(r.shape[0], -1)
            ts = t.reshape(t.shape[0], -1)
            nr, nt = np.linalg.norm(rs, axis=1), np.linalg.norm(ts, axis=1)
            dots = np.einsum("ij,ij->i", rs, ts)
            both = nr * nt
            # a zero vector against a zero vector agrees perfectly; against anything else not at all
            cos = np.where(both > 0, dots / np.where(both > 0, both, 1.0), np.where((nr == 0) & (nt == 0), 1.0, 0.0))
            cos = np.clip(cos, -1.0, 1.0)  # rounding can reach 1 + 2e-16
            self.cosine_sum += float(cos.sum())
            self.cosine_min = min(self.cosine_min, float(cos.min()))
            self.samples += rs.shape[0]
        if self.classes is not None:
            c = ref.shape[-1]
            top_r = np.argmax(np.where(np.isfinite(ref), ref, -np.inf).reshape(-1, c), axis=1)
            top_t = np.argmax(np.where(np.isfinite(test), test, -np.inf).reshape(-1, c), axis=1)
            self.agree += int(np.count_nonzero(top_r == top_t))
            self.positions += top_r.shape[0]
            rp, tp = r.reshape(-1, c), t.reshape(-1, c)
            if self.classes == "probabilities":
                rp, tp = np.log(np.maximum(rp, PROB_FLOOR)), np.log(np.maximum(tp, PROB_FLOOR))
            lr = _log_softmax(rp)
            self.kl_sum += float(_kl_rows(lr, tp).sum())
            sure = np.exp(lr.max(axis=1)) >= self.confidence
            self.sure += int(np.count_nonzero(sure))
            self.sure_agree += int(np.count_nonzero(sure & (top_r == top_t)))
            if labels is not None:
                labels = np.asarray(labels).reshape(-1)
                if labels.shape[0] != r.shape[0]:
                    raise ValueError(f"tensor {self.name!r}: {labels.shape[0]} labels for {r.shape[0]} samples")
                self.correct_ref += int(np.count_nonzero(top_r == labels))
                self.correct_test += int(np.count_nonzero(top_t == labels))
                self.labelled += labels.shape[0]

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise)

    @property
    def mixed_axis(self) -> int | None:
        """The axis along which a minority of channels dwarf the others by more than
        :data:`MIXED_SCALES` (the larger gap of axis 1 and the last), or None: the output is
        scored as a whole (module doc)."""
        best, gap_best = None, MIXED_SCALES
        for axis, sig in self.channel_signal.items():
            p = np.sort(sig)[::-1]
            for k in range(1, (p.size + 1) // 2):  # the top k channels against all the others
                if p[k] > 0 and p[k - 1] / p[k] > gap_best:
                    best, gap_best = axis, float(p[k - 1] / p[k])
        return best

    @property
    def noise_ratio(self) -> float:
        """Noise over signal: per channel along :attr:`mixed_axis`, capped at 1 and averaged, when
        the output mixes scales; else of the whole output (module doc)."""
        axis = self.mixed_axis
        if axis is None:
            return self.noise / self.signal if self.signal > 0 else math.nan
        sig, noi = self.channel_signal[axis], self.channel_noise[axis]
        live = sig > 0
        return float(np.minimum(noi[live] / sig[live], 1.0).mean())

    @property
    def balanced_sqnr_db(self) -> float:
        """``-10 log10`` of :attr:`noise_ratio`."""
        ratio = self.noise_ratio
        if math.isnan(ratio):
            return math.nan
        return math.inf if ratio == 0 else -10.0 * math.log10(ratio)

    @property
    def cosine_mean(self) -> float:
        return self.cosine_sum / self.samples if self.samples else math.nan

    @property
    def kl_mean(self) -> float:
        """Mean KL(softmax(ref) || softmax(test)) per position, nats (class scores; NaN otherwise)."""
        return self.kl_sum / self.positions if self.classifier and self.positions else math.nan

    @property
    def top1_agreement(self) -> float:
        """Share of positions whose two argmaxes agree (class scores; NaN otherwise)."""
        return self.agree / self.positions if self.classifier and self.positions else math.nan

    def to_dict(self) -> dict:
        out = {"name": self.name, "sqnr_db": self.sqnr_db, "cosine_mean": self.cosine_mean,
               "cosine_min": self.cosine_min if self.samples else math.nan,
               "max_abs_error": self.max_abs_error, "values": self.count, "nonfinite": self.nonfinite}
        if self.mixed_axis is not None:
            out["mixed_scales_axis"] = self.mixed_axis
            out["balanced_sqnr_db"] = self.balanced_sqnr_db
        if self.classifier:
            out["classes"] = self.classes
            out["positions"] = self.positions
            out["top1_agreement"] = self.top1_agreement
            out["kl_mean"] = self.kl_mean
            out["confidence"] = self.confidence
            out["sure_samples"] = self.sure
            out["top1_agreement_sure"] = self.sure_agree / self.sure if self.sure else math.nan
            if self.labelled:
                out["top1_reference"] = self.correct_ref / self.labelled
                out["top1_test"] = self.correct_test / self.labelled
                out["labelled"] = self.labelled
        return out


def has_class_axis(shape) -> bool:
    """Whether values of ``shape`` can be class scores: rank >= 2 and a last axis > 1."""
    return len(shape) >= 2 and isinstance(shape[-1], int) and shape[-1] > 1


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _kl_rows(lr: np.ndarray, test: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(test)) of each row, nats, >= 0, from ``lr`` = ref's log-softmax
    (float64 inputs)."""
    lt = _log_softmax(test)
    return np.maximum(np.einsum("ij,ij->i", np.exp(lr), lr - lt), 0.0)
