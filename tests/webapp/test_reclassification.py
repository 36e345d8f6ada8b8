"""A sample classified again, by another version or after a failure: reviewers' labels follow the
cells, superseded calls are marked and cannot be relabelled, the formula says when it mixes versions,
and photographs added later keep the sample's network. The worker's service runs in-process with
the stand-in network of test_classification; the real network runs in tests/e2e."""

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from classifier.boxes import SAME_CELL_IOU, box_iou, match_boxes
from tests.webapp.lab_factories import make_sample, make_version
from tests.webapp.test_classification import analysis_with, network, stored_image  # noqa: F401
from tests.webapp.test_uploads import jpeg_bytes, upload
from webapp.cell_types import carried_label
from webapp.models import Cell, CellReview, SmearImage
from webapp.selectors import (
    HistoryFilters,
    cell_history,
    current_counterpart,
    leukocyte_formula,
    review_agreement,
)
from webapp.services import classification, uploads
from webapp.services.edge_cells import CountInError, set_counted_in
from webapp.services.review import ReviewError, review_cell

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
    # No leukocyte, whatever network called it: a binary network's cell can be one too.
    ("PLATELET", ("MONONUCLEAR", "POLYNUCLEAR"), "PLATELET"),
    ("ERYTHROBLAST", ("MONONUCLEAR", "POLYNUCLEAR"), "ERYTHROBLAST"),
    ("BLAST", ("MONONUCLEAR", "POLYNUCLEAR"), "BLAST"),  # a leukocyte in neither group: beside them
    ("PLASMA_CELL", ("MONONUCLEAR", "POLYNUCLEAR"), "PLASMA_CELL"),
    ("REACTIVE_LYMPHOCYTE", ("MONONUCLEAR", "POLYNUCLEAR"), "MONONUCLEAR"),
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


def test_a_type_held_as_its_group_by_a_binary_version_comes_back_with_a_typed_one(
    network, stored_image, django_user_model  # noqa: F811
):
    # The admin audit: re-classifying with the binary paper network turned a reviewer's
    # "lymphocyte" into MONONUCLEAR, and a later eight-type version found only the group, which
    # names no type: the cell went back to awaiting review, the reviewer's type lost.
    first = make_version()
    classification.classify_smear_image(stored_image.pk, model_version_id=first.pk)
    reviewer = django_user_model.objects.create_user("reviewer")
    reviewed = Cell.objects.get(model_version=first, index=0)
    review_cell(reviewed, "LYMPHOCYTE", reviewer)
    review_cell(Cell.objects.get(model_version=first, index=1), "MONOCYTE", reviewer)

    binary = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    network.analysis = analysis_with(BOXES, predicted="POLYNUCLEAR")
    classification.classify_smear_image(stored_image.pk, model_version_id=binary.pk)
    held, changed = Cell.objects.filter(model_version=binary).order_by("index")
    assert held.cell_type == "MONONUCLEAR" and held.review_carried_from_id == reviewed.pk
    review_cell(changed, "POLYNUCLEAR", reviewer)  # a reviewer's own verdict on the binary call

    typed = reclassify_with_new_version(network, stored_image)
    back, other = Cell.objects.filter(model_version=typed).order_by("index")
    reviewed.refresh_from_db()
    assert (back.cell_type, back.corrected_type) == ("LYMPHOCYTE", "LYMPHOCYTE")
    assert back.review_carried_from_id == reviewed.pk and back.reviewed_by == reviewer
    assert back.reviewed_at == reviewed.reviewed_at and not back.needs_review
    # The newer label, POLYNUCLEAR, names no type: awaiting review, as before.
    assert other.corrected_type == "" and other.needs_review


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
    # Nor counted in where the edge cut it: the formula counts the later call's cell.
    Cell.objects.filter(pk=stale.pk).update(is_partial=True)
    with pytest.raises(CountInError, match="earlier call"):
        set_counted_in(stale, True)
    assert not Cell.objects.get(pk=stale.pk).count_partial
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


def queued_with_versions(sent):
    """(image id, the version it was queued for) of each photograph sent to the classify queue."""
    versions = dict(SmearImage.objects.values_list("pk", "requested_version_id"))
    return [(args[0], versions[args[0]]) for task, args in sent if task == "classify_image"]


