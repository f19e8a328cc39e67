"""Calibration of a deployed bundle for a site: `semanticac-calibrate` (calibrate.cli).

    thresholds   per-label thresholds for at most F false alarms per hour of background audio
                 (calibrate.thresholds; the scores come from edge.listen.listen itself,
                 calibrate.recording, and edge's Smoother and EventDetector are replayed on them)
    scores       a temperature per label set and a bias per label fitted on labelled clips
                 (calibrate.scores; scored by edge.scoring.Scorer, the formula the device uses)

Both write a copy of the label set (calibrate.labelfile: same names and prompts, so the same
labels_sha256 and embeddings) atomically; figures come from calibrate.plots (matplotlib,
imported only there). numpy and edge only: never torch or `train` (a test enforces it).
"""

from edge import __version__

__all__ = ["__version__"]
