"""``python -m mmeb`` (and ``torchrun -m mmeb``): the command line."""

from mmeb.cli import main

main()
