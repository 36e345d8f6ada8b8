"""The site's error answers: its own pages, with navigation, and JSON under /api/, where a program
(a laboratory information system) reads the answer rather than a person."""

import logging
import sys
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse
from django.middleware import csrf
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views import defaults
from django.views.decorators.csrf import requires_csrf_token

from webapp.db_errors import is_database_full, is_transient_database_error

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def is_api_request(request):
    return request.path_info.startswith(API_PREFIX)


def wants_json(request):
    """A page's own script asking (a review click, a progress poll): it reads JSON, not a page."""
    return "application/json" in request.headers.get("Accept", "")


def reads_json(request):
    """A program or a page's script: a refusal must reach it as JSON, not as an HTML page."""
    return is_api_request(request) or wants_json(request)


def _message(exception, default):
    # Http404 and PermissionDenied carry a sentence written for the user; a failed URL match
    # carries a dict of patterns, which is no answer for anyone.
    message = exception.args[0] if exception is not None and exception.args else None
    return message if isinstance(message, str) and message else default


# What get_object_or_404 says ("No Cell matches the given query."), told to a page's script, which
# acts on something its page showed: the likeliest reason is that someone deleted it meanwhile. A
# program under /api/ keeps Django's sentence.
GONE = "It is no longer there: someone may have deleted it meanwhile. Reload the page."


def _not_found_message(request, exception):
    message = _message(exception, "Not found.")
    generic = message.startswith("No ") and message.endswith("matches the given query.")
    return GONE if generic and not is_api_request(request) else message


class ExplainedBadRequest(BadRequest):
    """A request refused for a reason its sender can act on: the 400 says it."""


def _bad_request_reason(exception):
    """What went wrong, only where the user can act on it: Django's own 400 says nothing so as not
    to disclose what a tampered request tripped over."""
    if isinstance(exception, ExplainedBadRequest):
        return str(exception)
    if isinstance(exception, TooManyFilesSent):
        return (f"Too many files were sent at once. Upload at most {settings.MAX_FILES_PER_UPLOAD} "
                "photographs at a time.")
    if isinstance(exception, RequestDataTooBig | TooManyFieldsSent):
        return "The form sent more data than the site accepts in one go."
    return ""


@requires_csrf_token
def bad_request(request, exception):
    reason = _bad_request_reason(exception)
    if reads_json(request):
        return JsonResponse({"error": reason or "Bad request."}, status=400)
    return render(request, "400.html", {"reason": reason}, status=400)


@requires_csrf_token
def permission_denied(request, exception):
    if reads_json(request):
        return JsonResponse({"error": _message(exception, "Permission denied.")}, status=403)
    return defaults.permission_denied(request, exception)


def csrf_failure(request, reason=""):
    """A form or a click sent from a page opened under an earlier sign-in: common on a shared
    workstation. Say what to do rather than Django's bare "CSRF verification failed". A request from
    an address the site is not set up to answer at (a proxy's, say) is refused at every reload:
    that one names the setting instead."""
    message = ("This page was opened before the last sign-in or sign-out, so the site could not "
               "trust the request: reload the page and do it again.")
    foreign = _foreign_origin(reason)
    if foreign:
        message = (f"The site could not trust the request: it came from a page at {foreign}, an address "
                   "this site is not set up to answer at, and reloading will not change that. If that is "
                   "how Leukoscope is reached here, the administrator adds it to "
                   "LEUKOSCOPE_CSRF_TRUSTED_ORIGINS (README, Configuration).")
    if reads_json(request):
        return JsonResponse({"error": message}, status=403)
    return render(request, "403.html", {"exception": message, "csrf_failure": True}, status=403)


def _foreign_origin(reason):
    """The origin (scheme://host, as LEUKOSCOPE_CSRF_TRUSTED_ORIGINS takes it) named by Django's
    "Origin/Referer checking failed - X does not match any trusted origins", or "" (also for a
    browser's "null" origin, which names no address)."""
    for rule in (csrf.REASON_BAD_ORIGIN, csrf.REASON_BAD_REFERER):
        before, after = rule.split("%s")
        if reason.startswith(before) and reason.endswith(after):
            address = urlsplit(reason[len(before):len(reason) - len(after)])
            return f"{address.scheme}://{address.netloc}" if address.scheme and address.netloc else ""
    return ""


@requires_csrf_token
def page_not_found(request, exception):
    if reads_json(request):
        return JsonResponse({"error": _not_found_message(request, exception)}, status=404)
    return defaults.page_not_found(request, exception)


DATABASE_BUSY = ("The database was busy or out of reach and did not answer in time, so this may not have "
                 "been done: reload the page to see, and try again in a moment if it was not.")
def database_busy(request):
    """The 503 answer to a transient database error: JSON to a program or a page's script, else a
    page that needs no database to be drawn."""
    if reads_json(request):
        response = JsonResponse({"error": DATABASE_BUSY}, status=503)
    else:
        response = HttpResponse(render_to_string("503.html", {"message": DATABASE_BUSY}), status=503)
    response["Retry-After"] = "5"
    return response


DATABASE_FULL = ("This was not saved: the database has no room left on its disk, so nothing can be "
                 "changed until space is freed. Tell the administrator; once it is freed, do it again "
                 "(the site needs no restart).")


def database_full(request):
    """The 503 answer to a database whose disk is full: unlike a busy one, trying again soon does not
    help, and someone has to free space."""
    if reads_json(request):
        response = JsonResponse({"error": DATABASE_FULL}, status=503)
    else:
        page = render_to_string("503.html", {"message": DATABASE_FULL, "disk_full": True})
        response = HttpResponse(page, status=503)
    response["Retry-After"] = "60"
    return response


def database_full_logged(request, error, log=logger):
    """database_full, logged to ``log`` in one line: every write fails so, each with a traceback
    Django's handler would log again and that says no more."""
    log.error("%s %s: the database's disk is full (%s)", request.method, request.path, error)
    response = database_full(request)
    response._has_been_logged = True
    return response


@requires_csrf_token
def server_error(request):
    # Reached for a failure outside the view too (a session read or saved by middleware).
    error = sys.exc_info()[1]
    if is_database_full(error):
        # Every page fails so, the session being read before any view.
        return database_full_logged(request, error)
    if is_transient_database_error(error):
        return database_busy(request)
    if reads_json(request):
        return JsonResponse({"error": "Server error: the failure is logged for the administrator."},
                            status=500)
    return defaults.server_error(request)
