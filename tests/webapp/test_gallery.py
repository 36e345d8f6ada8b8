"""The cell gallery: every counted cell's crop in its type's row, flagged cells first, relabelled
several at a time; and the formula's look beside it (groups apart, per-100 figures, notes)."""

import csv
import io
import re

import pytest
from auditlog.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from classifier.labels import BINARY_CLASSES
from tests.webapp.lab_factories import make_sample, make_version
from webapp.models import Cell, CellReview, Sample, SmearImage
from webapp.selectors import leukocyte_formula
from webapp.services.review import ReviewError, review_cell, review_cells

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


def cells_of(sample):
    return list(Cell.objects.filter(image__sample=sample).order_by("index"))


def post_review(client, sample, cells, cell_type):
    return client.post(reverse("lab:gallery-review", args=[sample.pk]),
                       {"cells": [cell.pk for cell in cells], "cell_type": cell_type}, **JSON)


def test_gallery_rows_follow_the_type_order_with_flagged_cells_first(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "NEUTROPHIL"))
    cells = cells_of(sample)
    Cell.objects.filter(pk=cells[2].pk).update(needs_review=True)
    Cell.objects.filter(pk=cells[3].pk).update(is_partial=True)
    response = client.get(reverse("lab:sample-gallery", args=[sample.pk]))
    assert response.status_code == 200
    rows = {row.name: row for row in response.context["rows"]}
    shown = [row.name for row in response.context["rows"] if row.shown]
    # The network's four types (a row each, empty ones too), in the report's order.
    assert shown == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    assert [tile.cell.pk for tile in rows["NEUTROPHIL"].tiles] == [cells[2].pk, cells[0].pk, cells[3].pk]
    assert rows["NEUTROPHIL"].awaiting == 1 and rows["NEUTROPHIL"].left_out == 1
    # Reviewer-only rows wait hidden for their first cell; those outside the differential say so.
    assert not rows["BASOPHIL"].shown and "not in" in rows["ERYTHROBLAST"].note
    body = response.content.decode()
    assert body.count('role="option"') == 4 and body.count('loading="lazy"') == 4
    # Each row's first tile is the row's stop of the Tab key, the others are reached with the arrows.
    flagged = ('class="gtile awaiting" role="option" aria-selected="false" tabindex="0" '
               f'data-cell="{cells[2].pk}"')
    assert flagged in body
    assert ('class="gtile" role="option" aria-selected="false" tabindex="-1" '
            f'data-cell="{cells[0].pk}"') in body
    assert body.count('tabindex="0"') == 2  # the neutrophil row's and the lymphocyte row's
    # A tile's name says which cell it is as the sample page names it (not by database id), its type
    # and what its marks show.
    photograph = cells[0].image.original_filename
    assert f'aria-label="Cell 3 on {photograph}, neutrophil, needs review"' in body
    assert f'aria-label="Cell 2 on {photograph}, lymphocyte"' in body
    assert f'aria-label="Cell 4 on {photograph}, neutrophil, at the edge, not counted"' in body
    assert f'title="Cell 3 on {photograph} · network: Neutrophil' in body
    # One listbox a row, named by the row's heading, which stays outside it.
    listboxes = re.findall(r'<div class="tiles" role="listbox" aria-multiselectable="true" '
                           r'aria-labelledby="([\w-]+)" aria-describedby="([\w -]+)">'
                           r'(.*?)</div>\s*</section>', body, re.S)
    assert len(listboxes) == len(response.context["rows"])
    for name, description, content in listboxes:
        assert f'<span class="chip" id="{name}">' in body
        assert all(f'id="{part}"' in body for part in description.split())
        assert "<h2" not in content and "<header" not in content
    assert "cut by the photograph's edge, not counted" in body
    # The keyboard legend: each type's fixed key from webapp.counting.
    assert 'data-key="N" data-type="NEUTROPHIL"' in body and 'data-key="R" data-type="ERYTHROBLAST"' in body
    assert "gallery.js" in body and "gallery.css" in body


