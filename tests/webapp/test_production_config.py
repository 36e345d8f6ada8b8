"""What a production deployment meets first: one secret key for every process of a machine, a bad
setting or an unreachable database told in one line, and commands that refuse what cannot work
(a reconciler sweeping without pause, a web server on a port it cannot have, a training on a
folder that is not there) before they start anything. Real `manage.py` processes where the exit
status and what reaches the terminal are the point."""

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from webapp.management.commands import runlab
from webapp.models import ModelVersion

REPO_ROOT = Path(__file__).resolve().parents[2]
# Variables a developer's shell or the test run may hold, which each case sets itself.
OWN_VARIABLES = ("DATABASE_URL", "LEUKOSCOPE_SECRET_KEY", "LEUKOSCOPE_MEDIA_ROOT", "LEUKOSCOPE_DEBUG",
                 "LEUKOSCOPE_PORT", "LEUKOSCOPE_EMBEDDED_REDIS", "LEUKOSCOPE_BROKER_KEY_PREFIX")


def environment(var_dir, **given):
    env = {name: value for name, value in os.environ.items() if name not in OWN_VARIABLES}
    env.update(LEUKOSCOPE_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", **given)
    return env


def manage(*args, env, timeout=60):
    """`manage.py ARGS` in a process of its own: (exit status, stdout, stderr). One that outlives
    ``timeout`` (a reconciler sweeping forever, a launcher serving) is stopped as Ctrl-C would, and
    fails the test."""
    process = subprocess.Popen([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        pytest.fail(f"manage.py {' '.join(args)} was still running after {timeout} s:\n{out}\n{err}")
    return process.returncode, out, err


def assert_one_line(err, expected):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def url_of_the_test_database():
    """DATABASE_URL of the database this test's rows are in, for a manage.py process to share it."""
    from django.db import connection

    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    return (f"postgres://{quote(database['USER'] or '')}:{quote(database['PASSWORD'] or '')}@"
            f"{database['HOST'] or 'localhost'}:{database['PORT'] or 5432}/{database['NAME']}")


# --- one secret key per machine ---------------------------------------------------------------

# Each process imports what comes before the settings, waits for the same moment, and only then
# reads the settings, so that all of them find the key file missing together.
SHOW_KEY_AT = ("import sys, time, webapp; time.sleep(max(0, float(sys.argv[1]) - time.time())); "
               "import webapp.settings as s; print(s.SECRET_KEY_KEPT, s.SECRET_KEY)")


def test_processes_starting_together_share_one_key_written_once_for_the_owner_alone(tmp_path):
    var_dir = tmp_path / "var"
    env = environment(var_dir)
    start_at = str(time.time() + 4)
    processes = [subprocess.Popen([sys.executable, "-c", SHOW_KEY_AT, start_at], cwd=REPO_ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        answers.append(out.split())

    key_file = var_dir / "secret_key"
    key = key_file.read_text()
    assert answers == [["True", key]] * 4, "every process signs with the one kept key"
    assert len(key) > 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [path.name for path in var_dir.iterdir()] == ["secret_key"], "no temporary file is left"


# --- a configuration error is one line ----------------------------------------------------------

@pytest.mark.parametrize("setting, value, expected", [
    ("DATABASE_URL", "postgress://lab:secret@db.example.org/leukoscope",
     "DATABASE_URL: unknown scheme 'postgress' (expected postgres://"),
    ("DATABASE_URL", "", "DATABASE_URL is set but empty"),
    # A scheme Django knows, whose driver is not installed: "Error loading MySQLdb module" said before.
    ("DATABASE_URL", "mysql://lab:secret@db.example.org/leukoscope",
     "DATABASE_URL: Leukoscope runs on PostgreSQL or SQLite, not 'mysql' (expected postgres://"),
    ("DATABASE_URL", "postgres://lab:secret@127.0.0.1:abc/leukoscope",
     "DATABASE_URL=postgres://lab:***@127.0.0.1:abc/leukoscope is not a valid URL"),
    ("LEUKOSCOPE_MAX_UPLOAD_BYTES", "abc", "LEUKOSCOPE_MAX_UPLOAD_BYTES='abc': expected a whole number"),
    ("LEUKOSCOPE_SESSION_HOURS", "abc", "LEUKOSCOPE_SESSION_HOURS=abc: expected a positive number of hours"),
    # FHIR's identifier.system is a URI: a bare name would go out to the LIS unchecked.
    ("LEUKOSCOPE_ACCESSION_SYSTEM", "lab accession",
     "LEUKOSCOPE_ACCESSION_SYSTEM='lab accession': expected a URI"),
    ("LEUKOSCOPE_PROXY_COUNT", "-1", "LEUKOSCOPE_PROXY_COUNT='-1': expected a whole number of at least 0"),
    # An on/off slip once read as off: secure cookies, HSTS and the HTTPS redirect quietly gone.
    ("LEUKOSCOPE_SECURE", "ture", "LEUKOSCOPE_SECURE='ture' is neither on nor off: expected 1, true"),
    ("LEUKOSCOPE_DEBUG", "enabled", "LEUKOSCOPE_DEBUG='enabled' is neither on nor off"),
    # A sample's target is 100 or 200, all its page offers: 150 was taken, and each new sample's
    # form then showed "100 leukocytes" chosen for a target of 150.
    ("LEUKOSCOPE_TARGET_COUNT", "150", "LEUKOSCOPE_TARGET_COUNT='150': expected 100 or 200"),
])
def test_a_bad_setting_is_one_line_naming_it(tmp_path, setting, value, expected):
    status, _, err = manage("check", env=environment(tmp_path, **{setting: value}))
    assert status == 1
    assert_one_line(err, f"Error: {expected}")
    assert "secret" not in err, "the password is never printed"


def test_with_leukoscope_debug_a_bad_setting_shows_its_traceback(tmp_path):
    status, _, err = manage("check", env=environment(tmp_path, LEUKOSCOPE_SESSION_HOURS="abc",
                                                     LEUKOSCOPE_DEBUG="1"))
    assert status == 1
    assert "Traceback" in err and "ImproperlyConfigured: LEUKOSCOPE_SESSION_HOURS=abc" in err


def test_a_database_that_refuses_the_connection_is_one_line_with_the_password_hidden(tmp_path):
    url = f"postgres://lab:secret@127.0.0.1:{free_port()}/leukoscope"
    status, _, err = manage("migrate", "--noinput", env=environment(tmp_path, DATABASE_URL=url))
    assert status == 1
    assert_one_line(err, "Error: The database cannot be reached (DATABASE_URL=postgres://lab:***@127.0.0.1:")
    assert err.strip().endswith("/leukoscope): Connection refused"), err


def test_a_database_file_that_cannot_be_opened_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'leukoscope.sqlite3'}"
    status, _, err = manage("api_token", "list", env=environment(tmp_path, DATABASE_URL=url))
    assert status == 1
    assert_one_line(err, f"The database cannot be reached (DATABASE_URL={url}): unable to open database file")


# Every command that reads the database, as an operator runs it.
# manage.py turns a database error into one line for every command alike: one that reads, one
# that writes, and the reconciler, which catches errors of its own.
DATABASE_COMMANDS = [("models",), ("stored_names", "--rename"), ("reconcile", "--once")]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_file_that_is_not_a_database_is_one_line_for_any_command(tmp_path, command):
    # DATABASE_URL naming some other file: SQLite's error is no OperationalError, and was a traceback.
    not_a_database = tmp_path / "leukoscope.sqlite3"
    not_a_database.write_text("a backup's checksum list, not the database")
    url = f"sqlite:///{not_a_database}"
    status, _, err = manage(*command, env=environment(tmp_path, DATABASE_URL=url))
    assert status == 1
    assert_one_line(err, f"Error: The database cannot be used (DATABASE_URL={url}): file is not a database")


def test_a_database_without_its_tables_is_one_line_saying_to_migrate(tmp_path):
    empty = tmp_path / "leukoscope.sqlite3"
    empty.touch()
    url = f"sqlite:///{empty}"
    status, _, err = manage("stored_names", env=environment(tmp_path, DATABASE_URL=url))
    assert status == 1
    assert_one_line(err, f"Error: Database error (DATABASE_URL={url}): no such table: webapp_smearimage "
                         "(run manage.py migrate)")


def test_ensure_instance_says_in_one_line_which_folder_it_cannot_make(tmp_path):
    status, _, err = manage("ensure_instance", env=environment("/proc/leukoscope-nope"))
    assert status == 1
    assert_one_line(err, "Cannot make the folder /proc/leukoscope-nope (No such file or directory): "
                         "set LEUKOSCOPE_VAR_DIR")

    a_file = tmp_path / "media"
    a_file.write_text("not a folder")
    status, _, err = manage("ensure_instance", env=environment(tmp_path / "var",
                                                               LEUKOSCOPE_MEDIA_ROOT=str(a_file)))
    assert status == 1
    assert_one_line(err, f"{a_file} is a file, not a folder: set LEUKOSCOPE_MEDIA_ROOT")


def test_a_new_var_folder_is_its_owners_alone_and_an_existing_one_keeps_its_mode(tmp_path):
    # The security audit: var/ (0755) and its SQLite file (0644) let any local account read live
    # session keys and the photographs.
    status, _, err = manage("ensure_instance", env=environment(tmp_path / "var"))
    assert status == 0, err
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "var" / "media").is_dir()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    status, _, err = manage("ensure_instance", env=environment(shared))
    assert status == 0, err
    assert shared.stat().st_mode & 0o777 == 0o755


# --- the reconciler -------------------------------------------------------------------------------

def test_reconcile_refuses_to_sweep_without_pause(tmp_path):
    status, _, err = manage("reconcile", "--every", "0", env=environment(tmp_path), timeout=30)
    assert status == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "manage.py reconcile: error: argument --every: expected a positive number of seconds, not '0'")


@pytest.mark.django_db(transaction=True)
def test_reconcile_says_each_sweep_in_one_line_that_the_database_is_out_of_reach(tmp_path):
    # A reconciler left running while the database is down or moved: a traceback a sweep buried the log.
    port = free_port()
    url = f"postgres://lab:secret@127.0.0.1:{port}/leukoscope"
    process = subprocess.Popen([sys.executable, "manage.py", "reconcile", "--every", "0.1"], cwd=REPO_ROOT,
                               env=environment(tmp_path, DATABASE_URL=url), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    hung = threading.Timer(60, process.kill)  # stops a reconciler that never says anything
    hung.start()
    lines = []
    try:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if sum("sweep failed" in seen for seen in lines) == 2:
                break
    finally:
        hung.cancel()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert "Traceback" not in "\n".join(lines), lines
    failed = [line.split(" ", 2)[2] for line in lines if "sweep failed" in line]
    assert failed == [
        "ERROR webapp.management.commands.reconcile: Reconciler sweep failed: The database cannot be reached "
        f"(DATABASE_URL=postgres://lab:***@127.0.0.1:{port}/leukoscope): Connection refused; trying again "
        "in 0.1 s"] * 2


def test_reconcile_once_exits_1_when_the_broker_did_not_answer(tmp_path, broker_url):
    env = environment(tmp_path, DATABASE_URL=url_of_the_test_database(), REDIS_URL=broker_url)

    status, out, err = manage("reconcile", "--once", env=dict(env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/9"))
    assert status == 1, out + err
    assert "the broker did not answer, nothing was sent" in out
    assert "CommandError: The broker did not answer: nothing was sent" in err and "Traceback" not in err

    status, out, err = manage("reconcile", "--once", env=env)  # the test run's Redis answers
    assert status == 0, out + err
    assert "drawn boxes sent" in out and "did not answer" not in out


# --- the launcher ---------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, expected", [
    ("--port", "99999", "argument --port: expected a port number from 1 to 65535"),
    ("--web-workers", "0", "argument --web-workers: expected a whole number of at least 1, not '0'"),
])
def test_runlab_refuses_a_bad_option_before_starting_anything(tmp_path, option, value, expected):
    status, out, err = manage("runlab", option, value,
                              env=environment(tmp_path, LEUKOSCOPE_EMBEDDED_REDIS="1"), timeout=30)
    assert status == 2
    assert "Traceback" not in err and expected in err.strip().splitlines()[-1]
    assert "running" not in out and not (tmp_path / "redis").exists()


def test_runlab_on_a_port_in_use_says_so_in_one_line_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = manage("runlab", "--port", str(port),
                                  env=environment(tmp_path, LEUKOSCOPE_EMBEDDED_REDIS="1"), timeout=30)
    assert status == 1
    assert_one_line(err, f"CommandError: Port {port} is already in use on 127.0.0.1: set LEUKOSCOPE_PORT")
    assert out == "", "no broker started, nothing announced"
    assert not (tmp_path / "redis").exists()


def sleeper(pid_file):
    return [sys.executable, "-c",
            f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]


@pytest.fixture
def launcher_of(monkeypatch):
    """runlab with the given processes in place of the broker, the workers and the web server: the
    launcher's own supervision, in seconds."""
    def launch(children):
        # The stand-ins use no broker: resolving one must not start one.
        monkeypatch.setattr(runlab, "resolve_broker", lambda folder: ("redis://127.0.0.1:6379/15", None))
        monkeypatch.setattr(runlab.Command, "child_commands", lambda self, host, port, workers: children)
        port = str(free_port())
        return lambda: call_command("runlab", "--port", port, stdout=StringIO(), stderr=StringIO())
    return launch


def gone(pid_file):
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_runlab_exits_non_zero_naming_the_process_that_stopped_on_its_own(tmp_path, launcher_of):
    pid_file = tmp_path / "reconciler.pid"
    run = launcher_of({"reconciler": sleeper(pid_file),
                       "web server": [sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)"]})
    stopped = r"because the web server stopped on its own \(exit code 3\)"
    with pytest.raises(CommandError, match=stopped) as raised:
        run()
    assert raised.value.returncode == 1
    assert gone(pid_file), "the others were stopped with it"


def test_runlab_stopped_by_sigterm_exits_0_and_gives_its_signals_back(tmp_path, launcher_of):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    pid_file = tmp_path / "web.pid"
    run = launcher_of({"web server": sleeper(pid_file)})

    def stop_once_started():  # the launcher has its handlers before it starts the first process
        while not (pid_file.exists() and pid_file.read_text()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_once_started, daemon=True).start()
    run()  # no CommandError: the user's stop
    assert gone(pid_file)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


# --- training on a folder that is not there -------------------------------------------------------

@pytest.mark.django_db
def test_train_on_a_missing_folder_is_refused_before_a_version_is_stored(tmp_path):
    present = tmp_path / "cells"
    (present / "NEUTROPHIL").mkdir(parents=True)
    Image.new("RGB", (64, 48), (220, 190, 200)).save(present / "NEUTROPHIL" / "cell.png")
    missing = tmp_path / "not-there"
    with pytest.raises(CommandError, match=f"Training data folder {missing} does not exist"):
        call_command("train", "--data", str(present), "--data", str(missing), "--epochs", "1",
                     stdout=StringIO())
    a_file = tmp_path / "cells.zip"
    a_file.write_bytes(b"PK")
    with pytest.raises(CommandError, match="is a file, not a folder"):
        call_command("train", "--data", str(a_file), "--epochs", "1", stdout=StringIO())
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize("secure", [False, True])
def test_the_launchers_web_server_trusts_forwarded_headers_only_behind_a_proxy(settings, secure):
    # Without LEUKOSCOPE_SECURE nothing stands in front of gunicorn: a local client's
    # "X-Forwarded-Proto: https" must not make its request secure (gunicorn trusts 127.0.0.1 by default).
    settings.SECURE = secure
    web = runlab.Command().child_commands("127.0.0.1", 8000, 2)["web server"]
    assert ("--forwarded-allow-ips" in web) is not secure
    if not secure:
        assert web[web.index("--forwarded-allow-ips") + 1] == ""
