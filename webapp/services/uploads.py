"""Taking smear photographs in: storing the files that pass the checks of webapp.intake, under a new
sample or an existing one, and queueing them.

A batch is judged file by file: one damaged photograph never sinks the others, and nothing is stored
for a file that fails. Every rejection carries a sentence a technologist can act on.
"""

import hashlib
import logging
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from webapp import audit
from webapp.intake import (
    IN_THE_SAMPLE,
    HeldPhotographs,
    check_files,
    fingerprint_bands,
    refused_as_duplicate,
)
from webapp.models import FingerprintBand, Sample, SmearImage
from webapp.queueing import queue_classifications
from webapp.selectors import (
    active_version_id,
    photographs_held_elsewhere,
    sample_version_id,
    samples_with_accession,
)
from webapp.services.locking import DeletedMeanwhile, ensure_editable
from webapp.services.storage import delete_stored_files, save_whole
from webapp.wording import isolated

logger = logging.getLogger(__name__)


class DuplicateAccession(ValueError):
    """Another sample already holds the accession number; ``existing`` is that sample."""

    def __init__(self, existing):
        super().__init__(f"Sample {existing.accession_number} already exists.")
        self.existing = existing


def _hold_accession(accession):
    """Keep any other upload of this accession number waiting until this transaction ends, so that
    two at once cannot both find it free. PostgreSQL: an advisory lock on the number's hash;
    SQLite takes its write lock when the transaction begins (settings: "IMMEDIATE")."""
    if connection.vendor != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(accession.strip().lower().encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


class StorageRefused(RuntimeError):
    """The media storage refused a photograph (a folder made read-only, a full disk, a mount gone):
    nothing of the upload was kept, and the message says so."""


@dataclass
class UploadResult:
    sample: Sample | None = None
    stored: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    # (file name, accession numbers): stored photographs another sample holds too. Not refused
    # (a teaching slide may be entered twice), but a field in two patients' samples is more often
    # a mix-up, which the person uploading should hear of at once.
    also_elsewhere: list = field(default_factory=list)
    # (file name, pages, the page kept, from 0): stored multi-page files, of which one page was kept.
    pages_left_out: list = field(default_factory=list)


def _stored_name(sample, extension):
    """A storage name for an upload: its sample's id, never the uploaded file's name. Microscope
    software writes the patient's name or record number into that, and the stored name travels: in
    the folder, in every /media/ address the pages and the API's answers link (and the access logs
    keep), and as the name a browser saves the photograph under. The name as sent is the record's
    ``original_filename``; save_whole adds a random tag."""
    return f"sample{sample.pk}{extension}"


def add_images(sample, accepted, model_version_id=None):
    """Store checked images under a sample and queue each for classification once committed
    (by the given version; None: the active one)."""
    stored, written = [], []
    try:
        with transaction.atomic():
            for name, checked in accepted:
                image = SmearImage(
                    sample=sample,
                    original_filename=name[:255],
                    width=checked.width,
                    height=checked.height,
                    file_size=len(checked.content),
                    checksum=checked.checksum or hashlib.sha256(checked.content).hexdigest(),
                    fingerprint=checked.fingerprint,
                    turned_fingerprints=list(checked.turned),
                    conversion_note=checked.conversion_note,
                    requested_version_id=model_version_id,
                )
                try:
                    save_whole(image.image, _stored_name(sample, checked.extension), checked.content)
                except OSError as exc:
                    raise StorageRefused(
                        f"The photographs were not stored: this server cannot write to its storage "
                        f"folder (LEUKOSCOPE_MEDIA_ROOT: {exc.strerror or exc}). Nothing was kept. Tell "
                        "the administrator, and upload them again once it is mended.") from exc
                written.append(image.image.name)
                image.save()
                stored.append(image)
            index_fingerprints(stored)
            queue_classifications([image.pk for image in stored])
    except Exception:
        # The rows rolled back; the files did not. Leave no orphan photograph behind.
        delete_stored_files(written)
        raise
    return stored


def index_fingerprints(images):
    """Store the bands of stored photographs' fingerprints, by which photographs_held_elsewhere
    finds their copies in other samples."""
    FingerprintBand.objects.bulk_create(
        (FingerprintBand(image=image, key=key)
         for image in images if image.fingerprint for key in fingerprint_bands(image.fingerprint)),
        batch_size=5000,
    )


def create_sample_with_images(accession_number, note, files, user=None,
                              photographs=Sample.Photographs.SMEAR_FIELDS):
    """One sample and its photographs (``photographs``: what they show, Sample.Photographs). Nothing
    is stored when no file is usable; DuplicateAccession where another sample holds the number, also
    one stored while these files were read."""
    files = list(files)
    accepted, rejected = check_files(files)
    result = UploadResult(rejected=rejected)
    if not accepted:
        _log_refusals(rejected, len(files))
        return result
    with transaction.atomic():
        _hold_accession(accession_number)
        existing = samples_with_accession(accession_number).order_by("created_at").first()
        if existing is not None:
            raise DuplicateAccession(existing)
        sample = Sample.objects.create(
            accession_number=accession_number.strip(), note=note.strip(), photographs=photographs,
            created_by=user,
        )
        # Each photograph by the version active now, not by whichever is active when the worker
        # reaches it: one activated meanwhile split a 50-photograph sample 34/16 between two. (On
        # PostgreSQL a "re-classify all" committed while this upload is stored does not see it:
        # this sample stays with the version it was uploaded under, whole.)
        result.stored = add_images(sample, accepted, active_version_id())
        result.pages_left_out = _pages_left_out(accepted)
    result.sample = sample
    result.also_elsewhere = _also_elsewhere(sample, result.stored)
    logger.info("Sample %s: %d image(s) queued, %d rejected", sample.pk, len(result.stored), len(rejected))
    _log_refusals(rejected, len(files), sample)
    return result


NOTHING_STORED = "nothing was stored."
NOTHING_QUEUED = "nothing was queued."


def add_images_to_sample(sample, files):
    """More photographs for a sample; refused (SampleLocked) while it is signed, DeletedMeanwhile
    once it is gone."""
    # Before reading the files: refused at once.
    ensure_editable(sample, "adding photographs", gone=NOTHING_STORED)
    known = _known_photographs(sample)
    files = list(files)
    accepted, rejected = check_files(files, known.values())
    stored = []
    if accepted:
        refused_places = {item.place for item in rejected}
        accepted_places = [place for place in range(1, len(files) + 1) if place not in refused_places]
        with transaction.atomic():
            # Again, the sample locked: it may have been signed, or been given the same photograph
            # by another upload, while the files were read. Only photographs stored since are
            # compared again: the write lock is held meanwhile.
            # Or deleted meanwhile: the photographs' rows would fail at the commit, their files
            # written by then left behind.
            ensure_editable(sample, "adding photographs", gone=NOTHING_STORED)
            arrived = set(sample.images.values_list("pk", flat=True)) - known.keys()
            held = HeldPhotographs(_known_photographs(sample, arrived).values() if arrived else ())
            found = [(name, held.holder(checked)) for name, checked in accepted]
            rejected += [refused_as_duplicate(name, same, IN_THE_SAMPLE, place)
                         for (name, same), place in zip(found, accepted_places, strict=True) if same]
            accepted = [pair for pair, (_, same) in zip(accepted, found, strict=True) if not same]
            stored = add_images(sample, accepted, sample_version_id(sample))
    _log_refusals(rejected, len(files), sample)
    return UploadResult(sample=sample, stored=stored, rejected=rejected,
                        also_elsewhere=_also_elsewhere(sample, stored),
                        pages_left_out=_pages_left_out(accepted) if stored else [])


def _log_refusals(rejected, count, sample=None):
    """A line for each file refused, saying why as the person uploading was told, by the file's place
    in the upload (of ``count``), never its name, which may carry the patient's; one line for those
    past the upload's budget together, which can be most of a large upload."""
    upload = f"Sample {sample.pk}: upload" if sample is not None else "Upload"
    refused = sorted(rejected, key=lambda item: item.place)
    for item in refused:
        if not item.over_budget:
            logger.info("%s file %d of %d refused: %s", upload, item.place, count, item.log_reason)
    over_budget = [item for item in refused if item.over_budget]
    if over_budget:
        first, last = over_budget[0].place, over_budget[-1].place
        which = f"file {first}" if first == last else f"files {first} to {last}"
        logger.info("%s %s of %d refused: %s", upload, which, count, over_budget[0].log_reason)


def _pages_left_out(accepted):
    return [(name, checked.pages, checked.page_kept) for name, checked in accepted if checked.pages > 1]


def _known_photographs(sample, ids=None):
    """{id: (checksum, fingerprint, file name)} of the sample's photographs (of those ``ids``)."""
    rows = sample.images.all() if ids is None else sample.images.filter(pk__in=ids)
    return {pk: photograph for pk, *photograph in
            rows.values_list("pk", "checksum", "fingerprint", "original_filename")}


def _also_elsewhere(sample, stored):
    """[(file name, [accession numbers])] of the stored photographs other samples hold too."""
    held = photographs_held_elsewhere(sample, [image.pk for image in stored])
    return [(image.original_filename, held[image.pk]) for image in stored if image.pk in held]


@transaction.atomic
def requeue_image(image):
    """Queue an image again, after a failure or when it waited too long ("Try again"), with the
    version its sample's photographs share."""
    ensure_editable(image.sample, "classifying a photograph again", gone=NOTHING_QUEUED)
    # Deleted meanwhile, on its own: nothing to queue, and no trail to add to.
    if not SmearImage.objects.filter(pk=image.pk).exists():
        raise DeletedMeanwhile(f"{isolated(image.original_filename)} was deleted meanwhile: {NOTHING_QUEUED}")
    version_id = sample_version_id(image.sample)
    audit.record(image, "update", {"status": (image.status, SmearImage.Status.QUEUED)},
                 note="queued again")
    SmearImage.objects.filter(pk=image.pk).update(
        status=SmearImage.Status.QUEUED, error="", requested_version_id=version_id,
        queued_at=timezone.now(), sent_at=None,
    )
    queue_classifications([image.pk])
