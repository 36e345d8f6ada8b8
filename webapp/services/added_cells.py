"""A cell the detector missed, added by a reviewer who draws a box around it on the photograph.

The request checks the box and stores it as an AddedCellRequest (pending); the worker
(`tasks.add_cell`) classifies the box with the network that classified the photograph, as the
pipeline finishes a detected cell (classifier.pipeline.finish_box), and stores a Cell marked
``added_by_hand`` at the photograph's next index. The task adds the cell only while its request
has none, in one conditional update inside the transaction that creates it, so a message
delivered twice adds one cell. Until then the sample page shows the box as pending.

A photograph of one cell (Sample.photographs) holds one cell: the box drawn on it is that cell, in
place of the one the pipeline gave (a neighbour nearer the middle, or a middle with no outline),
as a re-run gives it (classifier.pipeline). A second box is refused.
"""

import logging

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from classifier.boxes import SAME_CELL_IOU, box_iou, covered_share
from classifier.pipeline import finish_box
from webapp import audit, queueing
from webapp.counting import type_label
from webapp.db_errors import is_database_full, is_transient_database_error
from webapp.models import AddedCellRequest, Cell, SmearImage
from webapp.review_flag import review_threshold
from webapp.selectors import current_cells
from webapp.services.classification import (
    StorageUnreachable,
    Written,
    fill_cell,
    load_rgb,
    readable_error,
    serving_classifier,
)
from webapp.services.locking import DeletedMeanwhile, SampleLocked, ensure_editable
from webapp.services.storage import delete_stored_files
from webapp.wording import isolated

logger = logging.getLogger(__name__)

# A cell is tens of pixels across in any photograph the detector reads; a smaller box is a slip
# of the mouse, not a cell.
MIN_SIDE_PX = 8
ACTION = "Adding a cell"
PHOTOGRAPH_GONE = "The photograph was deleted meanwhile: no box was kept. Reload the page."
# A drawn box this much inside a cell's box is part of that cell; a cell's box this much inside a
# drawn box is held by it. Neighbouring cells' boxes overlap by far less.
INSIDE_SHARE = 0.6


class AddCellError(ValueError):
    """The box cannot be added; the message says why, for the reviewer who drew it."""


def _check_box(image, box):
    try:
        x0, y0, x1, y1 = (int(value) for value in box)
    except (TypeError, ValueError):
        raise AddCellError("The box must be four whole numbers of pixels: x0, y0, x1, y1.") from None
    if x0 > x1:
        x0, x1 = x1, x0
    if y0 > y1:
        y0, y1 = y1, y0
    if x0 < 0 or y0 < 0 or x1 > image.width or y1 > image.height:
        raise AddCellError(
            f"The box ({x0},{y0})-({x1},{y1}) runs outside the photograph, which is "
            f"{image.width}×{image.height} pixels: draw it on the photograph."
        )
    if x1 - x0 < MIN_SIDE_PX or y1 - y0 < MIN_SIDE_PX:
        raise AddCellError(
            f"The box is {x1 - x0}×{y1 - y0} pixels: a cell needs at least {MIN_SIDE_PX} pixels a "
            "side. Drag from one corner of the cell to the opposite one."
        )
    return x0, y0, x1, y1


def request_added_cell(image, box, user=None):
    """Store a box drawn on a classified photograph and queue its classification; returns the
    AddedCellRequest. Raises AddCellError for a box that cannot be a missed cell, SampleLocked
    for a signed sample."""
    _lock_sample(image)
    box = _check_box(image, box)
    if image.status != SmearImage.Status.DONE or image.model_version_id is None:
        raise AddCellError(
            f"{isolated(image.original_filename)} is not classified yet "
            f"({image.get_status_display().lower()}): add a missed cell once its classification is done."
        )
    x0, y0, x1, y1 = box
    with transaction.atomic():
        # Under the sample's lock (as signing takes it): a signature may have come while the box was
        # checked, and two boxes drawn at once are compared with each other, not only with what was
        # stored before either.
        _lock_sample(image)
        # Deleting a photograph takes that lock too: one still here now stays until this commits.
        if not SmearImage.objects.filter(pk=image.pk).exists():
            raise AddCellError(PHOTOGRAPH_GONE)
        _refuse_a_cell_twice(image, box)
        request = AddedCellRequest.objects.create(image=image, x0=x0, y0=y0, x1=x1, y1=y1,
                                                  requested_by=user)
        queueing.queue_added_cells([request.pk])
    return request


