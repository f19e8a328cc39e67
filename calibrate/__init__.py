"""Calibration of a deployed bundle: thresholds, temperature, INT8 caches.

numpy only (TensorRT lazily); may import `edge`, never torch or `train`.
"""

from edge import __version__

__all__ = ["__version__"]
