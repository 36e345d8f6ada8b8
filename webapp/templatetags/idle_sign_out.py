"""The script that ends a page left unused (static/js/idle.js, webapp/idle_sign_out.py), on every
page of a signed-in user: the site's and the Django admin's."""

from django import template
from django.conf import settings
from django.contrib.auth import SESSION_KEY
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
    return format_html(
        '<script src="{}" data-activity-url="{}" data-idle-seconds="{}" data-resolution-seconds="{}" '
        'defer></script>',
        static("js/idle.js"), reverse("sign-in-activity"), f"{settings.IDLE_SIGN_OUT_SECONDS:g}",
        f"{idle_sign_out.activity_resolution():g}",
    )
