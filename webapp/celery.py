"""The Celery app. Workers consume two queues: `classify` (fast, many) and `train` (one at a time)."""

import os

from celery import Celery
from kombu import Queue

from classifier.runtimes import quiet_tensorflow_startup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
quiet_tensorflow_startup(os.environ)

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("classify"), Queue("train"))
app.autodiscover_tasks(["webapp"])
