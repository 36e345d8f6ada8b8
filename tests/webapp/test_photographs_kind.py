"""Changing what a sample's photographs show, after the upload: classified again the other way, by
the same version, and refused where a person's work on its cells could be lost."""

import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier.model_folder import BUNDLED_MODELS_DIR, is_model_folder
from tests.conftest import require_dataset
from tests.webapp.lab_factories import make_sample, make_version, with_role
from webapp.models import Cell, Sample, SmearImage
from webapp.services import classification, model_registry
from webapp.services.model_versions import activate_version, register_model_directory
from webapp.services.photographs_kind import PhotographsKindKept, read_photographs_as
from webapp.services.review import review_cell
from webapp.services.uploads import create_sample_with_images

pytestmark = pytest.mark.django_db


def change(client, sample, photographs):
    return client.post(reverse("lab:sample-photographs", args=[sample.pk]), {"photographs": photographs},
                       follow=True)


def test_the_photographs_are_read_the_other_way_by_the_same_version(client, tech, sent_tasks,
                                                                     django_capture_on_commit_callbacks):
    version = make_version()
    sample = make_sample("K-1", version=version)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "photographs read as fields of a smear" in page and 'data-role="change-photographs"' in page
    assert 'name="photographs" value="one_cell_each"' in page and 'data-role="kind-kept"' not in page

    with django_capture_on_commit_callbacks(execute=True):
        response = change(client, sample, "one_cell_each")
    assert "now read as one white cell each: 1 photograph queued to be classified again" in (
        response.content.decode())
    sample.refresh_from_db()
    assert sample.photographs == Sample.Photographs.ONE_CELL_EACH
    image = sample.images.get()
    assert image.status == SmearImage.Status.QUEUED and image.requested_version_id == version.pk
    assert ("classify_image", (image.pk,)) in sent_tasks
    entry = LogEntry.objects.filter(object_pk=str(sample.pk)).latest("timestamp")
    assert entry.changes == {"photographs": ["smear_fields", "one_cell_each"]}
    note = entry.additional_data["note"]
    assert note == "photographs read as one white cell each: 1 photograph queued again"
    assert "photographs read as one white cell each: each gives the cell in its middle" in (
        client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode())


def test_asking_for_the_kind_it_has_queues_nothing(client, tech, sent_tasks):
    sample = make_sample("K-2")
    assert "already read as fields of a smear" in change(client, sample, "smear_fields").content.decode()
    assert sample.images.get().status == SmearImage.Status.DONE and not sent_tasks


@pytest.mark.parametrize("work", ["reviewed", "drawn", "counted in"])
def test_a_person_s_work_on_the_cells_keeps_the_kind(client, tech, sent_tasks, work):
    sample = make_sample("K-3")
    cell = Cell.objects.filter(image__sample=sample).first()
    if work == "reviewed":
        review_cell(cell, "MONOCYTE", tech)
    else:
        marks = {"drawn": {"added_by_hand": True}, "counted in": {"is_partial": True, "count_partial": True}}
        Cell.objects.filter(pk=cell.pk).update(**marks[work])
    shown = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="kind-kept"' in shown and 'name="photographs" value="one_cell_each"' not in shown
    page = change(client, sample, "one_cell_each").content.decode()
    assert "1 cell of this sample was already labelled, drawn or counted in by a person" in page
    assert "upload the photographs again as a new sample instead" in page
    sample.refresh_from_db()
    assert sample.photographs == Sample.Photographs.SMEAR_FIELDS
    assert sample.images.get().status == SmearImage.Status.DONE and not sent_tasks


