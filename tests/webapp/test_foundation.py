"""The skeleton's promises: broker resolution, health reporting, deploy checks, the launcher."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.urls import reverse

from tests.conftest import point_celery_at
from webapp.broker import (
    LOCAL_REDIS_URL,
    WORKER_ROLL_KEY,
    instance_key_prefix,
    redis_answers,
    resolve_broker,
    start_embedded_redis,
)
from webapp.models import ModelVersion

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_embedded_redis_starts_answers_and_stops(tmp_path):
    server = start_embedded_redis(tmp_path)
    try:
        assert redis_answers(server.url)
    finally:
        server.stop()
    assert not redis_answers(server.url, timeout=0.2)


# "on" as every other LEUKOSCOPE_ on/off setting reads it (it was once ignored here alone).
def test_forced_embedded_redis_is_used_even_when_a_local_one_answers(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("LEUKOSCOPE_EMBEDDED_REDIS", "on")
    url, embedded = resolve_broker(tmp_path)
    try:
        assert embedded is not None
        assert url != "redis://127.0.0.1:6379/0"
        assert redis_answers(url)
    finally:
        embedded.stop()


def test_unreachable_redis_url_is_reported_clearly(tmp_path, monkeypatch):
    from webapp.broker import BrokerUnavailable

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(BrokerUnavailable, match="does not answer"):
        resolve_broker(tmp_path)


@pytest.mark.worker
def test_healthz_reports_every_part_with_a_worker(client, transactional_db, celery_worker,
                                                  django_user_model):
    ModelVersion.objects.create(architecture="paper", task="binary", status="active",
                                model_sha256="x" * 64)
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    response = client.get(reverse("healthz"))
    report = response.json()
    assert response.status_code == 200, report
    assert report["checks"]["database"]["ok"]
    assert report["checks"]["broker"]["ok"]
    assert report["checks"]["worker"]["workers"]
    # The worker said which queues it takes (both, here): /healthz reads them from its mark.
    assert report["checks"]["worker"]["queues"] == {"classify": report["checks"]["worker"]["workers"],
                                                    "train": report["checks"]["worker"]["workers"]}
    assert report["checks"]["model"]["architecture"] == "paper"


def test_healthz_fails_when_no_worker_takes_the_classify_queue(client, db, tmp_path, broker_url,
                                                             django_user_model):
    # The audit stopped the classify worker of a two-machine deployment: /healthz still said "ok",
    # counting the train worker, while every photograph waited.
    from webapp.broker import announce_worker, forget_worker

    ModelVersion.objects.create(architecture="paper", task="binary", status="active",
                                model_sha256="x" * 64)
    server = start_embedded_redis(tmp_path / "redis")
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    try:
        point_celery_at(server.url)
        announce_worker(server.url, "train@lab-2", ["train"])
        response = client.get(reverse("healthz"))
        worker = response.json()["checks"]["worker"]
        assert response.status_code == 503 and response.json()["failing"] == ["worker"]
        assert worker["queues"] == {"classify": [], "train": ["train@lab-2"]}
        assert worker["error"].startswith("no worker takes the classify queue, so photographs wait")

        announce_worker(server.url, "classify1@lab-1", ["classify"])
        response = client.get(reverse("healthz"))
        assert response.status_code == 200, response.json()
        assert "warning" not in response.json()["checks"]["worker"]
        # Without a train worker the site classifies; a retraining would wait, and it says so.
        forget_worker(server.url, "train@lab-2")
        worker = client.get(reverse("healthz")).json()["checks"]["worker"]
        assert worker["ok"], worker
        assert worker["warning"] == "no worker takes the train queue: a retraining would wait"
    finally:
        server.stop()
        point_celery_at(broker_url)


def test_healthz_names_the_broker_when_it_is_down(client, db, broker_url):
    point_celery_at("redis://127.0.0.1:1/0")
    try:
        response = client.get(reverse("healthz"))
    finally:
        point_celery_at(broker_url)
    report = response.json()
    assert response.status_code == 503
    assert "broker" in report["failing"]
    assert "worker" in report["failing"]
    assert "model" in report["failing"]  # nothing active in an empty database


def test_healthz_tells_anyone_what_works_and_only_staff_the_details(client, db, broker_url,
                                                                    django_user_model):
    ModelVersion.objects.create(architecture="paper", task="binary", status="active",
                                model_sha256="x" * 64)
    point_celery_at("redis://127.0.0.1:1/0")
    try:
        anonymous = client.get(reverse("healthz"))
        client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
        staff = client.get(reverse("healthz"))
    finally:
        point_celery_at(broker_url)
    assert anonymous.status_code == staff.status_code == 503
    assert anonymous.json() == {
        "status": "failing", "failing": ["broker", "worker"], "warnings": [],
        "checks": {"database": {"ok": True}, "broker": {"ok": False}, "storage": {"ok": True},
                   "worker": {"ok": False}, "model": {"ok": True}, "work": {"ok": True}},
    }
    details = staff.json()["checks"]
    assert details["model"]["architecture"] == "paper" and "error" in details["broker"]


def test_the_sample_page_says_when_no_worker_takes_its_photographs(client, db, tmp_path, broker_url,
                                                                  django_user_model):
    from tests.webapp.lab_factories import make_sample, with_role
    from webapp.broker import announce_worker
    from webapp.models import SmearImage

    sample = make_sample(types=())
    SmearImage.objects.update(status="queued")
    client.force_login(with_role(django_user_model.objects.create_user("tech"), "technologist"))
    page = reverse("lab:sample-detail", args=[sample.pk])
    server = start_embedded_redis(tmp_path / "redis")
    try:
        point_celery_at(server.url)
        announce_worker(server.url, "train@lab-2", ["train"])
        shown = client.get(page).content.decode()
        assert "No classifier worker is running, so these photographs wait" in shown
        announce_worker(server.url, "classify1@lab-1", ["classify"])
        assert 'data-role="no-classifier"' not in client.get(page).content.decode()
    finally:
        server.stop()
        point_celery_at(broker_url)
    # A broker that cannot be asked is the "queue cannot be reached" note's to say, not this one's.
    point_celery_at("redis://127.0.0.1:1/0")
    try:
        assert 'data-role="no-classifier"' not in client.get(page).content.decode()
    finally:
        point_celery_at(broker_url)


def test_healthz_reconnects_after_a_redis_restart_and_names_stuck_work(client, db, tmp_path, settings,
                                                                        broker_url, django_user_model):
    from django.utils import timezone

    from tests.webapp.lab_factories import make_sample
    from webapp.broker import announce_worker
    from webapp.models import SmearImage

    server = start_embedded_redis(tmp_path / "redis")
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    try:
        point_celery_at(server.url)
        announce_worker(server.url, "classify@lab-1")
        make_sample(types=())
        first = client.get(reverse("healthz")).json()
        assert first["status"] == "ok", first
        assert first["checks"]["worker"]["workers"] == ["classify@lab-1"]

        server.stop()
        server = start_embedded_redis(tmp_path / "redis", port=port)
        # Each web process holds a connection the restart closed; the first answer after it is true.
        after_restart = client.get(reverse("healthz")).json()
        assert after_restart["checks"]["broker"]["ok"], after_restart
        assert after_restart["checks"]["worker"]["workers"] == ["classify@lab-1"], "kept in the AOF"

        settings.QUEUED_STUCK_AFTER = 300
        SmearImage.objects.update(status="queued", queued_at=timezone.now() - timedelta(minutes=6))
        response = client.get(reverse("healthz"))
        assert response.status_code == 503
        assert response.json()["checks"]["work"] == {
            "ok": False, "queued_photographs": 1, "processing_photographs": 0, "abandoned_trainings": 0,
            "error": "1 photograph queued and 0 processing past their time, 0 trainings without a "
                     "heartbeat"}
    finally:
        server.stop()
        point_celery_at(broker_url)


def test_a_nul_byte_in_a_path_is_not_found_and_in_a_query_is_refused_saying_why(client, db, tech):
    for url in ("/media/smears/a%00b.png", "/samples/%00/"):
        assert client.get(url).status_code == 404, url
    for url in ("/samples/?q=%00", "/history/?accession=%00", "/accounts/login/?next=/%00"):
        response = client.get(url)
        assert response.status_code == 400, url
        assert "holds a NUL character (%00)" in response.content.decode(), url
    answer = client.get("/api/cells/?cell_type=%00")
    assert answer.status_code == 400 and "NUL character" in answer.json()["error"]


def test_deploy_check_is_clean_with_production_settings(tmp_path):
    env = dict(
        os.environ,
        LEUKOSCOPE_SECRET_KEY="k" * 64 + "-production-secret-for-the-check",
        LEUKOSCOPE_ALLOWED_HOSTS="lab.example.org",
        LEUKOSCOPE_SECURE="1",
        LEUKOSCOPE_PROXY_COUNT="1",
        LEUKOSCOPE_VAR_DIR=str(tmp_path),
    )
    env.pop("LEUKOSCOPE_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # Behind the proxy without it, every sign-in is the proxy's: a warning, which stops a deployment.
    del env["LEUKOSCOPE_PROXY_COUNT"]
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "leukoscope.W002" in result.stderr
    assert "LEUKOSCOPE_PROXY_COUNT=1" in result.stderr


def test_deploy_check_refuses_a_generated_secret_key_behind_https(tmp_path):
    env = dict(os.environ, LEUKOSCOPE_ALLOWED_HOSTS="lab.example.org", LEUKOSCOPE_SECURE="1",
               LEUKOSCOPE_VAR_DIR=str(tmp_path))
    for name in ("LEUKOSCOPE_DEBUG", "LEUKOSCOPE_SECRET_KEY"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "leukoscope.E002" in result.stderr and "LEUKOSCOPE_SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_a_sign_in_lasts_twelve_hours(client, django_user_model):
    django_user_model.objects.create_user("tech", password="a-long-passphrase-1")
    response = client.post(reverse("login"), {"username": "tech", "password": "a-long-passphrase-1"})
    assert response.status_code == 302
    # Counted from the sign-in, to the second (a fixed end: webapp/idle_sign_out.py).
    assert 12 * 3600 - 2 <= response.cookies["sessionid"]["max-age"] <= 12 * 3600
    assert client.session.get_expire_at_browser_close() is False


@pytest.mark.parametrize("hours, expected", [("8", "28800"), ("0", "LEUKOSCOPE_SESSION_HOURS=0")])
def test_session_length_comes_from_the_environment(tmp_path, hours, expected):
    env = dict(os.environ, LEUKOSCOPE_SESSION_HOURS=hours, LEUKOSCOPE_VAR_DIR=str(tmp_path))
    code = "import webapp.settings as s; print(s.SESSION_COOKIE_AGE)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert expected in result.stdout + result.stderr


@pytest.mark.parametrize("url, expected", [
    ("postgres://u@db:5432/lab", "-c jit=off"),
    # A URL's own options are kept beside it.
    ("postgres://u@db:5432/lab?options=-c%20statement_timeout%3D5000",
     "-c jit=off -c statement_timeout=5000"),
])
def test_postgresql_runs_the_pages_queries_without_jit(tmp_path, url, expected):
    # bench/scale.py: the samples waiting for a signature spent 100 ms compiling a 50 ms query.
    env = dict(os.environ, DATABASE_URL=url, LEUKOSCOPE_VAR_DIR=str(tmp_path))
    code = "import webapp.settings as s; print(s.DATABASES['default']['OPTIONS']['options'])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == expected, result.stderr


@pytest.mark.parametrize("epochs, folds, expected", [
    ("3", "0", "(3, 0)"),
    (None, None, "(None, None)"),  # the classifier's defaults
    ("0", "2", "LEUKOSCOPE_ADAPTATION_EPOCHS='0': expected a whole number of at least 1"),
    ("5", "two", "LEUKOSCOPE_ADAPTATION_FOLDS='two': expected a whole number of at least 0"),
])
def test_the_adaptation_plan_comes_from_the_environment(tmp_path, epochs, folds, expected):
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEUKOSCOPE_ADAPTATION_")}
    given = {"LEUKOSCOPE_ADAPTATION_EPOCHS": epochs, "LEUKOSCOPE_ADAPTATION_FOLDS": folds}
    env.update({name: value for name, value in given.items() if value is not None})
    env["LEUKOSCOPE_VAR_DIR"] = str(tmp_path)
    code = "import webapp.settings as s; print((s.ADAPTATION_EPOCHS, s.ADAPTATION_FOLDS))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert expected in result.stdout + result.stderr


def test_an_unknown_inference_runtime_is_refused_by_name(tmp_path):
    env = dict(os.environ, LEUKOSCOPE_INFERENCE_RUNTIME="onnx", LEUKOSCOPE_VAR_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert ("LEUKOSCOPE_INFERENCE_RUNTIME='onnx': expected one of litert-int8, litert, tensorflow"
            in result.stderr)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _start_launcher(tmp_path, **extra_env):
    """`manage.py runlab` (what `make run` serves with) on a database of its own in ``tmp_path``:
    (the process, its address, its log)."""
    env = dict(os.environ, LEUKOSCOPE_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1", **extra_env)
    for name in ("REDIS_URL", "DATABASE_URL", "LEUKOSCOPE_EMBEDDED_REDIS", "LEUKOSCOPE_BROKER_KEY_PREFIX"):
        if name not in extra_env:
            env.pop(name, None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env,
                   check=True, capture_output=True, timeout=300)
    port = _free_port()
    log = open(tmp_path / "runlab.log", "w+")
    launcher = subprocess.Popen(
        [sys.executable, "manage.py", "runlab", "--port", str(port), "--web-workers", "1"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return launcher, f"http://127.0.0.1:{port}", log


def _wait_for_workers(launcher, base, tmp_path):
    """/healthz's report once it sees a live worker (failing with the launcher's log otherwise)."""
    report = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, report = _get_json(base + "/healthz")
            if report["checks"]["worker"]["ok"]:
                break
        except (OSError, ValueError):
            pass
        assert launcher.poll() is None, (tmp_path / "runlab.log").read_text()
        time.sleep(1)
    assert report and report["checks"]["worker"]["ok"], (tmp_path / "runlab.log").read_text()
    return report


def _stop_launcher(launcher):
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        launcher.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise


@pytest.mark.worker
@pytest.mark.skipif(not redis_answers(LOCAL_REDIS_URL), reason=f"needs a Redis running at {LOCAL_REDIS_URL}")
def test_launcher_on_this_machines_redis_keeps_its_keys_apart(tmp_path):
    """Two checkouts served on one machine find the same Redis: each keeps its queues and its roll
    of workers under a prefix of its own, so neither takes the other's photographs."""
    import redis

    prefix = instance_key_prefix(tmp_path)
    shared = redis.Redis.from_url(LOCAL_REDIS_URL)
    launcher, base, log = _start_launcher(tmp_path)
    try:
        _wait_for_workers(launcher, base, tmp_path)
        log.seek(0)
        assert f"keys prefixed {prefix}" in log.read()
        roll = {name.decode() for name in shared.smembers(prefix + WORKER_ROLL_KEY)}
        assert any(name.startswith("classify@") for name in roll), roll
        assert shared.exists(f"{prefix}_kombu.binding.classify")
        # Another instance's roll, under its own prefix, is not this one's: its /healthz sees no
        # worker there.
        assert not shared.smembers(instance_key_prefix(tmp_path / "elsewhere") + WORKER_ROLL_KEY)
    finally:
        _stop_launcher(launcher)
    assert not shared.smembers(prefix + WORKER_ROLL_KEY)  # the workers left the roll on the way out


