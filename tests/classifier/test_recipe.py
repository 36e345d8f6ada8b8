"""The training recipe: defaults per architecture, checks, what a version records and what a refit
repeats (classifier/training/recipe.py)."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from classifier.architectures import BUILDERS, DEFAULT_INPUT_SPEC
from classifier.training import Recipe, RecipeError, TrainingConfig
from classifier.training.recipe import (
    ARCHITECTURE_DEFAULTS,
    ARCHITECTURES,
    PER_ARCHITECTURE,
    SETTINGS,
    SETTINGS_BY_NAME,
    HeldOutCalibration,
    RefitMismatch,
    differences_from_run,
    refit_settings,
    trained_as,
)

BUNDLED = Path(__file__).resolve().parents[2] / "classifier" / "default_model"


def test_defaults_are_the_recipes_of_the_bundled_networks():
    paper = Recipe(architecture="paper", task="binary").resolved()
    leukonet = Recipe().resolved()
    assert (leukonet.architecture, leukonet.task) == ("leukonet", "4class")
    expected = {
        # name: (paper, leukonet)
        "epochs": (20, 16),
        "batch_size": (64, 64),
        "optimizer": ("adam", "adamw+cosine"),
        "learning_rate": (3e-4, 3e-3),
        "weight_decay": (0.0, 0.005),
        "label_smoothing": (0.0, 0.1),
        "augment": (False, True),
        "mixup": (0.0, 0.3),
        "keep_last_epoch": (False, True),
        "validation_fraction": (0.15, 0.15),
        "validation_seed": (None, None),
        "window_scale": ("image", "image"),
        "max_images_per_class": (None, None),
        "input_spec": (DEFAULT_INPUT_SPEC["paper"], DEFAULT_INPUT_SPEC["leukonet"]),
        # White-balanced inputs (LeukoNet's) get the milder stain jitter.
        "colour_jitter": (0.1, 0.04),
        "zoom": (0.22, 0.22),
        # What another lab's stain, lamp, microscope and camera change (augment is off for paper).
        "stain_scale": (0.1, 0.1),
        "stain_shift": (0.02, 0.02),
        "unnormalised_stain": (0.0, 0.0),
        "clipped_exposure": (0.0, 0.0),
        "brightness": (0.08, 0.08),
        "contrast": (0.2, 0.2),
        "saturation": (0.25, 0.25),
        "hue": (0.02, 0.02),
        "blur": (0.2, 0.2),
        "blur_shrink": (3.0, 3.0),
        "haematoxylin_spread": (0.0, 0.0),
        "noise": (0.02, 0.02),
        "jpeg": (0.3, 0.3),
        "sampling": ("shuffle", "balanced"),
        "source_weights": ({}, {}),
        "width": (1.0, 1.0),
        "freeze_trunk": (False, False),
        "mixstyle": (0.0, 0.0),
        "seed": (20261125, 20261125),
        "temperature": (None, None),
        "temperature_source": ("", ""),
        "review_threshold": (None, None),
    }
    for name, (paper_value, leukonet_value) in expected.items():
        assert (getattr(paper, name), getattr(leukonet, name)) == (paper_value, leukonet_value), name
    assert set(expected) | {"architecture", "task"} == set(SETTINGS_BY_NAME)


def test_a_run_records_the_same_hyperparameters_as_before_the_recipe_had_an_owner():
    # The keys stored versions have held since width was added: the version pages, refits and
    # validation_predictions read them.
    recorded = set(Recipe().resolved().hyperparameters()) | {"best_epoch", "train_margin"}
    assert recorded == {
        "epochs", "batch_size", "learning_rate", "weight_decay", "label_smoothing", "augment", "mixup",
        "keep_last_epoch", "optimizer", "validation_fraction", "validation_seed", "window_scale",
        "max_images_per_class", "colour_jitter", "zoom", "width", "best_epoch", "train_margin",
        # Since several data folders and the robustness augmentation (issue 19):
        "stain_scale", "stain_shift", "brightness", "contrast", "saturation", "hue", "blur", "noise",
        "jpeg", "sampling", "source_weights",
        # Since an ImageNet trunk can be kept frozen:
        "freeze_trunk",
        # Since windows without red cells (no stain reference) are trained for:
        "unnormalised_stain",
        # Since a lab's optics and nuclear stain uptake are spread further:
        "blur_shrink", "haematoxylin_spread",
        # Since early feature statistics can be mixed across images (MixStyle):
        "mixstyle",
        # Since a camera that clips the background is trained for:
        "clipped_exposure",
    }


def test_a_given_setting_wins_and_a_derived_default_follows_what_it_derives_from():
    spec = {"height": 64, "width": 64, "mode": "cell", "crop": 128}
    recipe = Recipe(architecture="leukonet", epochs=3, mixup=0, input_spec=spec).resolved()
    assert (recipe.epochs, recipe.mixup, recipe.learning_rate) == (3, 0.0, 3e-3)
    assert recipe.colour_jitter == 0.1, "no white balance in the given input spec: the stronger jitter"
    assert Recipe(optimizer="adam").resolved().weight_decay == 0.0
    assert Recipe(architecture="paper", optimizer="adamw+cosine").resolved().weight_decay == 0.005
    assert Recipe(seed=5).resolved().split_seed == 5
    assert Recipe(seed=5, validation_seed=9).resolved().split_seed == 9


def test_defaults_are_copies_a_run_cannot_change_for_the_next():
    first = Recipe().resolved()
    first.input_spec["height"] = 1
    assert Recipe().resolved().input_spec == DEFAULT_INPUT_SPEC["leukonet"]


@pytest.mark.parametrize(
    "settings, message, named",
    [
        ({"architecture": "resnet900"}, "unknown architecture 'resnet900'; expected one of paper, "
                                        "leukonet", ("architecture",)),
        ({"task": "7class"}, "unknown task '7class'", ("task",)),
        ({"epochs": 0}, "epochs 0 must be at least 1", ("epochs",)),
        ({"epochs": "many"}, "epochs 'many' is not a whole number", ("epochs",)),
        ({"augment": "false"}, "augment 'false' is not true or false", ("augment",)),
        ({"validation_fraction": 1.0, "temperature": 1.0},
         "validation fraction 1.0 must be at least 0 and below 1", ("validation_fraction",)),
        ({"validation_fraction": 0}, "no held-out split to fit the calibration temperature on",
         ("validation_fraction", "temperature")),
        ({"validation_fraction": 0, "temperature": 0}, "temperature 0.0 must be above 0",
         ("temperature",)),
        ({"architecture": "paper", "weight_decay": 0.01}, "needs the adamw+cosine optimizer",
         ("weight_decay", "optimizer")),
        ({"width": 0}, "width 0.0 must be above 0", ("width",)),
        ({"window_scale": "field"}, "unknown window scale 'field'", ("window_scale",)),
        ({"architecture": "leukonet-gn", "freeze_trunk": True},
         "leukonet-gn starts from random weights", ("freeze_trunk", "architecture")),
        ({"architecture": "paper", "mixstyle": 0.5}, "MixStyle is placed in LeukoNet's early stages",
         ("mixstyle", "architecture")),
        ({"mixstyle": 1.5}, "mixstyle 1.5 must be at least 0 and at most 1", ("mixstyle",)),
        # Infinity passed every lower bound, and the version then failed to store (a traceback).
        ({"learning_rate": float("inf")}, "must be a finite number", ("learning_rate",)),
        ({"weight_decay": "1e400"}, "weight decay inf must be a finite number", ("weight_decay",)),
        ({"source_weights": {"a": float("inf")}}, "source weights must be finite numbers",
         ("source_weights",)),
        ({"review_threshold": 0.9}, "only a refit borrows one", ("review_threshold", "validation_fraction")),
        ({"validation_fraction": 0, "temperature": 1.0, "review_threshold": 1.0},
         "review threshold 1.0 must be above 0 and below 1", ("review_threshold",)),
    ],
)
def test_a_setting_no_run_can_train_with_is_refused_by_name(settings, message, named):
    with pytest.raises(RecipeError, match=re.escape(message)) as refused:
        TrainingConfig(data_dir="anywhere", **settings).resolved()
    assert refused.value.settings == named


def test_every_architecture_has_its_defaults_an_input_and_a_network():
    needed = {s.name for s in SETTINGS if s.default is PER_ARCHITECTURE}
    for architecture, defaults in ARCHITECTURE_DEFAULTS.items():
        assert needed <= set(defaults) <= set(SETTINGS_BY_NAME), architecture
        assert defaults["input_spec"] == DEFAULT_INPUT_SPEC[architecture]
        Recipe(architecture=architecture).resolved()
    assert set(ARCHITECTURES) == set(BUILDERS) == set(DEFAULT_INPUT_SPEC)


def test_a_training_config_is_a_recipe_on_data():
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    config_fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert recipe_fields < config_fields
    assert config_fields - recipe_fields == {
        "data_dir", "extra_samples", "min_images_per_class", "cache_dir", "evaluate_test", "workers",
        "runtime",
    }
    config = TrainingConfig(data_dir="cells", architecture="paper", mixup=0.2, cache_dir="c")
    assert config.resolved() == Recipe(architecture="paper", mixup=0.2).resolved()


@pytest.mark.parametrize("name", ["leukonet", "paper-binary"])
def test_a_refit_repeats_what_an_older_held_out_run_stored_and_defaults_the_rest(name):
    metadata_file = BUNDLED / name / "metadata.json"
    if not metadata_file.is_file():
        pytest.skip(f"bundled model {metadata_file.parent} not present")
    metadata = json.loads(metadata_file.read_text())
    stored = metadata["hyperparameters"]
    repeated = refit_settings(stored, metadata["input_spec"])
    assert repeated["input_spec"] == metadata["input_spec"]
    for key, value in repeated.items():
        assert SETTINGS_BY_NAME[key].refit_repeats
        if key in stored or key == "input_spec":
            assert value == (metadata["input_spec"] if key == "input_spec" else stored[key])
        else:  # a setting that came later: what the run trained with before it existed
            absent_means = SETTINGS_BY_NAME[key].absent_means
            assert absent_means is not None and value == absent_means, key
    # Stored before zoom, colour jitter or width were settings, the paper network's run lacks them;
    # both bundled runs predate the robustness augmentation and balanced sampling, and a refit
    # repeats what they trained with instead: no stain, hue, noise or JPEG augmentation, shuffling.
    missing = {s.name for s in SETTINGS if s.refit_repeats} - set(repeated)
    assert missing <= {"zoom", "colour_jitter", "width", "brightness", "contrast", "saturation",
                       "source_weights"}
    assert (repeated["stain_scale"], repeated["jpeg"], repeated["sampling"]) == (0.0, 0.0, "shuffle")
    refit = Recipe(architecture=metadata["architecture"], task=metadata["task"], validation_fraction=0,
                   temperature=metadata["temperature"], **repeated).resolved()
    for key, value in repeated.items():
        assert getattr(refit, key) == value
    assert refit.refit and refit.zoom == 0.22


def test_a_refit_repeats_its_runs_network_and_refuses_another():
    run = HeldOutCalibration(
        0.8, "run A", {"mixup": 0.2}, review_threshold=0.9,
        trained_as=trained_as("leukonet-gn", "8class", {"epochs": 30}),
    )
    settings, repeated = run.for_refit({"mixup": 0.3, "epochs": 30})
    assert repeated == {"architecture": "leukonet-gn", "task": "8class"}
    assert settings == {"architecture": "leukonet-gn", "task": "8class", "epochs": 30, "mixup": 0.3,
                        "temperature": 0.8, "temperature_source": "run A", "review_threshold": 0.9}

    with pytest.raises(RefitMismatch) as refused:
        run.for_refit({"architecture": "leukonet", "epochs": 30, "task": "4class"})
    assert refused.value.differing == {"architecture": ("leukonet", "leukonet-gn"),
                                       "task": ("4class", "8class")}
    assert "architecture leukonet (the run: leukonet-gn), task 4class (the run: 8class)" in str(refused.value)


def test_retraining_the_bundled_eight_type_network_repeats_its_recipe():
    """`--arch leukonet-gn --task 8class` alone is what the model card says trained the bundled
    network: a default changed without retraining it (or the other way round) shows here."""
    from classifier.model_folder import BUNDLED_MODELS_DIR, read_metadata

    metadata = read_metadata(BUNDLED_MODELS_DIR / "leukonet-gn-8class")
    default = Recipe(architecture="leukonet-gn", task="8class").resolved()
    assert differences_from_run(default, metadata) == {}
    assert default.clipped_exposure == 0.3 and default.saturation == 0.9


def test_a_stored_run_differs_from_a_recipe_in_what_it_recorded_or_in_what_runs_before_had():
    recipe = Recipe(architecture="leukonet-gn", task="8class").resolved()
    run = {"architecture": "leukonet-gn", "task": "8class", "seed": recipe.seed,
           "input_spec": {**recipe.input_spec, "crop": 192},
           "hyperparameters": {**recipe.hyperparameters(), "epochs": 20}}
    assert differences_from_run(recipe, run) == {"epochs": (20, 30),
                                                 "input_spec": (run["input_spec"], recipe.input_spec)}
    run["input_spec"] = dict(recipe.input_spec)
    # A run from before clipped exposure existed trained without it.
    del run["hyperparameters"]["clipped_exposure"]
    assert differences_from_run(recipe, run)["clipped_exposure"] == (0.0, 0.3)
    # A setting with no known past (the run's seed) is not assumed to match.
    del run["seed"]
    assert differences_from_run(recipe, run)["seed"] == (None, recipe.seed)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"height": 96}, 'input spec {"height": 96} needs "width": a whole number above 0'),
        ({"height": 0, "width": 96, "mode": "field"},
         'input spec {"height": 0, "mode": "field", "width": 96} needs "height": a whole number above 0'),
        ({"height": 96, "width": 96, "mode": "x"}, "mode 'x' is not one of field, cell"),
        ({"height": 96, "width": 96, "mode": "cell"}, 'needs "crop": a whole number above 0'),
        ({"height": 96, "width": 64, "mode": "cell", "crop": 128}, "a cell's view is square"),
        ({"height": 96, "width": 96, "mask_radius": float("inf")}, "mask_radius must be a finite number"),
    ],
)
def test_an_input_spec_no_network_can_take_is_refused_before_the_run(spec, message):
    """--input-spec '{"height": 96}' passed the checks and the run then stopped on a KeyError
    traceback while it prepared its images (on the site: a failed version, "unexpected error")."""
    with pytest.raises(RecipeError, match=re.escape(message)) as refused:
        TrainingConfig(data_dir="anywhere", input_spec=spec).resolved()
    assert refused.value.settings == ("input_spec",)


def test_a_refit_matches_its_held_out_runs_folders_by_place_or_by_name_where_moved(tmp_path):
    from classifier.training.data import same_folders
    from classifier.training.recipe import RefitDataMismatch

    (tmp_path / "pbc").mkdir()
    (tmp_path / "bccd").mkdir()
    here = [str(tmp_path / "pbc"), str(tmp_path / "bccd")]
    assert same_folders(here, [f"{tmp_path / 'bccd'}/", str(tmp_path / "pbc")])  # any order, however written
    # A run made on another machine recorded its own paths: a folder not here is matched by name.
    assert same_folders(here, ["/elsewhere/pbc", "/elsewhere/bccd"])
    assert not same_folders(here, ["/elsewhere/pbc"])  # one folder fewer
    assert not same_folders(here, ["/elsewhere/pbc", "/elsewhere/small"])
    (tmp_path / "small").mkdir()
    assert not same_folders([str(tmp_path / "small")], [str(tmp_path / "pbc")])  # both here, two folders
    calibration = HeldOutCalibration(1.2, "v3", {}, data_folders=(str(tmp_path / "pbc"),))
    calibration.check_same_data([str(tmp_path / "pbc")])
    with pytest.raises(RefitDataMismatch, match="learns from the data folders its held-out run did"):
        calibration.check_same_data([str(tmp_path / "small")])
    HeldOutCalibration(1.2, "v3", {}).check_same_data([str(tmp_path / "small")])  # none recorded
