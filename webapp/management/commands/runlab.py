"""Serve Leukoscope: a broker, the two Celery workers, the reconciler and the web server, stopped
together on Ctrl-C.

Each child runs in a process group of its own, so Ctrl-C in the terminal reaches this launcher
alone; it then stops every group whole (a gunicorn master and its workers), web server first and
broker last, and kills what is left after a grace period. A gunicorn worker that the terminal's
SIGINT and the launcher's SIGTERM reached in the wrong order could otherwise outlive its master and
keep the port. A Celery worker is sent SIGTERM alone, its warm shutdown letting the task in hand
finish before it stops its pool. A child that stops on its own after running a while is started
again (RestartBudget); one that stops at once, or too often, stops them all.
"""

import argparse
import errno
import logging
import os
import signal
import socket
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
from webapp.child_processes import ended_with_parent
from webapp.configuration import whole_number

# The launcher's own events go through the site's log, with its time and level, beside its children's.
logger = logging.getLogger(__name__)

# What the administrator may expect once a process is started again: nothing is lost, only late.
AFTER_RESTART = {
    "classify worker": " A photograph it was classifying is queued again by the reconciler within "
                       f"{settings.WORKER_LOST_AFTER + settings.RECONCILE_EVERY:g} s.",
    "train worker": " A training it was running is marked failed by the reconciler; start it again "
                    "from the model pages.",
}


def port_number(text):
    """--port's value (or LEUKOSCOPE_PORT's, its default): a TCP port."""
    try:
        return whole_number(text, 1, 65535)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number from 1 to 65535 (--port or LEUKOSCOPE_PORT), not {text!r}"
        ) from None


def process_count(text):
    try:
        return whole_number(text, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}") from None


