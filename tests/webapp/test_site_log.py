"""What an administrator reads in the site's log: warnings only for what needs looking at, each
event of note named by its ids, every process's lines in one format (the log-hygiene audit)."""

import logging
import sys
from datetime import timedelta

import pytest
from django.conf import settings as site_settings
from django.core.management import CommandError
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from tests.webapp.lab_factories import make_sample
from tests.webapp.test_delivery import broker_up, queued_image  # noqa: F401 (a fixture)
from tests.webapp.test_production_config import launcher_of  # noqa: F401 (a fixture)
from tests.webapp.test_sign_off import hematologist, small_sample  # noqa: F401 (a fixture)
from tests.webapp.test_uploads import encoded, jpeg_bytes, upload
from webapp.intake import upload_budget
from webapp.management.commands import runlab
from webapp.management.commands.runlab import Command as Runlab
from webapp.models import Sample
from webapp.services import uploads
from webapp.services.reconciler import reconcile_work
from webapp.services.sign_off import reopen_sample, sign_sample
from webapp.services.uploads import create_sample_with_images

pytestmark = pytest.mark.django_db


def request_records(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "django.request"]


def test_a_page_not_found_is_info_not_a_warning(client, tech, caplog):
    with caplog.at_level(logging.INFO):
        assert client.get("/no-such-page/").status_code == 404
    assert request_records(caplog) == [("INFO", "Not Found: /no-such-page/")]


def view_lines(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "webapp.views.lab"]


def test_a_refused_upload_form_is_logged_as_info_with_what_it_lacked(client, tech, caplog):
    # It logged a bare "Bad Request": nothing said whether the files or the accession number failed.
    with caplog.at_level(logging.INFO):
        response = client.post(reverse("lab:upload"), {"accession_number": "H26-1"})
    assert response.status_code == 400
    assert view_lines(caplog) == [("INFO", "Upload form refused: images (required)")]
    assert request_records(caplog) == []


def test_a_refused_upload_forms_log_line_names_no_accession_number(client, tech, caplog):
    make_sample(accession="H26-77")
    with caplog.at_level(logging.INFO):
        response = client.post(reverse("lab:upload"), {
            "accession_number": "H26-77", "images": [upload("field.jpg", jpeg_bytes())]})
    assert response.status_code == 400 and "H26-77" in response.content.decode()
    assert view_lines(caplog) == [("INFO", "Upload form refused: accession_number (duplicate)")]
    assert "H26-77" not in caplog.text


def upload_lines(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "webapp.services.uploads"]


def greyscale_png():
    return encoded(Image.new("L", (64, 64), 128), "PNG")


GREYSCALE = "This is a greyscale image. Leukoscope needs a colour photograph of the stained smear."


def test_a_refused_photograph_is_logged_with_the_reason_given_not_its_name(client, tech, caplog):
    with caplog.at_level(logging.INFO):
        response = client.post(reverse("lab:upload"), {
            "accession_number": "H26-1", "images": [upload("Smith_John.png", greyscale_png())]})
    assert response.status_code == 400
    assert upload_lines(caplog) == [("INFO", f"Upload file 1 of 1 refused: {GREYSCALE}")]
    assert "Smith" not in caplog.text


def test_a_photograph_refused_beside_stored_ones_is_logged_under_its_sample(client, tech, sent_tasks,
                                                                             settings, caplog):
    # Room for one photograph of the three: the last two are past the upload's budget.
    settings.MAX_IMAGE_PIXELS, settings.MAX_UPLOAD_MEGAPIXELS = 20_000, 0
    with caplog.at_level(logging.INFO):
        client.post(reverse("lab:upload"), {"accession_number": "H26-1", "images": [
            upload(f"Smith_John_{seed}.jpg", jpeg_bytes(seed=seed)) for seed in range(3)]})
    sample = Sample.objects.get()
    assert upload_lines(caplog) == [
        ("INFO", f"Sample {sample.pk}: 1 image(s) queued, 2 rejected"),
        ("INFO", f"Sample {sample.pk}: upload files 2 to 3 of 3 refused: one upload may hold "
                 f"{upload_budget()}")]
    assert "Smith" not in caplog.text


def test_a_refused_copy_is_logged_without_naming_either_file(client, tech, sent_tasks, caplog):
    photograph = jpeg_bytes()
    client.post(reverse("lab:upload"), {"accession_number": "H26-1",
                                        "images": [upload("Smith_John_1.jpg", photograph)]})
    sample = Sample.objects.get()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        client.post(reverse("lab:sample-add-images", args=[sample.pk]), {"images": [
            upload("Smith_John_2.jpg", photograph), upload("Smith_John_3.jpg", photograph)]})
    assert upload_lines(caplog) == [
        ("INFO", f"Sample {sample.pk}: upload file 1 of 2 refused: This photograph is already in this "
                 "sample; it is counted once."),
        ("INFO", f"Sample {sample.pk}: upload file 2 of 2 refused: This photograph is already in this "
                 "sample; it is counted once.")]
    assert "Smith" not in caplog.text


def test_a_copy_stored_by_another_upload_while_the_files_were_read_is_logged_by_its_place(
        sent_tasks, monkeypatch, caplog):
    sample = create_sample_with_images("H26-1", "", [upload("a.jpg", jpeg_bytes())]).sample
    check_files = uploads.check_files

    def read_while_another_upload_lands(files, *known):
        accepted, rejected = check_files(files, *known)
        uploads.add_images(sample, [("Smith_John_again.jpg", checked) for _, checked in accepted])
        return accepted, rejected

    monkeypatch.setattr(uploads, "check_files", read_while_another_upload_lands)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        uploads.add_images_to_sample(sample, [upload("Smith_John_1.png", greyscale_png()),
                                              upload("Smith_John_2.jpg", jpeg_bytes(seed=8))])
    assert upload_lines(caplog) == [
        ("INFO", f"Sample {sample.pk}: upload file 1 of 2 refused: {GREYSCALE}"),
        ("INFO", f"Sample {sample.pk}: upload file 2 of 2 refused: This photograph is already in this "
                 "sample; it is counted once.")]
    assert "Smith" not in caplog.text