def test_no_cell_is_worked_on_while_the_photographs_wait_to_be_read_the_other_way(
        client, tech, sent_tasks, django_capture_on_commit_callbacks):
    # The two-user audit: relabels sent from a page loaded before the change were accepted, and the
    # re-read, finding other cells, deleted the relabelled ones with their labels.
    version = make_version()
    sample = make_sample("K-5", version=version)
    cell = Cell.objects.filter(image__sample=sample).order_by("index").first()
    Cell.objects.filter(pk=cell.pk).update(is_partial=True)
    with django_capture_on_commit_callbacks(execute=True):
        change(client, sample, "one_cell_each")
    refusal = ("Its photograph is queued to be classified again, and the cells that run finds replace "
               "these, and work on a cell it does not find again would be lost with it: ")
    answer = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE"},
                         HTTP_ACCEPT="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"] == refusal + "relabel it once the photograph is done."
    answer = client.post(reverse("lab:gallery-review", args=[sample.pk]),
                         {"cells": str(cell.pk), "cell_type": "MONOCYTE"}, HTTP_ACCEPT="application/json")
    assert answer.status_code == 400 and refusal in answer.json()["error"]
    page = client.post(reverse("lab:cell-count-in", args=[cell.pk]), {"count_in": "1"}, follow=True)
    assert refusal + "count it in or out once the photograph is done." in page.content.decode()
    cell.refresh_from_db()
    assert (cell.corrected_type, cell.count_partial) == ("", False) and not cell.reviews.exists()
    # The pages offer no type buttons and no count-in meanwhile, and say why.
    review_form = f'action="{reverse("lab:cell-review", args=[cell.pk])}"'
    sample_page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert review_form not in sample_page
    assert ('<span class="muted small" data-role="awaiting-reading">being classified again: relabel once '
            'done') in sample_page
    cell_page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    assert review_form not in cell_page and 'data-role="count-in"' not in cell_page
    assert refusal + "relabel it once the photograph is done." in cell_page

    # Done again (here by the stand-in's store of the same cells), the cells take labels once more.
    SmearImage.objects.filter(sample=sample).update(status=SmearImage.Status.DONE)
    for page in (reverse("lab:sample-detail", args=[sample.pk]), reverse("lab:cell-detail", args=[cell.pk])):
        shown = client.get(page).content.decode()
        assert review_form in shown and 'data-role="awaiting-reading"' not in shown
    review_cell(cell, "MONOCYTE", tech)
    cell.refresh_from_db()
    assert cell.cell_type == "MONOCYTE"


def test_a_signed_sample_keeps_its_kind_and_offers_no_change(client, tech, sent_tasks):
    sample = make_sample("K-4")
    Sample.objects.filter(pk=sample.pk).update(status=Sample.Status.SIGNED)
    assert 'data-role="change-photographs"' not in client.get(
        reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    page = change(client, sample, "one_cell_each").content.decode()
    assert "signed" in page
    assert Sample.objects.get(pk=sample.pk).photographs == Sample.Photographs.SMEAR_FIELDS and not sent_tasks


def test_an_unknown_kind_is_refused_in_words(client, tech, sent_tasks):
    sample = make_sample("K-5")
    page = change(client, sample, "slides").content.decode()
    assert "Choose what the photographs show" in page and not sent_tasks
    with pytest.raises(PhotographsKindKept, match="not a kind of photograph"):
        read_photographs_as(sample, "slides")


def test_a_role_without_upload_rights_may_not_change_it(client, django_user_model, sent_tasks):
    admin = with_role(django_user_model.objects.create_user("lead", password="a-long-passphrase-1"), "admin")
    client.force_login(admin)
    sample = make_sample("K-6")
    assert change(client, sample, "one_cell_each").status_code == 403
    assert Sample.objects.get(pk=sample.pk).photographs == Sample.Photographs.SMEAR_FIELDS and not sent_tasks


def test_read_again_as_one_cell_a_field_keeps_its_middle_cell_alone(sent_tasks, settings):
    """The real detector and network: a PBC basophil photographed beside a clump of red cells gives
    two cells as a field; read again as one cell each, the middle one alone, the same box."""
    folder = BUNDLED_MODELS_DIR / "leukonet-gn-8class"
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    model_registry._loaded.clear()  # versions' ids come round again after each test's rollback
    version, _ = register_model_directory(folder)
    activate_version(version)
    photograph = require_dataset("pbc", "TEST", "BASOPHIL", "BA_812946.jpg")
    upload = SimpleUploadedFile(photograph.name, photograph.read_bytes())
    image = create_sample_with_images("K-7", "", [upload]).stored[0]
    classification.classify_smear_image(image.pk)
    as_field = list(image.cells.order_by("index"))
    assert len(as_field) == 2 and as_field[0].predicted_type == "BASOPHIL"

    assert read_photographs_as(image.sample, Sample.Photographs.ONE_CELL_EACH) == 1
    classification.classify_smear_image(image.pk, model_version_id=version.pk)
    (as_one_cell,) = image.cells.all()
    assert as_one_cell.pk == as_field[0].pk and as_one_cell.box == as_field[0].box
    assert as_one_cell.predicted_type == "BASOPHIL"


def test_the_sample_list_and_gallery_say_which_samples_are_one_cell_each(client, tech):
    fields, cells = make_sample("K-8"), make_sample("K-9")
    Sample.objects.filter(pk=cells.pk).update(photographs=Sample.Photographs.ONE_CELL_EACH)
    listed = client.get(reverse("lab:sample-list")).content.decode()
    assert listed.count('data-role="one-cell-each"') == 1
    assert "3 cells found in 1 photograph" in client.get(
        reverse("lab:sample-gallery", args=[fields.pk])).content.decode()
    assert "3 cells from 1 photograph of one cell each" in client.get(
        reverse("lab:sample-gallery", args=[cells.pk])).content.decode()
