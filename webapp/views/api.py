"""A read-only JSON API for a laboratory information system: samples, their formula, their cells.

The site's sign-in, or a program's API key (`Authorization: Bearer`, middleware.ApiTokenMiddleware):
without either the API answers 401, and its errors are JSON too ({"error": "..."}, see
views.errors). Every view answers GET and HEAD only. Lists are paginated with `?page=` and
`?page_size=` (1 to 200): a malformed one answers 400, a page past the last 404, so that a reader
walking the pages cannot loop on the last one. The sample list takes `?status=` (signed, unsigned,
reopened, to_review, to_sign), `?order=oldest`, `?accession_number=` (one sample), `?q=` (a piece
of one) and `?signed_since=` (paged by where the last page ended, `after=`, not by number); the cell
list the history page's filters. A parameter a list does not
take answers 400.
"""

import math
from dataclasses import dataclass
from datetime import UTC

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from webapp.counting import group_of
from webapp.exports import sample_csv_response
from webapp.forms import ApiSampleListFilterForm, HistoryFilterForm
from webapp.models import Sample
from webapp.selectors import (
    CappedPaginator,
    cell_history,
    cells_with_details,
    figure_changes,
    leukocyte_formula,
    sample_images_with_cells,
    sample_progress,
    samples_with_progress,
    unfamiliar_photograph,
)

MAX_PAGE_SIZE = 200
PAGING = ("page", "page_size")


def read_only(view):
    """GET and HEAD only; any other method answers 405 (in JSON, views.errors), not the CSRF
    check's 403, which would tell a laboratory system to sign in again: nothing here changes
    state, so there is nothing for a forged request to do."""
    return csrf_exempt(require_safe(view))


