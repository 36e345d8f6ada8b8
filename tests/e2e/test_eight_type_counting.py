"""The eight-type network, served by the real worker, counts as a hematology lab counts.

Four real PBC TEST photographs (another lab than the network's BCCD half) are uploaded as the
fields of one sample: a neutrophil, a lymphocyte, an erythroblast and a platelet, each the only
cell the detector finds in its field. The worker's network names them; the formula must keep the
erythroblast and the platelet out of the differential, report the erythroblast as NRBC per 100
leukocytes and list the platelet apart, on the page, in the API and in the CSV.
"""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import require_dataset
from tests.e2e.test_classification_flow import wait_until_finished
from webapp.models import Cell
from webapp.selectors import leukocyte_formula

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# One clear example of each, chosen because the detector finds exactly one cell in its field.
FIELDS = {
    "NEUTROPHIL": "BNE_106934.jpg",
    "LYMPHOCYTE": "LY_106354.jpg",
    "ERYTHROBLAST": "ERB_101277.jpg",
    "PLATELET": "PLATELET_120185.jpg",
}


def test_erythroblast_is_nrbc_and_platelet_is_listed_apart(client, tech, celery_worker, served_model):
    if not {"ERYTHROBLAST", "PLATELET"} <= set(served_model.class_names):
        pytest.skip(f"the served network {served_model} does not name erythroblasts and platelets")
    paths = {kind: require_dataset("pbc", "TEST", kind, name) for kind, name in FIELDS.items()}

    response = client.post(reverse("lab:upload"), {
        "accession_number": "E2E-NRBC",
        "images": [SimpleUploadedFile(path.name, path.read_bytes()) for path in paths.values()],
    })
    assert response.status_code == 302
    sample = tech.samples.get()
    finished = wait_until_finished(list(sample.images.all()))
    assert all(image.status == "done" for image in finished.values()), [
        image.error for image in finished.values()]

    # Well-taken analyser photographs (a warm slide, its red at 254-255) raise no quality warning,
    # which would send every one of their cells to review.
    assert {image.original_filename: image.quality_warnings for image in finished.values()} == {
        path.name: [] for path in paths.values()}

    called = {}
    for image in finished.values():
        cells = list(Cell.objects.filter(image=image))
        assert len(cells) == 1, f"{image.original_filename}: {len(cells)} cells found"
        called[image.original_filename] = cells[0].predicted_type
    assert called == {path.name: kind for kind, path in paths.items()}

    formula = leukocyte_formula(sample)
    assert formula.total == 2  # the neutrophil and the lymphocyte only
    percents = {row.name: row.percent for row in formula.rows}
    assert percents["NEUTROPHIL"] == 50.0 and percents["LYMPHOCYTE"] == 50.0
    assert "ERYTHROBLAST" not in percents and "PLATELET" not in percents
    assert sum(percents.values()) == pytest.approx(100.0)
    nrbc = {row.reported_as: row for row in formula.per_100}["NRBC"]
    assert (nrbc.count, nrbc.per_100) == (1, 50.0)
    assert dict(formula.listed_apart) == {"PLATELET": 1}

    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "NRBC" in page and "50 per 100 leukocytes" in page

    api = client.get(reverse("lab:api-sample", args=[sample.pk])).json()["formula"]
    assert api["total"] == 2
    assert api["per_100_leukocytes"]["NRBC"] == {"type": "ERYTHROBLAST", "count": 1,
                                                  "per_100_leukocytes": 50.0}
    assert api["listed_apart"] == {"PLATELET": 1}
    assert set(api["types"]) >= {"NEUTROPHIL", "LYMPHOCYTE"}
    assert not {"ERYTHROBLAST", "PLATELET"} & set(api["types"])

    export = client.get(reverse("lab:sample-export", args=[sample.pk])).content.decode()
    exported_types = {row[7] for row in csv.reader(io.StringIO(export)) if row and row[0].isdigit()}
    assert {"ERYTHROBLAST", "PLATELET"} <= exported_types
