from pathlib import Path

import numpy as np
import pytest

from classifier import dataset
from classifier.errors import TrainingDataError
from classifier.labels import FOUR_CLASSES
from classifier.preparation import (
    REFERENCE_RED_CELL_DENSITY,
    column_medians,
    prepare_batch,
    prepare_window,
    red_cell_density,
)
from tests.classifier.drawn_fields import draw_field, write_split
from tests.colour_profiles import swapped_primaries_profile

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "blood-cell-images"


def test_layout_with_train_and_test(tmp_path):
    write_split(tmp_path, "TRAIN", 2)
    write_split(tmp_path, "TEST", 1)
    layout = dataset.resolve_layout(tmp_path)
    assert layout.train_dir == tmp_path / "TRAIN"
    assert set(layout.eval_dirs) == {"TEST"}
    images = dataset.list_images(layout.train_dir, "binary", "TRAIN")
    assert {i.class_name for i in images} == {"MONONUCLEAR", "POLYNUCLEAR"}


def test_a_folder_of_class_folders_is_its_own_split(tmp_path):
    write_split(tmp_path, "ANY", 2)
    layout = dataset.resolve_layout(tmp_path / "ANY")
    assert layout.train_dir == tmp_path / "ANY" and layout.eval_dirs == {}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
        (lambda p: p, "not a folder-per-class layout"),
    ],
)
def test_bad_paths_raise_a_readable_error(tmp_path, make, message):
    with pytest.raises(TrainingDataError, match=message):
        dataset.resolve_layout(make(tmp_path))


def test_a_folder_of_other_folders_is_refused_counting_them_without_naming_them(tmp_path):
    # A mistyped path may be any server folder: the reason, shown on the site, counts what it
    # holds and names none of it.
    for k in range(30):
        (tmp_path / f"folder{k:02d}").mkdir()
    with pytest.raises(TrainingDataError) as refused:
        dataset.list_images(tmp_path, "4class", "TRAIN")
    assert str(refused.value) == (
        f"{tmp_path} has 30 folders but none named for one of the 4class task's classes (EOSINOPHIL, "
        "LYMPHOCYTE, MONOCYTE, NEUTROPHIL)")


