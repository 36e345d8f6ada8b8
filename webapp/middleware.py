"""Site-wide request handling beyond Django's own."""

import ipaddress
import logging
from urllib.parse import unquote_to_bytes, urlsplit

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, JsonResponse
from django.middleware.gzip import GZipMiddleware
from django.shortcuts import redirect, render, resolve_url
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme

from webapp import idle_sign_out
from webapp.db_errors import is_database_full, is_transient_database_error
from webapp.services.api_tokens import user_for_key
from webapp.views.errors import (
    ExplainedBadRequest,
    database_busy,
    database_full_logged,
    is_api_request,
    reads_json,
)


def client_address(request):
    """The address a request came from, as the sign-in lockout counts it (settings.PROXY_COUNT):
    with N proxies in front, each appending to X-Forwarded-For, the N-th entry from its end, the
    client as the outermost proxy saw it (entries before it are the client's own say). A request
    that passed fewer proxies than that, or names no address there, counts from its connection."""
    hops = settings.PROXY_COUNT
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if len(forwarded) >= hops:
            try:
                return str(ipaddress.ip_address(forwarded[-hops]))
            except ValueError:
                pass
    return request.META.get("REMOTE_ADDR", "")


class SignedInPagesNotStoredMiddleware:
    """A signed-in answer that says nothing of caching is marked not to be stored (``no-store``):
    pages and JSON hold patients' results, and lab workstations are shared, so none is kept in the
    browser's cache or on disk for the next person at the screen. Photographs set their own (an
    hour, private), which sign-out clears (views.core.SignOutView)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response


class IdleSignOutMiddleware:
    """Ends a sign-in left unused (webapp.idle_sign_out), before the request is served: it is then
    served as anyone signed out is. The answer tells the browser to drop what it cached for the
    site, as signing out does (views.core.SignOutView)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        signed_out = idle_sign_out.sign_out_if_idle(request)
        response = self.get_response(request)
        if signed_out:
            response["Clear-Site-Data"] = '"cache"'
        return response


class LoginRequiredOrUnauthorizedMiddleware(LoginRequiredMiddleware):
    """Django's sign-in requirement, except that the JSON API, and a page's script asking for JSON
    or polling for a part of a page after the sign-in expired, get 401 instead of the HTML login
    page they cannot read (a poll given it would draw the login page into the page); and that a
    form sent after the sign-in ended comes back, once signed in, to the page the form was on."""

    def handle_no_permission(self, request, view_func):
        if reads_json(request) or idle_sign_out.is_background(request):
            return JsonResponse(
                {"error": "Not signed in, or the sign-in has expired: sign in again. A program "
                          "sends its API key as 'Authorization: Bearer <key>'."},
                status=401,
            )
        if request.method in ("GET", "HEAD"):
            return super().handle_no_permission(request, view_func)
        # The address a form posts to (sign, review, retry) takes nothing else: opened after signing
        # in, it could only answer "Not a page to open" (405), and what the form sent is lost anyway.
        login_url = resolve_url(self.get_login_url(view_func))
        if (page := _page_the_form_was_on(request)) is None:
            return redirect(login_url)
        return redirect_to_login(page, login_url, self.get_redirect_field_name(view_func))


def _page_the_form_was_on(request):
    """The path and query of the request's Referer where it is a page of this site, else None (a
    browser that sends no Referer: the sign-in then leads to the home page)."""
    referer = request.headers.get("Referer", "")
    if not url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        return None
    parts = urlsplit(referer)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path or "/"


