"""The admin: deleting a photograph or a sample takes its stored files along; cells and their reviews,
the audit trail, can be neither deleted nor edited on their own."""

from pathlib import Path

import pytest
from django.urls import reverse

from tests.webapp.lab_factories import make_sample, mark_signed
from webapp.models import Cell, CellReview, Sample, SmearImage
from webapp.services.review import review_cell

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1"))
    return client


def stored_files(sample, media_root):
    """Write every file the sample's records name, as classification would have; return their paths."""
    for pk in Cell.objects.filter(image__sample=sample).values_list("pk", flat=True):
        Cell.objects.filter(pk=pk).update(window=f"windows/{pk}.png", heatmap=f"heatmaps/{pk}.png")
    names = [image.image.name for image in sample.images.all()]
    for cell in Cell.objects.filter(image__sample=sample):
        names += [cell.crop.name, cell.window.name, cell.heatmap.name]
    paths = [Path(media_root) / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"picture")
    return paths


def test_deleting_a_photograph_removes_its_files_and_keeps_the_others(
        admin_client, isolated_media_root, django_capture_on_commit_callbacks):
    doomed = make_sample("IMG-1", types=("NEUTROPHIL", "LYMPHOCYTE"))
    kept = make_sample("IMG-2", types=("MONOCYTE",))
    doomed_files = stored_files(doomed, isolated_media_root)
    kept_files = stored_files(kept, isolated_media_root)
    assert len(doomed_files) == 7
    image = doomed.images.get()
    url = reverse("admin:webapp_smearimage_delete", args=[image.pk])
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and not confirm.context["perms_lacking"]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not SmearImage.objects.filter(pk=image.pk).exists()
    assert not Cell.objects.filter(image__sample=doomed).exists()
    assert not any(path.exists() for path in doomed_files)
    assert all(path.exists() for path in kept_files)


@pytest.mark.parametrize("model", ["smearimage", "sample"])
def test_the_bulk_delete_action_removes_files_too(admin_client, isolated_media_root, model,
                                                  django_capture_on_commit_callbacks):
    samples = [make_sample(f"BULK-{n}", types=("NEUTROPHIL",)) for n in range(2)]
    files = [path for sample in samples for path in stored_files(sample, isolated_media_root)]
    review_cell(Cell.objects.filter(image__sample=samples[0]).first(), "LYMPHOCYTE", None)
    records = SmearImage.objects.all() if model == "smearimage" else Sample.objects.all()
    changelist = reverse(f"admin:webapp_{model}_changelist")
    selection = {"action": "delete_selected", "_selected_action": [record.pk for record in records]}
    confirm = admin_client.post(changelist, selection)
    assert confirm.status_code == 200 and not confirm.context["perms_lacking"]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(changelist, {**selection, "post": "yes"})
    assert response.status_code == 302
    assert not SmearImage.objects.exists() and not Cell.objects.exists() and not CellReview.objects.exists()
    assert not any(path.exists() for path in files)


@pytest.mark.parametrize("model", ["smearimage", "sample"])
def test_the_bulk_delete_leaves_signed_samples_out_and_says_why(admin_client, django_user_model, model,
                                                                django_capture_on_commit_callbacks):
    signed, open_ = make_sample("SIGNED-1"), make_sample("OPEN-1")
    mark_signed(signed, django_user_model.objects.get(username="boss"))
    records = SmearImage.objects.all() if model == "smearimage" else Sample.objects.all()
    changelist = reverse(f"admin:webapp_{model}_changelist")
    selection = {"action": "delete_selected", "_selected_action": [record.pk for record in records]}
    confirm = admin_client.post(changelist, selection)
    page = confirm.content.decode()
    # Not "your account doesn't have permission", to a superuser: the signed one is named, left out.
    assert confirm.status_code == 200 and not confirm.context["perms_lacking"]
    assert "Left out, as signed results are locked: SIGNED-1" in page and "OPEN-1" in page
    confirmed = [record.pk for record in confirm.context["queryset"]]
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "delete_selected", "post": "yes",
                                       "_selected_action": confirmed})
    assert set(Sample.objects.values_list("accession_number", flat=True)) == (
        {"SIGNED-1"} if model == "sample" else {"SIGNED-1", "OPEN-1"})
    assert SmearImage.objects.filter(sample=signed).exists()
    assert not SmearImage.objects.filter(sample=open_).exists()
    # Only signed ones selected: nothing to confirm, the message alone.
    left = [record.pk for record in records.model.objects.all()]
    only_signed = admin_client.post(changelist, {"action": "delete_selected", "_selected_action": left},
                                    follow=True)
    assert "Left out, as signed results are locked" in only_signed.content.decode()
    assert records.model.objects.count() == len(left)


