"""Shared fixtures: a real Redis, a real Celery worker process, and an isolated media folder.

The worker is another process, so tests that use it need committed rows (`transactional_db`) and
a database it can open: a SQLite file (see settings) or the PostgreSQL test database.
"""

import functools
import os
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.test.utils import override_settings

from webapp.broker import MEDIA_PROBE_PREFIX, embedded_redis_forced, redis_answers, start_embedded_redis
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


def stored_files(media_root):
    """Every file under the media folder, less the session worker's probe: it writes and removes one
    there every few seconds to tell /healthz it can use the folder (webapp/broker.py)."""
    return {path for path in Path(media_root).rglob("*")
            if path.is_file() and not path.name.startswith(MEDIA_PROBE_PREFIX)}


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


def postgres_url(database_name):
    """A URL for ``database_name`` on the server, and as the user, that the suite's DATABASE_URL names."""
    from django.db import connection

    database = connection.settings_dict
    return (f"postgres://{quote(database['USER'] or '')}:{quote(database['PASSWORD'] or '')}@"
            f"{database['HOST'] or 'localhost'}:{database['PORT'] or 5432}/{database_name}")


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


def test_process_index():
    """0, or this pytest-xdist process's number (gw0, gw1, ...) when `make test` runs in several."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def redis_database_of_this_test_process(url):
    """`url` with the database number counted down by this process's index (15, 14, ... from the
    default). Each test process starts its own Celery worker, which purges and consumes the queues
    of the database it is given: two processes on one database would take each other's tasks."""
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) - test_process_index()
    if database < 0:
        raise pytest.UsageError(f"too many test processes for the Redis databases below {url}")
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory):
    embedded = None
    url = os.environ.get("REDIS_URL")
    if url:
        url = redis_database_of_this_test_process(url)
    elif not embedded_redis_forced() and redis_answers(TEST_REDIS_URL):
        url = redis_database_of_this_test_process(TEST_REDIS_URL)
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


@pytest.fixture
def staff(django_user_model):
    """An administrator: staff status and the admin role (not signed in: see staff_client)."""
    from tests.webapp.lab_factories import with_role

    return with_role(django_user_model.objects.create_user("lead", password="a-long-passphrase-1",
                                                           is_staff=True), "admin")


@pytest.fixture
def staff_client(client, staff):
    """The test client, signed in as the administrator `staff`."""
    client.force_login(staff)
    return client


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


# The migrations that make the lab's roles (groups and their permissions), replayed in order.
ROLE_MIGRATIONS = ("0009_roles", "0019_admin_manages_api_keys", "0020_admin_keeps_api_keys_on_record",
                   "0022_admin_deletes_samples")
DATABASE_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences",
                     "django_db_serialized_rollback"}


@functools.cache
def _roles_migration_state():
    """The models as the last role migration knows them, for replaying the role migrations."""
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connection, ignore_no_migrations=True)
    return loader, loader.project_state(("webapp", ROLE_MIGRATIONS[-1])).apps


@pytest.fixture(autouse=True)
def lab_roles_as_migrated(request):
    """The lab's roles, as the migrations leave them, in every test that uses the database.

    A transactional test ends by flushing every table, and Django recreates only the permissions:
    the groups data migrations made are gone for every test after it in the same process. Run
    serially, pytest-django orders all transactional tests last, so this never showed; split
    across processes by file (`make test`), a file's transactional tests come before the next
    file's others. The migrations themselves are replayed, so the roles are exactly theirs."""
    from django.contrib.auth.models import Group

    if not (request.node.get_closest_marker("django_db") or DATABASE_FIXTURES & set(request.fixturenames)):
        return
    request.getfixturevalue("_django_db_helper")
    if Group.objects.filter(name="technologist").exists():
        return
    loader, state_apps = _roles_migration_state()
    for name in ROLE_MIGRATIONS:
        for operation in loader.get_migration("webapp", name).operations:
            operation.code(state_apps, None)


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


@pytest.fixture(scope="session", autouse=True)
def training_data_in_test_folders(tmp_path_factory):
    """The retraining form trains only on folders under settings.TRAINING_DATA_ROOTS; tests write
    their tiny data folders under pytest's temporary folder."""
    settings.TRAINING_DATA_ROOTS = [*settings.TRAINING_DATA_ROOTS, tmp_path_factory.getbasetemp()]


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
    process.log_path = log_path  # for the report of a test that fails beside it
    yield process
    stop_worker(process)


WORKER_LOG_LINES_ON_FAILURE = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # What the worker did while a test that uses it failed is often the why of the failure, and a
    # CI run keeps nothing but the printed report.
    report = yield
    worker = getattr(item, "funcargs", {}).get("celery_worker")
    log_path = getattr(worker, "log_path", None)
    if report.failed and log_path is not None and log_path.exists():
        lines = log_path.read_text(errors="replace").splitlines()[-WORKER_LOG_LINES_ON_FAILURE:]
        report.sections.append((f"the Celery worker's log, its last {len(lines)} lines", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, which drops the test database at the end. PostgreSQL waits 5 s for a
    database's other sessions to end before it refuses to drop it: one session was still open on
    each test database as a PostgreSQL run ended, which kept the database (with a warning) after
    that wait. Any is ended here, after the session's worker stopped and before the drop. (A
    wrapper, not an autouse fixture: a run of tests without the database sets none up.)"""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = %s AND pid <> pg_backend_pid()", [connection.settings_dict["NAME"]])