def test_photographs_added_to_a_sample_keep_its_network(
    sent_tasks, stored_image, django_capture_on_commit_callbacks  # noqa: F811
):
    old = make_version()
    SmearImage.objects.filter(pk=stored_image.pk).update(model_version=old)
    active = make_version()  # activated after the sample was classified
    with django_capture_on_commit_callbacks(execute=True):
        added = uploads.add_images_to_sample(stored_image.sample, [upload("b.jpg", jpeg_bytes(seed=3))])
        uploads.requeue_image(SmearImage.objects.get(pk=stored_image.pk))
    assert queued_with_versions(sent_tasks) == [(added.stored[0].pk, old.pk), (stored_image.pk, old.pk)]

    # A sample uploaded now is headed for the version active now; one split between versions takes
    # whichever is active.
    fresh = uploads.create_sample_with_images("N-1", "", [upload("c.jpg", jpeg_bytes(seed=4))]).sample
    assert uploads.sample_version_id(fresh) == active.pk
    SmearImage.objects.filter(pk=stored_image.pk).update(status=SmearImage.Status.DONE, model_version=active)
    assert uploads.sample_version_id(stored_image.sample) is None


def test_adding_photographs_says_when_they_go_to_another_version_than_new_samples(client, tech, sent_tasks):
    old = make_version()
    sample = make_sample("K-9", version=old)
    active = make_version()  # activated (or rolled back to) after the sample was classified
    page = client.post(reverse("lab:sample-add-images", args=[sample.pk]),
                       {"images": [upload("b.jpg", jpeg_bytes(seed=3))]}, follow=True).content.decode()
    assert (f"They are classified by v{old.pk}, as this sample&#x27;s other photographs were, not by "
            f"v{active.pk}, which classifies new samples") in page
    again = client.post(reverse("lab:sample-add-images", args=[make_sample("K-10", version=active).pk]),
                        {"images": [upload("c.jpg", jpeg_bytes(seed=4))]}, follow=True).content.decode()
    assert "They are classified by v" not in again


def test_cells_a_reviewer_named_no_leukocyte_stay_out_of_a_binary_networks_differential(
    network, stored_image, django_user_model  # noqa: F811
):
    four = make_version()
    classification.classify_smear_image(stored_image.pk)
    reviewer = django_user_model.objects.create_user("reviewer")
    review_cell(Cell.objects.get(model_version=four, index=0), "PLATELET", reviewer)
    review_cell(Cell.objects.get(model_version=four, index=1), "ERYTHROBLAST", reviewer)

    binary = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    network.analysis = analysis_with(BOXES, predicted="NEUTROPHIL")
    classification.classify_smear_image(stored_image.pk)

    cells = Cell.objects.filter(model_version=binary).order_by("index")
    assert [(cell.cell_type, cell.needs_review) for cell in cells] == [
        ("PLATELET", False), ("ERYTHROBLAST", False)]
    formula = leukocyte_formula(stored_image.sample)
    assert formula.total == 0 and formula.listed_apart == [("PLATELET", 1)]
    assert [(row.code, row.count) for row in formula.per_100] == [("NRBC", 1)]


def test_a_newer_label_the_network_cannot_state_sends_the_cell_back_to_review(
    network, stored_image, client, django_user_model  # noqa: F811
):
    """v1 (four types): a reviewer says basophil. v2 (binary): a later reviewer says MONONUCLEAR.
    Back on v1, the older basophil must not outrank the newer verdict, which v1 cannot state."""
    four = make_version()
    classification.classify_smear_image(stored_image.pk)
    reviewer = django_user_model.objects.create_user("reviewer")
    review_cell(Cell.objects.get(model_version=four, index=0), Cell.BASOPHIL, reviewer)

    binary = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    network.analysis = analysis_with(BOXES, predicted="MONOCYTE")
    classification.classify_smear_image(stored_image.pk)
    on_binary = Cell.objects.get(model_version=binary, index=0)
    assert on_binary.cell_type == "POLYNUCLEAR"  # the basophil, in the binary network's words
    review_cell(on_binary, "MONONUCLEAR", reviewer)

    classification.classify_smear_image(stored_image.pk, model_version_id=four.pk)
    back = Cell.objects.get(model_version=four, index=0)
    assert (back.corrected_type, back.cell_type, back.needs_review) == ("", "MONOCYTE", True)
    assert back.review_carried_from_id == on_binary.pk
    assert CellReview.objects.filter(cell=back, to_type=Cell.BASOPHIL).exists()  # the record stays
    assert leukocyte_formula(stored_image.sample).awaiting_review >= 1
    client.force_login(reviewer)
    page = client.get(reverse("lab:cell-detail", args=[back.pk])).content.decode()
    assert 'data-role="unplaced-review"' in page and "Mononuclear" in page


