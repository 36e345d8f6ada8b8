"""Finds leukocytes in a stained blood-smear photograph with classical colour morphology.

Wright-Giemsa stains leukocyte nuclei blue-purple: in a photograph white-balanced on the smear's
background, their blue channel stands far above their green one, which no red cell and no
background does. The detector thresholds that blue-minus-green contrast, joins the lobes of one
nucleus, drops specks too small to be a nucleus (platelets, stain dust), and grows each nucleus into
a box that covers the whole cell the way the BCCD annotations do.

Everything is measured in REFERENCE pixels: the scale of the blood-cell-images fields (a 640x480
BCCD photograph shrunk to 320x240). Red cells are the ruler, so a photograph of any resolution or
any crop is first brought to that scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from classifier.preparation import CELL_RADIUS, background_colour, background_gains

# Red-cell diameter (as _rbc_diameter measures it) at the reference scale: half the median over
# the BCCD photographs, whose annotated red-cell boxes are ~104 px across.
REFERENCE_RBC_DIAMETER = 47.8
# The rough ruler runs on a copy no larger than this, the circle search on cells this big.
_RULER_IMAGE_LONG_SIDE = 320
_CIRCLE_SEARCH_DIAMETER = 24.0
# Hough accumulator votes for a circle, and circles needed before the measurement is trusted.
_CIRCLE_VOTES = 16
_MIN_CIRCLES = 4
# Fewer measurable red-cell pixels than this (share of the image) and the ruler is not trusted.
_MIN_RBC_SHARE = 0.08
# A hole in the red-cell mask up to this share of the image is a cell's pale centre (~0.3% at the
# reference scale, under 1% at twice it); larger ones are background ringed by a clump of cells.
_MAX_PALLOR_SHARE = 0.012

# Background-normalised blue minus green above which a pixel is nuclear chromatin. Red cells,
# background and cytoplasm stay below about 30; nuclei sit at 60-130 across the BCCD photographs.
_NUCLEUS_CONTRAST = 45.0
# Lobes of one neutrophil nucleus are joined across gaps up to twice this radius (reference px).
# A red cell is ~52 px across, two neighbouring leukocytes are separated by their cytoplasm:
# BloodImage_00034's two cells lie ~10 px apart. With the red cells as ruler the narrow radius
# keeps every lobed nucleus on BCCD whole; a scale taken from the nucleus itself is only good to
# +-30%, and there the narrow radius would cut a tight crop's lobes apart.
_LOBE_JOIN_RADIUS = 4
_LOBE_JOIN_RADIUS_ROUGH_SCALE = 7
# A platelet covers ~250 reference px², the smallest lymphocyte nucleus well over 800.
_MIN_NUCLEUS_AREA = 450.0
# Pieces of nucleus mask below this are platelets (95% under 210 reference px²) or specks.
_SPECK_AREA = 220.0
# Median area of the largest connected piece of a leukocyte nucleus on BCCD, reference px².
_TYPICAL_NUCLEUS_PIECE = 3500.0
# Beyond this many times that area (a nucleus ~2.5 red cells wide) the red-cell scale is wrong.
_IMPLAUSIBLE_PIECE_FACTOR = 4.0
_FULL_SCORE_NUCLEUS_AREA = 1100.0
# A nucleus group splits in two when its two halves lie this far apart (reference px) and each
# is at least this big (reference px²): see _split_touching_nuclei. On BCCD the halves of one
# nucleus lie at most 67.6 px apart (a bilobed eosinophil), two touching cells' 69.6-79.3.
_TWO_NUCLEI_DISTANCE = 72.0
_TWO_NUCLEI_MIN_PART = 1500
# Box side = share of the nucleus extent + margin x sqrt(nucleus area), fitted on the BCCD boxes.
_NUCLEUS_EXTENT_SHARE = 0.9
_CYTOPLASM_MARGIN = 0.4


@dataclass(frozen=True)
class DetectedCell:
    box: tuple[int, int, int, int]
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


@dataclass(frozen=True)
class DetectionResult:
    cells: list[DetectedCell]
    scale: float


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"Expected a NumPy array, got {type(rgb).__name__}.")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"Expected an HxWx3 RGB image, got an array of shape {rgb.shape}.")
    if rgb.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 RGB image, got dtype {rgb.dtype}.")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ValueError(f"The image is too small to hold a cell: {rgb.shape[1]}x{rgb.shape[0]}.")


def _resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-3:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def _background_gains(rgb: np.ndarray) -> np.ndarray:
    """Per-channel gains that bring the smear's background (its brightest part) to 200.

    White-balancing on the background makes the colour thresholds hold across lamps, cameras and
    stain batches. A sample of ~20,000 pixels is plenty for a median and keeps this off the
    profile.
    """
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 20000)))
    return background_gains(rgb, level=200.0, step=step)


def _balanced(rgb: np.ndarray, gains: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = rgb.astype(np.float32)
    return image[..., 0] * gains[0], image[..., 1] * gains[1], image[..., 2] * gains[2]


def _rbc_ruler(rgb: np.ndarray, gains: np.ndarray) -> float | None:
    """A rough red-cell diameter in pixels, or None when too few red cells are visible.

    Red cells touch and overlap, so they cannot be counted one by one. Instead: mask everything
    stained but not nuclear, fill the pale centres, and take the 90th percentile of each pixel's
    distance to the nearest background; for a disc of radius R that percentile is ~0.68 R whether
    the disc stands alone or in a loose clump. Dense clumps read up to twice too large, which is
    why _rbc_diameter only uses this to aim its circle search.
    """
    _, green, blue = _balanced(rgb, gains)
    lit = rgb.max(axis=2) > 40
    stained = ((200.0 - green) > 30.0) & ((blue - green) < 40.0) & lit
    mask = cv2.morphologyEx(stained.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if mask.mean() < _MIN_RBC_SHARE:
        return None
    filled = _fill_pallor(mask)
    # Cells cut by the image edge continue beyond it: pad with "cell" so the edge is no boundary.
    distance = cv2.distanceTransform(np.pad(filled, 1, constant_values=1), cv2.DIST_L2, 3)
    inside = distance[1:-1, 1:-1][filled > 0]
    return float(np.percentile(inside, 90)) / 0.68 * 2.0


def _fill_pallor(mask: np.ndarray) -> np.ndarray:
    """The mask with the pale centres of red cells filled, but not background ringed by cells."""
    holes = (mask == 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    small = np.zeros(count, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= _MAX_PALLOR_SHARE * mask.size
    # Background touching the border is never a pallor.
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small[border] = False
    return np.where(small[labels], 1, mask).astype(np.uint8)


def _circle_diameter(rgb: np.ndarray, gains: np.ndarray, expected: float) -> float | None:
    """Median diameter of the red-cell outlines a Hough search finds, or None if it finds few."""
    _, green, _ = _balanced(rgb, gains)
    grey = np.clip(green, 0, 255).astype(np.uint8)
    circles = cv2.HoughCircles(
        grey,
        cv2.HOUGH_GRADIENT,
        dp=1,
        minDist=expected * 0.5,
        param1=60,
        param2=_CIRCLE_VOTES,
        minRadius=max(3, int(expected * 0.2)),
        maxRadius=int(expected * 1.1),
    )
    if circles is None or len(circles[0]) < _MIN_CIRCLES:
        return None
    return 2.0 * float(np.median(circles[0][:, 2]))


def _rbc_diameter(rgb: np.ndarray, gains: np.ndarray) -> float | None:
    """Typical red-cell diameter in image pixels, or None when too few red cells are visible.

    The cheap ruler aims a Hough circle search run on a copy shrunk so the cells are about
    _CIRCLE_SEARCH_DIAMETER px across: small enough to be fast, large enough to be accurate.
    On the BCCD photographs, which share one magnification, this spreads 0.89-1.20x around the
    median (5th-95th percentile); 10 of the 292 read over 1.25x, the worst 1.68x, where heavy
    rouleaux (red cells stacked into a continuous mass) mislead the ruler and the circle search
    then confirms the size it was aimed at.
    """
    height, width = rgb.shape[:2]
    factor = min(1.0, _RULER_IMAGE_LONG_SIDE / max(height, width))
    reading = _rbc_ruler(_resize(rgb, factor), gains)
    if reading is None:
        return None
    diameter = reading / factor
    for attempt in range(2):
        factor = min(1.0, _CIRCLE_SEARCH_DIAMETER / diameter)
        expected = diameter * factor
        found = _circle_diameter(_resize(rgb, factor), gains, expected)
        if found is None:
            # Without circles the stained area is rarely red cells: a tight crop of a
            # leukocyte holds only slivers of them, which the ruler reads far too small.
            return None if attempt == 0 else diameter
        diameter = found / factor
        # A second pass only when the ruler aimed far off, so the cells were mis-sized.
        if 0.8 < found / expected < 1.25:
            break
    return diameter


def estimate_scale(rgb: np.ndarray, gains: np.ndarray | None = None) -> float | None:
    """Image pixels per reference pixel, from the red cells; None when too few are visible."""
    if gains is None:
        gains = _background_gains(rgb)
    diameter = _rbc_diameter(rgb, gains)
    return None if diameter is None else diameter / REFERENCE_RBC_DIAMETER


def _largest_piece(mask: np.ndarray) -> float:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0.0


def _scale_from_nuclei(rgb: np.ndarray, gains: np.ndarray) -> float | None:
    """Fallback scale from the largest piece of nucleus, for a photograph without red cells.

    On BCCD the largest connected piece of a leukocyte nucleus covers a median 3500 reference
    px² (5th-95th percentile 1700-5800), so this is good to about -30%/+30%: enough to join the
    lobes of a tight crop of one cell, which is what such photographs usually are.
    """
    factor = min(1.0, 2 * _RULER_IMAGE_LONG_SIDE / max(rgb.shape[:2]))
    mask = _nucleus_mask(_resize(rgb, factor), gains)
    largest = _largest_piece(mask)
    if largest < _SPECK_AREA * 0.25:
        return None
    return float(np.sqrt(largest / _TYPICAL_NUCLEUS_PIECE)) / factor


def _nucleus_mask(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    _, green, blue = _balanced(rgb, gains)
    mask = ((blue - green) > _NUCLEUS_CONTRAST).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def _nucleus_groups(
    mask: np.ndarray, split_touching: bool = True
) -> list[tuple[tuple[int, int, int, int], float]]:
    """Boxes (x0, y0, x1, y1) and areas of nuclei, lobes of one nucleus joined, and two touching
    nuclei split apart when split_touching (the scale is known well enough to tell them)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    # Platelets and stain specks are dropped before joining, or a platelet lying against a
    # leukocyte would stretch its box.
    kept = np.zeros(count, np.uint8)
    kept[1:] = stats[1:, cv2.CC_STAT_AREA] >= _SPECK_AREA
    mask = kept[labels]
    radius = _LOBE_JOIN_RADIUS if split_touching else _LOBE_JOIN_RADIUS_ROUGH_SCALE
    side = 2 * radius + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    count, joined = cv2.connectedComponents(cv2.dilate(mask, disc))
    joined = np.where(mask > 0, joined, 0)
    groups = []
    for label in range(1, count):
        ys, xs = np.nonzero(joined == label)
        if len(xs) < _MIN_NUCLEUS_AREA:
            continue
        parts = _split_touching_nuclei(xs, ys) if split_touching else [(xs, ys)]
        for part_xs, part_ys in parts:
            box = (
                int(part_xs.min()),
                int(part_ys.min()),
                int(part_xs.max()) + 1,
                int(part_ys.max()) + 1,
            )
            groups.append((box, float(len(part_xs))))
    return groups


