"""Photographs stored before their stored names were made of ids: their stored name kept the
uploaded file's stem, where microscope software often writes the patient's name or record number,
and with it every /media/ address of the photograph. Renaming moves each such file to the name an
upload gets now (services.uploads: ``sample<id>_<tag>.<ext>``), in the folder it is in.

Only a photograph no worker has in hand is moved (done or failed, and no drawn box of it waiting
for the worker), checked again as its record is changed under its sample's row lock, as deletions
take it: the new file is written whole first, the record changed only where it still names the old
file in that state, and the old file removed last; a photograph deleted or taken by a worker
meanwhile keeps its old file and loses the copy. The file's bytes, and so its checksum and
fingerprint, stay as they were."""

import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef

from webapp.models import AddedCellRequest, Sample, SmearImage
from webapp.services.storage import delete_stored_files, tagged_name

logger = logging.getLogger(__name__)

SETTLED = (SmearImage.Status.DONE, SmearImage.Status.FAILED)
# What services.uploads names a photograph now: "sample<id>" and storage.save_whole's 8-digit tag.
NAMED_BY_ID = re.compile(r"sample(\d+)_[0-9a-f]{8}(_[A-Za-z0-9]{7})?")


@dataclass(frozen=True)
class Renamed:
    image_id: int
    old: str
    new: str


def named_by_upload():
    """Photographs whose stored name is not of their sample's id, oldest first, as (id, sample id,
    stored name, status)."""
    rows = SmearImage.objects.order_by("pk").values_list("pk", "sample_id", "image", "status")
    return [row for row in rows if not _named_by_id(row[2], row[1])]


def _named_by_id(name, sample_id):
    matched = NAMED_BY_ID.fullmatch(PurePosixPath(name).stem)
    return matched is not None and int(matched.group(1)) == sample_id


def rename_to_ids():
    """Move every settled photograph named_by_upload lists to a name of ids; returns (renamed,
    left as they are: those a worker has in hand, a drawn box's included, or whose file could not
    be read)."""
    renamed, left = [], []
    for image_id, sample_id, old, status in named_by_upload():
        if status not in SETTLED:
            left.append(old)
            continue
        try:
            with default_storage.open(old, "rb") as stored:
                content = stored.read()
        except OSError as exc:
            logger.warning("Photograph %s: its file could not be read, left as it is (%s)", image_id, exc)
            left.append(old)
            continue
        old_path = PurePosixPath(old)
        wanted = tagged_name(str(old_path.parent / f"sample{sample_id}{old_path.suffix}"))
        try:
            new = default_storage.save(wanted, ContentFile(content))
        except OSError as exc:
            delete_stored_files([wanted] if default_storage.exists(wanted) else [])
            logger.warning("Photograph %s: its new file could not be written, left as it is (%s)",
                           image_id, exc)
            left.append(old)
            continue
        with transaction.atomic():
            # Under the sample's row lock, as deleting the sample or a photograph takes it: a
            # deletion then reads the name the record holds once this commits, not the old one.
            list(Sample.objects.select_for_update().filter(pk=sample_id).values_list("pk", flat=True))
            # A worker finishing a drawn box reads a done photograph by the name it loaded.
            boxes_waiting = AddedCellRequest.objects.filter(image=OuterRef("pk"),
                                                            status=AddedCellRequest.Status.PENDING)
            moved = (SmearImage.objects.filter(pk=image_id, image=old, status__in=SETTLED)
                     .exclude(Exists(boxes_waiting)).update(image=new))
        if moved:
            delete_stored_files([old])
            logger.info("Photograph %s stored as %s", image_id, new)
            renamed.append(Renamed(image_id, old, new))
        else:
            delete_stored_files([new])
            left.append(old)
    return renamed, left
