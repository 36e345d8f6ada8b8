"""A reviewer's own additions to a photograph's result: a missed cell drawn as a box, an edge cell
counted in. Thin: webapp.services.added_cells and webapp.services.edge_cells decide."""

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from webapp.models import SmearImage
from webapp.presenters.lab import photograph_address
from webapp.selectors import cell_name
from webapp.services.added_cells import PHOTOGRAPH_GONE, AddCellError, request_added_cell
from webapp.services.edge_cells import CountInError, set_counted_in
from webapp.services.locking import NOTHING_CHANGED, DeletedMeanwhile, SampleLocked
from webapp.views import roles
from webapp.views.deleted_meanwhile import (
    PhotographGone,
    answer_gone,
    cell_or_gone,
    page_sent,
    photograph_or_gone,
)
from webapp.views.errors import wants_json
from webapp.wording import isolated

BOX_FIELDS = ("x0", "y0", "x1", "y1")


def _refused(request, image, message, status):
    """The refusal: in JSON with its status to the page's script; else back to the photograph on
    the sample page, saying why (the box is not kept, and a reload sends nothing again)."""
    if wants_json(request):
        return JsonResponse({"error": message}, status=status)
    messages.error(request, message)
    return redirect(photograph_address(image))


@require_POST
@roles.lab_work(roles.REVIEW, "Adding a missed cell")
def add_cell(request, pk):
    try:
        image = photograph_or_gone(pk, "no box was kept.", SmearImage.objects.select_related("sample"))
    except PhotographGone as exc:
        # In the words the service uses for a deletion it waited on: the same race, one answer.
        return answer_gone(request, PHOTOGRAPH_GONE, exc.sample_id, page_sent(request), status=400)
    box = [request.POST.get(name, "").strip() for name in BOX_FIELDS]
    try:
        added = request_added_cell(image, box, user=request.user)
    except AddCellError as exc:
        return _refused(request, image, str(exc), 400)
    except SampleLocked as exc:
        # 409, as every other change to a signed sample: the request conflicts with its state.
        return _refused(request, image, str(exc), 409)
    if wants_json(request):
        return JsonResponse({"request": added.pk, "status": added.status, "box": list(added.box)},
                            status=202)
    replaces = (", in place of the cell given: a photograph of one cell holds one"
                if image.sample.one_cell_each else "")
    messages.success(request, f"The box on {isolated(image.original_filename)} went to the classifier: the "
                              "cell appears in the list, marked “added by hand”, once it is classified"
                              f"{replaces}.")
    return redirect(photograph_address(image))


@require_POST
@roles.lab_work(roles.REVIEW, "Counting an edge cell in")
def cell_count_in(request, pk):
    try:
        cell = cell_or_gone(request, pk, NOTHING_CHANGED)
    except DeletedMeanwhile as exc:
        return answer_gone(request, exc)
    wanted = request.POST.get("count_in")
    counted_in = (not cell.count_partial) if wanted is None else wanted == "1"
    try:
        cell = set_counted_in(cell, counted_in)
    except (CountInError, SampleLocked) as exc:
        status = 409 if isinstance(exc, SampleLocked) else 400
        if wants_json(request):
            return JsonResponse({"error": str(exc)}, status=status)
        messages.error(request, str(exc))
        return redirect("lab:cell-detail", pk=cell.pk)
    if wants_json(request):
        return JsonResponse({"cell": cell.pk, "count_partial": cell.count_partial})
    now = "counted in" if cell.count_partial else "left out of"
    messages.success(request, f"{cell_name(cell)} is now {now} the formula.")
    return redirect("lab:cell-detail", pk=cell.pk)
