"""Preparing a batch of windows gives, window for window, what preparing each alone gives, and
one lookup table per window does what white balance and stain normalisation did in turn."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from classifier.preparation import (
    background_colour,
    background_gains,
    central_crop,
    prepare_uint8,
    prepare_window,
    red_cell_density,
    stain_tables,
    white_balanced,
)
from tests.classifier.drawn_fields import draw_field

SERVED = {
    "height": 128, "width": 128, "mode": "cell", "crop": 160,
    "white_balance": True, "stain_normalise": True, "mask_radius": 65,
}


def _mixed_windows():
    """Windows of every kind a batch may hold: tinted ones, one whose red cells are missing (its
    stain is left alone), a black one (nothing lit: gains of one) and a small crop (padded)."""
    windows = []
    for index, (name, tint) in enumerate([
        ("EOSINOPHIL", (1.0, 1.0, 1.0)), ("NEUTROPHIL", (0.85, 1.0, 1.12)),
        ("LYMPHOCYTE", (1.1, 0.95, 0.9)), ("MONOCYTE", (0.9, 0.9, 1.0)),
    ]):
        window = draw_field(name, index)
        windows.append(np.clip(window.astype(np.float32) * tint, 0, 255).astype(np.uint8))
    bare = np.full_like(windows[0], (225, 215, 220))
    bare[60:180, 100:220] = windows[2][60:180, 100:220]
    windows += [bare, np.zeros_like(bare), windows[1][60:180, 100:220].copy()]
    return windows


@pytest.mark.parametrize("spec, margin", [
    (SERVED, 1.0),
    (SERVED, 1.25),
    ({"height": 120, "width": 160, "mode": "field", "white_balance": True}, 1.0),
    ({"height": 96, "width": 96, "mode": "cell", "crop": 128}, 1.0),
])
def test_a_batch_is_prepared_window_for_window_as_each_alone(spec, margin):
    windows = _mixed_windows()
    batch = prepare_uint8(windows, spec, margin)
    assert batch.dtype == np.uint8 and len(batch) == len(windows)
    for window, prepared in zip(windows, batch, strict=True):
        np.testing.assert_array_equal(prepared, prepare_window(window, spec, margin))


def test_one_table_does_what_white_balance_then_stain_normalisation_did():
    spec = {key: value for key, value in SERVED.items() if key != "mask_radius"}
    windows = _mixed_windows()[:5]
    prepared = prepare_uint8(windows, spec)
    for window, out in zip(windows, prepared, strict=True):
        resized = cv2.resize(central_crop(window, 160), (128, 128), interpolation=cv2.INTER_AREA)
        gains = background_gains(window)
        expected = white_balanced(resized, gains)
        density = red_cell_density(window, gains)
        if density is not None:
            table = stain_tables(density[None])[0]
            expected = cv2.LUT(expected, table.reshape(256, 1, 3))
        np.testing.assert_array_equal(out, expected)
    # Distinct tables, not one five times: four tints, and stain normalisation both done and not.
    assert len({background_gains(window).tobytes() for window in windows[:4]}) == 4
    read = [red_cell_density(window, background_gains(window)) is not None for window in windows]
    assert any(read) and not all(read)



def test_an_underexposed_photograph_is_white_balanced_from_its_own_background():
    # Half the light: the bare slide at ~110, still far above the black padding past an edge,
    # which alone has no say in the background.
    window = draw_field("NEUTROPHIL", 0)
    dark = (window * 0.5).astype(np.uint8)
    dark[:, :40] = 0
    np.testing.assert_allclose(background_colour(dark), background_colour(window) * 0.5, atol=1.5)
    np.testing.assert_allclose(background_gains(dark), background_gains(window) * 2.0, rtol=0.02)


def test_a_margin_widens_the_crop_around_the_cell_at_the_same_scale():
    # Training cuts shifted and zoomed crops from the border a margin keeps: the cell itself must
    # stay at the size the served network sees it, the border added around it.
    spec = {"height": 128, "width": 128, "mode": "cell", "crop": 160, "white_balance": True}
    window = draw_field("EOSINOPHIL", 3)
    wide = prepare_window(window, spec, 1.25)
    assert wide.shape == (160, 160, 3)
    np.testing.assert_array_equal(central_crop(wide, 128), prepare_window(window, spec))

# Run in a fresh interpreter: forking pytest itself would copy its database connections and
# TensorFlow's threads into the child.
_FORK_AFTER_PREPARING = """
import os, signal, sys
import numpy as np
from classifier.preparation import prepare_uint8
from tests.classifier.test_preparation import SERVED, _mixed_windows

windows = _mixed_windows()
expected = prepare_uint8(windows, SERVED)  # the parent's resizing thread now exists
child = os.fork()
if child == 0:  # a Celery prefork worker's situation
    signal.alarm(20)  # a hang kills the child, which the parent reports
    code = 2
    try:
        code = 0 if np.array_equal(prepare_uint8(windows, SERVED), expected) else 1
    finally:
        os._exit(code)
_, status = os.waitpid(child, 0)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 3)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_prepares_batches_after_its_parent_did():
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _FORK_AFTER_PREPARING], cwd=root, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(root)}, timeout=120,
    )
    outcome = {1: "prepared different inputs", 2: "raised", 3: "hung or died"}.get(result.returncode)
    assert result.returncode == 0, f"the forked child {outcome or 'failed'}: {result.stderr[-2000:]}"
