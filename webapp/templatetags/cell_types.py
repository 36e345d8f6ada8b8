"""Template filters for cell types: the label people read (webapp.counting), not the stored name."""

from django import template

from webapp.counting import type_label

register = template.Library()
register.filter("type_label", type_label)
