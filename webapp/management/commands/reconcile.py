"""Queue again the work no live task will finish (services/reconciler.py), once or every so often.

`make run` starts it beside the workers; in production run exactly one per deployment (two do no
harm, see the reconciler, but do nothing more). `--once` is the recovery by hand.
"""

import argparse
import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from webapp.configuration import configuration_error_line, positive_number
from webapp.services.reconciler import reconcile_work

logger = logging.getLogger(__name__)


def seconds_between_sweeps(text):
    """--every's value: a positive number, as LEUKOSCOPE_RECONCILE_EVERY must be (0 would sweep
    without pause)."""
    try:
        return positive_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}") from None


class Command(BaseCommand):
    help = ("Send again the photographs, drawn boxes and trainings that no live task will finish; fail "
            "abandoned trainings.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One sweep, then exit.")
        parser.add_argument("--every", type=seconds_between_sweeps, default=settings.RECONCILE_EVERY,
                            help="Seconds between sweeps (LEUKOSCOPE_RECONCILE_EVERY).")

    def handle(self, *args, once, every, **options):
        if once:
            # A database that cannot be reached raises (manage.py says so in one line, exit 1).
            report = reconcile_work()
            self.stdout.write(str(report))
            if not report.broker_reachable:
                # Exit 1, so that a script can tell that the sweep's sending is still to do.
                raise CommandError("The broker did not answer: nothing was sent (is Redis at REDIS_URL "
                                   "running?). Run it again once it answers.")
            return
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        self.stdout.write(f"Reconciler: a sweep every {every:g} s")
        while not stopping.is_set():
            try:
                reconcile_work()
            except Exception as error:  # the database is down or restarting: try again next time
                _log_failed_sweep(error, every)
            finally:
                # A fresh connection per sweep: one held across a database restart is dead.
                connections.close_all()
            stopping.wait(every)


def _log_failed_sweep(error, every):
    """A database out of reach or not set up, in the one line manage.py prints for it: a traceback
    every sweep says no more and buries the rest of the log. Any other failure keeps its traceback."""
    line = configuration_error_line(error)
    if line is None:
        logger.exception("Reconciler sweep failed; trying again in %g s", every)
    else:
        logger.error("Reconciler sweep failed: %s; trying again in %g s", line, every)
