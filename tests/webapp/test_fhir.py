"""The FHIR export a laboratory information system fetches: a Bundle with the DiagnosticReport
first and one Observation per reported figure, LOINC-coded, for a signed sample only."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from fhir.resources.R4B.bundle import Bundle

from tests.webapp.lab_factories import make_sample, make_version, mark_signed, named_hematologist
from webapp.models import Sample

pytestmark = pytest.mark.django_db

TYPES = ("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "ERYTHROBLAST")
LOINC = "http://loinc.org"


@pytest.fixture
def hematologist(django_user_model):
    return named_hematologist(django_user_model)



def fetch(client, sample):
    response = client.get(reverse("lab:api-sample-fhir", args=[sample.pk]))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/fhir+json"
    return Bundle.model_validate_json(response.content)


def observations_by_code(bundle):
    found = {}
    for entry in bundle.entry[1:]:
        observation = entry.resource
        assert observation.get_resource_type() == "Observation"
        codes = [coding.code for coding in observation.code.coding or [] if coding.system == LOINC]
        found[codes[0] if codes else observation.code.text] = observation
    return found


def test_signed_sample_exports_a_final_report_with_loinc_coded_figures(client, tech, hematologist):
    sample = make_sample("H26-0101", types=TYPES)
    sample.below_target_reason = "Leukopenic sample"  # no full stop: the next sentence must not run on
    sample = mark_signed(sample, hematologist)
    bundle = fetch(client, sample)
    assert bundle.type == "collection"
    report = bundle.entry[0].resource
    assert report.get_resource_type() == "DiagnosticReport"
    assert report.status == "final"
    assert report.identifier[0].value == "H26-0101" and report.identifier[0].system is None
    assert report.code.coding[0].system == LOINC and report.code.coding[0].code == "24318-8"
    assert report.performer[0].display == "Ada Lovelace"
    assert report.issued == sample.signed_at
    assert "below the target of 100" in report.conclusion
    assert "Signed below the target count of 100: Leukopenic sample." in report.conclusion
    # `result` references every Observation of the Bundle, and nothing else.
    assert [ref.reference for ref in report.result] == [entry.fullUrl for entry in bundle.entry[1:]]

    observations = observations_by_code(bundle)
    neutrophils, lymphocytes, nrbc = observations["26511-6"], observations["26478-8"], observations["19048-8"]
    assert neutrophils.valueQuantity.value == 75.0 and lymphocytes.valueQuantity.value == 25.0
    for observation in (neutrophils, lymphocytes):
        quantity = observation.valueQuantity
        assert (quantity.unit, quantity.system, quantity.code) == ("%", "http://unitsofmeasure.org", "%")
    assert nrbc.valueQuantity.value == 25.0 and nrbc.valueQuantity.code == "/100{WBCs}"
    # The four-type network's other types are reported at zero, as a lab report lists them.
    assert observations["26485-3"].valueQuantity.value == 0.0  # monocytes
    assert observations["26450-7"].valueQuantity.value == 0.0  # eosinophils
    assert {observation.status for observation in observations.values()} == {"final"}
    assert "95% range" in neutrophils.note[0].text


def test_a_type_without_a_loinc_code_goes_with_a_text_code(client, tech, hematologist):
    sample = mark_signed(make_sample("H26-0102", types=("NEUTROPHIL", "MEGAKARYOCYTE")), hematologist)
    observations = observations_by_code(fetch(client, sample))
    own = observations["Megakaryocyte (% of leukocytes)"]
    assert own.code.coding is None and own.valueQuantity.value == 50.0


def test_report_is_amended_after_a_reopening_and_a_second_signature(client, tech, hematologist):
    sample = mark_signed(make_sample("H26-0103", types=TYPES), hematologist)
    first = fetch(client, sample)
    assert first.model_dump_json() == fetch(client, sample).model_dump_json()  # same result, same ids

    sample.status, sample.reopen_reason = Sample.Status.REOPENED, "Relabel a smudge cell"
    sample.reopened_by, sample.reopened_at = hematologist, timezone.now()
    sample.save()
    reopened = client.get(reverse("lab:api-sample-fhir", args=[sample.pk]))
    assert reopened.status_code == 409 and "not signed" in reopened.json()["error"]

    mark_signed(sample, hematologist, times=2)
    second = fetch(client, sample)
    assert second.entry[0].resource.status == "amended"
    assert {entry.resource.status for entry in second.entry[1:]} == {"amended"}
    assert {entry.fullUrl for entry in second.entry}.isdisjoint({entry.fullUrl for entry in first.entry})
    # Issued when signed again; effective, like the first result, when the photographs came in.
    assert second.entry[0].resource.issued == sample.signed_at != first.entry[0].resource.issued
    effective = {bundle.entry[k].resource.effectiveDateTime for bundle in (first, second) for k in (0, 1)}
    assert effective == {sample.created_at}


def test_unsigned_sample_is_refused_with_409(client, tech):
    sample = make_sample("H26-0104", types=TYPES)
    response = client.get(reverse("lab:api-sample-fhir", args=[sample.pk]))
    assert response.status_code == 409
    assert response.json() == {"error": "Sample H26-0104 is not signed: only a signed result is sent "
                                        "to the laboratory information system."}


def test_export_needs_a_sign_in(client, hematologist):
    sample = mark_signed(make_sample("H26-0105", types=TYPES), hematologist)
    response = client.get(reverse("lab:api-sample-fhir", args=[sample.pk]))
    assert response.status_code == 401 and "error" in response.json()
    missing = client.get(reverse("lab:api-sample-fhir", args=[999999]))
    assert missing.status_code == 401


def test_missing_sample_answers_404_in_json(client, tech):
    missing = client.get(reverse("lab:api-sample-fhir", args=[999999]))
    assert missing.status_code == 404 and missing.json() == {"error": "No Sample matches the given query."}


def test_binary_network_result_sends_its_two_groups(client, tech, hematologist):
    version = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    sample = mark_signed(make_sample("H26-0106", types=("POLYNUCLEAR", "POLYNUCLEAR", "MONONUCLEAR"),
                              version=version), hematologist)
    observations = observations_by_code(fetch(client, sample))
    # FHIR decimals parse back as Decimal.
    assert observations["34999-3"].valueQuantity.value == Decimal("66.7")  # polymorphonuclear cells
    assert observations["Mononuclear (% of leukocytes)"].valueQuantity.value == Decimal("33.3")


def test_a_reader_asking_for_xml_only_is_told_what_there_is(client, tech, hematologist):
    sample = mark_signed(make_sample("H26-0109", types=TYPES), hematologist)
    path = reverse("lab:api-sample-fhir", args=[sample.pk])
    refused = client.get(path, HTTP_ACCEPT="application/fhir+xml")
    assert refused.status_code == 406 and "application/fhir+json" in refused.json()["error"]
    for accept in ("application/fhir+json", "application/json", "*/*", "application/fhir+xml, */*;q=0.1", "",
                   " ",
                   # FHIR's own version parameter and a charset: Django's matching refused both (406).
                   "application/fhir+json; fhirVersion=4.0", "application/fhir+json;fhirVersion=4.3",
                   "application/fhir+json; charset=utf-8", "application/json; charset=UTF-8"):
        assert client.get(path, HTTP_ACCEPT=accept).status_code == 200, accept
    for accept in ("application/fhir+json; fhirVersion=5.0", "application/fhir+json;q=0",
                   "application/fhir+json; fhirVersion=3.0, application/fhir+xml"):
        other = client.get(path, HTTP_ACCEPT=accept)
        assert other.status_code == 406, accept
        assert other.json()["error"] == ("Only application/fhir+json (FHIR R4, fhirVersion 4.0 or 4.3) is "
                                         "served here.")


def test_the_method_says_when_cells_came_from_one_cell_photographs(client, tech, hematologist):
    def methods(sample):
        return {found.method.text for found in observations_by_code(fetch(client, sample)).values()}

    sample = mark_signed(make_sample("H26-0108", types=TYPES), hematologist)
    (as_fields,) = methods(sample)
    assert "one white cell each" not in as_fields
    Sample.objects.filter(pk=sample.pk).update(photographs=Sample.Photographs.ONE_CELL_EACH)
    assert methods(sample) == {"Digital morphology of a blood smear, from photographs of one white cell "
                               "each: cells pre-classified by a neural network, every call it was unsure of "
                               "reviewed by laboratory staff before the result was signed"}


def test_an_amended_result_reports_a_dropped_type_at_zero_and_says_what_changed(client, tech, hematologist):
    # The clinical audit: a cell relabelled a blast, signed (FHIR: Blasts 3.7%, final); reopened, the
    # blast relabelled a monocyte, signed again: the amended Bundle had no Blast Observation, so an LIS
    # filing by code kept "Blasts 3.7%" as final, and nothing said what the amendment changed.
    from tests.webapp.lab_factories import with_role
    from tests.webapp.test_report import pdf_lines
    from webapp.models import Cell
    from webapp.services.review import review_cell
    from webapp.services.sign_off import reopen_sample, sign_sample

    with_role(hematologist, "hematologist")
    sample = make_sample("H26-0110", types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "ERYTHROBLAST"))
    Sample.objects.filter(pk=sample.pk).update(target_count=3)
    for cell in Cell.objects.filter(image__sample=sample):
        review_cell(cell, cell.predicted_type, hematologist)
    last = Cell.objects.filter(image__sample=sample, predicted_type="NEUTROPHIL").order_by("pk").last()
    review_cell(last, "BLAST", hematologist)
    first = sign_sample(Sample.objects.get(pk=sample.pk), hematologist)
    assert first.signed_figures["types"]["BLAST"] == {"count": 1, "percent": 33.3}
    blast = observations_by_code(fetch(client, first))["26446-5"]
    assert (blast.status, blast.valueQuantity.value) == ("final", Decimal("33.3"))

    reopened = reopen_sample(first, hematologist, "The blast is a monocyte")
    review_cell(Cell.objects.get(pk=last.pk), "MONOCYTE", hematologist)
    page = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "Changed since the signed result: Monocyte 0.0% \u2192 33.3%; Blast 33.3% \u2192 0.0%." in page
    amended = sign_sample(Sample.objects.get(pk=reopened.pk), hematologist)

    bundle = fetch(client, amended)
    found = observations_by_code(bundle)
    blast = found["26446-5"]
    assert (blast.status, blast.valueQuantity.value) == ("amended", Decimal("0.0"))
    assert "0 of 3 leukocytes counted" in blast.note[0].text
    changed = "Changed from the result signed before: Monocyte 0.0% \u2192 33.3%; Blast 33.3% \u2192 0.0%."
    assert changed in bundle.entry[0].resource.conclusion
    page = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert changed in page
    pdf = " ".join(pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content))
    assert "Blast 33.3% \u2192 0.0%" in " ".join(pdf.split())
    api = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert api["formula"]["types"]["BLAST"]["count"] == 0
    assert api["amendment"]["changes"] == [
        {"type": "MONOCYTE", "before": 0.0, "after": 33.3, "unit": "percent"},
        {"type": "BLAST", "before": 33.3, "after": 0.0, "unit": "percent"}]
    csv_text = client.get(reverse("lab:sample-export", args=[sample.pk])).content.decode()
    assert "amended_changes,Changed from the result signed before: Monocyte" in csv_text
    # A figure per 100 leukocytes the first result gave stays, changed or not; and a second
    # amendment that changes nothing says so.
    assert "R" not in amended.signed_figures["types"] and "ERYTHROBLAST" in amended.signed_figures["types"]
    again = sign_sample(reopen_sample(amended, hematologist, "Recheck"), hematologist)
    bundle = fetch(client, again)
    assert "No reported figure changed from the result signed before." in bundle.entry[0].resource.conclusion
    assert observations_by_code(bundle)["26446-5"].valueQuantity.value == Decimal("0.0")


def test_the_accession_number_names_the_labs_namespace_where_one_is_set(client, tech, hematologist, settings):
    # The clinical audit: an identifier without a system: an LIS cannot tell this lab's H26-0001 from
    # another's. The version line names its network's digest: "v1" is this installation's alone.
    settings.ACCESSION_SYSTEM = "urn:oid:1.2.826.0.1.3680043.2.1"
    version = make_version()
    sample = mark_signed(make_sample("H26-0111", types=TYPES, version=version), hematologist)
    report = fetch(client, sample).entry[0].resource
    identifier = report.identifier[0]
    assert (identifier.system, identifier.value) == (settings.ACCESSION_SYSTEM, "H26-0111")
    network = version.model_sha256[:12]
    assert f"Classified by v{version.pk} (leukonet, four cell types, network {network})." in report.conclusion


def test_a_signed_result_whose_figures_no_longer_read_as_signed_says_so(client, tech, hematologist):
    # The clinical audit: a signed result is rebuilt from its cells each time; an upgrade that changed
    # how cells count would change a "final" result silently. Its signature now keeps its figures.
    from tests.webapp.lab_factories import with_role
    from webapp.services.sign_off import sign_sample

    with_role(hematologist, "hematologist")
    sample = make_sample("H26-0112", types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"))
    Sample.objects.filter(pk=sample.pk).update(target_count=3)
    signed = sign_sample(Sample.objects.get(pk=sample.pk), hematologist)
    assert "differ from those signed" not in fetch(client, signed).entry[0].resource.conclusion
    # As a release that counted these cells otherwise would leave it: the copy says 66.7% neutrophils.
    figures = signed.signed_figures
    figures["types"]["NEUTROPHIL"]["percent"] = 50.0
    Sample.objects.filter(pk=sample.pk).update(signed_figures=figures)
    conclusion = fetch(client, signed).entry[0].resource.conclusion
    assert ("These figures differ from those signed (Neutrophil signed as 50.0%, now 66.7%): the site now "
            "counts this sample otherwise than when it was signed.") in conclusion


def test_a_binary_networks_amended_result_reports_a_dropped_blast_at_zero(client, tech, hematologist):
    # A binary network's formula (the groups, and a blast a reviewer named beside them) took the
    # early return of leukocyte_formula, which left out the types the set-aside signature reported:
    # the amended Bundle had no Blast Observation, and the LIS kept "Blasts 33.3%" as final.
    from tests.webapp.lab_factories import with_role
    from webapp.models import Cell
    from webapp.services.review import review_cell
    from webapp.services.sign_off import reopen_sample, sign_sample

    with_role(hematologist, "hematologist")
    version = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    sample = make_sample("H26-0112", types=("MONONUCLEAR", "POLYNUCLEAR", "POLYNUCLEAR"), version=version)
    Sample.objects.filter(pk=sample.pk).update(target_count=3)
    last = Cell.objects.filter(image__sample=sample).order_by("pk").last()
    review_cell(last, "BLAST", hematologist)
    first = sign_sample(Sample.objects.get(pk=sample.pk), hematologist)
    assert observations_by_code(fetch(client, first))["26446-5"].valueQuantity.value == Decimal("33.3")

    reopened = reopen_sample(first, hematologist, "The blast is a polynuclear cell")
    review_cell(Cell.objects.get(pk=last.pk), "POLYNUCLEAR", hematologist)
    amended = sign_sample(Sample.objects.get(pk=reopened.pk), hematologist)
    assert amended.signed_figures["types"]["BLAST"] == {"count": 0, "percent": 0.0}
    bundle = fetch(client, amended)
    blast = observations_by_code(bundle)["26446-5"]
    assert (blast.status, blast.valueQuantity.value) == ("amended", Decimal("0.0"))
    assert "Blast 33.3% \u2192 0.0%" in bundle.entry[0].resource.conclusion


def test_an_amendment_of_a_result_reopened_before_figures_were_kept_claims_no_changes(
        client, tech, hematologist):
    # A sample signed and reopened before migration 0027 has no set-aside figures: the page, the
    # PDF, the CSV and FHIR say nothing of changes, and the API said every type had gone from "not
    # reported" to its figure, which an LIS reads as a result never sent before.
    from tests.webapp.lab_factories import with_role
    from webapp.models import Cell
    from webapp.services.review import review_cell
    from webapp.services.sign_off import reopen_sample, sign_sample

    with_role(hematologist, "hematologist")
    sample = make_sample("H26-0113", types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"))
    Sample.objects.filter(pk=sample.pk).update(target_count=3)
    for cell in Cell.objects.filter(image__sample=sample):
        review_cell(cell, cell.predicted_type, hematologist)
    reopen_sample(sign_sample(Sample.objects.get(pk=sample.pk), hematologist), hematologist, "Recount")
    Sample.objects.filter(pk=sample.pk).update(signed_figures={}, previously_signed_figures={})
    sign_sample(Sample.objects.get(pk=sample.pk), hematologist)
    amendment = client.get(reverse("lab:api-sample", args=[sample.pk])).json()["amendment"]
    assert amendment["reason"] == "Recount" and amendment["changes"] is None


def test_a_result_signed_with_no_leukocyte_by_an_older_release_sends_no_empty_quantity(
        client, tech, hematologist):
    # Releases before December 4 signed a sample whose only cells were erythroblasts (or whose white
    # cells the edge cut). Upgraded, its FHIR export sent NRBC as a valueQuantity with a unit and no
    # value, which an LIS reads as a number that is not there: the figure is absent, and says why.
    sample = mark_signed(make_sample("H26-0114", types=("ERYTHROBLAST",)), hematologist)
    nrbc = observations_by_code(fetch(client, sample))["19048-8"]
    assert nrbc.valueQuantity is None
    assert nrbc.dataAbsentReason.coding[0].code == "not-applicable"
    assert "no leukocyte" in nrbc.dataAbsentReason.text
