"""semanticac-edge runtime: log-mel frontend, model bundle, label sets, streaming inference.

This package runs on the device (a Jetson or any Linux box). It never imports torch,
`train` or `calibrate`: a test enforces it.
"""

__version__ = "0.1.0"
