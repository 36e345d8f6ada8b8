"""A sample classified again, by another version or after a failure: reviewers' labels follow the
cells, superseded calls are marked and cannot be relabelled, the formula says when it mixes versions,
and photographs added later keep the sample's network. The worker's service runs in-process with
the stand-in network of test_classification; the real network runs in tests/e2e."""

import pytest
from django.urls import reverse

from classifier.boxes import SAME_CELL_IOU, box_iou, match_boxes
from tests.webapp.lab_factories import make_sample, make_version
from tests.webapp.test_classification import analysis_with, network, stored_image  # noqa: F401
from tests.webapp.test_uploads import jpeg_bytes, upload
from webapp.models import Cell, CellReview, SmearImage
from webapp.selectors import (
    HistoryFilters,
    cell_history,
    current_counterpart,
    leukocyte_formula,
    review_agreement,
)
from webapp.services import classification, uploads
from webapp.services.review import ReviewError, carried_label, review_cell

pytestmark = pytest.mark.django_db

BOXES = [(100, 80, 220, 200), (300, 200, 400, 300)]


def test_box_overlap_and_one_to_one_matching():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no pixel
    # The first box overlaps both of the others; it takes its better match, the other is left alone.
    matched = match_boxes([(0, 0, 10, 10)], [(1, 0, 11, 10), (0, 0, 10, 10)], SAME_CELL_IOU)
    assert matched == [(0, 1, 1.0)]
    assert match_boxes([(0, 0, 10, 10)], [(8, 8, 18, 18)], SAME_CELL_IOU) == []


