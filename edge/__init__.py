"""semanticac-edge runtime: log-mel frontend, model bundle, label sets, streaming inference.

This package runs on the device (a Jetson or any Linux box). It never imports torch,
`train` or `calibrate`: a test enforces it.
"""

import os

# ONNX Runtime's Linux wheels (1.32 here) start Microsoft's telemetry client as they are imported: a device id
# and a queue of events (CPU model, OS, memory, paths) under $XDG_CACHE_HOME/Microsoft/DeveloperTools, and
# lookups of mobile.events.data.microsoft.com to send them. A box in a home reports to no one unasked: this
# variable, set before onnxruntime is imported (every package here imports edge first), turns it off;
# ORT_DISABLE_TELEMETRY=0 in the environment turns it back on.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# Raise it with every change a device would notice: pip leaves an installed wheel of the same version
# in place ("Requirement already satisfied"), and the event log's runs, the unit's header, MQTT's
# device and calibrate's files tell releases apart by it. 0.1.0 named everything up to 2026-12-06.
__version__ = "0.2.0"
