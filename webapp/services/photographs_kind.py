"""Changing what a sample's photographs are said to show (Sample.photographs), after the upload.

A technologist who uploaded an analyser's cell pictures as fields of a smear (the default) sees
neighbours' edges counted and cut cells left out; one who uploaded fields as single cells sees one
cell a field. The photographs are classified again, read the other way, by the version the sample's
photographs share, so the differential stays one network's.

Read the other way, a photograph's cells are not the same cells: a field's cells beside its middle
one are not a one-cell photograph's. So the change is refused once a person has worked on the
sample's cells (a label, a box drawn by hand, an edge cell counted in): classifying again could
drop that work. Uploading the photographs again as a new sample keeps both.
"""

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp import audit
from webapp.models import Sample, SmearImage
from webapp.queueing import queue_classifications
from webapp.selectors import current_cells, sample_version_id
from webapp.services.locking import ensure_editable
from webapp.wording import count_of

ACTION = "Changing what the photographs show"


class PhotographsKindKept(ValueError):
    """The change cannot be made; the message says why, for the person who asked."""


def why_kind_is_kept(sample):
    """Why the photographs cannot be read another way now that people worked on the sample's cells,
    in words; "" where they can (a signed sample aside: locking says that)."""
    worked_on = current_cells(sample).filter(
        Q(corrected_type__gt="") | Q(added_by_hand=True) | Q(count_partial=True)).count()
    if not worked_on:
        return ""
    return (f"{count_of(worked_on, 'cell')} of this sample {'was' if worked_on == 1 else 'were'} already "
            "labelled, drawn or counted in by a person. Read the other way, its photographs would give "
            "other cells, and that work could be lost: upload the photographs again as a new sample "
            "instead.")


def read_photographs_as(sample, photographs, user=None):
    """Say the sample's photographs show ``photographs`` (a Sample.Photographs value) and queue
    every one of them to be classified again so; returns how many were queued (0 where they were
    already read so). Raises SampleLocked for a signed sample, PhotographsKindKept where people
    have worked on its cells, DeletedMeanwhile for a sample gone."""
    if photographs not in Sample.Photographs.values:
        raise PhotographsKindKept(f"{photographs!r} is not a kind of photograph: choose one of "
                                  f"{', '.join(Sample.Photographs.values)}.")
    with transaction.atomic():
        ensure_editable(sample, ACTION)  # locks the sample's row until the change is written
        current = Sample.objects.filter(pk=sample.pk).values_list("photographs", flat=True).get()
        if current == photographs:
            return 0
        refusal = why_kind_is_kept(sample)
        if refusal:
            raise PhotographsKindKept(refusal)
        version_id = sample_version_id(sample)
        # Locked by id, as every writer of several photographs takes them (services.training.reclassify).
        image_ids = list(sample.images.select_for_update().order_by("pk").values_list("pk", flat=True))
        Sample.objects.filter(pk=sample.pk).update(photographs=photographs)
        SmearImage.objects.filter(pk__in=image_ids).update(
            status=SmearImage.Status.QUEUED, error="", requested_version_id=version_id,
            queued_at=timezone.now(), sent_at=None,
        )
        sample.photographs = photographs
        audit.record(sample, "update", {"photographs": (current, photographs)}, actor=user,
                     note=f"photographs read as {sample.photographs_in_short}: "
                          f"{count_of(len(image_ids), 'photograph')} queued again")
        queue_classifications(image_ids)
    return len(image_ids)
