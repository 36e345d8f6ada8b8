"""The worker's classification service, in-process with a stand-in for the classifier's pipeline:
idempotent upserts, files written and replaced, and never an image left "processing" after an error.
The real pipeline and network run in tests/e2e."""

import dataclasses
import errno
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from PIL import Image

from classifier import ood
from classifier.pipeline import FinishedCell, SmearAnalysis
from classifier.quality import QualityReport
from classifier.rendering import encode_jpeg, encode_png
from tests.conftest import stored_files, wait_for
from tests.webapp.lab_factories import make_version
from webapp.models import Cell, CellReview, Sample, SmearImage
from webapp.services import classification, liveness, uploads
from webapp.services.model_registry import NoActiveModel
from webapp.services.review import review_cell

pytestmark = pytest.mark.django_db

CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


class StandInClassifier:
    class_names = CLASSES
    serving_runtime = "tensorflow"


def analysis_with(boxes, predicted="NEUTROPHIL", confidence=0.9, ood_score=None):
    cells = []
    for index, box in enumerate(boxes):
        probabilities = {name: (1 - confidence) / 3 for name in CLASSES}
        probabilities[predicted] = confidence
        x0, y0, x1, y1 = box
        cells.append(FinishedCell(
            box=box, detection_score=0.9, probabilities=probabilities, predicted_type=predicted,
            confidence=confidence, ood_score=ood_score, needs_review=False, binary_call="POLYNUCLEAR",
            crop_jpeg=encode_jpeg(np.full((y1 - y0, x1 - x0, 3), 150 + index, np.uint8), 90),
            window_png=encode_png(np.full((240, 320, 3), 180 + index, np.uint8)),
            heatmap_jpeg=encode_jpeg(np.full((240, 240, 3), 100 + index, np.uint8), 88),
        ))
    quality = QualityReport(focus=11.5, clipped_highlights=0.0, clipped_shadows=0.0, brightness=0.7,
                            background_a=1.0, background_b=2.0, warnings=["The image looks out of focus."])
    return SmearAnalysis(quality=quality, cells=cells)


@pytest.fixture
def network(monkeypatch):
    """Serve the stand-in network; `network.analysis` is what the next analysis returns."""
    class Control:
        analysis = analysis_with([(100, 80, 220, 200), (300, 200, 400, 300)])
        error = None
        one_cell = None  # what the service last asked for
        during = None  # what happens elsewhere while the network runs

    def fake_analyse(rgb, classifier, review_threshold, given_boxes=(), one_cell=False):
        if Control.during:
            Control.during()
        if Control.error:
            raise Control.error
        Control.one_cell = one_cell
        assert rgb.dtype == np.uint8 and rgb.shape == (480, 640, 3)
        # The pipeline's own decision, from the threshold the service passed it.
        cells = [
            dataclasses.replace(cell, needs_review=bool(ood.needs_review(
                [cell.confidence], None if cell.ood_score is None else [cell.ood_score], review_threshold
            )[0]))
            for cell in Control.analysis.cells
        ]
        return dataclasses.replace(Control.analysis, cells=cells)

    monkeypatch.setattr(classification, "load_classifier", lambda version: StandInClassifier())
    monkeypatch.setattr(classification, "analyse_smear", fake_analyse)
    return Control


@pytest.fixture
def stored_image(sent_tasks, django_user_model):
    rgb = np.full((480, 640, 3), (225, 185, 195), np.uint8)
    rgb[100:200, 100:200] = (120, 70, 170)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    result = uploads.create_sample_with_images("C-1", "", [SimpleUploadedFile("s.jpg", buffer.getvalue())])
    return result.stored[0]


def files_of(cells):
    return [Path(f.path) for cell in cells for f in (cell.crop, cell.window, cell.heatmap)]


