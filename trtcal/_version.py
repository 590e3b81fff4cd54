"""trtcal's version, importable from every layer (``trtcal/__init__`` imports the library)."""

__version__ = "0.1.0"