def test_a_mixed_sample_export_says_so_and_leaves_other_networks_types_blank(client, django_user_model):
    import csv
    import io

    four = make_version()
    sample = make_sample(types=("LYMPHOCYTE",), version=four)
    binary = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    make_sample(accession="B-2", types=("MONONUCLEAR",), version=binary).images.update(sample=sample)
    client.force_login(django_user_model.objects.create_user("t"))
    rows = list(csv.reader(io.StringIO(
        client.get(reverse("lab:sample-export", args=[sample.pk])).content.decode())))
    assert ["model_versions", f"v{four.pk} v{binary.pk}"] in rows
    assert any(row[:1] == ["warning"] for row in rows)
    header = next(row for row in rows if row[:1] == ["cell_id"])
    exported = [dict(zip(header, row, strict=True)) for row in rows[rows.index(header) + 1:]]
    by_version = {row["model_version"]: row for row in exported}
    assert by_version[f"v{binary.pk}"]["p_LYMPHOCYTE"] == ""
    assert by_version[f"v{four.pk}"]["p_MONONUCLEAR"] == ""
    assert by_version[f"v{four.pk}"]["p_LYMPHOCYTE"] == "0.9000"


def test_a_stale_page_gets_a_readable_refusal_and_re_classify_finds_any_spelling(client, django_user_model):
    from django.test import Client

    from webapp.forms_models import ReclassifyForm

    sample = make_sample(accession="AUD-002")
    cell = sample.images.get().cells.first()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(django_user_model.objects.create_user("t"))
    as_script = strict.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "EOSINOPHIL"},
                            HTTP_ACCEPT="application/json")
    assert as_script.status_code == 403 and "reload the page" in as_script.json()["error"]
    as_form = strict.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "EOSINOPHIL"})
    assert as_form.status_code == 403 and "reload the page" in as_form.content.decode()

    form = ReclassifyForm({"accession_number": " aud-002 "})
    assert form.is_valid() and form.cleaned_data["samples"] == [sample]

    client.logout()
    login = client.get(reverse("login"), {"next": reverse("lab:sample-list")}).content.decode()
    assert 'data-role="sign-in-needed"' in login and "12 hours" in login
    assert 'data-role="sign-in-needed"' not in client.get(reverse("login")).content.decode()


def test_while_a_sample_moves_to_another_version_added_photographs_follow_it(
    sent_tasks, stored_image, django_capture_on_commit_callbacks  # noqa: F811
):
    """An administrator re-classifies a sample with v2; its photographs still count with v1 until
    the worker gets to them. A photograph added meanwhile, or one tried again after the v2 run
    failed, goes to v2 as well, not back to v1."""
    from webapp.services.training import reclassify

    old = make_version()
    SmearImage.objects.filter(pk=stored_image.pk).update(model_version=old, status="done")
    new = make_version()
    with django_capture_on_commit_callbacks(execute=False):
        reclassify(stored_image.sample)  # queued for v2, not run yet
    assert SmearImage.objects.get(pk=stored_image.pk).requested_version == new
    with django_capture_on_commit_callbacks(execute=True):
        added = uploads.add_images_to_sample(stored_image.sample, [upload("m.jpg", jpeg_bytes(seed=5))])
    assert queued_with_versions(sent_tasks) == [(added.stored[0].pk, new.pk)]

    # The v2 run failed, and yet another version was activated since. "Try again" still means v2.
    SmearImage.objects.filter(pk=stored_image.pk).update(status="failed")
    make_version()
    with django_capture_on_commit_callbacks(execute=True):
        uploads.requeue_image(SmearImage.objects.get(pk=stored_image.pk))
    assert queued_with_versions(sent_tasks)[-1] == (stored_image.pk, new.pk)


def three_photographs_stored_out_of_order(rewritten):
    """The ids of a sample's three classified photographs of one cell each, by id; those at the
    places ``rewritten`` names written again in that order, and so stored after the others: a small
    table's plan reads them last (a busy lab's, after its updates, in any order)."""
    first = make_sample("H26-ORDER", types=("NEUTROPHIL",)).images.get()
    ids = [first.pk]
    for number in (2, 3):
        image = SmearImage.objects.get(pk=first.pk)
        image.pk, image.original_filename = None, f"field-{number}.png"
        image.save()
        cell = first.cells.get()
        cell.pk, cell.image = None, image
        cell.save()
        ids.append(image.pk)
    for place in rewritten:
        SmearImage.objects.filter(pk=ids[place]).update(error="")
    return ids