def test_the_sample_page_links_to_its_gallery(client, tech):
    sample = make_sample()
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert f'href="{reverse("lab:sample-gallery", args=[sample.pk])}"' in body


def test_relabelling_a_selection_changes_the_labels_and_the_formula(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), confidence=0.6)
    first, second, third = cells_of(sample)
    response = post_review(client, sample, [first, second], "MONOCYTE")
    assert response.status_code == 200
    data = response.json()
    assert [(cell["id"], cell["cell_type"], cell["reviewed"]) for cell in data["cells"]] == [
        (first.pk, "MONOCYTE", True), (second.pk, "MONOCYTE", True)]
    assert data["formula"]["types"]["MONOCYTE"]["count"] == 2
    assert data["formula"]["types"]["NEUTROPHIL"]["count"] == 0
    assert data["formula"]["reviewed"] == 2 and data["formula"]["awaiting_review"] == 1
    monocytes = ('data-type="MONOCYTE"><th scope="row"><span class="chip">Monocyte</span></th>'
                 '<td class="num" data-role="count">2<')
    assert monocytes in data["formula_html"]
    assert {cell.cell_type for cell in cells_of(sample)} == {"MONOCYTE", "LYMPHOCYTE"}
    assert CellReview.objects.filter(to_type="MONOCYTE", reviewed_by=tech).count() == 2
    # Confirming the network's call on a cell counts as a review too.
    assert post_review(client, sample, [third], "LYMPHOCYTE").json()["cells"][0]["reviewed"] is True


