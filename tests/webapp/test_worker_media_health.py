"""A worker that cannot use its media folder: web servers and workers may be machines apart sharing
LEUKOSCOPE_MEDIA_ROOT over a network mount, and a classify worker whose mount is missing fails
every photograph it takes, unless it puts them back in the queue, as it does. Each worker's mark
on the roll says whether its folder is usable, and /healthz fails naming the worker and the folder
when no classify worker can use one. Against the test run's Redis, each test under a key prefix of
its own."""

import os
import secrets

import pytest
from django.urls import reverse

from tests.conftest import wait_for
from webapp import broker
from webapp.broker import (
    WorkerRollCall,
    announce_worker,
    forget_worker,
    probe_media_folder,
    worker_marks,
)
from webapp.models import ModelVersion


def disk_leaving(folder, free):
    """shutil.disk_usage as a disk with free() bytes left under ``folder`` would answer it; the real
    disk's figures elsewhere."""
    import shutil
    from pathlib import Path

    real = shutil.disk_usage

    def disk_usage(path):
        usage = real(path)
        return usage._replace(free=free()) if Path(path).is_relative_to(folder) else usage

    return disk_usage


@pytest.fixture
def roll(monkeypatch, broker_url):
    """This test's own roll of workers on the test run's Redis, announced every 50 ms."""
    monkeypatch.setenv(broker.KEY_PREFIX_VARIABLE, f"test-media-{secrets.token_hex(4)}:")
    monkeypatch.setattr(broker, "WORKER_ANNOUNCE_SECONDS", 0.05)
    return broker_url


@pytest.fixture
def staff_client(client, db, django_user_model):
    ModelVersion.objects.create(architecture="paper", task="binary", status="active",
                                model_sha256="x" * 64)
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    return client


def healthz(client):
    response = client.get(reverse("healthz"))
    return response.status_code, response.json()


# --- the probe ----------------------------------------------------------------------------------

def test_a_folder_that_can_be_written_read_and_cleared_is_usable_and_left_as_it_was(tmp_path):
    (tmp_path / "smears").mkdir()
    state = probe_media_folder(tmp_path)
    assert state.pop("free_bytes") > 0 and state == {"root": str(tmp_path), "usable": True}
    assert [path.name for path in tmp_path.iterdir()] == ["smears"], "the probe file is removed"


def test_a_missing_folder_or_a_file_is_not_usable_and_says_why(tmp_path):
    missing = probe_media_folder(tmp_path / "mnt" / "media")
    assert missing["usable"] is False
    assert missing["problem"].startswith(f"cannot find LEUKOSCOPE_MEDIA_ROOT={tmp_path}/mnt/media: ")
    (tmp_path / "media").write_text("")
    assert probe_media_folder(tmp_path / "media")["problem"] == (
        f"cannot use LEUKOSCOPE_MEDIA_ROOT={tmp_path}/media: it is a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes where permissions say it may not")