def three_at_once(held, first, second, first_waits, second_waits):
    """Run ``first`` then ``second`` in requests of their own while another holds the photograph
    ``held``'s row, each started once the one before waits on a lock; then let go of the row and
    wait for all three. Returns what the two raised."""
    import threading

    from django.db import transaction

    from tests.conftest import wait_for
    from tests.webapp.concurrent_requests import start_as_another_request, waiting_on_a_lock

    holding, release, failures = threading.Event(), threading.Event(), []

    def hold():
        with transaction.atomic():
            SmearImage.objects.select_for_update().filter(pk=held).first()
            holding.set()
            release.wait(30)

    def attempt(work):
        def run():
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - a deadlock's victim: a 503 to the person asking
                failures.append(exc)
        return run

    threads = [start_as_another_request(hold)]
    assert holding.wait(30)
    threads.append(start_as_another_request(attempt(first)))
    wait_for(lambda: waiting_on_a_lock() >= 1, first_waits, 30)
    threads.append(start_as_another_request(attempt(second)))
    wait_for(lambda: waiting_on_a_lock() >= 2, second_waits, 30)
    release.set()
    for thread in threads:
        thread.join(30)
    return failures


@pytest.mark.django_db(transaction=True)
def test_marking_a_re_classification_s_tasks_sent_beside_a_gallery_relabel_deadlocks_neither(
        django_user_model, sent_tasks):
    # After a re-classification commits, its photographs are marked sent in one UPDATE, which locks
    # their rows in the order its plan reads them (a small table's: as stored, not by id); a gallery
    # relabel across photographs locks theirs by id. One holding the second photograph and the
    # other the first, each waited for the other: PostgreSQL's "deadlock detected", the relabel
    # refused as a busy database (or the marks lost). Found by a stress run of every writer at once.
    from django.db import connection

    from tests.webapp.lab_factories import with_role
    from webapp import queueing
    from webapp.services.review import review_cells

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = with_role(django_user_model.objects.create_user("tech"), "technologist")
    ids = three_photographs_stored_out_of_order(rewritten=[0])  # read as stored: 2, 3, 1
    cells = list(Cell.objects.select_related("image").filter(image_id__in=ids[:2]))
    relabelled = []
    failures = three_at_once(
        ids[2], lambda: queueing.send_classifications(ids),
        lambda: relabelled.append(review_cells(cells, "LYMPHOCYTE", user)),
        "the marking to wait on the third photograph", "the relabel to wait on a photograph")
    assert failures == [] and len(relabelled) == 1
    relabelled_types = Cell.objects.filter(image_id__in=ids[:2]).values_list("cell_type", flat=True)
    assert set(relabelled_types) == {"LYMPHOCYTE"}
    assert SmearImage.objects.filter(pk__in=ids, sent_at__isnull=False).count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_re_classification_beside_the_marking_of_sent_tasks_deadlocks_neither(
        django_user_model, sent_tasks, caplog):
    # Re-classifying queued its photographs in one UPDATE, which locks their rows in the order its
    # plan reads them (as stored); the marking of tasks sent by an upload or an earlier
    # re-classification locks them by id. Each holding one the other wanted next: "deadlock detected",
    # the re-classification refused as a busy database or the marks lost.
    from django.db import connection

    from webapp import queueing
    from webapp.services.training import reclassify

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = django_user_model.objects.create_user("boss")
    ids = three_photographs_stored_out_of_order(rewritten=[1, 0])  # read as stored: 3, 2, 1
    done = []
    failures = three_at_once(
        ids[1], lambda: queueing.send_classifications(ids), lambda: done.append(reclassify(None, user)),
        "the marking to wait on the second photograph", "the re-classification to wait on a photograph")
    assert failures == [] and done and done[0].queued == 3
    assert SmearImage.objects.filter(pk__in=ids, status=SmearImage.Status.QUEUED).count() == 3
    # The marking's own failure is only logged: the reconciler would send the tasks again.
    assert not [record for record in caplog.records if "not recorded as sent" in record.getMessage()]


