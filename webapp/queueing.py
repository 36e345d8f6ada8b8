"""The one place that sends work to the Celery workers.

Tasks are sent by name, after the surrounding transaction commits (a worker never looks for a row
that is not there yet), and a broker that cannot be reached never fails the request that asked for
the work: the record keeps its state (a photograph stays ``queued``, a training stays ``training``)
with no ``sent_at``, the failure is logged, and the reconciler (``services/reconciler.py``) sends
it once the broker answers. Settings keep a failed send short (one quick retry, two-second socket
timeouts), so an upload answers in about a second even with the broker down.
"""

import logging
import uuid

from celery import current_app
from django.db import DatabaseError, transaction
from django.utils import timezone

from webapp.models import AddedCellRequest, ModelVersion, SmearImage

logger = logging.getLogger(__name__)

CLASSIFY_TASK = "webapp.tasks.classify_image"
TRAIN_TASK = "webapp.tasks.train_model_version"
ADD_CELL_TASK = "webapp.tasks.add_cell"
CLASSIFY_QUEUE = "classify"
TRAIN_QUEUE = "train"
# Re-classifying a whole archive sends tens of thousands at once; SQLite takes at most 32,766
# parameters in one statement.
SENT_MARK_BATCH = 1000


def publish(task_name, args, *, queue, task_id=None):
    """Send one task now; False (logged) when the broker cannot be reached."""
    try:
        current_app.send_task(task_name, args=list(args), queue=queue, task_id=task_id)
    except Exception as exc:  # kombu raises OperationalError, redis its own errors: any means "not sent"
        logger.warning("Broker unreachable, %s%s left for the reconciler (%s: %s)",
                       task_name, tuple(args), type(exc).__name__, exc)
        return False
    return True


def send_classifications(image_ids):
    """Send one classify task per photograph now and record which went; returns their ids.

    Stops at the first failure: the broker is down, and every further try would cost the request
    its timeout again. What was not sent keeps ``sent_at`` empty for the reconciler.
    """
    sent = []
    for image_id in image_ids:
        if not publish(CLASSIFY_TASK, (image_id,), queue=CLASSIFY_QUEUE):
            break
        sent.append(image_id)
    sent_at = timezone.now()

    def mark():
        # Each batch's rows locked by id first, as every writer that locks several photographs
        # takes them (a gallery relabel, a deletion): a bare UPDATE locks them in the order its plan
        # reads them, and one holding a later photograph while a relabel held an earlier one
        # deadlocked with it.
        ids = sorted(sent)
        for start in range(0, len(ids), SENT_MARK_BATCH):
            batch = SmearImage.objects.filter(pk__in=ids[start : start + SENT_MARK_BATCH])
            with transaction.atomic():
                list(batch.select_for_update().order_by("pk").values_list("pk", flat=True))
                batch.update(sent_at=sent_at)

    _record_sent(f"{len(sent)} classify task(s)", mark)
    return sent


def _record_sent(what, mark):
    """Run ``mark``, the update that records tasks as sent. It runs after the work was committed
    (on_commit), so a database too busy to take it must not fail the request that did the work: it
    is logged, and the reconciler may send the tasks again, which their claims make harmless."""
    try:
        mark()
    except DatabaseError as exc:
        logger.warning("%s sent but not recorded as sent (%s): the reconciler may send them again", what, exc)


def queue_classifications(image_ids):
    """Classify these stored photographs once the current transaction commits.

    The task carries the image id alone: the worker reads the version to use from the row
    (``requested_version``), so a message that arrives late or twice never classifies a photograph
    with a version it has since been moved away from.
    """
    image_ids = list(image_ids)
    if image_ids:
        transaction.on_commit(lambda: send_classifications(image_ids))


def send_added_cells(request_ids):
    """Send one add_cell task per drawn box now (on the classify queue: it needs the network);
    returns the ids that went. Stops at the first failure, as send_classifications does."""
    sent = []
    for request_id in request_ids:
        if not publish(ADD_CELL_TASK, (request_id,), queue=CLASSIFY_QUEUE):
            break
        sent.append(request_id)
    _record_sent(f"{len(sent)} add_cell task(s)",
                 lambda: AddedCellRequest.objects.filter(pk__in=sent).update(sent_at=timezone.now()))
    return sent


def queue_added_cells(request_ids):
    """Classify these drawn boxes (webapp.services.added_cells) once the transaction commits."""
    request_ids = list(request_ids)
    if request_ids:
        transaction.on_commit(lambda: send_added_cells(request_ids))


def send_training(version_id):
    """Send the training task of a version now; True when it went (its id is recorded)."""
    task_id = str(uuid.uuid4())
    if not publish(TRAIN_TASK, (version_id,), queue=TRAIN_QUEUE, task_id=task_id):
        return False
    _record_sent(f"The training of v{version_id}", lambda: ModelVersion.objects.filter(pk=version_id).update(
        celery_task_id=task_id, sent_at=timezone.now()))
    return True


def queue_training(version_id):
    """Train a version once the current transaction commits."""
    transaction.on_commit(lambda: send_training(version_id))


def stop_task(task_id):
    """Kill the worker process running a task (the task is not run if it has not started).

    For a training cancelled mid-run: the training loop only looks for a cancel between batches,
    and preparing the inputs or a validation pass can keep both cores busy for half a minute
    without looking. The train worker starts a fresh process per task, so nothing else is lost.
    """
    if not task_id:
        return False
    try:
        current_app.control.revoke(task_id, terminate=True, signal="SIGTERM")
    except Exception as exc:  # the broker is down: the training loop still stops at its next check
        logger.warning("Could not ask the workers to stop task %s (%s: %s)", task_id,
                       type(exc).__name__, exc)
        return False
    return True


def queue_length(queue):
    """How many messages wait in a queue, or None when the broker cannot be reached."""
    try:
        with current_app.connection_for_write() as connection:
            # Not passive: the Redis transport reports an emptied queue as missing.
            return connection.default_channel.queue_declare(queue=queue, passive=False).message_count
    except Exception as exc:
        logger.debug("Queue %s could not be measured (%s: %s)", queue, type(exc).__name__, exc)
        return None
