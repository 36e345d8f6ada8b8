"""The second look (classifier.second_look): which view gives a call, and which cells get one.

The choice is tested against a scripted network, whose answer for a view is written into the
view's pixels, so that each case says exactly which view the rule must pick; the bundled network
in the pipeline is tested in test_inference.py."""

import numpy as np
import pytest

from classifier import second_look
from classifier.inference import CellCalls

CLASSES = 3


class ScriptedNetwork:
    """Reads a view's first pixel as (call, confidence in %, out-of-distribution score x 10)."""

    has_ood_score = True

    def network_inputs(self, windows):
        return np.stack(windows)

    def classify_inputs(self, inputs):
        probabilities = np.zeros((len(inputs), CLASSES))
        scores = np.zeros(len(inputs))
        for row, view in enumerate(inputs):
            call, percent, score = (int(value) for value in view[0, 0])
            probabilities[row] = (1 - percent / 100) / (CLASSES - 1)
            probabilities[row, call] = percent / 100
            scores[row] = score / 10
        return CellCalls(probabilities=probabilities, ood_scores=scores)


def view(call, percent, score):
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = (call, percent, score)
    return image


def looks_at(views_by_factor, network=None):
    """second_look.classify_cells over cells whose view at each factor is views_by_factor[f][row];
    returns the looks and the (row, factor) views that were cut."""
    cut = []

    def window_at(row, factor):
        cut.append((row, factor))
        return views_by_factor[factor][row]

    looks = second_look.classify_cells(network or ScriptedNetwork(), window_at, len(views_by_factor[1.0]))
    return looks, cut


def test_a_confident_call_is_not_looked_at_again():
    looks, cut = looks_at({1.0: [view(2, 95, 30)]})
    assert cut == [(0, 1.0)]
    assert looks.factors.tolist() == [1.0] and looks.probabilities.argmax(axis=1).tolist() == [2]
    assert looks.first.probabilities.argmax(axis=1).tolist() == [2]  # the call unchanged


def test_an_unsure_call_takes_the_view_the_network_finds_most_familiar():
    small, large = second_look.SECOND_LOOK_FACTORS
    looks, cut = looks_at({
        1.0: [view(0, 85, 8), view(1, 70, 5), view(2, 97, 4), view(1, 85, 8)],
        small: [view(1, 80, 6), view(2, 90, 8), None, view(1, 70, 6)],
        large: [view(2, 99, 7), view(0, 99, 6), None, view(1, 95, 9)],
    })
    # The confident third cell is cut once; each unsure one at every factor.
    assert sorted(cut) == sorted([(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (0, small), (1, small),
                                  (3, small), (0, large), (1, large), (3, large)])
    # Cell 0: the small view scores lowest (0.6), not the most confident one (the large, 99%).
    # Cell 1: its first look already scores lowest (0.5) and stands.
    # Cell 3: the small view again, its call the same but less sure.
    assert looks.factors.tolist() == [small, 1.0, 1.0, small]
    assert looks.probabilities.argmax(axis=1).tolist() == [1, 1, 2, 1]
    assert looks.probabilities[0, 1] == pytest.approx(0.8)
    # What the network saw and the window it came from are the chosen view's.
    np.testing.assert_array_equal(looks.inputs[0], view(1, 80, 6))
    np.testing.assert_array_equal(looks.windows[0], view(1, 80, 6))
    np.testing.assert_array_equal(looks.windows[1], view(1, 70, 5))
    # The flag: the first look's, or a call the second look changed (cell 0: sure enough at 0.85
    # and 0.80, familiar at 0.8, but the views disagree), or a served confidence under it.
    changed = looks.probabilities.argmax(axis=1) != looks.first.probabilities.argmax(axis=1)
    assert changed.tolist() == [True, False, False, False]
    assert looks.looked_again.tolist() == [True, True, False, True]
    assert looks.first.ood_scores.tolist() == [0.8, 0.5, 0.4, 0.8]
    assert looks.needs_review(0.65).tolist() == [True, False, False, False]
    # A call the second look did not change is flagged as its first look would be (cell 1), or
    # where its served confidence is under the threshold (cell 3: 0.85 at first, served at 0.70).
    assert looks.needs_review(0.75).tolist() == [True, True, False, True]


def test_a_network_without_the_score_keeps_its_first_look():
    class Unscored(ScriptedNetwork):
        has_ood_score = False

        def classify_inputs(self, inputs):
            return CellCalls(probabilities=super().classify_inputs(inputs).probabilities, ood_scores=None)

    looks, cut = looks_at({1.0: [view(0, 40, 0)]}, Unscored())
    assert cut == [(0, 1.0)] and looks.factors.tolist() == [1.0]
    assert looks.probabilities[0, 0] == pytest.approx(0.4)
