"""Staff-only pages for model versions: the list with metrics and the activation log, one page per
version with its learning curves, retraining with live progress, activation and re-classification.

What the pages show is shaped in webapp.presenters.models (learning curves: presenters.charts).
"""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.forms import is_row_id
from webapp.forms_models import ReclassifyForm, RetrainForm
from webapp.presenters.models import (
    activation_confirmation,
    activation_warning,
    groups_only_note,
    listed_versions,
    progress_report,
    training_outcome,
    version_page,
)
from webapp.selectors import model_versions, model_versions_with_cell_counts
from webapp.services.locking import SampleLocked
from webapp.services.model_registry import NoActiveModel
from webapp.services.model_versions import (
    ModelVersionError,
    VersionDeletedMeanwhile,
    activate_version,
    delete_unused_version,
)
from webapp.services.training import (
    ReclassificationRefused,
    TrainingRefused,
    cancel_training,
    reclassify,
    start_adaptation,
    start_training,
)
from webapp.views.errors import wants_json
from webapp.wording import count_of

# The admin role's permission (migration 0009): staff status alone lets a person into the Django
# admin, not decide which network counts the lab's cells.
MODEL_ADMIN_PERMISSION = "webapp.change_modelversion"


def can_manage_models(user):
    return user.is_staff and user.has_perm(MODEL_ADMIN_PERMISSION)


class MissingVersion(Exception):
    """The address names a model version that is not there."""

    def __init__(self, pk):
        super().__init__(f"There is no model version v{pk}: it was deleted, or never existed.")
        self.pk = pk


def _version_or_missing(queryset, pk):
    version = queryset.filter(pk=pk).first()
    if version is None:
        raise MissingVersion(pk)
    return version


def _missing(request, exc):
    """A 404 that says what is missing: a model version, not a sample, photograph or cell."""
    if wants_json(request):
        return JsonResponse({"error": str(exc)}, status=404)
    return render(request, "models/missing.html", {"pk": exc.pk, "message": str(exc)}, status=404)


def staff_required(view):
    """Signed-in staff in the admin role only; any other signed-in user gets 403 rather than a
    login loop. A model version the address names that is not there answers 404, saying so."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_manage_models(request.user):
            raise PermissionDenied("Model versions and retraining are for the lab's administrators: "
                                   "the admin role, with staff status.")
        try:
            return view(request, *args, **kwargs)
        except MissingVersion as exc:
            return _missing(request, exc)

    return wrapped


def _focus_first_error(form):
    """A refused form comes back as a new page, whose focus starts at its top, far from the form: the
    first field in error takes it, so a keyboard lands there and a screen reader reads its error."""
    if form is None:
        return
    for name, field in form.fields.items():
        if name in form.errors:
            field.widget.attrs["autofocus"] = True
            return


def _render_list(request, retrain_form=None, reclassify_form=None, status=200):
    _focus_first_error(retrain_form)
    _focus_first_error(reclassify_form)
    context = listed_versions().as_context()
    context["retrain_form"] = retrain_form or RetrainForm()
    context["reclassify_form"] = reclassify_form or ReclassifyForm()
    return render(request, "models/list.html", context, status=status)


# How a run ended, said on the page that followed it: a polite status for a network ready or a stop
# the reader asked for, an alert for a failure or a run someone else stopped (base.html,
# flash_messages).
_OUTCOME_LEVELS = {"finished": messages.SUCCESS, "stopped_as_asked": messages.INFO,
                   "failed": messages.ERROR, "stopped": messages.WARNING}


def _say_how_training_ended(request):
    """training.js reloads the page that followed a run with ?ended=<version> once it is over (the
    badge alone said so before, in silence). The outcome becomes a message and the page is sent to
    its own address without the parameter, so that a later reload does not say it again."""
    if "ended" not in request.GET:
        return None
    pk = request.GET["ended"]
    version = model_versions().filter(pk=pk).first() if is_row_id(pk) else None
    outcome = training_outcome(version, request.user) if version is not None else None
    if outcome is not None:
        messages.add_message(request, _OUTCOME_LEVELS[outcome.ended], outcome.words)
    query = request.GET.copy()
    del query["ended"]
    return redirect(f"{request.path}?{query.urlencode()}" if query else request.path)


@staff_required
@require_GET
def version_list(request):
    return _say_how_training_ended(request) or _render_list(request)


@staff_required
@require_GET
def version_detail(request, pk):
    said = _say_how_training_ended(request)
    if said:
        return said
    version = _version_or_missing(model_versions_with_cell_counts(), pk)
    return render(request, "models/detail.html", version_page(version).as_context())


@staff_required
@require_GET
def version_progress(request, pk):
    version = _version_or_missing(model_versions(), pk)
    return JsonResponse(progress_report(version))


@staff_required
@require_POST
def train(request):
    form = RetrainForm(request.POST)
    if not form.is_valid():
        return _render_list(request, retrain_form=form, status=400)
    data = form.cleaned_data
    try:
        version = start_training(
            request.user,
            data["architecture"],
            data["epochs"],
            data["include_reviewed"],
            task=data["task"],
            data_dir=data["data_dir"],
            refit_from=data["refit_from"],
        )
    except TrainingRefused as exc:
        # Shown on the form as it was filled in, beside the field at fault: a redirect to the list
        # lost every value given.
        form.add_refusal(exc)
        return _render_list(request, retrain_form=form, status=400)
    messages.success(request, f"Training of v{version.pk} is queued on the training worker.")
    for note in data.get("data_notes", ()):
        messages.info(request, note)
    return redirect("models:detail", pk=version.pk)


@staff_required
@require_POST
def adapt(request):
    """"Adapt to this lab": fine-tune the active version on the lab's reviewed cells."""
    try:
        version = start_adaptation(request.user)
    except TrainingRefused as exc:
        messages.error(request, str(exc))
        return redirect("models:list")
    messages.success(request, f"Adapting v{version.adapted_from_id} to this lab as v{version.pk}: "
                              "queued on the training worker.")
    return redirect("models:detail", pk=version.pk)