def test_a_labs_own_spelling_of_types_and_splits_is_read(tmp_path):
    # The own-data audit: "Test/" was passed by (measured on validation only), "train/" refused as
    # holding no class folder, and "lymphocytes/" left out of training unnamed.
    write_split(tmp_path, "TRAIN", 1)
    write_split(tmp_path, "TEST", 1)
    for split, spelt in (("TRAIN", "train"), ("TEST", "Test")):
        (tmp_path / split).rename(tmp_path / spelt)
    for name, spelt in (("LYMPHOCYTE", "lymphocytes"), ("MONOCYTE", "Monocyte"),
                        ("NEUTROPHIL", "neutrophils"), ("EOSINOPHIL", "eosinophil-s")):
        (tmp_path / "Test" / name).rename(tmp_path / "Test" / spelt)
    layout = dataset.resolve_layout(tmp_path)
    assert layout.train_dir == tmp_path / "train" and layout.eval_dirs == {"TEST": tmp_path / "Test"}
    images, split = dataset.evaluation_images(tmp_path, "4class")
    assert split == "TEST" and sorted(image.class_name for image in images) == [
        "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    assert dataset.type_of_folder(" immature granulocytes ") == "IMMATURE_GRANULOCYTE"
    assert dataset.type_of_folder("Platelets") == "PLATELET" and dataset.type_of_folder("bands") == "BANDS"
    # Passed by, it is said: every folder with photographs by name, what each holds, and the type an
    # abbreviation names where the task has it.
    for name, count in (("IG", 2), ("band", 1), ("SMUDGE_CELL", 1)):
        (tmp_path / "Test" / name).mkdir()
        for index in range(count):
            (tmp_path / "Test" / name / f"{index}.png").write_bytes(b"")
    (tmp_path / "Test" / "BASOPHIL").mkdir()
    (tmp_path / "Test" / "apparmor.d").mkdir()
    assert dataset.left_out_note(tmp_path / "Test", "4class", "this evaluation") == (
        f"{tmp_path / 'Test'} also holds BASOPHIL/ (no images), IG/ (2 images), SMUDGE_CELL/ (1 image), "
        "band/ (1 image; rename it NEUTROPHIL/ to count its cells as that type), eosinophil-s/ (1 image), "
        "1 other folder without images: not types of the 4class task, left out of this evaluation.")
    note = dataset.left_out_note(tmp_path / "Test", "8class")
    assert "IG/ (2 images; rename it IMMATURE_GRANULOCYTE/ to count its cells as that type)" in note
    assert "BASOPHIL" not in note


def test_image_formats_the_site_takes_are_trained_on(tmp_path):
    # A lab whose microscope writes TIFF had its photographs passed by, uncounted.
    from PIL import Image

    folder = tmp_path / "NEUTROPHIL"
    folder.mkdir()
    rgb = draw_field("NEUTROPHIL", 1)
    for name in ("a.tif", "b.TIFF", "c.bmp", "d.webp", "e.png"):
        Image.fromarray(rgb).save(folder / name)
    images = dataset.list_images(tmp_path, "4class", "")
    assert [Path(image.path).name for image in images] == ["a.tif", "b.TIFF", "c.bmp", "d.webp", "e.png"]
    for image in images:
        assert dataset.decode_image(image.path).shape == rgb.shape


def test_photographs_kept_in_subfolders_of_a_class_folder_are_said_to_be_there(tmp_path):
    nested = tmp_path / "TRAIN" / "NEUTROPHIL" / "slide1"
    nested.mkdir(parents=True)
    for index in range(3):
        (nested / f"{index}.jpg").write_bytes(b"")
    (tmp_path / "TEST").mkdir()
    (tmp_path / "TEST" / "NEUTROPHIL").symlink_to(tmp_path / "TRAIN" / "NEUTROPHIL")
    with pytest.raises(TrainingDataError) as refused:
        dataset.evaluation_images(tmp_path, "4class")
    assert str(refused.value) == (
        f"{tmp_path / 'TEST'} holds no images for the 4class task: its class folders keep their images "
        "in subfolders (NEUTROPHIL/ 3), which are not read; move them up into the class folder")


def test_hidden_files_beside_the_photographs_are_not_listed(tmp_path):
    write_split(tmp_path, "TRAIN", 2)
    lymphocytes = tmp_path / "TRAIN" / "LYMPHOCYTE"
    photograph = next(lymphocytes.iterdir())
    (lymphocytes / f"._{photograph.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (lymphocytes / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (lymphocytes / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    listed = [Path(image.path).name for image in images if image.class_name == "LYMPHOCYTE"]
    assert listed == sorted(p.name for p in lymphocytes.iterdir() if not p.name.startswith(".")
                            and p.name != "Thumbs.db")
    assert len(listed) == 2


def test_validation_split_keeps_groups_together():
    images = [
        dataset.LabelledImage(f"/x/{c}{g}{k}.jpeg", c, "TRAIN", group=f"{c}{g}")
        for c in FOUR_CLASSES
        for g in range(6)
        for k in range(5)
    ]
    train, validation = dataset.split_validation(images, 0.2, seed=1)
    assert len(train) + len(validation) == len(images)
    assert not {i.group for i in train} & {i.group for i in validation}
    assert {i.class_name for i in validation} == set(FOUR_CLASSES)


def test_unreadable_files_are_marked_not_fatal(tmp_path):
    write_split(tmp_path, "TRAIN", 1)
    bad = tmp_path / "TRAIN" / "MONOCYTE" / "broken.jpeg"
    bad.write_bytes(b"not a jpeg")
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    spec = {"height": 60, "width": 80, "mode": "field"}
    inputs, ok, _ = dataset.load_prepared(images, spec, cache_dir=tmp_path / "cache")
    assert ok.sum() == 4 and not ok[[i.path for i in images].index(str(bad))]
    assert inputs.shape == (5, 60, 80, 3)
    again, ok_again, _ = dataset.load_prepared(images, spec, cache_dir=tmp_path / "cache")
    assert np.array_equal(again, inputs) and np.array_equal(ok, ok_again)


def test_a_photograph_without_colour_is_skipped_as_upload_refuses_it_and_said_why(tmp_path):
    """Upload refuses a greyscale photograph (webapp.intake); training learnt from it, 8- or 16-bit
    or grey in three channels alike, and said nothing."""
    from PIL import Image

    write_split(tmp_path, "TRAIN", 1)
    colour = np.asarray(Image.open(tmp_path / "TRAIN" / "MONOCYTE" / "_0_2.jpeg").convert("RGB"))
    grey = np.asarray(Image.fromarray(colour).convert("L"))
    folder = tmp_path / "TRAIN" / "MONOCYTE"
    Image.fromarray(grey).save(folder / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(folder / "grey_rgb.png")
    Image.fromarray(colour[:5, :5]).save(folder / "tiny.png")
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    _, ok, _ = dataset.load_prepared(images, {"height": 60, "width": 80, "mode": "field"},
                                     cache_dir=tmp_path / "cache")
    skipped = {Path(row["path"]).name: row["reason"] for row in dataset.skipped_files(images, ok)}
    assert ok.sum() == 4 and skipped == {
        "grey8.png": "greyscale: the network learns and calls cells by their stain colours",
        "grey16.png": "greyscale: the network learns and calls cells by their stain colours",
        "grey_rgb.png": "greyscale: the network learns and calls cells by their stain colours",
        "tiny.png": "smaller than 8 pixels a side"}


def test_a_photograph_over_uploads_pixel_limit_is_skipped_from_its_header_and_said_why(tmp_path):
    """Upload refuses a photograph over 40 megapixels, a guard on memory; training decoded it, two
    at a time, and learnt from it."""
    from PIL import Image

    write_split(tmp_path, "TRAIN", 1)
    folder = tmp_path / "TRAIN" / "MONOCYTE"
    width, height = 8000, 5001  # one row over 40 megapixels
    Image.new("RGB", (width, height), (200, 150, 180)).save(folder / "large.png", compress_level=1)
    # Its header alone, the pixels cut off: refused for its size, not as damaged, so the size was
    # read before any pixel was decoded.
    (folder / "large_header.png").write_bytes((folder / "large.png").read_bytes()[:100])
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    _, ok, _ = dataset.load_prepared(images, {"height": 60, "width": 80, "mode": "field"},
                                     cache_dir=tmp_path / "cache")
    skipped = {Path(row["path"]).name: row["reason"] for row in dataset.skipped_files(images, ok)}
    reason = "8000x5001 pixels, over the 40-megapixel limit training takes"
    assert ok.sum() == 4 and skipped == {"large.png": reason, "large_header.png": reason}


def test_a_file_replaced_since_it_was_cached_as_unreadable_is_prepared_again(tmp_path):
    """The cache was keyed by the files' paths alone: a git-lfs pointer fetched since (replaced by
    its photograph, under the same name) stayed unreadable for every later run until the cache was
    pruned, a month later."""
    import os
    import shutil

    write_split(tmp_path, "TRAIN", 1)
    photograph = tmp_path / "TRAIN" / "MONOCYTE" / "_0_2.jpeg"
    fetched = tmp_path / "fetched.jpeg"
    shutil.copy(photograph, fetched)
    photograph.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12345\n")
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    row = [image.path for image in images].index(str(photograph))
    spec, cache = {"height": 60, "width": 80, "mode": "field"}, tmp_path / "cache"
    _, ok, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert ok.sum() == 3 and not ok[row]

    os.replace(fetched, photograph)  # `git lfs pull`: the photograph in the pointer's place
    inputs, ok, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert ok.all() and inputs[row].any()
    assert len(list(cache.iterdir())) == 2

    # Put in place anew with its size and time kept (rsync -a, a checkout): read again too.
    status = photograph.stat()
    anew = tmp_path / "anew.jpeg"
    shutil.copy2(photograph, anew)
    os.replace(anew, photograph)
    assert (photograph.stat().st_size, photograph.stat().st_mtime_ns) == (status.st_size, status.st_mtime_ns)
    again, ok, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert ok.all() and np.array_equal(again, inputs) and len(list(cache.iterdir())) == 3
    # Untouched, the files are read from the cache.
    dataset.load_prepared(images, spec, cache_dir=cache)
    assert len(list(cache.iterdir())) == 3


def test_a_list_not_kept_is_prepared_without_the_cache(tmp_path):
    # A lab's reviewed cells are another list after each review: a file for them was never read again.
    write_split(tmp_path, "TRAIN", 1)
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    spec, cache = {"height": 60, "width": 80, "mode": "field"}, tmp_path / "cache"
    inputs, ok, _ = dataset.load_prepared(images, spec, cache_dir=cache, keep=False)
    assert ok.all() and inputs.shape == (4, 60, 80, 3)
    assert not cache.exists() or not any(cache.iterdir())
    kept, _, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert [path.suffix for path in cache.iterdir()] == [".npz"] and np.array_equal(kept, inputs)


def test_a_cache_write_the_disk_refuses_part_way_leaves_no_part_and_the_next_run_caches(tmp_path,
                                                                                     monkeypatch):
    # The disk audit: a full disk stopped np.savez part-way and the part stayed, under a name of the
    # run's own, so the disk stayed full and each later run left another.
    import errno

    write_split(tmp_path, "TRAIN", 1)
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    spec, cache = {"height": 60, "width": 80, "mode": "field"}, tmp_path / "cache"
    real_savez = np.savez

    def full_disk(file, **arrays):
        Path(file).write_bytes(b"PK" + b"\0" * 4096)  # what was written before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset.np, "savez", full_disk)
    inputs, ok, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert ok.all() and inputs.shape == (4, 60, 80, 3)  # the run itself goes on
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(dataset.np, "savez", real_savez)
    again, _, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert [path.name.count(".") for path in cache.iterdir()] == [1]  # prepared-<key>.npz, whole
    cached, _, _ = dataset.load_prepared(images, spec, cache_dir=cache)
    assert np.array_equal(again, inputs) and np.array_equal(cached, inputs)


def test_preparation_modes():
    window = draw_field("LYMPHOCYTE", 0)
    field = prepare_window(window, {"height": 120, "width": 160, "mode": "field"})
    assert field.shape == (120, 160, 3) and field.dtype == np.uint8
    cell = prepare_window(window, {"height": 96, "width": 96, "mode": "cell", "crop": 128})
    assert cell.shape == (96, 96, 3)
    wide = prepare_window(window, {"height": 96, "width": 96, "mode": "cell", "crop": 128}, 1.25)
    assert wide.shape == (120, 120, 3)
    batch = prepare_batch(
        [window, window], {"height": 96, "width": 96, "mode": "cell", "crop": 128}
    )
    assert batch.dtype == np.float32 and batch.shape == (2, 96, 96, 3) and batch.max() <= 1.0


def test_mask_radius_keeps_the_cell_and_blanks_its_surroundings():
    window = draw_field("NEUTROPHIL", 1)
    spec = {"height": 96, "width": 96, "mode": "cell", "crop": 160, "white_balance": True}
    plain, masked = prepare_window(window, spec), prepare_window(window, {**spec, "mask_radius": 60})
    # 60 reference px of a 160 px crop shown at 96 px: a 36 px radius around the centre stays.
    assert np.array_equal(masked[48, 14:82], plain[48, 14:82])
    assert (masked[48, :10] == 225).all() and (masked[:8, :8] == 225).all()
    assert not (plain[:8, :8] == 225).all()  # the field's own red cells and background were there
    # A training crop with a margin masks the same circle at the same scale.
    wide = prepare_window(window, {**spec, "mask_radius": 60}, 1.25)
    assert np.array_equal(wide[60, 26:94], prepare_window(window, spec, 1.25)[60, 26:94])
    assert (wide[60, :20] == 225).all()
    untouched = window.copy()
    prepare_window(window, {"height": 240, "width": 320, "mode": "field", "mask_radius": 60})
    assert np.array_equal(window, untouched)  # the caller's window is never painted over


def test_mask_radius_paints_exactly_the_pixels_beyond_the_circle():
    window = draw_field("MONOCYTE", 2)
    spec = {"height": 96, "width": 96, "mode": "cell", "crop": 160, "white_balance": True}
    plain, masked = prepare_window(window, spec), prepare_window(window, {**spec, "mask_radius": 65})
    yy, xx = np.mgrid[0:96, 0:96]
    beyond = (yy - 47.5) ** 2 + (xx - 47.5) ** 2 > (65 * 96 / 160) ** 2
    assert np.array_equal(masked[beyond], np.full((beyond.sum(), 3), 225, np.uint8))
    assert np.array_equal(masked[~beyond], plain[~beyond])


@pytest.mark.parametrize("count", [1, 2, 7, 300, 301])
def test_column_medians_are_numpys_medians(count):
    values = np.random.default_rng(count).integers(0, 256, (count, 3)).astype(np.uint8)
    medians = column_medians(values)
    assert medians.dtype == np.float64
    assert np.array_equal(medians, np.median(values, axis=0))


def test_white_balance_removes_a_photographs_tint_but_keeps_the_cells_colours():
    window = draw_field("EOSINOPHIL", 3)
    tinted = np.clip(window.astype(np.float32) * [0.85, 1.0, 1.12], 0, 255).astype(np.uint8)
    spec = {"height": 96, "width": 96, "mode": "cell", "crop": 160}
    balanced = {**spec, "white_balance": True}

    def gap(a, b):
        return np.abs(a.astype(float) - b.astype(float)).mean(axis=(0, 1))

    # Without balancing the red and blue channels move with the tint; with it they come back.
    assert gap(prepare_window(window, spec), prepare_window(tinted, spec)).max() > 12
    assert gap(prepare_window(window, balanced), prepare_window(tinted, balanced)).max() < 3
    # The background becomes neutral grey, and a stained nucleus stays far from it.
    out = prepare_window(window, balanced).astype(float)
    plain = prepare_window(window, spec).astype(float)
    is_background = np.abs(plain - (225, 215, 220)).max(axis=2) < 3
    assert is_background.sum() > 100
    assert np.ptp(out[is_background].mean(axis=0)) < 4
    centre = out[44:52, 44:52].reshape(-1, 3).mean(axis=0)
    assert centre[2] - centre[1] > 30  # blue over green: the nucleus' stain survives


def _stained(image, factor, background=(225, 215, 220)):
    """The same field on a slide that took up ``factor`` times the stain (Beer-Lambert)."""
    background = np.asarray(background, np.float32)
    ratio = np.clip(image.astype(np.float32) / background, 1e-3, None)
    return np.clip(background * ratio**factor, 0, 255).round().astype(np.uint8)


def test_stain_normalisation_evens_out_how_much_stain_a_slide_took_up():
    window = draw_field("EOSINOPHIL", 3)
    # Red cells of a colour met on BCCD slides (the drawn ones are far redder than any).
    window[(window == (215, 150, 150)).all(axis=2)] = (200, 160, 175)
    light, heavy = _stained(window, 0.8), _stained(window, 1.3)
    balanced = {"height": 96, "width": 96, "mode": "cell", "crop": 160, "white_balance": True}
    normalised = {**balanced, "stain_normalise": True}

    def gap(a, b):
        return np.abs(a.astype(float) - b.astype(float)).mean(axis=(0, 1))

    # White balance alone cannot undo a heavier stain; anchoring on the red cells does.
    assert gap(prepare_window(light, balanced), prepare_window(heavy, balanced)).max() > 6
    assert gap(prepare_window(light, normalised), prepare_window(heavy, normalised)).max() < 2
    # Its red cells now absorb like the reference photograph's.
    out = prepare_window(heavy, {**normalised, "height": 240, "width": 240, "crop": 240})
    padded = np.zeros((240, 320, 3), np.uint8)
    padded[:, 40:280] = out
    density = red_cell_density(padded, np.ones(3, np.float32))
    np.testing.assert_allclose(density, REFERENCE_RED_CELL_DENSITY, atol=0.02)


def test_stain_normalisation_leaves_a_window_without_red_cells_as_white_balance_made_it():
    window = draw_field("NEUTROPHIL", 5)
    bare = np.full_like(window, (225, 215, 220))
    bare[60:180, 100:220] = window[60:180, 100:220]  # the leukocyte, no red cells around it
    balanced = {"height": 96, "width": 96, "mode": "cell", "crop": 160, "white_balance": True}
    assert red_cell_density(bare, np.ones(3, np.float32)) is None
    np.testing.assert_array_equal(
        prepare_window(bare, {**balanced, "stain_normalise": True}), prepare_window(bare, balanced)
    )


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared dataset not found at {SHARED}")
def test_real_dataset_lists_and_groups():
    originals = dataset.read_originals(SHARED)
    images = dataset.list_images(SHARED / "TEST_SIMPLE", "4class", "TEST_SIMPLE", originals)
    assert len(images) == 71
    assert all(i.group for i in images)
    assert sum(i.same_cell_in_train for i in images) == 4


def test_the_cache_follows_the_instances_var_folder_unless_told_otherwise(tmp_path):
    # A production install sets LEUKOSCOPE_VAR_DIR; the audit found a 143 MB cache in the release
    # folder all the same.
    from classifier.dataset import default_cache_dir

    assert default_cache_dir({"LEUKOSCOPE_VAR_DIR": str(tmp_path / "var")}) == tmp_path / "var" / "cache"
    told = {"LEUKOSCOPE_VAR_DIR": str(tmp_path / "var"), "LEUKOSCOPE_CLASSIFIER_CACHE": str(tmp_path / "c")}
    assert default_cache_dir(told) == tmp_path / "c"
    assert default_cache_dir({}).parts[-2:] == ("var", "cache")


def test_training_reads_a_photographs_colour_profile_as_the_site_does(tmp_path):
    """OpenCV reads no colour profile: a lab's photographs in Display P3 or Adobe RGB would be
    learned from other numbers than the site later classifies."""
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (16, 12), (255, 0, 0)).save(path, icc_profile=swapped_primaries_profile())
    assert (dataset.decode_image(path) == (0, 0, 255)).all()


def test_training_reads_transparent_and_turned_photographs_as_the_site_does(tmp_path):
    """OpenCV dropped the alpha channel: a photograph's transparent pixels were learned as the colour
    they hold (black here), where the site lays them on white before classifying."""
    from PIL import Image

    from classifier.rendering import decode_rgb

    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[:, :8] = (200, 40, 90, 255)  # the left half seen, the right half transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cell.png")
    keyed = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    keyed.save(tmp_path / "keyed.png", transparency=keyed.getpixel((15, 0)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: to be turned 90 degrees
    Image.fromarray(rgba[..., :3]).save(tmp_path / "turned.jpg", exif=exif, quality=95)

    for name in ("cell.png", "keyed.png", "turned.jpg"):
        decoded = dataset.decode_image(tmp_path / name)
        served = decode_rgb((tmp_path / name).read_bytes(), upright=True)
        np.testing.assert_array_equal(decoded, served)
    assert (dataset.decode_image(tmp_path / "cell.png")[:, 8:] == 255).all()
    assert dataset.decode_image(tmp_path / "turned.jpg").shape == (16, 12, 3)


def test_pixels_cached_by_another_decoder_are_not_read(tmp_path, monkeypatch):
    """The cache was keyed by the files, not by how they are decoded: pixels a release before colour
    profiles were read had cached stayed in use for photographs carrying one."""
    from PIL import Image

    write_split(tmp_path, "TRAIN", 1)
    images = dataset.list_images(tmp_path / "TRAIN", "4class", "TRAIN")
    for image in images:
        with Image.open(image.path) as picture:
            picture.load()
        picture.save(image.path, format=picture.format, icc_profile=swapped_primaries_profile())
    spec, cache = {"height": 60, "width": 80, "mode": "field"}, tmp_path / "cache"
    profile_read = dataset.load_prepared(images, spec, cache_dir=cache, keep=False)[0]

    def raw_decode(path):  # an earlier release's reader: the profile ignored
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"))

    monkeypatch.setattr(dataset, "decode_image", raw_decode)
    profile_ignored = dataset.load_prepared(images, spec, cache_dir=cache)[0]
    assert not np.array_equal(profile_ignored, profile_read)
    monkeypatch.undo()
    assert np.array_equal(dataset.load_prepared(images, spec, cache_dir=cache)[0], profile_read)


def test_a_fields_cache_follows_the_detector_that_scaled_it(tmp_path, monkeypatch):
    # A field-mode network's photographs that are no 240x320 window are scaled by the detector's
    # red-cell ruler; the key named the detector for cell-mode networks only.
    spec = {"height": 60, "width": 80, "mode": "field"}
    images = [dataset.LabelledImage(path=str(tmp_path / "cell.png"), class_name="MONOCYTE", split="TRAIN")]
    keys = {scale: dataset._cache_path(tmp_path, images, spec, 1.0, scale)
            for scale in ("image", "reference")}
    monkeypatch.setattr(dataset, "detector_version", lambda: "another detector")
    assert dataset._cache_path(tmp_path, images, spec, 1.0, "image") != keys["image"]
    # Taken at reference scale, a photograph's pixels are its scale: no ruler, nothing to rebuild.
    assert dataset._cache_path(tmp_path, images, spec, 1.0, "reference") == keys["reference"]


def test_cached_inputs_are_prepared_again_when_the_colour_check_changes(monkeypatch):
    """Training refuses a photograph without colour (decode_image): a cache written under another
    colour check would keep photographs the check now refuses, or drop those it now takes."""
    from classifier import quality

    before = dataset.decoder_version()
    monkeypatch.setattr(quality, "COLOURED_SPREAD", quality.COLOURED_SPREAD + 1)
    assert dataset.decoder_version() != before