def test_a_type_outside_the_allowed_ones_changes_nothing(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    # A second photograph classified by a binary network: its cell has no place for NEUTROPHIL.
    binary = make_version(class_names=BINARY_CLASSES, status="ready")
    image = SmearImage.objects.create(
        sample=sample, image="smears/b.png", original_filename="b.png", width=64, height=64,
        file_size=1, checksum="1" * 64, status="done", model_version=binary)
    Cell.objects.create(image=image, model_version=binary, index=0, x0=0, y0=0, x1=9, y1=9,
                        predicted_type="POLYNUCLEAR", confidence=0.9, binary_call="POLYNUCLEAR",
                        cell_type="POLYNUCLEAR")
    cells = list(Cell.objects.filter(image__sample=sample).order_by("pk"))
    before = [(cell.pk, cell.cell_type) for cell in cells]

    response = post_review(client, sample, cells, "EOSINOPHIL")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "Cell 1 on b.png: Eosinophil is not one of this model's types" in error  # as the page numbers it
    assert "None of the 3 selected cells was changed" in error
    assert [(cell.pk, cell.cell_type) for cell in Cell.objects.order_by("pk")] == before
    assert not CellReview.objects.exists()

    for cell_type, message in (("", "Choose a cell type."), ("WHATEVER", "not one of this model's types"),
                               ("X" * 40, "not one of this model's types")):
        response = post_review(client, sample, cells[:1], cell_type)
        assert response.status_code == 400 and message in response.json()["error"]
    response = client.post(reverse("lab:gallery-review", args=[sample.pk]), {"cell_type": "MONOCYTE"}, **JSON)
    assert response.json() == {"error": "Select at least one cell to relabel."}
    response = client.post(reverse("lab:gallery-review", args=[sample.pk]),
                           {"cells": "1;DROP", "cell_type": "MONOCYTE"}, **JSON)
    assert response.status_code == 400 and "list of cell numbers" in response.json()["error"]
    for selection, message in ((f"{cells[0].pk},{10**30}", f"There is no cell {10**30}"),
                               ("9" * 5000, f"There is no cell {'9' * 40}…"),  # past what int() reads
                               ("\u00b2", "list of cell numbers")):
        response = client.post(reverse("lab:gallery-review", args=[sample.pk]),
                               {"cells": selection, "cell_type": "MONOCYTE"}, **JSON)
        assert response.status_code == 400 and message in response.json()["error"]
    other = make_sample("H26-OTHER")
    response = post_review(client, sample, cells_of(other)[:1], "MONOCYTE")
    assert response.status_code == 400 and "not counted in sample H26-0001" in response.json()["error"]
    assert not CellReview.objects.exists()


def test_review_cells_is_all_or_nothing(tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    with pytest.raises(ReviewError, match="Select at least one cell"):
        review_cells([], "MONOCYTE", tech)
    cells = list(Cell.objects.select_related("image").order_by("index"))
    results = review_cells(cells, "BASOPHIL", tech)
    assert [cell.cell_type for cell, _ in results] == ["BASOPHIL", "BASOPHIL"]
    assert leukocyte_formula(sample).rows[-1].name == "BASOPHIL"


def test_a_large_selection_is_written_in_a_few_queries_with_a_review_and_audit_row_each(
        client, tech, django_assert_max_num_queries):
    # A 2,000-cell relabel holds SQLite's write lock while it writes: once ~8 queries a cell
    # (4-5 s), now the cells are locked, checked and updated together, and only each review's own
    # audit row (auditlog's, keeping the request's address) is written one at a time.
    sample = make_sample(types=("NEUTROPHIL",) * 60 + ("LYMPHOCYTE",) * 20)
    cells = cells_of(sample)
    with django_assert_max_num_queries(80 + 25):
        response = post_review(client, sample, cells, "MONOCYTE")
    assert response.status_code == 200
    assert {cell.cell_type for cell in cells_of(sample)} == {"MONOCYTE"}
    assert all(cell.corrected_type == "MONOCYTE" and cell.reviewed_by == tech and cell.reviewed_at
               for cell in cells_of(sample))
    reviews = CellReview.objects.filter(cell__image__sample=sample)
    assert sorted(reviews.values_list("from_type", flat=True)) == ["LYMPHOCYTE"] * 20 + ["NEUTROPHIL"] * 60
    rows = LogEntry.objects.filter(content_type__model="cellreview")
    assert rows.count() == 80
    assert {(row.actor, row.additional_data["sample_id"], row.remote_addr) for row in rows} == {
        (tech, sample.pk, "127.0.0.1")}
    assert {row.additional_data["cell_id"] for row in rows} == {cell.pk for cell in cells}
    assert sorted(rows.values_list("object_id", flat=True)) == sorted(reviews.values_list("pk", flat=True))
    # The same label again records nothing new.
    assert post_review(client, sample, cells, "MONOCYTE").status_code == 200
    assert reviews.count() == 80 and rows.count() == 80


def test_a_cell_deleted_meanwhile_stops_the_relabel_with_nothing_changed(tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    cells = list(Cell.objects.select_related("image").order_by("index"))
    Cell.objects.filter(pk=cells[1].pk).delete()
    with pytest.raises(ReviewError, match="no longer stored.*Nothing was changed"):
        review_cells(cells, "MONOCYTE", tech)
    with pytest.raises(ReviewError, match="no longer stored"):
        review_cell(cells[1], "MONOCYTE", tech)
    assert Cell.objects.get(pk=cells[0].pk).cell_type == "NEUTROPHIL"
    assert not CellReview.objects.filter(cell__image__sample=sample).exists()


def test_a_signed_sample_answers_409_and_keeps_its_labels(client, tech):
    sample = make_sample(types=("NEUTROPHIL",))
    Sample.objects.filter(pk=sample.pk).update(status=Sample.Status.SIGNED, signed_by=tech,
                                               signed_at=timezone.now())
    response = post_review(client, sample, cells_of(sample), "MONOCYTE")
    assert response.status_code == 409
    assert "was signed by tech" in response.json()["error"]
    assert cells_of(sample)[0].cell_type == "NEUTROPHIL"


def test_the_gallery_reads_a_bounded_number_of_queries(client, tech, django_assert_max_num_queries):
    few = make_sample("H26-FEW", types=("NEUTROPHIL",) * 5)
    many = make_sample("H26-MANY", types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL") * 13,
                       version=few.images.get().model_version, confidence=0.6)
    Cell.objects.filter(image__sample=many, index__lt=5).update(is_partial=True)
    review_cell(Cell.objects.get(image__sample=many, index=7), "ERYTHROBLAST", tech)
    counts = []
    for sample in (few, many):
        with django_assert_max_num_queries(20) as captured:
            assert client.get(reverse("lab:sample-gallery", args=[sample.pk])).status_code == 200
        counts.append(len(captured))
    assert counts[0] == counts[1]  # no query per cell


def test_the_gallery_needs_a_sign_in(client):
    sample = make_sample()
    for url in (reverse("lab:sample-gallery", args=[sample.pk]),):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    response = client.post(reverse("lab:gallery-review", args=[sample.pk]),
                           {"cells": "1", "cell_type": "MONOCYTE"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not CellReview.objects.exists()


def test_the_formula_shows_groups_apart_per_100_figures_and_what_is_left_out(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "MONOCYTE", "NEUTROPHIL",
                                "EOSINOPHIL"))
    cells = cells_of(sample)
    review_cell(cells[2], "ERYTHROBLAST", tech)
    review_cell(cells[4], "PLATELET", tech)
    review_cell(cells[5], "UNIDENTIFIED", tech)
    Cell.objects.filter(pk=cells[3].pk).update(is_partial=True)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    def table(role):
        start = body.index(f'data-role="{role}"')
        return body[start:body.index("</table>", start)]

    types_table, groups_table = table("types"), table("groups")
    # Neutrophil and lymphocyte are counted (the monocyte is cut by the edge): the groups add to
    # 100 in their own table, not under the types' total.
    assert 'data-group' not in types_table and 'data-role="total">2<' in types_table
    assert groups_table.count("data-group=") == 2 and ">50.0<" in groups_table
    assert "NRBC</span>: 50 per 100 leukocytes (1 cell)" in body
    apart = ('data-role="listed-apart">Listed apart, not counted: '
             '<span class="chip t-platelet">Platelet 1</span>')
    assert apart in body
    assert "1 unidentified cell, not counted" in body
    assert "1 cell cut by the photograph's edge, not counted." in body
    version = sample.images.get().model_version
    assert f"Counted from model v{version.pk} (four cell types)." in body
    assert "New samples are counted by" not in body  # its network is the active one
    # The note is written from webapp.counting's rules.
    assert "Erythroblast (NRBC), Smudge cell: reported per 100 leukocytes" in body
    assert "Platelet, Artefact: listed apart, not counted." in body
    assert "<dt>Mononuclear</dt><dd>Lymphocyte, Monocyte, Reactive lymphocyte.</dd>" in body


def test_the_export_and_the_api_carry_the_types_beside_the_differential(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "MONOCYTE", "NEUTROPHIL"))
    cells = cells_of(sample)
    review_cell(cells[2], "ERYTHROBLAST", tech)
    review_cell(cells[3], "PLATELET", tech)
    review_cell(cells[4], "SMUDGE_CELL", tech)
    Cell.objects.filter(pk=cells[1].pk).update(is_partial=True)
    text = client.get(reverse("lab:sample-export", args=[sample.pk])).content.decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert ["per_100_leukocytes_NRBC", "1", "100.0"] in rows
    # Keyed by a code a lab's system matches on, not by the words the report prints.
    assert ["per_100_leukocytes_SMUDGE", "1", "100.0"] in rows
    assert ["listed_apart_PLATELET", "1"] in rows
    assert ["edge_cells_not_counted", "1"] in rows and ["unidentified_not_counted", "0"] in rows
    assert ["TOTAL", "1", "100.0"] in rows
    exported = {row[0]: row for row in rows if len(row) > 7 and row[0].isdigit()}
    assert exported[str(cells[2].pk)][7] == "ERYTHROBLAST"

    formula = client.get(reverse("lab:api-sample", args=[sample.pk])).json()["formula"]
    assert formula["per_100_leukocytes"]["NRBC"] == {"type": "ERYTHROBLAST", "count": 1,
                                                     "per_100_leukocytes": 100.0}
    assert formula["per_100_leukocytes"]["SMUDGE"] == {"type": "SMUDGE_CELL", "count": 1,
                                                       "per_100_leukocytes": 100.0}
    assert formula["listed_apart"] == {"PLATELET": 1}
    assert formula["partial_left_out"] == 1 and formula["total"] == 1


def test_an_unconfirmed_call_looks_different_from_a_confirmed_one(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    review_cell(cells_of(sample)[1], "LYMPHOCYTE", tech)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    # One of each on the cells' buttons, one of each in the legend that explains them.
    assert body.count("current unconfirmed") == 2 and body.count("current confirmed") == 2
    assert "the network's call, not yet confirmed" in body
    assert 'data-role="box-legend"' in body and 'Dashed, "?" on the label: needs review' in body


def test_a_sample_counted_by_an_earlier_network_says_which_counts_new_samples(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    earlier = sample.images.get().model_version
    newer = make_version()  # activated: it classifies new samples from now on
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert (f"Counted from model v{earlier.pk} (four cell types). New samples are counted by model "
            f"v{newer.pk} now; photographs added to this one keep its network") in body


def test_every_row_carries_its_edge_figure_for_the_script_to_update(client, tech):
    """gallery.js recounts the edge cells of the rows a relabel touches: each row, with edge cells or
    none, carries the part it rewrites, shown only where the row holds one."""
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"))
    first, second, _ = cells_of(sample)
    Cell.objects.filter(pk__in=[first.pk, second.pk]).update(is_partial=True)
    Cell.objects.filter(pk=second.pk).update(count_partial=True)  # counted in by a reviewer
    body = client.get(reverse("lab:sample-gallery", args=[sample.pk])).content.decode()
    rows = {row.split('"', 1)[0]: row for row in body.split('data-type="')[1:] if "row-figures" in row}
    assert ('<span data-role="row-left-out-part"> · <span data-role="row-left-out">1</span> '
            "at the edge, not counted</span>") in rows["NEUTROPHIL"]
    assert ('<span data-role="row-left-out-part" hidden> · <span data-role="row-left-out">0</span>'
            in rows["LYMPHOCYTE"])
    # Only the tile left out carries the class the script counts.
    left_out = (f'class="gtile left-out" role="option" aria-selected="false" '
                f'tabindex="0" data-cell="{first.pk}"')
    assert body.count("gtile left-out") == 1 and left_out in body
    # The legend's entries are buttons.
    assert '<button type="button" class="keybtn" data-key="N" data-type="NEUTROPHIL">' in body


def test_an_account_that_reads_only_is_not_told_of_keys_that_relabel(client, django_user_model):
    """A no-role account (the lab's information system, a visitor) was shown each row's relabelling
    key and told that "a type's key then relabels it", beside the line saying it relabels nothing."""
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    client.force_login(django_user_model.objects.create_user("reader"))
    page = client.get(reverse("lab:sample-gallery", args=[sample.pk])).content.decode()
    assert 'data-role="read-only">Relabelling is for technologists' in page
    assert "relabels it" not in page and "<kbd>N</kbd>" not in page and 'class="keybtn"' not in page


def test_a_technologist_is_shown_each_rows_key(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    page = client.get(reverse("lab:sample-gallery", args=[sample.pk])).content.decode()
    assert "<strong>Relabelling</strong> the selection: press a type's key" in page
    # Tab only moves the focus (the accessibility audit: a Tab that selected relabelled the wrong cell).
    assert "<kbd>Tab</kbd> reaches each row without changing the selection" in page
    assert re.search(r'id="gallery-row-\d+-name">Neutrophil</span> <kbd>N</kbd>', page)
