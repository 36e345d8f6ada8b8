"""A bad setting stops every kind of process with one line naming it, as manage.py prints it: a
Celery worker or gunicorn started directly (not through manage.py), and the settings Django itself
would otherwise refuse with a traceback (the time zone, the log level). Real processes: the exit
status and what reaches the terminal are the point."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OWN_VARIABLES = ("DATABASE_URL", "LEUKOSCOPE_DEBUG", "LEUKOSCOPE_TIME_ZONE", "LEUKOSCOPE_LOG_LEVEL",
                 "LEUKOSCOPE_REVIEW_THRESHOLD", "LEUKOSCOPE_BROKER_KEY_PREFIX")
BIN = Path(sys.executable).parent


def run(command, tmp_path, **given):
    """``command`` in the repository with ``given`` set: (exit status, stderr and stdout)."""
    env = {name: value for name, value in os.environ.items() if name not in OWN_VARIABLES}
    env.update(LEUKOSCOPE_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1", **given)
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr + done.stdout


def error_lines(output):
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("Error: ")]


@pytest.mark.parametrize("setting, value, expected", [
    ("LEUKOSCOPE_TIME_ZONE", "Mars/Olympus",
     "Error: LEUKOSCOPE_TIME_ZONE='Mars/Olympus' is not a time zone: expected a name from the IANA "
     "time zone database, such as UTC or Europe/Madrid"),
    ("LEUKOSCOPE_LOG_LEVEL", "LOUD",
     "Error: LEUKOSCOPE_LOG_LEVEL='LOUD' is not a log level: expected DEBUG, INFO, WARNING, ERROR or "
     "CRITICAL"),
])
def test_manage_py_names_a_bad_time_zone_or_log_level_in_one_line(tmp_path, setting, value, expected):
    status, output = run([sys.executable, "manage.py", "check"], tmp_path, **{setting: value})
    assert status == 1
    assert output.strip() == expected


def test_a_log_level_in_any_case_is_taken(tmp_path):
    status, output = run([sys.executable, "manage.py", "check"], tmp_path, LEUKOSCOPE_LOG_LEVEL="warning",
                         LEUKOSCOPE_TIME_ZONE="Europe/Madrid")
    assert status == 0, output


def test_a_celery_worker_started_directly_names_the_bad_setting_in_one_line(tmp_path):
    status, output = run([str(BIN / "celery"), "-A", "webapp", "worker", "-Q", "classify"], tmp_path,
                         DATABASE_URL="foo://x")
    assert status == 1
    assert output.strip() == ("Error: DATABASE_URL: unknown scheme 'foo' (expected "
                              "postgres://user:password@host:5432/name or sqlite:///path)")


@pytest.mark.parametrize("url, expected", [
    # Celery read a URL of another scheme with a traceback, and one without a scheme as RabbitMQ's.
    ("http://127.0.0.1:6379/0", "REDIS_URL='http://127.0.0.1:6379/0': expected redis://host:6379/0 "
                                "(rediss:// for TLS)"),
    ("127.0.0.1:6379", "REDIS_URL='127.0.0.1:6379': expected redis://host:6379/0 (rediss:// for TLS)"),
    ("redis://:secret@redis-host:port/0", "REDIS_URL='redis://:***@redis-host:port/0': not an address "
     "(Port could not be cast to integer value as 'port'): expected redis://host:6379/0 (rediss:// for TLS)"),
    ("redis://:secret@redis-host:6379/zero", "REDIS_URL='redis://:***@redis-host:6379/zero': the database "
     "after the host is a number, not 'zero': expected redis://host:6379/0 (rediss:// for TLS)"),
])
def test_a_redis_url_no_redis_client_reads_is_named_in_one_line(tmp_path, url, expected):
    status, output = run([str(BIN / "celery"), "-A", "webapp", "worker", "-Q", "classify"], tmp_path,
                         REDIS_URL=url)
    assert (status, output.strip()) == (1, f"Error: {expected}")
    status, output = run([sys.executable, "manage.py", "check"], tmp_path, REDIS_URL=url)
    assert (status, output.strip()) == (1, f"Error: {expected}")


def test_with_leukoscope_debug_the_celery_worker_shows_the_traceback(tmp_path):
    status, output = run([str(BIN / "celery"), "-A", "webapp", "worker", "-Q", "classify"], tmp_path,
                         LEUKOSCOPE_REVIEW_THRESHOLD="2", LEUKOSCOPE_DEBUG="1")
    assert status != 0
    assert "Traceback" in output
    assert "ImproperlyConfigured: LEUKOSCOPE_REVIEW_THRESHOLD=2: expected a number from 0 to 1" in output


def test_gunicorn_started_directly_names_the_bad_setting_and_stops(tmp_path):
    status, output = run([str(BIN / "gunicorn"), "webapp.wsgi", "--bind", "127.0.0.1:0", "--workers", "1",
                          "--no-control-socket"], tmp_path, LEUKOSCOPE_REVIEW_THRESHOLD="2")
    # gunicorn's "worker failed to boot": its master stops instead of starting the worker again.
    assert status == 3, output
    assert error_lines(output) == [
        "Error: LEUKOSCOPE_REVIEW_THRESHOLD=2: expected a number from 0 to 1 (a probability)"]
    assert "Reason: Worker failed to boot." in output


@pytest.fixture
def database_of_another_role():
    """(URL, table): a PostgreSQL database whose table belongs to the server's superuser, and a URL
    signing in as a role of no rights on it, as a restore without --role leaves a site."""
    import psycopg
    from django.db import connection

    from tests.conftest import postgres_url

    if connection.vendor != "postgresql":
        pytest.skip("table rights are PostgreSQL's (DATABASE_URL=postgres://... make test runs this)")
    name, role = f"leukoscope_rights_{os.getpid()}", f"leukoscope_no_rights_{os.getpid()}"
    server = psycopg.connect(postgres_url("postgres"), autocommit=True, connect_timeout=5)
    with server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        server.execute(f'DROP ROLE IF EXISTS "{role}"')
        server.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'no-rights-1'")
        server.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(postgres_url(name), autocommit=True) as database:
            database.execute("CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255), "
                             "name varchar(255), applied timestamptz)")
        host, port = connection.settings_dict["HOST"] or "localhost", connection.settings_dict["PORT"] or 5432
        yield f"postgres://{role}:no-rights-1@{host}:{port}/{name}"
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_table_the_sites_role_may_not_read_is_named_in_one_line(tmp_path, database_of_another_role):
    status, output = run([sys.executable, "manage.py", "migrate"], tmp_path,
                         DATABASE_URL=database_of_another_role)
    assert status == 1
    [line] = error_lines(output)
    assert line.startswith("Error: The database refused the site's role (DATABASE_URL=postgres://"), line
    assert "no-rights-1" not in line  # the password stays out of the terminal and the logs
    assert line.endswith("permission denied for table django_migrations (the tables must belong to the "
                         "role DATABASE_URL signs in as, or grant it their rights: README, Backups)"), line


@pytest.fixture
def database_never_migrated():
    """A URL for a PostgreSQL database without the site's tables, as one made for it and not yet
    migrated is."""
    import psycopg
    from django.db import connection

    from tests.conftest import postgres_url

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's missing table (DATABASE_URL=postgres://... make test runs this)")
    name = f"leukoscope_unmigrated_{os.getpid()}"
    server = psycopg.connect(postgres_url("postgres"), autocommit=True, connect_timeout=5)
    with server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        server.execute(f'CREATE DATABASE "{name}"')
        yield postgres_url(name)
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("command", [("stored_names",), ("api_token", "list"), ("reconcile", "--once")],
                         ids=" ".join)
def test_a_postgresql_database_without_its_tables_is_one_line_saying_to_migrate(
        tmp_path, database_never_migrated, command):
    # PostgreSQL raises a missing table as a ProgrammingError, not SQLite's OperationalError.
    status, output = run([sys.executable, "manage.py", *command], tmp_path,
                         DATABASE_URL=database_never_migrated)
    assert status == 1
    [line] = error_lines(output)
    assert line.startswith("Error: Database error (DATABASE_URL=postgres://"), line
    assert line.endswith(" does not exist (run manage.py migrate)"), line
