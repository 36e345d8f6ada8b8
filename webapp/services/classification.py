"""Classifying a stored smear photograph in the worker: hand it to the classifier's pipeline and store
each cell it returns, pictures included.

Runs only inside a Celery worker (TensorFlow is loaded there by model_registry). Re-running for the
same image and model version updates that version's cells in place, each matched to the cell it
already holds by its box, so a retried task never duplicates cells and a technologist's review
stays with its cell, whatever number the re-run gives it.

Cells a reviewer added by hand (webapp.services.added_cells) are part of the photograph's result:
every re-run, with the same version or another, classifies their boxes again beside the detected
cells (indexes after the detector's), so they are neither lost nor left to an older network. A
drawn box the detector now finds itself is dropped: the detected cell takes its place (and, with
another version, its review, matched by box as any other).

A cell the photograph's edge cuts (classifier.boxes.cut_by_edge) is stored partial (Cell.is_partial):
the formula leaves it out unless a reviewer counts it in, and that choice is kept across re-runs.
A sample whose photographs show one cell each (Sample.photographs) has no partial cells: each
photograph was taken of its cell, and gives that one cell (classifier.pipeline).
"""

import logging
import tempfile
import time

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.utils import timezone

from classifier.boxes import SAME_CELL_IOU, cut_by_edge, match_boxes
from classifier.errors import UnreadablePhotograph
from classifier.pipeline import analyse_smear
from classifier.rendering import decode_rgb
from webapp import audit
from webapp.broker import MEDIA_VARIABLE, probe_media_folder
from webapp.cell_types import carried_label
from webapp.db_errors import first_line, is_database_full, is_transient_database_error
from webapp.models import Cell, ModelVersion, SmearImage
from webapp.review_flag import review_threshold
from webapp.services.model_registry import NoActiveModel, active_version, load_classifier
from webapp.services.storage import DISK_REFUSALS, delete_stored_files, save_whole
from webapp.wording import count_of

logger = logging.getLogger(__name__)


class ClassificationError(RuntimeError):
    """A failure whose message is meant for the lab staff reading the sample page."""


class StorageUnreachable(RuntimeError):
    """This worker cannot use the media folder at all (a network mount missing on its machine):
    the photograph is not at fault, and waits in the queue (the task tries again later)."""


class Superseded(RuntimeError):
    """The photograph was queued again while this run classified it (re-classified by another
    version, its sample's photographs read another way, tried again), or taken by another task:
    the newer run's cells are the ones to keep."""


def _ours(task_id):
    """The photograph's row while this run still holds it: processing, and claimed by ``task_id``
    (liveness.claim_image) where a task runs it."""
    held = Q(status=SmearImage.Status.PROCESSING)
    return held & Q(task_id=task_id) if task_id else held


def _waiting_for_storage(problem):
    return StorageUnreachable(
        f"Waiting: the classifier worker {problem}. The photograph is kept and tried again every "
        f"{settings.STORAGE_RETRY_SECONDS:g} s; an administrator can see this on the health page "
        "(/healthz).")


def waiting_for_database(error):
    """StorageUnreachable for a database whose disk is full: nothing the photograph did, and nothing
    a second try can mend until someone frees space."""
    return StorageUnreachable(
        f"Waiting: the database has no room left on its disk ({first_line(error)}). The photograph is "
        f"kept and tried again every {settings.STORAGE_RETRY_SECONDS:g} s; tell the administrator.")


def serving_classifier(version):
    """load_classifier(version), or StorageUnreachable where the worker's temporary folder has no
    room for the network: marked failed, every photograph of the queue waited for a "Try again" by
    hand once space was freed."""
    try:
        return load_classifier(version)
    except OSError as exc:
        # Loading a network writes it to the worker's temporary folder first (classifier.inference.
        # load_keras_bytes).
        if exc.errno not in DISK_REFUSALS:
            raise
        raise StorageUnreachable(
            f"Waiting: the classifier worker cannot load the network, its temporary folder "
            f"({tempfile.gettempdir()}) refusing the write ({exc.strerror}). The photograph is kept and "
            f"tried again every {settings.STORAGE_RETRY_SECONDS:g} s; tell the administrator.") from None


def load_rgb(image):
    try:
        with image.image.open("rb") as handle:
            return decode_rgb(handle)
    except OSError as exc:
        media = probe_media_folder(settings.MEDIA_ROOT)
        if not media["usable"]:
            raise _waiting_for_storage(media["problem"]) from None
        if isinstance(exc, FileNotFoundError):
            raise ClassificationError("The stored photograph is missing from storage.") from None
        raise ClassificationError("The stored photograph could not be read.") from None


def _version_for(model_version_id):
    if model_version_id is None:
        return active_version()
    try:
        return ModelVersion.objects.defer("model_bytes").get(pk=model_version_id)
    except ModelVersion.DoesNotExist:
        raise ClassificationError(f"Model version v{model_version_id} no longer exists.") from None