class _BadPage(ValueError):
    """A page or page size the list cannot give; ``status`` is the answer's (400 or 404)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _page_size(request, default=50):
    raw = request.GET.get("page_size")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise _BadPage(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}, not {raw!r}.")
    return size


def _listing(request, rows, serialize, page_of=None):
    """The JSON answer of a list view: a page of ``rows``, each serialize(request, row), or a
    400/404 saying what was wrong with ?page= or ?page_size=. ``page_of(request, rows, size)``
    cuts the page (default: by number, counted by Django's Paginator)."""
    try:
        page = (page_of or _numbered_page)(request, rows, _page_size(request))
    except _BadPage as bad:
        return JsonResponse({"error": str(bad)}, status=bad.status)
    return JsonResponse({
        "count": page.count,
        "count_capped": page.capped,
        "page": page.number,
        "pages": page.pages,
        "next": page.following,
        "previous": page.previous,
        "results": [serialize(request, item) for item in page.rows],
    })


@dataclass
class _ListPage:
    rows: list
    count: int
    number: int
    pages: int | None  # None where the count stopped at its cap: follow "next" until it is null
    following: str | None  # the next page's address
    previous: str | None = None
    capped: bool = False


def _numbered_page(request, rows, size, paginator_class=Paginator):
    paginator = paginator_class(rows, size)
    raw = request.GET.get("page", "1")
    # A count stopped at its cap (selectors.CappedPaginator) says nothing of how many pages there are.
    capped = getattr(paginator, "capped", False)
    try:
        page = paginator.page(raw)
    except PageNotAnInteger:
        raise _BadPage(f"page must be a whole number from 1, not {raw!r}.") from None
    except EmptyPage:
        if not raw.isdigit() or int(raw) < 1:
            raise _BadPage(f"page must be a whole number from 1, not {raw!r}.") from None
        raise _BadPage(f"There is no page {raw}: the list has {'fewer' if capped else paginator.num_pages}.",
                       status=404) from None
    query = request.GET.copy()

    def link(number):
        query["page"] = number
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return _ListPage(page.object_list, paginator.count, page.number, None if capped else paginator.num_pages,
                     link(page.next_page_number()) if page.has_next() else None,
                     link(page.previous_page_number()) if page.has_previous() else None, capped)


def _capped_page(request, rows, size):
    return _numbered_page(request, rows, size, CappedPaginator)


def _media(request, field_file):
    return request.build_absolute_uri(field_file.url) if field_file else None


def cell_json(request, cell, with_image=True):
    data = {
        "id": cell.pk,
        "url": request.build_absolute_uri(reverse("lab:api-cell", args=[cell.pk])),
        "image": cell.image_id,
        "index": cell.index,
        "box": [cell.x0, cell.y0, cell.x1, cell.y1],
        "cell_type": cell.cell_type,
        "predicted_type": cell.predicted_type,
        "corrected_type": cell.corrected_type or None,
        "confidence": round(cell.confidence, 4),
        # As in the CSV: the group of the type the formula counts (the reviewer's where there is one),
        # and the network's own call beside it; None for no white cell (platelet, erythroblast).
        "binary_call": group_of(cell.cell_type) or None,
        "predicted_binary_call": cell.predicted_binary_call or None,
        "needs_review": cell.needs_review,
        # classifier.ood's score: above 1, unlike the cells the network was trained on (None: a
        # network without one).
        "ood_score": None if cell.ood_score is None else round(cell.ood_score, 4),
        "added_by_hand": cell.added_by_hand,
        # Cut by the photograph's edge: counted only where a reviewer counted it in.
        "partial": cell.is_partial,
        "count_partial": cell.count_partial,
        # False: no cell outline was found on a photograph of one cell, and its middle was classified.
        "outlined": cell.outlined,
        "model_version": cell.model_version_id,
        # False once another version re-classified the image: the formula counts that call instead.
        # (The name is older than the field below; it says "current", not "in the differential".)
        "counted": not cell.is_superseded,
        # Whether the differential counts this cell: current, whole or counted in, and of a type
        # the differential counts (not a platelet, artefact, erythroblast or unidentified cell).
        "in_differential": not cell.is_superseded and cell.in_differential,
        "created_at": cell.created_at.isoformat(),
        "crop": _media(request, cell.crop),
    }
    if with_image:
        data["sample"] = cell.image.sample_id
        data["accession_number"] = cell.image.sample.accession_number
    return data


def _sample_summary(request, sample):
    return {
        "id": sample.pk,
        "url": request.build_absolute_uri(reverse("lab:api-sample", args=[sample.pk])),
        "accession_number": sample.accession_number,
        "photographs": sample.photographs,
        "created_at": sample.created_at.isoformat(),
        "images": sample.image_count,
        "images_done": sample.done_count,
        "images_failed": sample.failed_count,
        **_sign_off_fields(request, sample),
    }


def _sign_off_fields(request, sample):
    """What a laboratory information system polls for: only a signed result has a FHIR export."""
    return {
        "status": sample.status,
        # preliminary, final or amended: the FHIR export's status, the report's banner.
        "result": sample.result.value,
        # The signature in force: none while the sample is reopened (the withdrawn one is in the
        # audit trail).
        "signed_by": sample.signed_by.get_username() if sample.is_signed and sample.signed_by else None,
        "signed_at": sample.signed_at.isoformat() if sample.is_signed and sample.signed_at else None,
        "times_signed": sample.times_signed,
        # An amended result: why it was reopened, by whom, when (null for any other result).
        "amendment": ({"reason": sample.amended_because,
                       "reopened_by": sample.reopened_by.get_username() if sample.reopened_by else None,
                       "reopened_at": sample.reopened_at.isoformat() if sample.reopened_at else None,
                       # Each reported figure that differs from the result signed before (a
                       # figure None: not reported then, or no leukocyte counted); null where that
                       # result's figures were not kept (reopened before migration 0027), as the
                       # report then says nothing of changes either.
                       "changes": ([{"type": name, "before": was, "after": now,
                                     "unit": "percent" if unit == "percent" else "per_100_leukocytes"}
                                    for name, was, now, unit in figure_changes(
                                        sample.previously_signed_figures, sample.signed_figures)]
                                   if sample.previously_signed_figures and sample.signed_figures
                                   else None)}
                      if sample.amended_because else None),
        "fhir": (request.build_absolute_uri(reverse("lab:api-sample-fhir", args=[sample.pk]))
                 if sample.is_signed else None),
    }


def _refused_parameters(request, known):
    """400 naming the query parameters this list does not take, or given empty, or None: a misspelt
    filter (?acession_number=), or one sent without its value (a system building the address from a
    blank field), would otherwise be ignored, and a laboratory system would file the whole list as
    the sample it asked for."""
    unknown = sorted(set(request.GET) - set(known))
    if unknown:
        return JsonResponse({"error": f"Unknown {_parameters(unknown)}. "
                                      f"This list takes {', '.join(sorted(known))}."}, status=400)
    empty = sorted(name for name, values in request.GET.lists() if any(not value.strip() for value in values))
    if empty:
        return JsonResponse({"error": f"Empty {_parameters(empty)}: give each a value, or leave it out to "
                                      "filter nothing by it."}, status=400)
    return None


def _parameters(names):
    return f"{'parameters' if len(names) > 1 else 'parameter'}: {', '.join(names)}"


def _invalid_filters(form):
    """400 with the one "error" every API refusal carries (the README's promise), naming each bad
    filter, and "errors": the form's per-field details for a program that reads them."""
    reasons = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in form.errors.items())
    return JsonResponse({"error": f"Bad filter: {reasons}", "errors": form.errors.get_json_data()},
                        status=400)


