"""Errors the classifier core raises for people to read (a training form, a management command, a
sample page)."""


class TrainingDataError(ValueError):
    """The training data cannot be used as given; the message says what to fix."""


class UnreadableFolder(TrainingDataError):
    """A split folder none of whose images could be read as a photograph (git-lfs pointers in place
    of the photographs, say); ``folder`` is that split's folder."""

    def __init__(self, reason, folder):
        super().__init__(reason)
        self.folder = folder


class TrainingCancelled(Exception):
    """Training stopped because someone asked it to (should_stop returned True)."""


class UnreadablePhotograph(ValueError):
    """An image file that cannot be decoded; the message says so for the lab staff."""
