"""Leukocyte detector: synthetic smears drawn in code, then a few real BCCD and training images."""

import os
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest

from classifier.boxes import box_iou
from classifier.detection import (
    DetectedCell,
    DetectionResult,
    cell_window,
    detect_leukocytes,
    estimate_scale,
    middle_cell,
)
from classifier.preparation import CELL_RADIUS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(
    os.environ.get("LEUKOSCOPE_DATASETS_DIR", PROJECT_ROOT.parent / "shared" / "datasets")
)

BACKGROUND = (222, 218, 228)
RED_CELL = (212, 158, 166)
RED_CELL_PALLOR = (220, 186, 194)
CYTOPLASM = (214, 198, 226)
NUCLEUS = (112, 72, 192)
PLATELET = (150, 110, 205)
RED_CELL_RADIUS = 50  # BCCD magnification: a 640x480 smear is at scale ~2


def draw_smear(leukocytes=(), platelets=(), size=(480, 640), seed=0, red_cell_radius=RED_CELL_RADIUS):
    """A smear photograph at BCCD magnification: red cells on a grid, leukocytes, platelets.

    Each leukocyte is (cx, cy, (radius, lobes)); lobes are (dx, dy, rx, ry) ellipses of nucleus in
    a disc of cytoplasm. Red cells are left out where they would overlap a leukocyte. Returns the
    RGB image and the whole-cell boxes of the leukocytes.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    step = 2 * red_cell_radius + 14
    for y in range(red_cell_radius // 2, height, step):
        for x in range(red_cell_radius // 2 + (y // step % 2) * step // 2, width, step):
            x_j, y_j = x + int(rng.integers(-6, 7)), y + int(rng.integers(-6, 7))
            if any(
                np.hypot(x_j - cx, y_j - cy) < radius + 6 + red_cell_radius
                for cx, cy, (radius, _) in leukocytes
            ):
                continue
            cv2.circle(image, (x_j, y_j), red_cell_radius, RED_CELL, -1, cv2.LINE_AA)
            cv2.circle(image, (x_j, y_j), red_cell_radius // 3, RED_CELL_PALLOR, -1, cv2.LINE_AA)
    boxes = []
    for cx, cy, (radius, lobes) in leukocytes:
        cv2.circle(image, (cx, cy), radius, CYTOPLASM, -1, cv2.LINE_AA)
        for dx, dy, rx, ry in lobes:
            cv2.ellipse(image, (cx + dx, cy + dy), (rx, ry), 0, 0, 360, NUCLEUS, -1, cv2.LINE_AA)
        boxes.append((cx - radius, cy - radius, cx + radius + 1, cy + radius + 1))
    for x, y in platelets:
        cv2.circle(image, (x, y), 7, PLATELET, -1, cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), 1.2)
    noise = rng.normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), boxes


# A neutrophil: four nuclear lobes in a C, with clear gaps between them, in ample cytoplasm.
LOBED = (70, ((-40, -25, 20, 24), (-30, 28, 20, 22), (15, 35, 20, 20), (38, -10, 18, 26)))
# A lymphocyte: one round nucleus in a thin rim of cytoplasm.
ROUND = (56, ((0, 0, 44, 40),))


def nucleus_pieces(rgb):
    """Separate pieces of drawn nucleus, to check a drawing really has its lobes apart."""
    close = np.abs(rgb.astype(int) - NUCLEUS).sum(axis=2) < 90
    return cv2.connectedComponents(close.astype(np.uint8))[0] - 1


def test_one_lobed_leukocyte_is_one_cell_with_the_whole_cell_box():
    rgb, (truth,) = draw_smear(leukocytes=[(320, 240, LOBED)])
    assert nucleus_pieces(rgb) == 4

    result = detect_leukocytes(rgb)

    assert isinstance(result, DetectionResult)
    assert len(result.cells) == 1, "the four lobes must be merged into one leukocyte"
    cell = result.cells[0]
    assert isinstance(cell, DetectedCell)
    assert box_iou(cell.box, truth) >= 0.6
    assert abs(cell.centre[0] - 320) < 20 and abs(cell.centre[1] - 240) < 20
    assert 0.5 <= cell.score <= 1.0
    assert 1.5 <= result.scale <= 2.7


def test_two_leukocytes_are_two_cells_sorted_by_score():
    rgb, truths = draw_smear(leukocytes=[(150, 160, LOBED), (470, 320, ROUND)])

    cells = detect_leukocytes(rgb).cells

    assert len(cells) == 2
    assert cells[0].score >= cells[1].score
    for truth in truths:
        assert max(box_iou(cell.box, truth) for cell in cells) >= 0.5


def test_touching_nuclei_of_two_large_leukocytes_are_split_in_two():
    # BCCD-sized nuclei (~80 reference px across, wider than a red cell) pressed together.
    big = (96, ((0, 0, 88, 76),))
    rgb, truths = draw_smear(leukocytes=[(235, 240, big), (405, 240, big)])

    cells = detect_leukocytes(rgb).cells

    assert len(cells) == 2
    centres = sorted(cell.centre[0] for cell in cells)
    assert abs(centres[0] - 235) < 25 and abs(centres[1] - 405) < 25


def test_a_nucleus_that_shows_the_red_cell_ruler_wrong_is_never_split_by_it():
    # Red cells a quarter of their size read the scale as ~0.5, so the nucleus is several red cells
    # wide: the detector measures from the nucleus instead, a scale too rough to tell two touching
    # nuclei from two lobes joined by a strand, and keeps the lobes one cell.
    lobes_far_apart = (130, ((-80, 0, 30, 36), (80, 0, 30, 36), (0, 0, 55, 6)))
    rgb, _ = draw_smear(leukocytes=[(320, 240, lobes_far_apart)], red_cell_radius=12)
    assert estimate_scale(rgb) < 0.6

    result = detect_leukocytes(rgb)

    assert result.scale > 1.2, "the scale is read from the nucleus"
    assert len(result.cells) == 1
    assert abs(result.cells[0].centre[0] - 320) < 20


def test_a_small_lobe_on_a_long_strand_stays_with_its_nucleus():
    # Split in two, the group's halves lie far enough apart for two nuclei, but one of them is a
    # lobe too small to be a leukocyte's whole nucleus: one cell, not an extra one in the count.
    strand_lobe = (170, ((-60, 0, 64, 68), (130, 0, 28, 28), (45, 0, 70, 6)))
    rgb, _ = draw_smear(leukocytes=[(320, 240, strand_lobe)])

    cells = detect_leukocytes(rgb).cells

    assert len(cells) == 1
    x0, _, x1, _ = cells[0].box
    assert x0 < 320 - 60 and x1 > 320 + 130, "the box holds both lobes"


def test_two_small_leukocytes_a_cytoplasm_width_apart_are_two_cells():
    # Two lymphocyte-sized nuclei ~11 reference px apart, as BloodImage_00034's two cells lie:
    # too small and too close for the touching-nuclei split, so only the lobe-joining gap
    # keeps them apart.
    small = (40, ((0, 0, 34, 34),))
    rgb, truths = draw_smear(leukocytes=[(270, 240, small), (360, 240, small)])

    cells = detect_leukocytes(rgb).cells

    assert len(cells) == 2
    for truth in truths:
        assert max(box_iou(cell.box, truth) for cell in cells) >= 0.5


def test_smear_without_leukocyte_gives_no_cells():
    rgb, _ = draw_smear(platelets=[(60, 60), (400, 200), (590, 420)])

    result = detect_leukocytes(rgb)

    assert result.cells == []
    assert result.scale > 0


def test_platelets_beside_a_leukocyte_are_ignored():
    platelets = [(320 + 100, 240), (320, 240 - 98), (80, 400), (560, 60), (300, 440)]
    rgb, (truth,) = draw_smear(leukocytes=[(320, 240, ROUND)], platelets=platelets)

    cells = detect_leukocytes(rgb).cells

    assert len(cells) == 1
    assert box_iou(cells[0].box, truth) >= 0.6


def test_tight_crop_of_one_leukocyte_gives_one_cell():
    rgb, _ = draw_smear(leukocytes=[(320, 240, LOBED)])
    crop = np.ascontiguousarray(rgb[165:316, 245:396])

    cells = detect_leukocytes(crop).cells

    assert len(cells) == 1
    assert abs(cells[0].centre[0] - 75) < 20 and abs(cells[0].centre[1] - 75) < 20


def test_scale_follows_the_magnification_not_the_pixel_count():
    rgb, _ = draw_smear(leukocytes=[(320, 240, LOBED)])
    bigger = cv2.resize(rgb, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)

    small, large = detect_leukocytes(rgb), detect_leukocytes(bigger)

    assert large.scale / small.scale == pytest.approx(1.5, rel=0.15)
    assert len(large.cells) == 1
    assert large.cells[0].centre == pytest.approx((480, 360), abs=30)


def test_background_ringed_by_red_cells_does_not_inflate_the_scale():
    # Loose red cells, and a ring of touching ones around a patch of background the size of
    # several cells: only the cells' own pale centres may count as cell.
    loose, _ = draw_smear()
    ringed = np.zeros_like(loose)
    ringed[:] = BACKGROUND
    ringed[:, :210] = loose[:, :210]
    centre, radius = (440, 240), 150
    for angle in np.linspace(0, 2 * np.pi, 13)[:-1]:
        x = int(centre[0] + radius * np.cos(angle))
        y = int(centre[1] + radius * np.sin(angle))
        cv2.circle(ringed, (x, y), RED_CELL_RADIUS, RED_CELL, -1, cv2.LINE_AA)
        cv2.circle(ringed, (x, y), RED_CELL_RADIUS // 3, RED_CELL_PALLOR, -1, cv2.LINE_AA)
    ringed = cv2.GaussianBlur(ringed, (0, 0), 1.2)

    assert estimate_scale(ringed) == pytest.approx(estimate_scale(loose), rel=0.15)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((48, 64), np.uint8),
        np.zeros((48, 64, 4), np.uint8),
        np.zeros((48, 64, 3), np.float32),
        np.zeros((4, 4, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
    ids=["grey", "rgba", "float", "tiny", "list"],
)
def test_wrong_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        detect_leukocytes(bad)


def test_cell_window_is_a_training_sized_field_centred_on_the_cell():
    rgb, _ = draw_smear(leukocytes=[(320, 240, ROUND)])
    result = detect_leukocytes(rgb)

    window = cell_window(rgb, result.cells[0], result.scale)

    assert window.shape == (240, 320, 3) and window.dtype == np.uint8
    centre = window[110:130, 150:170].reshape(-1, 3).mean(axis=0)
    assert centre[2] - centre[1] > 60, "the nucleus should fill the window's centre"


def test_cell_window_shows_the_photographs_background_past_its_edge():
    rgb, _ = draw_smear(leukocytes=[(320, 240, ROUND)])
    corner = DetectedCell(box=(0, 0, 40, 40), score=1.0)

    window = cell_window(rgb, corner, 2.0)

    # Past the edge: the bare slide's colour (the drawn background, blurred and noisy), not black.
    past_edge = window[:100, :140].reshape(-1, 3).astype(int)
    assert np.abs(past_edge - BACKGROUND).max() <= 8
    assert window[-60:, -60:].min() > 60


def test_cell_window_of_a_reference_field_pads_black_as_its_training_copies_do():
    # A 240x320 photograph is a field like blood-cell-images', whose rotated copies have black
    # corners: the bundled networks learnt windows padded the same way.
    rgb, _ = draw_smear(leukocytes=[(160, 120, ROUND)], size=(240, 320))
    corner = DetectedCell(box=(0, 0, 40, 40), score=1.0)

    window = cell_window(rgb, corner, 1.0)

    assert window[:100, :140].max() == 0
    assert window[-60:, -60:].min() > 40  # the photograph itself, nucleus and all


def test_cell_window_of_a_high_magnification_photograph_averages_what_it_shrinks():
    # At scale 3 each window pixel covers 3x3 of the photograph: sampled instead of averaged, stripes
    # a pixel wide alias into full black and white bands, detail no training image had.
    rgb = np.zeros((720, 960, 3), np.uint8)
    rgb[:, ::2] = 255
    window = cell_window(rgb, DetectedCell(box=(430, 310, 530, 410), score=1.0), 3.0)

    assert abs(window.mean() - 127.5) < 2
    assert window.std() < 60


# --- real images (skipped where the shared datasets are absent) ---


def _dataset(*parts):
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"dataset not available at {path} (set LEUKOSCOPE_DATASETS_DIR)")
    return path


def _read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _wbc_boxes(xml_path):
    boxes = []
    for obj in ElementTree.parse(xml_path).findall("object"):
        if obj.findtext("name") == "WBC":
            box = obj.find("bndbox")
            boxes.append(tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


@pytest.mark.parametrize("number", [0, 1, 36, 100, 150, 222, 300, 410])
def test_real_smear_matches_its_annotated_leukocyte(number):
    bccd = _dataset("bccd-smears")
    stem = f"BloodImage_{number:05d}"

    result = detect_leukocytes(_read_rgb(bccd / "JPEGImages" / f"{stem}.jpg"))

    truths = _wbc_boxes(bccd / "Annotations" / f"{stem}.xml")
    assert len(result.cells) == len(truths)
    for truth in truths:
        assert max(box_iou(cell.box, truth) for cell in result.cells) >= 0.5
    assert 1.6 <= result.scale <= 2.6


def test_real_smear_with_two_neighbouring_leukocytes_gives_both():
    # A basophil and a neutrophil whose nuclei lie ~10 reference px apart.
    bccd = _dataset("bccd-smears")

    result = detect_leukocytes(_read_rgb(bccd / "JPEGImages" / "BloodImage_00034.jpg"))

    truths = _wbc_boxes(bccd / "Annotations" / "BloodImage_00034.xml")
    assert len(truths) == 2
    assert len(result.cells) == 2
    for truth in truths:
        assert max(box_iou(cell.box, truth) for cell in result.cells) >= 0.5


@pytest.mark.parametrize(
    "name",
    [
        "TEST/EOSINOPHIL/_0_7845.jpeg",
        "TEST/LYMPHOCYTE/_0_1248.jpeg",
        "TEST/MONOCYTE/_0_2900.jpeg",
        "TEST/NEUTROPHIL/_0_2399.jpeg",
    ],
)
def test_training_style_field_gives_one_cell_near_the_centre(name):
    rgb = _read_rgb(_dataset("blood-cell-images", name))

    result = detect_leukocytes(rgb)

    assert len(result.cells) == 1
    x, y = result.cells[0].centre
    assert abs(x - 160) < 80 and abs(y - 120) < 60
    assert 0.7 <= result.scale <= 1.4


def test_the_middle_cell_is_a_leukocytes_reach_around_the_photographs_middle_inside_it():
    # At twice the reference scale the reach is 2 x CELL_RADIUS photograph pixels either side.
    cell = middle_cell((480, 640, 3), 2.0)
    assert cell.centre == (320.0, 240.0)
    reach = 2 * CELL_RADIUS
    assert cell.box == (320 - reach, 240 - reach, 320 + reach, 240 + reach)
    assert cell.score == 0.0
    # A tight crop smaller than the reach: the box is the whole photograph, never past its edge.
    assert middle_cell((100, 120, 3), 1.0).box == (0, 0, 120, 100)
