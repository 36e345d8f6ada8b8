"""Writing a record's file to the media storage so that a write the storage refuses part-way (a full
disk, a file-size limit) leaves no part of the file behind. Django's file storage leaves what it
wrote, under a name it chose itself; each file here gets a name of its own (a random tag), so the
part can be found and removed."""

import errno
import logging
import secrets
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from webapp.models import SmearImage
from webapp.wording import count_of

logger = logging.getLogger(__name__)

# A full disk, a quota, a folder made read-only: the machine's trouble, not the photograph's, the
# recipe's or the data's.
DISK_REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def tagged_name(name):
    """``name`` with a random tag before its extension: "sample12.jpg" -> "sample12_1a2fc0b1.jpg"."""
    path = PurePosixPath(name)
    return str(path.with_name(f"{path.stem}_{secrets.token_hex(4)}{path.suffix}"))


def save_whole(field_file, name, content):
    """field_file.save(name, content) without saving its record; on OSError, any part written is
    removed and the error raised again."""
    tagged = tagged_name(name)
    field, instance = field_file.field, field_file.instance
    # The folder is dated when the file is saved: a write across midnight names one of these two.
    expected = {field.generate_filename(instance, tagged)}
    try:
        field_file.save(tagged, ContentFile(content), save=False)
    except OSError:
        expected.add(field.generate_filename(instance, tagged))
        # Only a part that was written: not where no folder could be made for it.
        delete_stored_files([part for part in expected if field_file.storage.exists(part)])
        raise


def delete_stored_files(names):
    """Remove files from the media storage by their stored names. One the storage refuses to remove
    is logged and left: its record is gone already, or was never kept (`manage.py stray_files`
    finds it)."""
    for name in names:
        try:
            default_storage.delete(name)
        except OSError as exc:
            logger.warning("Could not remove %s from storage: %s", name, exc)


def missing_media_folder():
    """Where photographs are stored and LEUKOSCOPE_MEDIA_ROOT is no folder on this machine (the
    shared storage not mounted here, or the variable mistyped): a sentence saying so, for a command
    that reads the folder to stop on, rather than report that it found nothing there. None where the
    folder is there, or nothing was ever stored (a new instance has made none yet)."""
    root = Path(settings.MEDIA_ROOT)
    if root.is_dir():
        return None
    stored = SmearImage.objects.count()
    if not stored:
        return None
    return (f"LEUKOSCOPE_MEDIA_ROOT={root} is no folder on this machine, and the files of "
            f"{count_of(stored, 'stored photograph')} are kept there: is the shared folder mounted "
            "here, and the variable spelt as the site's?")
