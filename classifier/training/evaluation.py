"""Measuring a trained network: the calibration temperature fitted on the validation split (or
borrowed by a refit), held-out figures with that temperature on TEST and TEST_SIMPLE, and the
figures of a stored classifier on any labelled folder."""

from pathlib import Path

import numpy as np

from classifier import calibration, dataset
from classifier.errors import TrainingDataError
from classifier.metrics import binary_from_four, binary_labels, classification_metrics
from classifier.training import trust
from classifier.training.data import labels


def predict_probabilities(model, inputs_uint8, task, batch_size=256):
    """(N, C) probabilities in class order from uint8 inputs, without temperature."""
    outputs = []
    for start in range(0, len(inputs_uint8), batch_size):
        batch = inputs_uint8[start : start + batch_size].astype(np.float32) / np.float32(255.0)
        outputs.append(model(batch, training=False).numpy())
    if not outputs:
        return np.zeros((0, 2 if task == "binary" else 4))
    raw = np.concatenate(outputs).astype(np.float64)
    if raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    return raw


def raw_logits(probabilities, task):
    """Logits (up to a per-row constant) for temperature scaling."""
    if task == "binary" and probabilities.shape[1] == 2:
        return calibration.sigmoid_to_logits(probabilities[:, 1])
    return calibration.logits_from_probabilities(probabilities)


def evaluation_metrics(probabilities, y, class_names, same_cell=None):
    """Metrics for one split; 4-class results also get the binary grouping summed from them."""
    result = classification_metrics(y, probabilities, class_names)
    if tuple(class_names) != ("MONONUCLEAR", "POLYNUCLEAR"):
        result["binary"] = classification_metrics(
            binary_labels(y, class_names),
            binary_from_four(probabilities, class_names),
            ("MONONUCLEAR", "POLYNUCLEAR"),
        )
    if same_cell is not None and np.any(same_cell):
        keep = ~np.asarray(same_cell, bool)
        result["without_same_cell_in_train"] = classification_metrics(
            y[keep], probabilities[keep], class_names
        )
    return result


def calibrate(fitted, arrays, recipe):
    """(temperature, metrics so far): fitted on the validation split, with the held-out figures at
    that temperature; a refit takes the temperature of its held-out run."""
    if recipe.refit:
        return recipe.temperature, {
            "temperature": recipe.temperature,
            "refit": {"epochs": len(fitted.history), "temperature_source": recipe.temperature_source},
        }
    raw = predict_probabilities(fitted.model, arrays.x_val, recipe.task)
    logits = raw_logits(raw, recipe.task)
    temperature, by_source = trust.served_temperature(logits, arrays)
    class_names, y_val = arrays.class_names, arrays.y_val
    return temperature, {
        # The epoch whose network is stored: the best on validation, or the last.
        "best_epoch": fitted.best_epoch,
        "epoch_choice": "last" if recipe.keep_last_epoch else "best",
        "temperature": temperature,
        "validation": evaluation_metrics(
            calibration.softmax(logits, temperature), y_val, class_names
        ),
        "validation_uncalibrated_ece": classification_metrics(y_val, raw, class_names)["ece"],
        "validation_groups": arrays.validation_groups,
        "calibration": by_source,
    }


def prepared_split(images, input_spec, class_names, **load):
    """(uint8 inputs, class indices, images) of the images that decoded, and how many did not."""
    inputs, ok, _ = dataset.load_prepared(images, input_spec, 1.0, **load)
    images = [image for image, good in zip(images, ok, strict=True) if good]
    return inputs[ok], labels(images, class_names), images, int((~ok).sum())


def test_split_metrics(model, selection, recipe, temperature, config):
    """{split: metrics} on the data's TEST and TEST_SIMPLE folders, calibrated with temperature."""
    class_names = recipe.class_names
    load = dict(window_scale=recipe.window_scale, cache_dir=config.cache_dir, workers=config.workers)
    metrics = {}
    for split, folder in selection.layout.eval_dirs.items():
        images = dataset.list_images(folder, recipe.task, split, selection.originals)
        if not images:
            continue
        inputs, y, images, _ = prepared_split(images, recipe.input_spec, class_names, **load)
        raw = predict_probabilities(model, inputs, recipe.task)
        probabilities = calibration.softmax(raw_logits(raw, recipe.task), temperature)
        same = np.array([i.same_cell_in_train for i in images])
        metrics[split] = evaluation_metrics(probabilities, y, class_names, same)
        metrics[split]["uncalibrated_ece"] = classification_metrics(y, raw, class_names)["ece"]
    return metrics


def evaluate_classifier(classifier, data_dir, split="TEST", window_scale=None, cache_dir=None):
    """Held-out metrics of a CellClassifier on data_dir/split (or data_dir itself)."""
    layout = dataset.resolve_layout(data_dir)
    originals = dataset.read_originals(layout.root)
    folder = layout.eval_dirs.get(split) or (layout.root / split)
    if not Path(folder).is_dir():
        if layout.train_dir == layout.root:
            folder, split = layout.root, ""
        else:
            raise TrainingDataError(f"{data_dir} has no {split} folder")
    images = dataset.list_images(folder, classifier.task, split, originals)
    if not images:
        raise TrainingDataError(f"{folder} holds no images for the {classifier.task} task")
    scale = window_scale or classifier.metadata.get("hyperparameters", {}).get(
        "window_scale", "image"
    )
    class_names = list(classifier.class_names)
    inputs, y, images, skipped = prepared_split(
        images, classifier.input_spec, class_names, window_scale=scale, cache_dir=cache_dir
    )
    probabilities = classifier.predict_inputs(inputs.astype(np.float32) / 255.0)
    same = np.array([i.same_cell_in_train for i in images])
    result = evaluation_metrics(probabilities, y, class_names, same)
    result["skipped_files"] = skipped
    return result
