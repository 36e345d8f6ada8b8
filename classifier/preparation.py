"""How a context window around a cell becomes network input.

A context window is a 240x320 RGB field at reference scale centred on the cell (the form of a
blood-cell-images training image, and what ``classifier.detection.cell_window`` returns). An
``input_spec`` says what the network sees of it:

- ``{"height": H, "width": W, "mode": "field"}``: the whole window resized to HxW (the published
  network's input);
- ``{"height": S, "width": S, "mode": "cell", "crop": C}``: the central CxC of the window resized
  to SxS, the cell at a higher resolution.

Networks take float32 RGB in [0, 1]; ``prepare_batch`` does the scaling, the model does not.
"""

import cv2
import numpy as np

WINDOW_SIZE = (240, 320)  # height, width of a context window at reference scale


def _as_window(window):
    window = np.asarray(window)
    if window.ndim != 3 or window.shape[2] != 3:
        raise ValueError(f"a context window is an HxWx3 RGB array, got shape {window.shape}")
    if window.dtype != np.uint8:
        window = np.clip(window, 0, 255).astype(np.uint8)
    if window.shape[:2] != WINDOW_SIZE:
        # Anything else is taken to be a field at reference scale of another size.
        window = cv2.resize(window, WINDOW_SIZE[::-1], interpolation=cv2.INTER_AREA)
    return window


def central_crop(window, size):
    """The central size x size square of a window (clipped to the window)."""
    h, w = window.shape[:2]
    size = min(int(size), h, w)
    y0 = (h - size) // 2
    x0 = (w - size) // 2
    return window[y0 : y0 + size, x0 : x0 + size]


def prepare_window(window, input_spec, margin=1.0):
    """One window as uint8 network input (HxWx3).

    ``margin`` > 1 keeps a border around the cell crop (training cuts shifted and zoomed crops
    from it); the output is then ``round(S * margin)`` pixels square.
    """
    window = _as_window(window)
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
        return np.ascontiguousarray(region)
    interpolation = cv2.INTER_AREA if region.shape[0] >= height else cv2.INTER_LINEAR
    return cv2.resize(region, (width, height), interpolation=interpolation)


def prepare_uint8(windows, input_spec, margin=1.0):
    """A list/array of windows as a uint8 (N, H, W, 3) array."""
    prepared = [prepare_window(window, input_spec, margin) for window in windows]
    if not prepared:
        size = input_shape(input_spec)
        return np.zeros((0, *size), dtype=np.uint8)
    return np.stack(prepared)


def prepare_batch(windows, input_spec):
    """Windows (uint8 240x320x3 each) as the float32 [0, 1] batch the network takes."""
    return prepare_uint8(windows, input_spec).astype(np.float32) / np.float32(255.0)


def input_shape(input_spec):
    return (int(input_spec["height"]), int(input_spec["width"]), 3)
