"""Files in the media folder that no record holds: what a process killed between writing a file and
committing its record leaves (a web worker killed mid-upload, a classify worker killed as it stored
a photograph's crops), or one killed after a deletion committed and before its files went.

Nothing removes them on its own: a database restored from an older backup than its media folder
would make a lab's own photographs look stray too. `manage.py stray_files` lists them, and with
`--delete` removes them (photographs of patients with no record, and disk a lab pays for).
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import FileField

from webapp.models import Cell, SmearImage

logger = logging.getLogger(__name__)

# A file younger than this may belong to an upload or a classification still being committed.
YOUNGEST_STRAY = timedelta(hours=1)


@dataclass(frozen=True)
class StrayFile:
    name: str  # as storage names it, relative to MEDIA_ROOT
    size: int


def _file_fields():
    return [(model, field) for model in (SmearImage, Cell) for field in model._meta.fields
            if isinstance(field, FileField)]


def stray_files(older_than=YOUNGEST_STRAY):
    """The files under the folders the records' file fields write to (smears/, cells/, ...) that
    no record names, last changed more than ``older_than`` ago; sorted by name."""
    fields = _file_fields()
    held = set()
    for model, field in fields:
        held.update(model.objects.exclude(**{field.name: ""}).values_list(field.name, flat=True))
    root = Path(settings.MEDIA_ROOT)
    cutoff = time.time() - older_than.total_seconds()
    folders = sorted({str(field.upload_to).split("/", 1)[0] for _, field in fields})
    found = []
    for folder in folders:
        for path in (root / folder).rglob("*"):
            if not path.is_file():
                continue
            name = path.relative_to(root).as_posix()
            try:
                status = path.stat()
            except FileNotFoundError:  # deleted while the folder was read
                continue
            if name not in held and status.st_mtime < cutoff:
                found.append(StrayFile(name, status.st_size))
    return sorted(found, key=lambda stray: stray.name)


def remove_stray_files(strays):
    """Remove them (storage names); returns how many went. One changed since it was listed, or
    named by a record since, is left."""
    root = Path(settings.MEDIA_ROOT)
    fresh = {stray.name for stray in stray_files()}
    removed = 0
    for stray in strays:
        if stray.name in fresh:
            (root / stray.name).unlink(missing_ok=True)
            logger.info("Removed %s (%d bytes): no record held it", stray.name, stray.size)
            removed += 1
    return removed
