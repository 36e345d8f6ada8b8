"""Pages of the lab workflow. Thin: forms and services change things, selectors read them and
presenters (webapp.presenters.lab) shape what the pages show."""

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.counting import type_label
from webapp.exports import sample_csv_response
from webapp.forms import (
    AddImagesForm,
    HistoryFilterForm,
    PhotographsKindForm,
    ReviewForm,
    SampleListFilterForm,
    SampleUploadForm,
    duplicate_accession_error,
    is_row_id,
)
from webapp.intake import UPLOADS_CHECKED_AT_ONCE, UploadsBusy, upload_budget
from webapp.models import Cell, Sample, SmearImage
from webapp.presenters import lab as lab_pages
from webapp.presenters import sign_off as sign_off_pages
from webapp.selectors import (
    SAMPLE_PAGE_PHOTOGRAPHS,
    active_version_id,
    cell_name,
    cells_with_review_trail,
    history_page,
    image_statuses,
    label_stamp,
    leukocyte_formula,
    photograph_page_number,
    sample_entered_by_on_record,
    sample_photograph_page,
    sample_progress,
    sample_record_counts,
    sample_timeline,
    samples_with_progress,
    unsent_photographs,
)
from webapp.services.deletion import (
    NOTHING_LEFT,
    PhotographBusy,
    delete_image,
    delete_sample,
    entered_by,
    may_delete_sample,
)
from webapp.services.health import classify_workers_running
from webapp.services.locking import NOTHING_CHANGED, DeletedMeanwhile, SampleLocked
from webapp.services.photographs_kind import PhotographsKindKept, read_photographs_as, why_kind_is_kept
from webapp.services.review import ReviewError, StaleLabels, review_cell
from webapp.services.sign_off import TARGET_CHOICES, may_sign
from webapp.services.uploads import (
    NOTHING_QUEUED,
    NOTHING_STORED,
    DuplicateAccession,
    StorageRefused,
    add_images_to_sample,
    create_sample_with_images,
    requeue_image,
)
from webapp.views import roles
from webapp.views.deleted_meanwhile import (
    PhotographGone,
    answer_gone,
    cell_or_gone,
    page_sent,
    photograph_or_gone,
    refused_as_gone,
    sample_or_gone,
)
from webapp.views.errors import wants_json
from webapp.views.sign_off import draft_key
from webapp.wording import choose_again, count_of, isolated

logger = logging.getLogger(__name__)


@require_GET
def sample_list(request):
    form = SampleListFilterForm(request.GET or None)
    filters = form.filters() if form.is_bound else {}
    page = Paginator(samples_with_progress(**filters), 25).get_page(request.GET.get("page"))
    searched = {name: value for name, value in request.GET.items() if name in form.fields and value}
    return render(request, "lab/sample_list.html", {
        "page": page, "rows": lab_pages.sample_rows(page.object_list), "form": form,
        "filters_left_out": _filters_left_out(form),
        "status_badges": sign_off_pages.status_badges(sample.pk for sample in page.object_list),
        "page_query": urlencode(searched), "searched": bool(searched),
    })


def _filters_left_out(form):
    """(label, why) of each filter a list's form could not read, which its filters() then leaves out:
    said on the page, lest the list read as filtered ("?status=bogus" listed every sample)."""
    return [(form[name].label, " ".join(errors)) for name, errors in form.errors.items()
            if name in form.fields]


def _report_stored(request, stored, noun):
    how_many = count_of(len(stored), noun)
    waiting = unsent_photographs(stored)
    if not waiting:
        messages.success(request, f"{how_many} queued for classification.")
        return
    # The broker was down as they were stored: said, not "queued", which the cards contradict.
    which = ("it waits" if len(stored) == 1 else "they wait" if waiting == len(stored)
             else f"{waiting} of them wait")
    messages.warning(request, f"{how_many} stored. The task queue does not answer at the moment, so {which} "
                              "and go to the classifier as soon as it does: nobody has to act.")