def test_a_method_not_allowed_is_logged_once(client, tech, caplog):
    with caplog.at_level(logging.INFO):
        assert client.get(reverse("logout")).status_code == 405
    assert request_records(caplog) == [("INFO", "Method Not Allowed: /accounts/logout/")]


def test_at_warning_level_a_page_not_found_is_not_logged(client, tech, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        client.get("/no-such-page/")
    assert request_records(caplog) == []


def test_a_refused_api_key_stays_a_warning_and_says_so(client, caplog):
    with caplog.at_level(logging.INFO):
        response = client.get(reverse("lab:api-samples"), HTTP_AUTHORIZATION="Bearer not-a-key")
    assert response.status_code == 401
    assert request_records(caplog) == [
        ("WARNING", "Unauthorized: /api/samples/ - API key refused (unknown or revoked)")]


def test_a_refused_permission_stays_a_warning(client, tech, caplog):
    with caplog.at_level(logging.INFO):
        client.get(reverse("models:list"))
    [(level, _)] = request_records(caplog)
    assert level == "WARNING"


def test_signing_and_reopening_are_logged_by_ids(hematologist, caplog):  # noqa: F811
    sample = small_sample()
    with caplog.at_level(logging.INFO, logger="webapp.services.sign_off"):
        sign_sample(sample, hematologist)
        reopen_sample(sample, hematologist, "Recount")
        sign_sample(sample, hematologist)
    lines = [r.getMessage() for r in caplog.records if r.name == "webapp.services.sign_off"]
    assert lines == [f"Sample {sample.pk} signed by hema (signature 1)",
                     f"Sample {sample.pk} reopened by hema: its signed result is withdrawn until it is "
                     "signed again",
                     f"Sample {sample.pk} signed by hema (signature 2, amended)"]
    assert all(sample.accession_number not in line for line in lines)


def test_the_reconciler_names_each_photograph_of_a_stopped_worker(broker_up, settings, caplog):  # noqa: F811
    settings.WORKER_LOST_AFTER = 60
    beat = timezone.now() - timedelta(minutes=2)
    dead = queued_image(status="processing", heartbeat_at=beat,
                        queued_at=timezone.now() - timedelta(minutes=3))
    with caplog.at_level(logging.INFO, logger="webapp.services.reconciler"):
        reconcile_work()
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "webapp.services.reconciler" and r.levelno == logging.WARNING]
    assert (f"Image {dead.pk} of sample {dead.sample_id} queued again: its worker stopped (last heartbeat "
            f"{beat.isoformat(timespec='seconds')}); if workers keep stopping, look for them being killed "
            "(out of memory?)") in warnings


def test_workers_log_in_the_sites_format_at_its_level(settings):
    from webapp.celery import app

    site_format = site_settings.LOGGING["formatters"]["plain"]["format"]
    assert app.conf.worker_log_format == site_format
    assert app.conf.worker_task_log_format == site_format
    settings.LOG_LEVEL = "WARNING"  # LEUKOSCOPE_LOG_LEVEL=warning
    for command in ("classify worker", "train worker"):
        arguments = Runlab().child_commands("127.0.0.1", 8000, 1)[command]
        assert arguments[arguments.index("--loglevel") + 1] == "WARNING"


def test_workers_start_without_celerys_banner():
    for command in ("classify worker", "train worker"):
        arguments = Runlab().child_commands("127.0.0.1", 8000, 1)[command]
        assert "--quiet" in arguments[:arguments.index("worker")]


def test_celerys_line_per_task_is_left_out_and_its_failures_kept():
    for name in ("celery.worker.strategy", "celery.app.trace"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)


def test_a_failed_sign_in_logs_the_address_but_not_the_name_typed(client, caplog):
    make_sample()  # the site in use
    with caplog.at_level(logging.WARNING, logger="axes"):
        client.post(reverse("login"), {"username": "typed-name", "password": "wrong"})
    [line] = [r.getMessage() for r in caplog.records if r.name.startswith("axes")]
    assert "127.0.0.1" in line and "typed-name" not in line


def test_the_launcher_logs_a_stopped_worker_as_a_warning_saying_what_follows(launcher_of, monkeypatch,  # noqa: F811
                                                                               caplog):
    monkeypatch.setattr(runlab, "RESTART_IF_UP_FOR_SECONDS", 0)
    stops_soon = [sys.executable, "-c", "import time, sys; time.sleep(0.2); sys.exit(3)"]
    run = launcher_of({"classify worker": stops_soon})
    with caplog.at_level(logging.INFO, logger=runlab.__name__), pytest.raises(CommandError):
        run()
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == runlab.__name__]
    assert records[0] == (
        "WARNING", "The classify worker stopped (exit code 3); starting it again. A photograph it was "
        f"classifying is queued again by the reconciler within "
        f"{site_settings.WORKER_LOST_AFTER + site_settings.RECONCILE_EVERY:g} s.")
    assert len(records) == runlab.RESTARTS_IN_WINDOW + 1
    assert records[-1] == ("ERROR", "The classify worker stopped (exit code 3); stopping the site.")
