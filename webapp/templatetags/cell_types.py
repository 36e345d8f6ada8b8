"""Template filters for cell types: the label people read (webapp.counting), not the stored name."""

from django import template

from webapp.counting import rule_for

register = template.Library()


@register.filter
def type_label(name):
    """IMMATURE_GRANULOCYTE -> Immature granulocyte."""
    return rule_for(name or "").label if name else ""
