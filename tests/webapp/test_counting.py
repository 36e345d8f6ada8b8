"""The counting rules: the differential counts leukocytes only; erythroblasts are NRBC per 100
leukocytes; platelets and artefacts are listed apart; edge cells count only when counted in."""

import pytest
from django.urls import reverse

from classifier.labels import EIGHT_CLASSES
from tests.webapp.lab_factories import make_sample, make_version
from webapp.cell_types import review_types
from webapp.counting import REVIEWER_ONLY, RULES, Counting, counting_of, group_of
from webapp.models import Cell
from webapp.selectors import leukocyte_formula, sample_cell_counts

pytestmark = pytest.mark.django_db


def test_every_rule_has_a_key_of_its_own_within_what_one_network_offers():
    for class_names in (EIGHT_CLASSES, ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"),
                        ("MONONUCLEAR", "POLYNUCLEAR")):
        keys = [RULES[name].key for name in review_types(class_names)]
        assert len(keys) == len(set(keys)), class_names


def test_the_binary_grouping_is_the_granulocytes_against_lymphocytes_and_monocytes():
    assert {name for name in RULES if group_of(name) == "POLYNUCLEAR"} >= {
        "NEUTROPHIL", "EOSINOPHIL", "BASOPHIL", "IMMATURE_GRANULOCYTE"}
    assert group_of("ERYTHROBLAST") == group_of("PLATELET") == group_of("BLAST") == ""
    assert counting_of("A_LABS_OWN_TYPE") is Counting.DIFFERENTIAL


def test_erythroblasts_are_reported_per_100_leukocytes_and_platelets_listed_apart():
    version = make_version(class_names=EIGHT_CLASSES)
    types = ("NEUTROPHIL",) * 3 + ("LYMPHOCYTE", "ERYTHROBLAST", "PLATELET", "IMMATURE_GRANULOCYTE")
    sample = make_sample(types=types, version=version)

    formula = leukocyte_formula(sample)

    assert formula.total == 5
    shares = {row.name: row.percent for row in formula.rows}
    assert "ERYTHROBLAST" not in shares and "PLATELET" not in shares
    assert shares["NEUTROPHIL"] == 60.0 and shares["IMMATURE_GRANULOCYTE"] == 20.0
    assert shares["BASOPHIL"] == 0.0  # the network names it: listed with its zero
    assert sum(shares.values()) == 100.0
    (nrbc,) = formula.per_100
    assert (nrbc.reported_as, nrbc.count, nrbc.per_100) == ("NRBC", 1, 20.0)
    assert formula.listed_apart == [("PLATELET", 1)]
    assert {row.name: row.count for row in formula.groups} == {"MONONUCLEAR": 1, "POLYNUCLEAR": 4}
    assert sample_cell_counts([sample.pk])[sample.pk].leukocytes == 5


def test_an_edge_cell_is_left_out_until_a_reviewer_counts_it_in():
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "LYMPHOCYTE"))
    Cell.objects.filter(index=2).update(is_partial=True)
    formula = leukocyte_formula(sample)
    assert (formula.total, formula.partial_left_out) == (2, 1)

    Cell.objects.filter(index=2).update(count_partial=True)
    formula = leukocyte_formula(sample)
    assert (formula.total, formula.partial_left_out) == (3, 0)


def test_an_edge_cell_labelled_an_artefact_is_reported_as_an_artefact():
    # The workflow audit: a corner sliver a reviewer labelled Artefact was reported on the page, the
    # report, the CSV and FHIR as a cell cut by the edge, and the artefacts read 0.
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "LYMPHOCYTE"))
    Cell.objects.filter(index=2).update(is_partial=True, cell_type="ARTEFACT", corrected_type="ARTEFACT")
    formula = leukocyte_formula(sample)
    assert (formula.total, formula.partial_left_out) == (2, 0)
    assert formula.listed_apart == [("ARTEFACT", 1)]
    # What a signature certifies counts it too: relabelled so after the page was read, it is refused.
    from webapp.selectors import read_result_stamp, result_stamp

    assert read_result_stamp(result_stamp(sample)).get("ARTEFACT") == 1


def test_reviewer_only_types_are_offered_beside_a_four_type_network():
    offered = review_types(("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"))
    assert set(REVIEWER_ONLY) <= set(offered)
    assert {"BASOPHIL", "IMMATURE_GRANULOCYTE", "ERYTHROBLAST", "PLATELET"} <= set(offered)


def test_pages_name_a_type_as_people_write_it(client, tech):
    version = make_version(class_names=EIGHT_CLASSES)
    sample = make_sample(types=("NEUTROPHIL", "IMMATURE_GRANULOCYTE", "IMMATURE_GRANULOCYTE"),
                         version=version, confidence=0.7)
    cell = sample.images.get().cells.get(index=2)  # the network's call, then a reviewer's
    Cell.objects.filter(pk=cell.pk).update(cell_type="BASOPHIL", corrected_type="BASOPHIL")

    for page in (reverse("lab:sample-detail", args=[sample.pk]), reverse("lab:cell-detail", args=[cell.pk]),
                 reverse("lab:history")):
        text = client.get(page).content.decode()
        assert "Immature granulocyte" in text, page
        assert "Immature_Granulocyte" not in text, page


def test_groups_that_leave_some_cells_out_are_rounded_to_the_nearest_tenth():
    # The audit's sample: 4 mononuclear and 18 polynuclear cells of 24, two blasts in neither
    # group. 4 / 24 is 16.67%: it read 16.6 on the page, report, PDF, CSV and API.
    sample = make_sample(types=("LYMPHOCYTE",) * 4 + ("NEUTROPHIL",) * 18 + ("BLAST",) * 2)
    formula = leukocyte_formula(sample)
    groups = {row.name: row.percent for row in formula.groups}
    assert formula.total == 24 and groups == {"MONONUCLEAR": 16.7, "POLYNUCLEAR": 75.0}
    # The types still add up to the Total's 100.0.
    assert round(sum(row.percent for row in formula.rows), 1) == 100.0
