"""Two reviewers on one cell: a relabel sent from a page that showed a label someone else has
changed since is refused, naming the cell, its label now and who gave it, and changes nothing;
the second reviewer sees the first one's review (the refusal carries the cells as they are now,
for the gallery and the sample page to draw; the cell page reloads), and decides. A request without
what the page showed (an old page, a script) relabels as before: the last one wins."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell, CellReview
from webapp.selectors import label_stamp
from webapp.services.review import ReviewError, review_cell, review_cells

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def bea(django_user_model):
    """A second technologist, on another screen."""
    return with_role(django_user_model.objects.create_user("bea", password="a-long-passphrase-3"),
                     "technologist")


@pytest.fixture
def bea_client(bea):
    other = Client()
    other.force_login(bea)
    return other


def cells_of(sample):
    return list(Cell.objects.filter(image__sample=sample).order_by("index"))


def stamp_on_cell_page(client, cell):
    page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    return re.search(r'<input type="hidden" name="seen" value="([0-9a-f]{12})">', page)[1]


def stamps_on_sample_page(client, sample):
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    rows = re.findall(r'<tr class="cellrow" data-cell="(\d+)".*?name="seen" value="([0-9a-f]{12})"', page)
    return {int(pk): stamp for pk, stamp in rows}


def stamps_in_gallery(client, sample):
    page = client.get(reverse("lab:sample-gallery", args=[sample.pk])).content.decode()
    tiles = re.findall(r'data-cell="(\d+)"[^>]*data-seen="([0-9a-f]{12})"', page)
    return {int(pk): stamp for pk, stamp in tiles}


def gallery_relabel(client, sample, cells, cell_type, seen=None):
    data = {"cells": ",".join(str(cell.pk) for cell in cells), "cell_type": cell_type}
    if seen is not None:
        data["seen"] = ",".join(f"{cell.pk}:{seen[cell.pk]}" for cell in cells)
    return client.post(reverse("lab:gallery-review", args=[sample.pk]), data, **JSON)


def test_the_cell_page_refuses_a_relabel_of_a_cell_someone_relabelled_since_it_was_loaded(
        client, tech, bea_client):
    sample = make_sample()
    cell = cells_of(sample)[0]  # the network's neutrophil
    back = reverse("lab:cell-detail", args=[cell.pk])
    seen_by_tech = stamp_on_cell_page(client, cell)
    seen_by_bea = stamp_on_cell_page(bea_client, cell)
    answer = bea_client.post(reverse("lab:cell-review", args=[cell.pk]),
                             {"cell_type": "LYMPHOCYTE", "seen": seen_by_bea, "next": back})
    assert answer.status_code == 302
    page = client.post(reverse("lab:cell-review", args=[cell.pk]),
                       {"cell_type": "MONOCYTE", "seen": seen_by_tech, "next": back}, follow=True)
    text = page.content.decode()
    assert ("This cell was reviewed since your page was loaded: Cell 1 on H26-0001.png is now "
            "Lymphocyte (bea&#x27;s review). Nothing was changed; the page now shows it as it is") in text
    cell.refresh_from_db()
    assert cell.cell_type == "LYMPHOCYTE" and cell.reviewed_by.get_username() == "bea"
    assert list(CellReview.objects.values_list("to_type", "reviewed_by__username")) == [("LYMPHOCYTE", "bea")]
    # Reloaded, the page shows bea's review; relabelled from there, the technologist's label stands.
    page = client.post(reverse("lab:cell-review", args=[cell.pk]),
                       {"cell_type": "MONOCYTE", "seen": stamp_on_cell_page(client, cell), "next": back})
    cell.refresh_from_db()
    assert cell.cell_type == "MONOCYTE" and cell.reviews.count() == 2


def test_the_same_label_someone_gave_meanwhile_is_no_conflict(client, tech, bea_client):
    sample = make_sample()
    cell = cells_of(sample)[0]
    seen_by_tech = stamp_on_cell_page(client, cell)
    bea_client.post(reverse("lab:cell-review", args=[cell.pk]),
                    {"cell_type": "EOSINOPHIL", "seen": stamp_on_cell_page(bea_client, cell)})
    answer = client.post(reverse("lab:cell-review", args=[cell.pk]),
                         {"cell_type": "EOSINOPHIL", "seen": seen_by_tech}, **JSON)
    assert answer.status_code == 200 and answer.json()["cell_type"] == "EOSINOPHIL"
    cell.refresh_from_db()
    # Both agree: bea's review stands, nothing recorded twice.
    assert cell.reviewed_by.get_username() == "bea" and cell.reviews.count() == 1


def test_a_confirmation_made_meanwhile_stops_a_different_label(client, tech, bea_client):
    # Bea confirms the network's neutrophil: the type is as the technologist's page showed it, but
    # it is now a reviewer's verdict, which a relabel must not overrule unseen.
    sample = make_sample()
    cell = cells_of(sample)[0]
    seen_by_tech = stamps_on_sample_page(client, sample)[cell.pk]
    bea_client.post(reverse("lab:cell-review", args=[cell.pk]),
                    {"cell_type": "NEUTROPHIL", "seen": stamps_on_sample_page(bea_client, sample)[cell.pk]})
    answer = client.post(reverse("lab:cell-review", args=[cell.pk]),
                         {"cell_type": "MONOCYTE", "seen": seen_by_tech, "answer_with": "card"}, **JSON)
    assert answer.status_code == 409
    assert "Cell 1 on H26-0001.png is now Neutrophil (bea's review)" in answer.json()["error"]
    cell.refresh_from_db()
    assert cell.corrected_type == "NEUTROPHIL" and cell.reviewed_by.get_username() == "bea"


def test_the_sample_page_sends_each_cell_s_label_and_is_refused_when_it_is_stale(client, tech, bea_client):
    sample = make_sample()
    first, second, _ = cells_of(sample)
    seen_by_tech = stamps_on_sample_page(client, sample)
    seen_by_bea = stamps_on_sample_page(bea_client, sample)
    assert seen_by_tech == seen_by_bea and len(seen_by_tech) == 3
    assert bea_client.post(reverse("lab:cell-review", args=[first.pk]),
                           {"cell_type": "MONOCYTE", "seen": seen_by_bea[first.pk], "answer_with": "card"},
                           **JSON).status_code == 200
    refused = client.post(reverse("lab:cell-review", args=[first.pk]),
                          {"cell_type": "EOSINOPHIL", "seen": seen_by_tech[first.pk], "answer_with": "card"},
                          **JSON)
    assert refused.status_code == 409
    assert refused.json()["error"].startswith(
        "This cell was reviewed since your page was loaded: Cell 1 on H26-0001.png is now Monocyte "
        "(bea's review). Nothing was changed; the page now shows it as it is")
    # Another cell of the same page, which nobody touched, is relabelled as usual.
    assert client.post(reverse("lab:cell-review", args=[second.pk]),
                       {"cell_type": "EOSINOPHIL", "seen": seen_by_tech[second.pk], "answer_with": "card"},
                       **JSON).status_code == 200
    assert [cell.cell_type for cell in cells_of(sample)] == ["MONOCYTE", "EOSINOPHIL", "NEUTROPHIL"]


def test_the_gallery_refuses_a_selection_holding_a_cell_someone_relabelled_since(client, tech, bea_client):
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"))
    cells = cells_of(sample)
    seen_by_tech = stamps_in_gallery(client, sample)
    seen_by_bea = stamps_in_gallery(bea_client, sample)
    assert set(seen_by_tech) == {cell.pk for cell in cells}
    assert gallery_relabel(bea_client, sample, cells[1:3], "MONOCYTE", seen_by_bea).status_code == 200
    refused = gallery_relabel(client, sample, cells[:3], "EOSINOPHIL", seen_by_tech)
    assert refused.status_code == 409
    assert refused.json()["error"] == (
        "These cells were reviewed since your page was loaded: Cell 2 on H26-0001.png is now Monocyte "
        "(bea's review); Cell 3 on H26-0001.png is now Monocyte (bea's review). None of the 3 selected "
        "cells was changed; the page now shows them as they are: relabel again if you still disagree.")
    assert [cell.cell_type for cell in cells_of(sample)] == ["NEUTROPHIL", "MONOCYTE", "MONOCYTE",
                                                             "LYMPHOCYTE"]
    assert CellReview.objects.filter(reviewed_by=tech).count() == 0
    # Bea's cells given the label the technologist asks for are no conflict; the stamps the answer
    # gives the tiles let the page relabel them again without a reload.
    answer = gallery_relabel(client, sample, cells[:3], "MONOCYTE", seen_by_tech)
    assert answer.status_code == 200
    assert [cell.cell_type for cell in cells_of(sample)] == ["MONOCYTE", "MONOCYTE", "MONOCYTE", "LYMPHOCYTE"]
    now = {cell["id"]: cell["seen"] for cell in answer.json()["cells"]}
    assert now == {cell.pk: label_stamp(cell) for cell in cells_of(sample)[:3]}
    assert gallery_relabel(client, sample, cells[:3], "EOSINOPHIL", now).status_code == 200
    assert stamps_in_gallery(client, sample) == {cell.pk: label_stamp(cell) for cell in cells_of(sample)}


def test_a_gallery_refusal_carries_the_stale_cells_as_they_are_now(client, tech, bea_client):
    # The page drew the refusal's message beside tiles still showing what the technologist saw, and
    # sent the same stale stamps at the next key press: refused again, until a reload.
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"))
    cells = cells_of(sample)
    seen_by_tech = stamps_in_gallery(client, sample)
    assert gallery_relabel(bea_client, sample, cells[:1], "MONOCYTE", stamps_in_gallery(bea_client, sample)
                           ).status_code == 200
    assert gallery_relabel(bea_client, sample, cells[1:2], "EOSINOPHIL", stamps_in_gallery(bea_client, sample)
                           ).status_code == 200
    refused = gallery_relabel(client, sample, cells[:3], "EOSINOPHIL", seen_by_tech)
    assert refused.status_code == 409
    answer = refused.json()
    assert answer["error"].startswith("This cell was reviewed since your page was loaded: Cell 1 on "
                                      "H26-0001.png is now Monocyte (bea's review). None of the 3 selected")
    # Both cells bea reviewed, the one she gave the type asked for too; not the one nobody touched.
    now = cells_of(sample)
    assert answer["cells"] == [
        {"id": cell.pk, "cell_type": cell.cell_type, "reviewed": True, "seen": label_stamp(cell)}
        for cell in now[:2]]
    assert [cell["cell_type"] for cell in answer["cells"]] == ["MONOCYTE", "EOSINOPHIL"]
    # The formula as it stands, bea's reviews counted, as a relabel's answer gives it.
    assert answer["formula"]["types"]["MONOCYTE"]["count"] == 1
    assert answer["formula"]["types"]["NEUTROPHIL"]["count"] == 1
    assert 'data-type="MONOCYTE"' in answer["formula_html"]
    assert CellReview.objects.filter(reviewed_by=tech).count() == 0
    # The tiles given the answer's stamps: the same key once more relabels the selection.
    seen_by_tech.update({cell["id"]: cell["seen"] for cell in answer["cells"]})
    assert gallery_relabel(client, sample, cells[:3], "EOSINOPHIL", seen_by_tech).status_code == 200
    assert [cell.cell_type for cell in cells_of(sample)] == ["EOSINOPHIL"] * 3 + ["LYMPHOCYTE"]


def test_a_refusal_on_the_sample_page_carries_the_card_as_it_is_now(client, tech, bea_client):
    sample = make_sample()
    cell = cells_of(sample)[0]
    seen_by_tech = stamps_on_sample_page(client, sample)[cell.pk]
    bea_client.post(reverse("lab:cell-review", args=[cell.pk]),
                    {"cell_type": "MONOCYTE", "seen": stamps_on_sample_page(bea_client, sample)[cell.pk]})
    cell.refresh_from_db()
    refused = client.post(reverse("lab:cell-review", args=[cell.pk]),
                          {"cell_type": "EOSINOPHIL", "seen": seen_by_tech, "answer_with": "card"}, **JSON)
    assert refused.status_code == 409
    answer = refused.json()
    assert answer["error"].startswith("This cell was reviewed since your page was loaded: Cell 1 on "
                                      "H26-0001.png is now Monocyte (bea's review).")
    assert (answer["cell"], answer["cell_type"], answer["seen"]) == (cell.pk, "MONOCYTE", label_stamp(cell))
    # The photograph's card as a review's answer carries it: the cell's label now, its stamp in the form.
    card = answer["results_html"]
    row = re.search(rf'<tr class="cellrow" data-cell="{cell.pk}".*?</tr>', card, re.S)[0]
    assert "Monocyte" in row and f'name="seen" value="{label_stamp(cell)}"' in row
    assert 'class="badge reviewed"' in row
    # Without a card to swap in (a script): the label and stamp now, and the formula.
    answer = client.post(reverse("lab:cell-review", args=[cell.pk]),
                         {"cell_type": "EOSINOPHIL", "seen": seen_by_tech}, **JSON).json()
    assert (answer["cell_type"], answer["seen"]) == ("MONOCYTE", label_stamp(cell))
    assert answer["formula"]["types"]["MONOCYTE"]["count"] == 1 and "results_html" not in answer
    assert Cell.objects.get(pk=cell.pk).cell_type == "MONOCYTE"
    # One click from the redrawn card decides.
    assert client.post(reverse("lab:cell-review", args=[cell.pk]),
                       {"cell_type": "EOSINOPHIL", "seen": label_stamp(cell), "answer_with": "card"},
                       **JSON).status_code == 200
    assert Cell.objects.get(pk=cell.pk).cell_type == "EOSINOPHIL"


def test_other_refusals_carry_only_their_message(client, tech):
    # A type the network has no place for is the reviewer's to correct, not a label to redraw.
    sample = make_sample()
    cell = cells_of(sample)[0]
    answer = client.post(reverse("lab:cell-review", args=[cell.pk]),
                         {"cell_type": "WIDGET", "seen": label_stamp(cell), "answer_with": "card"}, **JSON)
    assert answer.status_code == 400 and list(answer.json()) == ["error"]
    assert answer.json()["error"].startswith("WIDGET is not one of this model's types")
    answer = gallery_relabel(client, sample, [cell], "WIDGET", {cell.pk: label_stamp(cell)})
    assert answer.status_code == 400 and list(answer.json()) == ["error"]
    assert "WIDGET is not one of this model's types" in answer.json()["error"]


def test_a_request_without_what_the_page_showed_relabels_as_before(client, tech, bea_client):
    sample = make_sample()
    cells = cells_of(sample)
    bea_client.post(reverse("lab:cell-review", args=[cells[0].pk]), {"cell_type": "LYMPHOCYTE"})
    assert client.post(reverse("lab:cell-review", args=[cells[0].pk]), {"cell_type": "MONOCYTE"},
                       **JSON).status_code == 200
    assert gallery_relabel(client, sample, cells[:2], "EOSINOPHIL").status_code == 200
    assert [cell.cell_type for cell in cells_of(sample)] == ["EOSINOPHIL", "EOSINOPHIL", "NEUTROPHIL"]


@pytest.mark.parametrize("seen", ["not-a-stamp", "ABCDEF012345", "0" * 13])
def test_an_unreadable_stamp_is_refused_in_a_sentence(client, tech, seen):
    sample = make_sample()
    cell = cells_of(sample)[0]
    answer = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE", "seen": seen},
                         **JSON)
    assert answer.status_code == 400
    assert answer.json()["error"] == ("The page sent the cells' labels as it showed them in a form this site "
                                      "cannot read: reload the page.")
    for sent in (f"{cell.pk}:{seen}", f"x:{label_stamp(cell)}", label_stamp(cell)):
        answer = client.post(reverse("lab:gallery-review", args=[sample.pk]),
                             {"cells": str(cell.pk), "cell_type": "MONOCYTE", "seen": sent}, **JSON)
        assert answer.status_code == 400 and "reload the page" in answer.json()["error"]
    assert Cell.objects.get(pk=cell.pk).cell_type == "NEUTROPHIL"


def test_review_cell_checks_the_label_the_page_showed(tech, bea):
    cell = cells_of(make_sample())[0]
    shown = label_stamp(cell)
    review_cell(cell, "LYMPHOCYTE", bea, seen=shown)
    with pytest.raises(ReviewError, match=r"Cell 1 on H26-0001.png is now Lymphocyte \(bea's review\)"):
        review_cell(cell, "MONOCYTE", tech, seen=shown)
    cell.refresh_from_db()
    assert cell.cell_type == "LYMPHOCYTE" and cell.reviews.count() == 1
    # The label agreed on, or no stamp at all: accepted.
    assert review_cell(cell, "LYMPHOCYTE", tech, seen=shown)[1] is None
    updated, review = review_cell(cell, "MONOCYTE", tech)
    assert updated.cell_type == "MONOCYTE" and review.reviewed_by == tech
    # The stamp follows every review: the one the answer's cell carries is current.
    assert review_cell(cell, "EOSINOPHIL", tech, seen=label_stamp(updated))[0].cell_type == "EOSINOPHIL"


def test_review_cells_names_at_most_five_stale_cells_and_counts_the_rest(tech, bea):
    sample = make_sample(types=("NEUTROPHIL",) * 8)
    cells = cells_of(sample)
    shown = {cell.pk: label_stamp(cell) for cell in cells}
    review_cells(cells[:7], "MONOCYTE", bea)
    with pytest.raises(ReviewError) as refused:
        review_cells(cells, "LYMPHOCYTE", tech, seen=shown)
    message = str(refused.value)
    assert message.count("(bea's review)") == 5
    assert "; and 2 more cells. None of the 8 selected cells was changed" in message
    assert not CellReview.objects.filter(reviewed_by=tech).exists()
    # A cell the page sent no stamp for is not checked.
    review_cells(cells, "LYMPHOCYTE", tech, seen={cells[7].pk: shown[cells[7].pk]})
    assert {cell.cell_type for cell in cells_of(sample)} == {"LYMPHOCYTE"}
