"""A refit's calibration, borrowed from held-out runs of the same recipe.

A refit trains on every TRAIN group, so nothing is left to fit its temperature on: it takes the
temperature of a held-out run (its model folder or metadata.json, temperature_of_run), or one
fitted on the pooled validation predictions of several held-out runs, each split rebuilt from the
data (pooled_temperature), and repeats those runs' inputs and augmentation (recipe.refit_settings).
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from classifier import calibration, dataset, ood
from classifier.model_folder import ModelFolderError, read_metadata
from classifier.training.data import data_folders, decoded_rows, labels, select_sources
from classifier.training.recipe import HeldOutCalibration, refit_settings, trained_as


class ValidationPredictions(NamedTuple):
    logits: np.ndarray  # uncalibrated, (N, C)
    labels: np.ndarray  # (N,) indices into class_names
    split_seed: int
    images: list  # the N validation images (dataset.LabelledImage)
    class_names: list


def rebuilt_split(metadata, data_dir):
    """(sources, split seed): a run's data folders split into training and validation as it split
    them, from the seed, fraction and per-class cap its metadata records; None where it held out
    no validation split. Each folder is split on its own, so one folder of several gives what it
    gave in the run."""
    hyperparameters = metadata.get("hyperparameters") or {}
    fraction = float(hyperparameters.get("validation_fraction") or 0.0)
    if fraction <= 0.0 or not metadata.get("validation_count"):
        return None
    split_seed = hyperparameters.get("validation_seed")
    split_seed = int(metadata["seed"] if split_seed is None else split_seed)
    sources = select_sources(data_dir, metadata["task"], hyperparameters.get("max_images_per_class"),
                             int(metadata["seed"]), fraction, split_seed)
    return sources, split_seed


def validation_predictions(run_dir, data_dir, cache_dir=None):
    """A held-out run's uncalibrated predictions on its own validation split.

    The split is rebuilt from the run's metadata (validation seed and fraction) on data_dir (one
    folder or several, as data.data_folders reads them), which must be the data it was trained
    on. Raises ValueError with a message for the operator.
    """
    from classifier.inference import CellClassifier

    try:
        # Float32, as the run fitted its own temperature: a pooled temperature must agree with it.
        classifier = CellClassifier.from_directory(run_dir, runtime="litert")
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{run_dir} is not a model folder: {error}") from None
    metadata = classifier.metadata
    hyperparameters = metadata.get("hyperparameters") or {}
    rebuilt = rebuilt_split(metadata, data_dir)
    if rebuilt is None:
        raise ValueError(f"{run_dir} was trained without a validation split: it has nothing to lend")
    sources, split_seed = rebuilt
    class_names = list(classifier.class_names)
    inputs, images = [], []
    for source in sources:
        prepared, ok, _ = dataset.load_prepared(
            source.all_train,
            classifier.input_spec,
            1.0,
            window_scale=hyperparameters.get("window_scale", "image"),
            cache_dir=cache_dir,
        )
        rows = decoded_rows(source.all_train, source.validation, ok)
        inputs.append(prepared[rows])
        images.extend(source.all_train[k] for k in rows)
    inputs = np.concatenate(inputs)
    y = labels(images, class_names)
    per_class = (metadata.get("metrics") or {}).get("validation", {}).get("per_class", {})
    recorded = [int(per_class.get(name, {}).get("support", -1)) for name in class_names]
    rebuilt = np.bincount(y, minlength=len(class_names)).tolist()
    if rebuilt != recorded:
        raise ValueError(
            f"{data_dir} gives {run_dir}'s validation split (seed {split_seed}) {rebuilt} "
            f"images per class where the run had {recorded}: not the data it was trained on"
        )
    logits = classifier.logits(inputs.astype(np.float32) / np.float32(255.0))
    return ValidationPredictions(logits, y, split_seed, images, class_names)


def pooled_temperature(run_dirs, data_dir, cache_dir=None):
    """(temperature, where it came from) fitted on the pooled validation predictions of several
    held-out runs of one recipe, each on its own group split, for a refit of that recipe.

    One split of ~40 groups gives a temperature that swings with the photographs it holds (0.46 to
    1.24 for LeukoNet over five splits); fitted on all but one split, the pooled temperature
    calibrated the split left out a little better on average than another single split's did
    (ECE 0.094 against 0.105; bench/group_cv.py measures this). Raises ValueError with a message
    for the operator.
    """
    if not run_dirs:
        raise ValueError("give at least one held-out run folder")
    predictions = [validation_predictions(run_dir, data_dir, cache_dir) for run_dir in run_dirs]
    temperature = calibration.fit_temperature(
        np.concatenate([p.logits for p in predictions]),
        np.concatenate([p.labels for p in predictions]),
    )
    count = sum(len(p.labels) for p in predictions)
    seeds = ", ".join(str(p.split_seed) for p in predictions)
    source = (
        f"pooled validation predictions of {len(run_dirs)} held-out runs (split seeds {seeds}; "
        f"{count} images)"
    )
    return temperature, source


def temperature_of_run(path):
    """The calibration a refit of a held-out run borrows (recipe.HeldOutCalibration): its
    temperature, where it came from, the settings to repeat and its review threshold.

    ``path`` is the run's model folder or its metadata.json. Raises ValueError with a message for
    the operator when there is no such file or no temperature in it.
    """
    path = Path(path)
    try:
        metadata = read_metadata(path)
        temperature = float(metadata["temperature"])
    except (ModelFolderError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"no calibration temperature in {path}: {error}") from None
    if not temperature > 0:
        raise ValueError(f"the temperature in {path} is {temperature}, not a positive number")
    hyperparameters = metadata.get("hyperparameters") or {}
    split_seed = hyperparameters.get("validation_seed") or metadata.get("seed")
    label = kept_epoch_label(metadata.get("metrics") or {})
    repeated = refit_settings(hyperparameters, metadata.get("input_spec"))
    return HeldOutCalibration(
        temperature, f"{path} (validation split seed {split_seed}, {label})", repeated,
        ood.fitted_confidence_threshold(metadata.get("metrics")),
        trained_as(metadata.get("architecture"), metadata.get("task"), hyperparameters),
        tuple(data_folders(metadata.get("dataset_path") or "")) or None,
    )


def kept_epoch_label(metrics):
    """Which epoch a held-out run stored, in words: "best epoch 9" or "last epoch 16"."""
    return f"{metrics.get('epoch_choice', 'best')} epoch {metrics.get('best_epoch')}"
