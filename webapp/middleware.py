"""Site-wide request handling beyond Django's own."""

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import JsonResponse

from webapp.views.errors import reads_json


class LoginRequiredOrUnauthorizedMiddleware(LoginRequiredMiddleware):
    """Django's sign-in requirement, except that the JSON API, and a page's script asking for JSON
    after the sign-in expired, get 401 instead of the HTML login page they cannot read."""

    def handle_no_permission(self, request, view_func):
        if reads_json(request):
            return JsonResponse(
                {"error": "Not signed in, or the sign-in has expired: sign in again (the API uses the "
                          "site's login session)."},
                status=401,
            )
        return super().handle_no_permission(request, view_func)
