"""{% status_badge badges sample_id %}: a sample's sign-off status as a badge, from the
presenters' status_badges (sample id -> StatusBadge) of a list page."""

from django import template

register = template.Library()


@register.inclusion_tag("lab/_status_badge.html")
def status_badge(badges, sample_id):
    return {"badge": (badges or {}).get(sample_id)}