@read_only
def sample_list(request):
    form = ApiSampleListFilterForm(request.GET)
    unknown = _refused_parameters(request, [*form.fields, "accession_number", *PAGING])
    if unknown:
        return unknown
    if not form.is_valid():
        return _invalid_filters(form)
    filters = form.filters()
    samples = samples_with_progress(accession=request.GET.get("accession_number", "").strip(), **filters)
    return _listing(request, samples, _sample_summary,
                    _signed_since_page if filters["signed_since"] else None)


def _signed_since_page(request, samples, size):
    """A page of a poll by ``signed_since``: results in the order they were signed, its ``next``
    the same poll from the last one (signed_since its signed_at, after its id).

    Not by page number: between an information system's pages, a result listed on an earlier page
    that is reopened leaves the list and one signed again moves to its end, every later result
    moves up a place, and the first of the next page was never served, nor, being older than the
    poll's last, any poll after (the two-user audit)."""
    if request.GET.get("page", "1") != "1":
        raise _BadPage("A poll by signed_since is not paged by number: follow each answer's next, which "
                       "starts after the last result it listed, or poll again from that result's "
                       "signed_at. A page number skips a result where one listed before it is reopened "
                       "or signed again meanwhile.")
    count = samples.count()  # those from this page on: the poll's start moves with each next
    rows = list(samples[:size])
    following = None
    if count > len(rows):
        query = request.GET.copy()
        query.pop("page", None)
        query["signed_since"] = rows[-1].signed_at.astimezone(UTC).isoformat()
        query["after"] = rows[-1].pk
        following = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return _ListPage(rows, count, 1, max(1, math.ceil(count / size)), following)


@read_only
def sample_csv(request, pk):
    """The sample's CSV export, as the sample page's "Export CSV" gives it but for that one's byte-order
    mark (exports.sample_csv_response), for a program with an API key (which signs in to the API alone)."""
    return sample_csv_response(get_object_or_404(Sample, pk=pk))


@read_only
def sample_detail(request, pk):
    sample = get_object_or_404(Sample.objects.select_related("signed_by", "reopened_by"), pk=pk)
    progress = sample_progress(sample)
    images = []
    for entry in sample_images_with_cells(sample):
        image = entry.image
        images.append({
            "id": image.pk,
            "original_filename": image.original_filename,
            "width": image.width,
            "height": image.height,
            "status": image.status,
            "error": image.error or None,
            "conversion_note": image.conversion_note or None,
            "quality_warnings": image.quality_warnings,
            # Most of its cells are unlike those the network was trained on: check every call.
            "unfamiliar": unfamiliar_photograph(entry.cells),
            "model_version": image.model_version_id,
            "processed_at": image.processed_at.isoformat() if image.processed_at else None,
            "inference_runtime": image.inference_runtime or None,
            "file": _media(request, image.image),
            "cells": [dict(cell_json(request, cell, with_image=False), probabilities=cell.probabilities)
                      for cell in entry.cells],
        })
    return JsonResponse({
        "id": sample.pk,
        "accession_number": sample.accession_number,
        "note": sample.note,
        # smear_fields or one_cell_each (Sample.Photographs): which cells of a photograph count.
        "photographs": sample.photographs,
        "created_at": sample.created_at.isoformat(),
        "complete": progress.complete,
        **_sign_off_fields(request, sample),
        "progress": {"total": progress.total, "finished": progress.finished, "counts": progress.counts},
        "formula": leukocyte_formula(sample).as_dict(),
        "images": images,
    })


@read_only
def cell_list(request):
    form = HistoryFilterForm(request.GET or None)
    unknown = _refused_parameters(request, [*form.fields, *PAGING])
    if unknown:
        return unknown
    if request.GET and not form.is_valid():
        return _invalid_filters(form)
    return _listing(request, cell_history(form.filters()), cell_json, _capped_page)


@read_only
def cell_detail(request, pk):
    cell = get_object_or_404(cells_with_details(), pk=pk)
    return JsonResponse(dict(
        cell_json(request, cell),
        probabilities=cell.probabilities,
        detection_score=round(cell.detection_score, 4),
        reviewed_at=cell.reviewed_at.isoformat() if cell.reviewed_at else None,
        review_carried_from=cell.review_carried_from_id,
        heatmap=_media(request, cell.heatmap),
        window=_media(request, cell.window),
    ))
