"""Work is delivered once and never lost: sending, claims, heartbeats and the reconciler, in the
database and without a broker (tests/faults/ does the same with real processes and faults)."""

import threading
from datetime import timedelta

import pytest
from celery import current_app
from django.contrib.sessions.models import Session
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone

from tests.webapp.lab_factories import make_sample, make_version
from tests.webapp.test_uploads import jpeg_bytes, upload
from webapp import queueing, selectors, tasks
from webapp.models import ModelVersion, SmearImage
from webapp.services import liveness, training
from webapp.services.reconciler import reconcile_work
from webapp.services.uploads import create_sample_with_images


def queued_image(**fields):
    sample = make_sample(types=())
    SmearImage.objects.update(**{"status": "queued", "sent_at": None, **fields})
    return sample.images.get()


@pytest.fixture
def broker_down(monkeypatch):
    """Every publish fails as it does with Redis stopped; the attempts are counted."""
    attempts = []

    def send_task(*args, **kwargs):
        attempts.append(args)
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(current_app, "send_task", send_task)
    monkeypatch.setattr(queueing, "queue_length", lambda queue: None)
    return attempts


@pytest.fixture
def broker_up(sent_tasks, monkeypatch):
    """A broker that takes every message, with empty queues."""
    monkeypatch.setattr(queueing, "queue_length", lambda queue: 0)
    return sent_tasks


def classify_sends(sent):
    return [args[0] for task, args in sent if task == "classify_image"]


# --- sending ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_an_upload_with_the_broker_down_is_stored_and_says_it_waits(client, tech, broker_down,
                                                                     django_capture_on_commit_callbacks):
    files = [upload(f"s{k}.jpg", jpeg_bytes(seed=k)) for k in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("lab:upload"), {"accession_number": "B-1", "images": files},
                               follow=True)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count("The task queue cannot be reached just now: the photograph is stored") == 3
    # The reliability audit: the upload's message said "3 photographs queued for classification".
    assert ("3 photographs stored. The task queue does not answer at the moment, so they wait and go to "
            "the classifier as soon as it does: nobody has to act.") in body
    assert "queued for classification" not in body
    images = SmearImage.objects.all()
    assert [image.status for image in images] == ["queued"] * 3
    assert all(image.sent_at is None for image in images)
    # One try, not one per photograph: each would cost the request the broker's timeout again.
    assert len(broker_down) == 1


@pytest.mark.django_db
def test_the_reconciler_sends_what_the_broker_missed_once_it_answers(broker_down, monkeypatch):
    image = queued_image(queued_at=timezone.now() - timedelta(minutes=1))
    assert reconcile_work().images_sent == 0 and not reconcile_work().broker_reachable
    image.refresh_from_db()
    assert image.sent_at is None

    sent = []
    monkeypatch.setattr(queueing, "publish", lambda name, args, *, queue, task_id=None:
                        sent.append(args[0]) or True)
    monkeypatch.setattr(queueing, "queue_length", lambda queue: 0)
    assert reconcile_work().images_sent == 1 and sent == [image.pk]
    assert reconcile_work().images_sent == 0, "sent once, not at every sweep"
    image.refresh_from_db()
    assert image.sent_at is not None


@pytest.mark.django_db
def test_the_reconciler_removes_sign_ins_past_their_expiry(client, tech, broker_down):
    """A sign-in never signed out stayed in the session table for good: 100 sign-ins of a soak
    left 100 rows, expired after LEUKOSCOPE_SESSION_HOURS and never removed. The sweep removes
    them, broker or not, and leaves the sign-ins still in force."""
    client.force_login(tech)
    client.get(reverse("home"))
    ended = client.session.session_key
    Session.objects.filter(session_key=ended).update(expire_date=timezone.now() - timedelta(seconds=1))
    later = type(client)()
    later.force_login(tech)
    assert Session.objects.count() == 2
    reconcile_work()
    assert list(Session.objects.values_list("session_key", flat=True)) == [later.session.session_key]
    assert later.get(reverse("home")).status_code == 200


@pytest.mark.django_db
def test_the_reconciler_leaves_a_fresh_upload_to_its_own_request(broker_up):
    queued_image(queued_at=timezone.now())
    assert reconcile_work().images_sent == 0 and broker_up == []


@pytest.mark.django_db
def test_a_lost_message_is_sent_again_only_when_its_queue_is_empty(broker_up, monkeypatch, settings):
    settings.QUEUED_STUCK_AFTER = 300
    long_ago = timezone.now() - timedelta(minutes=6)
    image = queued_image(queued_at=long_ago, sent_at=long_ago)
    monkeypatch.setattr(queueing, "queue_length", lambda queue: 40)  # behind 40 others: waits its turn
    assert reconcile_work().images_sent == 0
    monkeypatch.setattr(queueing, "queue_length", lambda queue: 0)  # nothing left: it was lost
    assert reconcile_work().images_sent == 1 and classify_sends(broker_up) == [image.pk]
    assert reconcile_work().images_sent == 0


