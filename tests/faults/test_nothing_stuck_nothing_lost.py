"""Faults injected into real processes: a Redis of the module's own on its own port, real Celery
workers, the real reconciler (`manage.py reconcile`), the bundled network on BCCD smears.

Each test ends with every photograph done, its cells stored by exactly one task run (the audit
row that run wrote with them), and no cell twice. Settings are shortened for the child processes (a heartbeat
every second, a worker taken for dead after 8 s of silence, a sweep every second) so that the
module runs in minutes; the mechanisms are the production ones.
"""

import collections
import os
import signal
import subprocess
import sys

import psutil
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.conftest import _database_url_for_worker, point_celery_at, require_dataset
from tests.conftest import wait_for as shared_wait_for
from tests.synthetic_cells import write_cell_folder
from tests.webapp.lab_factories import with_role
from webapp.broker import redis_answers, start_embedded_redis
from webapp.worker_process import REPO_ROOT, start_worker, stop_worker

# reset_sequences: the bundled network is registered again in each test under the same id, so
# a worker that lives through several tests keeps it loaded.
pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, reset_sequences=True)]

# Generous: the machine running the suite may be busy with other work. Nothing here measures time.
DEADLINE_S = 150
PHOTOGRAPHS_PER_SAMPLE = 4


def wait_for(condition, what, timeout=DEADLINE_S):
    return shared_wait_for(condition, what, timeout)


class FaultLab:
    """The module's own broker, workers and reconciler, which the tests break and mend."""

    def __init__(self, root, env):
        self.root, self.env = root, env
        self.redis_dir = root / "redis"
        self.redis = start_embedded_redis(self.redis_dir)
        self.port = int(self.redis.url.rsplit(":", 1)[1].split("/")[0])
        self.env["REDIS_URL"] = self.redis.url
        self.logs = []
        self.workers = {}
        self.reconciler = None
        self.read_from = {}

    # --- the broker
    def stop_redis(self):
        self.redis.stop()  # SIGTERM: Redis flushes its append-only file and exits

    def start_redis(self):
        self.redis = start_embedded_redis(self.redis_dir, port=self.port)

    def queue_length(self, queue):
        import redis

        return redis.Redis.from_url(self.redis.url).llen(queue)

    # --- the processes
    def start_worker(self, name, queues, *extra, **settings):
        """settings: environment variables for this worker alone, over the lab's."""
        log = self.root / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        self.workers[name] = start_worker(f"fault-{name}", queues, dict(self.env, **settings), log,
                                          extra_args=extra)
        return self.workers[name]

    def kill_worker(self, name):
        """`kill -9` the whole worker, its pool children included, as a crash or the OOM killer would."""
        process = self.workers.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def start_reconciler(self):
        log = open(self.root / "reconciler.log", "ab")
        self.reconciler = subprocess.Popen(
            [sys.executable, "manage.py", "reconcile", "--every", "1"], cwd=REPO_ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self):
        for process in self.workers.values():
            stop_worker(process)
        if self.reconciler is not None:
            self.reconciler.send_signal(signal.SIGTERM)
            self.reconciler.wait(timeout=30)
        self.redis.stop()

    def log_tails(self, characters=3000):
        """The end of each worker's log and the reconciler's, for a failure's message."""
        logs = [*self.logs, self.root / "reconciler.log"]
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-characters:]}"
                         for log in logs if log.exists())


@pytest.fixture(scope="module")
def smears():
    folder = require_dataset("bccd-smears", "JPEGImages")
    return sorted(folder.glob("BloodImage_*.jpg"))[:PHOTOGRAPHS_PER_SAMPLE]


