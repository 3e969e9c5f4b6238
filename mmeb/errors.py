"""Errors that reach the user as one line: what went wrong, where, and how to fix it."""

from __future__ import annotations


class MMEBError(Exception):
    """Base class for every failure the command line reports as a one-line message."""


class DataError(MMEBError):
    """Evaluation data is missing, malformed or unreachable."""


class ModelError(MMEBError):
    """A model cannot be found, loaded or used for a task."""


class ResultsError(MMEBError):
    """Results cannot be written, or existing results conflict with the run."""
