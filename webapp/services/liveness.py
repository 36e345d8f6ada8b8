"""Which task works on what, and whether it is still alive.

A message may reach a worker more than once: Redis hands an unacknowledged message out again
after the visibility timeout, a killed worker child's message is put back, and the reconciler
sends again what it finds lost. So a classify task first *claims* its photograph in one
conditional UPDATE, and only one delivery can win it; the others find it taken (or done) and
stop. While a task works it writes a heartbeat; a record whose heartbeat has gone silent for
WORKER_LOST_AFTER belongs to a worker that died, and the reconciler takes it back.
"""

import logging
import threading
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from webapp.models import ModelVersion, SmearImage
from webapp.selectors import abandoned_trainings, silent_heartbeat

logger = logging.getLogger(__name__)


def claim_image(image_id, task_id):
    """Take a photograph for classification by this task; True when this delivery should run it.

    It may: a queued photograph; one that a dead worker left processing (silent heartbeat); one
    this same task held before (the message came back because the worker child running it was
    killed, so that child is gone). Not: a photograph done, failed, deleted, or being classified
    by a live task. The version comes from the row, never from the message (see queueing).
    """
    claimable = Q(status=SmearImage.Status.QUEUED) | (
        Q(status=SmearImage.Status.PROCESSING) & (Q(task_id=task_id) | silent_heartbeat())
    )
    claimed = SmearImage.objects.filter(pk=image_id).filter(claimable).update(
        status=SmearImage.Status.PROCESSING, task_id=task_id, heartbeat_at=timezone.now()
    )
    if not claimed:
        state = SmearImage.objects.filter(pk=image_id).values_list("status", flat=True).first()
        logger.info("Image %s not classified by task %s: it is %s", image_id, task_id,
                    state or "deleted")
    return bool(claimed)


class TrainingClaim:
    CLAIMED = "claimed"  # this process trains it
    RUNNING = "running"  # a live process already trains it: this delivery is a duplicate
    ABANDONED = "abandoned"  # it was started, and the process that trained it has died
    FINISHED = "finished"  # not training any more (done, failed, cancelled or deleted)


def claim_training(version_id):
    """Take a version for training by this process (see TrainingClaim)."""
    waiting = ModelVersion.objects.filter(
        pk=version_id, status=ModelVersion.Status.TRAINING, heartbeat_at__isnull=True
    ).exclude(progress__state="running")
    if waiting.update(heartbeat_at=timezone.now()):
        return TrainingClaim.CLAIMED
    training = ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.TRAINING)
    if not training.exists():
        return TrainingClaim.FINISHED
    if abandoned_trainings().filter(pk=version_id).exists():
        return TrainingClaim.ABANDONED
    return TrainingClaim.RUNNING


@contextmanager
def heartbeat(model, pk, every=None):
    """Write ``heartbeat_at`` on one record every HEARTBEAT_SECONDS while the block runs.

    From a thread, because the work itself (a network call, preparing training inputs) does not
    come back to Python often enough to be trusted with a clock; the thread has its own database
    connection, closed when the block ends.
    """
    every = settings.HEARTBEAT_SECONDS if every is None else every
    stop = threading.Event()

    def beat():
        try:
            while not stop.wait(every):
                try:
                    model.objects.filter(pk=pk).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:  # a busy or unreachable database: try again next beat
                    logger.warning("Heartbeat of %s %s not written (%s)", model.__name__, pk, exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.__name__}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