@pytest.fixture(scope="module")
def fault_lab(django_db_setup, isolated_media_root, tmp_path_factory, smears):
    from webapp.celery import app as celery_app

    env = dict(
        os.environ,
        DATABASE_URL=_database_url_for_worker(),
        LEUKOSCOPE_MEDIA_ROOT=str(isolated_media_root),
        LEUKOSCOPE_HEARTBEAT_SECONDS="1",
        LEUKOSCOPE_WORKER_LOST_AFTER="8",
        LEUKOSCOPE_RECONCILE_EVERY="1",
        # Long enough that a message sent to the queue is never sent again within a test: what
        # brings photographs through a Redis restart must be the append-only file.
        LEUKOSCOPE_QUEUED_STUCK_AFTER="600",
        LEUKOSCOPE_BROKER_VISIBILITY_TIMEOUT="30",
        PYTHONUNBUFFERED="1",
    )
    previous_broker = celery_app.conf.broker_url
    lab = FaultLab(tmp_path_factory.mktemp("faults"), env)
    point_celery_at(lab.redis.url)
    try:
        lab.start_reconciler()
        yield lab
    finally:
        lab.stop()
        point_celery_at(previous_broker)


@pytest.fixture
def lab(fault_lab, django_user_model):
    from tests.e2e.served_model import activate_served_model

    fault_lab.version = activate_served_model()
    fault_lab.user = with_role(django_user_model.objects.create_user("faults", is_staff=True), "technologist")
    return fault_lab


def upload(lab, accession, smears):
    client = Client()
    client.force_login(lab.user)
    files = [SimpleUploadedFile(path.name, path.read_bytes()) for path in smears]
    response = client.post(reverse("lab:upload"), {"accession_number": accession, "images": files},
                           follow=True)
    return response


def images_of(accession):
    from webapp.models import SmearImage

    return list(SmearImage.objects.filter(sample__accession_number=accession).order_by("pk"))


def wait_until_done(lab, accession):
    def done():
        images = images_of(accession)
        return images if all(image.status in ("done", "failed") for image in images) else None

    try:
        return wait_for(done, f"every photograph of {accession} to finish")
    except pytest.fail.Exception as timed_out:  # the logs as they end then, not as they began
        pytest.fail(f"{timed_out.msg}; the logs end:\n{lab.log_tails()}")


def runs_that_stored(images):
    """How many task runs stored each photograph's cells. Each writes one audit row ("classified
    by v1: N cells") in the transaction that marks the photograph done, so the count is whole the
    moment the photograph is done. A worker's log line comes after that commit: a pool child lost
    just then never writes it, and its message, delivered again, finds the photograph done."""
    from auditlog.models import LogEntry

    from webapp.models import SmearImage

    stored = collections.Counter(
        int(entry.object_pk) for entry in LogEntry.objects.get_for_model(SmearImage).filter(
            object_pk__in=[str(image.pk) for image in images])
        if entry.changes_dict.get("status", [None, None])[1] == "done"
    )
    return {image.pk: stored[image.pk] for image in images}


def assert_done_exactly_once(lab, images):
    from webapp.models import Cell

    assert [image.status for image in images] == ["done"] * len(images), [i.error for i in images]
    assert runs_that_stored(images) == {image.pk: 1 for image in images}, lab.log_tails()
    for image in images:
        cells = list(Cell.objects.filter(image=image).values_list("model_version", "index", "x0", "y0",
                                                                   "x1", "y1"))
        assert cells, f"no leukocyte found in {image.original_filename}"
        assert {cell[0] for cell in cells} == {image.model_version_id}
        assert len({cell[1] for cell in cells}) == len({cell[2:] for cell in cells}) == len(cells)


def test_a_classify_worker_killed_mid_sample_is_replaced_and_nothing_is_lost(lab, smears):
    lab.start_worker("classify", "classify")
    assert upload(lab, "KILL-1", smears).status_code == 200

    def mid_sample():
        statuses = [image.status for image in images_of("KILL-1")]
        return "processing" in statuses and "queued" in statuses

    wait_for(mid_sample, "the worker to be in the middle of the sample", timeout=DEADLINE_S)
    lab.kill_worker("classify")  # kill -9, its pool child with it
    in_flight = [image for image in images_of("KILL-1") if image.status == "processing"]
    assert in_flight, "a photograph was being classified when the worker died"

    lab.start_worker("classify", "classify")
    # The queued ones come from Redis; the one in flight from the reconciler, once its heartbeat
    # has been silent for 8 s (not after the visibility timeout).
    assert_done_exactly_once(lab, wait_until_done(lab, "KILL-1"))


