"""Several data folders in one training, each measured apart; the context window of a photograph
of any shape; balanced sampling; the robustness augmentation; the comparison's architectures."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from classifier import dataset
from classifier.errors import TrainingDataError
from classifier.inference import CellClassifier
from classifier.labels import EIGHT_CLASSES, FOUR_CLASSES, binary_probabilities
from classifier.preparation import as_window, background_colour
from classifier.training import TrainingConfig, evaluate_classifier, train_classifier
from classifier.training.batches import sampling_probabilities
from classifier.training.data import (
    check_weights_name_folders,
    data_folders,
    distinct_folders,
    select_sources,
    source_names,
)
from tests.classifier.drawn_fields import draw_field, write_split
from tests.classifier.sources import CROP_LAB_CLASSES, draw_crop, write_two_sources


@pytest.fixture
def two_sources(tmp_path):
    return write_two_sources(tmp_path / "labs")


def config(data, tmp_path, **kwargs):
    defaults = dict(architecture="leukonet", task="4class", epochs=1, batch_size=8,
                    cache_dir=tmp_path / "c")
    return TrainingConfig(data_dir=data, **{**defaults, **kwargs})


def test_two_sources_train_together_and_are_measured_apart(two_sources, tmp_path):
    fields, crops = two_sources
    # MixStyle trains across the two labs' feature statistics; the stored network is without it.
    result = train_classifier(config([str(fields), str(crops)], tmp_path, epochs=2, validation_seed=3,
                                     mixstyle=0.5))
    stored = CellClassifier.from_bytes(result.model_bytes, result.metadata)
    assert result.metadata["hyperparameters"]["mixstyle"] == 0.5
    assert not [layer.name for layer in stored.model.layers if "mixstyle" in layer.name]
    metrics = result.metrics
    assert len(result.history) == 2, "a balanced epoch is as long as the training set, every epoch"
    assert result.metadata["dataset_path"] == os.pathsep.join([str(fields), str(crops)])
    assert list(metrics["sources"]) == ["field-lab", "crop-lab"]
    # Two labs' TEST figures are never pooled into one.
    assert "TEST" not in metrics
    field_lab, crop_lab = metrics["sources"]["field-lab"], metrics["sources"]["crop-lab"]

    assert field_lab["path"] == str(fields) and crop_lab["path"] == str(crops)
    assert field_lab["train_counts"] == dict.fromkeys(FOUR_CLASSES, 6)
    assert crop_lab["train_counts"] == dict.fromkeys(CROP_LAB_CLASSES, 6)
    assert crop_lab["test_counts"] == {"TEST": dict.fromkeys(CROP_LAB_CLASSES, 2)}
    assert field_lab["validation_split"] == "by file"  # neither folder has an originals.csv
    assert len(field_lab["fingerprint"]) == 64 and field_lab["fingerprint"] != crop_lab["fingerprint"]
    assert field_lab["fingerprint_names"] == crop_lab["fingerprint_names"] == "relative to the data folder"
    assert field_lab["validation_count"] + crop_lab["validation_count"] == result.metadata["validation_count"]

    # The field lab holds every class of the network; the crop lab is measured on its three.
    assert field_lab["TEST"]["class_names"] == list(FOUR_CLASSES) and field_lab["TEST"]["n"] == 8
    assert "restricted_to" not in field_lab["TEST"]
    assert crop_lab["TEST"]["restricted_to"] == list(CROP_LAB_CLASSES)
    assert crop_lab["TEST"]["class_names"] == list(CROP_LAB_CLASSES) and crop_lab["TEST"]["n"] == 6
    assert "validation" in crop_lab and crop_lab["validation"]["class_names"] == list(CROP_LAB_CLASSES)
    assert sum(result.class_counts.values()) + result.metadata["validation_count"] == 4 * 6 + 3 * 6


def test_a_network_is_measured_on_the_classes_a_folder_holds(two_sources, tmp_path):
    fields, crops = two_sources
    result = train_classifier(config(str(fields), tmp_path, architecture="paper", evaluate_test=False))
    classifier = CellClassifier.from_bytes(result.model_bytes, result.metadata)
    metrics = evaluate_classifier(classifier, crops, "TEST", cache_dir=tmp_path / "c")
    assert metrics["restricted_to"] == list(CROP_LAB_CLASSES) and metrics["n"] == 6
    # The call is the most probable of the folder's classes: no cell is called a monocyte.
    assert all(len(row) == 3 for row in metrics["confusion_matrix"])
    # One folder: its figures stay where they always were, and under its name.
    assert "TEST" not in result.metrics and list(result.metrics["sources"]) == ["field-lab"]


def test_one_folder_keeps_its_figures_at_the_top_level_too(two_sources, tmp_path):
    fields, _ = two_sources
    result = train_classifier(config(str(fields), tmp_path, architecture="paper", task="binary"))
    assert result.metrics["TEST"] == {
        key: value for key, value in result.metrics["sources"]["field-lab"]["TEST"].items()
    }
    assert result.metadata["dataset_path"] == str(fields)


def test_a_file_list_fingerprint_names_the_files_not_the_path_they_were_reached_by(tmp_path, monkeypatch):
    write_split(tmp_path / "lab", "TRAIN", 2)
    (tmp_path / "elsewhere").symlink_to(tmp_path / "lab")
    monkeypatch.chdir(tmp_path)

    def fingerprint_of(root):
        images = dataset.list_images(Path(root) / "TRAIN", "4class", "TRAIN")
        return dataset.fingerprint(images, [root])

    same = {fingerprint_of(root) for root in (tmp_path / "lab", "lab", "./lab", tmp_path / "elsewhere")}
    assert len(same) == 1
    one = next((tmp_path / "lab" / "TRAIN" / "NEUTROPHIL").glob("*"))
    one.write_bytes(one.read_bytes() + b"\0")  # another file of the same name
    assert fingerprint_of("lab") not in same


def test_data_folders_are_read_as_path_lists():
    assert data_folders(f"a{os.pathsep}b{os.pathsep}") == ["a", "b"]
    assert data_folders(["a", "b"]) == ["a", "b"] and data_folders("only") == ["only"]
    assert source_names(["/x/pbc", "/y/pbc", "/z/cells"]) == ["pbc", "pbc-2", "cells"]


def test_one_folder_given_twice_is_one_folder(tmp_path):
    (tmp_path / "pbc").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "pbc")
    again = [str(tmp_path / "pbc"), f"{tmp_path / 'pbc'}/", str(tmp_path / "link"), str(tmp_path / "other")]
    assert distinct_folders(again) == [str(tmp_path / "pbc"), str(tmp_path / "other")]
    with pytest.raises(TrainingDataError, match=re.escape(f"{tmp_path / 'pbc'} is given twice (again as "
                                                          f"{tmp_path / 'pbc'}/)")):
        select_sources(again, "4class", None, 1, 0.2, 1)


def test_source_weights_must_name_a_folder_of_the_run():
    """A folder a weight does not name weighs 1: {"pbcc": 2} for pbc was dropped unsaid, and the
    version stored it as if it had weighed."""
    folders = ["/data/blood-cell-images", "/data/pbc"]
    check_weights_name_folders({"pbc": 2}, folders)
    check_weights_name_folders({}, folders)
    with pytest.raises(TrainingDataError, match=re.escape(
            "the source weights name 'pbcc', which is no data folder of this run: its folders are named "
            "'blood-cell-images', 'pbc'")):
        check_weights_name_folders({"pbc": 1, "pbcc": 2}, folders)


def test_balanced_sampling_draws_sources_equally_and_classes_equally_within_each():
    # Source 0: 90 of class 0 and 10 of class 1; source 1: 300 of class 2; then 4 reviewed cells.
    sources = np.array([0] * 100 + [1] * 300 + [2] * 4)
    labels = np.array([0] * 90 + [1] * 10 + [2] * 300 + [0] * 4)
    p = sampling_probabilities(sources, labels, ["a", "b"], {})
    reviewed = 4 / 404
    assert p.sum() == pytest.approx(1.0)
    assert p[sources == 2].sum() == pytest.approx(reviewed)
    assert p[sources == 0].sum() == pytest.approx(p[sources == 1].sum())
    assert p[(sources == 0) & (labels == 0)].sum() == pytest.approx(p[(sources == 0) & (labels == 1)].sum())
    weighted = sampling_probabilities(sources[:400], labels[:400], ["a", "b"], {"b": 3})
    assert weighted[100:].sum() == pytest.approx(3 * weighted[:100].sum())


def test_eight_classes_and_their_binary_grouping():
    assert set(FOUR_CLASSES) < set(EIGHT_CLASSES) and len(EIGHT_CLASSES) == 8
    called = dict.fromkeys(EIGHT_CLASSES, 0.05) | {"NEUTROPHIL": 0.4, "ERYTHROBLAST": 0.25}
    grouped = binary_probabilities(called)
    # An erythroblast or a platelet is no leukocyte of either group; immature granulocytes are
    # granulocytes (POLYNUCLEAR: neutrophil, eosinophil, basophil, immature granulocyte).
    assert grouped["POLYNUCLEAR"] == pytest.approx(0.55) and grouped["MONONUCLEAR"] == pytest.approx(0.1)


# --- the context window of a photograph of any shape ---


def _nucleus_extent(window):
    """(width, height) of the drawn nucleus: blue far above green, as the detector sees it."""
    balanced = window.astype(int)
    ys, xs = np.nonzero(balanced[..., 2] - balanced[..., 1] > 60)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_a_square_photograph_is_not_stretched_into_the_window():
    crop = draw_crop("LYMPHOCYTE", 4)  # a round nucleus in a square photograph
    window, located = dataset.dataset_context_window(crop)
    assert located and window.shape == (240, 320, 3)
    width, height = _nucleus_extent(window)
    # Stretched into 4:3 the round nucleus came out a third wider than high.
    assert width / height == pytest.approx(1.0, abs=0.08)


def test_a_tight_crop_is_surrounded_by_its_own_background_not_black():
    crop = draw_crop("NEUTROPHIL", 5)[40:160, 40:160]  # 120x120 around the cell
    window, _ = dataset.dataset_context_window(crop)
    background = np.median(crop[:8, :8].reshape(-1, 3), axis=0)
    for corner in (window[:20, :20], window[:20, -20:], window[-20:, :20], window[-20:, -20:]):
        assert np.abs(corner.reshape(-1, 3).astype(float) - background).max() < 30


def test_a_field_of_reference_size_is_used_as_it_is():
    field = draw_field("MONOCYTE", 6)
    window, _ = dataset.dataset_context_window(field)
    assert window.shape == field.shape
    assert dataset.reference_field(field) is field


def test_a_window_of_another_size_is_centred_not_resized():
    patch = draw_crop("EOSINOPHIL", 7)[50:150, 30:170]  # 100 high, 140 wide
    window = as_window(patch)
    assert window.shape == (240, 320, 3)
    assert np.array_equal(window[70:170, 90:230], patch)
    assert (window[:60].reshape(-1, 3).std(axis=0) < 1).all(), "one background colour around it"
    # The crop's own bare slide, not black: a dark frame would read to the network as stain.
    assert np.abs(window[0, 0].astype(float) - background_colour(patch)).max() <= 0.5
    bigger = np.tile(draw_field("EOSINOPHIL", 8), (2, 2, 1))  # 480x640
    assert np.array_equal(as_window(bigger), bigger[120:360, 160:480])


# --- robustness augmentation ---


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    tensorflow.random.set_seed(1)
    return tensorflow


@pytest.fixture
def cells(tf):
    from classifier.preparation import prepare_uint8

    spec = {"height": 48, "width": 48, "mode": "cell", "crop": 160, "white_balance": True}
    windows = [draw_field(name, 9) for name in FOUR_CLASSES]
    return tf.constant(prepare_uint8(windows, spec).astype(np.float32) / 255.0)


def _augmentations():
    from classifier.training import augmentation as a

    return {
        "stain": lambda tf, x: a.stain_jitter(tf, x, 0.2, 0.05),
        "colour": lambda tf, x: a.colour_jitter(tf, x, 0.05, 0.1, 0.2, 0.3, 0.05),
        "blur": lambda tf, x: a.blur(tf, x, 1.0),
        "noise": lambda tf, x: a.noise(tf, x, 0.05),
        "jpeg": lambda tf, x: a.jpeg(tf, x, 1.0),
        "unnormalised": lambda tf, x: a.stain_reference_lost(tf, x, 1.0),
        "clipped": lambda tf, x: a.clipped_exposure(tf, x, 1.0),
    }


@pytest.mark.parametrize("name", ["stain", "colour", "blur", "noise", "jpeg", "unnormalised", "clipped"])
def test_each_augmentation_changes_the_images_and_keeps_shape_type_and_range(tf, cells, name):
    # Draws are per image (a blur's amount is U(0, 1)): a fixed seed keeps a near-zero draw from
    # depending on which tests ran before.
    tf.random.set_seed(11)
    augmented = _augmentations()[name](tf, cells).numpy()
    assert augmented.shape == tuple(cells.shape) and augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    change = np.abs(augmented - cells.numpy()).mean(axis=(1, 2, 3))
    assert (change > 1e-3).all(), f"{name} left an image as it was"


def test_stain_jitter_of_nothing_gives_the_image_back(tf, cells):
    from classifier.training.augmentation import stain_jitter

    np.testing.assert_allclose(stain_jitter(tf, cells, 0.0, 0.0).numpy(), cells.numpy(), atol=2e-3)


def test_a_lost_stain_reference_scales_each_channels_density_and_keeps_the_background(tf):
    """As a window without red cells is served: the background at the normalisation's level stays
    there, and each stained pixel's density against it is raised to one power per channel."""
    from classifier.training.augmentation import UNNORMALISED_LEVEL, UNNORMALISED_SPREAD, stain_reference_lost

    level = UNNORMALISED_LEVEL
    images = np.full((6, 4, 4, 3), level, np.float32)
    images[:, 2:, 2:] = (0.4, 0.3, 0.6)
    kept = stain_reference_lost(tf, tf.constant(images), 0.0).numpy()
    lost = stain_reference_lost(tf, tf.constant(images), 1.0).numpy()

    np.testing.assert_allclose(kept, images, atol=1e-6)
    np.testing.assert_allclose(lost[:, :2, :2], level, atol=1e-5)
    power = np.log(lost[:, 3, 3] / level) / np.log(images[:, 3, 3] / level)  # (6, 3)
    assert np.all(np.abs(np.log(power)) <= UNNORMALISED_SPREAD + 1e-4)
    assert np.ptp(power, axis=1).min() > 0  # a power of its own for each channel
    assert np.allclose(lost[:, 3, 3], lost[:, 2, 2])  # one draw per image