@pytest.mark.parametrize("model", ["cell", "cellreview"])
def test_cells_and_reviews_cannot_be_deleted_or_edited_in_the_admin(admin_client, model):
    sample = make_sample("AUDIT-1", types=("NEUTROPHIL",))
    cell = Cell.objects.get(image__sample=sample)
    review_cell(cell, "LYMPHOCYTE", None)
    record = cell if model == "cell" else CellReview.objects.get()
    assert admin_client.post(reverse(f"admin:webapp_{model}_delete", args=[record.pk]),
                             {"post": "yes"}).status_code == 403
    changelist = admin_client.get(reverse(f"admin:webapp_{model}_changelist"))
    assert "delete_selected" not in changelist.content.decode()
    admin_client.post(reverse(f"admin:webapp_{model}_change", args=[record.pk]),
                      {"corrected_type": "MONOCYTE", "to_type": "MONOCYTE"})
    cell.refresh_from_db()
    assert cell.corrected_type == "LYMPHOCYTE" and CellReview.objects.get().to_type == "LYMPHOCYTE"
    assert Cell.objects.filter(pk=cell.pk).exists() and CellReview.objects.count() == 1


def test_the_admin_carries_the_products_name(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Leukoscope administration" in page and "Django administration" not in page
    # The site's icon, so that the browser does not ask for a /favicon.ico that is not there.
    assert '<link rel="icon" href="/static/img/favicon.svg"' in page


def _change_sample(admin_client, sample, **fields):
    image = sample.images.get()
    data = {"accession_number": sample.accession_number, "note": sample.note,
            "images-TOTAL_FORMS": "1", "images-INITIAL_FORMS": "1", "images-MIN_NUM_FORMS": "0",
            "images-MAX_NUM_FORMS": "1000", "images-0-id": str(image.pk), "images-0-sample": str(sample.pk),
            **fields}
    return admin_client.post(reverse("admin:webapp_sample_change", args=[sample.pk]), data)


def test_the_admin_holds_an_accession_number_to_the_upload_forms_rules(admin_client):
    sample = make_sample("H26-0001")
    make_sample("H26-0002")
    for wrong, message in (("=cmd|x <i>", "Use letters, digits"), (" h26-0002 ", "already exists")):
        response = _change_sample(admin_client, sample, accession_number=wrong)
        assert response.status_code == 200 and message in response.content.decode()
    assert _change_sample(admin_client, sample, accession_number="H26-0001A", note="typo").status_code == 302
    sample.refresh_from_db()
    assert (sample.accession_number, sample.note) == ("H26-0001A", "typo")
    # Samples come from the upload form alone.
    assert admin_client.get(reverse("admin:webapp_sample_add")).status_code == 403


def test_a_signed_samples_accession_number_and_note_cannot_change_in_the_admin(admin_client,
                                                                               django_user_model):
    sample = make_sample("H26-0003")
    mark_signed(sample, django_user_model.objects.get(username="boss"))
    _change_sample(admin_client, sample, accession_number="H26-0003-EDITED", note="changed")
    sample.refresh_from_db()
    assert (sample.accession_number, sample.note) == ("H26-0003", "")


def test_deleting_an_uploaded_sample_lists_its_photographs_not_their_fingerprint_bands(admin_client,
                                                                                       sent_tasks):
    from tests.webapp.test_uploads import jpeg_bytes, upload
    from webapp.models import FingerprintBand
    from webapp.services.uploads import create_sample_with_images

    files = [upload(f"field-{seed}.jpg", jpeg_bytes(seed=seed)) for seed in (31, 32)]
    sample = create_sample_with_images("BANDS-1", "", files).sample
    assert FingerprintBand.objects.filter(image__sample=sample).count() == 34
    page = admin_client.get(reverse("admin:webapp_sample_delete", args=[sample.pk])).content.decode()
    assert "field-31.jpg" in page and "field-32.jpg" in page
    assert "fingerprint band" not in page.lower()
