"""The classifier's cache of prepared inputs is listed and, asked, pruned (manage.py classifier_cache):
a release that changes how cells are prepared leaves every data folder's file unread (0.1-0.4 GB
each), and nothing removed them."""

import os
import time
from io import StringIO

from django.core.management import call_command


def cached(folder, name, days_unused, size=1000):
    path = folder / name
    path.write_bytes(b"\0" * size)
    when = time.time() - days_unused * 86400
    os.utime(path, (when, when))
    return path


def run(*args):
    out = StringIO()
    call_command("classifier_cache", *args, stdout=out)
    return out.getvalue()


def test_only_files_unused_for_the_days_given_go_and_only_when_asked(tmp_path):
    old_reviewed = cached(tmp_path, "prepared-aaaa.npz", days_unused=90, size=3000)
    stopped = cached(tmp_path, "prepared-bbbb.4242.tmp.npz", days_unused=45)
    in_use = cached(tmp_path, "prepared-cccc.npz", days_unused=2)
    other = cached(tmp_path, "notes.txt", days_unused=400)

    listing = run("--cache-dir", str(tmp_path))
    assert ("3 files, 5,000 bytes; 2 unused for 30 days or more, 4,000 bytes: --delete removes them."
            in listing)
    assert all(path.exists() for path in (old_reviewed, stopped, in_use, other)), "listing removes nothing"

    assert "2 removed." in run("--cache-dir", str(tmp_path), "--delete")
    assert not old_reviewed.exists() and not stopped.exists()
    assert in_use.exists() and other.exists()

    assert "1 removed." in run("--cache-dir", str(tmp_path), "--delete", "--unused-days", "1")
    assert not in_use.exists() and other.exists()


def test_a_file_read_lately_counts_as_used(tmp_path):
    path = cached(tmp_path, "prepared-dddd.npz", days_unused=90)
    written = time.time() - 90 * 86400
    os.utime(path, (time.time(), written))  # read today (the access time), written long ago
    assert "0 unused" in run("--cache-dir", str(tmp_path), "--delete")
    assert path.exists()


def test_a_negative_number_of_days_is_refused_not_taken_as_every_file(tmp_path):
    """--unused-days -5 (a slip for 5) was taken as 0 and, with --delete, removed every prepared file,
    those written a minute ago included: each data folder then decodes again (minutes to an hour)."""
    import pytest
    from django.core.management import CommandError

    fresh = cached(tmp_path, "prepared-eeee.npz", days_unused=0)
    with pytest.raises(CommandError, match=r"^--unused-days -5: give 0 or more days\.$"):
        run("--cache-dir", str(tmp_path), "--delete", "--unused-days", "-5")
    assert fresh.exists()