def test_a_clipped_exposure_lightens_pale_pixels_darkens_nuclei_and_keeps_the_background(tf):
    """A camera that clips the background leaves a channel's pale cytoplasm lighter than the white
    balance can undo; the stain normalisation, reading its red cells lighter too, then stretches
    what is left, so a nucleus comes out darker. Channels it leaves alone stay as they were."""
    from classifier.training.augmentation import UNNORMALISED_LEVEL, clipped_exposure

    level = UNNORMALISED_LEVEL
    images = np.full((16, 3, 1, 3), level, np.float32)
    images[:, 1] = level * np.exp(-0.05)  # pale cytoplasm
    images[:, 2] = level * np.exp(-1.0)  # nucleus
    tf.random.set_seed(5)
    shown = clipped_exposure(tf, tf.constant(images), 1.0).numpy()

    np.testing.assert_allclose(shown[:, 0], level, atol=1e-6)
    touched = np.abs(shown - images).max(axis=(1, 2)) > 1e-6  # (16, 3): per image and channel
    assert 0 < touched.mean() < 1, "about half the channels, not all or none"
    pale, nucleus = (shown[:, row, 0] for row in (1, 2))  # (16, 3) each
    assert np.all(pale[touched] > images[:, 1, 0][touched])
    assert np.all(nucleus[touched] < images[:, 2, 0][touched])
    np.testing.assert_allclose(pale[~touched], images[:, 1, 0][~touched])
    np.testing.assert_allclose(nucleus[~touched], images[:, 2, 0][~touched])
    assert np.allclose(clipped_exposure(tf, tf.constant(images), 0.0).numpy(), images)


