"""Which TensorRT is installed, and what it can do.

TensorRT 8.6 - 10.x has calibrators, ``BuilderFlag.INT8``/``FP16`` and ``set_dynamic_range``
(deprecated since 10.1). TensorRT 11 removed all of them: networks are strongly typed and INT8
comes only from Q/DQ nodes in the model. TensorRT-RTX (``tensorrt_rtx``) is strongly typed too
and builds ahead of time without a GPU. Capabilities are read from the module itself (does it
have the calibrator classes, the INT8 flag), not guessed from the version number alone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from trtcal.cache.format import Version, parse_version
from trtcal.core.errors import TrtcalError

#: Module names, by the ``--backend`` choice that selects them.
MODULES = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx"}

INSTALL_HINT = ("install TensorRT (the `trt` extra, from NVIDIA's index, on a machine with an NVIDIA GPU) "
                "or TensorRT-RTX (`pip install 'trtcal[rtx]'`: builds Q/DQ models without a GPU)")

QDQ_HINT = ("make a Q/DQ model from a calibration cache with `trtcal qdq MODEL.onnx --cache CACHE -o MODEL.qdq.onnx` "
            "and build that")


@dataclass(frozen=True)
class Backend:
    """An imported TensorRT module and what it offers."""

    module: Any
    name: str  # "tensorrt" or "tensorrt_rtx"
    version: Version
    version_text: str

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version_text}"

    @property
    def has_calibrators(self) -> bool:
        """Implicit INT8: calibrator classes, the INT8 flag and ``config.int8_calibrator``."""
        trt = self.module
        flags = getattr(trt, "BuilderFlag", None)
        return (not self.is_rtx and hasattr(trt, "IInt8EntropyCalibrator2") and flags is not None
                and hasattr(flags, "INT8"))

    @property
    def has_fp16_flag(self) -> bool:
        flags = getattr(self.module, "BuilderFlag", None)
        return not self.is_rtx and flags is not None and hasattr(flags, "FP16")

    @property
    def has_precision_constraints(self) -> bool:
        flags = getattr(self.module, "BuilderFlag", None)
        return flags is not None and hasattr(flags, "OBEY_PRECISION_CONSTRAINTS")

    @property
    def strongly_typed_only(self) -> bool:
        """True where every network is strongly typed (TensorRT 11, TensorRT-RTX)."""
        return self.is_rtx or self.version[0] >= 11 or not hasattr(getattr(self.module, "BuilderFlag", None), "INT8")

    @property
    def cache_version(self) -> Version:
        """The version this TensorRT writes into (and expects in) calibration cache headers."""
        return self.version

    def require_implicit_int8(self) -> None:
        """Raise the one clear message where implicit INT8 (calibrators, caches) does not exist."""
        if not self.has_calibrators:
            raise TrtcalError(f"{self.label} has no implicit INT8 (no calibrators, no INT8 builder flag, no "
                              f"calibration caches): networks are strongly typed and INT8 comes from Q/DQ nodes; "
                              f"{QDQ_HINT}")


def _version_of(module: Any) -> tuple[Version, str]:
    text = str(getattr(module, "__version__", "") or "")
    try:
        return parse_version(text), ".".join(text.split(".")[:3])
    except TrtcalError:
        raise TrtcalError(f"{module.__name__}: cannot read its version from __version__ = {text!r}") from None


def load_backend(which: str = "auto") -> Backend:
    """Import TensorRT: ``"tensorrt"``, ``"rtx"`` (``tensorrt_rtx``), or ``"auto"`` (TensorRT if it
    imports, else TensorRT-RTX)."""
    if which not in ("auto", *MODULES):
        raise TrtcalError(f"--backend {which!r}: choose auto, tensorrt or rtx")
    names = list(MODULES.values()) if which == "auto" else [MODULES[which]]
    problems = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] != name:
                problems.append(f"{name} is installed but needs {exc.name}")
            else:
                problems.append(f"{name} is not installed")
            continue
        except (ImportError, OSError) as exc:  # e.g. libnvinfer or the CUDA runtime not found
            problems.append(f"{name} fails to import: {str(exc).splitlines()[0][:160]}")
            continue
        version, text = _version_of(module)
        return Backend(module, name, version, text)
    raise TrtcalError(f"no TensorRT to build with ({'; '.join(problems)}): {INSTALL_HINT}")


def backend_from_module(module: Any) -> Backend:
    """A :class:`Backend` for an already imported module (tests pass a fake one)."""
    version, text = _version_of(module)
    name = "tensorrt_rtx" if module.__name__.split(".")[0] == "tensorrt_rtx" else "tensorrt"
    return Backend(module, name, version, text)

