"""The reconciler: finds work that no live task will finish, and queues it again.

Each sweep, in this order:
1. a training whose process stopped sending its heartbeat is marked failed, with the reason, so
   that a new one can start (a training is never restarted behind the user's back);
2. a photograph left processing by a worker that stopped is queued again;
3. photographs and trainings never sent (the broker was down when they were queued) are sent;
4. photographs and trainings sent more than QUEUED_STUCK_AFTER ago and still waiting are sent
   again, but only while their queue in the broker is empty: then their message was lost (a Redis
   restarted without its append-only file), rather than waiting its turn behind others.
Boxes drawn around missed cells (AddedCellRequest, still pending) go through 3 and 4 beside the
photographs, on the same queue. Before all this, whatever the broker's state, sign-ins past their
expiry leave the session table (what Django's `clearsessions` does): nothing else removes them, and a
site that runs for years would keep every sign-in that was never signed out; and the API keys of
accounts changed by a write that sends no signal (a bulk update) are revoked for good
(api_tokens.revoke_stopped_keys), as the admin's change of the account would have revoked them.

Safe to run twice at once: each change of a record is a conditional UPDATE that one sweep wins,
and a task delivered twice runs once (see services/liveness.py). `manage.py reconcile` runs it.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.utils import timezone

from webapp import queueing
from webapp.models import AddedCellRequest, ModelVersion, SmearImage
from webapp.selectors import abandoned_trainings, lost_images, queued_stuck_cutoff
from webapp.services.api_tokens import revoke_stopped_keys
from webapp.services.training import fail_abandoned_training
from webapp.wording import count_of

logger = logging.getLogger(__name__)

# The request that queued a record sends it right after its transaction commits; the sweep leaves
# it that moment, so as not to send it a second time.
UNSENT_GRACE = timedelta(seconds=10)


@dataclass
class SweepReport:
    trainings_failed: int = 0
    images_requeued: int = 0
    images_sent: int = 0
    trainings_sent: int = 0
    added_cells_sent: int = 0  # boxes drawn around missed cells (webapp.services.added_cells)
    keys_revoked: int = 0
    broker_reachable: bool = True

    def __str__(self):
        broker = "" if self.broker_reachable else "; the broker did not answer, nothing was sent"
        keys = (f"; {count_of(self.keys_revoked, 'API key')} of accounts changed by a bulk update revoked"
                if self.keys_revoked else "")
        return (f"{count_of(self.trainings_failed, 'abandoned training')} failed, "
                f"{count_of(self.images_requeued, 'photograph')} of stopped workers queued again, "
                f"{count_of(self.images_sent, 'photograph')} and {count_of(self.trainings_sent, 'training')} "
                f"sent, {count_of(self.added_cells_sent, 'drawn box', 'drawn boxes')} sent{keys}{broker}")


def clear_expired_sessions():
    """Remove the sessions past their expiry, as `manage.py clearsessions` does: one indexed DELETE
    on the database's session table (a session engine that expires its own, a cache's, does nothing)."""
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()


def reconcile_work(now=None):
    """One sweep (see the module's docstring); returns what it did."""
    now = now or timezone.now()
    report = SweepReport()
    clear_expired_sessions()
    report.keys_revoked = len(revoke_stopped_keys())
    for version_id in list(abandoned_trainings(now).values_list("pk", flat=True)):
        report.trainings_failed += fail_abandoned_training(version_id)
    for pk, sample_id, heartbeat_at in list(lost_images(now).values_list("pk", "sample_id", "heartbeat_at")):
        requeued = SmearImage.objects.filter(
            pk=pk, status=SmearImage.Status.PROCESSING, heartbeat_at=heartbeat_at
        ).update(status=SmearImage.Status.QUEUED, sent_at=None)
        if requeued:
            # Which photograph, and since when: the sweep's summary below only counts them.
            logger.warning("Image %s of sample %s queued again: its worker stopped (last heartbeat %s); "
                           "if workers keep stopping, look for them being killed (out of memory?)", pk,
                           sample_id, heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "none")
        report.images_requeued += requeued

    classify_waiting = queueing.queue_length(queueing.CLASSIFY_QUEUE)
    if classify_waiting is None:
        report.broker_reachable = False
        return _logged(report)
    queued = SmearImage.objects.filter(status=SmearImage.Status.QUEUED)
    images = [queued.filter(sent_at__isnull=True, queued_at__lt=now - UNSENT_GRACE)]
    if classify_waiting == 0:
        images.append(queued.filter(sent_at__lt=queued_stuck_cutoff(now)))
    for candidates in images:
        rows = list(candidates.order_by("queued_at", "pk").values_list("pk", "sent_at"))
        report.images_sent += _send_each(queued, rows, now, _send_classification, report)
    pending = AddedCellRequest.objects.filter(status=AddedCellRequest.Status.PENDING)
    boxes = [pending.filter(sent_at__isnull=True, requested_at__lt=now - UNSENT_GRACE)]
    if classify_waiting == 0:
        boxes.append(pending.filter(sent_at__lt=queued_stuck_cutoff(now)))
    for candidates in boxes:
        rows = list(candidates.order_by("pk").values_list("pk", "sent_at"))
        report.added_cells_sent += _send_each(pending, rows, now, _send_added_cell, report)

    waiting = ModelVersion.objects.filter(
        status=ModelVersion.Status.TRAINING, heartbeat_at__isnull=True
    ).exclude(progress__state="running").exclude(source=ModelVersion.Source.COMMAND)  # runs in place
    trainings = [waiting.filter(sent_at__isnull=True, created_at__lt=now - UNSENT_GRACE)]
    if report.broker_reachable and queueing.queue_length(queueing.TRAIN_QUEUE) == 0:
        trainings.append(waiting.filter(sent_at__lt=queued_stuck_cutoff(now)))
    for candidates in trainings:
        rows = list(candidates.order_by("pk").values_list("pk", "sent_at"))
        report.trainings_sent += _send_each(waiting, rows, now, queueing.send_training, report)
    return _logged(report)


def _send_classification(image_id):
    return queueing.publish(queueing.CLASSIFY_TASK, (image_id,), queue=queueing.CLASSIFY_QUEUE)


def _send_added_cell(request_id):
    return queueing.publish(queueing.ADD_CELL_TASK, (request_id,), queue=queueing.CLASSIFY_QUEUE)


def _send_each(still_waiting, rows, now, send, report):
    """send(pk) for each (pk, sent_at) row that this sweep wins; stop when the broker fails."""
    sent = 0
    for pk, seen_sent_at in rows:
        if not report.broker_reachable:
            break
        # The conditional UPDATE is the claim: of two sweeps, only one moves sent_at on.
        if not still_waiting.filter(pk=pk, sent_at=seen_sent_at).update(sent_at=now):
            continue
        if send(pk):
            sent += 1
            continue
        still_waiting.model.objects.filter(pk=pk, sent_at=now).update(sent_at=seen_sent_at)
        report.broker_reachable = False
    return sent


def _logged(report):
    if (report.trainings_failed or report.images_requeued or report.images_sent or report.trainings_sent
            or report.added_cells_sent or report.keys_revoked):
        logger.warning("Reconciler: %s", report)
    elif not report.broker_reachable:
        logger.info("Reconciler: %s", report)
    return report
