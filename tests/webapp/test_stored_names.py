"""Photographs stored before names were made of ids kept the uploaded file's stem (a patient's name
or record number, often) in their stored name: `manage.py stored_names` lists them and, asked, moves
each to a name of its sample's id, bytes unchanged; one a worker has in hand waits for a later run."""

import hashlib
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.webapp.test_uploads import jpeg_bytes, upload
from webapp.models import SmearImage
from webapp.services.stored_names import rename_to_ids
from webapp.services.uploads import create_sample_with_images

pytestmark = pytest.mark.django_db


def stored_as_before(image, old_name, root):
    """Give ``image`` the stored name an upload got before this release."""
    data = (root / image.image.name).read_bytes()
    (root / image.image.name).unlink()
    (root / old_name).parent.mkdir(parents=True, exist_ok=True)
    (root / old_name).write_bytes(data)
    SmearImage.objects.filter(pk=image.pk).update(image=old_name)
    return data


def test_photographs_named_by_their_upload_are_listed_then_renamed_to_ids(settings, capsys, sent_tasks):
    root = Path(settings.MEDIA_ROOT)
    sample = create_sample_with_images("NAMES-1", "", [
        upload("DOE_JOHN_MRN123456.jpg", jpeg_bytes(seed=1)), upload("field-2.jpg", jpeg_bytes(seed=2)),
        upload("field-3.jpg", jpeg_bytes(seed=3))]).sample
    old, busy, new = sample.images.order_by("pk")
    SmearImage.objects.filter(pk__in=[old.pk, new.pk]).update(status=SmearImage.Status.DONE)
    SmearImage.objects.filter(pk=busy.pk).update(status=SmearImage.Status.PROCESSING)
    data = stored_as_before(old, "smears/2026/01/02/DOE_JOHN_MRN123456_1a2b3c4d.jpg", root)
    stored_as_before(busy, "smears/2026/01/02/DOE_JANE.jpg", root)
    kept_name = new.image.name  # stored as uploads are now

    call_command("stored_names")
    assert capsys.readouterr().out.splitlines() == [
        f"photograph {old.pk}  smears/2026/01/02/DOE_JOHN_MRN123456_1a2b3c4d.jpg",
        f"photograph {busy.pk}  smears/2026/01/02/DOE_JANE.jpg",
        "2 photographs stored under an uploaded file's name: --rename stores them under their sample's id."]
    assert (root / "smears/2026/01/02/DOE_JOHN_MRN123456_1a2b3c4d.jpg").exists()  # listing moves nothing

    call_command("stored_names", "--rename")
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("1 photograph renamed; 1 photograph left for a later run (being classified, or its "
                       "file could not be read).")
    old.refresh_from_db()
    assert old.image.name.startswith(f"smears/2026/01/02/sample{sample.pk}_") and "DOE" not in old.image.name
    assert (root / old.image.name).read_bytes() == data and hashlib.sha256(data).hexdigest() == old.checksum
    assert not (root / "smears/2026/01/02/DOE_JOHN_MRN123456_1a2b3c4d.jpg").exists()
    # The photograph a worker has in hand keeps its file; the one named by ids is not touched.
    assert SmearImage.objects.get(pk=busy.pk).image.name == "smears/2026/01/02/DOE_JANE.jpg"
    assert SmearImage.objects.get(pk=new.pk).image.name == kept_name and (root / kept_name).exists()

    SmearImage.objects.filter(pk=busy.pk).update(status=SmearImage.Status.FAILED)
    call_command("stored_names", "--rename")
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 photograph renamed; 0 photographs left")
    call_command("stored_names")
    assert capsys.readouterr().out.splitlines() == ["0 photographs stored under an uploaded file's name."]


def stored_under_upload_name(root, accession):
    """A sample of one classified photograph, its file written under the upload's name as before."""
    from tests.webapp.lab_factories import make_sample

    image = make_sample(accession).images.get()
    (root / image.image.name).parent.mkdir(parents=True, exist_ok=True)
    (root / image.image.name).write_bytes(jpeg_bytes(seed=4))
    return image


def test_a_photograph_deleted_as_it_is_renamed_leaves_no_file_behind(settings, sent_tasks, tech,
                                                                    django_capture_on_commit_callbacks):
    # The review: the deletion page read the photograph (its old name) before the rename, and
    # deleted the old name's file; the renamed copy, a patient's photograph, stayed with no record.
    from webapp.services.deletion import delete_image

    root = Path(settings.MEDIA_ROOT)
    image = stored_under_upload_name(root, "DOE_JOHN")
    shown = SmearImage.objects.get(pk=image.pk)  # as the delete view reads it
    renamed, _ = rename_to_ids()
    assert [(moved.image_id, moved.old) for moved in renamed] == [(image.pk, "smears/DOE_JOHN.png")]
    with django_capture_on_commit_callbacks(execute=True):
        delete_image(shown, user=tech)
    assert not SmearImage.objects.filter(pk=image.pk).exists()
    assert not (root / "smears/DOE_JOHN.png").exists() and not (root / renamed[0].new).exists()


def test_a_photograph_whose_drawn_box_waits_for_the_worker_keeps_its_file(settings, sent_tasks, tech,
                                                                          monkeypatch):
    # The review: a drawn box's worker reads the photograph (status done) by the name it loaded;
    # renamed in between, the file was gone and the box failed, "missing from storage".
    from webapp.models import AddedCellRequest
    from webapp.services import added_cells
    from webapp.services.added_cells import finish_added_cell, request_added_cell

    root = Path(settings.MEDIA_ROOT)
    image = stored_under_upload_name(root, "DOE_JANE")
    request = request_added_cell(image, (400, 300, 460, 360), user=tech)
    read = []

    def renamed_meanwhile(photograph):
        rename_to_ids()  # the command runs as the worker, the record loaded, opens the file
        read.append(added_cells.__dict__["_real_load_rgb"](photograph).shape)
        raise RuntimeError("the network is not loaded in this test")

    monkeypatch.setitem(added_cells.__dict__, "_real_load_rgb", added_cells.load_rgb)
    monkeypatch.setattr(added_cells, "load_rgb", renamed_meanwhile)
    finish_added_cell(request.pk)
    assert read, AddedCellRequest.objects.get(pk=request.pk).error
    # Left for a later run while the box waits, its file where the worker looks.
    assert SmearImage.objects.get(pk=image.pk).image.name == "smears/DOE_JANE.png"
