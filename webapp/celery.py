"""The Celery app. Workers consume two queues: `classify` (fast, many) and `train` (one at a time).

Every worker keeps its name on the roll in Redis (webapp.broker) while it runs, for /healthz.
"""

import os
import sys

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from kombu import Queue

from classifier.runtimes import quiet_tensorflow_startup
from webapp.broker import WorkerRollCall
from webapp.configuration import exit_for_configuration_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
quiet_tensorflow_startup(os.environ)

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_configure.connect
def _settings_or_one_line(**_):
    # Celery reads the Django settings when it first needs its configuration: `celery worker`
    # while it parses its options, where a bad setting would end in Celery's traceback. Read them
    # here first, so that it is one line naming the setting, as manage.py prints it. Where the
    # traceback is wanted (LEUKOSCOPE_DEBUG=1), or the error is no configuration error, Celery
    # reads them again once this returns, and that raises it.
    try:
        settings.INSTALLED_APPS  # noqa: B018 (reading one loads them all)
    except Exception as error:
        exit_for_configuration_error(error, sys.argv)


app.conf.task_queues = (Queue("classify"), Queue("train"))
app.autodiscover_tasks(["webapp"])


_roll_calls = []


@worker_ready.connect
def _join_worker_roll(sender, **_):
    # In the worker's main process, which stays up while pool children come and go. With the queues
    # it consumes (-Q), so that /healthz can tell a classify worker from a train worker.
    # With the state of its media folder, which it may see through a mount of its own: /healthz
    # names a classify worker that cannot use it, whose every photograph would fail.
    queues = sorted(sender.app.amqp.queues.consume_from)
    _roll_calls.append(WorkerRollCall(app.conf.broker_url, sender.hostname, queues,
                                      media_root=settings.MEDIA_ROOT).start())


@worker_shutdown.connect
def _leave_worker_roll(**_):
    while _roll_calls:
        _roll_calls.pop().stop()
