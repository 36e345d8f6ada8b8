"""Where a patient's data goes: a photograph's file name (microscope software writes the patient's
name or record number into it), the accession number and the sample's note stay in the database and
on the pages that show them, and out of stored file names, the URLs built from them and the log."""

import logging

import pytest

from tests.webapp.lab_factories import make_sample
from tests.webapp.test_uploads import jpeg_bytes, upload
from webapp import intake
from webapp.management.commands import runlab
from webapp.services.deletion import delete_image, delete_sample
from webapp.services.uploads import create_sample_with_images

CARELESS_NAME = "DOE_JOHN_MRN123456_2026-12-01.jpg"


@pytest.mark.django_db
def test_a_stored_photograph_is_named_by_its_sample_not_by_the_uploaded_file(sent_tasks, client, tech):
    result = create_sample_with_images("H26-0100", "", [upload(CARELESS_NAME, jpeg_bytes())], user=tech)
    image = result.stored[0]
    assert image.original_filename == CARELESS_NAME  # still shown where the lab reads it
    for kept in ("DOE", "JOHN", "MRN", "123456"):
        assert kept not in image.image.name
    assert image.image.name.endswith(".jpg") and f"sample{result.sample.pk}_" in image.image.name
    # The address the pages and the API link, and the name a browser saves it under.
    answer = client.get(image.image.url)
    assert answer.status_code == 200
    assert "DOE" not in answer["Content-Disposition"]


@pytest.mark.django_db
def test_deleting_logs_ids_not_the_accession_number_or_the_file_name(django_user_model, caplog):
    user = django_user_model.objects.create_user("someone")
    sample = make_sample(accession="DOE-4512")
    image = sample.images.get()
    image.original_filename = CARELESS_NAME
    image.save()
    image_id, sample_id = image.pk, sample.pk
    with caplog.at_level(logging.INFO, logger="webapp.services.deletion"):
        delete_image(image, user)
        delete_sample(sample, user)
    logged = caplog.text
    assert f"Image {image_id} of sample {sample_id} deleted by someone" in logged
    assert f"Sample {sample_id} with 0 image(s) deleted by someone" in logged
    assert "DOE" not in logged and "MRN" not in logged


def test_a_file_pillow_cannot_read_is_logged_by_its_place_in_the_upload(monkeypatch, caplog):
    def unreadable(uploaded):
        raise OSError("broken data stream")

    monkeypatch.setattr(intake, "check_image", unreadable)
    with caplog.at_level(logging.ERROR, logger="webapp.intake"):
        _, rejected = intake.check_files([upload("a.jpg", jpeg_bytes()), upload(CARELESS_NAME, jpeg_bytes())])
    assert [item.name for item in rejected] == ["a.jpg", CARELESS_NAME]  # the person is told which
    assert "file 2 of 2" in caplog.text
    assert "DOE" not in caplog.text


def test_the_launchers_access_log_leaves_out_query_strings_and_referrers():
    # ?q=, ?accession= and ?accession_number= carry accession numbers, and a Referer the address of
    # the page before, query string and all.
    web = runlab.Command().child_commands("127.0.0.1", 8000, 2)["web server"]
    access_format = web[web.index("--access-logformat") + 1]
    assert "%(U)s" in access_format
    for kept in ("%(r)s", "%(q)s", "%(f)s", "%({referer}i)s"):
        assert kept not in access_format
