"""Uncertainty from per-query outcomes: bootstrap intervals and paired tests, vectorised.

Every random draw is seeded from the user's seed and the task name only, so a model's interval
does not depend on which other models are in the table, and two models evaluated on the same
queries are resampled with the same indices (a paired bootstrap falls out for free).

Aggregates (meta-task, IND/OOD, overall) are means of dataset means; they are resampled by
drawing queries within each dataset independently (a stratified bootstrap), which keeps each
dataset's weight fixed exactly as the aggregate defines it.
"""

from __future__ import annotations

import hashlib

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_ALPHA = 0.05


def task_rng(seed: int, task: str, purpose: str) -> np.random.Generator:
    """A generator that depends only on the seed, the task and what the draws are for."""
    digest = hashlib.sha256(f"{task}\0{purpose}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def bootstrap_indices(rows: int, resamples: int, seed: int, task: str) -> np.ndarray:
    """(resamples, rows) query indices drawn with replacement."""
    return task_rng(seed, task, f"bootstrap:{rows}").integers(0, rows, size=(resamples, rows))


def bootstrap_means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The mean of ``values`` in each resample: (resamples,)."""
    return values[indices].mean(axis=1)


def percentile_interval(draws: np.ndarray, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def sign_flips(rows: int, permutations: int, seed: int, task: str) -> np.ndarray:
    """(permutations, rows) of +1/-1: which model's outcome each query swaps under the null."""
    bits = task_rng(seed, task, f"permutation:{rows}").integers(0, 2, size=(permutations, rows),
                                                                 dtype=np.int8)
    return (2 * bits - 1).astype(np.float64)


def sign_flip_null(differences: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """The mean per-query difference under each sign flip: the null distribution, (flips,).

    Under the null the two models' outcomes on a query are exchangeable, so each per-query
    difference keeps or flips its sign with probability 1/2, independently across queries. An
    aggregate's null is the mean of its datasets' nulls (each drawn with its own flips).
    """
    return flips @ differences / len(differences)


def two_sided_p(observed: float, null: np.ndarray) -> float:
    """Permutation p-value, counting the observed arrangement itself (never exactly 0)."""
    # A small tolerance so that float noise does not split exact ties with the observed value.
    extreme = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return (extreme + 1) / (len(null) + 1)
