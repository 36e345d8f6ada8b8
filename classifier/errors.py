"""Errors the classifier core raises for people to read (a training form, a management command)."""


class TrainingDataError(ValueError):
    """The training data cannot be used as given; the message says what to fix."""


class TrainingCancelled(Exception):
    """Training stopped because someone asked it to (should_stop returned True)."""
