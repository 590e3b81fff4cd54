"""Calibration caches and range files: pure (numpy and the standard library; PyYAML and
flatbuffers imported inside the functions that read those formats).

- :mod:`~trtcal.cache.format`: TensorRT's cache, the data model and the text format (re-exported
  here: ``trtcal.cache.read(path)``).
- :mod:`~trtcal.cache.checks`: lint, against a model's tensors or statistics.
- :mod:`~trtcal.cache.edit`: scale, clamp, drop, merge; :mod:`~trtcal.cache.overrides`: hand-set
  ranges from a YAML/JSON file.
- :mod:`~trtcal.cache.convert`: every range format trtcal reads and writes;
  :mod:`~trtcal.cache.ort_tables`: ONNX Runtime's TensorRT execution provider tables.
- :mod:`~trtcal.cache.provenance`: the ``.trtcal.json`` sidecar that travels with every cache.
- :mod:`~trtcal.cache.crosscheck`: a TensorRT-made cache against trtcal's recomputation.
"""

from trtcal.cache.format import (
    DEFAULT_TRT_VERSION,
    KNOWN_ALGORITHMS,
    CacheEntry,
    CalibrationCache,
    bits_to_float,
    decode_version,
    encode_version,
    float_to_bits,
    format_version,
    make_header,
    parse,
    parse_version,
    read,
    scale_bits_from_amax,
)

__all__ = ['CacheEntry', 'CalibrationCache', 'DEFAULT_TRT_VERSION', 'KNOWN_ALGORITHMS', 'bits_to_float', 'decode_version', 'encode_version', 'float_to_bits', 'format_version', 'make_header', 'parse', 'parse_version', 'read', 'scale_bits_from_amax']