def check_port_free(host, port):
    """A one-line CommandError unless the web server could listen on host:port now: checked before
    anything starts, so that a port in use stops nothing half-started."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CommandError(
            f"Cannot listen on {host!r} (--host or LEUKOSCOPE_HOST): {exc.strerror}."
        ) from None
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as probe:
        # As gunicorn binds: with SO_REUSEADDR, only a socket still listening there refuses it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(f"Port {port} is already in use on {host}: set LEUKOSCOPE_PORT "
                                   "(or --port) to another, or stop what uses it.") from None
            raise CommandError(f"Cannot listen on {host}:{port} ({exc.strerror}): set LEUKOSCOPE_HOST "
                               "and LEUKOSCOPE_PORT (or --host and --port).") from None


def exit_described(returncode):
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Command(BaseCommand):
    help = ("Start the broker (if needed), the classify and train workers, the reconciler and the web "
            "server; Ctrl-C stops them all.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("LEUKOSCOPE_HOST", "127.0.0.1"),
                            help="address the web server listens on (default: LEUKOSCOPE_HOST, "
                                 "else 127.0.0.1)")
        # A string default goes through the type too, so a bad LEUKOSCOPE_PORT is refused alike.
        parser.add_argument("--port", type=port_number, default=os.environ.get("LEUKOSCOPE_PORT", "8000"),
                            help="port the web server listens on (default: LEUKOSCOPE_PORT, else 8000)")
        parser.add_argument("--web-workers", type=process_count, default=2,
                            help="gunicorn worker processes, 4 threads each (default: 2)")

    def child_commands(self, host, port, web_workers):
        """What runs, by name: each a process (group) the launcher starts and stops."""
        python = sys.executable
        # Without gossip and mingle, as the tests' workers run: nothing here uses them, and gossip
        # logged a traceback at every reconnection to Redis, hiding real errors.
        # At the site's log level (LEUKOSCOPE_LOG_LEVEL), as the web server and the reconciler log.
        # --quiet: without Celery's 22-line banner at every start and restart; "-Q" below says the
        # queues, and the "ready" line the worker's name.
        celery = [python, "-m", "celery", "-A", "webapp", "--quiet", "worker", "--loglevel",
                  settings.LOG_LEVEL, "--without-gossip", "--without-mingle"]
        # Without LEUKOSCOPE_SECURE no proxy stands in front: gunicorn's default would still take a
        # local client's "X-Forwarded-Proto: https" and call the request secure. Behind one, its
        # own default (or FORWARDED_ALLOW_IPS) names the proxies it trusts.
        trusted_proxies = [] if settings.SECURE else ["--forwarded-allow-ips", ""]
        # Each request's path alone: gunicorn's default line also keeps its query string and the
        # Referer (the address of the page before, query string and all), and ?q=, ?accession= and
        # ?accession_number= carry accession numbers, which the log would keep for good.
        access_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
        return {
            "classify worker": celery + ["-Q", "classify", "-n", "classify@%h", "--concurrency", "1"],
            # A fresh process per training releases TensorFlow's memory when the run ends.
            "train worker": celery + ["-Q", "train", "-n", "train@%h", "--concurrency", "1",
                                      "--max-tasks-per-child", "1"],
            "reconciler": [python, "manage.py", "reconcile"],
            "web server": [python, "-m", "gunicorn", "webapp.wsgi", "--bind", f"{host}:{port}",
                           "--workers", str(web_workers), "--threads", "4", "--timeout", "120",
                           "--access-logfile", "-", "--access-logformat", access_format,
                           # gunicorn's control socket is one path per user (~/.gunicorn): two
                           # instances (a trial restore beside the live one) would take each other's.
                           "--log-level", "warning", "--no-control-socket", *trusted_proxies],
        }

    def handle(self, *args, host, port, web_workers, **options):
        check_port_free(host, port)
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

        commands = self.child_commands(host, port, web_workers)
        processes = {}
        started_at = {}  # name -> monotonic time it was (re)started
        restarts = RestartBudget()
        stopping = False
        died = None  # (name, exit status) of the first process that stopped on its own

        def start(name):
            # Its own session, so that Ctrl-C comes to the orderly stop below; ended with this
            # process where it is killed outright and that stop never runs.
            processes[name] = subprocess.Popen(commands[name], env=env, cwd=settings.BASE_DIR,
                                               start_new_session=True, preexec_fn=ended_with_parent())
            started_at[name] = time.monotonic()

        def stop(*_):
            nonlocal stopping
            stopping = True

        previous_handlers = {signum: signal.signal(signum, stop)
                             for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            for name in commands:
                start(name)
            self.stdout.write(self.style.SUCCESS(
                f"Leukoscope is running at http://{host}:{port}/  (Ctrl-C stops everything)"))
            while not stopping:
                for name, process in list(processes.items()):
                    if process.poll() is None or stopping:
                        continue
                    how = exit_described(process.returncode)
                    _signal_group(process, signal.SIGKILL)  # what is left of its group: a pool child
                    if restarts.allow(name, time.monotonic() - started_at[name]):
                        # Killed for memory, say: the site keeps serving, and a photograph it held comes
                        # back to the queue (late acknowledgement, the reconciler).
                        logger.warning("The %s stopped (%s); starting it again.%s", name, how,
                                       AFTER_RESTART.get(name, ""))
                        start(name)
                        continue
                    # At once after its start (a bad setting, a port taken), or again and again: a
                    # restart would only repeat it.
                    logger.error("The %s stopped (%s); stopping the site.", name, how)
                    died = (name, process.returncode)
                    stopping = True
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping Leukoscope ...")
            # A signal during the stop must not cut it short and leave processes behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for name, process in reversed(processes.items()):
                if name in WARM_SHUTDOWN:
                    # The Celery worker alone: it lets the task in hand finish, then stops its pool.
                    # Signalled too, the pool's child died mid-photograph (WorkerLostError).
                    _signal_leader(process, signal.SIGTERM)
                else:
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
            for signum, handler in previous_handlers.items():
                if handler is not None:  # None: not installed from Python, nothing to put back
                    signal.signal(signum, handler)
        if died:
            # Not the user's stop: a script or service manager must see that the site went down.
            name, returncode = died
            raise CommandError(f"Leukoscope stopped because the {name} stopped on its own "
                               f"({exit_described(returncode)}).")


# Long enough for a photograph in progress to finish; a training in progress is given up (the
# reconciler marks it failed on the next start).
STOP_GRACE_SECONDS = 20
WARM_SHUTDOWN = ("classify worker", "train worker")
# A process that stops on its own after running this long is started again, up to RESTARTS_IN_WINDOW
# times in RESTART_WINDOW_SECONDS; one that stops sooner, or more often, stops the site, saying which.
RESTART_IF_UP_FOR_SECONDS = 10
RESTARTS_IN_WINDOW = 5
RESTART_WINDOW_SECONDS = 600


class RestartBudget:
    """Whether a process that stopped on its own is started again: only after running a while, and
    not too often."""

    def __init__(self):
        self._restarted = {}  # name -> monotonic times of its recent restarts

    def allow(self, name, ran_for):
        now = time.monotonic()
        recent = [at for at in self._restarted.get(name, ()) if now - at < RESTART_WINDOW_SECONDS]
        if ran_for < RESTART_IF_UP_FOR_SECONDS or len(recent) >= RESTARTS_IN_WINDOW:
            return False
        self._restarted[name] = [*recent, now]
        return True


def _signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass  # the whole group has exited


def _signal_leader(process, signum):
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass
