"""Checking an uploaded file before it is stored as a smear photograph: its content (decoded by
Pillow, never trusted by its name), its size and pixel count, its colour mode; what can be turned
into 8-bit RGB without losing the stain colours is converted, greyscale is refused.

Pure file checks: nothing here touches the database or the storage.
"""

import hashlib
import io
import logging
import math
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from PIL import Image, ImageOps, UnidentifiedImageError

from classifier import quality, rendering
from webapp.wording import DIRECTION_CONTROLS, megabytes

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
# Formats stored as they were sent when nothing in them has to change.
KEPT_AS_SENT = ("JPEG", "PNG")
EXIF_ORIENTATION = 0x0112
TIFF_ICC_PROFILE = 34675  # the tag of a TIFF page's colour profile
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
    # SHA-256 that identifies the file (check_image): of the file as sent, where it is kept as it
    # came, else of the PNG stored.
    checksum: str = ""
    fingerprint: str = ""  # fingerprint(): the same field's photograph, however it was encoded
    # oriented_fingerprints(): the field's seven other orientations, to find a turned copy
    turned: tuple = ()
    # A multi-page file (TIFF) keeps one page: how many it held, and which was kept (from 0).
    pages: int = 1
    page_kept: int = 0


@dataclass
class RejectedFile:
    name: str
    reason: str
    over_budget: bool = False  # refused only for the upload's pixels or bytes together (check_files)
    place: int = 0  # the file's place in its upload, from 1: how the site's log names it
    # The reason as the site's log gives it: ``reason``, less any file's name, which may carry the
    # patient's (a duplicate's reason names the photograph it copies).
    log_reason: str = ""

    def __post_init__(self):
        self.log_reason = self.log_reason or self.reason


def _read_upload(uploaded):
    size = getattr(uploaded, "size", None)
    if size == 0:
        raise ImageRejected("The file is empty.")
    if size is not None and size > settings.MAX_UPLOAD_BYTES:
        raise ImageRejected(
            f"The file is {megabytes(size, math.ceil)}; "
            f"the limit is {megabytes(settings.MAX_UPLOAD_BYTES)}."
        )
    uploaded.seek(0)
    # Read one byte past the limit so a file whose declared size lies is still caught.
    data = uploaded.read(settings.MAX_UPLOAD_BYTES + 1)
    if not data:
        raise ImageRejected("The file is empty.")
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise ImageRejected(f"The file is larger than the {megabytes(settings.MAX_UPLOAD_BYTES)} limit.")
    return data


# HEIF's file-type box (ISO BMFF "ftyp" and its brand): a phone's default photograph format, common
# where a phone is held to the microscope's eyepiece. Pillow cannot read it without a plug-in.
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def _is_heif(data):
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


# The first bytes of the formats accepted: a file that starts as one but will not open is damaged,
# not of another kind.
FORMAT_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
                     (b"MM\x00*", "TIFF"))
# Pillow's ways of saying that a file's data is not what its header promised: within the few lines
# where Pillow alone reads the file, all of them; around the whole check, those a reader raises
# (a TypeError or IndexError there is more likely this code's own fault, and is not hidden).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
PILLOW_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError)
DAMAGED = "The image is damaged or truncated (the upload may have been cut short)."


def _signature_format(data):
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM" and data[6:10] == b"\x00" * 4:  # "BM", the file's size, four reserved zeros
        return "BMP"
    return next((name for signature, name in FORMAT_SIGNATURES if data.startswith(signature)), None)


def _unreadable(data):
    """Why a file that will not open is refused: damaged, where it starts as one of the formats
    accepted; else not an image Leukoscope can read (a text that happens to start "BM" included)."""
    if kind := _signature_format(data):
        return f"The file starts as a {kind} image, but its header is damaged."
    return "This is not an image Leukoscope can read (JPEG, PNG, TIFF, BMP or WebP expected)."