def _report_rejections(request, rejected):
    over_budget = [item for item in rejected if item.over_budget]
    for item in rejected:
        if not item.over_budget:
            messages.error(request, f"{isolated(item.name)} was not stored: {item.reason}")
    if over_budget:
        # One line for the batch past the budget, which can be most of a large upload.
        count, them = len(over_budget), "it" if len(over_budget) == 1 else "them"
        messages.error(request, (
            f"{count_of(count, 'photograph')} from {isolated(over_budget[0].name)} on not stored: one upload "
            f"may hold {upload_budget()}. Add {them} to the sample in another upload."))


def _report_sample_version(request, version_id):
    """Photographs added to a sample go to the version that classified its others (one differential,
    one network): said where that is not the version now serving new samples."""
    active = active_version_id()
    if version_id and active and version_id != active:
        messages.info(request, f"They are classified by v{version_id}, as this sample's other photographs "
                               f"were, not by v{active}, which classifies new samples: one differential "
                               f"comes from one network. Re-classifying the sample on the Models page moves "
                               f"it to v{active}.")


def _report_pages_left_out(request, pages_left_out):
    for name, pages, kept in pages_left_out:
        which = f"page {kept + 1}, the largest," if kept else "the first"
        messages.warning(request, f"{isolated(name)} holds {pages} pages: only {which} was stored and "
                                  "classified. Save each field as a file of its own to have the others "
                                  "classified.")


# Past this many, one line for the batch: 150 copies of another sample's smears gave 150 warnings.
ALSO_ELSEWHERE_NAMED = 3


def _report_also_elsewhere(request, also_elsewhere):
    if len(also_elsewhere) > ALSO_ELSEWHERE_NAMED:
        samples = list(dict.fromkeys(number for _, accessions in also_elsewhere for number in accessions))
        shown = ", ".join(samples[:ALSO_ELSEWHERE_NAMED]) + (
            f" and {count_of(len(samples) - ALSO_ELSEWHERE_NAMED, 'other')}"
            if len(samples) > ALSO_ELSEWHERE_NAMED else "")
        messages.warning(request, f"{len(also_elsewhere)} of these photographs are the same as ones in "
                                  f"{count_of(len(samples), 'other sample')} ({shown}): check that they "
                                  "belong to this patient. Each one's card names its sample.")
        return
    for name, accessions in also_elsewhere:
        messages.warning(request, f"{isolated(name)} is the same photograph as one in sample "
                                  f"{', '.join(accessions)}: check that it belongs to this patient.")


@require_http_methods(["GET", "POST"])
@roles.lab_work(roles.UPLOAD, "Uploading photographs")
def upload(request):
    form = SampleUploadForm(request.POST or None, request.FILES or None)
    rejected = []
    result = None
    refused_for_now = False  # the server's state, not the form: the same upload may pass later
    busy = False  # refused for the uploads being checked: a moment's state, not a fault
    if request.method == "POST" and form.is_valid():
        try:
            result = create_sample_with_images(
                form.cleaned_data["accession_number"], form.cleaned_data["note"],
                form.cleaned_data["images"], user=request.user, photographs=form.cleaned_data["photographs"],
            )
        except DuplicateAccession as duplicate:  # stored by another upload while this one was read
            form.add_error("accession_number", duplicate_accession_error(duplicate.existing))
        except (UploadsBusy, StorageRefused) as refusal:  # nothing here is the user's fault
            form.add_error(None, str(refusal))
            refused_for_now = True
            busy = isinstance(refusal, UploadsBusy)
    if result is not None:
        if result.sample:
            _report_stored(request, result.stored, "photograph")
            _report_rejections(request, result.rejected)
            _report_also_elsewhere(request, result.also_elsewhere)
            _report_pages_left_out(request, result.pages_left_out)
            return redirect("lab:sample-detail", pk=result.sample.pk)
        rejected = result.rejected
        form.add_error("images", ValidationError("None of the files could be stored; nothing was saved.",
                                                       code="none_stored"))
        form.describe_images_by("upload-rejected")
    status = 200 if request.method == "GET" else 503 if refused_for_now else 400
    # A browser never fills a file input back in: photographs sent with a form refused for its
    # accession number or note are gone from it, and the page must say so.
    sent = len(request.FILES.getlist("images")) if result is None and not form.has_error("images") else 0
    response = render(request, "lab/upload.html", {
        "form": form,
        "rejected": rejected,
        "choose_again": choose_again(sent, correct_first=not refused_for_now),
        "max_upload_mb": settings.MAX_UPLOAD_BYTES // (1024 * 1024),
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "max_megapixels": f"{settings.MAX_IMAGE_PIXELS / 1e6:g}",
        "max_files": settings.MAX_FILES_PER_UPLOAD,
        "upload_budget": upload_budget(),
        "max_upload_total_bytes": settings.MAX_UPLOAD_TOTAL_MB * 1024 * 1024,
    }, status=status)
    if refused_for_now:
        response["Retry-After"] = "60"
    if status == 400:
        # Django's handler would log a bare "Bad Request"; the messages themselves may carry an
        # accession number, so the line names the fields and their error codes only.
        logger.info("Upload form refused: %s", _refused_fields(form))
        response._has_been_logged = True
    if busy:
        # Said as what it is: Django's handler would log the 503 as an error, which reads as a
        # fault and may wake whoever watches the log. A storage that refused the write stays one.
        logger.warning("Upload refused for now, as this process is checking %d others: %s",
                       UPLOADS_CHECKED_AT_ONCE, request.user.get_username())
        response._has_been_logged = True
    return response


