"""The WSGI application, for gunicorn (`gunicorn webapp.wsgi`)."""

import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# gunicorn's exit status for a worker that failed to boot: its master then stops, with "Worker
# failed to boot.", instead of starting the worker again and again.
WORKER_BOOT_ERROR = 3

try:
    application = get_wsgi_application()
except Exception as error:
    # A bad setting is one line naming it, as manage.py prints it (LEUKOSCOPE_DEBUG=1: the
    # traceback); each worker that tried to start prints it.
    from webapp.configuration import exit_for_configuration_error

    exit_for_configuration_error(error, sys.argv, status=WORKER_BOOT_ERROR)
    raise
