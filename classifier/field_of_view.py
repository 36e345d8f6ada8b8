"""Where a photograph shows no slide: the black around the round field of a photograph taken
through a microscope's eyepiece (a phone held to it, a camera on an eyepiece adapter).

The differential leaves out a cell the photograph's edge cuts (classifier.boxes.cut_by_edge); a
cell the eyepiece's circle cuts is as incomplete, and would otherwise be counted and classified
whole from the half it shows.
"""

import math

import cv2
import numpy as np

from classifier.boxes import EDGE_MARGIN

# Under this in every channel is no slide: the darkest pixel of 1,500 PBC photographs, whose nuclei
# are stained darkest, reached 41 in its brightest channel, a single pixel (104 in BCCD's smears);
# the black of an eyepiece's surround, JPEG noise and all, stays under it.
DARK_LEVEL = 40
# A surround smaller than this share of the photograph is no eyepiece's (a dark corner, a speck of
# dirt at the edge), and is left alone.
MIN_SURROUND_SHARE = 0.01
# Measured at most this many pixels on the long side: the surround's edge is smooth and wide.
WORKING_SIDE = 1024
# What the surround leaves is round where it fills this share of the smallest circle around it:
# a disc fills all of it (its drawn edge a little less), the half of a photograph a misaligned
# lamp lights, a rectangle, 0.64 at most.
ROUND_FIELD_FILL = 0.8
# ...and where it holds at least this share of the photograph. A phone held to the eyepiece shows
# the field 0.6 times the photograph's height wide or more (a fifth of a 4:3 photograph); a spot
# of light smaller than a tenth is a field diaphragm closed down or a lamp failing, and the bright
# specks of a photograph that is nearly all black are each round too.
MIN_ROUND_FIELD_SHARE = 0.1


class DarkSurround:
    """The black around an eyepiece's field, if the photograph has one (``find``)."""

    def __init__(self, mask, factor):
        self._mask = mask  # at the working size: True where there is no slide
        self._factor = factor  # working pixels per photograph pixel

    @classmethod
    def find(cls, rgb):
        """The photograph's dark surround: dark pixels joined to its edge, or None where they are
        too few to be an eyepiece's."""
        height, width = rgb.shape[:2]
        factor = min(1.0, WORKING_SIDE / max(height, width))
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = rgb if factor == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        dark = (small.max(axis=2) < DARK_LEVEL).astype(np.uint8)
        if not dark.any():
            return None
        _, labels = cv2.connectedComponents(dark, connectivity=8)
        on_edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        surround = np.isin(labels, on_edge[on_edge > 0])
        if surround.mean() < MIN_SURROUND_SHARE:
            return None
        return cls(surround, factor)

    def mask(self, height, width):
        """Where the surround is, in a height x width photograph's pixels."""
        if self._mask.shape == (height, width):
            return self._mask
        return cv2.resize(self._mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0

    @property
    def leaves_a_round_field(self):
        """Whether what the surround leaves is one round field, an eyepiece's or a field stop's, as
        large as one (MIN_ROUND_FIELD_SHARE)."""
        field = (~self._mask).astype(np.uint8)
        contours, _ = cv2.findContours(field, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            return False
        field = max(contours, key=cv2.contourArea)
        _, radius = cv2.minEnclosingCircle(field)
        area = cv2.contourArea(field)
        return (area >= ROUND_FIELD_FILL * math.pi * radius**2
                and area >= MIN_ROUND_FIELD_SHARE * self._mask.size)

    def touches(self, box, margin=EDGE_MARGIN):
        """Whether the box (x0, y0, x1, y1 in the photograph's pixels) reaches within ``margin`` px
        of the surround, as classifier.boxes.touches_edge asks of the photograph's edge (how
        often that agrees with annotated cells: bench/detect.py, part 1b)."""
        x0, y0, x1, y1 = box
        height, width = self._mask.shape
        left = max(0, int((x0 - margin) * self._factor))
        top = max(0, int((y0 - margin) * self._factor))
        right = min(width, int(np.ceil((x1 + margin) * self._factor)))
        bottom = min(height, int(np.ceil((y1 + margin) * self._factor)))
        return bool(self._mask[top:bottom, left:right].any())
