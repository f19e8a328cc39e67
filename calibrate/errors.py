"""Errors of calibration runs: bad inputs (empty background, unknown labels, unreadable data).

Like edge's errors, each message names the bad value, what is allowed and the fix; the CLI
turns them into one line (click.ClickException) at its boundary.
"""

from edge.errors import SemanticACError


class CalibrationError(SemanticACError):
    """Inputs a calibration cannot be fitted on: empty, mislabelled or unreadable."""
