from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.services.health import public_summary, system_health


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """Open to monitoring without a sign-in; the details only for signed-in staff.

    It takes about a second: a Celery ping waits its whole timeout for every worker to answer.
    """
    report = system_health()
    status = 200 if not report["failing"] else 503
    if not request.user.is_staff:
        report = public_summary(report)
    return JsonResponse(report, status=status)


def home(request):
    return render(request, "home.html")


@require_GET
def protected_media(request, path):
    """Smear photographs and cell crops are lab data: only signed-in staff may fetch them."""
    root = Path(settings.MEDIA_ROOT).resolve()
    target = (root / path).resolve()
    if root not in target.parents or not target.is_file():
        raise Http404("No such file.")
    response = FileResponse(target.open("rb"))
    response["Cache-Control"] = "private, max-age=3600"
    return response
