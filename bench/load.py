"""Many technologists uploading at once, end to end on this machine (loopback only).

    python bench/load.py [--uploaders 20] [--smears 10] [--photographs-per-smear 1]
                         [--classify-workers 1] [--timeout 900] [--data ../shared/datasets]

Starts, under a fresh folder in var/bench-load/ (removed afterwards unless --keep): an embedded
Redis, gunicorn as `make run` starts it, the given number of classify workers and a database with
the bundled network (SQLite there, or --database-url). N signed-in uploaders, each in its own
thread and HTTP session, then create M samples each, one after another, with the given number of
BCCD smear photographs per sample. Prints: HTTP errors, photographs done, end-to-end photographs
per minute (first upload to last result), how many uploads a web process refused as busy (it
checks two at a time) and were sent again, CPU-seconds per photograph for the web server and the
workers apart (measured on their process trees, after a warm-up that loads the network in every
worker), and p50/p95 from the start of a sample's upload to each of its photographs being done.
Stops after --timeout seconds of waiting, reporting what was done by then.
"""

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.percentiles import percentile  # noqa: E402  (after the path above)
from webapp.broker import live_workers, start_embedded_redis  # noqa: E402

PASSWORD = "bench-load-passphrase-1"
# LEUKOSCOPE_BENCH_DIR: a folder of its own (the test that runs this bench on a tiny scale).
BENCH_DIR = Path(os.environ.get("LEUKOSCOPE_BENCH_DIR") or REPO_ROOT / "var" / "bench-load")


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(processes):
    """User + system CPU time of these processes and all their descendants now alive."""
    seen, total = set(), 0.0
    for root in processes:
        try:
            tree = [psutil.Process(root.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


class Lab:
    def __init__(self, work_dir, database_url, classify_workers):
        self.work_dir = work_dir
        self.redis = start_embedded_redis(work_dir / "redis")
        self.env = dict(
            os.environ, LEUKOSCOPE_VAR_DIR=str(work_dir), LEUKOSCOPE_MEDIA_ROOT=str(work_dir / "media"),
            REDIS_URL=self.redis.url, LEUKOSCOPE_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
        )
        self.env.pop("LEUKOSCOPE_DEBUG", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        else:
            self.env.pop("DATABASE_URL", None)
        self.classify_workers = classify_workers
        self.web, self.workers = [], []
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def manage(self, *args):
        subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def _spawn(self, command, log_name):
        log = open(self.work_dir / log_name, "wb")
        return subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start(self):
        # As `make setup`: a secret key the web server's processes share, or each would sign its
        # sessions with one of its own.
        self.manage("ensure_instance")
        self.manage("migrate", "--noinput")
        self.manage("ensure_default_model")
        python = sys.executable
        # The same web server as `make run` (runlab): two processes of four threads.
        self.web.append(self._spawn(
            [python, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
             "--threads", "4", "--timeout", "120", "--log-level", "warning", "--no-control-socket"],
            "web.log"))
        for k in range(self.classify_workers):
            self.workers.append(self._spawn(
                [python, "-m", "celery", "-A", "webapp", "worker", "-Q", "classify", "-n",
                 f"classify{k}@%h", "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip",
                 "--without-mingle"], f"classify{k}.log"))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                web_up = requests.get(self.base + "/healthz", timeout=5).json()["checks"]["database"]["ok"]
            except (requests.RequestException, ValueError, KeyError):
                web_up = False
            if web_up and len(live_workers(self.redis.url)) >= self.classify_workers:
                return
            time.sleep(1)
        raise SystemExit("the web server or the workers did not come up; see " + str(self.work_dir))

    def stop(self):
        for process in self.web + self.workers:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.web + self.workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()


BUSY_TRIES = 120


class Uploader(threading.Thread):
    def __init__(self, base, username, accessions, photographs):
        super().__init__(daemon=True)
        self.base, self.username, self.accessions, self.photographs = base, username, accessions, photographs
        self.started_at = {}
        self.errors = []
        self.busy = 0  # uploads refused as "checking other uploads" and sent again

    def _csrf(self, session, path):
        page = session.get(self.base + path, timeout=120)
        page.raise_for_status()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

    def run(self):
        session = requests.Session()
        try:
            token = self._csrf(session, "/accounts/login/")
            response = session.post(self.base + "/accounts/login/", timeout=120, allow_redirects=False,
                                    data={"username": self.username, "password": PASSWORD,
                                          "csrfmiddlewaretoken": token},
                                    headers={"Referer": self.base + "/accounts/login/"})
            if response.status_code != 302:
                self.errors.append(f"sign-in answered {response.status_code}")
                return
        except requests.RequestException as exc:
            self.errors.append(f"sign-in: {exc}")
            return
        for accession in self.accessions:
            try:
                self._upload(session, accession)
            except requests.RequestException as exc:
                self.errors.append(f"{accession}: {exc}")

    def _upload(self, session, accession):
        files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in self.photographs]
        self.started_at[accession] = time.time()
        for _ in range(BUSY_TRIES):
            token = self._csrf(session, "/samples/new/")
            response = session.post(self.base + "/samples/new/", timeout=120, allow_redirects=False,
                                    data={"accession_number": accession, "csrfmiddlewaretoken": token},
                                    files=files, headers={"Referer": self.base + "/samples/new/"})
            if response.status_code != 503:
                break
            # The web process checks two uploads at a time and refuses a third (webapp.intake): a
            # person sends it again; here, after a short pause, counted apart from errors.
            self.busy += 1
            time.sleep(random.uniform(0.5, 2.0))
        if response.status_code != 302:
            self.errors.append(f"{accession}: upload answered {response.status_code}")


def setup_django(lab):
    os.environ.update({key: value for key, value in lab.env.items() if key.startswith(("LEUKOSCOPE_",
                                                                                        "DATABASE_URL",
                                                                                        "REDIS_URL"))})
    if "DATABASE_URL" not in lab.env:
        os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    import django

    django.setup()


def image_rows(prefix):
    from webapp.models import SmearImage

    return list(SmearImage.objects.filter(sample__accession_number__startswith=prefix)
                .values_list("sample__accession_number", "status", "processed_at"))


def wait_for_results(prefix, expected, timeout):
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = image_rows(prefix)
        if len(rows) >= expected and all(status in ("done", "failed") for _, status, _ in rows):
            break
        time.sleep(1)
    return rows


def run(args):
    photographs = sorted((Path(args.data) / "bccd-smears" / "JPEGImages").glob("BloodImage_*.jpg"))
    if len(photographs) < args.photographs_per_smear:
        raise SystemExit(f"needs BCCD smears in {args.data}/bccd-smears/JPEGImages (see --data)")
    photographs = photographs[: max(args.photographs_per_smear, 2 * args.classify_workers)]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work_dir = BENCH_DIR / stamp
    work_dir.mkdir(parents=True)
    lab = Lab(work_dir, args.database_url, args.classify_workers)
    try:
        print(f"starting Redis, gunicorn and {args.classify_workers} classify worker(s) in {work_dir} ...",
              flush=True)
        lab.start()
        setup_django(lab)
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        # Uploading is a technologist's work: an account without a role is refused it.
        technologists = Group.objects.get(name="technologist")
        for k in range(args.uploaders):
            get_user_model().objects.create_user(f"tech{k}", password=PASSWORD).groups.add(technologists)

        # Warm-up, not measured: every worker loads the network.
        warm = Uploader(lab.base, "tech0", ["WARM-0"], photographs[: 2 * args.classify_workers])
        warm.run()
        if warm.errors or not wait_for_results("WARM-", 2 * args.classify_workers, args.timeout):
            raise SystemExit(f"warm-up failed: {warm.errors}")

        per_smear = photographs[: args.photographs_per_smear]
        uploaders = [
            Uploader(lab.base, f"tech{k}", [f"LOAD-{k:02d}-{m:03d}" for m in range(args.smears)], per_smear)
            for k in range(args.uploaders)
        ]
        expected = args.uploaders * args.smears * len(per_smear)
        print(f"{args.uploaders} uploaders x {args.smears} smears x {len(per_smear)} photograph(s) = "
              f"{expected} photographs ...", flush=True)
        web_before, workers_before = cpu_seconds(lab.web), cpu_seconds(lab.workers)
        started = time.time()
        for uploader in uploaders:
            uploader.start()
        for uploader in uploaders:
            uploader.join()
        uploads_seconds = time.time() - started
        rows = wait_for_results("LOAD-", expected, args.timeout)
        web_cpu, worker_cpu = cpu_seconds(lab.web) - web_before, cpu_seconds(lab.workers) - workers_before
    finally:
        lab.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    errors = [error for uploader in uploaders for error in uploader.errors]
    started_at = {accession: at for uploader in uploaders for accession, at in uploader.started_at.items()}
    done = [(accession, processed) for accession, status, processed in rows if status == "done"]
    failed = sum(1 for _, status, _ in rows if status == "failed")
    latencies = [processed.timestamp() - started_at[accession] for accession, processed in done
                 if accession in started_at]
    last = max((processed.timestamp() for _, processed in done), default=started)
    minutes = max(last - started, 1e-9) / 60
    count = max(len(done), 1)
    print(f"classify workers: {args.classify_workers}   uploads took {uploads_seconds:.1f} s")
    print(f"HTTP errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    busy = sum(uploader.busy for uploader in uploaders)
    print(f"uploads refused as busy and sent again: {busy}")
    print(f"photographs done: {len(done)} of {expected}" + (f", {failed} failed" if failed else ""))
    print(f"end to end: {len(done) / minutes:.1f} photographs/min")
    print(f"CPU per photograph: web {web_cpu / count:.3f} s, workers {worker_cpu / count:.3f} s")
    print(f"upload to done: p50 {percentile(latencies, 0.5):.1f} s, p95 {percentile(latencies, 0.95):.1f} s, "
          f"mean {statistics.fmean(latencies) if latencies else float('nan'):.1f} s")
    return 0 if not errors and len(done) == expected else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploaders", type=int, default=20)
    parser.add_argument("--smears", type=int, default=10, help="samples per uploader")
    parser.add_argument("--photographs-per-smear", type=int, default=1)
    parser.add_argument("--classify-workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the results")
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--database-url", default="", help="default: SQLite in the bench folder")
    parser.add_argument("--keep", action="store_true", help="keep the bench folder and its logs")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
