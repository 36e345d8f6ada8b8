"""A sample's CSV export read per photograph: every photograph listed with its id and what became
of it, and every cell row joined to its photograph by id."""

import csv
import io

import pytest
from django.urls import reverse

from tests.webapp.lab_factories import make_sample
from webapp.models import Cell, SmearImage
from webapp.selectors import cell_names
from webapp.services.review import review_cell

pytestmark = pytest.mark.django_db

PHOTOGRAPH_COLUMNS = ["image", "image_id", "status", "cells", "cells_in_differential", "model_version",
                      "quality_warnings", "error"]
# The cells table's columns before this change, in their places: a reader may take them by position.
CELL_COLUMNS = ["cell_id", "image", "index", "x0", "y0", "x1", "y1", "cell_type", "predicted_type",
                "corrected_type", "confidence", "binary_call", "predicted_binary_call", "needs_review",
                "model_version", "review_carried_from", "ood_score", "image_unfamiliar", "added_by_hand",
                "partial", "counted_in"]


def add_photograph(sample, name, status, **fields):
    return SmearImage.objects.create(
        sample=sample, image=f"smears/{name}", original_filename=name, width=640, height=480,
        file_size=1000, checksum="1" * 64, status=status, **fields)


def exported_rows(client, sample):
    response = client.get(reverse("lab:sample-export", args=[sample.pk]))
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode())))


def table(rows, header_start):
    """The rows of the table whose header starts with header_start, as dicts, up to the next blank row."""
    start = next(at for at, row in enumerate(rows) if row[:1] == [header_start])
    header, body = rows[start], []
    for row in rows[start + 1:]:
        if not row:
            break
        body.append(dict(zip(header, row, strict=True)))
    return header, body


@pytest.fixture
def three_photographs():
    """One photograph done with cells, one done with no cell found under the same file name
    (another folder's 001.jpg), one failed; in that upload order."""
    sample = make_sample("H26-0042", types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"))
    with_cells = sample.images.get()
    with_cells.original_filename = "001.jpg"
    with_cells.quality_warnings = ["Out of focus", "Dark"]
    with_cells.save()
    empty = add_photograph(sample, "001.jpg", SmearImage.Status.DONE,
                           model_version=with_cells.model_version)
    failed = add_photograph(sample, "002.jpg", SmearImage.Status.FAILED,
                            error="The stored file is missing.")
    return sample, with_cells, empty, failed


def test_the_export_lists_every_photograph_with_its_id_and_what_became_of_it(client, tech, three_photographs):
    sample, with_cells, empty, failed = three_photographs
    version = f"v{with_cells.model_version_id}"

    rows = exported_rows(client, sample)

    header, photographs = table(rows, "image")
    assert header == PHOTOGRAPH_COLUMNS
    assert photographs == [
        {"image": "001.jpg", "image_id": str(with_cells.pk), "status": "done", "cells": "3",
         "cells_in_differential": "3", "model_version": version,
         "quality_warnings": "Out of focus; Dark", "error": ""},
        # Same file name, told apart by id; done, and no leukocyte found on it.
        {"image": "001.jpg", "image_id": str(empty.pk), "status": "done", "cells": "0",
         "cells_in_differential": "0", "model_version": version, "quality_warnings": "", "error": ""},
        {"image": "002.jpg", "image_id": str(failed.pk), "status": "failed", "cells": "0",
         "cells_in_differential": "0", "model_version": "", "quality_warnings": "",
         "error": "The stored file is missing."},
    ]
    # Its own section: after the summary's last line, before the cells table, blank lines between.
    start = rows.index(header)
    assert rows[start - 1] == [] and rows[start - 2][:1] == ["model_versions"]
    assert rows[start + len(photographs) + 1] == [] and rows[start + len(photographs) + 2][0] == "cell_id"


def test_each_cell_row_names_its_photograph_by_id(client, tech, three_photographs):
    sample, with_cells, empty, failed = three_photographs
    # A cell on the second 001.jpg, so that the name alone no longer says which photograph.
    Cell.objects.filter(image=with_cells, index=2).update(image=empty)

    rows = exported_rows(client, sample)

    _, photographs = table(rows, "image")
    header, cells = table(rows, "cell_id")
    assert header[:len(CELL_COLUMNS)] == CELL_COLUMNS  # no column before moved
    assert header[-4:] == ["image_id", "outlined", "in_differential", "number_on_photograph"]
    assert all(cell["outlined"] == "yes" for cell in cells)
    # Numbered as the pages name the cells: the moved cell, index 2, is the first on its photograph.
    as_numbered = {int(cell["cell_id"]): f"Cell {cell['number_on_photograph']} on {cell['image']}"
                   for cell in cells}
    assert as_numbered == cell_names(int(cell["cell_id"]) for cell in cells)
    assert sorted(cell["number_on_photograph"] for cell in cells) == ["1", "1", "2"]
    by_photograph = {}
    for cell in cells:
        by_photograph.setdefault(cell["image_id"], []).append(int(cell["cell_id"]))
    expected = {str(image.pk): sorted(Cell.objects.filter(image=image).values_list("pk", flat=True))
                for image in (with_cells, empty)}
    assert by_photograph == expected
    assert {row["image_id"]: row["cells"] for row in photographs} == {
        str(with_cells.pk): "2", str(empty.pk): "1", str(failed.pk): "0"}
    names = {row["image_id"]: row["image"] for row in photographs}
    assert all(cell["image"] == names[cell["image_id"]] for cell in cells)


def test_photograph_rows_count_the_cells_the_formula_counts(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "MONOCYTE"))
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    review_cell(cells[1], "PLATELET", tech)  # listed apart, not counted
    Cell.objects.filter(pk=cells[2].pk).update(is_partial=True)  # cut by the edge, left out

    rows = exported_rows(client, sample)

    _, [photograph] = table(rows, "image")
    assert (photograph["cells"], photograph["cells_in_differential"]) == ("4", "2")
    assert ["TOTAL", "2", "100.0"] in rows
    # Each cell says so too: counted_in is the edge's word alone (a whole platelet is counted in,
    # and listed apart), in_differential the formula's.
    _, rows_of_cells = table(rows, "cell_id")
    by_id = {int(row["cell_id"]): (row["counted_in"], row["in_differential"]) for row in rows_of_cells}
    assert [by_id[cell.pk] for cell in cells] == [("yes", "yes"), ("yes", "no"), ("no", "no"), ("yes", "yes")]