def test_the_haematoxylin_spread_changes_a_nucleus_and_leaves_pure_eosin_alone(tf):
    """A lab's nuclear stain uptake varies; the eosin of its red cells and granules is what the
    spread must not touch."""
    from classifier.training.augmentation import RGB_FROM_HED, stain_jitter

    images = np.ones((8, 4, 4, 3), np.float32)
    images[:, :2] = np.exp(-0.8 * RGB_FROM_HED[1])  # pure eosin
    images[:, 2:] = np.exp(-0.8 * RGB_FROM_HED[0])  # pure haematoxylin
    spread = stain_jitter(tf, tf.constant(images), 0.0, 0.0, haematoxylin_spread=0.7).numpy()

    np.testing.assert_allclose(spread[:, :2], images[:, :2], atol=2e-3)
    nuclear = -np.log(spread[:, 3, 3]) / -np.log(images[:, 3, 3])  # the density's factor, per channel
    assert np.all(np.abs(np.log(nuclear)) <= 0.7 + 1e-3)
    assert np.ptp(nuclear[:, 0]) > 0.1, "one factor of its own for each image"


def test_a_stronger_blur_shrink_removes_more_detail(tf, cells):
    from classifier.training.augmentation import blur

    def detail(images):
        return np.abs(np.diff(images.numpy(), axis=2)).mean(axis=(1, 2, 3))

    tf.random.set_seed(3)
    mild = blur(tf, cells, 1.0, shrink=2.0)
    tf.random.set_seed(3)  # the same amount for each image: only the shrink differs
    strong = blur(tf, cells, 1.0, shrink=4.0)
    assert np.all(detail(strong) <= detail(mild) + 1e-6)
    assert detail(strong).mean() < detail(mild).mean()


