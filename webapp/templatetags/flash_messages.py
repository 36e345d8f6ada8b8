"""{% load flash_messages %}: the messages a page shows as it loads (django.contrib.messages), split
by how a screen reader should hear them: a refusal or a warning at once (`messages|urgent`, in a
role=alert region), what was done when the reader comes to it (`messages|news`, role=status)."""

from django import template
from django.contrib.messages import constants

register = template.Library()


@register.filter
def urgent(messages):
    return [message for message in messages if message.level >= constants.WARNING]


@register.filter
def news(messages):
    return [message for message in messages if message.level < constants.WARNING]
