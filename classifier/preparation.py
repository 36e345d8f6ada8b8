"""How a context window around a cell becomes network input.

A context window is a 240x320 RGB field at reference scale centred on the cell (the form of a
blood-cell-images training image, and what ``classifier.detection.cell_window`` returns). An
``input_spec`` says what the network sees of it:

- ``{"height": H, "width": W, "mode": "field"}``: the whole window resized to HxW (the published
  network's input);
- ``{"height": S, "width": S, "mode": "cell", "crop": C}``: the central CxC of the window resized
  to SxS, the cell at a higher resolution.

``"white_balance": true`` in either also scales each colour channel so the window's background
(the bright smear between cells) comes out the same neutral grey in every photograph: lamps,
cameras and stain batches tint whole photographs, while what tells an eosinophil from a
neutrophil is the tint of its cytoplasm against that background.

``"stain_normalise": true`` (with white balance) goes one step further: it rescales each channel's
optical density so the red cells around the leukocyte absorb as the median BCCD photograph's
do. Red cells take up eosin, the dye of eosinophil granules; how strongly a slide took it up
varies from photograph to photograph (blue-channel density of the red cells 0.14-0.30 over the
TRAIN photographs, 5th-95th percentile), and slides of eosinophils in TRAIN run pinker than those
of neutrophils, a cue about the slide, not the cell.

``"mask_radius": R`` (reference px) replaces everything farther than R from the window's centre
with the background level, so a network sees the leukocyte and not the red cells and stain of the
slide around it (LeukoNet's recipe since the seventh session: see the model card).

Networks take float32 RGB in [0, 1]; ``prepare_batch`` does the scaling, the model does not.
"""

import concurrent.futures
import functools
import os
import threading

import cv2
import numpy as np

WINDOW_SIZE = (240, 320)  # height, width of a context window at reference scale
# Level the background is brought to: the brightest part of a BCCD smear sits at ~200-235.
BACKGROUND_LEVEL = 225.0
# Every 8th pixel each way leaves 1,200 of a window, ~180 of them background: plenty for a
# median, and cheap enough (~0.1 ms) to do for every cell served.
_BACKGROUND_SAMPLE_STEP = 8


def column_medians(values):
    """np.median(values, axis=0) for an (N, C) array, N > 0, at a third of its cost per call
    (numpy's median spends most of its time on generality a few hundred pixels do not need)."""
    middle = (len(values) - 1) // 2
    if len(values) % 2:
        return np.partition(values, middle, axis=0)[middle].astype(np.float64)
    ordered = np.partition(values, [middle, middle + 1], axis=0)
    return (ordered[middle].astype(np.float64) + ordered[middle + 1]) / 2.0


def background_colour(image, step=_BACKGROUND_SAMPLE_STEP):
    """Median RGB of the bare slide in every step-th pixel each way, or None when too few are lit.

    The background is the brightest 15% (by green) of the lit pixels; black pixels are padding
    past a photograph's edge or a rotated field's corners and get no say. The detector's colour
    thresholds and the networks' white balance both stand on this one estimate.
    """
    pixels = image[::step, ::step].reshape(-1, 3)
    # Two elementwise maxima, not max(axis=1): a reduction over 3 values costs ~15x as much.
    lit = pixels[np.maximum(np.maximum(pixels[:, 0], pixels[:, 1]), pixels[:, 2]) > 40]
    if len(lit) < 16:
        return None
    green = lit[:, 1]
    rank = int(0.85 * (len(green) - 1))
    background = lit[green >= np.partition(green, rank)[rank]]
    return column_medians(background)


def background_gains(window, level=BACKGROUND_LEVEL, step=_BACKGROUND_SAMPLE_STEP):
    """Per-channel gains that bring the window's background to ``level`` (ones if none is lit)."""
    colour = background_colour(window, step)
    if colour is None:
        return np.ones(3, dtype=np.float32)
    return (level / np.maximum(colour, 1.0)).astype(np.float32)


def white_balanced(image, gains):
    """uint8 image with each channel scaled by its gain (rounded, saturating at 255)."""
    return cv2.multiply(image, (float(gains[0]), float(gains[1]), float(gains[2]), 0.0))


# Median optical density -ln(value / BACKGROUND_LEVEL) per channel of the red cells in the
# white-balanced TRAIN windows of blood-cell-images (one window per original photograph).
REFERENCE_RED_CELL_DENSITY = np.array([0.128, 0.269, 0.196], dtype=np.float32)
# Pixels within this radius (reference px) of a window's centre belong to the leukocyte there.
CELL_RADIUS = 65
# Fewer red-cell pixels than this in the sample and the stain is left as it is.
_MIN_RED_CELL_SAMPLES = 100
# Density ratios beyond these are a misreading (few, odd red cells), not the stain.
DENSITY_RATIO_RANGE = (0.5, 2.0)
_RED_CELL_SAMPLE_STEP = 6