def test_an_upload_while_the_broker_is_down_is_stored_and_classified_once_it_is_back(lab, smears):
    if "classify" not in lab.workers:
        lab.start_worker("classify", "classify")
    lab.stop_redis()
    try:
        response = upload(lab, "DOWN-1", smears)
        assert response.status_code == 200
        assert response.redirect_chain[-1][1] == 302
        page = response.content.decode()
        assert page.count("The task queue cannot be reached just now") == len(smears)
        assert all(image.status == "queued" and image.sent_at is None for image in images_of("DOWN-1"))
    finally:
        lab.start_redis()
    # Nobody acts: the worker reconnects, the reconciler sends what the broker missed.
    assert_done_exactly_once(lab, wait_until_done(lab, "DOWN-1"))


def test_queued_photographs_survive_a_restart_of_the_embedded_redis(lab, smears):
    if "classify" in lab.workers:
        stop_worker(lab.workers.pop("classify"))  # nobody takes them: they wait in Redis
    assert upload(lab, "AOF-1", smears).status_code == 200
    assert all(image.sent_at for image in images_of("AOF-1"))
    assert lab.queue_length("classify") == len(smears)

    lab.stop_redis()
    assert not redis_answers(lab.redis.url, timeout=0.2)
    lab.start_redis()
    assert lab.queue_length("classify") == len(smears), "the messages came back from the append-only file"

    lab.start_worker("classify", "classify")
    assert_done_exactly_once(lab, wait_until_done(lab, "AOF-1"))


def test_a_killed_training_worker_is_failed_by_the_sweep_and_a_cancel_frees_its_cpu(lab, tmp_path):
    from webapp.models import ModelVersion
    from webapp.services import training

    if "classify" in lab.workers:
        stop_worker(lab.workers.pop("classify"))  # the CPU is the training's
    data = write_cell_folder(tmp_path / "cells", per_class=3, test_per_class=1)
    lab.start_worker("train", "train", "--max-tasks-per-child", "1")

    def running(version, epochs_done):
        def check():
            row = ModelVersion.objects.get(pk=version.pk)
            return row if row.progress.get("epoch", 0) >= epochs_done and "process" in row.progress else None

        return wait_for(check, f"v{version.pk} to train")

    start = training.start_training
    first = running(start(lab.user, "paper", 500, task="4class", data_dir=str(data)), epochs_done=1)
    lab.kill_worker("train")

    failed = wait_for(lambda: ModelVersion.objects.filter(pk=first.pk, status="failed").first(),
                      "the sweep to mark the training failed")
    assert failed.failure_reason == training.WORKER_DIED_REASON
    assert training.training_in_progress() is None

    # The training loop never looks for the cancel itself here: had it found it first (it looks every
    # second by default), the process would end without the revoke this test is about.
    lab.start_worker("train", "train", "--max-tasks-per-child", "1",
                     LEUKOSCOPE_TRAINING_CANCEL_CHECK_SECONDS="86400")
    # Cancelled while it prepares its inputs or trains: either way the process goes at once.
    second = running(start(lab.user, "paper", 500, task="4class", data_dir=str(data)), epochs_done=0)
    pid = second.progress["process"]["pid"]
    assert psutil.pid_exists(pid)
    training.cancel_training(second, lab.user)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             "the training process to stop")
    # Stopped by the worker on the revoke.
    log = lab.logs[-1]
    assert wait_for(lambda: "Terminating" in log.read_text() or "Terminated" in log.read_text(),
                    "the worker to report the termination")
    assert ModelVersion.objects.get(pk=second.pk).status == "cancelled"
