"""Calibration data sources: where batches come from, checked against the model's inputs.

``open_data(spec, inputs, ...)`` accepts a ``.npy`` file (one input), a ``.npz`` file (arrays by
input name), a folder of either (one batch per file, sorted by name), a folder of images (with a
:class:`~trtcal.data.images.Preprocess`), or a Python data-loader script ``file.py:function``
(Polygraphy's ``--data-loader-script`` convention: the function returns an iterable of
``{input name: array}`` dicts). Every batch is checked against the model inputs before use.
"""

from trtcal.data.sources import DataSource, open_data, random_data

__all__ = ["DataSource", "open_data", "random_data"]