@pytest.mark.django_db
def test_a_photograph_whose_worker_died_is_queued_again_and_a_live_one_is_left(broker_up, settings):
    settings.WORKER_LOST_AFTER = 60
    dead = queued_image(status="processing", heartbeat_at=timezone.now() - timedelta(minutes=2),
                        queued_at=timezone.now() - timedelta(minutes=3))
    alive = make_sample(accession="L-2", types=()).images.get()
    SmearImage.objects.filter(pk=alive.pk).update(status="processing", heartbeat_at=timezone.now())
    report = reconcile_work()
    assert report.images_requeued == 1 and report.images_sent == 1
    assert classify_sends(broker_up) == [dead.pk]
    assert SmearImage.objects.get(pk=dead.pk).status == "queued"
    assert SmearImage.objects.get(pk=alive.pk).status == "processing"


@pytest.mark.django_db(transaction=True)
def test_two_reconcilers_at_once_send_each_photograph_once(monkeypatch):
    old = timezone.now() - timedelta(minutes=1)
    ids = [queued_image(queued_at=old).pk]
    ids += [make_sample(accession=f"T-{k}", types=()).images.get().pk for k in range(5)]
    SmearImage.objects.update(status="queued", sent_at=None, queued_at=old)
    sent, lock = [], threading.Lock()

    def publish(name, args, *, queue, task_id=None):
        with lock:
            sent.append(args[0])
        return True

    monkeypatch.setattr(queueing, "publish", publish)
    monkeypatch.setattr(queueing, "queue_length", lambda queue: 0)
    barrier = threading.Barrier(2)

    def sweep():
        barrier.wait()
        try:
            reconcile_work()
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent) == sorted(ids)


# --- claims: one delivery runs ------------------------------------------------------------------

@pytest.fixture
def classified(monkeypatch):
    """Image ids and versions the classification service was called with (a stand-in)."""
    calls = []

    def classify_smear_image(image_id, model_version_id=None, task_id=None):
        calls.append((image_id, model_version_id))
        SmearImage.objects.filter(pk=image_id).update(status="done")

    monkeypatch.setattr(tasks, "classify_smear_image", classify_smear_image)
    return calls


@pytest.mark.django_db
def test_a_second_delivery_of_a_done_photograph_does_nothing(classified):
    version = make_version()
    image = queued_image(requested_version=version)
    tasks.classify_image.apply(args=(image.pk,), kwargs={"model_version_id": 999}, task_id="first")
    tasks.classify_image.apply(args=(image.pk,), task_id="second")
    tasks.classify_image.apply(args=(image.pk,), task_id="first")
    assert classified == [(image.pk, version.pk)], "the version comes from the row, not the message"


@pytest.mark.django_db
def test_a_photograph_a_live_task_holds_goes_only_to_that_task_again(classified, settings):
    settings.WORKER_LOST_AFTER = 60
    image = queued_image()
    assert liveness.claim_image(image.pk, "first")
    assert not liveness.claim_image(image.pk, "second")  # e.g. a late duplicate from the reconciler
    # Its message back after the worker child running it was killed: the same task id.
    assert liveness.claim_image(image.pk, "first")
    SmearImage.objects.filter(pk=image.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=2))
    assert liveness.claim_image(image.pk, "second"), "the holder's heartbeat went silent"



@pytest.mark.django_db
def test_a_database_too_busy_to_answer_is_tried_again_not_a_failed_photograph(monkeypatch):
    # The concurrency audit held SQLite's write lock past its 20 s: the photograph being stored was
    # marked failed ("database is locked"), and a claim that hit it lost its message.
    image = queued_image()
    calls = []

    def busy_once(image_id, model_version_id=None, task_id=None):
        calls.append(task_id)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        SmearImage.objects.filter(pk=image_id).update(status="done")

    monkeypatch.setattr(tasks, "classify_smear_image", busy_once)
    tasks.classify_image.apply(args=(image.pk,), task_id="busy")
    assert calls == ["busy", "busy"], "tried again as the same task, whose claim holds the photograph"
    assert SmearImage.objects.get(pk=image.pk).status == "done"

    other = queued_image()
    claim = liveness.claim_image
    claims = []

    def claim_busy_once(image_id, task_id):
        claims.append(task_id)
        if len(claims) == 1:
            raise OperationalError("database is locked")
        return claim(image_id, task_id)

    monkeypatch.setattr(tasks, "claim_image", claim_busy_once)
    tasks.classify_image.apply(args=(other.pk,), task_id="claimed-late")
    assert claims == ["claimed-late", "claimed-late"] and SmearImage.objects.get(pk=other.pk).status == "done"

    # A drawn box likewise.
    boxes = []

    def box_busy_once(request_id):
        boxes.append(request_id)
        if len(boxes) == 1:
            raise OperationalError("database is locked")

    monkeypatch.setattr(tasks, "finish_added_cell", box_busy_once)
    tasks.add_cell.apply(args=(7,))
    assert boxes == [7, 7]