def test_the_recipes_augmentation_runs_end_to_end_on_uint8_batches(tf):
    from classifier.training import Recipe
    from classifier.training.augmentation import augment_fn

    recipe = Recipe(input_spec={"height": 32, "width": 32, "mode": "cell", "crop": 160}).resolved()
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3)).astype(np.uint8))
    augmented, labels = augment_fn(tf, recipe, 1.25)(images, tf.constant([0, 1, 2, 3]))
    assert tuple(augmented.shape) == (4, 32, 32, 3) and augmented.dtype == tf.float32
    assert list(labels.numpy()) == [0, 1, 2, 3]


# --- the comparison's architectures ---


def _layer_types(model):
    return {type(layer).__name__ for layer in model.layers}


def test_leukonet_gn_is_leukonet_with_group_norm():
    from classifier.architectures import GRADCAM_LAYER, build_model

    batch_norm, group_norm = build_model("leukonet", "8class"), build_model("leukonet-gn", "8class")
    assert "BatchNormalization" in _layer_types(batch_norm) - _layer_types(group_norm)
    assert "GroupNormalization" in _layer_types(group_norm)
    def trainable(model):
        return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)

    assert trainable(batch_norm) == trainable(group_norm)  # no running statistics in group norm
    assert group_norm.get_layer(GRADCAM_LAYER) and group_norm.output_shape == (None, 8)


