"""The whole path with the real worker and the real network: upload → classify queue → cells → formula.

Few uploads on purpose: each real classification costs CPU seconds the rest of the suite needs.
"""

import csv
import io
import time
from pathlib import Path

import numpy as np
import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from tests.conftest import require_dataset
from webapp.models import Cell, CellReview, SmearImage
from webapp.review_flag import review_threshold
from webapp.selectors import leukocyte_formula, sample_timeline
from webapp.services.review import review_cell
from webapp.services.uploads import create_sample_with_images

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# The first task loads TensorFlow and the network in the worker; later ones take about a second.
TIMEOUT_S = 240


def wait_until_finished(images, timeout=TIMEOUT_S, after=None):
    ids = [image.pk for image in images]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(SmearImage.objects.filter(pk__in=ids))
        finished = [row for row in rows if row.status in ("done", "failed")
                    and (after is None or (row.processed_at and row.processed_at > after))]
        if len(finished) == len(ids):
            return {row.pk: row for row in rows}
        time.sleep(0.25)
    states = dict(SmearImage.objects.filter(pk__in=ids).values_list("pk", "status"))
    pytest.fail(f"images not classified within {timeout} s: {states}")


def media_file(field_file):
    return Path(field_file.path)


def test_upload_classify_review_export_delete(client, tech, celery_worker, served_model):
    smear_path = sorted(require_dataset("bccd-smears", "JPEGImages").glob("BloodImage_*.jpg"))[0]
    single_path = sorted(require_dataset("blood-cell-images", "TEST", "NEUTROPHIL").glob("*.jpeg"))[0]

    started = time.monotonic()
    response = client.post(reverse("lab:upload"), {
        "accession_number": "E2E-0001",
        "images": [SimpleUploadedFile(smear_path.name, smear_path.read_bytes()),
                   SimpleUploadedFile(single_path.name, single_path.read_bytes())],
    })
    assert response.status_code == 302
    # The page answers at once: classification happens in the worker, not in the request.
    assert time.monotonic() - started < 5
    sample = tech.samples.get()
    images = list(sample.images.order_by("id"))
    assert len(images) == 2

    finished = wait_until_finished(images)
    classes = set(served_model.class_names)
    for image in images:
        image = finished[image.pk]
        assert image.status == "done", image.error
        assert image.model_version_id == served_model.pk
        assert image.inference_runtime == "litert-int8"  # the site's default: int8 weights
        assert isinstance(image.quality, dict) and image.quality
        assert isinstance(image.quality_warnings, list)
        cells = list(image.cells.order_by("index"))
        assert len(cells) >= 1, f"no leukocyte found in {image.original_filename}"
        for cell in cells:
            assert 0 <= cell.x0 < cell.x1 <= image.width and 0 <= cell.y0 < cell.y1 <= image.height
            assert cell.predicted_type in classes and cell.cell_type == cell.predicted_type
            assert set(cell.probabilities) == classes
            assert sum(cell.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
            assert cell.confidence == pytest.approx(max(cell.probabilities.values()), abs=1e-6)
            assert cell.binary_call in ("MONONUCLEAR", "POLYNUCLEAR")
            unsure = cell.confidence < review_threshold(served_model)
            if "ood" in (served_model.metrics or {}):  # unfamiliar cells are flagged too
                assert cell.needs_review or not unsure
            else:
                assert cell.needs_review == unsure
            assert cell.model_version_id == served_model.pk
            for picture in (cell.crop, cell.window, cell.heatmap):
                assert media_file(picture).is_file()
            assert Image.open(cell.window.path).size == (320, 240)

    # The audit trail: one row a classified photograph, written by the worker (no actor), none a cell.
    classified = [entry for entry in sample_timeline(sample.pk) if "classified by" in
                  (entry.additional_data or {}).get("note", "")]
    assert len(classified) == 2 and all(entry.actor is None for entry in classified)
    assert not sample_timeline(sample.pk).filter(content_type__model="cell").exists()

    formula = leukocyte_formula(sample)
    total = Cell.objects.filter(image__sample=sample).count()
    assert formula.total == total
    assert sum(row.count for row in formula.rows) == total
    assert sum(row.percent for row in formula.rows) == pytest.approx(100.0, abs=0.5)
    assert sum(row.count for row in formula.groups or formula.rows) == total  # binary models: rows

    status = client.get(reverse("lab:sample-status", args=[sample.pk])).json()
    assert status["complete"] and status["percent"] == 100
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "Leukocyte formula" in page and "<polygon" in page

    # Review one cell, then run the same image and version again: same cells, review kept.
    cell = Cell.objects.filter(image=images[0]).order_by("index").first()
    other = sorted(classes - {cell.predicted_type})[0]
    review_cell(cell, other, tech)
    cell_ids = sorted(Cell.objects.filter(image=images[0]).values_list("pk", flat=True))
    first_crop = Cell.objects.get(pk=cell.pk).crop.path
    rerun_at = SmearImage.objects.get(pk=images[0].pk).processed_at
    from webapp.services.uploads import requeue_image

    requeue_image(SmearImage.objects.get(pk=images[0].pk))  # "Try again": the same version
    wait_until_finished([images[0]], after=rerun_at)
    assert sorted(Cell.objects.filter(image=images[0]).values_list("pk", flat=True)) == cell_ids
    cell.refresh_from_db()
    assert cell.corrected_type == other and cell.cell_type == other
    assert CellReview.objects.filter(cell=cell).count() == 1
    assert not Path(first_crop).exists()  # the replaced picture went, the new one is there
    assert media_file(cell.crop).is_file()
    assert leukocyte_formula(sample).reviewed == 1

    export = client.get(reverse("lab:sample-export", args=[sample.pk]))
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert any(row and row[0] == str(cell.pk) and row[7] == other for row in rows)

    api = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert api["formula"]["total"] == total
    assert sum(len(image["cells"]) for image in api["images"]) == total

    files = [media_file(image.image) for image in finished.values()]
    for found in Cell.objects.filter(image__sample=sample):
        files += [media_file(found.crop), media_file(found.window), media_file(found.heatmap)]
    assert all(path.is_file() for path in files)
    response = client.post(reverse("lab:sample-delete", args=[sample.pk]))
    assert response.status_code == 302
    assert not any(path.exists() for path in files)
    assert not Cell.objects.exists()
    assert sample_timeline(sample.pk).filter(action=LogEntry.Action.DELETE, actor=tech).count() == 1


def test_no_leukocyte_is_done_and_a_missing_file_fails_readably(tech, celery_worker, served_model):
    def field_png(seed):
        """A pale, evenly stained field with red-cell-coloured blobs and no nucleus anywhere."""
        rng = np.random.default_rng(seed)
        field = np.full((240, 320, 3), (238, 214, 214), np.uint8)
        for _ in range(25):
            y, x = rng.integers(20, 220), rng.integers(20, 300)
            field[max(0, y - 12) : y + 12, max(0, x - 12) : x + 12] = (214, 150, 160)
        buffer = io.BytesIO()
        Image.fromarray(field).save(buffer, format="PNG")
        return buffer.getvalue()

    empty = SimpleUploadedFile("empty-field.png", field_png(1))
    # Another field: a mirrored copy of the first would be refused as the same photograph.
    broken = SimpleUploadedFile("will-vanish.png", field_png(2))
    result = create_sample_with_images("E2E-0002", "", [empty, broken], user=tech)
    empty_image, broken_image = result.stored
    # Simulate storage losing the photograph before the worker reaches it.
    Path(broken_image.image.path).unlink()

    finished = wait_until_finished(result.stored)
    assert finished[empty_image.pk].status == "done", finished[empty_image.pk].error
    assert finished[empty_image.pk].cells.count() == 0
    assert finished[broken_image.pk].status == "failed"
    assert "missing from storage" in finished[broken_image.pk].error
    assert leukocyte_formula(result.sample).total == 0


def test_photographs_of_one_cell_each_give_one_counted_cell_apiece(client, tech, celery_worker, served_model):
    """The real detector and network on two single-cell photographs uploaded as such: a PBC basophil
    beside a clump of red cells (as a field, two cells) and a BCCD eosinophil whose nucleus the
    detector does not outline (as a field, none). Each gives one cell, counted in the formula."""
    basophil = require_dataset("pbc", "TEST", "BASOPHIL", "BA_812946.jpg")
    unoutlined = require_dataset("blood-cell-images", "TEST", "EOSINOPHIL", "_10_2029.jpeg")
    response = client.post(reverse("lab:upload"), {
        "accession_number": "E2E-0003", "photographs": "one_cell_each",
        "images": [SimpleUploadedFile(path.name, path.read_bytes()) for path in (basophil, unoutlined)],
    })
    assert response.status_code == 302
    images = list(SmearImage.objects.filter(sample__accession_number="E2E-0003").order_by("pk"))
    finished = wait_until_finished(images)
    assert all(image.status == "done" for image in finished.values())
    (basophil_cell,) = finished[images[0].pk].cells.all()
    (middle_cell,) = finished[images[1].pk].cells.all()
    assert basophil_cell.outlined and not basophil_cell.is_partial
    assert not middle_cell.outlined and middle_cell.needs_review and not middle_cell.is_partial
    if "BASOPHIL" in served_model.class_names:
        assert (basophil_cell.predicted_type, middle_cell.predicted_type) == ("BASOPHIL", "EOSINOPHIL")
    assert leukocyte_formula(images[0].sample).total == 2
    rows = list(csv.reader(io.StringIO(
        client.get(reverse("lab:sample-export", args=[images[0].sample_id])).content.decode())))
    assert ["photographs", "one_cell_each"] in rows
