"""A technologist's relabelling of a cell: the formula counts it, the audit trail keeps it."""

from django.db import transaction
from django.utils import timezone

from webapp import audit
from webapp.cell_types import allowed_types
from webapp.counting import RULES, type_label

# Re-exported until services/classification.py imports it from webapp.cell_types.
from webapp.models import Cell, CellReview, Sample
from webapp.selectors import cell_name
from webapp.services.locking import ensure_editable
from webapp.wording import count_of


class ReviewError(ValueError):
    """A relabelling that cannot be accepted; the message is for the technologist."""


@transaction.atomic
def review_cell(cell, new_type, user):
    """Set a cell's type as a reviewer sees it; every change is recorded in CellReview.

    Choosing the type the network predicted confirms it (the cell counts as reviewed). Choosing the
    type the cell already has records nothing new, unless that label was carried over from another
    version's call: choosing it makes it the reviewer's verdict on this call. A superseded call is
    refused: the formula counts the later version's call on the cell, and so is any relabelling
    on a signed sample (webapp.services.locking).
    """
    cell = Cell.objects.select_for_update(of=("self",)).select_related("model_version", "image").only(
        "id", "predicted_type", "corrected_type", "cell_type", "reviewed_by", "reviewed_at",
        "review_carried_from", "model_version", "model_version__class_names", "image__model_version",
        "image__sample",
    ).get(pk=cell.pk)
    ensure_editable(cell.image.sample, "relabelling a cell")
    if cell.is_superseded:
        raise ReviewError(
            f"This is model v{cell.model_version_id}'s earlier call; the sample now counts "
            f"v{cell.image.model_version_id}'s call on this photograph. Review that one instead."
        )
    new_type = (new_type or "").strip().upper()
    choices = allowed_types(cell)
    if new_type not in choices:
        named = type_label(new_type) if new_type in RULES else new_type
        raise ReviewError(f"{named or 'An empty type'} is not one of this model's types: "
                          f"{', '.join(type_label(name) for name in choices)}.")
    if cell.corrected_type == new_type and not cell.review_carried_from_id:
        return cell, None
    # The review's row is the review's audit row (from, to, who, when): one row a review.
    review = audit.save_as(CellReview(cell=cell, from_type=cell.cell_type, to_type=new_type,
                                      reviewed_by=user), user)
    cell.corrected_type = new_type
    cell.cell_type = new_type
    cell.reviewed_by = user
    cell.reviewed_at = timezone.now()
    cell.review_carried_from = None  # the reviewer has now seen this version's call
    with audit.disable_auditlog():
        cell.save(update_fields=["corrected_type", "cell_type", "reviewed_by", "reviewed_at",
                                 "review_carried_from"])
    return cell, review


@transaction.atomic
def review_cells(cells, new_type, user):
    """Give several cells one type (the gallery's selection): all of them, or none.

    Each goes through review_cell, so each change is recorded as one review would be; the first
    refusal (a type this cell's network has no place for, a superseded call, a signed sample)
    undoes the others and says which cell stopped it. Returns [(cell, review or None), ...].
    """
    cells = list(cells)
    if not cells:
        raise ReviewError("Select at least one cell to relabel.")
    sample_ids = {cell.image.sample_id for cell in cells}
    for sample in Sample.objects.filter(pk__in=sample_ids).only("pk"):
        ensure_editable(sample, f"Relabelling {count_of(len(cells), 'cell')}")
    results = []
    for cell in cells:
        try:
            results.append(review_cell(cell, new_type, user))
        except ReviewError as exc:
            raise ReviewError(f"{cell_name(cell)}: {exc} None of the {len(cells)} selected cells "
                              "was changed.") from exc
    return results