def _channel_statistics(maps):
    return maps.mean(axis=(1, 2)), maps.std(axis=(1, 2))


def test_mixstyle_gives_each_image_a_blend_of_two_images_channel_statistics_in_training_only():
    import keras

    from classifier.architectures import _mixstyle_layer

    rng = np.random.default_rng(4)
    # Two images whose 3 channels differ in level and spread: another lab's stain in miniature.
    maps = np.stack([rng.normal(0.2, 0.1, (6, 6, 3)), rng.normal(3.0, 2.0, (6, 6, 3))]).astype(np.float32)
    always = _mixstyle_layer(keras, 1.0, "always_mixstyle")
    assert np.array_equal(np.asarray(always(maps, training=False)), maps)
    mean, spread = _channel_statistics(maps)
    blended = False
    for _ in range(20):
        restyled = np.asarray(always(maps, training=True))
        new_mean, new_spread = _channel_statistics(restyled)
        # Each image's statistics lie between the two images' own (a convex blend)...
        assert np.all(new_mean >= mean.min(axis=0) - 1e-4) and np.all(new_mean <= mean.max(axis=0) + 1e-4)
        assert np.all(new_spread >= spread.min(axis=0) - 1e-4)
        assert np.all(new_spread <= spread.max(axis=0) + 1e-4)
        # ...and its pattern, the content, is its own.
        for image in range(2):
            for channel in range(3):
                own = maps[image, ..., channel].ravel()
                assert np.corrcoef(restyled[image, ..., channel].ravel(), own)[0, 1] > 0.999
        blended |= bool(np.abs(new_mean - mean).max() > 0.1)
    assert blended, "twenty training batches and no image took on another's statistics"
    never = _mixstyle_layer(keras, 0.0, "never_mixstyle")
    assert np.array_equal(np.asarray(never(maps, training=True)), maps)