def readable_error(exc):
    if isinstance(exc, ClassificationError | NoActiveModel | UnreadablePhotograph):
        return str(exc)
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (
        f"Classification failed unexpectedly ({type(exc).__name__}{': ' + detail if detail else ''}). "
        "The full error is in the worker's log; re-run the image or ask an administrator."
    )


class Written:
    """Files saved during one run, so a failed run leaves none behind."""

    def __init__(self):
        self.names = []

    def save(self, field_file, name, content):
        try:
            save_whole(field_file, name, content)
        except OSError as exc:
            # A folder made read-only, a full disk, a mount gone: never the photograph's fault, so
            # it waits for the storage rather than failing (a read-only folder failed a whole queue,
            # each photograph then tried again by hand).
            media = probe_media_folder(settings.MEDIA_ROOT)
            problem = media.get("problem") or (
                f"cannot store its pictures in {MEDIA_VARIABLE}={settings.MEDIA_ROOT} "
                f"({exc.strerror or exc})")
            raise _waiting_for_storage(problem) from None
        self.names.append(field_file.name)

    def discard(self):
        delete_stored_files(self.names)  # the storage that failed the run may refuse this too


def fill_cell(cell, found, image, name_stem, written):
    """Set a Cell's call, flags and pictures from a classifier.pipeline.FinishedCell (not saved)."""
    cell.x0, cell.y0, cell.x1, cell.y1 = found.box
    cell.detection_score = found.detection_score
    cell.predicted_type = found.predicted_type
    cell.probabilities = found.probabilities
    cell.confidence = found.confidence
    cell.binary_call = found.binary_call
    # A box a person drew waits for a person's label whatever the network says: it was drawn where
    # the detector found no cell, and the network, which has no class for background, called a box
    # of bare slide "eosinophil, 95%".
    cell.needs_review = found.needs_review or cell.added_by_hand
    cell.ood_score = found.ood_score
    cell.view_factor = found.view_factor
    cell.first_look_type = found.first_look_type
    cell.first_look_confidence = found.first_look_confidence
    cell.outlined = found.outlined
    cell.is_partial = not image.sample.one_cell_each and cut_by_edge(
        found.box, image.width, image.height, touches_surround=found.touches_dark_surround)
    cell.cell_type = cell.corrected_type or found.predicted_type
    written.save(cell.crop, f"{name_stem}.jpg", found.crop_jpeg)
    written.save(cell.window, f"{name_stem}.png", found.window_png)
    written.save(cell.heatmap, f"{name_stem}.jpg", found.heatmap_jpeg)


def _hand_added_boxes(image):
    """The boxes reviewers drew on the photograph, as the version that last classified it holds them."""
    if image.model_version_id is None:
        return []
    cells = Cell.objects.filter(image=image, model_version_id=image.model_version_id, added_by_hand=True)
    return [cell.box for cell in cells.order_by("index").only("x0", "y0", "x1", "y1")]


def _store_cells(image, version, analysis, written):
    """Upsert this version's cells of the image, the detected ones then those added by hand;
    return the file names they no longer use.

    A cell this version already holds is matched by its box, not by its number: a re-run after an
    upgrade may find the same cells in another order (or one more), and a reviewer's label stays
    with the cell it was given to."""
    found_again = {i for i, _, _ in match_boxes([c.box for c in analysis.given_cells],
                                                 [c.box for c in analysis.cells], SAME_CELL_IOU)}
    rows = [(found, False) for found in analysis.cells] + [
        (found, True) for i, found in enumerate(analysis.given_cells) if i not in found_again
    ]
    existing = list(Cell.objects.filter(image=image, model_version=version))
    same_cell = {i: existing[j] for i, j, _ in match_boxes([found.box for found, _ in rows],
                                                           [cell.box for cell in existing], SAME_CELL_IOU)}
    gone = [cell for cell in existing if cell not in same_cell.values()]
    stale_files, to_create, to_update = [], [], []
    stem = f"img{image.pk}-v{version.pk}"
    for index, (found, by_hand) in enumerate(rows):
        cell = same_cell.get(index)
        if cell is None:
            cell = Cell(image=image, model_version=version, index=index)
            to_create.append(cell)
        else:
            stale_files += [f.name for f in (cell.crop, cell.heatmap, cell.window) if f]
            to_update.append(cell)
        cell.added_by_hand = by_hand
        fill_cell(cell, found, image, f"{stem}-c{index}", written)
    for cell in gone:  # the detector no longer finds these
        stale_files += [f.name for f in (cell.crop, cell.heatmap, cell.window) if f]
    Cell.objects.filter(pk__in=[cell.pk for cell in gone]).delete()
    # A cell's number is unique in its photograph and version: those that change number move out
    # of the way first, past every number old or new, so no two ever hold one.
    renumbered = [cell for index, cell in same_cell.items() if cell.index != index]
    if renumbered:
        Cell.objects.filter(pk__in=[cell.pk for cell in renumbered]).update(
            index=F("index") + len(rows) + len(existing))
    for index, cell in same_cell.items():
        cell.index = index
    Cell.objects.bulk_create(to_create)
    Cell.objects.bulk_update(to_update, [
        "index", "x0", "y0", "x1", "y1", "detection_score", "predicted_type", "probabilities", "confidence",
        "binary_call", "needs_review", "cell_type", "crop", "window", "heatmap", "added_by_hand",
        "is_partial", "outlined", "ood_score", "view_factor", "first_look_type", "first_look_confidence",
    ])
    return stale_files


