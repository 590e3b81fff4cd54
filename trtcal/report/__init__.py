"""Pictures and reports; matplotlib is imported inside the functions (the ``plot`` extra)."""
