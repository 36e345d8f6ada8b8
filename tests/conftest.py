"""Shared fixtures: a real Redis, a real Celery worker process, and an isolated media folder.

The worker is another process, so tests that use it need committed rows (`transactional_db`) and
a database it can open: a SQLite file (see settings) or the PostgreSQL test database.
"""

import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test.utils import override_settings

from webapp.broker import embedded_redis_forced, redis_answers, start_embedded_redis
from webapp.worker_process import WorkerDidNotStart, start_worker, stop_worker

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS_DIR = Path(
    os.environ.get("LEUKOSCOPE_DATASETS_DIR", REPO_ROOT.parent / "shared" / "datasets")
)
TEST_REDIS_URL = "redis://127.0.0.1:6379/15"  # a database number of its own, away from `make run`
# The session's worker adapts a network in 3 fine-tunes (2 folds and the final) of 3 epochs, set as a
# lab would set it, instead of the default 6 of 20: the same code path in seconds, not a minute.
WORKER_ADAPTATION_EPOCHS, WORKER_ADAPTATION_FOLDS = 3, 2


def require_dataset(*parts):
    path = DATASETS_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"dataset not available at {path} (set LEUKOSCOPE_DATASETS_DIR)")
    return path


def wait_for(condition, what, timeout, poll=0.1):
    """Poll condition() until it returns something true and return that; fail the test, naming
    `what`, after `timeout` seconds. Waiting is for the real worker: nothing here measures time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def point_celery_at(url):
    """Send this process's task messages to `url`, dropping pooled connections to the old broker.

    Celery has no public call to swap brokers at run time; clearing its pools (as it does itself
    after a fork) makes the next publish connect afresh.
    """
    from kombu import pools as kombu_pools

    from webapp.celery import app as celery_app

    celery_app.conf.broker_url = url
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp.__dict__.pop("_producer_pool", None)
    celery_app.amqp._producer_pool = None
    # Celery takes its producer pool from kombu's process-wide registry, keyed by broker URL:
    # pointing back at a broker used before would get that URL's pool, already closed above.
    kombu_pools.reset()


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory):
    embedded = None
    url = os.environ.get("REDIS_URL")
    if not url:
        if not embedded_redis_forced() and redis_answers(TEST_REDIS_URL):
            url = TEST_REDIS_URL
        else:
            embedded = start_embedded_redis(tmp_path_factory.mktemp("redis"))
            url = embedded.url
    point_celery_at(url)
    yield url
    if embedded:
        embedded.stop()


@pytest.fixture
def sent_tasks(monkeypatch):
    """What would have gone to the broker, as (task, args) in order: nothing is sent.

    Tasks carry ids alone; the version a photograph is classified with is on its row
    (``requested_version``).
    """
    from webapp import queueing

    sent = []

    def publish(task_name, args, *, queue, task_id=None):
        sent.append((task_name.rsplit(".", 1)[-1], tuple(args)))
        return True

    monkeypatch.setattr(queueing, "publish", publish)
    return sent


@pytest.fixture
def tech(client, django_user_model):
    """A signed-in lab technologist (no staff rights)."""
    from tests.webapp.lab_factories import with_role

    user = with_role(django_user_model.objects.create_user("tech", password="a-long-passphrase-1"),
                     "technologist")
    client.force_login(user)
    return user


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Make the folder of the SQLite test database (var/, see settings), which reading the settings
    no longer makes: on a fresh clone nothing else has made it yet; and, after Django has deleted
    the database (this fixture's teardown comes after django_db_setup's), its write-ahead log.

    A connection still open when the database is deleted (the live server's, in the browser tests)
    is never closed before the process ends, so SQLite leaves its -wal and -shm files behind:
    10 MB in var/ for every test run."""
    database = settings.DATABASES["default"]
    sqlite = database["ENGINE"].endswith("sqlite3")
    if sqlite:
        Path(database["TEST"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    yield
    if sqlite:
        for suffix in ("-wal", "-shm"):
            Path(database["TEST"]["NAME"] + suffix).unlink(missing_ok=True)


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Django's advice for test suites: a cheap hasher. The default PBKDF2 costs ~0.23 s a hash on
    a 2-core host, and every signed-in fixture hashes a password. No test is about the hasher;
    processes a test starts (the launcher, the benches) keep the site's own."""
    fast = override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
    fast.enable()
    yield
    fast.disable()


@pytest.fixture(scope="session", autouse=True)
def isolated_media_root(tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = str(media)
    return media


def _database_url_for_worker():
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup, django_db_blocker, broker_url, isolated_media_root, tmp_path_factory
):
    """A real `celery worker` process on both queues, sharing the test database and media."""
    from webapp.celery import app as celery_app

    celery_app.control.purge()
    with django_db_blocker.unblock():
        database_url = _database_url_for_worker()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=broker_url,
        LEUKOSCOPE_MEDIA_ROOT=str(isolated_media_root),
        LEUKOSCOPE_ADAPTATION_EPOCHS=str(WORKER_ADAPTATION_EPOCHS),
        LEUKOSCOPE_ADAPTATION_FOLDS=str(WORKER_ADAPTATION_FOLDS),
        PYTHONUNBUFFERED="1",
    )
    try:
        process = start_worker(f"test-{os.getpid()}", "classify,train", env, log_path)
    except WorkerDidNotStart as exc:
        pytest.fail(str(exc))
    yield process
    stop_worker(process)
