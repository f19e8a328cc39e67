"""semanticac-edge runtime: log-mel frontend, model bundle, label sets, streaming inference.

This package runs on the device (a Jetson or any Linux box). It never imports torch,
`train` or `calibrate`: a test enforces it.
"""

# Raise it with every change a device would notice: pip leaves an installed wheel of the same version
# in place ("Requirement already satisfied"), and the event log's runs, the unit's header, MQTT's
# device and calibrate's files tell releases apart by it. 0.1.0 named everything up to 2026-12-06.
__version__ = "0.2.0"
