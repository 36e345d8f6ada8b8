"""A technologist's relabelling of a cell: the formula counts it, the audit trail keeps it."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from webapp import audit
from webapp.cell_types import allowed_types
from webapp.counting import RULES, type_label

# Re-exported until services/classification.py imports it from webapp.cell_types.
from webapp.models import Cell, CellReview, Sample, SmearImage
from webapp.selectors import cell_name, cell_names, label_stamp
from webapp.services.locking import DeletedMeanwhile, ensure_editable
from webapp.wording import awaiting_another_reading, count_of, superseded_call


class ReviewError(ValueError):
    """A relabelling that cannot be accepted; the message is for the technologist."""


class StaleLabels(ReviewError):
    """A relabelling refused because someone reviewed cells since the page was loaded. ``cells``
    holds those of them whose label the page shows stale, as stored now: the page draws them again
    beside the message, so the reviewer decides on what is there rather than reloading, and the
    next relabel sends their current stamps."""

    def __init__(self, message, cells):
        super().__init__(message)
        self.cells = cells


_LOCKED_FIELDS = ("id", "predicted_type", "corrected_type", "cell_type", "reviewed_by", "reviewed_at",
                  "review_carried_from", "model_version", "model_version__class_names",
                  "image__model_version", "image__sample", "image__status", "image__requested_version")


CELL_GONE = ("A cell you chose is no longer stored: its photograph was deleted or classified again "
             "meanwhile. Nothing was changed; reload the page.")


def _locked(cells):
    """The cells as stored now, locked until the transaction ends, by id: one query however many.

    Their photographs' rows are locked first: a re-classification holds its photograph's row while
    it carries the reviews of the call it replaces over to its own. A relabel committed after that
    read was reported saved, and left on a call the formula no longer counts; it now waits, and is
    then refused as the superseded call it has become."""
    ids = [cell.pk for cell in cells]
    images = Cell.objects.filter(pk__in=ids).values("image_id")
    list(SmearImage.objects.select_for_update().filter(pk__in=images).order_by("pk")
         .values_list("pk", flat=True))
    rows = Cell.objects.select_for_update(of=("self",)).select_related("model_version", "image")
    locked = rows.only(*_LOCKED_FIELDS).in_bulk(ids)
    if len(locked) < len(cells):
        raise ReviewError(CELL_GONE)
    return locked


def _lock_sample(sample, action):
    """ensure_editable, a sample deleted meanwhile said as the cells it took with it."""
    try:
        ensure_editable(sample, action)
    except DeletedMeanwhile:
        raise ReviewError(CELL_GONE) from None


def _check(cell, new_type):
    """Raise ReviewError if this cell cannot take ``new_type``."""
    if cell.is_superseded:
        raise ReviewError(f"{superseded_call(cell)} Review that one instead.")
    if cell.awaits_another_reading:
        # The photographs read another way dropped the cells they did not find again, and with them
        # labels accepted while the photographs were queued (the two-user audit).
        raise ReviewError(awaiting_another_reading("relabel it"))
    choices = allowed_types(cell)
    if new_type not in choices:
        named = type_label(new_type) if new_type in RULES else new_type
        raise ReviewError(f"{named or 'An empty type'} is not one of this model's types: "
                          f"{', '.join(type_label(name) for name in choices)}.")


# At most this many cells named in a refusal; the rest are counted.
_NAMED_AT_MOST = 5


def _ensure_as_seen(cells, new_type, seen):
    """StaleLabels naming the locked ``cells`` whose label changed since the page that relabels
    them was loaded: ``seen`` maps a cell's id to the selectors.label_stamp the page showed (a cell
    it leaves out, or ``seen`` None, is not checked: an old page, a script). Without this, the
    second of two reviewers on one cell silently overwrote the first one's label, unseen.

    A cell someone else has meanwhile given the very type asked for passes: both reviewers agree,
    and the relabel records nothing new on it."""
    if not seen:
        return
    stale = [cell for cell in cells if cell.pk in seen and seen[cell.pk] != label_stamp(cell)]
    moved = [cell for cell in stale if cell.cell_type != new_type]
    if not moved:
        return
    names = cell_names(cell.pk for cell in moved[:_NAMED_AT_MOST])
    # The cell's own record of its latest review (_record writes it with each CellReview).
    reviewers = get_user_model().objects.in_bulk(
        {cell.reviewed_by_id for cell in moved[:_NAMED_AT_MOST] if cell.reviewed_by_id})

    def now(cell):
        if cell.review_carried_from_id and cell.corrected_type:
            by = "a review carried over from an earlier version's call"
        elif cell.reviewed_at is not None:
            reviewer = reviewers.get(cell.reviewed_by_id)
            by = f"{reviewer.get_username()}'s review" if reviewer else "a removed account's review"
        else:
            by = "the network's call"
        return f"{names.get(cell.pk, f'Cell {cell.pk}')} is now {type_label(cell.cell_type)} ({by})"

    said = "; ".join(now(cell) for cell in moved[:_NAMED_AT_MOST])
    if len(moved) > _NAMED_AT_MOST:
        said += f"; and {count_of(len(moved) - _NAMED_AT_MOST, 'more cell')}"
    nothing = (f"None of the {len(cells)} selected cells was changed" if len(cells) > 1
               else "Nothing was changed")
    # Every stale cell goes back to the page, those given the type asked for too: they passed, but
    # their tiles would still show the label the reviewer saw.
    # The page that shows this draws those cells anew beside it (gallery.js, sample.js; the cell
    # page is loaded again): the reviewer decides on the label there is, with no reload.
    these, shown = (("These cells were", "them as they are") if len(moved) > 1
                    else ("This cell was", "it as it is"))
    raise StaleLabels(f"{these} reviewed since your page was loaded: {said}. {nothing}; the page now "
                      f"shows {shown}: relabel again if you still disagree.", stale)


def _record(cells, new_type, user):
    """Give the checked, locked ``cells`` ``new_type``: a review each, written together (a gallery
    selection of 2,000 cells is a few queries a cell fewer than one review at a time, and holds
    SQLite's write lock that much less). Returns [(cell, review or None), ...] in their order."""
    # Choosing the label a cell already has records nothing, unless it was carried from another
    # version's call: then it becomes the reviewer's verdict on this one.
    changed = [cell for cell in cells if cell.corrected_type != new_type or cell.review_carried_from_id]
    # The review's row is the review's audit row (from, to, who, when): one row a review.
    reviews = audit.create_all_as(
        [CellReview(cell=cell, from_type=cell.cell_type, to_type=new_type, reviewed_by=user)
         for cell in changed], user)
    reviewed_at = timezone.now()
    # A queryset update sends no signals: the cells' own audit rows stay unwritten, as before.
    Cell.objects.filter(pk__in=[cell.pk for cell in changed]).update(
        corrected_type=new_type, cell_type=new_type, reviewed_by=user, reviewed_at=reviewed_at,
        review_carried_from=None)
    review_of = {}
    for cell, review in zip(changed, reviews, strict=True):
        cell.corrected_type = cell.cell_type = new_type
        cell.reviewed_by, cell.reviewed_at = user, reviewed_at
        cell.review_carried_from = None  # the reviewer has now seen this version's call
        review_of[cell.pk] = review
    return [(cell, review_of.get(cell.pk)) for cell in cells]


def _wanted(new_type):
    return (new_type or "").strip().upper()


@transaction.atomic
def review_cell(cell, new_type, user, seen=None):
    """Set a cell's type as a reviewer sees it; every change is recorded in CellReview.

    Choosing the type the network predicted confirms it (the cell counts as reviewed). Choosing the
    type the cell already has records nothing new, unless that label was carried over from another
    version's call: choosing it makes it the reviewer's verdict on this call. A superseded call is
    refused: the formula counts the later version's call on the cell, and so is any relabelling
    on a signed sample (webapp.services.locking). ``seen``, the selectors.label_stamp of the label
    the reviewer's page showed (the pages send it), refuses a relabel of a cell someone else
    reviewed since, unless they gave it the same type; without it the last relabel wins.
    """
    # The sample's row first, then the cell's, in the order review_cells and sign_sample take
    # them: a single relabel and a gallery relabel at once cannot each hold what the other waits for.
    sample_id = Cell.objects.filter(pk=cell.pk).values_list("image__sample_id", flat=True).first()
    if sample_id is not None:
        _lock_sample(Sample(pk=sample_id), "relabelling a cell")
    cell = _locked([cell])[cell.pk]
    new_type = _wanted(new_type)
    _check(cell, new_type)
    _ensure_as_seen([cell], new_type, None if seen is None else {cell.pk: seen})
    return _record([cell], new_type, user)[0]


@transaction.atomic
def review_cells(cells, new_type, user, seen=None):
    """Give several cells one type (the gallery's selection): all of them, or none.

    Each is checked and recorded as one review would be; the first refusal (a type this cell's
    network has no place for, a superseded call, a signed sample) changes nothing and says which
    cell stopped it. ``seen`` maps cells' ids to the selectors.label_stamp the page showed, as
    review_cell's: a cell someone else relabelled since refuses them all, naming it.
    Returns [(cell, review or None), ...].
    """
    cells = list({cell.pk: cell for cell in cells}.values())
    if not cells:
        raise ReviewError("Select at least one cell to relabel.")
    sample_ids = {cell.image.sample_id for cell in cells}
    # By id, the one order every writer locks rows in (docs/architecture.md).
    for sample_id in sorted(sample_ids):
        _lock_sample(Sample(pk=sample_id), f"Relabelling {count_of(len(cells), 'cell')}")
    locked = _locked(cells)
    new_type = _wanted(new_type)
    for cell in cells:
        try:
            _check(locked[cell.pk], new_type)
        except ReviewError as exc:
            raise ReviewError(f"{cell_name(cell)}: {exc} None of the {len(cells)} selected cells "
                              "was changed.") from exc
    _ensure_as_seen([locked[cell.pk] for cell in cells], new_type, seen)
    return _record([locked[cell.pk] for cell in cells], new_type, user)
