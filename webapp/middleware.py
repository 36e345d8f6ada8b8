"""Site-wide request handling beyond Django's own."""

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import JsonResponse

from webapp.views.errors import is_api_request


class LoginRequiredOrUnauthorizedMiddleware(LoginRequiredMiddleware):
    """Django's sign-in requirement, except that the JSON API answers 401 instead of redirecting a
    program to the HTML login page."""

    def handle_no_permission(self, request, view_func):
        if is_api_request(request):
            return JsonResponse({"error": "Sign in first: the API uses the site's login session."},
                                status=401)
        return super().handle_no_permission(request, view_func)