@pytest.mark.django_db
def test_tasks_sent_but_not_recorded_as_sent_fail_nothing(monkeypatch, sent_tasks, caplog):
    # After the upload was committed, its tasks went, and recording them as sent met a busy database:
    # the upload answered an error for work that was done. The reconciler sends them again instead.
    image = queued_image()

    class Busy:
        def filter(self, **kwargs):
            raise OperationalError("database is locked")

    monkeypatch.setattr(queueing, "SmearImage", type("Images", (), {"objects": Busy()}))
    assert queueing.send_classifications([image.pk]) == [image.pk]
    assert sent_tasks == [("classify_image", (image.pk,))]
    assert "sent but not recorded as sent" in caplog.text
    assert SmearImage.objects.get(pk=image.pk).sent_at is None  # the reconciler's to send again

@pytest.mark.django_db(transaction=True)
def test_a_running_task_keeps_its_heartbeat(settings):
    image = queued_image(status="processing", heartbeat_at=timezone.now() - timedelta(hours=1))
    before = SmearImage.objects.get(pk=image.pk).heartbeat_at
    with liveness.heartbeat(SmearImage, image.pk, every=0.01):
        while SmearImage.objects.get(pk=image.pk).heartbeat_at == before:
            threading.Event().wait(0.01)
    assert not selectors.lost_images().filter(pk=image.pk).exists()


# --- trainings ----------------------------------------------------------------------------------

@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", is_staff=True)


def running_version(heartbeat_at, state="running"):
    return ModelVersion.objects.create(
        architecture="paper", task="4class", status=ModelVersion.Status.TRAINING, source="site",
        progress={"state": state, "epoch": 2, "epochs": 30}, heartbeat_at=heartbeat_at,
    )


@pytest.mark.django_db
def test_a_training_whose_worker_died_is_failed_by_the_sweep_and_a_new_one_can_start(
        staff, broker_up, settings):
    settings.WORKER_LOST_AFTER = 60
    alive = running_version(timezone.now())
    assert reconcile_work().trainings_failed == 0
    with pytest.raises(training.TrainingRefused, match="already training"):
        training.start_training(staff, "paper", 1, task="4class", data_dir="/x")

    ModelVersion.objects.filter(pk=alive.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=2))
    assert reconcile_work().trainings_failed == 1
    dead = ModelVersion.objects.get(pk=alive.pk)
    assert dead.status == "failed" and dead.failure_reason == training.WORKER_DIED_REASON
    assert dead.progress["state"] == "failed" and dead.finished_at is not None
    assert training.start_training(staff, "paper", 1, task="4class", data_dir="/x").status == "training"


@pytest.mark.django_db
# "queued" with a heartbeat: the first delivery claimed it and is still reading its images.
@pytest.mark.parametrize("state", ["running", "queued"])
def test_a_duplicate_training_delivery_leaves_the_live_run_alone(monkeypatch, settings, state):
    settings.WORKER_LOST_AFTER = 60
    version = running_version(timezone.now(), state)
    monkeypatch.setattr(training, "_train", lambda *args: pytest.fail("trained twice"))
    training.run_training(version.pk)
    assert ModelVersion.objects.get(pk=version.pk).status == "training"


@pytest.mark.django_db
def test_cancel_stops_the_process_that_trains(staff, monkeypatch, django_capture_on_commit_callbacks):
    revoked = []
    monkeypatch.setattr(current_app.control, "revoke", lambda task_id, **options:
                        revoked.append((task_id, options)))
    version = running_version(timezone.now())
    ModelVersion.objects.filter(pk=version.pk).update(celery_task_id="train-task-1")
    with django_capture_on_commit_callbacks(execute=True):
        training.cancel_training(version, staff)
    assert revoked == [("train-task-1", {"terminate": True, "signal": "SIGTERM"})]
    assert ModelVersion.objects.get(pk=version.pk).status == "cancelled"


# --- what the pages and /healthz say ------------------------------------------------------------

@pytest.mark.django_db
def test_an_upload_that_was_sent_carries_no_waiting_note(client, tech, broker_up,
                                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = create_sample_with_images("U-1", "", [upload("a.jpg", jpeg_bytes())])
    assert classify_sends(broker_up) == [result.stored[0].pk]
    assert SmearImage.objects.get().sent_at is not None
    body = client.get(reverse("lab:sample-detail", args=[result.sample.pk])).content.decode()
    assert "Waiting for the classifier" in body and "cannot be reached" not in body
