"""Queue again the work no live task will finish (services/reconciler.py), once or every so often.

`make run` starts it beside the workers; in production run exactly one per deployment (two do no
harm, see the reconciler, but do nothing more). `--once` is the recovery by hand.
"""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from webapp.services.reconciler import reconcile_work

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Re-queue photographs and trainings that no live task will finish; fail abandoned trainings."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One sweep, then exit.")
        parser.add_argument("--every", type=float, default=settings.RECONCILE_EVERY,
                            help="Seconds between sweeps (LEUKOSCOPE_RECONCILE_EVERY).")

    def handle(self, *args, once, every, **options):
        if once:
            self.stdout.write(str(reconcile_work()))
            return
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        self.stdout.write(f"Reconciler: a sweep every {every:g} s")
        while not stopping.is_set():
            try:
                reconcile_work()
            except Exception:  # the database is down or restarting: try again next time
                logger.exception("Reconciler sweep failed; trying again in %g s", every)
            finally:
                # A fresh connection per sweep: one held across a database restart is dead.
                connections.close_all()
            stopping.wait(every)
