"""Which confidence flags a call for review: the one rule that the worker, the pages and the
benchmarks read, so that a sample page states the threshold its cells were flagged at."""

from django.conf import settings

from classifier import ood


def review_threshold_of(fitted):
    """The confidence under which a call is flagged for review, for a version that fitted
    ``fitted`` on its validation cells (None: it fitted none): the site's LEUKOSCOPE_REVIEW_THRESHOLD
    where set, else the fitted one, else the default (settings.py says why)."""
    if settings.REVIEW_CONFIDENCE_THRESHOLD is not None:
        return settings.REVIEW_CONFIDENCE_THRESHOLD
    return ood.fitted_or_default_threshold(fitted)


def review_threshold(version):
    """The review threshold of a model version's calls."""
    return review_threshold_of(ood.fitted_confidence_threshold(version.metrics))
