from django import template

from webapp.wording import moment_on_a_report

register = template.Library()
register.filter("report_moment", moment_on_a_report)
