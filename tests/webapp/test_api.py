"""The read-only JSON API a laboratory information system fetches results from."""

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.webapp.lab_factories import make_sample, mark_signed, named_hematologist
from webapp.models import Cell, Sample, SmearImage
from webapp.services.review import review_cell

pytestmark = pytest.mark.django_db


def test_api_needs_a_signed_in_user(client):
    make_sample()
    response = client.get(reverse("lab:api-samples"))
    assert response.status_code == 401
    assert "sign in again" in response.json()["error"]


def test_api_answers_missing_records_and_unknown_addresses_in_json(client, tech):
    missing = client.get(reverse("lab:api-sample", args=[999999]))
    assert missing.status_code == 404 and missing.json() == {"error": "No Sample matches the given query."}
    unknown = client.get("/api/no-such-thing/")
    assert unknown.status_code == 404 and unknown.json() == {"error": "Not found."}


def test_sample_list_is_paginated(client, tech):
    for n in range(5):
        make_sample(f"S-{n}", types=("NEUTROPHIL",))
    first = client.get(reverse("lab:api-samples"), {"page_size": 2}).json()
    assert first["count"] == 5 and first["pages"] == 3 and len(first["results"]) == 2
    assert first["previous"] is None and "page=2" in first["next"]
    assert first["results"][0]["accession_number"] == "S-4"  # newest first
    assert first["results"][0]["images"] == 1 and first["results"][0]["images_done"] == 1
    last = client.get(first["next"].replace("page=2", "page=3")).json()
    assert len(last["results"]) == 1 and last["next"] is None
    only = client.get(reverse("lab:api-samples"), {"accession_number": "S-2"}).json()
    assert [row["accession_number"] for row in only["results"]] == ["S-2"]
    # A reader walking the pages gets an error past the last, not the last page again.
    past = client.get(reverse("lab:api-samples"), {"page_size": 2, "page": 4})
    assert past.status_code == 404 and past.json() == {"error": "There is no page 4: the list has 3."}
    for bad in ({"page": "-1"}, {"page": "0"}, {"page": "abc"}, {"page_size": "abc"}, {"page_size": 0},
                {"page_size": 201}):
        answer = client.get(reverse("lab:api-samples"), bad)
        assert answer.status_code == 400 and "whole number" in answer.json()["error"], bad
    assert client.get(reverse("lab:api-cells"), {"page": "abc"}).status_code == 400


def test_sample_list_filters_by_sign_off_status(client, tech, django_user_model):
    hematologist = named_hematologist(django_user_model)
    signed = mark_signed(make_sample("S-SIGNED", types=("NEUTROPHIL",)), hematologist)
    make_sample("S-OPEN", types=("NEUTROPHIL",))
    reopened = mark_signed(make_sample("S-REOPENED", types=("NEUTROPHIL",)), hematologist)
    Sample.objects.filter(pk=reopened.pk).update(status=Sample.Status.REOPENED)

    def listed(status):
        rows = client.get(reverse("lab:api-samples"), {"status": status}).json()["results"]
        return {row["accession_number"]: row for row in rows}

    assert set(listed("signed")) == {"S-SIGNED"} and listed("signed")["S-SIGNED"]["result"] == "final"
    assert set(listed("unsigned")) == {"S-OPEN", "S-REOPENED"} and set(listed("reopened")) == {"S-REOPENED"}
    # A reopened sample's withdrawn signature is not passed off as the one in force.
    withdrawn = listed("reopened")["S-REOPENED"]
    assert withdrawn["result"] == "preliminary"
    assert (withdrawn["signed_by"], withdrawn["signed_at"]) == (None, None)
    assert listed("signed")["S-SIGNED"]["signed_by"] == signed.signed_by.get_username()
    refused = client.get(reverse("lab:api-samples"), {"status": "final"})
    assert refused.status_code == 400 and "status" in refused.json()["errors"]
    assert refused.json()["error"].startswith("Bad filter: status: Select a valid choice.")
    # One sample by its accession number, whatever the case it is typed in, as the upload form
    # takes "h26-0001" for H26-0001.
    one = client.get(reverse("lab:api-samples"), {"accession_number": "s-signed "}).json()["results"]
    assert [row["accession_number"] for row in one] == ["S-SIGNED"]