def _split_touching_nuclei(xs: np.ndarray, ys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The nucleus pixels of a group, as two nuclei when it is two cells lying side by side.

    Two leukocytes touching join into one group when their nuclei come within the lobe-joining
    gap. Splitting the group's pixels into two clusters (k-means) tells them apart by size: the
    two halves of one nucleus lie closer than two whole nuclei side by side. The margin is
    narrow: a lymphocyte nucleus pressed against a neutrophil's (BloodImage_00313, 69.6 px) is
    left joined rather than risk cutting bilobed eosinophils (up to 67.6 px) in two.
    """
    if len(xs) < 2 * _TWO_NUCLEI_MIN_PART:
        return [(xs, ys)]
    points = np.column_stack([xs, ys]).astype(np.float32)
    centred = points - points.mean(axis=0)
    # Start from the halves either side of the principal axis' midpoint: deterministic, and
    # already the split k-means refines for two blobs side by side.
    _, _, axes = np.linalg.svd(centred[:: max(1, len(points) // 2000)], full_matrices=False)
    initial = (centred @ axes[0] > 0).astype(np.int32).reshape(-1, 1)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.25)
    _, labels, centres = cv2.kmeans(
        points, 2, initial, criteria, 1, cv2.KMEANS_USE_INITIAL_LABELS
    )
    labels = labels.ravel()
    sizes = np.bincount(labels, minlength=2)
    apart = float(np.hypot(*(centres[0] - centres[1])))
    if apart < _TWO_NUCLEI_DISTANCE or sizes.min() < _TWO_NUCLEI_MIN_PART:
        return [(xs, ys)]
    return [(xs[labels == k], ys[labels == k]) for k in (0, 1)]


def _cell_box(nucleus_box, nucleus_area, image_shape) -> tuple[int, int, int, int]:
    """The annotated-style whole-cell box around a nucleus, everything in image pixels.

    Fitted on the BCCD boxes (mean IoU 0.84 given the right nucleus): the cell reaches past the
    nucleus by a margin that grows with the nucleus, 0.2 sqrt(area) a side. Using only the
    nucleus' own size keeps the box free of errors in the red-cell scale.
    """
    x0, y0, x1, y1 = nucleus_box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    margin = _CYTOPLASM_MARGIN * np.sqrt(nucleus_area)
    width = _NUCLEUS_EXTENT_SHARE * (x1 - x0) + margin
    height = _NUCLEUS_EXTENT_SHARE * (y1 - y0) + margin
    image_height, image_width = image_shape[:2]
    return (
        int(np.clip(round(cx - width / 2), 0, image_width)),
        int(np.clip(round(cy - height / 2), 0, image_height)),
        int(np.clip(round(cx + width / 2), 0, image_width)),
        int(np.clip(round(cy + height / 2), 0, image_height)),
    )


def detect_leukocytes(rgb: np.ndarray) -> DetectionResult:
    """Every leukocyte in an RGB smear photograph, best first, and the photograph's scale."""
    _check_rgb(rgb)
    gains = _background_gains(rgb)
    scale = estimate_scale(rgb, gains)
    # Telling two touching nuclei from the lobes of one takes a trustworthy size: the red cells
    # give one, the nucleus fallback (+-30%) does not, and would cut a tight crop's cell in two.
    split_touching = scale is not None
    scale = scale or _scale_from_nuclei(rgb, gains)
    if scale is None:
        # Neither red cells nor anything nuclear: there is no leukocyte to find at any scale.
        return DetectionResult(cells=[], scale=1.0)
    working = _resize(rgb, 1.0 / scale)
    mask = _nucleus_mask(working, gains)
    if _largest_piece(mask) > _IMPLAUSIBLE_PIECE_FACTOR * _TYPICAL_NUCLEUS_PIECE:
        # A nucleus several red cells wide means the red-cell ruler misread (e.g. a crop whose
        # slivers of red cells happened to look like circles): the nucleus is the better ruler.
        scale = _scale_from_nuclei(rgb, gains) or scale
        split_touching = False
        working = _resize(rgb, 1.0 / scale)
        mask = _nucleus_mask(working, gains)
    # Factor actually applied, after rounding the working size to whole pixels.
    scale_x = rgb.shape[1] / working.shape[1]
    cells = []
    for nucleus_box, area in _nucleus_groups(mask, split_touching):
        score = float(min(1.0, area / _FULL_SCORE_NUCLEUS_AREA))
        in_image = tuple(value * scale_x for value in nucleus_box)
        box = _cell_box(in_image, area * scale_x**2, rgb.shape)
        cells.append(DetectedCell(box=box, score=score))
    cells.sort(key=lambda cell: cell.score, reverse=True)
    return DetectionResult(cells=cells, scale=float(scale))


def centre_first(cells, shape):
    """Detected cells, the one nearest the photograph's centre first, then outwards.

    The site numbers a photograph's cells in this order. A photograph of one cell (an analyser's
    or a lab's own crop) then lists that cell first, whatever else the detector found beside it:
    a neighbour's edge, a clump of red cells, spilled granules; on a field of a smear the order
    does not matter."""
    height, width = shape[:2]

    def distance(cell):
        x, y = cell.centre
        return (x - width / 2.0) ** 2 + (y - height / 2.0) ** 2

    return sorted(cells, key=lambda cell: (distance(cell), -cell.score))


def middle_cell(shape, scale):
    """A leukocyte's reach (preparation.CELL_RADIUS reference px at ``scale``) around the middle of a
    photograph of (height, width, ...) ``shape``, as a DetectedCell scored 0: where a photograph
    taken of one cell shows it, when the detector outlined nothing there."""
    height, width = shape[:2]
    reach = CELL_RADIUS * scale
    return DetectedCell(
        box=(
            int(max(0, round(width / 2 - reach))),
            int(max(0, round(height / 2 - reach))),
            int(min(width, round(width / 2 + reach))),
            int(min(height, round(height / 2 + reach))),
        ),
        score=0.0,
    )


def photograph_background(rgb: np.ndarray) -> tuple[float, float, float]:
    """The bare slide's colour in a photograph (its brightest part), black where none is lit."""
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 20000)))
    colour = background_colour(rgb, step)
    return (0.0, 0.0, 0.0) if colour is None else tuple(float(value) for value in colour)


