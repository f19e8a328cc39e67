"""Training side of semanticac-edge: the SemanticAC model in PyTorch, data, loop, export.

May import `edge` (the frontend definition and the bundle format); never the reverse.
"""

from edge import __version__  # one version for the whole distribution

__all__ = ["__version__"]