def _cmdline(process):
    """A child's command line, or [] for one that ended between the listing and the asking."""
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.worker
def test_launcher_serves_with_an_embedded_redis_starts_again_a_worker_that_dies_and_stops_everything(
        tmp_path):
    """What `make run` does after setup, on the embedded-Redis path, end to end in real processes.
    The reliability audit: a worker killed (for memory, say) took the whole site down with it, and
    nothing started it again; one that had been running a while is now started again and the site
    keeps serving. Ctrl-C reaches the whole terminal's process group, and leaves no process and no
    port behind. (One launcher for the three: starting one costs a test about 12 s.)"""
    import psutil

    from webapp.management.commands.runlab import RESTART_IF_UP_FOR_SECONDS

    launcher, base, log = _start_launcher(tmp_path, LEUKOSCOPE_EMBEDDED_REDIS="1")
    try:
        report = _wait_for_workers(launcher, base, tmp_path)
        assert report["checks"]["broker"]["ok"]
        with urllib.request.urlopen(base + "/accounts/login/", timeout=5) as response:
            assert response.status == 200
        log.seek(0)
        startup = log.read()
        assert "embedded Redis started by Leukoscope" in startup
        broker_port = int(startup.split("embedded Redis started by Leukoscope at redis://127.0.0.1:")[1]
                          .split("/")[0])
        started = psutil.Process(launcher.pid).children(recursive=True)
        commands = [" ".join(process.cmdline()) for process in started]
        assert any("manage.py reconcile" in command for command in commands), commands
        assert (tmp_path / "redis" / "appendonly.aof").exists() or any(
            (tmp_path / "redis").glob("appendonlydir/*")), "the embedded Redis keeps an append-only file"

        worker = next(child for child in psutil.Process(launcher.pid).children()
                      if "classify" in child.cmdline())
        time.sleep(max(0.0, worker.create_time() + RESTART_IF_UP_FOR_SECONDS + 1 - time.time()))
        worker.kill()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log.seek(0)
            if "The classify worker stopped (killed by SIGKILL); starting it again." in log.read():
                break
            assert launcher.poll() is None, (tmp_path / "runlab.log").read_text()
            time.sleep(0.5)
        # The launcher says so, then starts it: the new worker may not be there yet (CI once looked
        # between the two).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            again = [child for child in psutil.Process(launcher.pid).children()
                     if child.pid != worker.pid and "classify" in _cmdline(child)]
            if again:
                break
            time.sleep(0.2)
        assert again, (tmp_path / "runlab.log").read_text()
        with urllib.request.urlopen(base + "/accounts/login/", timeout=5) as response:
            assert response.status == 200
        _wait_for_workers(launcher, base, tmp_path)
        started += psutil.Process(launcher.pid).children(recursive=True)
    finally:
        _stop_launcher(launcher)
    log.seek(0)
    output = log.read()
    assert "Traceback" not in output, output
    assert "Stopped." in output
    assert launcher.returncode == 0, "the user's stop is no failure"
    assert not redis_answers(f"redis://127.0.0.1:{broker_port}/0", timeout=0.3)
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/healthz", timeout=2)
    left = [process for process in started if process.is_running() and
            process.status() != psutil.STATUS_ZOMBIE]
    assert not left, [" ".join(process.cmdline()) for process in left]
    with socket.socket() as sock:
        # As a web server binds (gunicorn sets SO_REUSEADDR): fails only while something listens.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        sock.listen()
