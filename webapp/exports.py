"""A sample's results as CSV, for a spreadsheet or a laboratory information system."""

import csv

from django.http import HttpResponse
from django.utils import timezone

from webapp.cell_types import type_order
from webapp.counting import group_of
from webapp.presenters.report import changes_line
from webapp.selectors import leukocyte_formula, sample_images_with_cells, unfamiliar_photograph

# A spreadsheet reads a cell starting with one of these as a formula: a photograph named
# "=HYPERLINK(...).jpg" would run when the export is opened (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text):
    """Text that a spreadsheet shows as text: a leading quote where it would start a formula (OWASP)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def export_file_name(sample):
    # ASCII, as the PDF's name (views.report.report_file_name): Django sends a header it cannot write
    # in Latin-1 as one RFC 2047 word, which no browser reads as Content-Disposition: an accession
    # number with a Cyrillic letter (made before the upload form's rule) lost the download's name.
    safe_name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_"
                        for ch in sample.accession_number)
    return f"leukoscope-{safe_name}.csv"


def _sample_rows(sample):
    images = sample_images_with_cells(sample)
    formula = leukocyte_formula(sample)
    class_names = sorted({name for entry in images for cell in entry.cells for name in cell.probabilities},
                         key=type_order)
    yield ["accession_number", sample.accession_number]
    yield ["note", sample.note]
    yield ["exported_at", timezone.now().isoformat(timespec="seconds")]
    # The report's status (preliminary, final, amended), in the FHIR export's codes: a preliminary
    # result must not pass for a signed one.
    yield ["result", sample.result.value]
    if sample.is_signed:
        yield ["signed_by", sample.signed_by.get_username() if sample.signed_by else ""]
        yield ["signed_at", sample.signed_at.isoformat(timespec="seconds") if sample.signed_at else ""]
        if sample.below_target_reason:
            yield ["signed_below_target_reason", sample.below_target_reason]
        if sample.amended_because:
            yield ["amended_because", sample.amended_because]
            reopened_at = sample.reopened_at.isoformat(timespec="seconds") if sample.reopened_at else ""
            yield ["reopened_by", sample.reopened_by.get_username() if sample.reopened_by else ""]
            yield ["reopened_at", reopened_at]
            if changes := changes_line(sample, formula):
                yield ["amended_changes", changes]
    yield ["target_count", sample.target_count]
    # Last of the sample's lines, so that none above moved when it came.
    yield ["photographs", sample.photographs]
    yield []
    yield ["formula", "count", "percent", "percent_low_95", "percent_high_95"]
    for row in formula.rows + formula.groups:
        yield [row.name, row.count, row.percent, row.low, row.high]
    # With no leukocyte counted there is no share to give: the cells stay empty, as the types' do.
    yield ["TOTAL", formula.total, 100.0 if formula.total else ""]
    # Beside the differential, by webapp.counting's rules: per 100 leukocytes (NRBC), then what
    # is listed apart and not counted.
    for row in formula.per_100:
        yield [f"per_100_leukocytes_{row.code}", row.count, row.per_100]
    for name, count in formula.listed_apart:
        yield [f"listed_apart_{name}", count]
    yield ["unidentified_not_counted", formula.unidentified]
    yield ["edge_cells_not_counted", formula.partial_left_out]
    yield ["reviewed", formula.reviewed]
    yield ["flagged_not_reviewed", formula.awaiting_review]
    yield ["artefacts_not_counted", formula.artefacts]
    yield ["model_versions", " ".join(f"v{pk}" for pk in formula.model_versions)]
    if formula.mixed_versions:
        yield ["warning", "Photographs classified by different model versions: the counts mix two "
                          "networks' calls. Re-classify the sample with one version."]
    if formula.mostly_unfamiliar:
        yield ["warning", f"{formula.unfamiliar_cells} of the {formula.scored_cells} cells found in the "
                          "sample are unlike those the network was trained on (check every call)."]
    unfamiliar = [entry.image.original_filename for entry in images if unfamiliar_photograph(entry.cells)]
    if unfamiliar:
        yield ["warning", "Photographs unlike the images the network was trained on (check every call): "
                          + ", ".join(unfamiliar)]
    yield []
    # Every photograph, whatever became of it, so that one with no row below (no leukocyte found,
    # still queued, failed) is told apart from one never uploaded, and two of the same file name
    # apart by image_id. The name leads, not the id: a reader that takes rows starting with a
    # number for cells (as cell_id) does not take these for cells. cells is how many rows below
    # carry its image_id; cells_in_differential how many of them the formula's TOTAL counts.
    yield ["image", "image_id", "status", "cells", "cells_in_differential", "model_version",
           "quality_warnings", "error"]
    for entry in images:
        image = entry.image
        yield [
            image.original_filename, image.pk, image.status, len(entry.cells),
            sum(1 for cell in entry.cells if cell.in_differential),
            f"v{image.model_version_id}" if image.model_version_id else "",
            "; ".join(map(str, image.quality_warnings or [])), image.error,
        ]
    yield []
    # binary_call is the group of the type the formula counts (the reviewer's where there is one),
    # as cell_type is; the network's own call stays beside it, as predicted_type does.
    yield ["cell_id", "image", "index", "x0", "y0", "x1", "y1", "cell_type", "predicted_type",
           "corrected_type", "confidence", "binary_call", "predicted_binary_call", "needs_review",
           "model_version", "review_carried_from", "ood_score", "image_unfamiliar", "added_by_hand",
           "partial", "counted_in", *[f"p_{name}" for name in class_names],
           # Last, after the probabilities, so that no column before them moved when they came: a
           # cell's photograph by id, as the photographs' table above lists it; "no" where no cell
           # was outlined on a photograph of one cell and its middle was classified; whether the
           # formula's TOTAL counts it (counted_in says only that the edge did not leave it out: a
           # whole platelet is counted in, and listed apart).
           "image_id", "outlined", "in_differential",
           # The cell's number as the site's pages name it ("Cell 3 on smear-12.jpg"): index is the
           # detector's, from 0, with gaps where a drawn cell replaced one.
           "number_on_photograph"]
    for entry in images:
        image_unfamiliar = "yes" if unfamiliar_photograph(entry.cells) else "no"
        for number, cell in enumerate(entry.cells, start=1):
            yield [
                cell.pk, entry.image.original_filename, cell.index, cell.x0, cell.y0, cell.x1, cell.y1,
                cell.cell_type, cell.predicted_type, cell.corrected_type, f"{cell.confidence:.4f}",
                group_of(cell.cell_type), cell.predicted_binary_call, "yes" if cell.needs_review else "no",
                f"v{cell.model_version_id}", cell.review_carried_from_id or "",
                "" if cell.ood_score is None else f"{cell.ood_score:.3f}", image_unfamiliar,
                "yes" if cell.added_by_hand else "no", "yes" if cell.is_partial else "no",
                "yes" if cell.is_counted_in else "no",
                # Blank, not 0, for a type the cell's network cannot call (a sample of two versions).
                *[f"{cell.probabilities[name]:.4f}" if name in cell.probabilities else ""
                  for name in class_names],
                entry.image.pk, "yes" if cell.outlined else "no", "yes" if cell.in_differential else "no",
                number,
            ]


def write_sample_csv(sample, stream):
    writer = csv.writer(stream)
    for row in _sample_rows(sample):
        writer.writerow([spreadsheet_safe(value) if isinstance(value, str) else value for value in row])


def sample_csv_response(sample, for_a_spreadsheet=False):
    """The sample's CSV as a download, for the sample page's "Export CSV" (``for_a_spreadsheet``)
    and the API's copy. The page's starts with a UTF-8 byte-order mark, as Excel's own "CSV UTF-8"
    does: without one, Excel reads the file in the computer's legacy code page, and a Spanish lab's
    "Mañana" opens as "MaÃ±ana". A program reading the API's copy gets the rows alone, as before."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export_file_name(sample)}"'
    if for_a_spreadsheet:
        response.write("\ufeff")
    write_sample_csv(sample, response)
    return response