def _refused_fields(form):
    """ "accession_number (duplicate), images (required)": what a refused form was refused for."""
    return ", ".join(f"{field} ({', '.join(error.code or 'invalid' for error in errors)})"
                     for field, errors in form.errors.as_data().items())


def _sample_context(sample, image_ids=None, page_number=None):
    return {"sample": sample, **lab_pages.sample_results(sample, image_ids, page_number).as_context()}


def _with_panel(request, sample, context, draft=None):
    """A results context, with what the signed-in person may do beside the cards: delete, sign."""
    context["may_delete"] = may_delete_sample(request.user, sample)
    context["sign_off_panel"] = _sign_off_panel(request, sample, draft=draft)
    return context


def _sign_off_panel(request, sample, draft=None):
    return sign_off_pages.sign_off_panel(sample, may_sign(request.user), TARGET_CHOICES, draft=draft)


def _sample(pk):
    return get_object_or_404(Sample.objects.select_related("created_by"), pk=pk)


# Entries of a sample's audit trail a page: the sign-off panel shows the newest as many.
TRAIL_PAGE_ENTRIES = 200


@require_GET
def sample_trail(request, pk):
    """The sample's whole audit trail, newest first, a page at a time: the panel shows the newest
    page alone, and a re-classified sample of many photographs holds more."""
    sample = _sample(pk)
    page = Paginator(sample_timeline(sample.pk), TRAIL_PAGE_ENTRIES).get_page(request.GET.get("page"))
    return render(request, "lab/sample_trail.html", {
        "sample": sample, "page": page, "entries": sign_off_pages.timeline_entries(page.object_list),
    })


@require_GET
def sample_detail(request, pk):
    sample = _sample(pk)
    context = _with_panel(request, sample, _sample_context(sample, page_number=request.GET.get("page")),
                          draft=request.session.pop(draft_key(sample.pk), None))
    context["max_files"] = settings.MAX_FILES_PER_UPLOAD
    # Only where the page offers the change: a count over the sample's cells, for the refusal's words.
    offered = not sample.is_signed and request.user.has_perm(roles.ADD_PHOTOGRAPHS)
    context["photographs_kind_kept"] = why_kind_is_kept(sample) if offered else ""
    # Photographs waiting with no worker to take them would wait silently until the reconciler's
    # stuck time; the page says so at once.
    context["no_classifier"] = not context["progress"].complete and classify_workers_running() is False
    return render(request, "lab/sample_detail.html", context)


