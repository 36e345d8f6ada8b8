"""The one place that sends work to the Celery workers.

Tasks are sent by name, after the surrounding transaction commits (a worker never looks for a row
that is not there yet), and a broker that cannot be reached never fails the request that asked for
the work: the record keeps its state (a photograph stays ``queued``, a training stays ``training``
with no task id) and is logged; the reconciler queues such work again once the broker answers.
"""

import logging

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)

CLASSIFY_TASK = "webapp.tasks.classify_image"
TRAIN_TASK = "webapp.tasks.train_model_version"
RECONCILE_TASK = "webapp.tasks.reconcile_work"


def send_now(task_name, *, args=(), kwargs=None, queue):
    """Send one task; return its id, or None (logged) when the broker cannot be reached."""
    try:
        result = current_app.send_task(task_name, args=list(args), kwargs=kwargs or {}, queue=queue)
    except Exception as exc:  # kombu raises OperationalError, redis its own errors: any means "not sent"
        logger.warning("Broker unreachable, %s%s left for the reconciler (%s: %s)",
                       task_name, tuple(args), type(exc).__name__, exc)
        return None
    return result.id


def _on_commit(task_name, *, args, kwargs=None, queue, on_sent=None):
    def send():
        task_id = send_now(task_name, args=args, kwargs=kwargs, queue=queue)
        if task_id and on_sent is not None:
            on_sent(task_id)

    transaction.on_commit(send)


def queue_classification(image_id, model_version_id=None):
    """Classify one stored photograph once the current transaction commits."""
    _on_commit(CLASSIFY_TASK, args=(image_id,), kwargs={"model_version_id": model_version_id},
               queue="classify")


def queue_training(version_id, on_sent=None):
    """Train one version once the current transaction commits; ``on_sent(task_id)`` records the id."""
    _on_commit(TRAIN_TASK, args=(version_id,), queue="train", on_sent=on_sent)
