"""The adapt card's counts, made in the database, follow the rule the adaptation itself follows when
it reads the reviewed cells (reviewed_cell_windows): each box once, with its newest review made on
it; a review carried to a later version's call, a cell without a stored window and an unreviewed
cell are not counted."""

from datetime import timedelta

import pytest
from django.utils import timezone

from classifier.training.adaptation import usable_types
from tests.webapp.lab_factories import make_sample, make_version
from webapp.models import Cell
from webapp.selectors import adaptation_counts, reviewed_cell_windows


def review(cell, corrected, minutes, window=True, carried_from=None):
    Cell.objects.filter(pk=cell.pk).update(
        corrected_type=corrected, reviewed_at=timezone.now() - timedelta(minutes=60 - minutes),
        window=f"windows/{cell.pk}.png" if window else "", review_carried_from=carried_from)


def counted_as_the_run_reads(task):
    windows = reviewed_cell_windows(with_image=True)
    learnt = usable_types([corrected for _, corrected, _ in windows], task)
    used = [(corrected, image) for _, corrected, image in windows if corrected in learnt]
    return len(used), len(windows) - len(used), len({image for _, image in used})


@pytest.mark.django_db
def test_the_card_counts_each_box_once_with_its_newest_own_review():
    first = make_version()
    one = make_sample("H-1", types=["NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL", "MONOCYTE"], version=first)
    other = make_sample("H-2", types=["MONOCYTE"], version=first)
    (old_a, old_b, no_window, unreviewed), (alone,) = (
        list(s.images.get().cells.order_by("index")) for s in (one, other))
    later = make_version()
    # The same photograph classified again: the same boxes, new cells.
    new_a, new_b = (Cell.objects.create(
        image=cell.image, model_version=later, index=cell.index, x0=cell.x0, y0=cell.y0, x1=cell.x1,
        y1=cell.y1, predicted_type="NEUTROPHIL", probabilities={}, confidence=0.9, binary_call="",
        cell_type="NEUTROPHIL") for cell in (old_a, old_b))

    review(old_a, "NEUTROPHIL", minutes=1)
    review(new_a, "BASOPHIL", minutes=5)  # reviewed again on the later call: the newest wins
    review(old_b, "LYMPHOCYTE", minutes=2)
    review(new_b, "LYMPHOCYTE", minutes=3, carried_from=old_b)  # the same review, carried
    review(no_window, "EOSINOPHIL", minutes=4, window=False)
    review(alone, "MONOCYTE", minutes=6)
    assert unreviewed.corrected_type == ""

    # Lymphocyte and monocyte used, on two photographs; the box now called basophil left out.
    assert adaptation_counts("4class", folds=5) == counted_as_the_run_reads("4class") == (2, 1, 2)
    # An eight-type network learns basophils too.
    assert adaptation_counts("8class", folds=5) == counted_as_the_run_reads("8class") == (3, 0, 2)
    review(alone, "SMUDGE", minutes=7)
    assert adaptation_counts("8class", folds=5) == counted_as_the_run_reads("8class") == (2, 1, 1)
    # Photographs are counted only as far as the folds need.
    review(alone, "MONOCYTE", minutes=8)
    assert adaptation_counts("8class", folds=5)[2] == 2 and adaptation_counts("8class", folds=1)[2] == 1


@pytest.mark.django_db
def test_no_reviewed_cell_counts_nothing():
    make_sample("H-3")
    assert adaptation_counts("4class", folds=5) == (0, 0, 0)


@pytest.mark.django_db
def test_reviews_of_no_type_the_network_learns_are_counted_as_left_out():
    sample = make_sample("H-4", types=["NEUTROPHIL", "LYMPHOCYTE"])
    for minutes, cell in enumerate(sample.images.get().cells.all()):
        review(cell, "SMUDGE_CELL", minutes=minutes)
    assert adaptation_counts("4class", folds=5) == counted_as_the_run_reads("4class") == (0, 2, 0)