def test_a_folder_that_cannot_be_written_is_not_usable(tmp_path):
    tmp_path.chmod(0o555)
    try:
        state = probe_media_folder(tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert state["problem"] == f"cannot write LEUKOSCOPE_MEDIA_ROOT={tmp_path} (Permission denied)"


# --- /healthz ------------------------------------------------------------------------------------

def test_healthz_fails_naming_the_classify_worker_that_cannot_use_its_media_and_recovers(
        roll, staff_client, tmp_path):
    media = tmp_path / "nfs" / "media"  # the mount is missing on the classify worker's machine
    call = WorkerRollCall(roll, "classify1@lab-2", ["classify"], media_root=media).start()
    try:
        wait_for(lambda: "classify1@lab-2" in worker_marks(roll), "the worker's first mark", 5)
        status, report = healthz(staff_client)
        worker = report["checks"]["worker"]
        assert status == 503 and report["failing"] == ["worker"], report
        assert worker["error"] == (
            f"the classify worker classify1@lab-2 cannot find LEUKOSCOPE_MEDIA_ROOT={media}: there is "
            "no such folder on its machine (is the shared folder mounted there?), so every "
            "photograph fails")
        assert worker["media"]["classify1@lab-2"]["usable"] is False
        assert worker["queues"]["classify"] == ["classify1@lab-2"], "it is still a classify worker"

        media.mkdir(parents=True)  # mounted again: the next announcement says so
        wait_for(lambda: healthz(staff_client)[0] == 200, "/healthz to pass once the folder is back", 5)
        worker = healthz(staff_client)[1]["checks"]["worker"]
        assert worker["media"]["classify1@lab-2"].pop("free_bytes") > 0
        assert worker["media"] == {"classify1@lab-2": {"root": str(media), "usable": True}}
    finally:
        call.stop()


def test_one_worker_with_its_media_is_enough_and_the_other_is_named(roll, staff_client, tmp_path):
    announce_worker(roll, "classify1@lab-1", ["classify"], probe_media_folder(tmp_path))
    announce_worker(roll, "classify2@lab-2", ["classify"], probe_media_folder(tmp_path / "gone"))
    status, report = healthz(staff_client)
    worker = report["checks"]["worker"]
    assert status == 200, report
    assert worker["warning"].startswith(
        f"the photographs these classify workers take fail: classify2@lab-2 cannot find "
        f"LEUKOSCOPE_MEDIA_ROOT={tmp_path}/gone")
    assert [worker["media"][name]["usable"] for name in worker["workers"]] == [True, False]

    forget_worker(roll, "classify1@lab-1")
    announce_worker(roll, "classify3@lab-3", ["classify"], probe_media_folder(tmp_path / "file"))
    status, report = healthz(staff_client)
    assert status == 503
    assert report["checks"]["worker"]["error"].startswith(
        "no classify worker can use its media folder, so every photograph fails: classify2@lab-2 "
        f"cannot find LEUKOSCOPE_MEDIA_ROOT={tmp_path}/gone")
    # Anyone may see that the worker check fails; the host names and the folder are for staff.
    staff_client.logout()
    assert healthz(staff_client)[1]["checks"]["worker"] == {"ok": False}


def test_a_worker_that_finds_no_folder_misses_nothing_while_nothing_is_stored(roll, staff_client,
                                                                             settings, tmp_path):
    # A new installation: no upload has made the folder yet, on the web server's machine either.
    settings.MEDIA_ROOT = tmp_path / "media"
    announce_worker(roll, "classify@lab-1", ["classify"], probe_media_folder(tmp_path / "media"))
    status, report = healthz(staff_client)
    assert status == 200, report
    assert report["checks"]["worker"]["media"]["classify@lab-1"]["note"] == (
        "not held against it: this web server has stored nothing yet")
    (tmp_path / "media").mkdir()  # the first upload, stored where that worker cannot see it
    assert healthz(staff_client)[0] == 503


def test_a_mark_without_the_media_state_counts_as_usable(roll, staff_client):
    # Workers of an older release marked themselves with their queues as plain text ("1" earlier).
    client = broker.broker_client(roll)
    client.sadd(broker._roll_key(), "classify@old")
    client.set(broker._mark_key("classify@old"), "classify", ex=broker.WORKER_SILENT_AFTER)
    status, report = healthz(staff_client)
    assert status == 200, report
    assert report["checks"]["worker"]["media"]["classify@old"] == {
        "usable": True, "root": None, "note": "not reported (a worker of an older release)"}
    assert report["checks"]["worker"]["queues"]["classify"] == ["classify@old"]


def test_a_train_worker_without_media_is_a_warning_not_a_failure(roll, staff_client, tmp_path):
    announce_worker(roll, "classify@lab-1", ["classify"], probe_media_folder(tmp_path))
    announce_worker(roll, "train@lab-2", ["train"], probe_media_folder(tmp_path / "gone"))
    status, report = healthz(staff_client)
    assert status == 200, report
    assert report["checks"]["worker"]["warning"].startswith(
        "a retraining would leave out the lab's reviewed cells: train@lab-2 cannot find")


def test_the_sample_page_counts_a_classify_worker_without_media_as_running(roll, db, tmp_path):
    # Its photographs do not wait for a worker to start: they are taken, and fail, each saying so;
    # /healthz names the worker and its folder.
    from webapp.services.health import classify_workers_running

    assert classify_workers_running() is False
    announce_worker(roll, "classify@lab-2", ["classify"], probe_media_folder(tmp_path / "gone"))
    assert classify_workers_running() is True


def test_a_media_folder_that_hangs_is_reported_without_holding_up_the_announcements(tmp_path,
                                                                                  monkeypatch):
    import threading

    released = threading.Event()
    monkeypatch.setattr(broker, "probe_media_folder", lambda root: released.wait(10) and {})
    watch = broker.MediaFolderWatch(tmp_path, timeout=0.2)
    try:
        for _ in range(2):  # the second call does not wait again for the probe that hangs
            state = watch.state()
            assert state["usable"] is False
            assert state["problem"] == (f"cannot use LEUKOSCOPE_MEDIA_ROOT={tmp_path}: it did not "
                                        "answer within 0.2 s (a network mount that hangs?)")
    finally:
        released.set()


# --- a real worker -------------------------------------------------------------------------------

def test_a_celery_worker_marks_the_state_of_its_own_media_folder(broker_url, tmp_path):
    from webapp.worker_process import start_worker, stop_worker

    media = tmp_path / "not-mounted"
    name = f"media-{secrets.token_hex(3)}"
    env = dict(os.environ, REDIS_URL=broker_url, LEUKOSCOPE_VAR_DIR=str(tmp_path / "var"),
               LEUKOSCOPE_MEDIA_ROOT=str(media), PYTHONUNBUFFERED="1")
    env.pop(broker.KEY_PREFIX_VARIABLE, None)
    # A queue of its own: it must take none of the photographs other tests queue.
    process = start_worker(name, f"media-test-{name}", env, tmp_path / "worker.log", timeout=60)
    try:
        marks = wait_for(lambda: {n: m for n, m in worker_marks(broker_url).items() if n.startswith(name)},
                         "the worker's mark", 10)
        (mark,) = marks.values()
        assert mark.queues == [f"media-test-{name}"]
        assert mark.media["usable"] is False
        assert mark.media["problem"].startswith(f"cannot find LEUKOSCOPE_MEDIA_ROOT={media}:")
    finally:
        stop_worker(process)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_photograph_waits_while_its_worker_cannot_see_the_media_folder_then_is_classified(
        broker_url, isolated_media_root, sent_tasks, tmp_path):
    import io

    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    from tests.conftest import _database_url_for_worker
    from tests.e2e.served_model import activate_served_model
    from webapp.models import SmearImage
    from webapp.queueing import CLASSIFY_TASK
    from webapp.services.uploads import create_sample_with_images
    from webapp.worker_process import start_worker, stop_worker

    activate_served_model()
    rgb = np.full((480, 640, 3), (225, 185, 195), np.uint8)
    rgb[200:280, 280:360] = (120, 70, 170)
    photograph = io.BytesIO()
    Image.fromarray(rgb).save(photograph, format="JPEG")
    upload = SimpleUploadedFile("s.jpg", photograph.getvalue())
    image = create_sample_with_images("MNT-1", "", [upload]).stored[0]
    mount = tmp_path / "mnt" / "media"
    name = f"unmounted-{secrets.token_hex(3)}"
    env = dict(os.environ, REDIS_URL=broker_url, DATABASE_URL=_database_url_for_worker(),
               LEUKOSCOPE_VAR_DIR=str(tmp_path / "var"), LEUKOSCOPE_MEDIA_ROOT=str(mount),
               LEUKOSCOPE_STORAGE_RETRY_SECONDS="0.5", PYTHONUNBUFFERED="1")
    env.pop(broker.KEY_PREFIX_VARIABLE, None)
    queue = f"media-test-{name}"  # its own: it takes none of the photographs other tests queue
    process = start_worker(name, queue, env, tmp_path / "worker.log", timeout=60)
    try:
        from webapp.celery import app

        app.send_task(CLASSIFY_TASK, args=[image.pk], queue=queue)
        waiting = wait_for(lambda: SmearImage.objects.filter(pk=image.pk, status="queued")
                           .exclude(error="").first(), "the photograph back in the queue", 60)
        assert waiting.error.startswith(f"Waiting: the classifier worker cannot find "
                                        f"LEUKOSCOPE_MEDIA_ROOT={mount}:")
        mount.parent.mkdir()
        mount.symlink_to(isolated_media_root)  # the shared folder is mounted
        done = wait_for(lambda: SmearImage.objects.filter(pk=image.pk, status="done").first(),
                        "the photograph classified once the folder is there", 60)
        assert done.error == "" and done.model_version_id is not None
    finally:
        stop_worker(process)



def test_a_web_server_that_cannot_store_uploads_says_so(staff_client, settings, tmp_path):
    # The reliability audit: an unwritable media folder answered every upload with a 500 while
    # /healthz said "ok"; the workers report their own folder, the web server did not.
    settings.MEDIA_ROOT = str(tmp_path / "media")
    assert healthz(staff_client)[1]["checks"]["storage"] == {
        "ok": True, "root": settings.MEDIA_ROOT, "note": "no photograph stored yet"}
    (tmp_path / "media").write_bytes(b"")  # a file where the folder should be
    status, report = healthz(staff_client)
    assert status == 503 and "storage" in report["failing"]
    assert report["checks"]["storage"]["error"] == (
        f"this web server cannot use LEUKOSCOPE_MEDIA_ROOT={settings.MEDIA_ROOT}: it is a file, not a "
        "folder, so every upload is refused")
    (tmp_path / "media").unlink()
    (tmp_path / "media").mkdir()
    storage = healthz(staff_client)[1]["checks"]["storage"]
    assert storage.pop("free_bytes") > 0 and storage == {"ok": True, "root": settings.MEDIA_ROOT}
    # Once photographs are stored, a folder gone is a shared mount missing on this machine.
    from tests.webapp.lab_factories import make_sample

    make_sample()
    (tmp_path / "media").rmdir()
    status, report = healthz(staff_client)
    assert status == 503 and report["checks"]["storage"]["error"].startswith(
        f"this web server cannot find LEUKOSCOPE_MEDIA_ROOT={settings.MEDIA_ROOT}: ")


def test_healthz_warns_of_a_filling_disk_and_fails_once_an_upload_would_not_fit(staff_client, settings,
                                                                               tmp_path, monkeypatch):
    # The disk audit: with 16 KB left in the media folder, uploads were refused and the worker could
    # store no crop (its card saying "an administrator can see this on /healthz"), while /healthz,
    # whose probe writes 16 bytes, answered "ok"; and it never warned while the disk filled.
    import shutil

    from django.test import Client

    settings.MEDIA_ROOT = str(tmp_path / "media")
    (tmp_path / "media").mkdir()
    settings.MAX_UPLOAD_BYTES, settings.LOW_DISK_BYTES = 25 * 2**20, 1024 * 2**20
    left = {"media": 0}
    monkeypatch.setattr(shutil, "disk_usage", disk_leaving(settings.MEDIA_ROOT, lambda: left["media"]))
    left["media"] = 300 * 2**20
    # (No worker runs here: "worker" fails throughout, and the status with it.)
    report = healthz(staff_client)[1]
    assert "storage" not in report["failing"] and report["checks"]["storage"]["warning"] == (
        f"LEUKOSCOPE_MEDIA_ROOT={settings.MEDIA_ROOT} has 300 MB left on its disk, under "
        "LEUKOSCOPE_LOW_DISK_MB=1024: free space there before it fills")
    summary = Client().get(reverse("healthz")).json()  # a monitor, signed in as no one
    assert summary["checks"]["storage"] == {"ok": True} and summary["warnings"] == ["storage"]
    assert "LEUKOSCOPE_MEDIA_ROOT" not in str(summary)

    left["media"] = 16 * 1024
    status, report = healthz(staff_client)
    assert status == 503 and "storage" in report["failing"]
    assert report["checks"]["storage"]["error"] == (
        f"LEUKOSCOPE_MEDIA_ROOT={settings.MEDIA_ROOT} has 16 KB left on its disk, less than one upload of "
        "25 MB (LEUKOSCOPE_MAX_UPLOAD_BYTES): free space there, or uploads and the workers' pictures "
        "are refused")
    left["media"] = 2 * 1024 * 2**20
    report = healthz(staff_client)[1]
    assert "storage" not in report["failing"] and "warning" not in report["checks"]["storage"]


def test_healthz_reads_the_sqlite_database_s_disk_too(staff_client, settings, monkeypatch):
    import shutil
    from pathlib import Path

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("a PostgreSQL server's disk is its own to watch")
    folder = Path(connection.settings_dict["NAME"]).parent
    monkeypatch.setattr(shutil, "disk_usage", disk_leaving(folder, lambda: 8 * 2**20))
    status, report = healthz(staff_client)
    assert status == 503 and "database" in report["failing"]
    assert report["checks"]["database"]["error"] == (
        f"the SQLite database's folder {folder} has 8 MB left on its disk, less than one upload of "
        "25 MB (LEUKOSCOPE_MAX_UPLOAD_BYTES): free space there, or every change is refused once it "
        "is full")
    # The database answered: the checks that read it still run, rather than calling it unreachable.
    assert report["checks"]["work"] == {"ok": True, "queued_photographs": 0, "processing_photographs": 0,
                                        "abandoned_trainings": 0}
    assert report["checks"]["model"].get("error") != "database unreachable"


def test_one_watch_answers_many_threads_at_once(tmp_path):
    # /healthz's storage check shares one watch among a web server's threads; unguarded, two at once
    # joined a probe thread before it started (RuntimeError) and read a healthy folder as hung.
    from concurrent.futures import ThreadPoolExecutor

    watch = broker.MediaFolderWatch(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda _: watch.state(), range(400)))
    assert all(state["usable"] for state in states)