@require_GET
def sample_results(request, pk):
    """The results part of the sample page and its sign-off panel, swapped in by sample.js as
    images finish and cells are reviewed, for the page of photographs ?page= names; with ?image=ID,
    only that photograph's card beside the sidebar and the panel: what a review changes (a
    100-photograph page is some 600 KiB)."""
    sample = _sample(pk)
    only = request.GET.get("image")
    if only is None:
        context = _sample_context(sample, page_number=request.GET.get("page"))
        template = "lab/_sample_results_live.html"
    else:
        # ?image=ID,ID...: those cards alone, what the live refresh asks for when photographs
        # finish, rather than a whole page of cards laid out again; none (?image=) where the one
        # that finished is on another page: the sidebar and the panel, for the formula.
        # Each must be one of this sample's photographs: the results then hold it. isdigit() alone
        # takes "²", and the database refuses a number past its largest integer.
        parts = only.split(",") if only else []
        named = set(parts)
        valid = len(named) <= SAMPLE_PAGE_PHOTOGRAPHS and all(is_row_id(part) for part in parts)
        context = (_sample_context(sample, sorted(map(int, named)), page_number=request.GET.get("page"))
                   if valid else None)
        if not (context and len(context["photographs"]) == len(named)):
            raise Http404(f"Sample {sample.accession_number} has no photograph {only}.")
        template = "lab/_sample_results_part.html"
    return render(request, template, _with_panel(request, sample, context))


@require_GET
def sample_status(request, pk):
    """The progress poll: the whole sample's counts, and the state of each photograph of the page
    ``?page=`` shows (every photograph without it): thousands of one-cell photographs, each listed
    at every poll, were a large answer to send every few seconds for the 100 cards on the page."""
    sample = get_object_or_404(Sample, pk=pk)
    page = request.GET.get("page")
    shown = None if page is None else list(sample_photograph_page(sample, page).object_list)
    images = image_statuses(sample, shown)
    progress = sample_progress(sample)
    return JsonResponse({
        "sample": sample.pk,
        "total": progress.total,
        "finished": progress.finished,
        "percent": progress.percent,
        "complete": progress.complete,
        "counts": progress.counts,
        "images": images,
    })


@require_POST
@roles.lab_work(roles.ADD_PHOTOGRAPHS, "Changing what the photographs show")
def sample_photographs(request, pk):
    try:
        sample = sample_or_gone(pk, NOTHING_CHANGED)
    except DeletedMeanwhile as exc:
        return refused_as_gone(request, exc)
    form = PhotographsKindForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose what the photographs show: fields of a smear, or one white cell "
                                "each.")
        return redirect("lab:sample-detail", pk=sample.pk)
    try:
        queued = read_photographs_as(sample, form.cleaned_data["photographs"], user=request.user)
    except (SampleLocked, PhotographsKindKept) as exc:
        messages.error(request, str(exc))
        return redirect("lab:sample-detail", pk=sample.pk)
    except DeletedMeanwhile as exc:
        return refused_as_gone(request, exc)
    if queued:
        messages.success(request, f"The photographs are now read as {sample.photographs_in_short}: "
                                  f"{count_of(queued, 'photograph')} queued to be classified again.")
    else:
        messages.info(request, f"The photographs were already read as {sample.photographs_in_short}.")
    return redirect("lab:sample-detail", pk=sample.pk)


@require_POST
@roles.lab_work(roles.ADD_PHOTOGRAPHS, "Adding photographs")
def sample_add_images(request, pk):
    try:
        sample = sample_or_gone(pk, NOTHING_STORED)
    except DeletedMeanwhile as exc:
        return refused_as_gone(request, exc)
    form = AddImagesForm(request.POST, request.FILES)
    if not form.is_valid():
        for error in form.errors["images"]:
            messages.error(request, error)
        return redirect("lab:sample-detail", pk=sample.pk)
    try:
        result = add_images_to_sample(sample, form.cleaned_data["images"])
    except (SampleLocked, UploadsBusy, StorageRefused) as exc:
        messages.error(request, str(exc))
        return redirect("lab:sample-detail", pk=sample.pk)
    except DeletedMeanwhile as exc:
        return refused_as_gone(request, exc)
    if result.stored:
        _report_stored(request, result.stored, "more photograph")
        _report_sample_version(request, result.stored[0].requested_version_id)
    _report_rejections(request, result.rejected)
    _report_also_elsewhere(request, result.also_elsewhere)
    _report_pages_left_out(request, result.pages_left_out)
    if result.stored:  # at the first new card: on a sample of many pages, the last, not the first
        return redirect(lab_pages.photograph_address(result.stored[0]))
    return redirect("lab:sample-detail", pk=sample.pk)