def photographs_of(accession, count, version):
    """A sample of ``count`` photographs ``version`` classified (the first with its cells)."""
    sample = make_sample(accession, version=version)
    first = sample.images.get()
    SmearImage.objects.bulk_create(SmearImage(
        sample=sample, image=f"smears/{accession}-{number}.png",
        original_filename=f"{accession}-{number}.png", width=640, height=480, file_size=1000,
        checksum=f"{number:064d}", status=SmearImage.Status.DONE, model_version=first.model_version)
        for number in range(2, count + 1))
    return sample


def test_re_classifying_sends_the_same_queries_for_3_photographs_as_for_30(django_user_model, sent_tasks):
    # Its UPDATE named every photograph by id: a large lab's "Re-classify all" met SQLite's limit on
    # a statement's variables (a 500), and sent PostgreSQL a query of megabytes.
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webapp.services.training import reclassify

    user = django_user_model.objects.create_user("boss")
    earlier, version = make_version(), make_version()
    sent = {}
    for count in (3, 30):
        sample = photographs_of(f"H26-00{count:02d}", count, earlier)
        with CaptureQueriesContext(connection) as queries:
            done = reclassify(sample, user)
        assert (done.version, done.queued, done.signed_skipped) == (version, count, [])
        # Ids, times and counts said as numbers alike: what is left is each query's shape.
        sent[count] = [re.sub(r"\d+", "N", query["sql"]) for query in queries.captured_queries]
        queued = SmearImage.objects.filter(sample=sample, status=SmearImage.Status.QUEUED)
        assert queued.filter(requested_version=version).count() == count
    assert sent[3] == sent[30]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tries", [3, 1])
def test_a_sample_reopened_as_a_re_classification_locks_the_photographs_is_queued_and_said_alike(
        staff_client, django_user_model, sent_tasks, monkeypatch, tries):
    # The photographs are queued by the query that locked them, not by their ids: a signed sample
    # reopened while that lock waited (on a worker's photograph) entered the query in between, and
    # its photographs were queued unlocked, unsent and unrecorded, while the answer named it left
    # as it was. The re-classification starts again with it; one that meets such a sample at every
    # try says so, and queues nothing.
    import threading

    from django.db import connection, transaction

    from tests.conftest import wait_for
    from tests.webapp.concurrent_requests import start_as_another_request, waiting_on_a_lock
    from tests.webapp.lab_factories import mark_signed, with_role
    from webapp.models import Sample
    from webapp.services import training
    from webapp.services.sign_off import reopen_sample

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    monkeypatch.setattr(training, "RECLASSIFY_TRIES", tries)
    earlier = make_version()
    unsigned, signed = make_sample("H26-0001", version=earlier), make_sample("H26-0002", version=earlier)
    hematologist = with_role(django_user_model.objects.create_user("hema"), "hematologist")
    mark_signed(signed, hematologist)
    version = make_version()
    held = unsigned.images.get()
    holding, release, answers = threading.Event(), threading.Event(), []

    def worker_storing_cells():  # holds the photograph's row, as services.classification does
        with transaction.atomic():
            SmearImage.objects.select_for_update().filter(pk=held.pk).first()
            holding.set()
            release.wait(30)

    def re_classify():  # "Re-classify all" on the Models page
        answer = staff_client.post(reverse("models:reclassify"), {"all_samples": "on"}, follow=True)
        answers.append([str(message) for message in answer.context["messages"]])

    worker = start_as_another_request(worker_storing_cells)
    assert holding.wait(30)
    reclassifier = start_as_another_request(re_classify)
    wait_for(lambda: answers or waiting_on_a_lock(), "the re-classification to wait on the photograph", 30)
    reopen_sample(Sample.objects.get(pk=signed.pk), hematologist, "Recount")
    release.set()
    worker.join(30)
    reclassifier.join(30)
    queued = SmearImage.objects.filter(status=SmearImage.Status.QUEUED, requested_version=version)
    recorded = LogEntry.objects.filter(additional_data__note__startswith="re-classification with")
    if tries == 1:
        assert answers == [["Samples were uploaded or reopened while the re-classification locked them, each "
                            "time it tried: nothing was queued. Re-classify again in a moment."]]
        assert (queued.count(), sent_tasks, recorded.count()) == (0, [], 0)
        return
    assert len(answers) == 1 and len(answers[0]) == 1  # no sample said to be left signed
    assert answers[0][0].startswith(f"2 photographs queued for re-classification with v{version.pk};")
    assert sorted(args for _, args in sent_tasks) == sorted((image.pk,) for image in queued)
    assert sorted(entry.additional_data["sample_id"] for entry in recorded) == [unsigned.pk, signed.pk]
