"""``python -m vlm2vec train ...`` (the same as the ``vlm2vec`` command)."""

from vlm2vec.cli import main

main()