def window_fill(rgb: np.ndarray, size: tuple[int, int] = (240, 320)) -> tuple[float, float, float]:
    """What a context window of ``size`` cut from the photograph shows past its edge (cell_window
    says why): read once by a caller that cuts several windows from one photograph."""
    return (0.0, 0.0, 0.0) if rgb.shape[:2] == tuple(size) else photograph_background(rgb)


def cell_window(
    rgb: np.ndarray,
    cell: DetectedCell,
    scale: float,
    size: tuple[int, int] = (240, 320),
    fill: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """A (H, W) = size field at the reference scale centred on the cell, like a training image.

    Where the window runs past the photograph's edge it shows ``fill``. By default that is the
    photograph's own background (photograph_background): a tight crop of one cell (a lab's own
    120x120 picture, a 224x224 analyser crop) leaves most of the window past its edge, and black
    there would read as a dark stain all round the cell and leave the network a black frame it
    never saw around a cell in a real field. A photograph of the window's own size is a reference
    field like blood-cell-images', rotated copies whose uncovered corners are black: it is padded
    black as they are, so the networks trained on those fields see what they learnt (the bundled
    LeukoNet scores 0.8749 on their TEST so, 0.8766 with the background instead).
    """
    _check_rgb(rgb)
    if scale <= 0:
        raise ValueError(f"The scale must be positive, got {scale}.")
    out_height, out_width = size
    source = rgb
    if scale > 1.5:
        # Shrinking with a plain warp aliases; pre-shrink with area averaging, as the training
        # images were made by shrinking the photographs.
        source = _resize(rgb, 1.0 / scale)
    fx = source.shape[1] / rgb.shape[1]
    fy = source.shape[0] / rgb.shape[0]
    cx, cy = cell.centre
    # Output pixel u (centre u + 0.5) lies at cx + scale * (u + 0.5 - W / 2) in continuous image
    # coordinates; OpenCV puts pixel i's centre at i, hence the half-pixel terms.
    to_source = np.array(
        [
            [scale * fx, 0.0, fx * (cx + scale * (0.5 - out_width / 2.0)) - 0.5],
            [0.0, scale * fy, fy * (cy + scale * (0.5 - out_height / 2.0)) - 0.5],
        ],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        source,
        to_source,
        (out_width, out_height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=window_fill(rgb, size) if fill is None else fill,
    )