def _carry_reviews(image, previous_version_id, version):
    """Give this version's cells the labels reviewers gave the same cells under the version that
    classified the image before, unless a cell has a newer review of its own.

    A reviewer's label is about the cell, not about one network's call on it: without this, moving
    a sample to a new version would silently drop every correction from its formula. A newer label
    this network's types cannot state (MONONUCLEAR, for a four-type network) still outranks an
    older one: the cell goes back to awaiting review, the label named on its page; unless that
    label is itself one carried, unchanged, from a reviewer's type (a lymphocyte that the binary
    network's version holds as MONONUCLEAR): the type the reviewer gave is carried instead.
    """
    reviewed = list(
        Cell.objects.filter(image=image, model_version_id=previous_version_id).exclude(corrected_type="")
        .only("x0", "y0", "x1", "y1", "corrected_type", "reviewed_by", "reviewed_at", "review_carried_from")
    )
    if not reviewed:
        return
    cells = list(Cell.objects.filter(image=image, model_version=version))
    changed = []
    for i, j, _ in match_boxes([c.box for c in reviewed], [c.box for c in cells], SAME_CELL_IOU):
        source, cell = reviewed[i], cells[j]
        newer = cell.reviewed_at is None or (source.reviewed_at and source.reviewed_at > cell.reviewed_at)
        if not newer:
            continue
        source, label = _label_to_carry(source, version.class_names)
        if label is None:
            cell.corrected_type, cell.cell_type = "", cell.predicted_type
            cell.reviewed_by_id = cell.reviewed_at = None
            cell.needs_review = True
        else:
            cell.corrected_type = cell.cell_type = label
            cell.reviewed_by_id, cell.reviewed_at = source.reviewed_by_id, source.reviewed_at
        cell.review_carried_from = source
        changed.append(cell)
    Cell.objects.bulk_update(changed, [
        "corrected_type", "cell_type", "reviewed_by", "reviewed_at", "review_carried_from", "needs_review",
    ])
    logger.info("Image %s: %d review(s) carried from v%s to v%s", image.pk, len(changed),
                previous_version_id, version.pk)


def _label_to_carry(source, class_names):
    """(the reviewed cell whose label is carried, the label in these classes' terms) for a review
    found on ``source``; (source, None) where no label of its line fits. A carried label is one no
    reviewer changed since (a relabel clears review_carried_from), so the label it was carried from
    is the reviewer's own, perhaps finer than the groups a binary version could hold it as."""
    first, seen = source, set()
    while source is not None and source.pk not in seen:
        label = carried_label(source.corrected_type, class_names)
        if label is not None:
            return source, label
        seen.add(source.pk)
        source = source.review_carried_from
    return first, None


def _carry_count_in(image, previous_version_id, version):
    """Edge cells a reviewer counted in under the previous version stay counted in under this one."""
    counted_in = list(Cell.objects.filter(image=image, model_version_id=previous_version_id,
                                          is_partial=True, count_partial=True).only("x0", "y0", "x1", "y1"))
    if not counted_in:
        return
    cells = list(Cell.objects.filter(image=image, model_version=version, is_partial=True)
                 .only("x0", "y0", "x1", "y1"))
    matched = match_boxes([c.box for c in counted_in], [c.box for c in cells], SAME_CELL_IOU)
    Cell.objects.filter(pk__in=[cells[j].pk for _, j, _ in matched]).update(count_partial=True)


def _record_failure(image_id, error):
    failed = SmearImage.objects.filter(pk=image_id).first()
    if failed is None:  # deleted meanwhile: its deletion is on record
        return
    try:
        audit.record(failed, "update", {"status": (SmearImage.Status.PROCESSING, SmearImage.Status.FAILED)},
                     note=f"classification failed: {error}")
    except Exception:  # the photograph is marked failed; a missing audit row must not hide that
        logger.exception("Recording the failure of image %s in the audit trail failed", image_id)


