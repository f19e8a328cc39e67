"""`python -m calibrate`: the same as `semanticac-calibrate`."""

from calibrate.cli import main

main()
