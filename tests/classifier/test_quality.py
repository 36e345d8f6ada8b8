"""Image-quality report: a clean drawn smear passes, degraded copies of it warn."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from classifier.field_of_view import DarkSurround
from classifier.quality import MIN_FOCUS, MIN_SCALE, QualityReport, assess_quality

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(
    os.environ.get("LEUKOSCOPE_DATASETS_DIR", PROJECT_ROOT.parent / "shared" / "datasets")
)


@pytest.fixture(scope="module")
def smear():
    """Red cells with pale centres and one leukocyte on a pale background, with camera noise."""
    rng = np.random.default_rng(3)
    image = np.zeros((480, 640, 3), np.uint8)
    image[:] = (222, 218, 228)
    for y in range(40, 480, 110):
        for x in range(40, 640, 110):
            cv2.circle(image, (x, y), 48, (212, 158, 166), -1, cv2.LINE_AA)
            cv2.circle(image, (x, y), 16, (220, 186, 194), -1, cv2.LINE_AA)
    cv2.circle(image, (320, 240), 70, (214, 198, 226), -1, cv2.LINE_AA)
    cv2.ellipse(image, (320, 240), (40, 30), 20, 0, 360, (112, 72, 192), -1, cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def scaled(rgb, gains):
    return np.clip(rgb.astype(np.float32) * np.float32(gains), 0, 255).astype(np.uint8)


def test_clean_smear_has_no_warnings(smear):
    report = assess_quality(smear)

    assert isinstance(report, QualityReport)
    assert report.warnings == [] and report.ok
    assert report.clipped_highlights == 0 and report.clipped_shadows == 0
    assert 0.45 < report.brightness < 0.9


@pytest.mark.parametrize("size", [(480, 640), (3000, 4000)])
def test_a_greyscale_photograph_warns_that_its_calls_cannot_be_trusted(smear, size):
    # The site refuses one at upload (webapp.intake); the library took any array and gave calls on
    # it, or no cell, without a word.
    grey = cv2.cvtColor(cv2.cvtColor(smear, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    grey = cv2.resize(grey, size[::-1], interpolation=cv2.INTER_LINEAR)
    assert ("The image holds no colour: the network tells cells apart by their stain, and its calls on a "
            "greyscale photograph cannot be trusted.") in assess_quality(grey).warnings
    coloured = cv2.resize(smear, size[::-1], interpolation=cv2.INTER_LINEAR)
    assert not any("colour:" in warning for warning in assess_quality(coloured).warnings)


def test_blurred_smear_warns_out_of_focus(smear):
    sharp = assess_quality(smear)
    blurred = assess_quality(cv2.GaussianBlur(smear, (0, 0), 3))

    assert blurred.focus < sharp.focus / 3
    assert any("out of focus" in warning for warning in blurred.warnings)


def test_focus_is_comparable_between_image_sizes(smear):
    bigger = cv2.resize(smear, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)

    assert assess_quality(bigger).focus == pytest.approx(assess_quality(smear).focus, rel=0.5)


def test_overexposed_smear_warns(smear):
    report = assess_quality(scaled(smear, 1.5))

    assert report.clipped_highlights > 0.5
    assert any("overexposed" in warning for warning in report.warnings)


def test_a_sharp_but_overexposed_smear_is_not_called_out_of_focus(smear):
    # The audit's brightened field: its clipped highlights read as blur to the focus measure.
    report = assess_quality(scaled(smear, 1.9))

    assert report.focus < MIN_FOCUS < assess_quality(smear).focus  # it reads as blurred
    assert [warning for warning in report.warnings if "overexposed" in warning]
    assert not [warning for warning in report.warnings if "out of focus" in warning]


def test_underexposed_smear_warns(smear):
    report = assess_quality(scaled(smear, 0.4))

    assert report.brightness < 0.45
    assert any("underexposed" in warning for warning in report.warnings)


def test_black_field_stop_alone_does_not_warn_but_a_black_image_does(smear):
    vignetted = smear.copy()
    outside = np.ones(smear.shape[:2], np.uint8)
    cv2.circle(outside, (320, 240), 300, 0, -1)
    vignetted[outside > 0] = 0
    mostly_black = smear.copy()
    mostly_black[:, 150:] = 0

    assert assess_quality(vignetted).warnings == []
    assert any("black" in warning for warning in assess_quality(mostly_black).warnings)


@pytest.mark.parametrize("noise", [0, 25], ids=["black", "a camera's noisy black"])
def test_a_photograph_through_the_eyepiece_is_judged_on_its_round_field(smear, noise):
    """A phone held to the eyepiece photographs the field as a circle with black all around: here
    63% of the photograph. Its black is neither a dark photograph nor a light that failed."""
    through_eyepiece = np.random.default_rng(0).integers(0, noise + 1, smear.shape).astype(np.uint8)
    field = np.zeros(smear.shape[:2], np.uint8)
    cv2.circle(field, (320, 240), 190, 1, -1)
    through_eyepiece[field > 0] = smear[field > 0]

    report = assess_quality(through_eyepiece)
    assert report.warnings == []
    assert report.brightness == pytest.approx(assess_quality(smear).brightness, abs=0.02)
    # The pipeline passes the surround it found: the same report, without looking twice.
    assert assess_quality(through_eyepiece, surround=DarkSurround.find(through_eyepiece)) == report
    # Told there is none, the black is judged as any black.
    assert assess_quality(through_eyepiece, surround=None).warnings


def _lit_only_inside(smear, field, noise):
    """The smear where ``field`` is set, a camera's black (0 to ``noise``) elsewhere."""
    dark = np.random.default_rng(0).integers(0, noise + 1, smear.shape).astype(np.uint8)
    dark[field > 0] = smear[field > 0]
    return dark