class ApiTokenMiddleware:
    """An API request carrying `Authorization: Bearer <key>` is made as the key's account, with no
    sign-in (webapp.services.api_tokens): how the lab's information system reads results. A key
    only reads, whatever its account may do; a bad or revoked key answers 401, never the login page."""

    # What the API's views answer (api.read_only): OPTIONS too would pass here, to be refused there.
    READS = ("GET", "HEAD")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.headers.get("Authorization")
        if header is None or not (is_api_request(request) or _is_media_request(request)):
            return self.get_response(request)
        # Split on any whitespace: "Bearer\tKEY" is a key too, not another scheme.
        scheme, key = (header.split(None, 1) + ["", ""])[:2]
        if scheme.lower() != "bearer":
            # A proxy's own sign-in (Basic, Negotiate), which a browser behind it sends with every
            # request: the session decides, as for the pages; without one, the 401 says how a
            # program gives its key (LoginRequiredOrUnauthorizedMiddleware).
            return self.get_response(request)
        if not key.strip():
            return JsonResponse({"error": "Give the API key as 'Authorization: Bearer <key>'."}, status=401)
        user = user_for_key(key.strip())
        if user is None:
            return JsonResponse({"error": "This API key is unknown or revoked: a key is revoked for good "
                                          "when its account is made inactive or given a role, staff "
                                          "status or a permission. Ask the lab's administrator for a "
                                          "new key."},
                                status=401)
        if request.method not in self.READS:
            answer = JsonResponse({"error": f"An API key only reads: {request.method} is not accepted."},
                                  status=405)
            answer["Allow"] = ", ".join(self.READS)
            return answer
        request.user = user
        return self.get_response(request)


def _is_media_request(request):
    """A photograph or crop: the API's answers link them (`file`, `crop`), for the key to fetch."""
    return request.path_info.startswith(settings.MEDIA_URL)


class ContentSecurityPolicyMiddleware:
    """settings.CONTENT_SECURITY_POLICY on every HTML page. Not on photographs, PDFs or JSON: a
    policy on a PDF can keep the browser's own viewer from showing it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class CompressTextMiddleware(GZipMiddleware):
    """Django's gzip compression (with its BREACH mitigation: random gzip header padding; CSRF
    tokens are masked anew per response), for text only. A technologist's 500-cell sample page is
    1.4 MB of HTML and 44 KiB gzipped, compressed in about 5 ms; photographs, crops and PDFs are
    compressed already, and a streamed photograph would only cost the worker CPU."""

    def process_response(self, request, response):
        content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type.startswith("text/") or content_type.endswith(("/json", "+json")):
            return super().process_response(request, response)
        return response


class NulInUrlIsNotFound:
    """A NUL byte in the URL's path answers 404 (no page has one), in its query 400, saying so: the
    file system refuses it in a path and PostgreSQL in a query parameter, each with an exception
    that would otherwise answer 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path:
            raise Http404("No such page.")
        if b"\x00" in unquote_to_bytes(request.META.get("QUERY_STRING", "")):
            raise ExplainedBadRequest("A value in the address holds a NUL character (%00), which no "
                                      "search or filter can hold: remove it and try again.")
        return self.get_response(request)


class MethodNotAllowedExplained:
    """Django answers a GET to an address that only a form's button posts to (sign, review, retry,
    activate) with an empty 405: someone following a bookmark, a history entry or a typed address
    saw a blank page. The answer becomes the site's page, or JSON for a program, saying what the
    address takes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code != 405 or response.content:
            return response
        allowed = response.get("Allow", "")
        if reads_json(request):
            answer = JsonResponse({"error": f"{request.method} is not accepted here; this address takes "
                                            f"{allowed or 'another method'}."}, status=405)
        else:
            answer = render(request, "405.html", {"request_path": request.path}, status=405)
        answer["Allow"] = allowed
        return answer


logger = logging.getLogger(__name__)


class DatabaseBusyMiddleware:
    """A view the database could not serve in time (SQLite's write lock held past its 20 s by a long
    write, a PostgreSQL restarting) answers 503 and says to try again, not a server error: what the
    view wrote in a transaction was rolled back, and the next try usually goes through. Other
    database errors stay server errors (db_errors.is_transient_database_error); a failure in another
    middleware reaches errors.server_error, which answers the same way."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if is_database_full(exception):
            return database_full_logged(request, exception, logger)
        if not is_transient_database_error(exception):
            return None
        logger.warning("%s %s: the database did not answer in time", request.method, request.path,
                       exc_info=exception)
        response = database_busy(request)
        # Logged above, as a warning: Django's handler would log the 503 again, as an error.
        response._has_been_logged = True
        return response
