"""The sample list says, per sample, how many leukocytes its formula counts and how many flagged calls
still wait for a reviewer, so staff see at a glance which reports are ready."""

import re

import pytest
from django.urls import reverse

from tests.webapp.lab_factories import make_sample, make_version
from webapp.models import Cell, Sample
from webapp.selectors import sample_cell_counts

pytestmark = pytest.mark.django_db


def test_counts_leave_out_artefacts_reviewed_flags_and_superseded_calls(client, django_user_model):
    old = make_version()
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE"), confidence=0.6, version=old)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    Cell.objects.filter(pk=cells[0].pk).update(corrected_type=Cell.ARTEFACT, cell_type=Cell.ARTEFACT)
    Cell.objects.filter(pk=cells[1].pk).update(corrected_type="LYMPHOCYTE")
    quiet = make_sample(accession="Q-1", types=("NEUTROPHIL",), confidence=0.95, version=old)
    # A later version re-classified Q-1 and found two cells; its one old call no longer counts.
    new = make_version()
    image = quiet.images.get()
    for index in range(2):
        Cell.objects.create(image=image, model_version=new, index=index, x0=0, y0=0, x1=9, y1=9,
                            predicted_type="EOSINOPHIL", confidence=0.9, binary_call="POLYNUCLEAR",
                            cell_type="EOSINOPHIL")
    image.model_version = new
    image.save(update_fields=["model_version"])
    empty = make_sample(accession="E-1", types=())

    counts = sample_cell_counts([sample.pk, quiet.pk, empty.pk])
    assert (counts[sample.pk].leukocytes, counts[sample.pk].awaiting_review) == (2, 1)
    assert (counts[quiet.pk].leukocytes, counts[quiet.pk].awaiting_review) == (2, 0)
    assert empty.pk not in counts

    client.force_login(django_user_model.objects.create_user("t"))
    page = client.get(reverse("lab:sample-list")).content.decode()
    leukocytes = re.findall(r'data-role="leukocytes">(\d+)<', page)
    assert leukocytes == ["0", "2", "2"]  # newest sample first: E-1, Q-1, H26-0001
    assert page.count('data-role="awaiting-review"><span class="badge flag"') == 1


def test_the_list_narrows_to_a_sign_off_state_and_keeps_it_across_pages(client, django_user_model):
    version = make_version()
    for n in range(26):
        make_sample(accession=f"OPEN-{n:02d}", types=("NEUTROPHIL",), version=version)
    signed = make_sample(accession="DONE-1", types=("NEUTROPHIL",), version=version)
    Sample.objects.filter(pk=signed.pk).update(status=Sample.Status.SIGNED)
    reopened = make_sample(accession="AGAIN-1", types=("NEUTROPHIL",), version=version)
    Sample.objects.filter(pk=reopened.pk).update(status=Sample.Status.REOPENED)
    client.force_login(django_user_model.objects.create_user("t"))

    def listed(**query):
        page = client.get(reverse("lab:sample-list"), query).content.decode()
        return re.findall(r"<strong>([A-Z]+-\d+)</strong>", page), page

    names, _ = listed(status="signed")
    assert names == ["DONE-1"]
    names, page = listed(status="unsigned")
    assert "DONE-1" not in names and names[0] == "AGAIN-1" and len(names) == 25
    assert "status=unsigned&amp;page=2" in page  # the next page keeps the filter
    assert listed(status="reopened", q="again")[0] == ["AGAIN-1"]
    names, page = listed(status="signed", q="open")
    assert names == [] and "No sample matches this search." in page
    # An unknown status filters nothing, and the page says so: it listed every sample unannounced,
    # as if they all stood so. The filters read still apply.
    names, page = listed(status="no-such-state")
    assert len(names) == 25 and 'name="status"' in page
    assert ('data-role="filters-left-out">Left out: Status (Select a valid choice. no-such-state is not one '
            'of the available choices.) The samples below are filtered on the other filters only.') in page
    names, page = listed(status="no-such-state", q="again")
    assert names == ["AGAIN-1"] and "Left out: Status" in page
    assert "filters-left-out" not in listed(status="signed")[1]
