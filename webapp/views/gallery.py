"""The cell gallery of a sample: every counted cell's crop in its type's row, relabelled by
selection and key. Thin: the presenter shapes the page, review_cells changes the labels."""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from webapp.forms import GalleryReviewForm
from webapp.models import Sample
from webapp.presenters import gallery as gallery_pages
from webapp.selectors import label_stamp, sample_cells_by_ids
from webapp.services.locking import NOTHING_CHANGED, DeletedMeanwhile, SampleLocked
from webapp.services.review import ReviewError, StaleLabels, review_cells
from webapp.views import roles
from webapp.views.deleted_meanwhile import answer_gone, sample_or_gone

# The gallery's page and its relabel read the sample alike.
_SAMPLES = Sample.objects.select_related("created_by")


def _sample(pk):
    return get_object_or_404(_SAMPLES, pk=pk)


@require_GET
def sample_gallery(request, pk):
    page = gallery_pages.gallery_page(_sample(pk))
    return render(request, "lab/gallery.html", page.as_context())


def _refused(message, status=400):
    return JsonResponse({"error": message}, status=status)


def _redrawn(request, sample, cells):
    """The cells' labels now and the formula, as the page draws them: the answer to a relabel, and
    to one refused for cells reviewed meanwhile, whose tiles then move to the rows they are in now."""
    panel = gallery_pages.formula_panel(sample)
    return {
        # "seen": the label as the page now shows it, sent with the tile's next relabelling.
        "cells": [{"id": cell.pk, "cell_type": cell.cell_type, "reviewed": bool(cell.corrected_type),
                   "seen": label_stamp(cell)} for cell in cells],
        "formula": panel["formula"].as_dict(),
        "formula_html": render_to_string("lab/_formula.html", panel, request=request),
    }


@require_POST
@roles.lab_work(roles.REVIEW, "Relabelling cells")
def gallery_review(request, pk):
    """Relabel the selected cells as one type: all of them or, with a message, none."""
    try:
        sample = sample_or_gone(pk, NOTHING_CHANGED, _SAMPLES)
    except DeletedMeanwhile as exc:  # the gallery was open while another page deleted its sample
        return answer_gone(request, exc)
    form = GalleryReviewForm(request.POST)
    if not form.is_valid():
        return _refused(" ".join(message for messages in form.errors.values() for message in messages))
    wanted = form.cleaned_data["cells"]
    cells = sample_cells_by_ids(sample, wanted)
    if len(cells) != len(wanted):
        missing = sorted(set(wanted) - {cell.pk for cell in cells})
        return _refused(
            f"Cell{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
            f"{'are' if len(missing) > 1 else 'is'} not counted in sample {sample.accession_number} "
            "(another sample's, or an earlier version's call): nothing was changed. Reload the gallery.")
    try:
        reviewed = review_cells(cells, form.cleaned_data["cell_type"], request.user,
                                seen=form.cleaned_data["seen"])
    except SampleLocked as exc:
        return _refused(str(exc), status=409)
    except StaleLabels as exc:
        # Nothing was changed, but the page is redrawn as it stands: one more key press decides.
        return JsonResponse({"error": str(exc), **_redrawn(request, sample, exc.cells)}, status=409)
    except ReviewError as exc:
        return _refused(str(exc))
    return JsonResponse(_redrawn(request, sample, [cell for cell, _ in reviewed]))
