"""Serve Leukoscope: a broker, the two Celery workers and the web server, stopped together on Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.broker import BrokerUnavailable, resolve_broker


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
        self.stdout.write(f"Broker: {where} at {broker_url}")

        python = sys.executable
        celery = [python, "-m", "celery", "-A", "webapp", "worker", "--loglevel", "INFO"]
        commands = {
            "classify worker": celery + ["-Q", "classify", "-n", "classify@%h", "--concurrency", "1"],
            # A fresh process per training releases TensorFlow's memory when the run ends.
            "train worker": celery + ["-Q", "train", "-n", "train@%h", "--concurrency", "1",
                                      "--max-tasks-per-child", "1"],
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
                processes[name] = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)
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
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
            if embedded:
                embedded.stop()
            self.stdout.write("Stopped.")
