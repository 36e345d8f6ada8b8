"""The home page's work lists page on the sample list: every sample awaiting review, and every one a
hematologist can sign now, oldest first, beyond the home page's newest ten of the last month. The
list's rule is written in SQL; it agrees with the sign-off's own refusals on every kind of sample."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.webapp.lab_factories import make_sample, make_version, mark_signed, with_role
from webapp.models import AddedCellRequest, Cell, Sample, SmearImage
from webapp.selectors import samples_waiting_for_signature_filter, sign_off_facts_for

pytestmark = pytest.mark.django_db


def lab_of_every_state(django_user_model):
    """{name: sample} in each state the sign-off tells apart."""
    version = make_version()
    signer = with_role(django_user_model.objects.create_user("hema-lab"), "hematologist")
    made = {name: make_sample(f"W-{name}", types=types, version=version) for name, types in {
        "ready": ("NEUTROPHIL",) * 3, "below_target": ("LYMPHOCYTE",), "unidentified": ("UNIDENTIFIED",
                                                                                      "MONOCYTE"),
        "flagged": ("NEUTROPHIL", "EOSINOPHIL"), "queued": ("NEUTROPHIL",), "failed": ("NEUTROPHIL",),
        "box_waiting": ("NEUTROPHIL",), "edge_only": ("NEUTROPHIL",), "platelets_only": ("PLATELET",),
        "signed": ("NEUTROPHIL",), "reopened": ("NEUTROPHIL",), "superseded_flag": ("NEUTROPHIL",),
        # A binary network's calls beside typed ones: the type percentages would leave them out. A
        # binary network's calls beside a blast a reviewer named are its formula as it should be.
        "mixed_calls": ("NEUTROPHIL", "MONONUCLEAR", "POLYNUCLEAR"),
        "binary_and_blast": ("MONONUCLEAR", "POLYNUCLEAR", "BLAST"),
    }.items()}
    made["no_photograph"] = Sample.objects.create(accession_number="W-none")
    Sample.objects.filter(pk__in=[made[name].pk for name in ("ready", "signed", "reopened", "mixed_calls",
                                                             "binary_and_blast")]).update(target_count=3)
    Cell.objects.filter(image__sample=made["flagged"], cell_type="EOSINOPHIL").update(needs_review=True)
    SmearImage.objects.filter(sample=made["queued"]).update(status=SmearImage.Status.QUEUED)
    SmearImage.objects.filter(sample=made["failed"]).update(status=SmearImage.Status.FAILED)
    AddedCellRequest.objects.create(image=made["box_waiting"].images.get(), x0=1, y0=1, x1=40, y1=40)
    Cell.objects.filter(image__sample=made["edge_only"]).update(is_partial=True)
    mark_signed(made["signed"], signer)
    mark_signed(made["reopened"], signer)
    Sample.objects.filter(pk=made["reopened"].pk).update(status=Sample.Status.REOPENED)
    # A flagged call of a version the photograph was classified away from waits for no one.
    image = made["superseded_flag"].images.get()
    Cell.objects.create(image=image, model_version=make_version(status="ready"), index=0, x0=0, y0=0,
                        x1=9, y1=9, predicted_type="EOSINOPHIL", confidence=0.4, binary_call="POLYNUCLEAR",
                        cell_type="EOSINOPHIL", needs_review=True)
    return made


def test_the_sql_rule_agrees_with_the_sign_off_refusals(django_user_model):
    made = lab_of_every_state(django_user_model)
    facts = sign_off_facts_for(sample.pk for sample in made.values())
    by_refusals = {name for name, sample in made.items()
                   if facts[sample.pk].status != Sample.Status.SIGNED and facts[sample.pk].leukocytes
                   and all(refusal.overridable for refusal in facts[sample.pk].refusals())}
    by_sql = set(Sample.objects.filter(samples_waiting_for_signature_filter()).values_list(
        "accession_number", flat=True))
    assert by_sql == {f"W-{name}" for name in by_refusals}
    assert by_refusals == {"ready", "below_target", "unidentified", "reopened", "superseded_flag",
                           "binary_and_blast"}
    # The clinical audit: 10 cells of a four-type network and 10 of the binary one gave Neutrophil 25%,
    # Lymphocyte 25%, the rows adding up to 50%, and the sample could be signed.
    refusals = facts[made["mixed_calls"].pk].refusals()
    (mixed,) = [refusal for refusal in refusals if refusal.code == "mixed_calls"]
    assert mixed.message == ("2 cells were called only mononuclear or polynuclear (a binary network's calls) "
                             "beside 1 cell called by type: the type percentages would leave them out. "
                             "Ask an administrator to re-classify the sample with one version (Model "
                             "versions, Re-classify).")


def test_every_sample_waiting_is_listed_oldest_first_beyond_the_home_pages_ten(client, django_user_model):
    hema = with_role(django_user_model.objects.create_user("hema"), "hematologist")
    version = make_version()
    waiting = [make_sample(f"S-{n:02}", types=("NEUTROPHIL",), version=version) for n in range(12)]
    old = make_sample("S-old", types=("NEUTROPHIL",), version=version)
    Sample.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=60))
    make_sample("S-flagged", types=("NEUTROPHIL",), version=version, confidence=0.5)
    client.force_login(hema)

    home = client.get(reverse("home")).content.decode()
    assert "12 samples received in the last 30 days are classified and reviewed; the 10 newest" in home
    every = f'{reverse("lab:sample-list")}?status=to_sign&amp;order=oldest'
    assert f'href="{every}" data-role="every-awaiting-signature"' in home
    assert "S-old" not in home  # received two months ago: on the list below, not on the home page

    page = client.get(reverse("lab:sample-list"), {"status": "to_sign", "order": "oldest"}).content.decode()
    listed = [name for name in ["S-old", *(sample.accession_number for sample in waiting), "S-flagged"]
              if name in page]
    assert listed == ["S-old", *(sample.accession_number for sample in waiting)]
    assert page.index("S-old") < page.index("S-00") < page.index("S-11")
    review = client.get(reverse("lab:sample-list"), {"status": "to_review"}).content.decode()
    assert "S-flagged" in review and "S-00" not in review


def test_the_api_lists_the_same_work(client, django_user_model):
    from webapp.services.api_tokens import create_token

    lis = django_user_model.objects.create_user("lis")
    _, key = create_token(lis, "test")
    version = make_version()
    first, second = (make_sample(f"A-{n}", types=("NEUTROPHIL",), version=version) for n in (1, 2))
    make_sample("A-flagged", types=("NEUTROPHIL",), version=version, confidence=0.5)
    answer = client.get(reverse("lab:api-samples"), {"status": "to_sign", "order": "oldest"},
                        HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert [row["accession_number"] for row in answer["results"]] == ["A-1", "A-2"]


def test_the_oldest_first_list_pages_forward_to_newer_samples_and_badges_what_is_left(client,
                                                                                      django_user_model):
    hema = with_role(django_user_model.objects.create_user("hema"), "hematologist")
    version = make_version()
    for n in range(27):
        make_sample(f"P-{n:02}", types=("NEUTROPHIL",), version=version)
    client.force_login(hema)
    first = client.get(reverse("lab:sample-list"), {"status": "to_sign", "order": "oldest"}).content.decode()
    assert "P-00" in first and "P-26" not in first
    assert ">Newer →</a>" in first and "Older →" not in first
    second = client.get(reverse("lab:sample-list"),
                        {"status": "to_sign", "order": "oldest", "page": 2}).content.decode()
    assert "P-26" in second and ">← Older</a>" in second
    # Listed as waiting for a signature, each below its target of 100: the signer decides, and
    # the badge says on what, as the home page's list does.
    assert first.count(">Below the target</span>") == 25 and ">In progress<" not in first
