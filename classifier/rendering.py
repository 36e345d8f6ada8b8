"""Pictures in and out of the classifier: a stored photograph decoded to RGB, and the three pictures
the site keeps of each cell (a thumbnail of the cell in the photograph, the context window the
network saw, and Grad-CAM drawn over the network's input), encoded as the site stores them.
"""

import functools
import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from classifier.errors import UnreadablePhotograph
from classifier.photograph_size import MAX_PHOTOGRAPH_PIXELS

# Room around the detector's box in the thumbnail, so the cell's edge is visible.
CROP_MARGIN = 0.15
THUMBNAIL_MAX_SIDE = 320  # the cell page shows the crop large; the grids scale it down
# The network's input is 96x96 for LeukoNet: drawn larger, so the heat map is legible on the page.
HEATMAP_MIN_SIDE = 240
# Strongest attention covers the cell with 65% colour; weak attention leaves it visible.
HEATMAP_OPACITY = 0.65
CROP_JPEG_QUALITY = 90
HEATMAP_JPEG_QUALITY = 88
# The context window is kept lossless (retraining reads it back). On BCCD windows level 3 took
# ~8 ms and 68 kB a window, level 9 ~100 ms for 60 kB.
WINDOW_PNG_COMPRESSION = 3
# Pillow's modes for greyscale of more than 8 bits (a 16-bit TIFF or PNG).
SIXTEEN_BIT_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def decode_rgb(source, upright=False):
    """An 8-bit RGB array (H, W, 3) from an image file's bytes or a binary file object; ``upright``
    turns it as its EXIF orientation says (webapp.intake turns an upload so before storing it).

    Raises UnreadablePhotograph where the content is no image Pillow can decode.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as picture:
            return _as_rgb(ImageOps.exif_transpose(picture) if upright else picture)
    except Image.DecompressionBombError:
        raise UnreadablePhotograph(
            f"The photograph is too large to read: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels."
        ) from None
    except (OSError, ValueError):
        # Pillow says "cannot identify image file <_io.BytesIO object at 0x...>" and the like:
        # nothing a reader of the sample page can act on beyond knowing the file is unusable.
        raise UnreadablePhotograph(
            "The photograph could not be read: the file is damaged or is not an image."
        ) from None


def too_many_pixels(source, limit=MAX_PHOTOGRAPH_PIXELS):
    """Why a photograph (an image file's bytes or a binary file object) is too large to decode, in
    words, read from its header alone: no pixel is decoded. "" where it holds at most ``limit``
    pixels, or where its header does not read (decode_rgb says why)."""
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    megapixels = f"{limit / 1e6:g}-megapixel limit"
    try:
        with warnings.catch_warnings():
            # Pillow warns from its own limit (89 megapixels) and refuses from twice that.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as picture:
                width, height = picture.size
    except Image.DecompressionBombError:
        return f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the {megapixels}"
    except (OSError, ValueError):
        return ""
    if width * height <= limit:
        return ""
    return f"{width}x{height} pixels, over the {megapixels}"


def _as_rgb(picture):
    """8-bit sRGB of a decoded picture, read as webapp.intake stores an upload."""
    if picture.mode in SIXTEEN_BIT_GREY_MODES:
        # Pillow's convert clips these at 255 rather than scaling them: a 16-bit photograph came
        # out white in every pixel, and was classified all the same.
        grey = np.clip(np.asarray(picture, dtype=np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    picture = in_srgb(picture)
    if picture.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in picture.info:
        return np.asarray(flattened_on_white(picture))
    return np.asarray(picture.convert("RGB"))


def flattened_on_white(picture):
    """An RGB copy of a picture with transparency, laid on white: dropping the alpha would show
    whatever colour a transparent pixel holds (often black); white is the background a smear
    photograph has."""
    rgba = picture.convert("RGBA")
    flattened = Image.new("RGB", rgba.size, (255, 255, 255))
    flattened.paste(rgba, mask=rgba.getchannel("A"))
    return flattened


def in_srgb(picture):
    """The picture with its colours read through its embedded colour profile into sRGB.

    The networks learned stains as sRGB numbers (no training photograph carries a profile). A
    camera or phone that writes Display P3 or Adobe RGB stores the same purple as other numbers:
    read raw, every stain is shifted towards grey, as a browser showing the photograph does not
    show it. A picture without a profile, with sRGB's, or with one that cannot be used (damaged,
    or for another kind of picture) keeps its numbers.
    """
    profile = picture.info.get("icc_profile")
    if not profile:
        return picture
    transformable = _transformable(picture)
    transform = _transform_to_srgb(profile, transformable.mode)
    # Where the profile cannot be used, the picture itself: webapp.intake tells by its identity
    # whether the colours changed.
    return picture if transform is None else ImageCms.applyTransform(transformable, transform)


def _transformable(picture):
    """The picture in a mode a profile transforms: none transforms a palette, grey with alpha or
    premultiplied alpha, and a colour-keyed transparent pixel no longer matches its key once
    transformed; YCbCr (a TIFF's) holds the numbers of the RGB its profile describes."""
    if picture.mode in ("PA", "LA", "La", "RGBa") or (
            picture.mode in ("P", "RGB", "L") and "transparency" in picture.info):
        return picture.convert("RGBA")
    if picture.mode in ("P", "YCbCr"):
        return picture.convert("RGB")
    return picture


# A camera's profile is a few hundred bytes (Display P3's 536) to some kilobytes. The cache is keyed
# by the profile's bytes and keeps them: a file may carry megabytes (a TIFF's profile, up to the
# upload limit of 25 MB), and sixteen such, kept in every web and worker process, could hold 400 MB.
# A larger profile is read anew each time (milliseconds, against a second's decoding).
CACHED_PROFILE_MAX_BYTES = 64 * 1024


def _transform_to_srgb(profile, mode):
    if len(profile) > CACHED_PROFILE_MAX_BYTES:
        return _built_transform_to_srgb(profile, mode)
    return _cached_transform_to_srgb(profile, mode)


def _built_transform_to_srgb(profile, mode):
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        # Most cameras embed sRGB's own profile: transforming into it again changes nothing, and
        # takes half a second on a 12-megapixel photograph.
        if ImageCms.getProfileDescription(source).strip().lower().startswith("srgb"):
            return None
        # Without its one-pixel cache a transform is safe to share between the threads of a web
        # server checking uploads, and images have few runs of one colour for the cache to skip.
        return ImageCms.buildTransform(source, SRGB, mode, "RGBA" if mode == "RGBA" else "RGB",
                                       flags=ImageCms.Flags.NOCACHE)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


# A camera writes one profile into every photograph.
_cached_transform_to_srgb = functools.lru_cache(maxsize=16)(_built_transform_to_srgb)


def encode_jpeg(rgb, quality):
    return _encode(rgb, "JPEG", quality=quality)


def encode_png(rgb, compress_level=WINDOW_PNG_COMPRESSION):
    return _encode(rgb, "PNG", compress_level=compress_level)


def _encode(rgb, fmt, **params):
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def crop_thumbnail(rgb, box):
    """The detector's box in the photograph with a margin, its long side at most
    THUMBNAIL_MAX_SIDE."""
    x0, y0, x1, y1 = box
    height, width = rgb.shape[:2]
    pad_x, pad_y = int((x1 - x0) * CROP_MARGIN), int((y1 - y0) * CROP_MARGIN)
    crop = rgb[max(0, y0 - pad_y) : min(height, y1 + pad_y), max(0, x0 - pad_x) : min(width, x1 + pad_x)]
    if crop.size == 0:
        crop = rgb[max(0, y0) : y0 + 1, max(0, x0) : x0 + 1]
    longest = max(crop.shape[:2])
    if longest > THUMBNAIL_MAX_SIDE:
        factor = THUMBNAIL_MAX_SIDE / longest
        size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return crop


def heatmap_overlay(network_input, heatmap):
    """Grad-CAM drawn over exactly what the network saw, at least HEATMAP_MIN_SIDE on its short
    side."""
    height, width = network_input.shape[:2]
    heat = cv2.resize(np.asarray(heatmap, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = (HEATMAP_OPACITY * heat)[..., None]
    blended = network_input.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    overlay = blended.clip(0, 255).astype(np.uint8)
    shortest = min(height, width)
    if shortest < HEATMAP_MIN_SIDE:
        factor = HEATMAP_MIN_SIDE / shortest
        overlay = cv2.resize(
            overlay, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_LINEAR
        )
    return overlay


def cell_pictures(rgb, box, window, network_input, heatmap):
    """(crop JPEG, window PNG, heat-map overlay JPEG) of one cell, as the site stores them."""
    return (
        encode_jpeg(crop_thumbnail(rgb, box), CROP_JPEG_QUALITY),
        encode_png(window),
        encode_jpeg(heatmap_overlay(network_input, heatmap), HEATMAP_JPEG_QUALITY),
    )
