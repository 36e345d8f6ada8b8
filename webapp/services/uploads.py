"""Taking smear photographs in: checking each file by its content, storing the good ones, queueing them.

A batch is judged file by file: one damaged photograph never sinks the others, and nothing is stored
for a file that fails. Every rejection carries a sentence a technologist can act on.
"""

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone
from PIL import Image, ImageOps, UnidentifiedImageError

from webapp.models import Cell, Sample, SmearImage
from webapp.queueing import queue_classifications

logger = logging.getLogger(__name__)

# Formats a microscope camera or a slide scanner writes; anything else is refused by content.
ACCEPTED_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP")
# Modes Pillow can turn into 8-bit RGB without losing the stain colours, and how to say so.
CONVERTIBLE_MODES = {
    "RGBA": "transparency removed (flattened on white)",
    "RGBa": "transparency removed (flattened on white)",
    "RGBX": "padding channel dropped",
    "CMYK": "converted from CMYK",
    "YCbCr": "converted from YCbCr",
    "LAB": "converted from Lab",
    "HSV": "converted from HSV",
    "P": "palette colours expanded",
    "PA": "palette colours expanded, transparency removed",
}
EXIF_ORIENTATION = 0x0112
# The values that turn or mirror a photograph; 1 is upright, anything else (0, 9, ...) is no
# orientation at all, and Pillow leaves such an image as it is.
EXIF_TURNED = range(2, 9)
GREYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageRejected(ValueError):
    """A file that cannot be stored as a smear photograph; the message is for the technologist."""


@dataclass
class CheckedImage:
    content: bytes
    extension: str
    width: int
    height: int
    conversion_note: str = ""
    checksum: str = ""


@dataclass
class RejectedFile:
    name: str
    reason: str


@dataclass
class UploadResult:
    sample: Sample | None = None
    stored: list = field(default_factory=list)
    rejected: list = field(default_factory=list)


def _megabytes(size):
    return f"{size / (1024 * 1024):.0f} MB"


def _read_upload(uploaded):
    size = getattr(uploaded, "size", None)
    if size == 0:
        raise ImageRejected("The file is empty.")
    if size is not None and size > settings.MAX_UPLOAD_BYTES:
        raise ImageRejected(
            f"The file is {_megabytes(size)}; the limit is {_megabytes(settings.MAX_UPLOAD_BYTES)}."
        )
    uploaded.seek(0)
    # Read one byte past the limit so a file whose declared size lies is still caught.
    data = uploaded.read(settings.MAX_UPLOAD_BYTES + 1)
    if not data:
        raise ImageRejected("The file is empty.")
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise ImageRejected(f"The file is larger than the {_megabytes(settings.MAX_UPLOAD_BYTES)} limit.")
    return data


def _open(data):
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected(
            "This is not an image Leukoscope can read (JPEG, PNG, TIFF, BMP or WebP expected)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(_too_many_pixels_message()) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageRejected("The file looks like an image but its header is damaged.") from None


def _too_many_pixels_message(width=None, height=None):
    limit = f"{settings.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
    if width and height:
        return f"The image is {width}x{height} pixels, more than the {limit} limit."
    return f"The image has more pixels than the {limit} limit."


def _decode(data):
    """The fully decoded image, after checking its size from the header alone."""
    with warnings.catch_warnings():
        # Pillow only warns between its own limit and twice it; any bomb must stop here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        probe = _open(data)
        width, height = probe.size
        if width * height > settings.MAX_IMAGE_PIXELS:
            raise ImageRejected(_too_many_pixels_message(width, height))
        if width < 32 or height < 32:
            raise ImageRejected(f"The image is only {width}x{height} pixels; a smear field is far larger.")
        try:
            probe.verify()
            image = _open(data)  # verify() leaves the image unusable; decode a fresh one
            image.load()
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(_too_many_pixels_message(width, height)) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError):
            raise ImageRejected(
                "The image is damaged or truncated (the upload may have been cut short)."
            ) from None
    return image


def _bits_per_channel_note(image):
    # Pillow reduces 48-bit RGB to 8 bits while decoding; the tile's raw mode still says so.
    tiles = getattr(image, "tile", None) or []
    for tile in tiles:
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return "16-bit channels reduced to 8-bit"
    return ""


