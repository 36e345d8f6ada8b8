"""Pages of the lab workflow. Thin: forms and services change things, selectors read them."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifier.labels import binary_group
from webapp.exports import export_file_name, write_sample_csv
from webapp.forms import AddImagesForm, HistoryFilterForm, ReviewForm, SampleUploadForm
from webapp.models import Cell, CellReview, ModelVersion, Sample, SmearImage
from webapp.selectors import (
    SampleCounts,
    current_counterpart,
    history_page,
    leukocyte_formula,
    sample_cell_counts,
    sample_images_with_cells,
    sample_progress,
    samples_with_progress,
    type_order,
)
from webapp.services.liveness import stuck_images
from webapp.services.review import ReviewError, allowed_types, review_cell, review_types
from webapp.services.uploads import (
    add_images_to_sample,
    create_sample_with_images,
    delete_sample,
    may_delete_sample,
    requeue_image,
)
from webapp.views.errors import wants_json


def type_shortcuts(names):
    """One key per type (its first letter) where the first letters do not clash."""
    letters = [name[0].upper() for name in names]
    pairs = zip(names, letters, strict=True)
    return [(name, letter if letters.count(letter) == 1 else "") for name, letter in pairs]


@require_GET
def sample_list(request):
    query = request.GET.get("q", "").strip()
    samples = samples_with_progress().select_related("created_by")
    if query:
        samples = samples.filter(accession_number__icontains=query)
    page = Paginator(samples, 25).get_page(request.GET.get("page"))
    counts = sample_cell_counts(sample.pk for sample in page.object_list)
    for sample in page.object_list:
        sample.cell_counts = counts.get(sample.pk, SampleCounts())
    return render(request, "lab/sample_list.html", {
        "page": page, "query": query, "page_query": urlencode({"q": query}) if query else "",
    })


def _report_rejections(request, rejected):
    for item in rejected:
        messages.error(request, f"{item.name} was not stored: {item.reason}")


@require_http_methods(["GET", "POST"])
def upload(request):
    form = SampleUploadForm(request.POST or None, request.FILES or None)
    rejected = []
    if request.method == "POST" and form.is_valid():
        result = create_sample_with_images(
            form.cleaned_data["accession_number"], form.cleaned_data["note"], form.cleaned_data["images"],
            user=request.user,
        )
        if result.sample:
            count = len(result.stored)
            plural = "s" if count != 1 else ""
            messages.success(request, f"{count} photograph{plural} queued for classification.")
            _report_rejections(request, result.rejected)
            return redirect("lab:sample-detail", pk=result.sample.pk)
        rejected = result.rejected
        form.add_error("images", "None of the files could be stored; nothing was saved.")
    status = 200 if request.method == "GET" else 400
    return render(request, "lab/upload.html", {
        "form": form,
        "rejected": rejected,
        "max_upload_mb": settings.MAX_UPLOAD_BYTES // (1024 * 1024),
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "max_megapixels": f"{settings.MAX_IMAGE_PIXELS / 1e6:g}",
        "max_files": settings.MAX_FILES_PER_UPLOAD,
    }, status=status)


def _sample_context(sample):
    images = sample_images_with_cells(sample)
    version_ids = {image.model_version_id for image in images if image.model_version_id}
    # A cell can be relabelled only as one of the types of the network that classified it, a
    # basophil, or an artefact.
    shortcuts = {
        pk: type_shortcuts(sorted(review_types(names), key=type_order))
        for pk, names in ModelVersion.objects.filter(pk__in=version_ids).values_list("pk", "class_names")
    }
    stuck = set(stuck_images().filter(sample=sample).values_list("pk", flat=True))
    for image in images:
        image.stalled = image.pk in stuck
        # Labels scale with the photograph so they read the same at any resolution.
        image.label_size = max(12, round(image.width / 38))
        for cell in image.current:
            cell.group = binary_group(cell.cell_type)
            cell.review_types = shortcuts.get(cell.model_version_id, [])
            above = cell.y0 - 0.3 * image.label_size
            cell.label_y = round(above if above >= image.label_size else cell.y1 + image.label_size)
    legend = {pair for pairs in shortcuts.values() for pair in pairs}
    return {
        "sample": sample,
        "images": images,
        "formula": leukocyte_formula(sample),
        "progress": sample_progress(sample),
        "review_types": sorted(legend, key=lambda pair: type_order(pair[0])),
        "review_threshold_percent": round(100 * settings.REVIEW_CONFIDENCE_THRESHOLD),
    }


def _sample(pk):
    return get_object_or_404(Sample.objects.select_related("created_by"), pk=pk)


@require_GET
def sample_detail(request, pk):
    sample = _sample(pk)
    context = _sample_context(sample)
    context["max_files"] = settings.MAX_FILES_PER_UPLOAD
    context["may_delete"] = may_delete_sample(request.user, sample)
    return render(request, "lab/sample_detail.html", context)


@require_GET
def sample_results(request, pk):
    """The results part of the sample page alone, swapped in by sample.js as images finish."""
    sample = _sample(pk)
    return render(request, "lab/_sample_results.html", _sample_context(sample))


@require_GET
def sample_status(request, pk):
    sample = get_object_or_404(Sample, pk=pk)
    images = list(sample.images.values("id", "status", "error", "original_filename"))
    progress = sample_progress(sample)
    response = JsonResponse({
        "sample": sample.pk,
        "total": progress.total,
        "finished": progress.finished,
        "percent": progress.percent,
        "complete": progress.complete,
        "counts": progress.counts,
        "images": images,
    })
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def sample_add_images(request, pk):
    sample = _sample(pk)
    form = AddImagesForm(request.POST, request.FILES)
    if not form.is_valid():
        for error in form.errors["images"]:
            messages.error(request, error)
        return redirect("lab:sample-detail", pk=sample.pk)
    result = add_images_to_sample(sample, form.cleaned_data["images"])
    if result.stored:
        messages.success(request, f"{len(result.stored)} more photograph(s) queued for classification.")
    _report_rejections(request, result.rejected)
    return redirect("lab:sample-detail", pk=sample.pk)


@require_POST
def image_retry(request, pk):
    image = get_object_or_404(SmearImage, pk=pk)
    requeue_image(image)
    messages.success(request, f"{image.original_filename} queued again.")
    return redirect("lab:sample-detail", pk=image.sample_id)


@require_http_methods(["GET", "POST"])
def sample_delete(request, pk):
    sample = _sample(pk)
    if not may_delete_sample(request.user, sample):
        entered_by = f" ({sample.created_by.get_username()})" if sample.created_by else ""
        raise PermissionDenied(
            f"Only the person who entered sample {sample.accession_number}{entered_by} or a staff "
            "member may delete it."
        )
    if request.method == "POST":
        accession = sample.accession_number
        delete_sample(sample, user=request.user)
        messages.success(request, f"Sample {accession} and all its pictures were deleted.")
        return redirect("lab:sample-list")
    counts = {
        "images": sample.images.count(),
        "cells": Cell.objects.filter(image__sample=sample).count(),
    }
    return render(request, "lab/sample_confirm_delete.html", {"sample": sample, "counts": counts})


@require_GET
def sample_export_csv(request, pk):
    sample = _sample(pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export_file_name(sample)}"'
    write_sample_csv(sample, response)
    return response


@require_GET
def cell_detail(request, pk):
    cell = get_object_or_404(
        Cell.objects.select_related("image__sample", "reviewed_by", "review_carried_from")
        .defer("model_version__model_bytes").select_related("model_version").prefetch_related(
            Prefetch("reviews", queryset=CellReview.objects.select_related("reviewed_by"))
        ),
        pk=pk,
    )
    siblings = list(
        Cell.objects.filter(image=cell.image, model_version=cell.model_version).order_by("index")
        .values_list("pk", flat=True)
    )
    position = siblings.index(cell.pk)
    probabilities = sorted(cell.probabilities.items(), key=lambda item: -item[1])
    return render(request, "lab/cell_detail.html", {
        "cell": cell,
        "sample": cell.image.sample,
        "probabilities": [(name, p, round(p * 100, 1)) for name, p in probabilities],
        "review_types": type_shortcuts(allowed_types(cell)),
        "counted_call": current_counterpart(cell) if cell.is_superseded else None,
        "previous_id": siblings[position - 1] if position > 0 else None,
        "next_id": siblings[position + 1] if position + 1 < len(siblings) else None,
        "position": position + 1,
        "sibling_count": len(siblings),
    })


@require_POST
def cell_review(request, pk):
    cell = get_object_or_404(Cell.objects.select_related("image"), pk=pk)
    form = ReviewForm(request.POST)
    error = None
    if form.is_valid():
        try:
            cell, _ = review_cell(cell, form.cleaned_data["cell_type"], request.user)
        except ReviewError as exc:
            error = str(exc)
    else:
        error = "Choose a cell type."
    if wants_json(request):
        if error:
            return JsonResponse({"error": error}, status=400)
        formula = leukocyte_formula(cell.image.sample)
        return JsonResponse({"cell": cell.pk, "cell_type": cell.cell_type, "formula": formula.as_dict()})
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Cell {cell.pk} is now {cell.cell_type.title()}.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = reverse("lab:cell-detail", args=[cell.pk])
    return redirect(target)


@require_GET
def history(request):
    form = HistoryFilterForm(request.GET or None)
    page = history_page(form.filters(), request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    page_query = query.urlencode()
    query.pop("view", None)
    return render(request, "lab/history.html", {
        "form": form,
        "page": page,
        "page_query": page_query,
        "query_without_view": query.urlencode(),
        "view": "table" if request.GET.get("view") == "table" else "grid",
    })
