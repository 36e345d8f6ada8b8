"""What an administrator reads in the site's log: warnings only for what needs looking at, each
event of note named by its ids, every process's lines in one format (the log-hygiene audit)."""

import logging

import pytest
from django.conf import settings as site_settings

from webapp.management.commands.runlab import Command as Runlab

pytestmark = pytest.mark.django_db


def test_workers_log_in_the_sites_format_at_its_level(settings):
    from webapp.celery import app

    site_format = site_settings.LOGGING["formatters"]["plain"]["format"]
    assert app.conf.worker_log_format == site_format
    assert app.conf.worker_task_log_format == site_format
    settings.LOG_LEVEL = "WARNING"  # LEUKOSCOPE_LOG_LEVEL=warning
    for command in ("classify worker", "train worker"):
        arguments = Runlab().child_commands("127.0.0.1", 8000, 1)[command]
        assert arguments[arguments.index("--loglevel") + 1] == "WARNING"


def test_workers_start_without_celerys_banner():
    for command in ("classify worker", "train worker"):
        arguments = Runlab().child_commands("127.0.0.1", 8000, 1)[command]
        assert "--quiet" in arguments[:arguments.index("worker")]


def test_celerys_line_per_task_is_left_out_and_its_failures_kept():
    for name in ("celery.worker.strategy", "celery.app.trace"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
