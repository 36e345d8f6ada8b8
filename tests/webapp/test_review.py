"""Review: one click changes a cell's type, the formula follows, every change is on record."""

import re
from types import SimpleNamespace

import pytest
from django.urls import reverse

from tests.webapp.lab_factories import make_sample, make_version
from webapp.models import Cell, CellReview, Sample, SmearImage
from webapp.proportions import exact_binomial_interval, wilson_interval
from webapp.selectors import leukocyte_formula
from webapp.services.review import ReviewError, review_cell
from webapp.templatetags.review_buttons import review_buttons

pytestmark = pytest.mark.django_db


def formula_counts(sample):
    formula = leukocyte_formula(sample)
    return {row.name: row.count for row in formula.rows}, {row.name: row.count for row in formula.groups}


def test_formula_counts_and_percentages():
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL"))
    formula = leukocyte_formula(sample)
    rows = {row.name: (row.count, row.percent) for row in formula.rows}
    assert rows == {"EOSINOPHIL": (1, 25.0), "LYMPHOCYTE": (1, 25.0), "MONOCYTE": (0, 0.0),
                    "NEUTROPHIL": (2, 50.0)}
    groups = {row.name: (row.count, row.percent) for row in formula.groups}
    assert groups == {"MONONUCLEAR": (1, 25.0), "POLYNUCLEAR": (3, 75.0)}
    assert formula.total == 4


