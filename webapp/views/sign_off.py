"""The sample page's sign-off panel: sign, reopen, set the target count (POST only).

Signing and reopening need the permission webapp.sign_sample (the hematologist group): anyone else
gets 403. A refusal (what still stands in the way, a locked sample) comes back as a message on the
sample page, or as JSON with 409 to a script that asks for JSON (400 where the form itself is wrong).
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from webapp.forms_sign_off import ReopenForm, SignForm, TargetCountForm
from webapp.models import Sample
from webapp.presenters.lab import sample_page_address
from webapp.services.locking import DeletedMeanwhile, SampleLocked
from webapp.services.sign_off import (
    NOTHING_TO_REOPEN,
    NOTHING_TO_SIGN,
    TARGET_NOT_SET,
    SignOffRefused,
    may_sign,
    reopen_sample,
    set_target_count,
    sign_sample,
)
from webapp.views import roles
from webapp.views.deleted_meanwhile import answer_gone, page_sent, refused_as_gone, sample_or_gone
from webapp.views.errors import wants_json


def _answer(request, sample, error=None, done="", status=409):
    """The page again with a message, or JSON to a script: an error is a refusal of what the sample
    stands at (409), or with ``status`` 400 a form the site cannot read."""
    if wants_json(request):
        if error:
            return JsonResponse({"error": error}, status=status)
        current = Sample.objects.get(pk=sample.pk)
        return JsonResponse({"sample": sample.pk, "status": current.status, "message": done})
    if error:
        return refused_as_gone(request, error, sample.pk, page_sent(request))
    messages.success(request, done)
    return redirect(sample_page_address(sample.pk, page_sent(request)))


def _refuse_unless_may_sign(request, action):
    # views.errors.permission_denied answers a page's script in JSON, a person with a page.
    if not may_sign(request.user):
        raise PermissionDenied(f"{action} is for hematologists (the sign_sample permission).")


def draft_key(sample_pk):
    """Where a refused sign form's reason waits, in the session, for the page it returns to."""
    return f"sign-off-draft-{sample_pk}"


def _keep_draft(request, sample, refused=()):
    # A refused signature returns to the sample page, whose form is drawn empty: what the
    # hematologist wrote is kept for it, once, with what the refusal named (the fields it was
    # about are marked invalid there: a screen reader says so on reaching them).
    reason = request.POST.get("below_target_reason", "")[:2000]
    codes = sorted({refusal.code for refusal in refused})
    if reason.strip() or request.POST.get("keep_unidentified") or codes:
        request.session[draft_key(sample.pk)] = {
            "below_target_reason": reason, "keep_unidentified": bool(request.POST.get("keep_unidentified")),
            "refused": codes}


def _form_error(form):
    return " ".join(str(error) for errors in form.errors.values() for error in errors)


@require_POST
def sample_sign(request, pk):
    # Asked first: a deleted sample's accession number is told only to those who may sign.
    _refuse_unless_may_sign(request, "Signing a sample")
    try:
        sample = sample_or_gone(pk, NOTHING_TO_SIGN)
    except DeletedMeanwhile as exc:
        return answer_gone(request, exc)
    form = SignForm(request.POST)
    if not form.is_valid():
        _keep_draft(request, sample)
        return _answer(request, sample, _form_error(form), status=400)
    try:
        sample = sign_sample(sample, request.user, form.cleaned_data["below_target_reason"],
                             form.cleaned_data["keep_unidentified"], form.cleaned_data["result_seen"])
    except SignOffRefused as exc:
        _keep_draft(request, sample, exc.reasons)
        return _answer(request, sample, str(exc))
    amended = " (amended result)" if sample.result == Sample.Result.AMENDED else ""
    return _answer(request, sample, done=f"Sample {sample.accession_number} signed{amended}.")


@require_POST
def sample_reopen(request, pk):
    # Asked first: a deleted sample's accession number is told only to those who may sign.
    _refuse_unless_may_sign(request, "Reopening a signed sample")
    try:
        sample = sample_or_gone(pk, NOTHING_TO_REOPEN)
    except DeletedMeanwhile as exc:
        return answer_gone(request, exc)
    form = ReopenForm(request.POST)
    if not form.is_valid():
        return _answer(request, sample, _form_error(form), status=400)
    try:
        sample = reopen_sample(sample, request.user, form.cleaned_data["reason"])
    except SignOffRefused as exc:
        return _answer(request, sample, str(exc))
    return _answer(request, sample, done=f"Sample {sample.accession_number} reopened: its result can "
                                         "change again until it is signed anew.")


@require_POST
@roles.lab_work(roles.REVIEW, "Setting the target count")
def sample_target(request, pk):
    try:
        sample = sample_or_gone(pk, TARGET_NOT_SET)
    except DeletedMeanwhile as exc:
        return answer_gone(request, exc)
    form = TargetCountForm(request.POST)
    if not form.is_valid():
        return _answer(request, sample, _form_error(form), status=400)
    try:
        sample = set_target_count(sample, form.cleaned_data["target_count"], request.user)
    except (SampleLocked, SignOffRefused, DeletedMeanwhile) as exc:
        return _answer(request, sample, str(exc))
    return _answer(request, sample, done=f"Target count set to {sample.target_count} leukocytes.")
