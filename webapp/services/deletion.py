"""Deleting a sample or one photograph: its records, its cells' reviews, and every stored file.

The rows go in a transaction; the files only once it is committed, so a rolled-back delete keeps
both. Each deletion is logged with who asked for it.
"""

import logging
from collections import Counter

from django.db import transaction

from webapp import audit
from webapp.cell_types import type_order
from webapp.counting import type_label
from webapp.models import Cell, Sample, SmearImage
from webapp.permissions import UPLOAD
from webapp.selectors import current_cells, image_file_names, sample_file_names
from webapp.services.locking import DeletedMeanwhile, SampleLocked, ensure_editable
from webapp.services.storage import delete_stored_files
from webapp.wording import count_of, isolated

logger = logging.getLogger(__name__)


def _delete_with_files(record, file_names):
    """Delete a record (its rows cascade) and, once that is committed, its files.

    The caller has written the deletion's one audit row: the cascade writes none (a sample's
    hundreds of cells would each add one), and the rows already written stay.
    """
    with audit.disable_auditlog():
        record.delete()
    # Files go only after the rows are gone for good; a rolled-back delete keeps both.
    transaction.on_commit(lambda: delete_stored_files(file_names))


def _who(user):
    return user.get_username() if user else "an unnamed caller"


# The admin role's (migration 0022), as the Django admin asks of whoever deletes a sample there.
DELETE_ANY_SAMPLE = "webapp.delete_sample"


def may_delete_sample(user, sample):
    """Deleting a specimen's photographs and results is for the person who entered it, while their
    account still holds a lab role (entering samples is the role's, and ends with it), or an
    administrator (the admin role). Staff status alone is not enough: it opens the Django admin and
    /healthz, and an account with it and no role changes nothing."""
    return user.has_perm(DELETE_ANY_SAMPLE) or (entered_by(user, sample) and user.has_perm(UPLOAD))


def entered_by(user, sample):
    """Whether ``user`` entered the sample."""
    return sample.created_by_id is not None and sample.created_by_id == user.pk


def ensure_never_released(sample):
    """Raise SampleLocked if the sample's result was ever signed: the lab's information system may
    have filed it (the API and FHIR serve it from then on), so the result stays on record. Reopened,
    it is corrected and signed again, and goes out as an amended result; one of its photographs may
    still be deleted on the way."""
    times = Sample.objects.filter(pk=sample.pk).values_list("times_signed", flat=True).first()
    if times:
        raise SampleLocked(
            f"Sample {sample.accession_number} cannot be deleted: its result was released (signed "
            f"{count_of(times, 'time')}), and a released result stays on record. Correct it instead: "
            "signed again, it is sent as an amended result.")


NOTHING_LEFT = "there is nothing left to delete."


def delete_sample(sample, user=None):
    """Delete a sample, its records and, once that is committed, its files; refused (SampleLocked)
    while it is signed, or once it has ever been (ensure_never_released), and (DeletedMeanwhile)
    where another deletion took it since the caller read it."""
    sample_id, accession = sample.pk, sample.accession_number
    with transaction.atomic():
        # Under the sample's row lock, as sign_sample takes it: no signature lands in between. Gone
        # once that lock was had (two pages open on it), refused: deleting nothing would say it was
        # done, and write a second deletion with 0 photographs into its trail.
        ensure_editable(sample, "deleting the sample", gone=NOTHING_LEFT)
        ensure_never_released(sample)
        # Its photographs' rows too, before their cells are read: a worker storing a photograph's
        # cells holds that row until they are committed (services.classification, added_cells).
        # Read before then, the new cells' pictures were left behind, and on PostgreSQL the
        # photograph was deleted from under them: an IntegrityError to the person deleting.
        list(SmearImage.objects.select_for_update().filter(sample=sample).values_list("pk", flat=True))
        image_count = sample.images.count()
        cell_count = Cell.objects.filter(image__sample=sample).count()
        names = sample_file_names(sample)
        audit.record(sample, "delete", {"accession_number": (accession, None),
                                        "photographs": (image_count, 0), "cells": (cell_count, 0)},
                     actor=user, note=f"deleted with {count_of(image_count, 'photograph')} and "
                                      f"{count_of(cell_count, 'cell')}")
        _delete_with_files(sample, names)
    # By id: the accession number, like the photographs' names, stays in the audit trail alone.
    logger.info("Sample %s with %d image(s) deleted by %s; %d file(s) removed",
                sample_id, image_count, _who(user), len(names))


class PhotographBusy(ValueError):
    """The photograph is queued or being classified: deleting it would pull it from under the
    worker. The message is for the person who asked."""


def _counted_types(image):
    """The calls the photograph held, as its sample's formula read them ("Neutrophil 2, Blast 1"):
    a reopened result may lose a photograph, and the trail must say which calls went with it."""
    types = Counter(current_cells(image=image).values_list("cell_type", flat=True))
    return ", ".join(f"{type_label(name)} {types[name]}" for name in sorted(types, key=type_order))


def delete_image(image, user=None, finished_only=False):
    """Delete one photograph of a sample, its cells and reviews and, once committed, its files;
    refused (SampleLocked) while the sample is signed, with ``finished_only`` (PhotographBusy)
    unless the photograph is classified or failed, and (DeletedMeanwhile) where another deletion
    took it, or its sample, since the caller read it."""
    image_id, name, sample_id = image.pk, image.original_filename, image.sample_id
    with transaction.atomic():
        # Checked under the sample's row lock, as sign_sample takes it: a signature cannot land
        # between this check and the deletion, which would change a signed result.
        ensure_editable(image.sample, "deleting a photograph", gone=NOTHING_LEFT)
        row = (SmearImage.objects.select_for_update().filter(pk=image_id)
               .values_list("status", "image").first())
        if row is None:  # a second click, another tab: said, not reported as this deletion's work
            raise DeletedMeanwhile(f"{isolated(name)} was deleted meanwhile: {NOTHING_LEFT}")
        # The stored name as it is now, not as the caller read it: manage.py stored_names may
        # have moved the file since (under the sample's lock, which this holds from here on).
        status, image.image.name = row
        if finished_only and status not in (SmearImage.Status.DONE, SmearImage.Status.FAILED):
            state = "being classified" if status == SmearImage.Status.PROCESSING else "queued"
            raise PhotographBusy(f"{isolated(name)} was not deleted: it is still {state}. Delete it once it "
                                 "is classified.")
        names = image_file_names(image)
        cell_count = image.cells.count()
        recorded = {"original_filename": (name, None), "cells": (cell_count, 0)}
        if types := _counted_types(image):
            recorded["cell_types"] = (types, None)
        audit.record(image, "delete", recorded, actor=user,
                     note=f"photograph {name} deleted with {count_of(cell_count, 'cell')}")
        _delete_with_files(image, names)
    logger.info("Image %s of sample %s deleted by %s; %d file(s) removed",
                image_id, sample_id, _who(user), len(names))