@require_POST
@roles.lab_work(roles.ADD_PHOTOGRAPHS, "Classifying a photograph again")
def image_retry(request, pk):
    try:
        image = photograph_or_gone(pk, NOTHING_QUEUED)
    except PhotographGone as exc:
        return refused_as_gone(request, exc, exc.sample_id, page_sent(request))
    if image.status == SmearImage.Status.DONE:
        # A page drawn before it finished offered "Try again"; a re-run would only mark the sample
        # unsignable for a while and add to its audit trail.
        messages.info(request, f"{isolated(image.original_filename)} is already classified: nothing was "
                               "queued again.")
        return redirect(lab_pages.photograph_address(image))
    try:
        requeue_image(image)
    except SampleLocked as exc:
        messages.error(request, str(exc))
        return redirect(lab_pages.photograph_address(image))
    except DeletedMeanwhile as exc:  # the page it would be on: its neighbours, where the person was
        return refused_as_gone(request, exc, image.sample_id, photograph_page_number(image))
    messages.success(request, f"{isolated(image.original_filename)} queued again.")
    return redirect(lab_pages.photograph_address(image))


def _ensure_may_delete(user, sample, what):
    """PermissionDenied, naming who may, unless ``user`` may delete ``what`` of the sample ("it",
    "its photographs"): the person who entered it, or staff (services.deletion)."""
    if not may_delete_sample(user, sample):
        if entered_by(user, sample):
            raise PermissionDenied(
                f"Deleting {what} is lab work, and your account no longer holds a lab role: an "
                f"administrator may delete {what}, or give your account its role again.")
        entered_by_whom = f" ({sample.created_by.get_username()})" if sample.created_by else ""
        raise PermissionDenied(
            f"Only the person who entered sample {sample.accession_number}{entered_by_whom} or an "
            f"administrator may delete {what}."
        )


def _ensure_may_delete_on_record(user, sample_id, what):
    """_ensure_may_delete for a sample deleted meanwhile, who entered it read from the trail: asked
    before the refusal names the sample, and naming none itself."""
    on_record = Sample(pk=sample_id, created_by_id=sample_entered_by_on_record(sample_id))
    if not may_delete_sample(user, on_record):
        raise PermissionDenied(
            f"Only the person who entered the sample or an administrator may delete {what}.")


@require_POST
def image_delete(request, pk):
    """A photograph deleted by whoever may delete its sample: one that failed (it would keep the
    sample from being signed), or one that does not belong to it (the page warns of a photograph
    another sample holds too). One the classifier is still reading is left until it is done."""
    try:
        image = photograph_or_gone(pk, NOTHING_LEFT, SmearImage.objects.select_related("sample__created_by"))
    except PhotographGone as exc:
        sample = Sample.objects.select_related("created_by").filter(pk=exc.sample_id).first()
        if sample is None:
            _ensure_may_delete_on_record(request.user, exc.sample_id, "its photographs")
        else:
            _ensure_may_delete(request.user, sample, "its photographs")
        return refused_as_gone(request, exc, exc.sample_id, page_sent(request))
    sample = image.sample
    _ensure_may_delete(request.user, sample, "its photographs")
    page_number = photograph_page_number(image)
    try:
        delete_image(image, user=request.user, finished_only=True)
    except (SampleLocked, PhotographBusy) as exc:
        messages.error(request, str(exc))
        return redirect(lab_pages.photograph_address(image, page_number))
    except DeletedMeanwhile as exc:  # another tab deleted it: back where it was, as after a deletion
        return refused_as_gone(request, exc, sample.pk, page_number)
    messages.success(request, f"{isolated(image.original_filename)} and its cells were deleted.")
    # The page it was on, which now shows its neighbours.
    return redirect(lab_pages.sample_page_address(sample.pk, page_number))


