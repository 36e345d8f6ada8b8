"""Files no record holds (a process killed between writing a file and committing its record) are
listed, and removed only when asked; files records hold, and young ones, are never touched."""

import os
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.webapp.test_uploads import jpeg_bytes, upload
from webapp.services.uploads import create_sample_with_images

pytestmark = pytest.mark.django_db


def test_stray_files_are_listed_and_removed_only_when_asked(settings, capsys, sent_tasks):
    # The reliability audit: a web worker killed mid-upload left 36 photographs on disk that no
    # record pointed to, and nothing ever noticed them.
    sample = create_sample_with_images("STRAY-1", "", [upload("kept.jpg", jpeg_bytes(seed=5))]).sample
    kept = sample.images.get().image.name
    root = Path(settings.MEDIA_ROOT)
    old, young = root / "smears" / "2026" / "12" / "01" / "killed.jpg", root / "cells" / "fresh.jpg"
    for path in (old, young):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a photograph with no record")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(root / kept, (two_hours_ago, two_hours_ago))  # old, but a record holds it

    call_command("stray_files")
    listed = capsys.readouterr().out
    assert listed.splitlines() == [
        "smears/2026/12/01/killed.jpg  27 bytes",
        "1 file, 27 bytes, held by no record (older than 1 h): --delete removes them."]
    assert old.exists()

    call_command("stray_files", "--delete")
    assert capsys.readouterr().out.splitlines()[-1] == (
        "1 file, 27 bytes, held by no record (older than 1 h): 1 removed.")
    assert not old.exists() and young.exists() and (root / kept).exists()


@pytest.mark.parametrize("command", [["stray_files"], ["stray_files", "--delete"], ["stored_names"],
                                     ["stored_names", "--rename"]])
def test_a_media_folder_that_is_not_there_is_refused_not_reported_empty(settings, sent_tasks, tmp_path,
                                                                         command):
    """With LEUKOSCOPE_MEDIA_ROOT mistyped, or the shared folder not mounted on the machine the upgrade
    step ran on, these said "0 files ... held by no record" / "0 photographs renamed" and exited 0:
    an upgrade that did nothing looked done."""
    from django.core.management import CommandError

    create_sample_with_images("MOUNT-1", "", [upload("kept.jpg", jpeg_bytes(seed=6))])
    settings.MEDIA_ROOT = str(tmp_path / "not-mounted")
    with pytest.raises(CommandError, match=(
            rf"^LEUKOSCOPE_MEDIA_ROOT={tmp_path / 'not-mounted'} is no folder on this machine, and the "
            r"files of 1 stored photograph are kept there: is the shared folder mounted here")):
        call_command(*command)
    assert not (tmp_path / "not-mounted").exists()


def test_a_new_instance_with_no_media_folder_yet_has_no_stray_files(settings, capsys, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "made-by-the-first-upload")
    call_command("stray_files")
    assert capsys.readouterr().out == "0 files, 0 bytes, held by no record (older than 1 h).\n"