@pytest.mark.parametrize("label, class_names, carried", [
    ("LYMPHOCYTE", ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"), "LYMPHOCYTE"),
    ("LYMPHOCYTE", ("MONONUCLEAR", "POLYNUCLEAR"), "MONONUCLEAR"),
    ("BASOPHIL", ("MONONUCLEAR", "POLYNUCLEAR"), "POLYNUCLEAR"),
    ("ARTEFACT", ("MONONUCLEAR", "POLYNUCLEAR"), "ARTEFACT"),
    ("MONONUCLEAR", ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"), None),  # which type?
])
def test_a_label_is_restated_in_the_new_networks_types(label, class_names, carried):
    assert carried_label(label, class_names) == carried


def reclassify_with_new_version(control, image, boxes=BOXES, predicted="NEUTROPHIL"):
    new = make_version()
    control.analysis = analysis_with(boxes, predicted=predicted)
    classification.classify_smear_image(image.pk)
    return new


def test_a_new_version_takes_the_reviewers_labels_of_the_same_cells(
    network, stored_image, django_user_model  # noqa: F811
):
    old = make_version()
    classification.classify_smear_image(stored_image.pk)
    reviewer = django_user_model.objects.create_user("reviewer")
    first, second = Cell.objects.filter(model_version=old).order_by("index")
    review_cell(first, "EOSINOPHIL", reviewer)
    review_cell(second, Cell.ARTEFACT, reviewer)

    new = make_version()
    # The detector finds the first cell a few pixels off, misses the second and finds a third.
    network.analysis = analysis_with([(104, 84, 224, 204), (500, 300, 600, 400)], predicted="MONOCYTE")
    classification.classify_smear_image(stored_image.pk)

    moved, other = Cell.objects.filter(model_version=new).order_by("index")
    first.refresh_from_db()
    assert (moved.predicted_type, moved.corrected_type) == ("MONOCYTE", "EOSINOPHIL")
    assert moved.cell_type == "EOSINOPHIL"
    assert moved.review_carried_from == first and moved.reviewed_by == reviewer
    assert moved.reviewed_at == first.reviewed_at
    assert other.corrected_type == "" and other.review_carried_from is None
    assert not CellReview.objects.filter(cell__model_version=new).exists()  # no review was made on v2

    formula = leukocyte_formula(stored_image.sample)
    assert formula.as_dict()["types"]["EOSINOPHIL"]["count"] == 1  # the correction still counts
    assert formula.as_dict()["types"]["MONOCYTE"]["count"] == 1
    assert formula.reviewed == 1
    # Nobody judged v2's call on that cell: its agreement figures hold no review yet.
    assert review_agreement(new).overall.reviewed == 0
    assert review_agreement(old).overall.reviewed == 1


def test_a_carried_label_becomes_the_reviewers_own_once_confirmed(
    network, stored_image, django_user_model  # noqa: F811
):
    make_version()
    classification.classify_smear_image(stored_image.pk)
    reviewer = django_user_model.objects.create_user("reviewer")
    review_cell(Cell.objects.order_by("index").first(), "EOSINOPHIL", reviewer)
    new = reclassify_with_new_version(network, stored_image)
    carried = Cell.objects.get(model_version=new, index=0)

    cell, review = review_cell(carried, "EOSINOPHIL", reviewer)  # the same type: now a verdict on v2
    assert review is not None and cell.review_carried_from is None
    assert review_agreement(new).overall.reviewed == 1


def test_going_back_to_a_version_keeps_the_newest_label(
    network, stored_image, django_user_model  # noqa: F811
):
    old = make_version()
    classification.classify_smear_image(stored_image.pk, model_version_id=old.pk)
    reviewer = django_user_model.objects.create_user("reviewer")
    review_cell(Cell.objects.get(model_version=old, index=0), "EOSINOPHIL", reviewer)
    new = reclassify_with_new_version(network, stored_image)
    review_cell(Cell.objects.get(model_version=new, index=0), "LYMPHOCYTE", reviewer)

    classification.classify_smear_image(stored_image.pk, model_version_id=old.pk)
    back = Cell.objects.get(model_version=old, index=0)
    assert back.cell_type == "LYMPHOCYTE"  # the later review, made on v2's call
    assert leukocyte_formula(stored_image.sample).as_dict()["types"]["LYMPHOCYTE"]["count"] == 1


def test_a_superseded_call_is_marked_and_cannot_be_relabelled(
    network, stored_image, client, django_user_model  # noqa: F811
):
    old = make_version()
    classification.classify_smear_image(stored_image.pk)
    new = reclassify_with_new_version(network, stored_image)
    stale = Cell.objects.get(model_version=old, index=1)
    counted = Cell.objects.get(model_version=new, index=1)
    reviewer = django_user_model.objects.create_user("reviewer")
    with pytest.raises(ReviewError, match="earlier call"):
        review_cell(stale, "LYMPHOCYTE", reviewer)
    assert current_counterpart(stale) == counted

    client.force_login(reviewer)
    page = client.get(reverse("lab:cell-detail", args=[stale.pk])).content.decode()
    assert 'data-role="superseded"' in page and reverse("lab:cell-detail", args=[counted.pk]) in page
    assert 'id="cell-review-form"' not in page
    current_page = client.get(reverse("lab:cell-detail", args=[counted.pk])).content.decode()
    assert 'data-role="superseded"' not in current_page

    # The history shows the calls the formulas count unless asked for the superseded ones too.
    assert set(cell_history(HistoryFilters())) == set(Cell.objects.filter(model_version=new))
    assert set(cell_history(HistoryFilters(calls="all"))) == set(Cell.objects.all())
    history = client.get(reverse("lab:history"), {"calls": "all", "view": "table"}).content.decode()
    assert history.count(">superseded</span>") == 2
    listed = client.get(reverse("lab:api-cells"), {"calls": "all"}).json()["results"]
    assert {cell["id"]: cell["counted"] for cell in listed} == {
        cell.pk: cell.model_version_id == new.pk for cell in Cell.objects.all()
    }


def test_a_failed_rerun_shows_the_earlier_cells_the_formula_counts(
    network, stored_image, client, django_user_model  # noqa: F811
):
    make_version()
    classification.classify_smear_image(stored_image.pk)
    network.error = RuntimeError("disk gone")
    classification.classify_smear_image(stored_image.pk)
    assert SmearImage.objects.get(pk=stored_image.pk).status == "failed"

    client.force_login(django_user_model.objects.create_user("t"))
    page = client.get(reverse("lab:sample-detail", args=[stored_image.sample_id])).content.decode()
    assert "Classification failed." in page and 'data-role="earlier-results"' in page
    assert page.count('class="cellrow"') == leukocyte_formula(stored_image.sample).total == 2


def test_a_formula_from_two_versions_says_so_and_keeps_groups_apart_from_types(client, django_user_model):
    four = make_version()
    sample = make_sample(types=("LYMPHOCYTE", "NEUTROPHIL"), version=four)
    binary = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    other = make_sample(accession="B-1", types=("MONONUCLEAR",), version=binary)
    other.images.update(sample=sample)

    formula = leukocyte_formula(sample)
    assert formula.mixed_versions and formula.model_versions == [four.pk, binary.pk]
    assert "MONONUCLEAR" not in [row.name for row in formula.rows]
    assert {row.name: row.count for row in formula.groups} == {"MONONUCLEAR": 2, "POLYNUCLEAR": 1}
    client.force_login(django_user_model.objects.create_user("t"))
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="mixed-versions"' in page
    assert not leukocyte_formula(make_sample(accession="C-1")).mixed_versions


def test_photographs_added_to_a_sample_keep_its_network(
    monkeypatch, stored_image, django_capture_on_commit_callbacks  # noqa: F811
):
    queued = []
    monkeypatch.setattr(uploads, "_enqueue_classification",
                        lambda pk, version_id=None: queued.append((pk, version_id)))
    old = make_version()
    SmearImage.objects.filter(pk=stored_image.pk).update(model_version=old)
    make_version()  # activated after the sample was classified
    with django_capture_on_commit_callbacks(execute=True):
        added = uploads.add_images_to_sample(stored_image.sample, [upload("b.jpg", jpeg_bytes(seed=3))])
        uploads.requeue_image(SmearImage.objects.get(pk=stored_image.pk))
    assert queued == [(added.stored[0].pk, old.pk), (stored_image.pk, old.pk)]

    # A sample already split between versions, or never classified, takes the active one.
    fresh = uploads.create_sample_with_images("N-1", "", [upload("c.jpg", jpeg_bytes(seed=4))]).sample
    assert uploads.sample_version_id(fresh) is None
