"""Results to comparisons: tables with intervals and paired tests, the paper's published rows,
an offline HTML leaderboard with plots, and exports to the MMEB leaderboard and mteb formats.

Importing this package loads pandas (its tables are DataFrames); ``import mmeb`` never does.
"""

from mmeb.leaderboard.compare import Comparison, compare
from mmeb.leaderboard.load import ModelResults, load_models, resolve_models

__all__ = ["Comparison", "ModelResults", "compare", "load_models", "resolve_models"]