@pytest.mark.parametrize("noise", [0, 14], ids=["black", "a camera's noisy black"])
def test_a_small_round_spot_of_light_is_no_eyepiece_field_and_warns(smear, noise):
    """A field diaphragm closed down, or a lamp failing, lights a small round spot: 3% of the
    photograph here. Round as an eyepiece's field is, it shows too little of the slide to pass."""
    spot = np.zeros(smear.shape[:2], np.uint8)
    cv2.circle(spot, (320, 240), 55, 1, -1)

    warnings = assess_quality(_lit_only_inside(smear, spot, noise)).warnings
    assert any("Most of the image is black" in warning for warning in warnings)


def test_a_lamp_lighting_a_third_warns_through_a_cameras_noisy_black(smear):
    """The rest of such a photograph is black with the camera's noise in it (0-14), over 8 in most
    pixels: it shows no slide all the same."""
    patch = np.zeros(smear.shape[:2], np.uint8)
    patch[:, :213] = 1

    warnings = assess_quality(_lit_only_inside(smear, patch, 14)).warnings
    assert any("Most of the image is black" in warning for warning in warnings)


@pytest.mark.parametrize("gains", [(1.0, 0.5, 1.1), (1.05, 1.0, 0.5)], ids=["magenta", "yellow"])
def test_colour_cast_past_the_measured_harmless_range_warns(smear, gains):
    report = assess_quality(scaled(smear, gains))

    assert max(abs(report.background_a), abs(report.background_b)) > 40
    assert any("colour cast" in warning for warning in report.warnings)


@pytest.mark.parametrize("gains", [(1.0, 0.85, 1.1), (1.05, 1.0, 0.8)], ids=["magenta", "yellow"])
def test_a_cast_the_white_balance_removes_flags_nothing(smear, gains):
    """A warning flags every cell for review; a tint of 15-20% in one channel costs no calls."""
    report = assess_quality(scaled(smear, gains))

    assert max(abs(report.background_a), abs(report.background_b)) > 15
    assert report.warnings == []


def test_a_channel_clipped_over_half_the_photograph_warns(smear):
    """A warmer camera on a slide whose red is already near 255: the bare slide's true colour is
    lost in that channel, so the white balance cannot undo the tint."""
    report = assess_quality(scaled(smear, (1.25, 1.15, 1.0)))

    assert report.clipped_highlights > 0.45 and report.brightness < 0.9
    assert any("overexposed" in warning for warning in report.warnings)


def test_the_cast_read_is_the_one_white_balance_removes(smear):
    from classifier.preparation import background_gains, white_balanced

    tinted = scaled(smear, (1.0, 0.85, 1.1))
    balanced = white_balanced(tinted, background_gains(tinted))
    report = assess_quality(balanced)

    assert max(abs(report.background_a), abs(report.background_b)) < 1.5
    assert not any("colour cast" in warning for warning in report.warnings)


def test_report_round_trips_through_json(smear):
    report = assess_quality(cv2.GaussianBlur(smear, (0, 0), 3))

    stored = json.loads(json.dumps(report.to_dict()))

    assert stored["warnings"] == report.warnings
    assert set(stored) >= {"focus", "clipped_highlights", "clipped_shadows", "brightness"}
    assert stored["focus"] == report.focus


@pytest.mark.parametrize(
    "bad", [np.zeros((48, 64), np.uint8), np.zeros((48, 64, 3), np.float64), "image.jpg"]
)
def test_wrong_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        assess_quality(bad)


@pytest.mark.parametrize("number", [0, 36, 150, 300])
def test_real_smears_pass_without_warnings(number):
    path = DATASETS / "bccd-smears" / "JPEGImages" / f"BloodImage_{number:05d}.jpg"
    if not path.exists():
        pytest.skip(f"dataset not available at {path} (set LEUKOSCOPE_DATASETS_DIR)")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)

    assert assess_quality(rgb).warnings == []


def test_real_analyser_photographs_pass_without_warnings():
    """PBC's CellaVision photographs: a warm background with its red at 254-255, read well."""
    folder = DATASETS / "pbc" / "TEST" / "NEUTROPHIL"
    if not folder.is_dir():
        pytest.skip(f"dataset not available at {folder} (set LEUKOSCOPE_DATASETS_DIR)")
    paths = sorted(folder.iterdir())[:8]
    reports = [assess_quality(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)) for path in paths]

    assert [report.warnings for report in reports] == [[]] * len(paths)
    assert max(report.background_b for report in reports) > 10  # the cast is there, and harmless


def test_cells_photographed_at_too_low_a_resolution_warn(smear):
    # The scale is the detector's reading (image px per reference px): 0.8-1.2 for the training
    # photographs; the audit's 40x40 photograph of a cell read far under MIN_SCALE.
    assert assess_quality(smear, scale=1.0).warnings == []
    assert assess_quality(smear, scale=MIN_SCALE).warnings == []
    (warning,) = assess_quality(smear, scale=0.2).warnings
    assert warning.startswith("The cells are photographed at low resolution (a red cell about 9.5 "
                              "pixels across, against 14.3 or more needed)")
    (just_under,) = assess_quality(smear, scale=0.299).warnings  # 14.29 px: never "about 14.3"
    assert "about 14.2 pixels across, against 14.3 or more needed" in just_under
    assert assess_quality(smear).warnings == []  # no cell found, no scale read: nothing to say