def test_a_queued_photograph_is_listed_before_the_worker_has_seen_it(client, tech):
    sample = make_sample(types=("NEUTROPHIL",))
    queued = add_photograph(sample, "003.jpg", SmearImage.Status.QUEUED)

    _, photographs = table(exported_rows(client, sample), "image")

    assert photographs[-1] == {"image": "003.jpg", "image_id": str(queued.pk), "status": "queued",
                               "cells": "0", "cells_in_differential": "0", "model_version": "",
                               "quality_warnings": "", "error": ""}


@pytest.mark.parametrize("text", ["=HYPERLINK(1)", "+1", "-1", "@SUM(A1)"])
def test_a_photograph_named_like_a_formula_stays_text_and_is_found_by_id(client, tech, text):
    sample = make_sample(types=("NEUTROPHIL",))
    image = sample.images.get()
    SmearImage.objects.filter(pk=image.pk).update(original_filename=f"{text}.jpg", error=f"{text} failed")

    rows = exported_rows(client, sample)

    _, [photograph] = table(rows, "image")
    _, [cell] = table(rows, "cell_id")
    assert photograph["image"] == cell["image"] == f"'{text}.jpg"
    assert photograph["error"] == f"'{text} failed"
    assert photograph["image_id"] == cell["image_id"] == str(image.pk)


def test_the_export_reads_the_photographs_in_the_same_queries_however_many(client, tech,
                                                                            django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    sample = make_sample(types=("NEUTROPHIL",))
    with CaptureQueriesContext(connection) as one:
        exported_rows(client, sample)
    version = sample.images.get().model_version
    for number in range(5):
        image = add_photograph(sample, f"{number}.jpg", SmearImage.Status.DONE, model_version=version)
        Cell.objects.create(image=image, model_version=version, index=0, x0=0, y0=0, x1=9, y1=9,
                            predicted_type="LYMPHOCYTE", cell_type="LYMPHOCYTE", confidence=0.9,
                            binary_call="MONONUCLEAR", probabilities={"LYMPHOCYTE": 0.9})
    add_photograph(sample, "failed.jpg", SmearImage.Status.FAILED, error="Unreadable.")

    with django_assert_num_queries(len(one.captured_queries)):
        rows = exported_rows(client, sample)
    assert len(table(rows, "image")[1]) == 7


def test_the_pages_export_starts_with_a_byte_order_mark_for_excel_and_the_apis_does_not(client, tech):
    """Excel reads a CSV without a byte-order mark in the legacy code page: "Mañana" opened as
    "MaÃ±ana". A program reading the API's copy keeps getting the rows alone."""
    sample = make_sample("H26-0777", types=("NEUTROPHIL",))
    sample.note = "Mañana: tinción de Wright"
    sample.save()
    page = client.get(reverse("lab:sample-export", args=[sample.pk])).content
    assert page.startswith(b"\xef\xbb\xbfaccession_number,H26-0777")
    rows = list(csv.reader(io.StringIO(page.decode("utf-8-sig"))))
    assert ["note", "Mañana: tinción de Wright"] in rows
    api = client.get(reverse("lab:api-sample-export", args=[sample.pk])).content
    # The two requests may fall either side of a second, and each export says when it was made.
    assert without_export_time(api) == without_export_time(page[3:])


def without_export_time(export):
    lines = export.split(b"\r\n")
    stamped = [at for at, line in enumerate(lines) if line.startswith(b"exported_at,")]
    assert len(stamped) == 1
    del lines[stamped[0]]
    return lines


def test_an_accession_number_outside_ascii_still_names_the_download(client, tech):
    """Django writes a header it cannot put in Latin-1 as one RFC 2047 word ("=?utf-8?b?...?="),
    which browsers do not read as Content-Disposition: the file lost its name and its "attachment"."""
    sample = make_sample("ЛБ-0054-中", types=("NEUTROPHIL",))
    response = client.get(reverse("lab:sample-export", args=[sample.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="leukoscope-__-0054-_.csv"'
    pdf = client.get(reverse("lab:sample-report-pdf", args=[sample.pk]))
    assert pdf["Content-Disposition"] == 'attachment; filename="__-0054-_-report.pdf"'