def _open(data):
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        if _is_heif(data):
            raise ImageRejected(
                "This is a HEIC/HEIF photograph (a phone's default format), which Leukoscope cannot "
                "read: set the camera or phone to save JPEG, or export it as JPEG or PNG."
            ) from None
        raise ImageRejected(_unreadable(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(_too_many_pixels_message()) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageRejected(_unreadable(data)) from None


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
        except DECODE_ERRORS:
            raise ImageRejected(DAMAGED) from None
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


# What a camera, a scanner's software or an editor may write beside the pixels: free text, where
# some microscope software puts a patient's name or number, the time, the place (GPS) and the
# device. Every other segment or chunk stays, the colour profile (JPEG APP2, PNG iCCP) and Adobe's
# colour transform (APP14) among them: without them the pixels would read as other colours.
# A JPEG's APP1 (Exif, XMP), APP13 (IPTC) and comments; an EXIF orientation other than upright
# never reaches here (the photograph is then turned and stored as a PNG).
_JPEG_METADATA = {0xE1, 0xED, 0xFE}
_PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}


def without_metadata(data, source_format):
    """``data`` (a JPEG or PNG that decoded) without its metadata segments or chunks, its image data
    byte for byte; ``data`` itself where its structure is not the plain one walked here."""
    try:
        return _jpeg_without_metadata(data) if source_format == "JPEG" else _png_without_metadata(data)
    except (IndexError, ValueError):
        return data


def _jpeg_without_metadata(data):
    kept, at = [data[:2]], 2  # SOI
    while True:
        if data[at] != 0xFF:
            # Stray bytes between segments: libjpeg skips them to the next marker (with a warning)
            # and the photograph decodes, so they are skipped here too. Raising kept the whole file,
            # its EXIF with it (index: ValueError where no marker follows).
            at = data.index(0xFF, at)
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data and everything after it stay
            kept.append(data[at:])
            return b"".join(kept)
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if length < 2 or at + 2 + length > len(data):
            raise ValueError("bad segment length")
        if marker not in _JPEG_METADATA:
            kept.append(data[at:at + 2 + length])
        at += 2 + length


def _png_without_metadata(data):
    return _png_without_chunks(data, _PNG_METADATA)


def _png_without_chunks(data, kinds):
    kept, at = [data[:8]], 8  # signature
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        end = at + 12 + length
        if end > len(data):
            raise ValueError("chunk past the end")
        if kind not in kinds:
            kept.append(data[at:end])
        at = end
        if kind == b"IEND":
            return b"".join(kept)
    raise ValueError("no IEND")


def _with_readable_profile(data):
    """(data, note): a PNG whose colour profile Pillow will not read (over 1 MB once decompressed,
    or compressed by an unknown method) without that profile, and a note saying so. Pillow refuses
    the whole file for it, and it was refused as damaged, though its pixels decode (OpenCV and
    browsers show them); a JPEG, TIFF or WebP with such a profile is read without it."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data, ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _decode's to refuse
        try:
            Image.open(io.BytesIO(data), formats=("PNG",))
            return data, ""
        except Exception:  # refused, perhaps for its profile alone
            pass
        try:
            without = _png_without_chunks(data, {b"iCCP"})
            if without != data:
                Image.open(io.BytesIO(without), formats=("PNG",))
                return without, "its colour profile left out, unreadable"
        except Exception:  # damaged elsewhere too: _decode names the fault of the file as sent
            pass
    return data, ""


def check_image(uploaded):
    """Check one uploaded file by content and return what to store, or raise ImageRejected."""
    data, profile_note = _with_readable_profile(_read_upload(uploaded))
    image = _decode(data)
    source_format = image.format or "image"
    notes = [note for note in (_bits_per_channel_note(_open(data)), profile_note) if note]
    pages, page_kept = _keep_one_page(image)
    if pages > 1:
        notes.append(f"page {page_kept + 1} of {pages} kept, the largest" if page_kept
                     else f"first of {pages} frames kept")

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
    # A palette image may mark a colour transparent ("transparency" in its info): flattened on
    # white like any other transparency, not shown in whatever colour the palette holds there.
    sent_mode = image.mode
    transparent_palette = sent_mode == "P" and "transparency" in image.info
    if image.info.get("icc_profile") and (notes or source_format not in KEPT_AS_SENT or image.mode != "RGB"):
        # Stored again as a PNG without the camera's colour profile (Display P3, Adobe RGB): its
        # colours go in as sRGB, which is what a file without a profile is read as. The picture
        # comes back in RGB or RGBA: what it was converted from is said below.
        in_srgb = rendering.in_srgb(image)
        if in_srgb is not image:
            notes.append("colours brought to sRGB from its colour profile")
            image = in_srgb
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or transparent_palette:
        notes.append(CONVERTIBLE_MODES["PA" if transparent_palette else sent_mode]
                     if transparent_palette or sent_mode in CONVERTIBLE_MODES else "transparency removed")
        image = rendering.flattened_on_white(image)
    elif image.mode != "RGB":
        if image.mode not in CONVERTIBLE_MODES:
            raise ImageRejected(f"Leukoscope cannot use images in the {image.mode} colour mode.")
        notes.append(CONVERTIBLE_MODES[image.mode])
        image = image.convert("RGB")
    elif sent_mode != "RGB":  # converted as its colours were read through its profile
        notes.append(CONVERTIBLE_MODES.get(sent_mode, f"converted from {sent_mode}"))
    # Training's check (classifier.quality), so that a photograph near the threshold gets one verdict.
    if not quality.photograph_shows_colour(np.asarray(image)):
        raise ImageRejected(
            "This image holds no colour. Leukoscope needs a colour photograph of the stained smear."
        )

    width, height = image.size
    pixels, turned = oriented_fingerprints(image)
    if not notes and source_format in KEPT_AS_SENT:
        # Keep the photograph as it came when nothing had to change, its pixels untouched, but
        # without the text a camera or its software wrote beside them (see without_metadata). Its
        # checksum stays that of the file sent: a copy of it is found again, and a TEST file of a
        # training source is known by it (webapp.services.training).
        kept = without_metadata(data, source_format)
        return CheckedImage(kept, ".jpg" if source_format == "JPEG" else ".png", width, height,
                            checksum=hashlib.sha256(data).hexdigest(),
                            fingerprint=pixels, turned=turned)  # no note: a single page
    buffer = io.BytesIO()
    # Without the profile the file came with: its pixels are sRGB now, or read as they were where
    # the profile did not fit them (an RGB profile on CMYK, or a damaged one); carried over, it was
    # applied to them by every later reading of the stored file.
    image.save(buffer, format="PNG", optimize=False, compress_level=3, icc_profile=None)
    note = f"{source_format} stored as 8-bit RGB PNG: " + ", ".join(notes or ["re-encoded"])
    stored = buffer.getvalue()
    return CheckedImage(stored, ".png", width, height, note[:255],
                        checksum=hashlib.sha256(stored).hexdigest(), fingerprint=pixels, turned=turned,
                        pages=pages, page_kept=page_kept)


def _keep_one_page(image):
    """Of a multi-page TIFF, load the page stored: the largest (a TIFF may open with a thumbnail),
    and only one within the pixel limit; of an animation, its first frame. Returns (pages, the page
    kept, from 0). verify() read the first page alone: a later one may be cut short."""
    try:
        frames = getattr(image, "n_frames", 1)
        if frames <= 1:
            return 1, 0
        if image.format != "TIFF":
            # An animation (PNG, WebP): every frame shares its canvas, so the first, decoded
            # already, is as large as any; reaching a later APNG frame decodes each one before it,
            # and 25 MB of one-pixel frames on a 6000x6000 canvas took hours.
            return frames, 0
        page = _largest_page(image, frames)
        image.seek(page)
        image.load()
        if TIFF_ICC_PROFILE not in image.tag_v2:
            # Pillow keeps the profile of a page seen before in info: a page without one of its
            # own was read through another page's colours.
            image.info.pop("icc_profile", None)
    except DECODE_ERRORS:
        raise ImageRejected("The image is damaged or truncated: a page of it cannot be read (the upload "
                            "may have been cut short).") from None
    return frames, page


def _largest_page(image, frames):
    """The index of the largest page within the pixel limit (the first on a tie)."""
    sizes = []
    for page in range(frames):
        image.seek(page)
        pixels = image.size[0] * image.size[1]
        sizes.append(pixels if pixels <= settings.MAX_IMAGE_PIXELS else -1)
    return max(range(frames), key=lambda page: (sizes[page], -page))


# A 16x16 grid of brightness steps: a re-encoded, re-saved or EXIF-turned copy of a photograph
# differs in at most 6 of the 256 (JPEG quality 85, on PBC, blood-cell-images and whole smears),
# two different photographs in 39 or more (median 120). The threshold leaves some copies out: at
# JPEG quality 50 or half the size, PBC's copies (flat bright backgrounds, whose steps are noise)
# differ by up to 19-23 and pass as new photographs. Of the 100,988 pairs of blood-cell-images'
# augmented TEST copies of one original, one pair (15) reads as the same field.
FINGERPRINT_GRID = 16
SAME_FIELD_MAX_DIFFERENCE = 16
# A grid with fewer steps than this that change brightness at all says too little to match on: a
# blank frame, or a field so overexposed that most of it is clipped white, has next to no rises,
# and any two such photographs "agree" on the steps where neither rises (an audit saw two
# overexposed fields refused as copies of a blank one). Such a photograph is matched by its
# checksum alone. Steps that change, of 256: real fields (40 BCCD smears, 60 PBC and 60
# blood-cell-images TEST cells) 161-246; drawn test fields with flat backgrounds 80-133; a smear
# at 1.5x its exposure 118 or more, at 1.8x 28 or more (median 43), at 2.2x 2 or more (median
# 19), a flat frame 0. Two grids of 48 changing steps have about 24 rises apiece, and agree within
# SAME_FIELD_MAX_DIFFERENCE only where they are one field.
FINGERPRINT_MIN_STEPS = 48


def fingerprint(image):
    """64 hex digits: where brightness rises left to right on a 16x17 grid of the RGB image (a
    difference hash), so that two files of one photograph are found alike however each was
    encoded (fingerprint_difference); "" for a photograph too flat to tell (FINGERPRINT_MIN_STEPS)."""
    grid = _fingerprint_grid(image.convert("L"))
    return _rises(grid) if _tells_apart(grid) else ""


def _fingerprint_grid(grey):
    return grey.resize((FINGERPRINT_GRID + 1, FINGERPRINT_GRID), Image.Resampling.BOX)


def _tells_apart(grid):
    brightness = np.asarray(grid, dtype=np.int16)
    return int((brightness[:, 1:] != brightness[:, :-1]).sum()) >= FINGERPRINT_MIN_STEPS


def _rises(grid):
    brightness = np.asarray(grid, dtype=np.int16)
    rises = (brightness[:, 1:] > brightness[:, :-1]).flatten()
    return f"{int(''.join('1' if rise else '0' for rise in rises), 2):064x}"


# Turns of a grid that keep its width and height; with a transpose before them, they give the
# other four orientations (ROTATE_90, ROTATE_270 and TRANSVERSE are TRANSPOSE and then one of them).
_SAME_SHAPE_TURNS = (Image.Transpose.ROTATE_180, Image.Transpose.FLIP_LEFT_RIGHT,
                     Image.Transpose.FLIP_TOP_BOTTOM)


def oriented_fingerprints(image):
    """(fingerprint(image), the fingerprints of its seven other orientations: turned a quarter, a
    half or three quarters, or mirrored), each the one its file turned so would have; ("", ()) for
    a photograph too flat to tell. Software that rotates the pixels themselves, not the orientation
    flag, makes a copy of the same field.

    A box average onto a grid gives the same grid, turned, whether the photograph or the grid is
    turned, when the turn keeps the grid's shape: so one transpose of the full-size grey image
    is all it costs (~0.2 s at 48 megapixels), the rest being turns of 17x16 grids. They are what
    the turned files give but for rounding, which may tip a near-tie step: 0 of 256 differ on 100
    BCCD smears and 100 PBC cells, up to 3 on drawn fields with flat backgrounds."""
    grey = image.convert("L")
    upright = _fingerprint_grid(grey)
    if not _tells_apart(upright):
        return "", ()
    transposed = _fingerprint_grid(grey.transpose(Image.Transpose.TRANSPOSE))
    turned = (
        *(_rises(upright.transpose(turn)) for turn in _SAME_SHAPE_TURNS),
        _rises(transposed),
        *(_rises(transposed.transpose(turn)) for turn in _SAME_SHAPE_TURNS),
    )
    return _rises(upright), turned


def measure_stored(field_file, measure):
    """``measure`` (fingerprint or oriented_fingerprints) of a photograph already stored (kept as
    checked: upright 8-bit RGB JPEG or PNG), or None where its file is gone or unreadable."""
    try:
        with field_file.open("rb") as handle, Image.open(handle) as image:
            return measure(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def refuse_without_media_folder(waiting):
    """For the migrations that measure stored photographs (0015, 0017): where ``waiting`` of them
    are to be read and LEUKOSCOPE_MEDIA_ROOT is no folder on this machine (the shared storage not
    mounted here), stop rather than be recorded as applied with none measured: nothing measures
    them later, and a re-encoded copy of one would be counted again unwarned."""
    folder = Path(settings.MEDIA_ROOT)
    if waiting and not folder.is_dir():
        raise ImproperlyConfigured(
            f"LEUKOSCOPE_MEDIA_ROOT={folder} is no folder on this machine, and {waiting} stored "
            "photographs are to be read from it to fingerprint them: run migrate on a machine that "
            "mounts it (where the photographs are truly lost, make the folder, empty, and run it again)"
        )


def fingerprint_difference(first, second):
    """How many of the 256 grid steps two fingerprints disagree on."""
    return (int(first, 16) ^ int(second, 16)).bit_count()


class HeldPhotographs:
    """The photographs a file may be another file of (a sample's, and its upload's so far; or other
    samples'), each given as (checksum, fingerprint, name). A file is looked up by checksum, then by
    fingerprint in any orientation: a near copy agrees with it on at least one whole band
    (FINGERPRINT_BANDS), so it is compared bit by bit only with the photographs sharing a band.
    Compared with every one, a file took 19 ms against a sample of 4,750 photographs."""

    def __init__(self, photographs=()):
        self._checksums = {}  # checksum -> [(order added, name)]
        self._bands = {}  # band key -> [(order added, fingerprint, name)]
        self._added = 0
        for checksum, fingerprint, name in photographs:
            self.add(checksum, fingerprint, name)

    def add(self, checksum, fingerprint, name):
        order, self._added = self._added, self._added + 1
        self._checksums.setdefault(checksum, []).append((order, name))
        if fingerprint:
            for key in fingerprint_bands(fingerprint):
                self._bands.setdefault(key, []).append((order, fingerprint, name))

    def holders(self, checksum, fingerprints):
        """The names of every photograph a file of ``checksum`` whose orientations' fingerprints are
        ``fingerprints`` is a file of, in the order they were added."""
        found = dict(self._checksums.get(checksum, ()))
        for mine in fingerprints:
            if not mine:
                continue
            for key in fingerprint_bands(mine):
                for order, other, name in self._bands.get(key, ()):
                    if order not in found and same_field(mine, other):
                        found[order] = name
        return [found[order] for order in sorted(found)]

    def holder(self, checked):
        """The name of the photograph ``checked`` is a file of, in any orientation, or None."""
        names = self.holders(checked.checksum, (checked.fingerprint, *checked.turned))
        return names[0] if names else None


def same_field(first, second):
    """Two fingerprints of one photograph (another encoding, copy or orientation flag of it); a
    turned copy's fingerprint is one of those oriented_fingerprints() turns."""
    return bool(first and second) and fingerprint_difference(first, second) <= SAME_FIELD_MAX_DIFFERENCE


# Two fingerprints within SAME_FIELD_MAX_DIFFERENCE steps of each other agree exactly on at least
# one of SAME_FIELD_MAX_DIFFERENCE + 1 disjoint bands of them (there are more bands than steps that
# differ), so indexed bands find a photograph's near copies among every sample's without comparing
# it with each one.
FINGERPRINT_BANDS = SAME_FIELD_MAX_DIFFERENCE + 1
_FINGERPRINT_BITS = FINGERPRINT_GRID * FINGERPRINT_GRID
_BAND_EDGES = [round(band * _FINGERPRINT_BITS / FINGERPRINT_BANDS) for band in range(FINGERPRINT_BANDS + 1)]
_BAND_KEY_SHIFT = 16  # every band is 15 or 16 bits wide: its number goes above them in its key


def fingerprint_bands(fingerprint):
    """The FINGERPRINT_BANDS integers a fingerprint is found by, each a band's number and bits."""
    value = int(fingerprint, 16)
    return [band << _BAND_KEY_SHIFT | (value >> start) & ((1 << (end - start)) - 1)
            for band, (start, end) in enumerate(pairwise(_BAND_EDGES))]


class UploadsBusy(Exception):
    """This web process is checking as many uploads as it takes at once; nothing was read."""


# Each web process checks at most UPLOADS_CHECKED_AT_ONCE uploads at a time, decoding one file at a
# time: one upload may decode MAX_UPLOAD_MEGAPIXELS (about 24 s at the default 2,000), and twelve at
# once held every request thread gunicorn has (4 a process), so that nobody's page loaded for 85 s.
# One more is refused at once, saying so, which leaves threads for every other page.
UPLOADS_CHECKED_AT_ONCE = 2
_upload_slots = threading.BoundedSemaphore(UPLOADS_CHECKED_AT_ONCE)
# And one decode at a time per process: with a process per core, decoding takes the cores in turn
# with the pages, and holds one photograph's pixels in memory, not one per upload.
_decoding = threading.Lock()
UPLOADS_BUSY = ("Leukoscope is checking other uploads at this moment, and nothing was stored: upload "
                "the photographs again in a minute.")


def check_files(files, known=()):
    """Split uploaded files into (name, CheckedImage) pairs and RejectedFile entries.

    `known` holds (SHA-256, fingerprint, name) of the photographs the sample already holds; a file
    of one of them, or of another file of this upload, is refused (HeldPhotographs, same_field):
    its cells are counted once. Raises UploadsBusy where this process checks as many uploads as
    it takes at once.
    """
    if not _upload_slots.acquire(blocking=False):
        raise UploadsBusy(UPLOADS_BUSY)
    try:
        return _check_files(files, known)
    finally:
        _upload_slots.release()


def _first_holder(checked, *places):
    """(name, where) of the photograph ``checked`` is a file of, in the first of ``places`` ((held
    photographs, where they are) pairs) that holds one; None if none does."""
    for held, where in places:
        same = held.holder(checked)
        if same is not None:
            return same, where
    return None


def uploaded_name(name):
    """A file's name as sent, as the pages show it: composed (NFC: macOS sends "ñ" as n and a combining
    tilde, which a search for the typed "ñ" in the CSV then misses) and without direction controls."""
    return unicodedata.normalize("NFC", name).translate(DIRECTION_CONTROLS).strip() or "unnamed file"


def _check_files(files, known):
    accepted, rejected = [], []
    in_sample, in_upload = HeldPhotographs(known or ()), HeldPhotographs()
    # At least one photograph at the largest each may be, whatever the settings say.
    pixels_left = max(settings.MAX_UPLOAD_MEGAPIXELS * 1_000_000, settings.MAX_IMAGE_PIXELS)
    bytes_left = max(settings.MAX_UPLOAD_TOTAL_MB * 1024 * 1024, settings.MAX_UPLOAD_BYTES)
    files = list(files)
    for place, uploaded in enumerate(files, start=1):
        name = uploaded_name(getattr(uploaded, "name", "") or "")
        # Charged before the file is decoded, and whatever comes of it: a duplicate or a greyscale
        # photograph takes as long to decode as one that is stored.
        claimed = 0
        if pixels_left >= 0 and bytes_left >= 0:
            claimed = _header_pixels(uploaded)
            size = getattr(uploaded, "size", None) or 0
            pixels_left -= claimed
            bytes_left -= size if size <= settings.MAX_UPLOAD_BYTES else 0  # past it: refused unread
        if pixels_left < 0 or bytes_left < 0:
            # Past the upload's budget: not decoded, and so refused in order, that "the rest" is
            # what the next upload sends.
            rejected.append(RejectedFile(name, over_budget_reason(), over_budget=True, place=place,
                                         log_reason=f"one upload may hold {upload_budget()}"))
            continue
        try:
            with _decoding:
                checked = check_image(uploaded)
        except ImageRejected as exc:
            rejected.append(RejectedFile(name, str(exc), place=place))
            continue
        except MemoryError:
            rejected.append(RejectedFile(name, "The image is too large to open.", place=place))
            continue
        except PILLOW_READ_ERRORS:
            # A damage the checks above did not foresee: this file is refused, the others of the
            # batch are not lost with it. Logged as an error: a fault of this code would read so too.
            # By its place and size, not its name, which may carry the patient's (the person who sent
            # it is told the name).
            logger.error("Upload file %d of %d (%s bytes) refused: Pillow could not read it", place,
                         len(files), getattr(uploaded, "size", "?"), exc_info=True)
            rejected.append(RejectedFile(name, DAMAGED, place=place))
            continue
        # A multi-page file's header gives its first page; the page kept may be larger.
        pixels_left -= max(0, checked.width * checked.height - claimed)
        found = _first_holder(checked, (in_sample, IN_THE_SAMPLE), (in_upload, IN_THE_UPLOAD))
        if found is not None:
            # Its cells would be counted twice and skew the differential count.
            rejected.append(refused_as_duplicate(name, *found, place))
            continue
        in_upload.add(checked.checksum, checked.fingerprint, name)
        accepted.append((name, checked))
    return accepted, rejected


def _header_pixels(uploaded):
    """The pixels a file's header claims, read without decoding it: 0 where none can be read or it
    claims more than one photograph may hold (check_image then refuses it undecoded, saying why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb's warning: its pixel count says as much
            width, height = Image.open(uploaded, formats=ACCEPTED_FORMATS).size
    except Exception:  # whatever the header is, check_image reads it again and names the fault
        return 0
    finally:
        uploaded.seek(0)
    return width * height if width * height <= settings.MAX_IMAGE_PIXELS else 0


def upload_budget():
    """What one upload's photographs may come to together, in words."""
    return (f"{settings.MAX_UPLOAD_MEGAPIXELS:,} megapixels and {settings.MAX_UPLOAD_TOTAL_MB:,} MB of "
            "photographs together")


def over_budget_reason():
    return (f"one upload may hold {upload_budget()}, and those before it and this one came to more. "
            "Add it, and those after it, in another upload.")


IN_THE_SAMPLE, IN_THE_UPLOAD = "already in this sample", "earlier in this upload"


def refused_as_duplicate(name, same, where, place):
    """The file ``name``, the ``place``-th of its upload, refused as the photograph ``same``, held
    ``where``; the site's log names neither file."""
    return RejectedFile(name, duplicate_reason(name, same, where), place=place,
                        log_reason=duplicate_reason(None, None, where))


def duplicate_reason(name, same, where):
    """Why the file ``name`` is refused as the photograph ``same``, held ``where``: IN_THE_SAMPLE
    or IN_THE_UPLOAD. Both None: why, naming neither."""
    if name == same:  # "the same photograph as" itself would read as a fault of the check
        return ("This photograph is already in this sample; it is counted once." if where == IN_THE_SAMPLE
                else "This photograph was sent twice in this upload; it is counted once.")
    return (f"This is the same photograph as {same} (the same field, whatever its file format or "
            f"orientation), {where}; it is counted once.")
