"""The black around an eyepiece's round field: found where a photograph has it, nowhere else, and
an edge that cuts the cells it reaches, as the photograph's own edge does."""

import cv2
import numpy as np
import pytest

from classifier.field_of_view import DarkSurround
from classifier.pipeline import analyse_smear
from tests.classifier.test_inference import make_classifier

INSIDE, ON_THE_CIRCLE = (330, 240), (150, 240)


def slide(height=480, width=640, seed=0):
    """A stained field: red cells, and two leukocytes, one of them where the circle will be."""
    rng = np.random.default_rng(seed)
    rgb = np.full((height, width, 3), (225, 215, 220), np.uint8)
    for _ in range(40):
        cv2.circle(rgb, (int(rng.integers(0, width)), int(rng.integers(0, height))), 24, (215, 150, 150), -1)
    for centre in (INSIDE, ON_THE_CIRCLE):
        cv2.circle(rgb, centre, 40, (200, 180, 220), -1)
        cv2.circle(rgb, centre, 24, (90, 50, 170), -1)
    return rgb


def through_an_eyepiece(rgb, radius=175):
    """Black (with a camera's noise) outside a circle in the middle, as a phone held to the
    eyepiece photographs the field."""
    height, width = rgb.shape[:2]
    field = np.zeros((height, width), np.uint8)
    cv2.circle(field, (width // 2, height // 2), radius, 255, -1)
    noise = np.random.default_rng(1).integers(0, 14, rgb.shape, dtype=np.uint8)
    return np.where(field[..., None] > 0, rgb, noise)


def test_the_cell_the_eyepiece_circle_cuts_reaches_its_surround_and_the_one_inside_does_not():
    surround = DarkSurround.find(through_an_eyepiece(slide()))
    assert surround is not None
    assert surround.touches((141, 212, 180, 269))  # the half the circle shows of the cell on it
    assert not surround.touches((301, 210, 361, 271))


def test_the_pipeline_marks_the_cells_the_circle_cuts():
    analysis = analyse_smear(through_an_eyepiece(slide()), make_classifier("leukonet", "4class"),
                             review_threshold=0.8)
    assert len(analysis.cells) == 2
    cut = {cell.box[0] < 200: cell.touches_dark_surround for cell in analysis.cells}
    assert cut == {True: True, False: False}  # the cell on the circle, the one inside
    plain = analyse_smear(slide(), make_classifier("leukonet", "4class"), review_threshold=0.8)
    assert len(plain.cells) == 2 and not any(cell.touches_dark_surround for cell in plain.cells)


def test_a_large_photograph_is_measured_small_and_answered_in_its_own_pixels():
    big = cv2.resize(through_an_eyepiece(slide()), (3200, 2400), interpolation=cv2.INTER_NEAREST)
    surround = DarkSurround.find(big)
    assert surround.touches((705, 1060, 900, 1345))
    assert not surround.touches((1505, 1050, 1805, 1355))


@pytest.mark.parametrize("darkened", ["nothing", "a speck at the edge", "a nucleus in the middle"])
def test_a_photograph_without_an_eyepiece_surround_has_none(darkened):
    rgb = slide()
    if darkened == "a speck at the edge":
        rgb[:40, :40] = 0  # 0.5% of the photograph: dust, a dark corner
    elif darkened == "a nucleus in the middle":
        cv2.circle(rgb, INSIDE, 60, (20, 10, 30), -1)  # darker than any stain, but not joined to the edge
    assert DarkSurround.find(rgb) is None


def test_black_around_a_circle_leaves_a_round_field_and_black_beside_a_lamps_patch_does_not():
    half_lit = slide()
    half_lit[:, 320:] = 0  # a misaligned lamp
    assert DarkSurround.find(through_an_eyepiece(slide(), radius=200)).leaves_a_round_field
    assert not DarkSurround.find(half_lit).leaves_a_round_field
