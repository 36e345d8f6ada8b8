"""Errors the classifier core raises for people to read (a training form, a management command, a
sample page)."""


class TrainingDataError(ValueError):
    """The training data cannot be used as given; the message says what to fix."""


class TrainingCancelled(Exception):
    """Training stopped because someone asked it to (should_stop returned True)."""


class UnreadablePhotograph(ValueError):
    """An image file that cannot be decoded; the message says so for the lab staff."""