def test_cells_are_stored_with_pictures_and_flags(network, stored_image, settings):
    version = make_version()
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.95
    assert classification.classify_smear_image(stored_image.pk) == 2
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "done" and image.error == "" and image.model_version == version
    assert image.processed_at is not None and image.quality["focus"] == 11.5
    assert image.quality_warnings == ["The image looks out of focus."]
    assert image.inference_runtime == "tensorflow"  # what the classifier said computed it
    cells = list(image.cells.order_by("index"))
    assert [(c.x0, c.y0, c.x1, c.y1) for c in cells] == [(100, 80, 220, 200), (300, 200, 400, 300)]
    assert all(c.cell_type == c.predicted_type == "NEUTROPHIL" and c.needs_review for c in cells)
    assert all(c.detection_score == 0.9 and c.binary_call == "POLYNUCLEAR" for c in cells)
    assert cells[0].probabilities == network.analysis.cells[0].probabilities
    # The pictures are stored as the pipeline encoded them, each cell its own.
    for cell, finished in zip(cells, network.analysis.cells, strict=True):
        assert Path(cell.crop.path).read_bytes() == finished.crop_jpeg
        assert Path(cell.window.path).read_bytes() == finished.window_png
        assert Path(cell.heatmap.path).read_bytes() == finished.heatmap_jpeg
    assert Image.open(cells[0].window.path).size == (320, 240)


def test_a_confident_call_on_a_cell_unlike_the_training_cells_is_flagged(network, stored_image, settings):
    make_version()
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.8
    network.analysis = analysis_with([(100, 80, 220, 200)], confidence=0.97, ood_score=3.0)
    classification.classify_smear_image(stored_image.pk)
    assert Cell.objects.get().needs_review

    network.analysis = analysis_with([(100, 80, 220, 200)], confidence=0.97, ood_score=0.4)
    classification.classify_smear_image(stored_image.pk)
    assert not Cell.objects.get().needs_review


def test_running_twice_updates_in_place_and_keeps_reviews(network, stored_image, django_user_model):
    make_version()
    classification.classify_smear_image(stored_image.pk)
    first = list(Cell.objects.order_by("index"))
    old_files = files_of(first)
    review_cell(first[0], "EOSINOPHIL", django_user_model.objects.create_user("t"))

    network.analysis = analysis_with([(110, 90, 230, 210)], predicted="MONOCYTE", confidence=0.5)
    classification.classify_smear_image(stored_image.pk)
    cells = list(Cell.objects.order_by("index"))
    assert [c.pk for c in cells] == [first[0].pk]  # index 1 is gone, index 0 updated, not re-created
    cell = cells[0]
    assert (cell.predicted_type, cell.corrected_type) == ("MONOCYTE", "EOSINOPHIL")
    assert cell.cell_type == "EOSINOPHIL"
    assert (cell.x0, cell.confidence, cell.needs_review) == (110, 0.5, True)
    assert CellReview.objects.filter(cell=cell).count() == 1
    assert not any(path.exists() for path in old_files)
    assert all(path.is_file() for path in files_of(cells))


def test_a_rerun_finding_the_cells_in_another_order_keeps_each_review_with_its_cell(
        network, stored_image, django_user_model):
    # A re-run with the same version after an upgrade: the detector (or its order) changed, and
    # now finds a third cell, numbered first, and the other two the other way round.
    make_version()
    left, right, middle = (100, 80, 220, 200), (300, 200, 400, 300), (230, 150, 290, 210)
    network.analysis = analysis_with([left, right])
    classification.classify_smear_image(stored_image.pk)
    reviewed = Cell.objects.get(index=0)
    review_cell(reviewed, "EOSINOPHIL", django_user_model.objects.create_user("t"))

    network.analysis = analysis_with([middle, right, left], predicted="MONOCYTE")
    classification.classify_smear_image(stored_image.pk)
    cells = list(Cell.objects.order_by("index"))
    assert [(c.index, c.box) for c in cells] == [(0, middle), (1, right), (2, left)]
    assert cells[2].pk == reviewed.pk
    assert [(c.cell_type, c.corrected_type) for c in cells] == [
        ("MONOCYTE", ""), ("MONOCYTE", ""), ("EOSINOPHIL", "EOSINOPHIL")]
    assert all(path.is_file() for path in files_of(cells))


def test_a_cell_the_photograph_is_framed_on_counts_though_it_reaches_the_edge(network, stored_image):
    # In the 640x480 photograph: a cell from its middle to the top edge, one the left edge cuts.
    network.analysis = analysis_with([(200, 0, 440, 300), (0, 360, 100, 470)])
    make_version()
    classification.classify_smear_image(stored_image.pk)
    framed_on, cut = Cell.objects.order_by("index")
    assert (framed_on.is_partial, cut.is_partial) == (False, True)


