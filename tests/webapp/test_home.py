"""The home page and the navigation around every page."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from classifier.labels import EIGHT_CLASSES
from tests.webapp.lab_factories import make_sample, make_version, mark_signed, with_role
from webapp.models import Cell, ModelVersion, Sample, SmearImage
from webapp.services.review import review_cell

pytestmark = pytest.mark.django_db


def test_every_page_links_to_changing_ones_password(client, tech):
    for name in ("home", "lab:sample-list", "lab:history"):
        body = client.get(reverse(name)).content.decode()
        assert f'href="{reverse("password_change")}"' in body


def test_home_lists_the_samples_awaiting_review(client, tech):
    version = make_version()
    unsure = make_sample("H26-10", types=("NEUTROPHIL", "LYMPHOCYTE"), version=version, confidence=0.5)
    reviewed = make_sample("H26-11", types=("MONOCYTE",), version=version, confidence=0.5)
    make_sample("H26-12", types=("NEUTROPHIL",), version=version, confidence=0.95)  # nothing flagged
    review_cell(Cell.objects.get(image__sample=reviewed), "MONOCYTE", tech)
    # Cells of a version the photograph was later re-classified away from are no longer counted.
    old = make_version(status="ready")
    Cell.objects.create(image=unsure.images.get(), model_version=old, index=0, x0=0, y0=0, x1=9, y1=9,
                        predicted_type="EOSINOPHIL", confidence=0.4, binary_call="POLYNUCLEAR",
                        cell_type="EOSINOPHIL", needs_review=True)
    SmearImage.objects.create(sample=reviewed, image="smears/q.png", original_filename="q.png", width=64,
                              height=64, file_size=1, checksum="1" * 64)
    # A sample from two months ago waits too, but the landing page looks at recent work only.
    stale = make_sample("H25-99", types=("NEUTROPHIL",), version=version, confidence=0.5)
    Sample.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(days=60))

    response = client.get(reverse("home"))
    assert response.status_code == 200
    assert [(row["accession"], row["flagged"]) for row in response.context["awaiting_review"]] == [
        ("H26-10", 2)]
    body = response.content.decode()
    assert "1 sample received in the last 30 days has cells the network was unsure of" in body
    assert f'href="{reverse("lab:sample-detail", args=[unsure.pk])}"' in body
    assert "1 photograph waiting for or being classified." in body
    assert f'href="{reverse("lab:upload")}"' in body and f'href="{reverse("models:list")}"' not in body


def test_home_does_not_repeat_the_navigation_bar(client, django_user_model):
    lead = with_role(with_role(django_user_model.objects.create_user("lead", is_staff=True), "technologist"),
                     "admin")
    client.force_login(lead)
    body = client.get(reverse("home")).content.decode()
    assert "No sample received in the last 30 days has a cell waiting for review." in body
    # Staff reach the model versions from the bar; each of its links appears once on the page.
    for name in ("lab:upload", "lab:sample-list", "lab:history", "models:list"):
        assert body.count(f'href="{reverse(name)}"') == 1, name
    # An administrator without a lab role is not offered the upload it would be refused.
    lead.groups.clear()
    with_role(lead, "admin")
    body = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("lab:upload")}"' not in body and f'href="{reverse("models:list")}"' in body


def test_an_administrator_without_a_lab_role_is_shown_the_network_not_a_review_queue(
        client, django_user_model):
    # Its home listed the samples awaiting review, which it may not review.
    make_sample("H-1", version=make_version(status=ModelVersion.Status.READY), confidence=0.5)  # unsure
    lead = with_role(django_user_model.objects.create_user("lead", is_staff=True), "admin")
    client.force_login(lead)
    body = client.get(reverse("home")).content.decode()
    assert 'data-role="awaiting-review"' not in body and "H-1" not in body
    # Nor told to start a sample, which it may not (the roles audit).
    assert "Start a sample" not in body and "Find a sample or look through every cell" in body
    assert ("<strong>No model version is active</strong>: new photographs wait to be classified until one "
            "is activated.") in body
    serving = make_version(status=ModelVersion.Status.ACTIVE)
    training = make_version(status=ModelVersion.Status.TRAINING)
    body = client.get(reverse("home")).content.decode()
    assert (f'<a href="{reverse("models:detail", args=[serving.pk])}">v{serving.pk}</a> classifies the '
            f'photographs of new samples. <a href="{reverse("models:detail", args=[training.pk])}">'
            f'v{training.pk}</a> is training.') in body
    # A technologist's home is as before.
    with_role(lead, "technologist")
    body = client.get(reverse("home")).content.decode()
    assert 'data-role="awaiting-review"' in body and "H-1" in body and 'data-role="network"' not in body
    assert "Start a sample, find one or look through every cell" in body


def test_home_lists_for_a_signer_the_samples_only_a_signature_waits_for(client, django_user_model, tech):
    hematologist = with_role(django_user_model.objects.create_user("hema", password="a-long-passphrase-1"),
                             "hematologist")
    version = make_version()
    ready = make_sample("H26-20", types=("NEUTROPHIL", "LYMPHOCYTE"), version=version, confidence=0.95)
    Sample.objects.filter(pk=ready.pk).update(target_count=2)
    short = make_sample("H26-21", types=("MONOCYTE",), version=version, confidence=0.95)
    unreviewed = make_sample("H26-22", types=("NEUTROPHIL",), version=version, confidence=0.5)
    classifying = make_sample("H26-23", types=("NEUTROPHIL",), version=version, confidence=0.95)
    SmearImage.objects.create(sample=classifying, image="smears/q.png", original_filename="q.png",
                              width=64, height=64, file_size=1, checksum="1" * 64)
    signed = make_sample("H26-24", types=("NEUTROPHIL",), version=version, confidence=0.95)
    Sample.objects.filter(pk=signed.pk).update(status=Sample.Status.SIGNED)
    nothing_counted = make_sample("H26-25", types=("PLATELET",), version=make_version(EIGHT_CLASSES),
                                  confidence=0.95)

    client.force_login(hematologist)
    section = client.get(reverse("home")).content.decode().split('data-role="awaiting-signature"')[1]
    section = section.split("</section>")[0]
    listed = [sample.accession_number for sample in (ready, short, unreviewed, classifying, signed,
                                                      nothing_counted)
              if f">{sample.accession_number}</a>" in section]
    assert listed == ["H26-20", "H26-21"]
    assert section.index("H26-21") < section.index("H26-20")  # newest first
    assert "2 of 2" in section and "Ready to sign." in section
    assert "1 of 100" in section and "Below the target: signing needs a reason." in section

    client.force_login(tech)  # a technologist does not sign: no such section
    assert 'data-role="awaiting-signature"' not in client.get(reverse("home")).content.decode()


def test_home_shows_a_results_reader_the_signed_results_not_a_review_queue(client, django_user_model, tech):
    version = make_version()
    make_sample("H26-30", types=("NEUTROPHIL",), version=version, confidence=0.5)  # waits for review
    first = mark_signed(make_sample("H26-31", types=("NEUTROPHIL",), version=version), tech)
    amended = mark_signed(make_sample("H26-32", types=("LYMPHOCYTE",), version=version), tech, times=2)
    Sample.objects.filter(pk=first.pk).update(signed_at=timezone.now() - timedelta(hours=2))
    old = mark_signed(make_sample("H25-33", types=("MONOCYTE",), version=version), tech)
    Sample.objects.filter(pk=old.pk).update(signed_at=timezone.now() - timedelta(days=60))
    reader = django_user_model.objects.create_user("lis", password="a-long-passphrase-1")
    client.force_login(reader)

    response = client.get(reverse("home"))

    body = response.content.decode()
    assert "Awaiting review" not in body and "H26-30" not in body
    assert [sample.accession_number for sample in response.context["signed"]] == ["H26-32", "H26-31"]
    assert "2 samples were signed in the last 30 days" in body and "H25-33" not in body
    assert f'href="{reverse("lab:sample-report", args=[amended.pk])}"' in body
    assert f'href="{reverse("lab:api-sample-fhir", args=[first.pk])}"' in body
    assert "Amended" in body and "Final" in body
    assert f'href="{reverse("lab:upload")}"' not in body


def test_home_lists_reopened_results_with_their_reason(client, tech, django_user_model):
    # The workflow audit: a result reopened with a reason showed on no technologist's home page
    # ("No cell waits for review"), and on the hematologist's only as one below its target.
    from webapp.services.sign_off import reopen_sample

    signer = with_role(django_user_model.objects.create_user("hema"), "hematologist")
    sample = make_sample("H26-0700", types=("NEUTROPHIL",))
    mark_signed(sample, signer)
    client.force_login(tech)
    assert 'data-role="reopened"' not in client.get(reverse("home")).content.decode()
    reopen_sample(Sample.objects.get(pk=sample.pk), signer, "Cell 1 is a basophil, not a lymphocyte.")
    for viewer in (tech, signer):
        client.force_login(viewer)
        page = client.get(reverse("home")).content.decode()
        assert 'data-role="reopened"' in page and "Reopened, to correct" in page
        assert f'href="{reverse("lab:sample-detail", args=[sample.pk])}#sign-off">H26-0700</a>' in page
        assert "<bdi>hema</bdi>, " in page and "“<bdi>Cell 1 is a basophil, not a lymphocyte.</bdi>”" in page
    # An administrator without a lab role corrects nothing: the list is not its to act on.
    lead = with_role(django_user_model.objects.create_user("lead", is_staff=True), "admin")
    client.force_login(lead)
    page = client.get(reverse("home")).content.decode()
    assert 'data-role="reopened"' not in page and "H26-0700" not in page


def test_a_right_to_left_name_and_reason_are_isolated_from_the_dates_beside_them(client, tech,
                                                                                   django_user_model):
    """"أحمد, 2026-12-07 00:02" in a left-to-right cell showed as "00:02 07-12-2026 ,أحمد": the date
    beside an Arabic name is taken into its right-to-left run and reordered. Each is isolated (bdi)."""
    from webapp.services.sign_off import reopen_sample

    signer = with_role(django_user_model.objects.create_user("أحمد"), "hematologist")
    sample = mark_signed(make_sample("H26-0790", types=("NEUTROPHIL",)), signer)
    reopen_sample(Sample.objects.get(pk=sample.pk), signer, "إعادة الفحص 2 خلايا")
    page = client.get(reverse("home")).content.decode()
    assert "<bdi>أحمد</bdi>, " in page and "“<bdi>إعادة الفحص 2 خلايا</bdi>”" in page