@staff_required
@require_POST
def cancel(request, pk):
    version = _version_or_missing(model_versions(), pk)
    try:
        cancel_training(version, request.user)
    except TrainingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Training of v{version.pk} is cancelled.")
    return redirect("models:detail", pk=version.pk)


def _refused_as_gone(request, exc):
    """A change to a version deleted since its page was read: said on the list, as its own page is
    gone with it."""
    messages.error(request, str(exc))
    return redirect("models:list")


@staff_required
@require_POST
def delete(request, pk):
    version = _version_or_missing(model_versions(), pk)
    try:
        delete_unused_version(version, user=request.user)
    except VersionDeletedMeanwhile as exc:
        return _refused_as_gone(request, exc)
    except ModelVersionError as exc:
        messages.error(request, str(exc))
        return redirect("models:detail", pk=pk)
    messages.success(request, f"v{pk} is deleted.")
    return redirect("models:list")


def _back_from_activation(pk, back_to_detail):
    return redirect("models:detail", pk=pk) if back_to_detail else redirect("models:list")


@staff_required
@require_http_methods(["GET", "POST"])
def activate(request, pk):
    """POST activates. A version the site warns of is activated only by a form that confirmed it:
    one that did not (scripts off, so no browser confirm) is sent to the question, a page of its own
    (GET), so that Back after answering it returns to a page, not to "Confirm Form Resubmission".
    A GET activates nothing: the question, or where nothing is warned of or the version is not one
    ready to serve, the page it came from. The question's other answer, "leave", posts too and
    changes nothing."""
    version = _version_or_missing(model_versions(), pk)
    sent = request.POST if request.method == "POST" else request.GET
    back_to_detail = sent.get("next") == "detail"
    warning = activation_warning(version)
    if request.method == "GET":
        # Back after the answer comes here again: a version that serves, or cannot, is not asked of.
        if version.is_active:
            messages.info(request, f"v{version.pk} is the active model already: there is nothing to "
                                   "activate.")
        if not warning or not version.is_trained or version.is_active:
            return _back_from_activation(pk, back_to_detail)
        confirmation = activation_confirmation(version, warning, back_to_detail)
        return render(request, "models/confirm_activation.html", confirmation.as_context())
    if request.POST.get("leave") == "1":
        if version.is_active:
            # Activated since the question was drawn (another administrator, or another tab): what
            # the reader chose to avoid now serves, news to be alerted to, not reassurance.
            messages.warning(request, f"v{version.pk} is the active model: it was activated meanwhile. "
                                      "Activate another version to stop it.")
        else:
            messages.info(request, f"v{version.pk} was not activated: the active version stays serving.")
        return _back_from_activation(pk, back_to_detail)
    if warning and request.POST.get("confirmed") != "1":
        question = reverse("models:activate", args=[pk])
        return redirect(f"{question}?next=detail" if back_to_detail else question)
    try:
        activate_version(version, user=request.user)
    except VersionDeletedMeanwhile as exc:
        return _refused_as_gone(request, exc)
    except ModelVersionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"v{version.pk} is now the active model: new images are classified with it."
        )
        if warning:
            messages.warning(request, f"{warning} Activate another version to stop it.")
    return _back_from_activation(pk, back_to_detail)


@staff_required
@require_POST
def reclassify_samples(request):
    form = ReclassifyForm(request.POST)
    if not form.is_valid():
        return _render_list(request, reclassify_form=form, status=400)
    try:
        done = reclassify(form.cleaned_data["samples"], request.user)
    except (NoActiveModel, SampleLocked, ReclassificationRefused) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{count_of(done.queued, 'photograph')} queued for re-classification with "
                                  f"v{done.version.pk}; other versions' calls stay in the history, and a "
                                  f"photograph v{done.version.pk} classified before gets its calls again, "
                                  "in place of its earlier ones.")
        if groups_note := groups_only_note(done.version):
            messages.warning(request, groups_note)
        if done.signed_skipped:
            skipped = len(done.signed_skipped)
            messages.warning(request, f"{count_of(skipped, 'signed sample')} left as "
                                      f"{pluralize(skipped, 'it is,they are')} "
                                      f"({', '.join(done.signed_skipped[:20])}"
                                      f"{', ...' if len(done.signed_skipped) > 20 else ''}): "
                                      "reopen a sample to re-classify it.")
    return redirect("models:list")