def _has_colour(rgb_image):
    sample = rgb_image.copy()
    sample.thumbnail((256, 256))
    pixels = np.asarray(sample, dtype=np.int16)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    return float(np.percentile(spread, 99)) > 4


def check_image(uploaded):
    """Check one uploaded file by content and return what to store, or raise ImageRejected."""
    data = _read_upload(uploaded)
    image = _decode(data)
    source_format = image.format or "image"
    notes = [note for note in (_bits_per_channel_note(_open(data)),) if note]
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        # A multi-page TIFF or an animation: the worker reads the first frame, so store only that.
        notes.append(f"first of {frames} frames kept")

    if image.mode in GREYSCALE_MODES:
        # The stain colours are what tells a lymphocyte from a neutrophil; grey cannot be undone.
        raise ImageRejected(
            "This is a greyscale image. Leukoscope needs a colour photograph of the stained smear."
        )
    if image.getexif().get(EXIF_ORIENTATION, 1) in EXIF_TURNED:
        # Browsers show a photograph turned by its EXIF flag; the stored pixels must match what
        # staff see, or the cell outlines land in the wrong place.
        notes.append("rotated upright from its EXIF orientation")
        image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", rgba.size, (255, 255, 255))
        flattened.paste(rgba, mask=rgba.getchannel("A"))
        notes.append(CONVERTIBLE_MODES.get(image.mode, "transparency removed"))
        image = flattened
    elif image.mode != "RGB":
        if image.mode not in CONVERTIBLE_MODES:
            raise ImageRejected(f"Leukoscope cannot use images in the {image.mode} colour mode.")
        notes.append(CONVERTIBLE_MODES[image.mode])
        image = image.convert("RGB")
    if not _has_colour(image):
        raise ImageRejected(
            "This image holds no colour. Leukoscope needs a colour photograph of the stained smear."
        )

    width, height = image.size
    if not notes and source_format in ("JPEG", "PNG"):
        # Keep the photograph byte for byte when nothing had to change.
        return CheckedImage(data, ".jpg" if source_format == "JPEG" else ".png", width, height)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    note = f"{source_format} stored as 8-bit RGB PNG: " + ", ".join(notes or ["re-encoded"])
    return CheckedImage(buffer.getvalue(), ".png", width, height, note[:255])


def _stored_name(original_name, extension):
    stem = PurePath(original_name or "smear").stem[:80] or "smear"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return f"{safe}{extension}"


def sample_version_id(sample):
    """The version that classified every classified photograph of the sample, if they share one.

    Photographs added to a sample later, or tried again, are classified by it even after another
    version is activated: one differential count comes from one network. An administrator moves
    a whole sample to the active version by re-classifying it; while that runs, or where it
    failed, a photograph counts with the version it was queued for.
    """
    awaiting = Q(status__in=(SmearImage.Status.QUEUED, SmearImage.Status.PROCESSING,
                             SmearImage.Status.FAILED), requested_version__isnull=False)
    versions = list(
        sample.images.annotate(
            headed_for=Case(When(awaiting, then=F("requested_version")), default=F("model_version"))
        ).exclude(headed_for=None).order_by().values_list("headed_for", flat=True).distinct()[:2]
    )
    return versions[0] if len(versions) == 1 else None


def check_files(files, known_checksums=None):
    """Split uploaded files into (name, CheckedImage) pairs and RejectedFile entries.

    `known_checksums` maps the SHA-256 of photographs the sample already holds to their names.
    """
    accepted, rejected = [], []
    seen = dict(known_checksums or {})
    for uploaded in files:
        name = getattr(uploaded, "name", "") or "unnamed file"
        try:
            checked = check_image(uploaded)
        except ImageRejected as exc:
            rejected.append(RejectedFile(name, str(exc)))
            continue
        except MemoryError:
            rejected.append(RejectedFile(name, "The image is too large to open."))
            continue
        checked.checksum = hashlib.sha256(checked.content).hexdigest()
        if checked.checksum in seen:
            # Its cells would be counted twice and skew the differential count.
            rejected.append(RejectedFile(
                name, f"This is the same photograph as {seen[checked.checksum]}; it is counted once."
            ))
            continue
        seen[checked.checksum] = name
        accepted.append((name, checked))
    return accepted, rejected


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
                    conversion_note=checked.conversion_note,
                    requested_version_id=model_version_id,
                )
                image.image.save(_stored_name(name, checked.extension), ContentFile(checked.content),
                                 save=False)
                written.append(image.image.name)
                image.save()
                stored.append(image)
            queue_classifications([image.pk for image in stored])
    except Exception:
        # The rows rolled back; the files did not. Leave no orphan photograph behind.
        for name in written:
            SmearImage._meta.get_field("image").storage.delete(name)
        raise
    return stored