@functools.lru_cache(maxsize=8)
def _away_from_centre(height, width, step):
    ys, xs = np.mgrid[0:height:step, 0:width:step]
    return (ys - height / 2.0) ** 2 + (xs - width / 2.0) ** 2 > CELL_RADIUS**2


def red_cell_density(window, gains, level=BACKGROUND_LEVEL, step=_RED_CELL_SAMPLE_STEP):
    """Median per-channel optical density of the red cells in a window white-balanced by
    ``gains``, or None when too few red cells are visible.

    Red-cell pixels are stained (green well under the background) but not nuclear (blue not
    far above green), sampled away from the centre, where the leukocyte's own cytoplasm (an
    eosinophil's granules above all) would bias the median. Gains scale each channel, so the
    median is taken on the raw values and balanced afterwards (~50 us a window).
    """
    raw = window[::step, ::step]
    green = raw[..., 1].astype(np.float32) * gains[1]
    blue = raw[..., 2].astype(np.float32) * gains[2]
    red_cells = (
        _away_from_centre(window.shape[0], window.shape[1], step)
        & (raw[..., 0] > 40)  # black padding is no red cell
        & (green < 0.85 * level)
        & (blue - green < 45)
    )
    if int(np.count_nonzero(red_cells)) < _MIN_RED_CELL_SAMPLES:
        return None
    picked = raw[red_cells]
    colour = column_medians(picked).astype(np.float32) * gains
    return -np.log(np.clip(colour, 1.0, level) / level)


def stain_tables(densities, level=BACKGROUND_LEVEL):
    """(N, 256, 3) uint8 lookup tables that scale each channel's optical density of a
    white-balanced image by the ratio of the reference red-cell density to its window's
    (``densities``, N x 3), the background unchanged."""
    ratios = np.clip(
        REFERENCE_RED_CELL_DENSITY / np.maximum(densities, 1e-3), *DENSITY_RATIO_RANGE
    )
    values = np.arange(256, dtype=np.float32)[:, None] / level
    # value = level * exp(-density), so scaling the density is raising to a power.
    tables = np.power(values[None], ratios[:, None, :])
    return np.clip(level * tables, 0, 255).round().astype(np.uint8)


# Every uint8 value in each channel: white-balancing it gives the balance's lookup table.
_EVERY_VALUE = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)


def colour_tables(windows, input_spec):
    """(N, 256, 3) uint8 per-channel lookup tables that white-balance (and, where the spec asks,
    stain-normalise) each of N context windows' network input; None where the spec does neither.

    Both steps map each channel's values pixel by pixel, so one table composed of the two gives
    what applying them in turn gives, in one pass over the network input instead of two.
    """
    if not input_spec.get("white_balance"):
        return None
    gains = [background_gains(window) for window in windows]
    tables = np.stack([white_balanced(_EVERY_VALUE, row)[:, 0] for row in gains])
    if input_spec.get("stain_normalise"):
        densities = [red_cell_density(window, row) for window, row in zip(windows, gains, strict=True)]
        read = [index for index, density in enumerate(densities) if density is not None]
        if read:
            stain = stain_tables(np.stack([densities[index] for index in read]))
            tables[read] = np.take_along_axis(stain, tables[read].astype(np.intp), axis=1)
    return tables