def test_one_count_reads_one_percentage_wherever_it_is_shown():
    # Three types of one cell each read 33.3 each (99.9 beside the Total's 100.0), never one of
    # them 33.4: a hematologist reads unequal shares of equal counts as an error.
    formula = leukocyte_formula(make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL")))
    assert sorted(row.percent for row in formula.rows) == [0.0, 33.3, 33.3, 33.3]
    # 3 lymphocytes of 7 are 42.9% as a type and as the mononuclear group (42.857...).
    types = ("LYMPHOCYTE",) * 3 + ("NEUTROPHIL",) * 4
    formula = leukocyte_formula(make_sample("S-7", types=types))
    assert {row.name: row.percent for row in formula.rows}["LYMPHOCYTE"] == 42.9
    assert {row.name: row.percent for row in formula.groups} == {"MONONUCLEAR": 42.9, "POLYNUCLEAR": 57.1}
    # Halves round up, exactly: 1 of 8 is 12.5%, 1 of 80 is 1.25% -> 1.3.
    formula = leukocyte_formula(make_sample("S-80", types=("MONOCYTE",) + ("NEUTROPHIL",) * 79))
    assert {row.name: row.percent for row in formula.rows}["MONOCYTE"] == 1.3


def test_the_review_agreement_carries_its_wilson_range():
    # Reference values of the Wilson score interval (Brown, Cai & DasGupta 2001), worked by hand.
    assert wilson_interval(50, 100) == (40.4, 59.6)
    assert wilson_interval(5, 100) == (2.2, 11.2)
    assert wilson_interval(0, 20) == (0.0, 16.1)
    assert wilson_interval(20, 20) == (83.9, 100.0)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_each_percentage_carries_its_exact_binomial_range():
    # The clinical audit: Wilson's interval, much narrower than the exact limits behind Rumke's
    # tables for few cells (1 of 1: 20.7-100% against 2.5-100%), was said to be "close to" them.
    # Clopper-Pearson reference values (5 of 100: 1.64-11.28%; 0 of 20: 0-16.84%), rounded outward.
    assert exact_binomial_interval(50, 100) == (39.8, 60.2)
    assert exact_binomial_interval(5, 100) == (1.6, 11.3)
    assert exact_binomial_interval(0, 20) == (0.0, 16.9)  # a type not seen in 20 cells may still be 17%
    assert exact_binomial_interval(20, 20) == (83.1, 100.0)
    assert exact_binomial_interval(1, 1) == (2.5, 100.0)
    assert exact_binomial_interval(0, 0) == (0.0, 0.0)
    # Large counts too: within a tenth of the normal approximation there.
    assert exact_binomial_interval(5000, 10000) == (49.0, 51.0)
    formula = leukocyte_formula(make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL")))
    ranges = {row.name: (row.low, row.percent, row.high) for row in formula.rows + formula.groups}
    assert ranges["NEUTROPHIL"] == (6.7, 50.0, 93.3)
    assert ranges["MONOCYTE"] == (0.0, 0.0, 60.3)
    assert ranges["POLYNUCLEAR"][0] < 75.0 < ranges["POLYNUCLEAR"][2]


def test_the_page_warns_when_fewer_cells_than_a_manual_differential_were_counted(client, tech):
    client.force_login(tech)
    few = make_sample("FEW", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL"))
    body = client.get(reverse("lab:sample-detail", args=[few.pk])).content.decode()
    assert "Only 4 leukocytes counted; a manual differential counts at least 100." in body
    assert '<div class="range" data-role="range">6.7–93.3</div>' in body
    assert '<rect class="range-band" x="6.7" width="86.6" height="1"/>' in body  # the range drawn
    enough = make_sample("ENOUGH", types=("NEUTROPHIL",) * 60 + ("LYMPHOCYTE",) * 40)
    body = client.get(reverse("lab:sample-detail", args=[enough.pk])).content.decode()
    assert 'data-role="low-count"' not in body
    assert '<div class="range" data-role="range">49.7–69.7</div>' in body  # 60 of 100
    assert leukocyte_formula(enough).as_dict()["below_manual_count"] is False


def test_an_amended_binary_formula_reports_a_blast_it_dropped_at_zero(client, tech):
    sample = make_sample(types=("POLYNUCLEAR", "MONONUCLEAR"),
                         version=make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR")))
    Sample.objects.filter(pk=sample.pk).update(previously_signed_figures={"total": 3, "types": {
        "MONONUCLEAR": {"count": 1, "percent": 33.3}, "POLYNUCLEAR": {"count": 1, "percent": 33.3},
        "BLAST": {"count": 1, "percent": 33.3}}})
    rows = {row.name: row.count for row in leukocyte_formula(Sample.objects.get(pk=sample.pk)).rows}
    assert rows == {"MONONUCLEAR": 1, "POLYNUCLEAR": 1, "BLAST": 0}


def test_a_binary_model_formula_is_the_split_itself(client, tech):
    sample = make_sample(types=("POLYNUCLEAR", "POLYNUCLEAR", "MONONUCLEAR"),
                         version=make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR")))
    formula = leukocyte_formula(sample)
    assert [(row.name, row.count, row.percent) for row in formula.rows] == [
        ("MONONUCLEAR", 1, 33.3), ("POLYNUCLEAR", 2, 66.7)]
    assert formula.groups == []
    review_cell(Cell.objects.get(index=0), "MONONUCLEAR", tech)
    assert [row.count for row in leukocyte_formula(sample).rows] == [2, 1]
    client.force_login(tech)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    first_row = body.split('class="cellrow"')[1]
    assert '<td class="muted">Mononuclear</td>' in first_row  # the group follows the reviewed label
    assert 'data-key="M"' in first_row and 'data-key="P"' in first_row
    # A blast is a leukocyte of neither group: counted beside the groups, not in one.
    review_cell(Cell.objects.get(index=1), "BLAST", tech)
    assert [(row.name, row.count) for row in leukocyte_formula(sample).rows] == [
        ("BLAST", 1), ("MONONUCLEAR", 2), ("POLYNUCLEAR", 0)]


def test_review_changes_the_formula_and_is_recorded(tech):
    sample = make_sample()
    cell = Cell.objects.get(index=0)
    updated, review = review_cell(cell, "monocyte", tech)
    assert updated.cell_type == updated.corrected_type == "MONOCYTE"
    assert updated.predicted_type == "NEUTROPHIL"
    assert (review.from_type, review.to_type, review.reviewed_by) == ("NEUTROPHIL", "MONOCYTE", tech)
    types, groups = formula_counts(sample)
    assert types["MONOCYTE"] == 1 and types["NEUTROPHIL"] == 1
    assert groups == {"MONONUCLEAR": 2, "POLYNUCLEAR": 1}
    assert leukocyte_formula(sample).reviewed == 1


def test_every_change_is_kept_and_repeating_a_choice_records_nothing(tech):
    make_sample()
    cell = Cell.objects.get(index=0)
    review_cell(cell, "MONOCYTE", tech)
    review_cell(cell, "MONOCYTE", tech)
    review_cell(cell, "EOSINOPHIL", tech)
    trail = list(CellReview.objects.filter(cell=cell).order_by("id").values_list("from_type", "to_type"))
    assert trail == [("NEUTROPHIL", "MONOCYTE"), ("MONOCYTE", "EOSINOPHIL")]


def test_confirming_the_prediction_marks_the_cell_reviewed(tech):
    make_sample(confidence=0.5)
    cell = Cell.objects.get(index=1)
    updated, _ = review_cell(cell, "LYMPHOCYTE", tech)
    assert updated.corrected_type == "LYMPHOCYTE" and updated.cell_type == "LYMPHOCYTE"
    assert leukocyte_formula(updated.image.sample).awaiting_review == 2


def test_a_type_outside_the_model_is_refused(tech):
    make_sample(version=make_version())
    with pytest.raises(ReviewError):
        review_cell(Cell.objects.get(index=0), "MEGAKARYOCYTE", tech)
    assert not CellReview.objects.exists()


def test_a_basophil_counts_as_polynuclear_and_an_artefact_leaves_the_formula(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"))
    review_cell(Cell.objects.get(index=0), "basophil", tech)
    review_cell(Cell.objects.get(index=1), "ARTEFACT", tech)

    formula = leukocyte_formula(sample)
    rows = {row.name: (row.count, row.percent) for row in formula.rows}
    assert rows == {"EOSINOPHIL": (0, 0.0), "LYMPHOCYTE": (0, 0.0), "MONOCYTE": (0, 0.0),
                    "NEUTROPHIL": (1, 50.0), "BASOPHIL": (1, 50.0)}
    assert [(row.name, row.count) for row in formula.groups] == [("MONONUCLEAR", 0), ("POLYNUCLEAR", 2)]
    assert (formula.total, formula.artefacts, formula.reviewed) == (2, 1, 2)
    assert formula.as_dict()["artefacts"] == 1
    assert CellReview.objects.filter(to_type="ARTEFACT", from_type="LYMPHOCYTE").exists()

    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-key="B"' in body and 'data-key="A"' in body
    # Listed apart beside the formula, with whatever else webapp.counting leaves out of it.
    assert ('Listed apart, not counted: <span class="chip t-artefact" data-role="artefacts">'
            'Artefact 1</span>') in body


def test_a_sample_whose_every_cell_is_an_artefact_has_no_leukocytes_to_count(client, tech):
    sample = make_sample(types=("NEUTROPHIL",))
    review_cell(Cell.objects.get(index=0), "ARTEFACT", tech)
    assert (leukocyte_formula(sample).total, leukocyte_formula(sample).artefacts) == (0, 1)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "Every cell found was marked an artefact (1)" in body


def test_a_binary_model_cell_can_be_an_artefact_or_a_platelet_but_not_a_basophil(tech):
    make_sample(types=("POLYNUCLEAR",), version=make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR")))
    cell = Cell.objects.get(index=0)
    # Named as the pages name them; a platelet or an erythroblast is no leukocyte whatever
    # network called it, so a binary network's cell can be one.
    types = ("Blast, Plasma cell, Mononuclear, Polynuclear, Erythroblast, Smudge cell, Platelet, Artefact, "
             "Unidentified")
    with pytest.raises(ReviewError, match=f"Basophil is not one of this model's types: {types}."):
        review_cell(cell, "BASOPHIL", tech)
    updated, _ = review_cell(cell, "ARTEFACT", tech)
    assert updated.cell_type == "ARTEFACT"
    updated, _ = review_cell(cell, "PLATELET", tech)
    assert updated.cell_type == "PLATELET"


def test_review_button_posts_and_redirects_back(client, tech):
    sample = make_sample()
    cell = Cell.objects.get(index=0)
    back = reverse("lab:sample-detail", args=[sample.pk])
    response = client.post(reverse("lab:cell-review", args=[cell.pk]),
                           {"cell_type": "EOSINOPHIL", "next": back})
    assert response.status_code == 302 and response["Location"] == back
    assert Cell.objects.get(pk=cell.pk).cell_type == "EOSINOPHIL"
    # The message names the cell as the page numbers it, not by its database id.
    second = Cell.objects.get(index=1)
    Cell.objects.filter(pk=second.pk).update(id=4537)
    page = client.post(reverse("lab:cell-review", args=[4537]), {"cell_type": "MONOCYTE", "next": back},
                       follow=True).content.decode()
    assert "Cell 2 on H26-0001.png is now Monocyte." in page and "Cell 4537" not in page
    assert "Cell 2 on H26-0001.png relabelled" in page  # the audit trail names it so too


def test_review_answers_json_with_the_new_formula(client, tech):
    make_sample()
    cell = Cell.objects.get(index=0)
    response = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"},
                           headers={"accept": "application/json"})
    assert response.status_code == 200
    data = response.json()
    assert data["cell_type"] == "LYMPHOCYTE"
    assert data["formula"]["types"]["LYMPHOCYTE"]["count"] == 2
    bad = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "X"},
                      headers={"accept": "application/json"})
    assert bad.status_code == 400 and "not one of" in bad.json()["error"]
    for cell_type, message in (("X" * 40, "That is not one of this model's types."),
                               ("", "Choose a cell type.")):
        bad = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": cell_type},
                          headers={"accept": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"] == message


@pytest.mark.parametrize("sent", ["https://evil.example/", "foo", "?page=2", "//evil.example/x", "/a\x00b"])
def test_review_ignores_a_next_that_is_no_address_on_this_site(client, tech, sent):
    # A bare word answered 500 after the relabel was saved: redirect() read it as a URL's name.
    make_sample()
    cell = Cell.objects.get(index=0)
    response = client.post(reverse("lab:cell-review", args=[cell.pk]),
                           {"cell_type": "LYMPHOCYTE", "next": sent})
    assert response.status_code == 302 and response["Location"] == reverse("lab:cell-detail", args=[cell.pk])
    assert Cell.objects.get(pk=cell.pk).cell_type == "LYMPHOCYTE"


def test_review_needs_post_and_csrf(tech):
    from django.test import Client

    make_sample()
    cell = Cell.objects.get(index=0)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(tech)
    assert strict.get(reverse("lab:cell-review", args=[cell.pk])).status_code == 405
    response = strict.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"})
    assert response.status_code == 403


def test_a_request_from_an_untrusted_address_names_the_setting_not_a_reload(tech):
    # The security audit: behind a proxy without LEUKOSCOPE_CSRF_TRUSTED_ORIGINS, every form was
    # refused as "opened before the last sign-in: reload the page", which never helps.
    from django.test import Client

    make_sample()
    cell = Cell.objects.get(index=0)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(tech)
    page = strict.get(reverse("lab:cell-detail", args=[cell.pk]))
    token = page.context["csrf_token"]
    url = reverse("lab:cell-review", args=[cell.pk])
    foreign = strict.post(url, {"cell_type": "LYMPHOCYTE", "csrfmiddlewaretoken": token},
                          HTTP_ORIGIN="https://lab.example.org")
    body = foreign.content.decode()
    assert foreign.status_code == 403 and "it came from a page at https://lab.example.org" in body
    assert "LEUKOSCOPE_CSRF_TRUSTED_ORIGINS" in body and "opened before the last sign-in" not in body
    # A page opened from a file or a sandbox sends the origin "null": no address to name.
    anonymous = strict.post(url, {"cell_type": "LYMPHOCYTE", "csrfmiddlewaretoken": token},
                            HTTP_ORIGIN="null")
    assert anonymous.status_code == 403 and "opened before the last sign-in" in anonymous.content.decode()
    stale = strict.post(url, {"cell_type": "LYMPHOCYTE", "csrfmiddlewaretoken": "x" * 64})
    assert stale.status_code == 403 and "opened before the last sign-in" in stale.content.decode()
    assert not Cell.objects.get(pk=cell.pk).corrected_type


def test_sample_page_shows_overlay_table_formula_and_review_buttons(client, tech):
    sample = make_sample(confidence=0.6)
    Cell.objects.filter(index=0).update(corrected_type="MONOCYTE", cell_type="MONOCYTE")
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert body.count("<polygon points=") == 3  # each outline, on its halo
    assert "Leukocyte formula" in body and "Needs review" in body and "Reviewed" in body
    assert "less than 80% sure of, and cells unlike those it was trained on" in body
    assert "Confident calls can be wrong too" in body
    assert 'data-key="E"' in body and 'data-key="N"' in body
    assert "sample.js" in body


def test_cell_page_shows_every_probability_and_the_heatmap(client, tech):
    make_sample()
    cell = Cell.objects.get(index=1)
    Cell.objects.filter(pk=cell.pk).update(heatmap="heatmaps/x.jpg", window="windows/x.png")
    body = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    for name in ("Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"):
        assert name in body
    assert "/media/heatmaps/x.jpg" in body and "/media/windows/x.png" in body
    assert "Grad-CAM" in body


def test_results_fragment_and_status_json(client, tech):
    sample = make_sample()
    fragment = client.get(reverse("lab:sample-results", args=[sample.pk])).content.decode()
    assert "<html" not in fragment and "Leukocyte formula" in fragment
    # A fresh sign-off panel rides along, for the page's script to swap in as the results change.
    fresh = fragment.split('<template data-role="sign-off-fresh">', 1)[1].split("</template>", 1)[0]
    assert 'id="sign-off"' in fresh and "3 of 100 leukocytes counted" in fresh
    status = client.get(reverse("lab:sample-status", args=[sample.pk])).json()
    assert status == {**status, "total": 1, "finished": 1, "percent": 100, "complete": True}


def test_the_results_of_one_photograph_come_with_the_sidebar_and_sign_off_alone(client, tech):
    # What the page's script fetches after a review: the reviewed photograph's card, the formula
    # and the sign-off panel, not the whole of a long sample's results.
    sample = make_sample()
    first = sample.images.get()
    other = SmearImage.objects.create(sample=sample, image="smears/other.png", original_filename="other.png",
                                      width=640, height=480, file_size=1000, checksum="1" * 64,
                                      status=SmearImage.Status.DONE, model_version=first.model_version)
    url = reverse("lab:sample-results", args=[sample.pk])
    whole = client.get(url).content.decode()
    assert f'id="image-{first.pk}"' in whole and f'id="image-{other.pk}"' in whole
    part = client.get(url, {"image": first.pk}).content.decode()
    assert f'id="image-{first.pk}"' in part and f'id="image-{other.pk}"' not in part
    assert part.count('class="sidebar"') == 1 and "Leukocyte formula" in part
    assert '<template data-role="sign-off-fresh">' in part and "3 of 100 leukocytes counted" in part
    # The card is the one the whole page renders for that photograph, cell rows and all.
    def unmasked(html):  # each response masks the CSRF token anew
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)

    opening = f'<section class="card image-card" id="image-{first.pk}"'
    card = unmasked(part).split(opening)[1].split("</section>")[0]
    assert card in unmasked(whole) and card.count('class="cellrow"') == 3
    elsewhere = make_sample("H26-0002")
    for image in ("abc", str(elsewhere.images.get().pk), "²", str(2**63), "9" * 5000):
        assert client.get(url, {"image": image}).status_code == 404, image[:20]


def test_a_long_queued_photograph_says_the_worker_may_be_down_and_offers_to_try_again(
        client, tech, settings, sent_tasks):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.models import SmearImage

    settings.QUEUED_STUCK_AFTER = 300
    sample = make_sample(types=())
    image = sample.images.get()
    SmearImage.objects.update(status="queued", sent_at=timezone.now(),
                              queued_at=timezone.now() - timedelta(minutes=7))
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "Queued 7\xa0minutes ago: the classifier worker may not be running" in body
    assert reverse("lab:image-retry", args=[image.pk]) in body

    client.post(reverse("lab:image-retry", args=[image.pk]))
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "worker may not be running" not in body and "Waiting for the classifier" in body
    assert SmearImage.objects.get().queued_at > timezone.now() - timedelta(minutes=1)

    # A worker that died mid-way: its heartbeat went silent.
    SmearImage.objects.update(status="processing", heartbeat_at=timezone.now() - timedelta(minutes=2))
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "The worker classifying it has stopped" in body and "Try again" in body
    SmearImage.objects.update(heartbeat_at=timezone.now())
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "has stopped" not in body and "Classifying" in body


def test_a_photograph_the_broker_never_got_says_it_waits_for_the_queue(client, tech):
    from webapp.models import SmearImage

    sample = make_sample(types=())
    SmearImage.objects.update(status="queued", sent_at=None)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "The task queue cannot be reached just now: the photograph is stored" in body


def test_sample_page_states_the_review_threshold_of_the_networks_that_classified_it(client, tech, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = None
    fitted = make_version(metrics={"review": {"confidence_threshold": 0.86}})
    sample = make_sample(version=fitted)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "less than 86% sure of" in body

    # A photograph added later, classified by a version that fitted none (the default, 80%).
    other = make_sample("H26-0002", version=make_version())
    other.images.update(sample=sample)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "less than 80-86% sure of" in body


def test_the_cell_page_walks_through_the_whole_sample(client, tech):
    version = make_version()
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"), version=version)
    first_photograph = sample.images.get()
    second_photograph = SmearImage.objects.create(
        sample=sample, image="smears/two.png", original_filename="two.png", width=640, height=480,
        file_size=1, checksum="2" * 64, status=SmearImage.Status.DONE, model_version=version)
    for index in range(2):
        Cell.objects.create(image=second_photograph, model_version=version, index=index, x0=0, y0=0,
                            x1=9, y1=9, predicted_type="MONOCYTE", confidence=0.9,
                            binary_call="MONONUCLEAR", cell_type="MONOCYTE")
    # An older version's call on the first photograph: superseded, walked only among its own.
    old = make_version(status="ready")
    superseded = Cell.objects.create(image=first_photograph, model_version=old, index=0, x0=0, y0=0,
                                     x1=9, y1=9, predicted_type="EOSINOPHIL", confidence=0.9,
                                     binary_call="POLYNUCLEAR", cell_type="EOSINOPHIL")
    walk = [cell.pk for photograph in (first_photograph, second_photograph)
            for cell in photograph.cells.filter(model_version=version).order_by("index")]

    page = client.get(reverse("lab:cell-detail", args=[walk[1]])).content.decode()
    assert "Cell 2 of 2 on its photograph" in page and "2 of 4 in the sample" in page
    # The tab's title names the cell as the sample page does, not by its database id.
    assert f"<title>Cell 2 on {first_photograph.original_filename} · {sample.accession_number}" in page
    assert reverse("lab:cell-detail", args=[walk[0]]) in page  # previous
    assert reverse("lab:cell-detail", args=[walk[2]]) in page  # next: the second photograph's first
    page = client.get(reverse("lab:cell-detail", args=[walk[3]])).content.decode()
    assert 'id="next-cell"' not in page and "4 of 4 in the sample" in page

    page = client.get(reverse("lab:cell-detail", args=[superseded.pk])).content.decode()
    assert "Cell 1 of 1" in page and "in the sample" not in page
    assert 'id="next-cell"' not in page and 'id="prev-cell"' not in page


def test_the_type_buttons_mark_the_current_call_and_escape_a_labs_own_type():
    types = [("NEUTROPHIL", "N"), ("ARTEFACT", "A"), ('LAB_"X"&Y', ""), ("PLATELET", "G")]
    unconfirmed = review_buttons(types, SimpleNamespace(cell_type="NEUTROPHIL", corrected_type=""))
    # The letter is shown; the type's name is the button's accessible name, the letter its shortcut,
    # and the type the cell has now is the one pressed.
    assert ('class="typebtn t-neutrophil current unconfirmed" title="Neutrophil (key N): the network\'s '
            'call, not yet confirmed" aria-label="Neutrophil" aria-pressed="true" aria-keyshortcuts="N" '
            'data-key="N">N</button>') in unconfirmed
    assert ('title="Not a white cell: left out of the formula (key A)" aria-label="Artefact" '
            'aria-pressed="false" aria-keyshortcuts="A" data-key="A">A</button>') in unconfirmed
    assert 'value="LAB_&quot;X&quot;&amp;Y"' in unconfirmed and ">LAB</button>" in unconfirmed
    # A lab's own type has no key: no shortcut, and its name escaped as its value is.
    assert 'aria-label="Lab &quot;x&quot;&amp;y" aria-pressed="false" data-key="">LAB</button>' in unconfirmed
    # A letter its name lacks joins the name: a voice user says what is on the button.
    assert 'aria-label="Platelet (G)" aria-pressed="false" aria-keyshortcuts="G"' in unconfirmed
    assert unconfirmed.count('aria-pressed="true"') == 1 and unconfirmed.count('aria-pressed="false"') == 3
    confirmed = review_buttons(types, SimpleNamespace(cell_type="NEUTROPHIL", corrected_type="NEUTROPHIL"))
    assert "current confirmed" in confirmed and ": confirmed by a reviewer" in confirmed
    assert confirmed.count("current") == 1 and confirmed.count('aria-pressed="true"') == 1


def test_the_cell_pages_type_buttons_say_which_is_the_cells_type_and_whether_confirmed(client, tech):
    """The accessibility audit: the cell page's buttons, unlike the sample page's, had no pressed
    state; which type the cell had, and whether a reviewer confirmed it, was a border alone."""
    import html

    cell = Cell.objects.filter(image__sample=make_sample(types=("NEUTROPHIL",))).get()
    page = html.unescape(client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode())
    buttons = page.split('class="type-grid"', 1)[1].split("</div>", 1)[0]
    current = buttons.split('value="NEUTROPHIL"', 1)[1].split(">", 1)[0]
    assert ('aria-pressed="true" aria-keyshortcuts="N" title="Neutrophil: the network\'s call, not yet '
            'confirmed"') in current
    assert buttons.count('aria-pressed="true"') == 1 and 'aria-pressed="false"' in buttons
    client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "NEUTROPHIL", "next": "/"})
    page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    assert 'aria-pressed="true" aria-keyshortcuts="N" title="Neutrophil: confirmed by a reviewer"' in page


def test_the_cell_page_says_why_a_call_needs_review(client, tech, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.8
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE"), confidence=0.9)
    unsure, unfamiliar, sure = sample.images.get().cells.order_by("index")
    Cell.objects.filter(pk=unsure.pk).update(confidence=0.55, needs_review=True)
    Cell.objects.filter(pk=unfamiliar.pk).update(ood_score=1.7, needs_review=True)

    def reasons(cell):
        page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
        found = re.search(r'data-role="review-reasons">([^<]*)<', page)
        return found.group(1) if found else None

    assert reasons(unsure) == ("because its confidence, 55%, is under this network&#x27;s review "
                               "threshold of 80%.")
    assert reasons(unfamiliar) == "because it is unlike the cells the network was trained on."
    assert reasons(sure) is None
    SmearImage.objects.filter(pk=sample.images.get().pk).update(quality_warnings=["Out of focus."])
    Cell.objects.filter(pk=sure.pk).update(needs_review=True)
    assert reasons(sure) == "because its photograph&#x27;s quality measures warn."


def test_the_cell_page_says_what_a_second_look_did(client, tech, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.8
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE"), confidence=0.9)
    changed, unsure_at_first, kept = sample.images.get().cells.order_by("index")
    # The second look at 1.25x changed a monocyte call into a neutrophil one ...
    Cell.objects.filter(pk=changed.pk).update(
        view_factor=1.25, first_look_type="MONOCYTE", first_look_confidence=0.62, needs_review=True)
    # ... read a lymphocyte better at 0.8x, same call, sure enough only there ...
    Cell.objects.filter(pk=unsure_at_first.pk).update(
        view_factor=0.8, first_look_type="LYMPHOCYTE", first_look_confidence=0.7, needs_review=True)
    # ... and kept the first look of a monocyte (no view found more familiar).
    Cell.objects.filter(pk=kept.pk).update(first_look_type="MONOCYTE", first_look_confidence=0.85)

    def page(cell):
        html = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
        reasons = re.search(r'data-role="review-reasons">([^<]*)<', html)
        said = re.search(r'data-role="second-look"[^>]*>([^<]*)<', html)
        return (reasons.group(1) if reasons else None), (said.group(1) if said else None)

    reasons, said = page(changed)
    assert reasons == ("because at the photograph&#x27;s own scale its confidence, 62%, was under this "
                       "network&#x27;s review threshold of 80%; a second look at 1.25x changed the "
                       "network&#x27;s call from Monocyte.")
    assert said == ("Called from a second look at 1.25x the scale read from the photograph&#x27;s red "
                    "cells, the view the network found most familiar; at the red cells&#x27; scale it "
                    "read Monocyte, 62%.")
    reasons, said = page(unsure_at_first)
    assert reasons == ("because at the photograph&#x27;s own scale its confidence, 70%, was under this "
                       "network&#x27;s review threshold of 80%.")
    assert said.startswith("Called from a second look at 0.8x") and "Lymphocyte, 70%" in said
    assert page(kept) == (None, None)


@pytest.mark.django_db(transaction=True)
def test_a_relabel_takes_the_samples_lock_before_the_cells(django_user_model):
    # review_cells (the gallery) and sign_sample lock the sample, then the cells; review_cell took
    # the cell first. A single relabel and a gallery relabel of the same cell at once could each hold
    # what the other waited for: PostgreSQL's deadlock error, a 500 to one of them.
    import threading

    from django.db import DatabaseError, connection, transaction

    from tests.webapp.concurrent_requests import start_as_another_request
    from webapp.models import Sample

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = django_user_model.objects.create_user("tech", password="a-long-passphrase-1")
    sample = make_sample("H26-LOCK", types=("NEUTROPHIL",))
    cell = Cell.objects.get(image__sample=sample)
    holding, release, cell_was_free = threading.Event(), threading.Event(), []

    def gallery_side():  # holds the sample's row, as review_cells does, then reaches for the cell
        with transaction.atomic():
            Sample.objects.select_for_update().get(pk=sample.pk)
            holding.set()
            release.wait(2)  # meanwhile the single relabel starts
            try:
                Cell.objects.select_for_update(nowait=True).get(pk=cell.pk)
                cell_was_free.append(True)
            except DatabaseError:
                cell_was_free.append(False)

    first = start_as_another_request(gallery_side)
    assert holding.wait(10)
    second = start_as_another_request(lambda: review_cell(cell, "LYMPHOCYTE", user))
    first.join(10)
    second.join(10)
    assert cell_was_free == [True], "the single relabel held the cell while waiting for the sample"
    assert Cell.objects.get(pk=cell.pk).cell_type == "LYMPHOCYTE"
