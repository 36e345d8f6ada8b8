"""The script that ends a page left unused (static/js/idle.js, webapp/idle_sign_out.py), and the
style of the warning it shows first, on every page of a signed-in user: the site's, the printable
report's and the Django admin's."""

from django import template
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html

from webapp import idle_sign_out

register = template.Library()


@register.simple_tag(takes_context=True)
def idle_sign_out_script(context):
    request = context.get("request")
    if request is None or SESSION_KEY not in getattr(request, "session", {}):
        return ""
    # The token rides on the script: a page need not hold a form (the printable report holds none).
    return format_html(
        '<link rel="stylesheet" href="{}">'
        '<script src="{}" data-activity-url="{}" data-idle-seconds="{}" data-resolution-seconds="{}" '
        'data-csrf-token="{}" defer></script>',
        static("css/idle.css"), static("js/idle.js"), reverse("sign-in-activity"),
        f"{settings.IDLE_SIGN_OUT_SECONDS:g}", f"{idle_sign_out.activity_resolution():g}", get_token(request),
    )
