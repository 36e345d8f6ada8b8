"""The Celery app. Workers consume two queues: `classify` (fast, many) and `train` (one at a time)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) means nothing to lab staff.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("classify"), Queue("train"))
app.autodiscover_tasks(["webapp"])
