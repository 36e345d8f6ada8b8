"""bench/shifts.py: each change of a photograph does what its name says, and the bundled network
is measured on every one of them for a tiny drawn source."""

import io

import numpy as np
from PIL import Image

from classifier.rendering import decode_rgb
from tests.classifier.test_bench_sources import load_bench
from tests.colour_profiles import display_p3_profile
from tests.synthetic_cells import write_cell_folder

bench = load_bench("shifts")


def field():
    """A pale 240x320 slide with a purple nucleus in its centre."""
    image = np.full((240, 320, 3), (230, 214, 200), np.uint8)
    image[100:140, 140:180] = (110, 60, 170)
    return image


def changed(name, rgb):
    (shift,) = [shift for shift in bench.SHIFTS if shift.name.startswith(name)]
    return shift, shift.change(rgb)


def test_a_magnification_resizes_the_photograph_and_says_by_how_much():
    shift, bigger = changed("magnified 2x", field())

    assert bigger.shape == (480, 640, 3) and shift.magnification == 2.0


def test_a_warmer_camera_clips_at_white_as_a_camera_does():
    _, warm = changed("warm camera", field())

    assert warm[0, 0].tolist() == [255, 214, 170]


def test_stain_strength_scales_optical_density_and_leaves_white_white():
    rgb = field()
    rgb[0, 0] = (255, 255, 255)
    heavier = bench._stain_strength(1.35)(rgb)
    density = -np.log(rgb[120, 160].astype(float) / 255)

    assert heavier[0, 0].tolist() == [255, 255, 255]
    assert np.allclose(-np.log(heavier[120, 160] / 255), 1.35 * density, atol=0.02)


def test_the_display_p3_numbers_are_what_the_site_reads_back_through_a_p3_profile():
    """The shift stands for a P3 camera's file read without its profile: with the profile, the
    site reads the photograph's own colours again (to rounding)."""
    rgb = field()
    _, p3 = changed("Display P3", rgb)
    buffer = io.BytesIO()
    Image.fromarray(p3).save(buffer, format="PNG", icc_profile=display_p3_profile())

    assert (p3[120, 160] != rgb[120, 160]).all()  # raw, the purple is a greyer one
    assert np.abs(decode_rgb(buffer.getvalue()).astype(int) - rgb).max() <= 2


def test_every_shift_is_measured_on_each_source(tmp_path, capsys):
    source = write_cell_folder(tmp_path / "lab", per_class=1, test_per_class=2, seed=4)

    bench.main(["--data", str(source), "--per-class", "2"])

    out = capsys.readouterr().out
    lines = out.splitlines()
    table = lines[[k for k, line in enumerate(lines) if line.startswith("photographed as")][0] + 1:]
    rows = {line[:40].strip(): line[40:].split() for line in table if line.strip()}
    assert list(rows) == [shift.name for shift in bench.SHIFTS]
    cells, accuracy = rows["as photographed"][:2]
    assert int(cells) == 8 and accuracy.endswith("%")
    assert rows["magnified 2x"][-2] != "-"  # the scale reading is compared with the zoom


def test_the_published_binary_network_is_measured_too(tmp_path, capsys):
    from classifier.model_folder import BUNDLED_MODELS_DIR

    source = write_cell_folder(tmp_path / "lab", per_class=1, test_per_class=1, seed=5)
    binary = BUNDLED_MODELS_DIR / "paper-binary"

    bench.main(["--data", str(source), "--per-class", "2", "--model-dir", str(binary)])

    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith("as photographed")][0].split()
    assert row[2] == "4" and row[3].endswith("%") and row[4] == "-"  # no four types to score


def test_validation_cells_are_the_networks_own_validation_split_of_train(tmp_path):
    """Choosing a recipe on the shifts must not read TEST: the cells come from the split the run
    held out, rebuilt from its seed, and never from what it trained on."""
    import pytest

    from classifier.training.data import select_sources

    source = write_cell_folder(tmp_path / "lab", per_class=6, test_per_class=1, seed=6)
    metadata = {"task": "4class", "seed": 3, "validation_count": 12,
                "hyperparameters": {"validation_fraction": 0.5}}

    drawn = bench.validation_images(str(source), metadata)
    (split,) = select_sources([str(source)], "4class", None, 3, 0.5, 3)

    assert drawn and {image.path for image in drawn} == {image.path for image in split.validation}
    assert not {image.path for image in drawn} & {image.path for image in split.train}
    assert all("TRAIN" in str(image.path) for image in drawn)
    with pytest.raises(SystemExit, match="without a validation split"):
        bench.validation_images(str(source), {"task": "4class", "seed": 3, "hyperparameters": {}})
