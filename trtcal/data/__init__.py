"""Calibration data sources: where batches come from, checked against the model's inputs.

``open_data(spec, inputs, ...)`` accepts a ``.npy`` file (one input), a ``.npz`` file (arrays by
input name), a folder of either (one batch per file, sorted by name), a folder of images (with a
:class:`~trtcal.data.images.Preprocess`), or a Python data-loader script ``file.py:function``
(Polygraphy's ``--data-loader-script`` convention: the function returns an iterable of
``{input name: array}`` dicts). Every batch is checked against the model inputs before use
(NaN/Inf in them refused unless allowed).

Samples lie along each input's batch axis: axis 0 unless ``--batch-axis NAME=AXIS`` says
otherwise (``NAME=none``: the array goes whole with every batch); 0-d inputs (a sample rate)
go as they are. ``--shapes NAME=DxD...`` fixes an input's dynamic dimensions for random data
and the checks (:func:`~trtcal.data.sources.configure_inputs`).
"""

from trtcal.data.sources import (
    DataSource,
    configure_inputs,
    open_data,
    parse_batch_axes,
    parse_input_shapes,
    random_data,
)

__all__ = ["DataSource", "configure_inputs", "open_data", "parse_batch_axes", "parse_input_shapes", "random_data"]
