"""`semanticac-calibrate`: fit thresholds and calibration for a deployed bundle (numpy only)."""

from __future__ import annotations

import click

from edge import __version__
from edge.cli import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semanticac-calibrate")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Calibrate a bundle for a site: thresholds, temperature, INT8 caches."""
    setup_logging(verbose)
