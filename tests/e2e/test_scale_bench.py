"""The benchmark behind `make bench-scale` runs to the end on a tiny scale, in a PostgreSQL database of
its own made and dropped here: a change to the site must not leave it broken unseen. Nothing here
reads its timings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_scale_bench(database_url, tmp_path, *args):
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "LEUKOSCOPE_MEDIA_ROOT", "DJANGO_SETTINGS_MODULE")}
    if database_url:
        env["DATABASE_URL"] = database_url
    env["LEUKOSCOPE_BENCH_DIR"] = str(tmp_path / "bench")
    return subprocess.run([sys.executable, "bench/scale.py", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def scale_database():
    """The URL of an empty PostgreSQL database for the bench, dropped afterwards."""
    import psycopg
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("bench/scale.py times PostgreSQL's plans; the suite runs on SQLite "
                    "(DATABASE_URL=postgres://... make test runs it)")
    name = f"leukoscope_scale_test_{os.getpid()}"
    try:
        server = psycopg.connect(postgres_url("postgres"), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL answers at DATABASE_URL: {' '.join(str(error).split())}")
    with server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        server.execute(f'CREATE DATABASE "{name}"')
        yield postgres_url(name)
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_scale_bench_builds_its_database_and_every_page_answers(scale_database, tmp_path):
    done = run_scale_bench(scale_database, tmp_path, "--cells", "2000", "--requests", "1")

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    header = next(number for number, line in enumerate(lines) if line.startswith("page "))
    rows = lines[header + 1:-1]
    assert lines[-1].startswith("target p95 <= ")
    statuses = {row[:52].strip(): row[52:].split()[0] for row in rows}
    assert len(statuses) == len(rows) >= 25
    assert set(statuses.values()) == {"200"}, rows
    for page in ("home, technologist", "history, last page", "sample page, 500 cells",
                 "admin sample, 1,000 photographs", "admin audit log list", "API cells, last page"):
        assert page in statuses

    # Built once: a second run at the same size times a page again without rebuilding.
    again = run_scale_bench(scale_database, tmp_path, "--cells", "2000", "--requests", "1",
                            "--page", "home, technologist")
    assert again.returncode == 0 and "building" not in again.stdout, again.stderr[-2000:]
    assert [line.split()[:2] for line in again.stdout.splitlines() if line.startswith("home")] == [
        ["home,", "technologist"]]


def test_the_scale_bench_refuses_sqlite_in_one_line(tmp_path):
    done = run_scale_bench(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path)

    assert done.returncode == 1
    assert done.stderr.strip() == ("bench/scale.py is about PostgreSQL's plans: set "
                                   "DATABASE_URL=postgres://... (bench/web.py times the pages on SQLite)")