def test_an_information_system_polls_for_the_results_signed_since_its_last_look(client, tech,
                                                                                django_user_model):
    hematologist = named_hematologist(django_user_model)
    now = timezone.now()
    for accession, hours_ago in (("S-OLD", 30), ("S-LATER", 1), ("S-EARLIER", 3)):
        sample = mark_signed(make_sample(accession, types=("NEUTROPHIL",)), hematologist)
        Sample.objects.filter(pk=sample.pk).update(signed_at=now - timedelta(hours=hours_ago))
    make_sample("S-OPEN", types=("NEUTROPHIL",))

    def polled(**query):
        response = client.get(reverse("lab:api-samples"), query)
        return response.status_code, response.json()

    since = (now - timedelta(hours=4)).isoformat()
    status, body = polled(signed_since=since)
    # Oldest signature first, so the system files them in order and polls next from the last one.
    assert status == 200 and [row["accession_number"] for row in body["results"]] == ["S-EARLIER", "S-LATER"]
    assert body["results"][-1]["signed_at"] == (now - timedelta(hours=1)).isoformat()
    assert [row["accession_number"] for row in polled(signed_since=since, status="signed")[1]["results"]] == [
        "S-EARLIER", "S-LATER"]
    # "Z" for UTC, as most systems write it.
    zulu = (now - timedelta(hours=2)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [row["accession_number"] for row in polled(signed_since=zulu)[1]["results"]] == ["S-LATER"]

    # A signed_at copied into the URL unencoded: its "+" arrives as a space, and still means "+".
    last = body["results"][-1]["signed_at"]
    assert "+00:00" in last
    response = client.get(f"{reverse('lab:api-samples')}?signed_since={last}")
    assert [row["accession_number"] for row in response.json()["results"]] == ["S-LATER"]

    status, body = polled(signed_since="yesterday")
    assert status == 400 and body["error"] == (
        "Bad filter: signed_since: Enter a valid date/time, ISO 8601: 2026-12-05T06:00:00Z.")
    # ISO 8601 alone: Django's en-us formats read "08/12/2026" as the 12th of August, where a lab
    # writing the day first meant the 8th of December, and the poll missed or repeated results.
    for written in ("08/12/2026", "12/07/26 10:00", "Dec 7 2026"):
        assert polled(signed_since=written)[0] == 400, written
    # "Since the start" and "from the far future", past what a date holds once in UTC: every signed
    # result, and none (they answered 500).
    since_the_start = polled(signed_since="0001-01-01T00:00:00+00:01")[1]["results"]
    assert [row["accession_number"] for row in since_the_start] == ["S-OLD", "S-EARLIER", "S-LATER"]
    assert polled(signed_since="9999-12-31T23:00:00-01:00") == (200, polled(signed_since="9999-01-01")[1])
    assert polled(signed_since="9999-01-01")[1]["results"] == []
    status, body = polled(signed_since=since, status="unsigned")
    assert status == 400 and "leave status out, or give status=signed" in body["error"]
    # A result reopened for correction keeps the signed_at of the signature it withdrew: it leaves
    # the poll (its FHIR answers 409) until it is signed again.
    Sample.objects.filter(accession_number="S-EARLIER").update(status=Sample.Status.REOPENED)
    assert [row["accession_number"] for row in polled(signed_since=since)[1]["results"]] == ["S-LATER"]


def test_a_poll_s_pages_miss_no_result_reopened_or_signed_again_between_them(client, tech, django_user_model):
    # The two-user audit: the poll was paged by number; a result on page 1 reopened (or signed again)
    # while the system read page 1 moved every later one up a place, and the first of page 2 was
    # served on no page, nor, signed before the poll's last, by any poll after.
    hematologist = named_hematologist(django_user_model)
    start = timezone.now() - timedelta(hours=10)
    signed = {}
    for k in range(8):
        sample = mark_signed(make_sample(f"S-{k}", types=("NEUTROPHIL",)), hematologist)
        # S-3 and S-4 signed in the same instant: the page boundary falls between them.
        moment = start + timedelta(minutes=min(k, 3) if k <= 4 else k)
        Sample.objects.filter(pk=sample.pk).update(signed_at=moment)
        signed[sample.accession_number] = sample
    since = (start - timedelta(minutes=1)).isoformat()
    body = client.get(reverse("lab:api-samples"), {"signed_since": since, "page_size": 4}).json()
    filed = [row["accession_number"] for row in body["results"]]
    assert filed == ["S-0", "S-1", "S-2", "S-3"] and body["count"] == 8 and body["pages"] == 2
    assert "after=" in body["next"] and "page=" not in body["next"]

    # S-1 reopened and S-0 corrected and signed again while the system files page 1.
    Sample.objects.filter(pk=signed["S-1"].pk).update(status=Sample.Status.REOPENED)
    Sample.objects.filter(pk=signed["S-0"].pk).update(signed_at=timezone.now())
    # A page by number is refused, where it skipped S-4; the poll goes on from its next.
    refused = client.get(reverse("lab:api-samples"), {"signed_since": since, "page_size": 4, "page": 2})
    assert refused.status_code == 400 and "follow each answer's next" in refused.json()["error"]
    while body["next"]:
        body = client.get(body["next"]).json()
        filed += [row["accession_number"] for row in body["results"]]
    assert filed == ["S-0", "S-1", "S-2", "S-3", "S-4", "S-5", "S-6", "S-7", "S-0"]
    assert body["results"][-1]["result"] == "final" and body["previous"] is None
    # The next poll, from the last one's signed_at, lists that one again, as before.
    again = client.get(reverse("lab:api-samples"), {"signed_since": body["results"][-1]["signed_at"]})
    assert [row["accession_number"] for row in again.json()["results"]] == ["S-0"]
    alone = client.get(reverse("lab:api-samples"), {"after": signed["S-3"].pk})
    assert alone.status_code == 400 and "It goes with signed_since" in alone.json()["error"]


@pytest.mark.parametrize(("zone", "since", "moment"), [
    # The hour the clocks go back is read twice (02:30 CEST, then 02:30 CET): the earlier.
    ("Europe/Madrid", "2026-10-25T02:30:00", "2026-10-25T00:30:00+00:00"),
    # The hour they skip is never read: the earlier of what it can mean (02:30 as CEST).
    ("Europe/Madrid", "2026-03-29T02:30:00", "2026-03-29T00:30:00+00:00"),
    # A date alone means its midnight. Chile's clocks skip from midnight to 01:00: that day's
    # midnight is never read.
    ("America/Santiago", "2026-09-06", "2026-09-06T03:00:00+00:00"),
    # Cuba's go back from 01:00 to midnight: the hour after it is read twice.
    ("America/Havana", "2026-11-01", "2026-11-01T04:00:00+00:00"),
])
def test_a_time_without_an_offset_at_a_clock_change_reads_as_its_earlier_moment(
        client, tech, settings, django_user_model, zone, since, moment):
    """Django refused such a time as ambiguous or non-existent, and an information system polling in
    the site's zone (by time, or by date where the clocks change at midnight) stopped twice a year."""
    settings.TIME_ZONE = zone
    hematologist = named_hematologist(django_user_model)
    start = datetime.fromisoformat(moment)
    for accession, minutes in (("S-BEFORE", -1), ("S-AT", 0), ("S-AFTER", 59)):
        sample = mark_signed(make_sample(accession, types=("NEUTROPHIL",)), hematologist)
        Sample.objects.filter(pk=sample.pk).update(signed_at=start + timedelta(minutes=minutes))
    response = client.get(reverse("lab:api-samples"), {"signed_since": since})
    assert response.status_code == 200, response.json()
    assert [row["accession_number"] for row in response.json()["results"]] == ["S-AT", "S-AFTER"]


def test_a_date_without_an_offset_east_of_utc_reads_to_the_start(client, tech, settings, django_user_model):
    settings.TIME_ZONE = "Asia/Tokyo"
    mark_signed(make_sample("S-TOKYO", types=("NEUTROPHIL",)), named_hematologist(django_user_model))
    response = client.get(reverse("lab:api-samples"), {"signed_since": "0001-01-01"})
    assert response.status_code == 200
    assert [row["accession_number"] for row in response.json()["results"]] == ["S-TOKYO"]


def test_sample_detail_carries_formula_images_and_cells(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"))
    Cell.objects.filter(index=1).update(corrected_type="MONOCYTE", cell_type="MONOCYTE")
    data = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert data["accession_number"] == sample.accession_number and data["complete"]
    assert data["formula"]["total"] == 3
    assert data["formula"]["types"]["MONOCYTE"] == {"count": 1, "percent": 33.3, "range_95": [0.8, 90.6]}
    assert data["formula"]["below_manual_count"] is True
    assert data["formula"]["groups"]["POLYNUCLEAR"]["count"] == 2
    assert data["images"][0]["inference_runtime"] == "litert-int8"
    cells = data["images"][0]["cells"]
    assert [cell["cell_type"] for cell in cells] == ["NEUTROPHIL", "MONOCYTE", "NEUTROPHIL"]
    assert cells[1]["predicted_type"] == "LYMPHOCYTE" and cells[1]["corrected_type"] == "MONOCYTE"
    assert abs(sum(cells[0]["probabilities"].values()) - 1) < 1e-6
    assert cells[0]["box"] == [10, 20, 90, 100]
    assert [cell["in_differential"] for cell in cells] == [True, True, True]


def test_a_cell_says_whether_the_differential_counts_it(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "PLATELET", "LYMPHOCYTE"))
    Cell.objects.filter(index=2).update(is_partial=True)  # cut by the photograph's edge
    cells = client.get(reverse("lab:api-sample", args=[sample.pk])).json()["images"][0]["cells"]
    assert [c["counted"] for c in cells] == [True, True, True]  # none superseded
    assert [c["in_differential"] for c in cells] == [True, False, False]
    Cell.objects.filter(index=2).update(count_partial=True)  # a reviewer counted it in
    cells = client.get(reverse("lab:api-sample", args=[sample.pk])).json()["images"][0]["cells"]
    assert cells[2]["in_differential"] is True


def test_cell_list_filters_and_detail(client, tech):
    make_sample("A", types=("NEUTROPHIL", "EOSINOPHIL"))
    make_sample("B", types=("EOSINOPHIL",), confidence=0.5)
    listed = client.get(reverse("lab:api-cells"), {"cell_type": "EOSINOPHIL"}).json()
    assert listed["count"] == 2
    assert [row["accession_number"] for row in listed["results"]] == ["B", "A"]
    flagged = client.get(reverse("lab:api-cells"), {"needs_review": "yes"}).json()
    assert flagged["count"] == 1
    detail = client.get(listed["results"][0]["url"]).json()
    assert detail["id"] == listed["results"][0]["id"] and "probabilities" in detail
    assert detail["crop"].startswith("http://testserver/media/")


def test_a_reader_following_next_reaches_every_cell_past_the_counts_cap(client, tech, monkeypatch):
    # The cell list counts up to a cap (selectors.HISTORY_COUNT_CAP); its pages used to end at the
    # last one counted, so a system following "next" never read the oldest cells.
    from webapp import selectors

    monkeypatch.setattr(selectors, "HISTORY_COUNT_CAP", 3)
    make_sample("A", types=("NEUTROPHIL",) * 3)
    make_sample("B", types=("LYMPHOCYTE",) * 2)
    first = client.get(reverse("lab:api-cells"), {"page_size": 2}).json()
    assert (first["count"], first["count_capped"], first["pages"]) == (4, True, None)
    ids, body = [], first
    while True:
        ids += [row["id"] for row in body["results"]]
        if body["next"] is None:
            break
        body = client.get(body["next"]).json()
    assert sorted(ids) == sorted(Cell.objects.values_list("pk", flat=True)) and len(ids) == 5
    assert body["page"] == 3
    past = client.get(reverse("lab:api-cells"), {"page_size": 2, "page": 4})
    assert past.status_code == 404 and past.json() == {"error": "There is no page 4: the list has fewer."}


def test_a_filter_sent_empty_is_refused_not_ignored(client, tech):
    # A system building the address from a blank field sent ?accession_number= and got every
    # sample, unsigned ones too, the first of which it might file as the specimen it asked for.
    make_sample("S-1", types=("NEUTROPHIL",))
    make_sample("S-2", types=("NEUTROPHIL",))
    for path, name in (("lab:api-samples", "accession_number"), ("lab:api-samples", "signed_since"),
                       ("lab:api-samples", "q"), ("lab:api-cells", "accession"),
                       ("lab:api-cells", "date_from")):
        for blank in ("", "  ", "\u3000"):
            answer = client.get(reverse(path), {name: blank})
            assert answer.status_code == 400, (name, blank)
            assert answer.json() == {"error": f"Empty parameter: {name}: give each a value, or leave it out "
                                              "to filter nothing by it."}
    both = client.get(f"{reverse('lab:api-samples')}?status=&accession_number=")
    assert both.json()["error"].startswith("Empty parameters: accession_number, status:")
    assert client.get(reverse("lab:api-samples"), {"accession_number": "s-1"}).json()["count"] == 1


def test_cell_dates_are_read_as_iso_8601_alone(client, tech):
    make_sample("S-1", types=("NEUTROPHIL",))
    today = timezone.localdate().isoformat()
    assert client.get(reverse("lab:api-cells"), {"date_from": today}).json()["count"] == 1
    refused = client.get(reverse("lab:api-cells"), {"date_from": "08/12/2026"})
    assert refused.status_code == 400
    assert refused.json()["error"] == "Bad filter: date_from: Enter a date as YYYY-MM-DD (ISO 8601)."


def test_cell_list_reports_bad_filters(client, tech):
    response = client.get(reverse("lab:api-cells"), {"confidence_min": "abc"})
    assert response.status_code == 400 and "confidence_min" in response.json()["errors"]
    assert response.json()["error"] == "Bad filter: confidence_min: Enter a whole number."


def test_api_is_read_only(client, tech):
    sample = make_sample()
    assert client.post(reverse("lab:api-samples")).status_code == 405
    assert client.delete(reverse("lab:api-sample", args=[sample.pk])).status_code == 405


def test_csv_export(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    response = client.get(reverse("lab:sample-export", args=[sample.pk]))
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    assert "formula,count,percent,percent_low_95,percent_high_95" in text
    assert "NEUTROPHIL,1,50.0,1.2,98.8" in text and "MONONUCLEAR,1,50.0,1.2,98.8" in text
    assert "TOTAL,2,100.0" in text
    assert "p_EOSINOPHIL" in text
    assert "result,preliminary" in text and "signed_by" not in text
    assert "target_count,100" in text


def test_csv_export_says_who_signed_the_result(client, tech, django_user_model):
    hematologist = named_hematologist(django_user_model)
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    sample.below_target_reason = "Leukopenic sample."
    mark_signed(sample, hematologist, times=1)
    # The FHIR export's DiagnosticReport status codes, which the report's banner spells out.
    assert ["result", "final"] in _exported_rows(client, sample)
    mark_signed(sample, hematologist, times=2)
    rows = _exported_rows(client, sample)
    assert ["result", "amended"] in rows
    assert ["signed_by", hematologist.get_username()] in rows
    assert ["signed_below_target_reason", "Leukopenic sample."] in rows


def _exported_rows(client, sample):
    response = client.get(reverse("lab:sample-export", args=[sample.pk]))
    # Read as a spreadsheet reads it: the leading byte-order mark says UTF-8, and is no text.
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


@pytest.mark.parametrize("text", ["=2+5+cmd|calc!A0", "+SUM(A1)", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_csv_export_keeps_user_text_from_becoming_a_formula(client, tech, text):
    sample = make_sample(types=("NEUTROPHIL",))
    Sample.objects.filter(pk=sample.pk).update(accession_number=text, note=text)
    SmearImage.objects.filter(sample=sample).update(original_filename=f"{text}.jpg")
    rows = _exported_rows(client, sample)
    assert rows[0] == ["accession_number", "'" + text]
    assert rows[1] == ["note", "'" + text]
    header = rows.index(next(row for row in rows if row[:1] == ["cell_id"]))
    assert rows[header + 1][1] == f"'{text}.jpg"


def test_csv_export_leaves_ordinary_text_and_numbers_alone(client, tech):
    sample = make_sample("H26-7", types=("NEUTROPHIL",))
    rows = _exported_rows(client, sample)
    assert rows[0] == ["accession_number", "H26-7"]
    cell_row = rows[-1]
    assert cell_row[1] == "H26-7.png" and cell_row[10] == "0.9000"


def test_csv_export_groups_cells_by_the_type_the_formula_counts(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE"))
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    for cell, label in zip(cells[1:], ("LYMPHOCYTE", "BASOPHIL", "ARTEFACT"), strict=True):
        review_cell(cell, label, tech)
    rows = _exported_rows(client, sample)
    header = next(row for row in rows if row[:1] == ["cell_id"])
    exported = [dict(zip(header, row, strict=True)) for row in rows[rows.index(header) + 1:]]
    assert [(row["cell_type"], row["binary_call"], row["predicted_binary_call"]) for row in exported] == [
        ("NEUTROPHIL", "POLYNUCLEAR", "POLYNUCLEAR"),
        ("LYMPHOCYTE", "MONONUCLEAR", "POLYNUCLEAR"),  # corrected: counted as a lymphocyte
        ("BASOPHIL", "POLYNUCLEAR", "MONONUCLEAR"),  # a basophil is a polynuclear granulocyte
        ("ARTEFACT", "", "MONONUCLEAR"),  # no white cell, no group
    ]


def test_the_web_process_never_imports_tensorflow():
    code = (
        "import django, sys; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import webapp.views.lab, webapp.views.api, webapp.admin, webapp.selectors;"
        "print(sorted(m for m in ('tensorflow', 'keras', 'classifier.inference') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings"})
    assert result.stdout.strip() == "[]"


def test_the_sample_list_says_which_results_are_signed_and_where_their_fhir_is(client, tech,
                                                                              django_user_model):
    from django.utils import timezone

    make_sample("S-OPEN", types=("NEUTROPHIL",))
    signed = make_sample("S-DONE", types=("NEUTROPHIL",))
    hema = django_user_model.objects.create_user("hema")
    Sample.objects.filter(pk=signed.pk).update(status=Sample.Status.SIGNED, signed_by=hema,
                                               signed_at=timezone.now(), times_signed=1)
    rows = {row["accession_number"]: row for row in client.get(reverse("lab:api-samples")).json()["results"]}
    assert rows["S-OPEN"]["status"] == "in_progress" and rows["S-OPEN"]["fhir"] is None
    assert rows["S-DONE"]["status"] == "signed" and rows["S-DONE"]["signed_by"] == "hema"
    assert rows["S-DONE"]["fhir"].endswith(reverse("lab:api-sample-fhir", args=[signed.pk]))
    assert client.get(rows["S-DONE"]["fhir"]).status_code == 200
    detail = client.get(reverse("lab:api-sample", args=[signed.pk])).json()
    assert (detail["status"], detail["fhir"]) == ("signed", rows["S-DONE"]["fhir"])


def test_the_api_answers_other_methods_405_and_head_like_get(tech):
    # A POST came back 403 "opened before the last sign-in" (the CSRF check, which Django's test
    # client skips unless asked), telling a laboratory system to sign in again; HEAD was refused.
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(tech)
    sample = make_sample("S-HEAD", types=("NEUTROPHIL",))
    for path in (reverse("lab:api-samples"), reverse("lab:api-sample", args=[sample.pk]),
                 reverse("lab:api-cells"), reverse("lab:api-sample-fhir", args=[sample.pk])):
        for method in (client.post, client.delete, client.put):
            response = method(path)
            assert response.status_code == 405 and "error" in response.json(), (path, method)
    assert client.head(reverse("lab:api-samples")).status_code == 200


def test_a_call_of_no_white_cell_has_no_mononuclear_or_polynuclear_group(client, tech):
    from classifier.labels import EIGHT_CLASSES
    from tests.webapp.lab_factories import make_version

    sample = make_sample(types=("PLATELET", "NEUTROPHIL", "LYMPHOCYTE"), version=make_version(EIGHT_CLASSES))
    # As the pipeline stores it: the leukocyte types' few percent summed still make a "call".
    Cell.objects.filter(image__sample=sample).update(binary_call="POLYNUCLEAR")
    platelet, neutrophil, lymphocyte = Cell.objects.filter(image__sample=sample).order_by("index")
    review_cell(neutrophil, "ERYTHROBLAST", tech)

    def api(cell):
        row = client.get(reverse("lab:api-cell", args=[cell.pk])).json()
        return row["cell_type"], row["binary_call"], row["predicted_binary_call"]

    assert api(platelet) == ("PLATELET", None, None)
    assert api(neutrophil) == ("ERYTHROBLAST", None, "POLYNUCLEAR")  # the network called a neutrophil
    assert api(lymphocyte) == ("LYMPHOCYTE", "MONONUCLEAR", "POLYNUCLEAR")  # its summed probabilities

    rows = _exported_rows(client, sample)
    header = next(row for row in rows if row[:1] == ["cell_id"])
    exported = [dict(zip(header, row, strict=True)) for row in rows[rows.index(header) + 1:]]
    assert [(row["binary_call"], row["predicted_binary_call"]) for row in exported] == [
        ("", ""), ("", "POLYNUCLEAR"), ("MONONUCLEAR", "POLYNUCLEAR")]

    page = client.get(reverse("lab:cell-detail", args=[platelet.pk])).content.decode()
    assert "Mononuclear or polynuclear" not in page
    assert "Mononuclear or polynuclear (probabilities summed): Polynuclear" in client.get(
        reverse("lab:cell-detail", args=[lymphocyte.pk])).content.decode()


def test_a_parameter_a_list_does_not_take_is_refused_not_ignored(client, tech):
    make_sample("H26-0301", types=("NEUTROPHIL",))
    make_sample("H26-0302", types=("NEUTROPHIL",))
    samples = reverse("lab:api-samples")

    misspelt = client.get(samples, {"acession_number": "H26-0301"})
    assert misspelt.status_code == 400
    assert misspelt.json()["error"].startswith("Unknown parameter: acession_number. This list takes ")
    assert "accession_number" in misspelt.json()["error"]
    assert client.get(reverse("lab:api-cells"), {"type": "MONOCYTE"}).status_code == 400
    # ?q= finds by a piece of the accession number, as the sample list's search box does.
    found = client.get(samples, {"q": "0302", "page_size": 10}).json()["results"]
    assert [row["accession_number"] for row in found] == ["H26-0302"]


@pytest.mark.parametrize("since", ["2026-02-30T10:00:00", "2026-13-01T10:00", "2026-03-01 24:30"])
def test_a_time_without_an_offset_that_no_calendar_holds_is_refused_as_a_bad_filter(client, tech, since):
    """Read as the site's zone before Django's own parsing, a well-formed time of no calendar (a 30th
    of February) raised ValueError out of the form: a 500 where any other bad time answers 400."""
    response = client.get(reverse("lab:api-samples"), {"signed_since": since})
    assert response.status_code == 400
    assert response.json()["error"].startswith("Bad filter: signed_since: Enter a valid date/time, ISO 8601")


def test_an_accession_number_typed_in_full_width_finds_its_sample(client, tech):
    """A Japanese input method's "ｈ２６－０３０１" is the label H26-0301, in every search."""
    make_sample("H26-0301", types=("NEUTROPHIL",))
    make_sample("H26-0302", types=("NEUTROPHIL",))
    samples = reverse("lab:api-samples")
    for query in ({"accession_number": "ｈ２６－０３０１"}, {"q": "０３０１"}):
        found = client.get(samples, query).json()["results"]
        assert [row["accession_number"] for row in found] == ["H26-0301"], query
    cells = client.get(reverse("lab:api-cells"), {"accession": "ｈ２６－０３０１"}).json()["results"]
    assert {row["accession_number"] for row in cells} == {"H26-0301"}
