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


def test_a_cache_folder_that_is_not_there_is_refused_not_reported_empty(tmp_path, monkeypatch):
    """`classifier_cache --cache-dir /srv/cahce --delete` (a typo) said "0 files ... 0 removed." and
    exited 0, as if the cache had been pruned; so did a mistyped LEUKOSCOPE_CLASSIFIER_CACHE."""
    import pytest
    from django.core.management import CommandError

    from webapp.management.commands import classifier_cache

    missing = tmp_path / "cahce"
    with pytest.raises(CommandError, match=rf"^--cache-dir {missing}: no such folder\.$"):
        run("--cache-dir", str(missing), "--delete")
    a_file = cached(tmp_path, "prepared-ffff.npz", days_unused=0)
    with pytest.raises(CommandError, match=r": a file, not a folder\.$"):
        run("--cache-dir", str(a_file))

    monkeypatch.setattr(classifier_cache, "DEFAULT_CACHE_DIR", missing)
    monkeypatch.setenv("LEUKOSCOPE_CLASSIFIER_CACHE", str(missing))
    with pytest.raises(CommandError, match=rf"^LEUKOSCOPE_CLASSIFIER_CACHE={missing}: no such folder\.$"):
        run("--delete")

    # The instance's own folder, before anything was cached, is simply empty.
    monkeypatch.delenv("LEUKOSCOPE_CLASSIFIER_CACHE")
    assert run() == f"{missing}: nothing cached yet (no training or evaluation has run here).\n"
    assert not missing.exists()
