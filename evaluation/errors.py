"""Errors of offline evaluation (subclasses of wire's FramewatchError, so the CLI prints one line)."""

from __future__ import annotations

from wire.errors import FramewatchError


class EvaluationError(FramewatchError):
    """Base of evaluation errors."""


class DatasetUnavailable(EvaluationError):
    """Evaluation data is not on disk (nothing is ever downloaded). The message says where to put it."""


class DatasetFormatError(EvaluationError):
    """A dataset file is on disk but does not have the expected format."""
