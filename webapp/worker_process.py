"""A Celery worker as a child process, started and waited for: what tests and benchmarks need.

`runlab` starts its long-lived workers itself; this is for callers that must not go on until the
worker answers a ping, and that stop it again when they are done.
"""

import subprocess
import sys
import time
from pathlib import Path

from webapp.celery import app as celery_app
from webapp.child_processes import ended_with_parent

REPO_ROOT = Path(__file__).resolve().parent.parent


class WorkerDidNotStart(RuntimeError):
    pass


def start_worker(name, queues, env, log_path, loglevel="INFO", timeout=90.0, extra_args=()):
    """Start `celery worker -n NAME@host -Q QUEUES` and return once it answers a ping.

    The worker leads a process group of its own, which a fault test kills whole, and ends when
    the process that started it dies (webapp.child_processes): a test run killed by a timeout
    left workers that took the next run's photographs from the same Redis database.
    """
    log_path = Path(log_path)
    with open(log_path, "ab") as log:  # the child keeps its own handle; a restart appends
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queues,
             "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", loglevel,
             "--without-gossip", "--without-mingle", *extra_args],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=ended_with_parent(),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WorkerDidNotStart(f"the Celery worker exited at start:\n{log_path.read_text()[-4000:]}")
        replies = celery_app.control.ping(timeout=0.5) or []
        if any(name in reply_name for reply in replies for reply_name in reply):
            return process
    process.kill()
    raise WorkerDidNotStart(f"the Celery worker did not answer:\n{log_path.read_text()[-4000:]}")


def stop_worker(process, timeout=20):
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
