"""`semanticac-train`: training, evaluation and export on a desktop GPU (or a CPU recipe)."""

from __future__ import annotations

import click

from edge import __version__
from edge.cli import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semanticac-train")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Train, evaluate and export SemanticAC models (PyTorch)."""
    setup_logging(verbose)