def as_window(window):
    """A uint8 HxWx3 array as a 240x320 context window.

    Anything of another size is taken to be a field at reference scale: it is centred in the
    window as it is, cropped where larger and surrounded by its own background where smaller,
    never resized, which would change its scale and, unless it is 4:3, stretch its cells.
    """
    window = np.asarray(window)
    if window.ndim != 3 or window.shape[2] != 3:
        raise ValueError(f"a context window is an HxWx3 RGB array, got shape {window.shape}")
    if window.dtype != np.uint8:
        window = np.clip(window, 0, 255).astype(np.uint8)
    if window.shape[:2] == WINDOW_SIZE:
        return window
    colour = background_colour(window)
    fill = (0, 0, 0) if colour is None else tuple(int(round(value)) for value in colour)
    height, width = window.shape[:2]
    # Crop what overhangs, then pad what is missing, both split evenly between the two sides.
    y0, x0 = max(0, (height - WINDOW_SIZE[0]) // 2), max(0, (width - WINDOW_SIZE[1]) // 2)
    cropped = window[y0 : y0 + WINDOW_SIZE[0], x0 : x0 + WINDOW_SIZE[1]]
    pad_y, pad_x = WINDOW_SIZE[0] - cropped.shape[0], WINDOW_SIZE[1] - cropped.shape[1]
    return cv2.copyMakeBorder(
        cropped, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2,
        cv2.BORDER_CONSTANT, value=fill,
    )


def central_crop(window, size):
    """The central size x size square of a window (clipped to the window)."""
    h, w = window.shape[:2]
    size = min(int(size), h, w)
    y0 = (h - size) // 2
    x0 = (w - size) // 2
    return window[y0 : y0 + size, x0 : x0 + size]


@functools.lru_cache(maxsize=16)
def _background_outside_circle(size, radius):
    """(uint8 mask of the pixels beyond radius of the centre, a background-level image) for
    cv2.copyTo, which paints them ~50x faster than NumPy's boolean assignment (~2 us against
    ~110 us at 96x96)."""
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    centre_y, centre_x = (size[0] - 1) / 2.0, (size[1] - 1) / 2.0
    outside = ((yy - centre_y) ** 2 + (xx - centre_x) ** 2 > radius**2).astype(np.uint8)
    return outside, np.full((*size, 3), int(BACKGROUND_LEVEL), np.uint8)


def _resized_view(window, input_spec, margin):
    """(the part of a context window the network sees, it at the network's size, uint8)."""
    mode = input_spec.get("mode", "field")
    height, width = int(input_spec["height"]), int(input_spec["width"])
    if mode == "field":
        region = window
    elif mode == "cell":
        crop = int(round(int(input_spec["crop"]) * margin))
        region = central_crop(window, crop)
        height = width = int(round(height * margin))
    else:
        raise ValueError(f"unknown input_spec mode {mode!r} (expected 'field' or 'cell')")
    if region.shape[:2] == (height, width):
        return region, np.ascontiguousarray(region)
    interpolation = cv2.INTER_AREA if region.shape[0] >= height else cv2.INTER_LINEAR
    return region, cv2.resize(region, (width, height), interpolation=interpolation)


_resizer = None
_resizer_lock = threading.Lock()


def _resizing_thread():
    """The thread that crops and resizes windows while the caller reads their colours.

    OpenCV lets go of the GIL while it resizes and NumPy's many small calls on a window's
    statistics hold it, so the two overlap: preparing 64 windows took ~23 ms instead of ~31 on a
    2-core host.
    """
    global _resizer
    with _resizer_lock:
        if _resizer is None:
            _resizer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="leukoscope-resize")
        return _resizer


def _forget_resizing_thread():
    # A forked child (a Celery worker) inherits the executor but not its thread.
    global _resizer, _resizer_lock
    _resizer, _resizer_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_resizing_thread)


def prepare_uint8(windows, input_spec, margin=1.0):
    """Context windows (a sequence of uint8 HxWx3, ``as_window``) as uint8 (N, H, W, 3) network
    input.

    ``margin`` > 1 keeps a border around the cell crop (training cuts shifted and zoomed crops
    from it); the output is then ``round(S * margin)`` pixels square.
    """
    windows = [as_window(window) for window in windows]
    if not windows:
        size = input_shape(input_spec)
        return np.zeros((0, *size), dtype=np.uint8)

    def resized_views():
        return [_resized_view(window, input_spec, margin) for window in windows]

    overlap = len(windows) > 1 and input_spec.get("white_balance")
    pending = _resizing_thread().submit(resized_views) if overlap else None
    # Gains and stain from the whole window: a cell crop can be nearly all cell and red cells.
    tables = colour_tables(windows, input_spec)
    views = pending.result() if pending else resized_views()
    prepared = []
    for index, (region, network_view) in enumerate(views):
        if tables is not None:
            network_view = cv2.LUT(network_view, tables[index].reshape(256, 1, 3))
        if input_spec.get("mask_radius"):
            # Reference px to output px: the region shown (crop or window) maps onto the output.
            radius = float(input_spec["mask_radius"]) * network_view.shape[0] / region.shape[0]
            if np.shares_memory(network_view, windows[index]):
                network_view = network_view.copy()
            outside, background = _background_outside_circle(network_view.shape[:2], radius)
            network_view = cv2.copyTo(background, outside, network_view)
        prepared.append(network_view)
    return np.stack(prepared)


def prepare_window(window, input_spec, margin=1.0):
    """One context window as uint8 network input (HxWx3): ``prepare_uint8`` of it alone."""
    return prepare_uint8([window], input_spec, margin)[0]


def prepare_batch(windows, input_spec):
    """Windows (uint8 240x320x3 each) as the float32 [0, 1] batch the network takes."""
    return prepare_uint8(windows, input_spec).astype(np.float32) / np.float32(255.0)


def input_shape(input_spec):
    return (int(input_spec["height"]), int(input_spec["width"]), 3)