def test_mixstyle_trains_leukonet_alone_and_leaves_no_weights_behind():
    from classifier.architectures import build_model
    from classifier.errors import TrainingDataError

    trained = build_model("leukonet-gn", "8class", mixstyle=0.5)
    assert [layer.name for layer in trained.layers if "mixstyle" in layer.name] == [
        "stem_mixstyle", "b1_mixstyle", "b2_mixstyle"]
    # The stored network is built without them and takes the trained weights one for one.
    stored = build_model("leukonet-gn", "8class")
    assert [w.shape for w in trained.get_weights()] == [w.shape for w in stored.get_weights()]
    with pytest.raises(TrainingDataError, match="MixStyle is placed in LeukoNet's early stages"):
        build_model("paper", "binary", mixstyle=0.5)


def test_effnet_lite0_is_the_imagenet_trunk_with_the_tasks_head_and_a_gradcam_layer():
    from classifier.architectures import GRADCAM_LAYER, build_model

    model = build_model("effnet-lite0", "4class")
    assert model.output_shape == (None, 4) and model.get_layer(GRADCAM_LAYER)
    assert model.get_layer("stem_conv") and 3.3e6 < model.count_params() < 3.5e6


def test_a_frozen_effnet_lite0_trunk_keeps_its_weights_and_statistics_while_the_head_learns():
    import keras

    from classifier.architectures import build_model

    model = build_model("effnet-lite0", "4class", input_spec={"height": 32, "width": 32},
                        freeze_trunk=True)
    assert sorted(weight.path for weight in model.trainable_weights) == ["logits/bias", "logits/kernel"]
    before = {weight.path: weight.numpy().copy() for weight in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 32, 32, 3), dtype=np.float32), rng.integers(0, 4, 16), epochs=2,
              batch_size=8, verbose=0)
    changed = {weight.path for weight in model.weights
               if not np.array_equal(weight.numpy(), before[weight.path])}
    # Batch norm's moving mean and variance among the unchanged: the trunk normalises as it did.
    assert changed == {"logits/bias", "logits/kernel"}
    assert any("moving_mean" in path for path in before)


def test_only_an_imagenet_network_can_be_built_with_a_frozen_trunk():
    from classifier.architectures import build_model
    from classifier.errors import TrainingDataError

    with pytest.raises(TrainingDataError, match="leukonet-gn starts from random weights"):
        build_model("leukonet-gn", "4class", freeze_trunk=True)


def test_effnet_lite0_starts_from_imagenet_only_when_built_to_train():
    from classifier.architectures import build_model
    from classifier.backbones.efficientnet_lite import imagenet_weights_path

    try:
        imagenet_weights_path()
    except FileNotFoundError as missing:
        pytest.skip(f"{missing}")
    fresh = build_model("effnet-lite0", "4class")
    trained_from = build_model("effnet-lite0", "4class", pretrained=True)
    again = build_model("effnet-lite0", "4class", pretrained=True)
    stem = [model.get_layer("stem_conv").get_weights()[0] for model in (fresh, trained_from, again)]
    assert np.array_equal(stem[1], stem[2]) and not np.array_equal(stem[0], stem[1])
