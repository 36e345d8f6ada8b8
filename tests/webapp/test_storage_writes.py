"""A file the storage refuses part-way leaves nothing behind (services/storage.save_whole)."""

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITE_LIMIT = 64 * 1024

SCRIPT = """
import django
django.setup()
from webapp.models import SmearImage
from webapp.services.storage import save_whole
image = SmearImage()
save_whole(image.image, "small.png", b"s" * 1000)
print("stored", image.image.name)
try:
    save_whole(image.image, "big.png", b"b" * 200_000)
except OSError as exc:
    print("refused", exc.errno)
"""


def _limited_writes():
    # What a full disk or a quota does to a write part-way: the file grows to the limit, then the
    # write fails (EFBIG here, ENOSPC there); the signal the kernel sends with it is ignored, as a
    # server's would be.
    resource.setrlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT, WRITE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_write_refused_part_way_leaves_no_part_of_the_file(tmp_path):
    # The review of the storage refusals: Django's storage leaves the part it wrote, so "nothing was
    # kept" was untrue for a photograph cut off by a full disk.
    media = tmp_path / "media"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="webapp.settings", LEUKOSCOPE_VAR_DIR=str(tmp_path / "var"),
               LEUKOSCOPE_MEDIA_ROOT=str(media), PYTHONDONTWRITEBYTECODE="1")
    env.pop("DATABASE_URL", None)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("k" * 60)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=_limited_writes)
    assert done.returncode == 0, done.stderr
    stored, refused = done.stdout.splitlines()
    assert refused.startswith("refused ")
    kept = [path.relative_to(media).as_posix() for path in media.rglob("*") if path.is_file()]
    assert kept == [stored.split(" ", 1)[1]]  # the small one, whole; nothing of the big one
