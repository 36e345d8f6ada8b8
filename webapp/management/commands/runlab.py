"""Serve Leukoscope: a broker, the two Celery workers, the reconciler and the web server, stopped
together on Ctrl-C.

Each child runs in a process group of its own, so Ctrl-C in the terminal reaches this launcher
alone; it then stops every group whole (a gunicorn master and its workers, a Celery worker and
its pool), web server first and broker last, and kills what is left after a grace period. A
gunicorn worker that the terminal's SIGINT and the launcher's SIGTERM reached in the wrong order
could otherwise outlive its master and keep the port.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.broker import (
    KEY_PREFIX_VARIABLE,
    BrokerUnavailable,
    instance_key_prefix,
    resolve_broker,
    shares_local_redis,
)


class Command(BaseCommand):
    help = "Start the broker (if needed), the classify and train workers, and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("LEUKOSCOPE_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("LEUKOSCOPE_PORT", 8000)))
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, host, port, web_workers, **options):
        try:
            broker_url, embedded = resolve_broker(settings.VAR_DIR / "redis")
        except BrokerUnavailable as exc:
            raise CommandError(str(exc)) from exc
        env = dict(os.environ, REDIS_URL=broker_url, PYTHONUNBUFFERED="1")
        where = "embedded Redis started by Leukoscope" if embedded else "Redis"
        if shares_local_redis(embedded):
            env.setdefault(KEY_PREFIX_VARIABLE, instance_key_prefix(settings.VAR_DIR))
            where = f"Redis shared on this machine (this instance's keys prefixed {env[KEY_PREFIX_VARIABLE]})"
        self.stdout.write(f"Broker: {where} at {broker_url}")

        python = sys.executable
        celery = [python, "-m", "celery", "-A", "webapp", "worker", "--loglevel", "INFO"]
        commands = {
            "classify worker": celery + ["-Q", "classify", "-n", "classify@%h", "--concurrency", "1"],
            # A fresh process per training releases TensorFlow's memory when the run ends.
            "train worker": celery + ["-Q", "train", "-n", "train@%h", "--concurrency", "1",
                                      "--max-tasks-per-child", "1"],
            "reconciler": [python, "manage.py", "reconcile"],
            "web server": [python, "-m", "gunicorn", "webapp.wsgi", "--bind", f"{host}:{port}",
                           "--workers", str(web_workers), "--threads", "4", "--timeout", "120",
                           "--access-logfile", "-", "--log-level", "warning"],
        }
        processes = {}
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, command in commands.items():
                processes[name] = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR,
                                                   start_new_session=True)
            self.stdout.write(self.style.SUCCESS(
                f"Leukoscope is running at http://{host}:{port}/  (Ctrl-C stops everything)"))
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"The {name} stopped (exit code {process.returncode}).")
                        stopping = True
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping Leukoscope ...")
            # A signal during the stop must not cut it short and leave processes behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for process in reversed(processes.values()):
                _signal_group(process, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            for process in processes.values():
                # Whatever is left of each group: a worker busy past the grace period, an orphaned
                # child. A photograph it was classifying comes back to the queue (late ack).
                _signal_group(process, signal.SIGKILL)
                process.wait()
            if embedded:
                embedded.stop()
            self.stdout.write("Stopped.")


# Long enough for a photograph in progress to finish; a training in progress is given up (the
# reconciler marks it failed on the next start).
STOP_GRACE_SECONDS = 20


def _signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass  # the whole group has exited
