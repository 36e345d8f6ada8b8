"""The benchmarks behind `make bench-web`, `make bench-latency` and `make bench-load` run to the
end, on a tiny scale in a folder of their own: a change to the site (its roles once) must not leave
them broken unseen. Nothing here reads their timings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMEAR = REPO_ROOT.parent / "shared" / "datasets" / "bccd-smears" / "JPEGImages" / "BloodImage_00001.jpg"


def run_bench(script, tmp_path, *args):
    # The bench keeps to its own database, media and broker (REDIS_URL left out, it takes a Redis
    # database of its own, or starts one): the test session's worker on REDIS_URL must not take
    # the bench's photographs, which it would look for in the session's database.
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "LEUKOSCOPE_MEDIA_ROOT", "DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env["LEUKOSCOPE_BENCH_DIR"] = str(tmp_path / "bench")
    return subprocess.run([sys.executable, f"bench/{script}", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_web_bench_renders_every_page_it_times(tmp_path):
    done = run_bench("web.py", tmp_path, "--cells", "200", "--requests", "1")

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines()
            if line.startswith(("sample page", "history", "home", "report", "API"))]
    assert len(rows) >= 20 and "worst p95" in done.stdout
    assert "gallery relabel, 2,000 cells at once (a write)" in done.stdout
    # The signed sample's PDF embeds the crops the bench stored for it (hundreds of KiB) on top of
    # what every PDF holds (its fonts, about 40 KiB).
    sizes = {line[:52].strip(): float(line[52:].split()[2]) for line in rows if line.startswith("report PDF")}
    assert sizes["report PDF, 500 cells, signed"] > sizes["report PDF, 500 cells"] + 200
    assert (tmp_path / "bench" / "web.sqlite3").is_file()


@pytest.mark.worker
@pytest.mark.skipif(not SMEAR.is_file(), reason=f"needs the BCCD smears under {SMEAR.parents[1]}")
def test_the_latency_bench_uploads_through_the_site_and_its_worker(tmp_path):
    done = run_bench("latency.py", tmp_path, "-n", "2")

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "upload→done over 2 uploads" in done.stdout


@pytest.mark.worker
@pytest.mark.skipif(not SMEAR.is_file(), reason=f"needs the BCCD smears under {SMEAR.parents[1]}")
def test_the_load_bench_serves_uploaders_through_gunicorn_and_a_worker(tmp_path):
    done = run_bench("load.py", tmp_path, "--uploaders", "2", "--smears", "1", "--timeout", "120",
                     "--data", str(SMEAR.parents[2]))

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "HTTP errors: 0" in done.stdout
    assert "photographs done: 2 of 2" in done.stdout
    # Its folder (database, Redis, logs) is removed afterwards, as it says.
    assert not any((tmp_path / "bench").iterdir())
