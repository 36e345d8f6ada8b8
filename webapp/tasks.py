"""Celery tasks: thin, idempotent wrappers that take ids and call one service each.

Only ``webapp.queueing`` sends them.
"""

import logging

from celery import shared_task
from celery.signals import task_prerun
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError

from webapp.db_errors import is_database_full, is_transient_database_error
from webapp.models import SmearImage
from webapp.services.added_cells import finish_added_cell
from webapp.services.classification import StorageUnreachable, classify_smear_image
from webapp.services.liveness import claim_image, heartbeat
from webapp.services.training import run_training

logger = logging.getLogger(__name__)

# A database that did not answer in time is tried again every 5 s, 24 times: two minutes where each
# try fails at once (a PostgreSQL restarting), some ten where each waits out SQLite's 20 s lock
# timeout. Each try classifies the photograph again: a tenth of a second of the network.
DATABASE_RETRY_SECONDS, DATABASE_RETRIES = 5, 24


def _retry_when_busy(task, error, what):
    """Raise ``task``'s retry where ``error`` is a database busy past its timeout (SQLite's write
    lock) or out of reach a moment (db_errors): the same message again shortly, which the task's
    claim still holds. A database whose disk is full is waited for as a media folder is: without limit,
    every STORAGE_RETRY_SECONDS, until space is freed. Any other database error is raised as it is."""
    if is_database_full(error):
        logger.error("%s: the database's disk is full (%s); trying again in %g s", what, error,
                     settings.STORAGE_RETRY_SECONDS)
        raise task.retry(exc=error, countdown=settings.STORAGE_RETRY_SECONDS, max_retries=None) from None
    if not is_transient_database_error(error):
        raise error
    logger.warning("%s: the database did not answer (%s); trying again", what, error)
    raise task.retry(exc=error, countdown=DATABASE_RETRY_SECONDS, max_retries=DATABASE_RETRIES) from None


@task_prerun.connect
def _forget_content_type_ids(**_):
    # Audit rows name each record's content type by id. A long-lived worker caches those ids;
    # after the database is restored or re-created under it (a restore, a test's flush) they name
    # rows that are gone and every audit row fails. One small query per task reads them afresh.
    ContentType.objects.clear_cache()


# Acknowledged when done: a photograph whose worker dies mid-way comes back (at once when only the
# worker child dies, after the broker's visibility timeout when the whole worker does), and the
# claim makes sure a second delivery never classifies it twice.
@shared_task(name="webapp.tasks.classify_image", acks_late=True, bind=True)
def classify_image(self, image_id, model_version_id=None):
    # model_version_id: messages sent before the version was read from the row carry it; ignored.
    try:
        if not claim_image(image_id, self.request.id):
            return
        row = SmearImage.objects.filter(pk=image_id)
        version_id = row.values_list("requested_version", flat=True).first()
        with heartbeat(SmearImage, image_id):
            cells = classify_smear_image(image_id, model_version_id=version_id, task_id=self.request.id)
    except StorageUnreachable as exc:
        # The photograph is queued again; this message comes back later, to whichever worker
        # takes it, until one can read the photograph. No limit: the photograph is not at fault.
        raise self.retry(exc=exc, countdown=settings.STORAGE_RETRY_SECONDS, max_retries=None) from None
    except DatabaseError as exc:
        # Past the retries the photograph's heartbeat goes silent and the reconciler queues it
        # again; it is never marked failed for a busy database.
        _retry_when_busy(self, exc, f"Image {image_id}")
    if cells is not None:  # None: failed, deleted or left to a newer run, each logged where it happened
        logger.info("Image %s finished by task %s", image_id, self.request.id)


# A box a reviewer drew around a missed cell. Acknowledged when done, like a photograph: the
# service adds the cell only while its request has none, so a second delivery adds nothing.
@shared_task(name="webapp.tasks.add_cell", acks_late=True, bind=True)
def add_cell(self, request_id):
    try:
        finish_added_cell(request_id)
    except StorageUnreachable as exc:
        raise self.retry(exc=exc, countdown=settings.STORAGE_RETRY_SECONDS, max_retries=None) from None
    except DatabaseError as exc:
        _retry_when_busy(self, exc, f"Drawn box {request_id}")  # the box stays pending meanwhile


# Acknowledged on receipt: a training runs far longer than any visibility timeout, and must not be
# handed to a second worker while the first still trains. If its worker dies the message is gone;
# the heartbeat goes silent and the reconciler marks the version failed with the reason.
@shared_task(name="webapp.tasks.train_model_version", acks_late=False)
def train_model_version(version_id):
    run_training(version_id)
