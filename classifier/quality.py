"""Image-quality checks for a smear photograph, so lab staff hear when a result may be unreliable.

Each figure is measured so it compares across cameras and resolutions, and each warning range was
calibrated on good photographs of both training labs (the 292 BCCD smears and the PBC analyser's
single-cell photographs: nearly none should warn) against blurred, over- and under-exposed and
colour-cast copies of them, warning where the copies' calls were measured to suffer
(``bench/shifts.py``): a warning flags every cell of the photograph for review, so one that fires
on photographs the network reads well buries the cells that do need a person.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from classifier.detection import REFERENCE_RBC_DIAMETER
from classifier.field_of_view import DarkSurround
from classifier.preparation import background_colour

# Focus is measured on a copy with the long side at this size: the BCCD photographs shrunk by 2,
# i.e. the scale the classifier sees. Sharpness per pixel depends on the pixel size, so a fixed
# working size keeps a 4000 px photograph and a 640 px one comparable.
_FOCUS_LONG_SIDE = 320
# Variance of the Laplacian of the grey image scaled to mean 128: the BCCD photographs read
# 7.7-24 (median 11.5); a Gaussian blur of sigma 2 at 640x480, a slight defocus, brings every
# one of them to 1.6-4.2.
MIN_FOCUS = 5.5
# Shares of pixels with a channel at 255 (blown highlights) or all channels under 8 (black).
# Some clipping is no fault: the PBC analyser photographs (CellaVision) hold the bare slide's red
# at 254-255, up to 39% of a photograph (2,910 of them read), and are classified as well as any.
# What costs calls is more: a warmer camera (red x1.12) or 1.25x the exposure on those same
# photographs clips 29-90% and drops their 8-type accuracy from 94% to 50% and 41%
# (bench/shifts.py): the white balance can no longer read the bare slide's true colour.
# BCCD photographs have none. Black alone is no fault: a microscope camera often shows the round
# field stop, and the training fields have black corners, so only a mostly black image warns (the
# dark surround of classifier.field_of_view counted black), and not one whose black surrounds a
# round field as large as an eyepiece's: a phone held to the eyepiece photographs its circle with
# black all around.
MAX_CLIPPED_HIGHLIGHTS = 0.45
MAX_CLIPPED_SHADOWS = 0.5
# Mean brightness (0-1) of the field, the black around it left out (under 8, or the dark surround
# of classifier.field_of_view, whose camera noise reaches 40): a well lit smear is mostly pale
# background.
# BCCD: 0.65-0.76; the same photographs at 1.4x exposure read 0.92-0.98, at 0.4x 0.27-0.30.
BRIGHTNESS_RANGE = (0.45, 0.9)
# Background colour in CIELAB a*/b* (neutral = 0). The BCCD backgrounds sit within 5.7 (a*) and
# 6.8 (b*) of neutral, PBC's analyser photographs at b* 15-18 (a warm lamp, their normal look).
# A cast the white balance can read is one it removes: one channel's gain cut to 0.5-0.85 or
# raised 1.15-1.3 (casts of 10-60) moved either source's accuracy by at most 4 points, most by
# none (12 TEST cells per type, each photograph changed as bench/shifts.py changes them). The
# warning is kept for casts past what was measured harmless, where the white balance has not
# been shown to undo them.
MAX_BACKGROUND_CAST = 40.0
# Image pixels per reference pixel (classifier.detection's scale) under which the cells reach the
# network upsampled past what it can read: the training photographs sit at 0.8-1.2 (whole BCCD
# smears at 2.0). The same 80 BCCD and 160 PBC TEST cells shrunk (bench/shifts.py's resize):
# at 0.5x and 0.35x (scale ~0.5 and ~0.33) they lose at most 3 points of 8 types; at 0.25x
# (~0.25) BCCD 86.2 -> 82.5% and PBC 96.2 -> 88.1%; at 0.18x (~0.17) 77.5% and 72.5%.
MIN_SCALE = 0.3


# A pixel whose channels differ by more than this is coloured: stain reads tens of steps apart,
# while a grey photograph saved as RGB differs by JPEG's rounding, a step or two.
COLOURED_SPREAD = 12
# The share of a photograph's pixels that must be coloured. Small, because the stained field may
# fill little of the frame (a scan with a wide white margin, a sparse field): a 640x480 field on a
# 6000x6000 white page is 0.9% of it.
COLOURED_SHARE = 0.0005
# Colour is looked for on a copy with its long side at most this: a count of pixels, which a
# 24-megapixel photograph need not give one by one.
COLOUR_CHECK_SIDE = 512


@dataclass
class QualityReport:
    focus: float
    clipped_highlights: float
    clipped_shadows: float
    brightness: float
    background_a: float
    background_b: float
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict:
        return asdict(self)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"Expected an HxWx3 RGB image, got {type(rgb).__name__} {shape}.")
    if rgb.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 RGB image, got dtype {rgb.dtype}.")
    if min(rgb.shape[:2]) < 8:
        raise ValueError(f"The image is too small to assess: {rgb.shape[1]}x{rgb.shape[0]}.")


def shows_colour(rgb: np.ndarray) -> bool:
    """Whether an RGB photograph already at most COLOUR_CHECK_SIDE a side shows any stain colour;
    photograph_shows_colour is the check of a photograph of any size."""
    pixels = np.asarray(rgb, dtype=np.int16)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    return np.count_nonzero(spread > COLOURED_SPREAD) >= max(16, COLOURED_SHARE * spread.size)


def photograph_shows_colour(rgb: np.ndarray) -> bool:
    """shows_colour of a photograph of any size, checked on a copy at most COLOUR_CHECK_SIDE a side
    (for speed). Upload refuses a photograph without colour (webapp.intake), training skips one
    (classifier.dataset) and assess_quality warns of one, all by this one check: a photograph near
    the threshold, copied smaller by Pillow's thumbnail for upload and by OpenCV for training, could
    be taken by one and refused by the other."""
    return shows_colour(colour_check_copy(rgb))


def colour_check_copy(rgb: np.ndarray) -> np.ndarray:
    """The photograph at most COLOUR_CHECK_SIDE a side, each pixel the mean of those it covers."""
    height, width = rgb.shape[:2]
    factor = COLOUR_CHECK_SIDE / max(height, width)
    if factor >= 1:
        return rgb
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _focus(grey: np.ndarray) -> float:
    factor = _FOCUS_LONG_SIDE / max(grey.shape)
    if factor < 1.0:
        size = (max(8, round(grey.shape[1] * factor)), max(8, round(grey.shape[0] * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    grey = grey.astype(np.float32)
    # Scaling to a fixed mean keeps a dim but sharp photograph from reading as blurred.
    grey *= 128.0 / max(float(grey.mean()), 1.0)
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=1).var())


def _background_cast(rgb: np.ndarray) -> tuple[float, float]:
    """a*, b* of the bare slide between the cells: the same background estimate the white balance
    corrects (``preparation.background_colour``), so the warning speaks of what the networks
    will have to undo. (0, 0) where nothing is lit: the shadow warning covers that image."""
    colour = background_colour(rgb)
    if colour is None:
        return 0.0, 0.0
    lab = cv2.cvtColor((colour.astype(np.float32) / 255.0).reshape(1, 1, 3), cv2.COLOR_RGB2LAB)
    return float(lab[0, 0, 1]), float(lab[0, 0, 2])


# assess_quality's ``surround`` where its caller has not looked for one.
NOT_LOOKED_FOR = object()


def assess_quality(rgb: np.ndarray, scale: float | None = None, surround=NOT_LOOKED_FOR) -> QualityReport:
    """Focus, exposure and colour cast of an RGB photograph, with plain-language warnings;
    ``scale``, where the detector read one from cells it found (image px per reference px), also
    says whether the cells are photographed at too low a resolution. ``surround``: the
    photograph's DarkSurround (None where it has none), where the caller has found it already."""
    _check_rgb(rgb)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    focus = _focus(grey)
    brightest = rgb.max(axis=2)
    highlights = float((brightest >= 255).mean())
    lit = brightest >= 8
    shadows = 1.0 - float(lit.mean())
    if surround is NOT_LOOKED_FOR:
        surround = DarkSurround.find(rgb)
    field = lit if surround is None else lit & ~surround.mask(*rgb.shape[:2])
    brightness = float(grey[field].mean()) / 255.0 if field.any() else 0.0
    # The share showing no slide: what is under 8, and the surround, whose camera noise reaches 40
    # (a lamp lighting a third of the photograph leaves the rest that noisy black).
    unlit = 1.0 - float(field.mean())
    cast_a, cast_b = _background_cast(rgb)

    warnings = []
    overexposed = highlights > MAX_CLIPPED_HIGHLIGHTS or brightness > BRIGHTNESS_RANGE[1]
    # Blown highlights flatten the detail the focus measure reads: a sharp photograph exposed too
    # long reads as blurred, and saying so would send staff to the focus knob, not the lamp.
    if focus < MIN_FOCUS and not overexposed:
        warnings.append("The image looks out of focus: results may be unreliable.")
    if overexposed:
        warnings.append(
            "The image is overexposed (too bright): pale cells and cytoplasm may be missed; its "
            "focus cannot be judged."
        )
    if brightness < BRIGHTNESS_RANGE[0]:
        warnings.append("The image is underexposed (too dark): cells may be missed or misread.")
    if unlit > MAX_CLIPPED_SHADOWS and not (surround is not None and surround.leaves_a_round_field):
        warnings.append("Most of the image is black: check the microscope's light and field.")
    if scale is not None and scale < MIN_SCALE:
        warnings.append(
            # Floored, so that a cell just under the limit never reads as at it.
            f"The cells are photographed at low resolution (a red cell about "
            f"{math.floor(10 * REFERENCE_RBC_DIAMETER * scale) / 10:g} pixels across, against "
            f"{REFERENCE_RBC_DIAMETER * MIN_SCALE:.1f} or more needed): granules and chromatin "
            "detail are lost, and results may be unreliable."
        )
    if not photograph_shows_colour(rgb):
        # The site refuses such a photograph at upload; the library takes any array it is given.
        warnings.append(
            "The image holds no colour: the network tells cells apart by their stain, and its calls "
            "on a greyscale photograph cannot be trusted."
        )
    if max(abs(cast_a), abs(cast_b)) > MAX_BACKGROUND_CAST:
        warnings.append(
            "The background has a strong colour cast (check the white balance, lamp or stain):"
            " cell colours may be misread."
        )
    return QualityReport(
        focus=round(focus, 2),
        clipped_highlights=round(highlights, 4),
        clipped_shadows=round(shadows, 4),
        brightness=round(brightness, 3),
        background_a=round(cast_a, 2),
        background_b=round(cast_b, 2),
        warnings=warnings,
    )
