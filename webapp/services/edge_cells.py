"""Cells the photograph's edge cuts (Cell.is_partial): left out of the formula unless a reviewer
counts one in, as a manual differential counts a cell at the field's edge only when it can be
named with certainty (and counts it once: the neighbouring field may hold the rest of it)."""

from django.db import transaction

from webapp.models import Cell, Sample, SmearImage
from webapp.services.locking import DeletedMeanwhile, ensure_editable
from webapp.wording import awaiting_another_reading, superseded_call


class CountInError(ValueError):
    """The cell cannot be counted in or out; the message says why."""


NO_LONGER_STORED = ("This cell is no longer stored: its photograph was deleted or classified again "
                    "meanwhile. Reload the page.")


@transaction.atomic
def set_counted_in(cell, counted_in):
    """Count an edge cell in the formula (True) or leave it out again (False); returns the cell.

    Raises CountInError for a whole cell or a superseded call, SampleLocked for a signed sample.
    """
    # The sample's row, the photograph's, then the cell's, in the order review_cells takes them: a
    # relabel of the same cell at once otherwise held what this waited for (a deadlock, a 500), and
    # a re-classification, which carries count-ins over under its photograph's lock, left one
    # committed meanwhile on the call it replaced (services.review._locked).
    row = Cell.objects.filter(pk=cell.pk).values_list("image__sample_id", "image_id").first()
    if row is None:
        raise CountInError(NO_LONGER_STORED)
    try:
        ensure_editable(Sample(pk=row[0]), "Counting an edge cell in or out")
    except DeletedMeanwhile:  # the cell with it, as with its photograph below
        raise CountInError(NO_LONGER_STORED) from None
    list(SmearImage.objects.select_for_update().filter(pk=row[1]).values_list("pk", flat=True))
    # Read again under the locks: its photograph may have been deleted before they were granted.
    cell = (Cell.objects.select_for_update(of=("self",)).select_related("image__sample")
            .filter(pk=cell.pk).first())
    if cell is None:
        raise CountInError(NO_LONGER_STORED)
    if not cell.is_partial:
        raise CountInError("This cell lies whole inside the photograph: it is always counted.")
    if cell.is_superseded:
        raise CountInError(superseded_call(cell))
    if cell.awaits_another_reading:
        raise CountInError(awaiting_another_reading("count it in or out"))
    if cell.count_partial != counted_in:
        cell.count_partial = counted_in
        cell.save(update_fields=["count_partial"])
    return cell