def test_a_cell_an_eyepiece_circle_cuts_is_left_out_as_one_the_edge_cuts(network, stored_image):
    """Photographed through the eyepiece, a field is round, black around it: a cell its circle
    cuts is as incomplete as one the photograph's edge cuts, unless the photograph is framed on it."""
    middle, on_the_circle, inside = analysis_with([(200, 100, 440, 300), (60, 200, 120, 260),
                                                   (150, 80, 200, 130)]).cells
    network.analysis = dataclasses.replace(analysis_with([]), cells=[
        dataclasses.replace(middle, touches_dark_surround=True),
        dataclasses.replace(on_the_circle, touches_dark_surround=True), inside])
    make_version()
    classification.classify_smear_image(stored_image.pk)
    assert [cell.is_partial for cell in Cell.objects.order_by("index")] == [False, True, False]


def test_a_photograph_of_one_cell_counts_its_cell_wherever_it_lies(network, sent_tasks, client, tech):
    """Said at upload to show one cell each, a photograph is analysed so (the pipeline gives the cell
    in its middle), and its cell is never left out as cut by the edge: the photograph was taken of
    it. A cell placed at the middle without an outline says so on its page and in the API."""
    make_version()
    rgb = np.full((480, 640, 3), (225, 185, 195), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    upload = SimpleUploadedFile("crop.jpg", buffer.getvalue())
    sample = uploads.create_sample_with_images("C-9", "", [upload],
                                               photographs=Sample.Photographs.ONE_CELL_EACH).sample
    image = sample.images.get()
    (finished,) = analysis_with([(0, 360, 100, 470)]).cells  # where the edge rule would leave it out
    network.analysis = dataclasses.replace(analysis_with([]), cells=[
        dataclasses.replace(finished, outlined=False, needs_review=True)])
    classification.classify_smear_image(image.pk)
    assert network.one_cell is True
    cell = Cell.objects.get()
    assert not cell.is_partial and not cell.outlined and cell.in_differential
    page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    assert 'data-role="unoutlined"' in page and "no cell outline on this photograph of one cell" in page
    api = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert api["photographs"] == "one_cell_each"
    assert api["images"][0]["cells"][0]["outlined"] is False
    assert api["images"][0]["cells"][0]["in_differential"] is True
    sample_page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="photographs-kind"' in sample_page and 'data-role="unoutlined"' in sample_page
    csv_rows = client.get(reverse("lab:sample-export", args=[sample.pk])).content.decode().splitlines()
    header = next(row for row in csv_rows if row.startswith("cell_id,")).split(",")
    (cell_row,) = [row.split(",") for row in csv_rows if row.startswith(f"{cell.pk},")]
    assert dict(zip(header, cell_row, strict=True))["outlined"] == "no"
    assert "It counts in the formula" in page
    review_cell(cell, "ARTEFACT", tech)  # a middle of bare slide
    page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    assert 'data-role="unoutlined"' in page and "It counts in the formula" not in page


def test_a_one_cell_pick_off_the_middle_says_so_where_it_is_flagged(network, sent_tasks, client, tech,
                                                                      settings):
    make_version()
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.8
    buffer = io.BytesIO()
    Image.fromarray(np.full((480, 640, 3), (225, 185, 195), np.uint8)).save(buffer, format="JPEG")
    upload = SimpleUploadedFile("crop.jpg", buffer.getvalue())
    sample = uploads.create_sample_with_images("C-10", "", [upload],
                                               photographs=Sample.Photographs.ONE_CELL_EACH).sample
    network.analysis = analysis_with([(0, 360, 100, 470)], confidence=0.6)
    classification.classify_smear_image(sample.images.get().pk)
    page = client.get(reverse("lab:cell-detail", args=[Cell.objects.get().pk])).content.decode()
    assert "covers its middle: this is the one nearest it" in page


def test_a_field_of_a_smear_is_analysed_as_one(network, stored_image):
    make_version()
    classification.classify_smear_image(stored_image.pk)
    assert network.one_cell is False
    assert stored_image.sample.photographs == Sample.Photographs.SMEAR_FIELDS


def put_back_to_wait(stored_image, problem):
    """Classify it where the storage fails it: the photograph waits in the queue, saying why."""
    with pytest.raises(classification.StorageUnreachable):
        classification.classify_smear_image(stored_image.pk)
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "queued" and not Cell.objects.exists()
    assert image.error.startswith(f"Waiting: the classifier worker {problem}")
    assert "tried again every 60 s" in image.error
    return image


def test_a_worker_that_cannot_reach_the_media_folder_puts_the_photograph_back(network, stored_image,
                                                                               settings, tmp_path,
                                                                               client, tech):
    make_version()
    mounted = settings.MEDIA_ROOT
    # The shared folder is not mounted on this worker's machine: the photograph is not at fault.
    settings.MEDIA_ROOT = str(tmp_path / "not-mounted")
    missing = f"cannot find LEUKOSCOPE_MEDIA_ROOT={tmp_path / 'not-mounted'}: there is no such folder"
    image = put_back_to_wait(stored_image, missing)
    page = client.get(reverse("lab:sample-detail", args=[image.sample_id])).content.decode()
    assert f'<span data-role="waiting-reason">{escape(image.error)}</span>' in page

    settings.MEDIA_ROOT = mounted  # mounted again: the next delivery classifies it
    assert classification.classify_smear_image(stored_image.pk) == 2
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert (image.status, image.error) == ("done", "")


def test_a_worker_that_cannot_store_its_pictures_puts_the_photograph_back(network, stored_image, settings):
    # The reliability audit: a media folder made read-only while a sample classified failed 22 of
    # its 40 photographs for good, each then tried again by hand. A write the storage refuses is
    # never the photograph's fault: it waits, as for a folder it cannot read.
    make_version()
    blocked = Path(settings.MEDIA_ROOT) / "cells"
    shutil.rmtree(blocked, ignore_errors=True)
    blocked.write_bytes(b"")  # where the crops' folder goes: no crop can be written under it
    refused = f"cannot store its pictures in LEUKOSCOPE_MEDIA_ROOT={settings.MEDIA_ROOT} ("
    try:
        put_back_to_wait(stored_image, refused)
    finally:
        blocked.unlink()
    assert classification.classify_smear_image(stored_image.pk) == 2
    assert SmearImage.objects.get(pk=stored_image.pk).status == "done"


def test_another_version_adds_cells_and_keeps_the_old_ones(network, stored_image):
    old = make_version(status="ready")
    make_version()
    classification.classify_smear_image(stored_image.pk, model_version_id=old.pk)
    classification.classify_smear_image(stored_image.pk)
    assert Cell.objects.filter(model_version=old).count() == 2
    assert Cell.objects.exclude(model_version=old).count() == 2


def test_no_leukocyte_is_a_done_result(network, stored_image):
    make_version()
    network.analysis = analysis_with([])
    assert classification.classify_smear_image(stored_image.pk) == 0
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "done" and image.cells.count() == 0


@pytest.mark.parametrize("error, message", [
    (RuntimeError("tensor shapes differ"), "Classification failed unexpectedly (RuntimeError: tensor shapes"),
    (MemoryError(), "Classification failed unexpectedly (MemoryError)"),
])
def test_an_error_marks_the_image_failed_with_a_readable_reason(network, stored_image, error, message,
                                                                isolated_media_root):
    make_version()
    network.error = error
    before = stored_files(isolated_media_root)
    assert classification.classify_smear_image(stored_image.pk) is None
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "failed" and image.error.startswith(message)
    assert stored_files(isolated_media_root) == before


def test_a_failure_while_storing_removes_the_new_pictures(network, stored_image, monkeypatch,
                                                          isolated_media_root):
    make_version()
    before = stored_files(isolated_media_root)

    def broken_bulk_create(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Cell.objects, "bulk_create", broken_bulk_create)
    classification.classify_smear_image(stored_image.pk)
    assert SmearImage.objects.get(pk=stored_image.pk).status == "failed"
    assert not Cell.objects.exists()
    assert stored_files(isolated_media_root) == before


def test_a_stored_file_that_is_no_image_fails_readably(network, stored_image):
    make_version()
    Path(stored_image.image.path).write_bytes(b"half a JPEG")
    classification.classify_smear_image(stored_image.pk)
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "failed"
    assert image.error == "The photograph could not be read: the file is damaged or is not an image."


def test_without_an_active_model_the_reason_is_given(network, stored_image, monkeypatch):
    def no_model():
        raise NoActiveModel("No model version is active: an admin must activate one.")

    monkeypatch.setattr(classification, "active_version", no_model)
    classification.classify_smear_image(stored_image.pk)
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "failed" and image.error.startswith("No model version is active")


def test_a_deleted_image_is_skipped(network):
    assert classification.classify_smear_image(987654) is None


def test_deleting_a_sample_asks_first_then_removes_every_file(
    network, stored_image, client, django_user_model, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    make_version()
    classification.classify_smear_image(stored_image.pk)
    from tests.webapp.lab_factories import with_role

    creator = with_role(django_user_model.objects.create_user("t"), "technologist")
    Sample.objects.filter(pk=stored_image.sample_id).update(created_by=creator)
    client.force_login(creator)
    files = [Path(stored_image.image.path), *files_of(Cell.objects.all())]
    assert len(files) == 7 and all(path.is_file() for path in files)
    url = reverse("lab:sample-delete", args=[stored_image.sample_id])
    confirm = client.get(url).content.decode()
    assert "1 photograph," in confirm and "2 classified cells" in confirm and "csrfmiddlewaretoken" in confirm
    assert all(path.is_file() for path in files)  # the question deletes nothing
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse("lab:sample-list")
    assert not SmearImage.objects.exists() and not Cell.objects.exists()
    assert not any(path.exists() for path in files)


def test_the_versions_own_review_threshold_flags_calls_unless_the_site_sets_one(network, stored_image,
                                                                                settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = None  # LEUKOSCOPE_REVIEW_THRESHOLD not set
    version = make_version(metrics={"review": {"confidence_threshold": 0.95}})
    network.analysis = analysis_with([(100, 80, 220, 200)], confidence=0.9)
    classification.classify_smear_image(stored_image.pk)
    assert Cell.objects.get().needs_review  # 0.90 is under the version's 0.95

    version.metrics = {"review": {"confidence_threshold": 0.86}}
    version.save()
    classification.classify_smear_image(stored_image.pk)
    assert not Cell.objects.get().needs_review

    version.metrics = {}  # a version that fitted none: the site's default, 0.80
    version.save()
    classification.classify_smear_image(stored_image.pk)
    assert not Cell.objects.get().needs_review

    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.95  # the lab's own setting wins over every version's
    version.metrics = {"review": {"confidence_threshold": 0.86}}
    version.save()
    classification.classify_smear_image(stored_image.pk)
    assert Cell.objects.get().needs_review


# --- a photograph queued again while it is classified ------------------------------------------

def test_a_photograph_re_classified_while_a_run_holds_it_is_left_to_the_newer_run(network, stored_image):
    # The concurrency audit: a re-classification queued while the worker classified the photograph
    # was overwritten by the older run's "done", and the newer message then found it done.
    older, newer = make_version(), make_version(status="ready")
    assert liveness.claim_image(stored_image.pk, "older-task")
    media = Path(Cell._meta.get_field("crop").storage.location)
    files_before = stored_files(media)

    def re_classified_meanwhile():
        SmearImage.objects.filter(pk=stored_image.pk).update(status="queued", requested_version=newer)

    network.during = re_classified_meanwhile
    assert classification.classify_smear_image(stored_image.pk, older.pk, task_id="older-task") is None
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert (image.status, image.requested_version, image.model_version) == ("queued", newer, None)
    assert not image.cells.exists() and stored_files(media) == files_before  # no cell's picture left

    network.during = None
    assert liveness.claim_image(stored_image.pk, "newer-task")
    assert classification.classify_smear_image(stored_image.pk, newer.pk, task_id="newer-task") == 2
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert (image.status, image.model_version) == ("done", newer)


def test_a_run_whose_photograph_another_task_took_drops_its_work(network, stored_image):
    make_version()
    assert liveness.claim_image(stored_image.pk, "older-task")
    network.during = lambda: SmearImage.objects.filter(pk=stored_image.pk).update(task_id="other-task")
    assert classification.classify_smear_image(stored_image.pk, task_id="older-task") is None
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert (image.status, image.task_id) == ("processing", "other-task") and not image.cells.exists()


def test_a_run_that_fails_after_its_photograph_was_queued_again_leaves_it_queued(network, stored_image):
    make_version()
    assert liveness.claim_image(stored_image.pk, "older-task")
    network.during = lambda: SmearImage.objects.filter(pk=stored_image.pk).update(status="queued")
    network.error = RuntimeError("out of memory")
    assert classification.classify_smear_image(stored_image.pk, task_id="older-task") is None
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert (image.status, image.error) == ("queued", "")


def test_a_database_whose_disk_is_full_puts_the_photograph_back_saying_so(network, stored_image, monkeypatch,
                                                                         settings):
    # The disk audit: a database that filled while a photograph's cells were stored marked it failed
    # ("Classification failed unexpectedly (OperationalError: database or disk is full)"), to be tried
    # again by hand once space was freed. Not the photograph's fault: it waits, as for the media folder.
    make_version()
    media = Path(settings.MEDIA_ROOT)
    files_before = stored_files(media)
    recorded = classification.audit.record

    def full(*args, **kwargs):
        raise OperationalError("database or disk is full")

    monkeypatch.setattr(classification.audit, "record", full)  # after the cells, in their transaction
    assert liveness.claim_image(stored_image.pk, "full-task")
    with pytest.raises(classification.StorageUnreachable):
        classification.classify_smear_image(stored_image.pk, task_id="full-task")
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "queued" and not image.cells.exists()
    assert image.error == ("Waiting: the database has no room left on its disk (database or disk is full). "
                           "The photograph is kept and tried again every 60 s; tell the administrator.")
    assert stored_files(media) == files_before  # no cell's picture left behind

    monkeypatch.setattr(classification.audit, "record", recorded)  # space freed: the next try
    assert liveness.claim_image(stored_image.pk, "full-task")
    assert classification.classify_smear_image(stored_image.pk, task_id="full-task") == 2
    assert SmearImage.objects.get(pk=stored_image.pk).status == "done"


def test_the_card_gives_the_first_line_of_postgresql_s_words():
    import psycopg

    try:
        raise OperationalError('could not extend file "base/1/2": No space left on device\nHINT:  Check free '
                               'disk space.') from psycopg.errors.DiskFull("no space")
    except OperationalError as full:
        waiting = classification.waiting_for_database(full)
    assert str(waiting).startswith('Waiting: the database has no room left on its disk (could not extend '
                                   'file "base/1/2": No space left on device). The photograph is kept')


def test_a_worker_whose_temporary_folder_is_full_puts_the_photograph_back_saying_so(network, stored_image,
                                                                                   monkeypatch):
    # Loading a network writes it to the worker's TMPDIR first (classifier.inference.load_keras_bytes):
    # a full one marked every photograph of the queue failed, each to be tried again by hand.
    make_version()
    serving = classification.load_classifier

    def no_room(version):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(classification, "load_classifier", no_room)
    assert liveness.claim_image(stored_image.pk, "tmp-task")
    with pytest.raises(classification.StorageUnreachable):
        classification.classify_smear_image(stored_image.pk, task_id="tmp-task")
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert image.status == "queued" and not image.cells.exists()
    assert image.error.startswith("Waiting: the classifier worker cannot load the network, its temporary")
    assert "(No space left on device)" in image.error

    monkeypatch.setattr(classification, "load_classifier", serving)  # space freed: the next try
    assert liveness.claim_image(stored_image.pk, "tmp-task")
    assert classification.classify_smear_image(stored_image.pk, task_id="tmp-task") == 2


def test_a_task_waits_for_a_full_database_without_limit(settings):
    # Even the claim is refused on a full disk: the task raised, its message was gone, and the
    # photograph waited, queued and saying nothing, for the reconciler's sweep 5 minutes on.
    from celery.exceptions import Retry

    from webapp import tasks

    class Task:
        def retry(self, **options):
            self.options = options
            return Retry()

    task = Task()
    with pytest.raises(Retry):
        tasks._retry_when_busy(task, OperationalError("database or disk is full"), "Image 1")
    assert task.options["countdown"] == settings.STORAGE_RETRY_SECONDS and task.options["max_retries"] is None
    with pytest.raises(OperationalError):
        tasks._retry_when_busy(task, OperationalError("no such table: webapp_cell"), "Image 1")


def test_a_database_too_busy_to_answer_leaves_the_photograph_to_the_task_s_next_try(network, stored_image):
    make_version()
    assert liveness.claim_image(stored_image.pk, "busy-task")
    network.error = OperationalError("database is locked")
    with pytest.raises(OperationalError):
        classification.classify_smear_image(stored_image.pk, task_id="busy-task")
    image = SmearImage.objects.get(pk=stored_image.pk)
    assert (image.status, image.task_id, image.error) == ("processing", "busy-task", "")
    # A query the database refuses is no busy database: trying again would meet it again.
    network.error = OperationalError("no such column: webapp_cell.outlined")
    assert classification.classify_smear_image(stored_image.pk, task_id="busy-task") is None
    assert SmearImage.objects.get(pk=stored_image.pk).status == "failed"


@pytest.mark.django_db(transaction=True)
def test_a_sample_deleted_while_a_photograph_s_cells_are_stored_goes_whole(network, stored_image,
                                                                          django_user_model, monkeypatch):
    # A sample deleted (on PostgreSQL) while the worker stored a photograph's cells: the deletion read
    # the cells and their files before the worker committed, then waited on the photograph's row,
    # and deleted it from under the worker's new cells: the database refused the commit (an
    # IntegrityError, a 500 to the person deleting), or, the worker committing a moment sooner, the
    # new cells' pictures stayed in the media folder for good.
    import threading

    from django.db import connection

    from tests.webapp.concurrent_requests import start_as_another_request, waiting_on_a_lock
    from webapp.services.deletion import delete_sample

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    make_version()
    user = django_user_model.objects.create_user("tech")
    sample = Sample.objects.get(pk=stored_image.sample_id)
    media = Path(Cell._meta.get_field("crop").storage.location)
    files_before = stored_files(media) - {Path(stored_image.image.path)}
    assert liveness.claim_image(stored_image.pk, "the-task")
    storing, release, failures = threading.Event(), threading.Event(), []
    store_cells = classification._store_cells

    def store_then_wait(*args):
        stale = store_cells(*args)
        storing.set()  # the cells written, not committed: the photograph's row locked
        release.wait(30)
        return stale

    monkeypatch.setattr(classification, "_store_cells", store_then_wait)
    worker = start_as_another_request(
        lambda: classification.classify_smear_image(stored_image.pk, task_id="the-task"))
    assert storing.wait(30)

    def delete():
        try:
            delete_sample(sample, user=user)
        except Exception as exc:  # noqa: BLE001 - what the person deleting would get
            failures.append(exc)

    deleting = start_as_another_request(delete)
    wait_for(lambda: waiting_on_a_lock(), "the deletion to wait on a row the worker holds", 30)
    release.set()
    worker.join(30)
    deleting.join(30)
    assert failures == []
    assert not Sample.objects.exists() and not SmearImage.objects.exists() and not Cell.objects.exists()
    assert stored_files(media) == files_before  # the photograph and its cells' pictures gone


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["relabel", "gallery relabel", "count in"])
def test_a_change_while_a_re_classification_carries_the_reviews_over_is_carried_or_refused(
        network, stored_image, django_user_model, monkeypatch, change):
    # A re-classification carries the labels and count-ins given to the calls it replaces over to
    # its own cells, under its photograph's row lock; one committed after that read and before the
    # re-classification committed (on PostgreSQL) was told it was saved, and left on a call the
    # formula no longer counts: the network's call, or the edge cell left out, counted instead.
    # The gallery's refusal then named the cell among the sample's new calls, where it is not: a
    # KeyError, a 500 for the reviewer.
    import threading

    from django.db import connection

    from tests.webapp.concurrent_requests import start_as_another_request, waiting_on_a_lock
    from tests.webapp.lab_factories import with_role
    from webapp.services.edge_cells import CountInError, set_counted_in
    from webapp.services.review import ReviewError

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    network.analysis = analysis_with([(0, 80, 120, 200), (300, 200, 400, 300)])  # the first cut by the edge
    make_version()
    classification.classify_smear_image(stored_image.pk)
    earlier = Cell.objects.order_by("index").first()
    assert earlier.is_partial
    newer = make_version()
    SmearImage.objects.filter(pk=stored_image.pk).update(status="queued", requested_version=newer)
    assert liveness.claim_image(stored_image.pk, "the-task")
    user = with_role(django_user_model.objects.create_user("tech"), "technologist")
    carried, release, refused, saved = threading.Event(), threading.Event(), [], []
    carry_count_in = classification._carry_count_in

    def carry_then_wait(*args):
        carry_count_in(*args)
        carried.set()  # the labels and count-ins read and carried; nothing committed yet
        release.wait(30)

    monkeypatch.setattr(classification, "_carry_count_in", carry_then_wait)
    worker = start_as_another_request(
        lambda: classification.classify_smear_image(stored_image.pk, newer.pk, task_id="the-task"))
    assert carried.wait(30)

    def make_the_change():
        if change == "gallery relabel":  # the page's request, checked against the counted cells first
            client = Client()
            client.force_login(user)
            response = client.post(reverse("lab:gallery-review", args=[stored_image.sample_id]),
                                   {"cells": str(earlier.pk), "cell_type": "LYMPHOCYTE"},
                                   HTTP_ACCEPT="application/json")
            (saved if response.status_code == 200 else refused).append(response.json().get("error"))
            return
        try:
            saved.append(review_cell(earlier, "LYMPHOCYTE", user) if change == "relabel"
                         else set_counted_in(earlier, True))
        except (ReviewError, CountInError) as exc:
            refused.append(str(exc))

    person = start_as_another_request(make_the_change)
    wait_for(lambda: saved or refused or waiting_on_a_lock(),
             "the change to finish or wait on the photograph", 30)
    release.set()
    worker.join(30)
    person.join(30)
    counted = Cell.objects.get(image=stored_image, model_version=newer, x0=earlier.x0)
    if saved:  # told it was saved: the formula counts it
        assert (counted.cell_type, counted.count_partial) == (
            ("NEUTROPHIL", True) if change == "count in" else ("LYMPHOCYTE", False))
    else:  # told why not, and which call to change instead
        assert refused and f"the sample now counts v{newer.pk}'s call" in refused[0]
        assert (counted.cell_type, counted.count_partial) == ("NEUTROPHIL", False)


@pytest.mark.django_db(transaction=True)
def test_a_signature_certifies_only_the_result_its_signer_was_shown(network, stored_image, django_user_model,
                                                                    monkeypatch):
    # Signing checked the result the page showed (its stamp) first, then whether every photograph
    # was classified. A photograph the worker finished in between passed both: the stamp read before
    # its cells were committed, the check after; the signature then certified cells its signer never
    # saw (on PostgreSQL, where the worker does not wait for the sample's lock).
    from django.db import connection

    from tests.webapp.concurrent_requests import start_as_another_request
    from tests.webapp.lab_factories import with_role
    from webapp.selectors import result_stamp
    from webapp.services import sign_off

    if connection.vendor != "postgresql":
        pytest.skip("SQLite takes one writer at a time: the worker waits for the signature's transaction")
    make_version()
    Sample.objects.filter(pk=stored_image.sample_id).update(target_count=2)
    sample = Sample.objects.get(pk=stored_image.sample_id)
    assert liveness.claim_image(stored_image.pk, "the-task")
    shown = result_stamp(sample)  # the page, loaded while the photograph was being classified
    hematologist = with_role(django_user_model.objects.create_user("hema"), "hematologist")
    facts = sign_off.sign_off_facts

    def finished_meanwhile(*args):  # the worker commits its cells as the signature is checked
        worker = start_as_another_request(
            lambda: classification.classify_smear_image(stored_image.pk, task_id="the-task"))
        worker.join(30)
        return facts(*args)

    monkeypatch.setattr(sign_off, "sign_off_facts", finished_meanwhile)
    try:
        signed = sign_off.sign_sample(sample, hematologist, result_seen=shown)
    except sign_off.SignOffRefused as exc:
        assert "its result changed since your page was loaded" in str(exc)
        assert not Sample.objects.get(pk=sample.pk).is_signed
    else:
        assert result_stamp(signed) == shown, "signed a result its signer was not shown"
