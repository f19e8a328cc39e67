"""`python -m train ...` (and `torchrun --nproc_per_node N -m train fit ...`): the CLI."""

from train.cli import main

main()