def _lock_sample(image):
    """ensure_editable for the photograph's sample, a sample deleted meanwhile said as the
    photograph it took with it."""
    try:
        ensure_editable(image.sample, ACTION)
    except DeletedMeanwhile:
        raise AddCellError(PHOTOGRAPH_GONE) from None


def _refuse_a_cell_twice(image, box):
    """AddCellError where ``box`` would count a cell the photograph holds, or one a box still waiting
    for the classifier holds, a second time."""
    # The waiting boxes first, then the cells: the worker turns a box into a cell in one commit, and
    # a commit between the two reads is then seen in the second (the other order missed both).
    pending = list(AddedCellRequest.objects.filter(image=image, status=AddedCellRequest.Status.PENDING))
    cells = list(current_cells(image=image).order_by("index").only("x0", "y0", "x1", "y1", "added_by_hand",
                                                                   "corrected_type"))
    if image.sample.one_cell_each:
        _ensure_replaceable(cells)
        if pending:
            raise AddCellError("A box drawn on this photograph of one cell is waiting for the classifier "
                               "already: it will take the place of the photograph's cell.")
        cells = []  # the drawn box takes the place of the photograph's cell, wherever that lies
    for index, cell in enumerate(cells):
        name = f"cell {index + 1}"
        _refuse_overlap(box, cell.box, same=f"Cell {index + 1} of this photograph already covers that "
                        f"box: review it instead of adding it again.",
                        inside=f"That box lies inside {name}'s outline: review {name} instead of adding "
                        "part of it as another cell.",
                        holds=f"That box holds {name}, already found: draw around the missed cell alone.")
    for waiting in pending:
        _refuse_overlap(box, waiting.box, same="That box is already waiting for the classifier.",
                        inside="That box lies inside a box already waiting for the classifier: the cell "
                        "is being added once already.",
                        holds="That box holds a box already waiting for the classifier: draw around "
                        "the missed cell alone.")


def _refuse_overlap(box, other, same, inside, holds):
    if box_iou(box, other) >= SAME_CELL_IOU:
        raise AddCellError(same)
    # Two boxes of one cell need not look alike: a box drawn on a lobe, or around the whole field,
    # would count a cell twice.
    if covered_share(box, other) >= INSIDE_SHARE:
        raise AddCellError(inside)
    if covered_share(other, box) >= INSIDE_SHARE:
        raise AddCellError(holds)


def _ensure_replaceable(cells):
    """AddCellError unless the cell of a photograph of one cell (``cells``, by number) may give way
    to a box drawn by hand: not drawn by hand itself, nor labelled by a person, whose label a
    replacement would drop (as reading the photographs another way refuses to)."""
    for number, cell in enumerate(cells, start=1):
        if cell.added_by_hand:
            raise AddCellError(f"This photograph of one cell has its cell drawn by hand already (cell "
                               f"{number}): review that cell instead.")
        if cell.corrected_type:
            label = type_label(cell.corrected_type)
            raise AddCellError(f"Cell {number} of this photograph was labelled {label} by a person: a "
                               f"drawn box would take its place and drop that label. Review cell {number} "
                               "instead.")


def _fail(request_id, message):
    AddedCellRequest.objects.filter(pk=request_id, status=AddedCellRequest.Status.PENDING).update(
        status=AddedCellRequest.Status.FAILED, error=message, finished_at=timezone.now()
    )


