"""A second look, at other magnifications, at the cells a network is unsure of.

A context window is cut at the scale the detector reads from the photograph's red cells. That
reading can be off: a tight crop of one cell holds only slivers of red cells, which read small
(PBC crops at 1.2x the cell's box: a median 0.83x the true scale, more than 20% off for 60% of
them), and a cell may be larger or smaller than the training cells of its type. A network reads a
cell best at the magnification it learnt, and there its penultimate features lie closest to its
training cells' (classifier.ood): so a call under SECOND_LOOK_BELOW is taken again at each of
SECOND_LOOK_FACTORS times the scale, and the view with the lowest out-of-distribution score gives
the call. Confident calls, most of a smear's, cost nothing more.

Chosen on the shipped network's own validation split (never trained on), before its TEST was
read; the model card gives the figures. The review flag is raised by the first look (confidence
and out-of-distribution score at the photograph's scale); a cell whose call the second look
changed is flagged as well (the views disagreeing is a reason for a person to look), and so is a
call whose served confidence is under the threshold, so that no call shown under it goes
unflagged. A training run fits the threshold on this whole flag, as served, on its validation
cells (classifier.training.evaluation.review_record).
"""

from dataclasses import dataclass

import numpy as np

from classifier import dataset, detection, ood

# A calibrated confidence under this, and the cell is looked at again.
SECOND_LOOK_BELOW = 0.9
# The magnifications of the second look, as factors of the photograph's scale.
SECOND_LOOK_FACTORS = (0.8, 1.25)


@dataclass(frozen=True)
class Looks:
    """A network's calls on cells after the second look: ``probabilities`` (N, C), calibrated,
    each row from its chosen view; ``factors`` (N,), the chosen view's factor of the photograph's
    scale (1.0 where the first look stands); ``inputs`` (N, H, W, 3) uint8, what the network saw
    of the chosen views; ``windows``, their context windows (where the first looks' were given);
    ``first``, the first look's CellCalls, from which the review flag is raised; ``looked_again``
    (N,) bool, the cells a second look was taken of."""

    probabilities: np.ndarray
    factors: np.ndarray
    inputs: np.ndarray
    windows: list | None
    first: object  # classifier.inference.CellCalls
    looked_again: np.ndarray

    def needs_review(self, confidence_threshold):
        """(N,) bool: the site's review flag of each cell (needs_review below)."""
        return needs_review(self.first.probabilities, self.probabilities, self.first.ood_scores,
                            confidence_threshold)


def needs_review(first_probabilities, probabilities, first_ood_scores, confidence_threshold):
    """(N,) bool: the review flag after a second look: the first look's (its confidence under the
    threshold, or its out-of-distribution score above 1), a served confidence under the threshold,
    or a call the second look changed."""
    first_probabilities, probabilities = np.asarray(first_probabilities), np.asarray(probabilities)
    if not len(probabilities):
        return np.zeros(0, bool)
    confidence = np.minimum(first_probabilities.max(axis=1), probabilities.max(axis=1))
    changed = first_probabilities.argmax(axis=1) != probabilities.argmax(axis=1)
    return ood.needs_review(confidence, first_ood_scores, confidence_threshold) | changed


def looks_again(classifier):
    """Whether the network takes second looks: it needs the out-of-distribution score to choose."""
    return classifier.has_ood_score


def look_again(classifier, inputs, first, window_at, windows=None) -> Looks:
    """Looks from the first look (``inputs``: uint8 network inputs, ``first``: their CellCalls)
    and ``window_at(row, factor)``, the context window of cell ``row`` cut at factor times the
    photograph's scale. ``windows``: the first looks' windows, to be returned with the chosen."""
    probabilities = np.array(first.probabilities, copy=True)
    inputs = np.array(inputs, copy=True)
    factors = np.ones(len(probabilities))
    chosen_windows = None if windows is None else list(windows)
    unsure = first.confidence < SECOND_LOOK_BELOW
    rows = np.flatnonzero(unsure) if looks_again(classifier) else np.zeros(0, int)
    if len(rows):
        # Every factor's views of every unsure cell in one network call: its fixed cost, not the
        # few cells, is most of what a second look costs.
        views = [window_at(int(row), factor) for factor in SECOND_LOOK_FACTORS for row in rows]
        view_inputs = classifier.network_inputs(views)
        calls = classifier.classify_inputs(view_inputs)
        by_factor = calls.ood_scores.reshape(len(SECOND_LOOK_FACTORS), len(rows))
        # 0: the first look; k: SECOND_LOOK_FACTORS[k - 1]; a tie keeps the earlier.
        best = np.vstack([first.ood_scores[rows], by_factor]).argmin(axis=0)
        for k in np.flatnonzero(best):
            row, view = rows[k], (best[k] - 1) * len(rows) + k
            probabilities[row] = calls.probabilities[view]
            inputs[row] = view_inputs[view]
            factors[row] = SECOND_LOOK_FACTORS[best[k] - 1]
            if chosen_windows is not None:
                chosen_windows[row] = views[view]
    looked_again = np.zeros(len(probabilities), bool)
    looked_again[rows] = True
    return Looks(probabilities=probabilities, factors=factors, inputs=inputs, windows=chosen_windows,
                 first=first, looked_again=looked_again)


def classify_cells(classifier, window_at, count) -> Looks:
    """Looks at ``count`` cells, each cut by ``window_at(row, factor)`` (look_again): the first
    look at the photograph's scale, a second where the network is unsure."""
    windows = [window_at(row, 1.0) for row in range(count)]
    inputs = classifier.network_inputs(windows)
    return look_again(classifier, inputs, classifier.classify_inputs(inputs), window_at, windows)


def window_cutter(images, window_scale):
    """window_at(row, factor) (look_again's) for dataset.LabelledImage photographs: image ``row``'s
    context window at factor times its scale, as training cut it at 1 (``window_scale``: the
    recipe's), each photograph decoded and detected once."""
    photographs = {}

    def window_at(row, factor):
        if row not in photographs:
            rgb = dataset.decode_image(images[row].path)
            photographs[row] = None if rgb is None else (
                rgb, detection.detect_leukocytes(rgb), detection.window_fill(rgb))
        if photographs[row] is None:  # unreadable: left out of every figure
            return np.zeros((*dataset.WINDOW_SIZE, 3), np.uint8)
        rgb, result, fill = photographs[row]
        return dataset.dataset_context_window(rgb, window_scale, result, factor, fill)[0]

    return window_at


def classify_images(classifier, images, window_scale, cache_dir=None, workers=2):
    """(Looks, the images that decoded, those whose cell the detector located: bool (N,) each) of
    single-cell photographs as the site calls a cell: the first look at the photograph's scale
    from the prepared-input cache, a second where the network is unsure."""
    inputs, ok, located = dataset.load_prepared(images, classifier.input_spec, 1.0, window_scale,
                                                cache_dir, workers)
    first = classifier.classify_inputs(inputs)
    return look_again(classifier, inputs, first, window_cutter(images, window_scale)), ok, located