@require_http_methods(["GET", "POST"])
def sample_delete(request, pk):
    try:
        sample = sample_or_gone(pk, NOTHING_LEFT, Sample.objects.select_related("created_by"))
    except DeletedMeanwhile as exc:  # its page was open: its "Delete" asked after another's deletion
        _ensure_may_delete_on_record(request.user, pk, "it")
        return refused_as_gone(request, exc)
    _ensure_may_delete(request.user, sample, "it")
    if request.method == "POST":
        accession = sample.accession_number
        try:
            delete_sample(sample, user=request.user)
        except SampleLocked as exc:
            messages.error(request, str(exc))
            return redirect("lab:sample-detail", pk=sample.pk)
        except DeletedMeanwhile as exc:
            return refused_as_gone(request, exc)
        messages.success(request, f"Sample {accession} and all its pictures were deleted.")
        return redirect("lab:sample-list")
    return render(request, "lab/sample_confirm_delete.html",
                  {"sample": sample, "counts": sample_record_counts(sample)})


@require_GET
def sample_export_csv(request, pk):
    return sample_csv_response(_sample(pk), for_a_spreadsheet=True)


@require_GET
def cell_detail(request, pk):
    cell = get_object_or_404(cells_with_review_trail(), pk=pk)
    return render(request, "lab/cell_detail.html", lab_pages.cell_page(cell).as_context())


@require_POST
@roles.lab_work(roles.REVIEW, "Relabelling a cell")
def cell_review(request, pk):
    try:
        cell = cell_or_gone(request, pk, NOTHING_CHANGED, Cell.objects.select_related("image"))
    except DeletedMeanwhile as exc:
        return answer_gone(request, exc)
    form = ReviewForm(request.POST)
    error, status, stale = None, 400, False
    if form.is_valid():
        try:
            cell, _ = review_cell(cell, form.cleaned_data["cell_type"], request.user,
                                  seen=form.cleaned_data["seen"])
        except StaleLabels as exc:
            # Someone reviewed the cell meanwhile: the answer carries it as it is now, so that the
            # page draws that label beside the message and the next click sends its stamp. A
            # conflict with another's change, as a signature made meanwhile is.
            error, status, stale, cell = str(exc), 409, True, exc.cells[0]
        except ReviewError as exc:
            error = str(exc)
        except SampleLocked as exc:
            error, status = str(exc), 409
    else:
        error = next(iter(form.errors.values()))[0]
    if wants_json(request):
        if error and not stale:
            return JsonResponse({"error": error}, status=status)
        answer = {"cell": cell.pk, "cell_type": cell.cell_type, "seen": label_stamp(cell)}
        if error:
            answer["error"] = error
        if request.POST.get("answer_with") == "card":
            # What the sample page swaps in after a review (its ?image=ID results): the photograph's
            # card, the sidebar with the formula and the sign-off panel, in this answer rather than
            # a second request a key press (the browser-side audit: 140 ms of the server's a relabel).
            sample = _sample(cell.image.sample_id)
            answer["results_html"] = render_to_string(
                "lab/_sample_results_part.html",
                _with_panel(request, sample, _sample_context(sample, [cell.image_id])), request)
        else:
            answer["formula"] = leukocyte_formula(cell.image.sample).as_dict()
        return JsonResponse(answer, status=status if error else 200)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"{cell_name(cell)} is now {type_label(cell.cell_type)}.")
    target = request.POST.get("next", "")
    # An address on this site only. redirect() would read a bare word as a URL pattern's name and
    # fail, after the review was saved.
    local = (target.startswith("/") and target.isprintable()
             and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()))
    return HttpResponseRedirect(target if local else reverse("lab:cell-detail", args=[cell.pk]))


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
        "filters_left_out": _filters_left_out(form),
        "page": page,
        "status_badges": sign_off_pages.status_badges(cell.image.sample_id for cell in page.object_list),
        "page_query": page_query,
        "filters_kept": [(name, value) for name, values in query.lists() for value in values],
        "view": "table" if request.GET.get("view") == "table" else "grid",
    })