def finish_added_cell(request_id):
    """Classify a pending box and store its Cell; returns the Cell, or None when there is nothing
    to do (already done, failed or deleted) or it failed (the request says why)."""
    request = AddedCellRequest.objects.select_related("image__sample").filter(pk=request_id).first()
    if request is None or request.status != AddedCellRequest.Status.PENDING:
        return None
    image = request.image
    written = Written()
    try:
        ensure_editable(image.sample, ACTION)
        if image.status != SmearImage.Status.DONE or image.model_version_id is None:
            raise AddCellError("The photograph was being classified again when the box reached the "
                               "classifier: draw the box again once it is done.")
        version = image.model_version
        finished = finish_box(load_rgb(image), request.box, serving_classifier(version),
                              review_threshold=review_threshold(version))
        with transaction.atomic():
            # The photograph's row lock orders this beside a re-classification of the photograph.
            locked = SmearImage.objects.select_for_update().filter(
                pk=image.pk, status=SmearImage.Status.DONE, model_version=version
            )
            if not locked.exists():
                raise AddCellError("The photograph was classified again while the box was being "
                                   "classified: draw the box again.")
            siblings = Cell.objects.filter(image=image, model_version=version)
            replaced = []
            if image.sample.one_cell_each:
                # Checked again under the photograph's lock: two boxes sent at once, or a label
                # given while this one was classified.
                replaced = list(siblings.order_by("index"))
                _ensure_replaceable(replaced)
            claimed = AddedCellRequest.objects.filter(
                pk=request.pk, status=AddedCellRequest.Status.PENDING, cell__isnull=True
            ).update(status=AddedCellRequest.Status.DONE, finished_at=timezone.now())
            if not claimed:  # another delivery of the task added it meanwhile
                written.discard()
                return None
            last = siblings.aggregate(last=Max("index"))["last"]
            index = 0 if last is None else last + 1
            cell = Cell(image=image, model_version=version, index=index, added_by_hand=True)
            fill_cell(cell, finished, image, f"img{image.pk}-v{version.pk}-c{index}-added", written)
            cell.detection_score = 1.0
            # The worker saves it; the audit trail names who drew the box.
            audit.save_as(cell, request.requested_by)
            AddedCellRequest.objects.filter(pk=request.pk).update(cell=cell)
            replaced_files = [picture.name for old in replaced
                              for picture in (old.crop, old.window, old.heatmap) if picture]
            for old in replaced:
                # On the trail as what it was, by whom: not a deletion by the worker.
                audit.record(old, "delete", {"cell_type": (old.cell_type, None)}, actor=request.requested_by,
                             note=f"the cell given at ({old.x0},{old.y0})-({old.x1},{old.y1}) replaced by "
                                  "a box drawn by hand")
                with audit.disable_auditlog():
                    old.delete()
            if replaced_files:
                # Tolerant of a storage that refuses: run as the transaction ends, an error here
                # would reach the handler below, which removes the new cell's committed pictures.
                transaction.on_commit(lambda: delete_stored_files(replaced_files))
    except (AddCellError, SampleLocked, DeletedMeanwhile) as exc:  # deleted: its request with it
        written.discard()
        _fail(request_id, str(exc))
        return None
    except StorageUnreachable:
        # The storage at fault, not the box: it stays pending for the task's next try.
        written.discard()
        raise
    except Exception as exc:
        written.discard()
        if is_transient_database_error(exc) or is_database_full(exc):
            # The database busy, out of reach or full, not the box at fault: it stays pending for
            # the task's next try (webapp.tasks), as a photograph stays processing.
            raise
        logger.exception("Adding the cell of request %s failed", request_id)
        _fail(request_id, readable_error(exc))
        return None
    logger.info("Image %s: cell %s added by hand (request %s)", image.pk, cell.pk, request_id)
    return cell