def create_sample_with_images(accession_number, note, files, user=None):
    """One sample and its photographs. Nothing is stored when no file is usable."""
    accepted, rejected = check_files(files)
    result = UploadResult(rejected=rejected)
    if not accepted:
        return result
    with transaction.atomic():
        sample = Sample.objects.create(
            accession_number=accession_number.strip(), note=note.strip(), created_by=user
        )
        result.stored = add_images(sample, accepted)
    result.sample = sample
    logger.info("Sample %s: %d image(s) queued, %d rejected", sample.pk, len(result.stored), len(rejected))
    return result


def add_images_to_sample(sample, files):
    known = dict(sample.images.values_list("checksum", "original_filename"))
    accepted, rejected = check_files(files, known)
    stored = add_images(sample, accepted, sample_version_id(sample)) if accepted else []
    return UploadResult(sample=sample, stored=stored, rejected=rejected)


def requeue_image(image):
    """Queue an image again, after a failure or when it waited too long ("Try again"), with the
    version its sample's photographs share."""
    version_id = sample_version_id(image.sample)
    SmearImage.objects.filter(pk=image.pk).update(
        status=SmearImage.Status.QUEUED, error="", requested_version_id=version_id,
        queued_at=timezone.now(), sent_at=None,
    )
    queue_classifications([image.pk])


def _cell_file_names(cells):
    names = []
    for row in cells.values_list("crop", "window", "heatmap"):
        names.extend(name for name in row if name)
    return names


def sample_file_names(sample):
    """Every stored file of a sample: photographs, and each cell's crop, window and heatmap."""
    names = list(sample.images.exclude(image="").values_list("image", flat=True))
    return names + _cell_file_names(Cell.objects.filter(image__sample=sample))


def image_file_names(image):
    """Every stored file of one photograph: itself, and each of its cells' crop, window and heatmap."""
    return ([image.image.name] if image.image else []) + _cell_file_names(image.cells.all())


def _delete_with_files(record, file_names):
    """Delete a record (its rows cascade) and, once that is committed, its files."""
    storage = SmearImage._meta.get_field("image").storage

    def delete_files():
        for name in file_names:
            storage.delete(name)

    record.delete()
    # Files go only after the rows are gone for good; a rolled-back delete keeps both.
    transaction.on_commit(delete_files)


def _who(user):
    return user.get_username() if user else "an unnamed caller"


def may_delete_sample(user, sample):
    """Deleting a specimen's photographs and results is for the person who entered it, or staff."""
    return user.is_staff or (sample.created_by_id is not None and sample.created_by_id == user.pk)


def delete_sample(sample, user=None):
    """Delete a sample, its records and, once that is committed, its files."""
    sample_id, accession = sample.pk, sample.accession_number
    with transaction.atomic():
        image_count = sample.images.count()
        names = sample_file_names(sample)
        _delete_with_files(sample, names)
    logger.info("Sample %s (accession %s) with %d image(s) deleted by %s; %d file(s) removed",
                sample_id, accession, image_count, _who(user), len(names))


def delete_image(image, user=None):
    """Delete one photograph of a sample, its cells and reviews and, once committed, its files."""
    image_id, name, sample_id = image.pk, image.original_filename, image.sample_id
    with transaction.atomic():
        names = image_file_names(image)
        _delete_with_files(image, names)
    logger.info("Image %s (%s) of sample %s deleted by %s; %d file(s) removed",
                image_id, name, sample_id, _who(user), len(names))
