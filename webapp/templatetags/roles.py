"""What the signed-in user may do, for templates: the views' own rules, so a link and the page it
leads to cannot disagree."""

from django import template

from webapp.views.models import can_manage_models

register = template.Library()
register.filter("may_manage_models", can_manage_models)