def _put_back(image_id, task_id, reason):
    """Queue the photograph again with the reason on its card, where the database takes the write: a
    full one may not, and the task's next try then takes the photograph as this run left it."""
    logger.error("Image %s put back in the queue: %s", image_id, reason)
    try:
        SmearImage.objects.filter(pk=image_id).filter(_ours(task_id)).update(
            status=SmearImage.Status.QUEUED, error=str(reason))
    except DatabaseError as exc:
        logger.warning("Image %s: its reason for waiting could not be recorded (%s)", image_id, exc)


def classify_smear_image(image_id, model_version_id=None, task_id=None):
    """Classify one stored image; ends with the image marked done or failed, or, where this worker
    cannot reach the media folder, queued again with the reason and StorageUnreachable raised for
    the task to try again (webapp.tasks). ``task_id``: the task that claimed it. A photograph
    queued again meanwhile is left to the newer run, and this run's work dropped (Superseded)."""
    started = time.monotonic()
    starting = SmearImage.objects.filter(pk=image_id)
    if not (starting.filter(_ours(task_id)) if task_id else starting).update(
            status=SmearImage.Status.PROCESSING, error=""):
        logger.warning("Image %s was deleted or queued again before this run could classify it.", image_id)
        return None
    written = Written()
    try:
        image = SmearImage.objects.select_related("sample").get(pk=image_id)
        version = _version_for(model_version_id)
        classifier = serving_classifier(version)
        analysis = analyse_smear(
            load_rgb(image), classifier, review_threshold=review_threshold(version),
            given_boxes=_hand_added_boxes(image), one_cell=image.sample.one_cell_each,
        )
        with transaction.atomic():
            # A redelivered task may run beside the first one: the row lock makes the second
            # upsert see the first one's cells and update them instead of colliding with them.
            locked = SmearImage.objects.select_for_update().filter(pk=image.pk)
            previous_version_ids = list(locked.values_list("model_version_id", flat=True))
            if not previous_version_ids:
                raise ClassificationError("The image was deleted while it was being classified.")
            # Checked under the lock that the update below holds on to: a run that stored its
            # cells over a re-classification queued meanwhile kept the old version's, and the
            # newer message then found the photograph done.
            if not locked.filter(_ours(task_id)).exists():
                raise Superseded(f"Image {image_id} was queued again while this run classified it.")
            # One audit row for the photograph (below), not one per cell (webapp.audit).
            with audit.disable_auditlog():
                stale_files = _store_cells(image, version, analysis, written)
                if previous_version_ids[0] not in (None, version.pk):
                    _carry_reviews(image, previous_version_ids[0], version)
                    _carry_count_in(image, previous_version_ids[0], version)
            stored = Cell.objects.filter(image=image, model_version=version).count()
            previous = f"v{previous_version_ids[0]}" if previous_version_ids[0] else None
            audit.record(image, "update", {
                "status": (SmearImage.Status.PROCESSING, SmearImage.Status.DONE),
                "model_version": (previous, version.label), "cells": (None, stored),
            }, note=f"classified by {version.label}: {count_of(stored, 'cell')}")
            updated = SmearImage.objects.filter(pk=image.pk).update(
                status=SmearImage.Status.DONE,
                error="",
                quality=analysis.quality.to_dict(),
                quality_warnings=list(analysis.quality.warnings),
                model_version=version,
                inference_runtime=classifier.serving_runtime,
                processed_at=timezone.now(),
            )
            if not updated:
                raise ClassificationError("The image was deleted while it was being classified.")
    except Superseded as exc:
        written.discard()
        logger.info("%s Its cells from this run are dropped; the newer run classifies it.", exc)
        return None
    except StorageUnreachable as exc:
        written.discard()
        _put_back(image_id, task_id, exc)
        raise
    except Exception as exc:
        written.discard()
        if is_database_full(exc):
            # Marked failed, each photograph of a full database's queue waited for a "Try again"
            # by hand once space was freed.
            waiting = waiting_for_database(exc)
            _put_back(image_id, task_id, waiting)
            raise waiting from None
        if is_transient_database_error(exc):
            # The database busy or out of reach, not the photograph at fault: it stays this run's,
            # for the task to try again (webapp.tasks), never marked failed for it.
            raise
        logger.exception("Classifying image %s failed", image_id)
        error = readable_error(exc)
        failed = SmearImage.objects.filter(pk=image_id).filter(_ours(task_id)).update(
            status=SmearImage.Status.FAILED, error=error, processed_at=timezone.now()
        )
        if failed:  # not where the photograph was queued again meanwhile: the newer run decides
            _record_failure(image_id, error)
        return None
    delete_stored_files(stale_files)  # the photograph is done: a storage refusing this fails nothing
    logger.info("Image %s: %d cell(s) with v%s in %.2f s", image_id, len(analysis.cells), version.pk,
                time.monotonic() - started)
    return len(analysis.cells)
