import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from webapp import idle_sign_out
from webapp.forms import SignInForm
from webapp.models import Sample, SmearImage
from webapp.selectors import (
    recently_signed_samples,
    reopened_samples,
    samples_awaiting_review,
    samples_awaiting_signature,
    serving_and_training_versions,
)
from webapp.services.health import public_summary, system_health
from webapp.services.sign_off import may_sign
from webapp.views.roles import REVIEW


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """Open to monitoring without a sign-in; the details only for signed-in staff."""
    report = system_health()
    status = 200 if not report["failing"] else 503
    if not request.user.is_staff:
        report = public_summary(report)
    return JsonResponse(report, status=status)


# Each of the home page's lists (waiting for review, for a signature, reopened, or for a reader
# recently signed) shows this many samples, newest first ...
HOME_LIST_LENGTH = 10
# ... among those received (for a reader: signed) this recently, reopened results excepted, which
# are few and each waits for someone: a page everybody lands on must not count through every cell
# the lab ever stored (80 ms on 100,000 cells, growing with them).
HOME_RECENT_DAYS = 30


def home(request):
    """Where the lab starts: what waits for review, what is still being classified and, for those
    who sign, what waits for a signature. An account that only reads results (the lab's
    information system) reviews nothing: it is shown the latest signed results instead."""
    since = timezone.now() - timedelta(days=HOME_RECENT_DAYS)
    if not request.user.has_perm(REVIEW) and not request.user.is_staff:
        signed = recently_signed_samples(since)
        return render(request, "home_reader.html", {
            "signed": signed[:HOME_LIST_LENGTH], "signed_count": signed.count(),
            "days": HOME_RECENT_DAYS,
        })
    # Reopened results wait for a correction, a relabel: listed to those who may make it.
    reopened = reopened_samples() if request.user.has_perm(REVIEW) else Sample.objects.none()
    in_progress = (SmearImage.Status.QUEUED, SmearImage.Status.PROCESSING)
    signing_count, awaiting_signature = (samples_awaiting_signature(since, HOME_LIST_LENGTH)
                                         if may_sign(request.user) else (0, None))
    context = {
        "awaiting_signature": awaiting_signature,
        "awaiting_signature_count": signing_count,
        "reopened": reopened[:HOME_LIST_LENGTH],
        "reopened_count": reopened.count(),
        "awaiting_review": None,
        "awaiting_review_days": HOME_RECENT_DAYS,
        "images_in_progress": SmearImage.objects.filter(status__in=in_progress).count(),
    }
    if request.user.has_perm(REVIEW):
        awaiting = samples_awaiting_review(since)
        context.update(awaiting_review=awaiting[:HOME_LIST_LENGTH], awaiting_review_count=awaiting.count())
    else:
        # An administrator without a lab role reviews no cell: what it looks after instead.
        context["serving"], context["training"] = serving_and_training_versions()
    return render(request, "home.html", context)


@require_GET
def protected_media(request, path):
    """Smear photographs and cell crops are lab data: only a signed-in account, or a program with an
    API key (middleware.ApiTokenMiddleware), may fetch them."""
    root = Path(settings.MEDIA_ROOT).resolve()
    try:
        target = (root / path).resolve()
        if root not in target.parents or not target.is_file():
            raise Http404("No such file.")
        opened = target.open("rb")
    except OSError:  # a name longer than the file system allows, a folder that cannot be read
        raise Http404("No such file.") from None
    response = FileResponse(opened)
    response["Cache-Control"] = "private, max-age=3600"
    return response


class SignOutView(auth_views.LogoutView):
    """Django's sign-out, which also tells the browser to drop what it cached for the site: lab
    workstations are shared, and photographs are cached for an hour (protected_media), so the next
    person at the screen would otherwise open a patient's pictures from the cache."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        response["Clear-Site-Data"] = '"cache"'
        return response


class SignInView(auth_views.LoginView):
    """Django's sign-in page, which says why the user is there: a sign-in that ended unused, or
    one that ended or was ended otherwise."""

    authentication_form = SignInForm

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["session_hours"] = f"{settings.SESSION_HOURS:g}"
        context["idle_minutes"] = idle_sign_out.minutes()
        if self.request.method == "GET":
            context["signed_out_idle"] = idle_sign_out.was_signed_out_idle(self.request)
        return context


@never_cache
@require_http_methods(["GET", "POST"])
def sign_in_activity(request):
    """For static/js/idle.js. POST: a person acted on a page (IdleSignOutMiddleware has recorded
    it). GET, a background request: how long the sign-in may stay unused, for the page to go to
    the login page when it ends (a 401 once it has)."""
    if request.method == "POST":
        return HttpResponse(status=204)
    return JsonResponse({"seconds_left": round(idle_sign_out.seconds_left(request.session, time.time()))})
