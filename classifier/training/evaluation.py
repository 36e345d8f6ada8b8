"""Measuring a trained network: the calibration temperature fitted on the validation split (or
borrowed by a refit), held-out figures with that temperature on each source's TEST and
TEST_SIMPLE, each source apart, and the figures of a stored classifier on any labelled folder.

A source holding fewer classes than the network is measured on the classes it holds: the call is
the most probable of those (the probabilities restricted to them and renormalised), as a lab that
knows its slides hold no erythroblasts would read it. Where a source holds more than the four
leukocyte types blood-cell-images has, its figures over those four alone are kept too, so that
networks and sources can be compared on the classes they share.
"""

from pathlib import Path

import numpy as np

from classifier import calibration, dataset
from classifier.errors import TrainingDataError
from classifier.labels import FOUR_CLASSES
from classifier.metrics import binary_from_four, binary_labels, classification_metrics
from classifier.training import trust
from classifier.training.data import labels


def predict_probabilities(model, inputs_uint8, task, batch_size=256, n_classes=None):
    """(N, C) probabilities in class order from uint8 inputs, without temperature."""
    outputs = []
    for start in range(0, len(inputs_uint8), batch_size):
        batch = inputs_uint8[start : start + batch_size].astype(np.float32) / np.float32(255.0)
        outputs.append(model(batch, training=False).numpy())
    if not outputs:
        return np.zeros((0, 2 if task == "binary" else n_classes or len(FOUR_CLASSES)))
    raw = np.concatenate(outputs).astype(np.float64)
    if raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    return raw


def raw_logits(probabilities, task):
    """Logits (up to a per-row constant) for temperature scaling."""
    if task == "binary" and probabilities.shape[1] == 2:
        return calibration.sigmoid_to_logits(probabilities[:, 1])
    return calibration.logits_from_probabilities(probabilities)


def restricted(probabilities, y, class_names, kept):
    """(probabilities over the kept classes, renormalised; labels as indices into kept; the mask
    of the rows kept) for the rows whose class is one of kept."""
    class_names = list(class_names)
    columns = [class_names.index(name) for name in kept]
    rows = np.isin(y, columns)
    picked = np.asarray(probabilities, np.float64)[rows][:, columns]
    picked = picked / np.maximum(picked.sum(axis=1, keepdims=True), 1e-300)
    position = {column: k for k, column in enumerate(columns)}
    return picked, np.array([position[value] for value in y[rows]], dtype=np.int64), rows


def _binary_metrics(probabilities, y, class_names):
    """Binary figures summed from a typed network's call, on the cells of a type with a group."""
    groups = binary_labels(y, class_names)
    rows = groups >= 0
    summed = binary_from_four(probabilities[rows], class_names)
    if np.any(summed.sum(axis=1) < 1 - 1e-9):  # types in neither group left out: renormalise
        summed = summed / np.maximum(summed.sum(axis=1, keepdims=True), 1e-300)
    return classification_metrics(groups[rows], summed, ("MONONUCLEAR", "POLYNUCLEAR"))


def evaluation_metrics(probabilities, y, class_names, same_cell=None):
    """Metrics for one split; a typed network's results also get the binary grouping summed from
    them (over the cells of a type the grouping has a place for)."""
    probabilities, y = np.asarray(probabilities, np.float64), np.asarray(y, np.int64)
    result = classification_metrics(y, probabilities, class_names)
    if tuple(class_names) != ("MONONUCLEAR", "POLYNUCLEAR"):
        result["binary"] = _binary_metrics(probabilities, y, list(class_names))
    if same_cell is not None and np.any(same_cell):
        keep = ~np.asarray(same_cell, bool)
        result["without_same_cell_in_train"] = classification_metrics(
            y[keep], probabilities[keep], class_names
        )
    return result


def source_split_metrics(probabilities, y, class_names, source_classes, same_cell=None):
    """One source's figures on one split: over the classes it holds (all the network's where it
    holds them all) and, where it holds more than the four shared leukocyte types, over those."""
    kept = [name for name in class_names if name in set(source_classes)]
    if kept == list(class_names):
        result = evaluation_metrics(probabilities, y, class_names, same_cell)
    else:
        picked, picked_y, rows = restricted(probabilities, y, class_names, kept)
        same = None if same_cell is None else np.asarray(same_cell, bool)[rows]
        result = evaluation_metrics(picked, picked_y, kept, same)
        result["restricted_to"] = kept
    if set(FOUR_CLASSES) <= set(kept) and len(kept) > len(FOUR_CLASSES):
        picked, picked_y, _ = restricted(probabilities, y, class_names, FOUR_CLASSES)
        result["four_classes"] = classification_metrics(picked_y, picked, FOUR_CLASSES)
    return result


def calibrate(fitted, arrays, recipe):
    """(temperature, metrics so far): fitted on the validation split, with the held-out figures at
    that temperature; a refit takes the temperature of its held-out run."""
    if recipe.refit:
        return recipe.temperature, {
            "temperature": recipe.temperature,
            "refit": {"epochs": len(fitted.history), "temperature_source": recipe.temperature_source},
        }
    raw = predict_probabilities(fitted.model, arrays.x_val, recipe.task, n_classes=len(arrays.class_names))
    logits = raw_logits(raw, recipe.task)
    temperature, by_source = trust.served_temperature(logits, arrays)
    class_names, y_val = arrays.class_names, arrays.y_val
    calibrated = calibration.softmax(logits, temperature)
    return temperature, {
        # The epoch whose network is stored: the best on validation, or the last.
        "best_epoch": fitted.best_epoch,
        "epoch_choice": "last" if recipe.keep_last_epoch else "best",
        "temperature": temperature,
        "validation": evaluation_metrics(calibrated, y_val, class_names),
        "validation_uncalibrated_ece": classification_metrics(y_val, raw, class_names)["ece"],
        "validation_groups": arrays.validation_groups,
        "calibration": by_source,
        "sources": _validation_by_source(calibrated, arrays),
    }


def review_record(model, arrays, recipe, temperature, head):
    """The review threshold's record of a trained network, from its calibrated validation calls and
    their out-of-distribution scores. A refit has no unseen cells to fit one on: it takes the one
    its held-out run fitted at the temperature it borrows, where it was given one (else None)."""
    if recipe.refit:
        if recipe.review_threshold is None:
            return None
        return {"confidence_threshold": recipe.review_threshold,
                "fitted_on": "validation cells of the held-out run", "refit_from": recipe.temperature_source}
    if len(arrays.y_val) == 0:
        return None
    raw = predict_probabilities(model, arrays.x_val, recipe.task, n_classes=len(arrays.class_names))
    calibrated = calibration.softmax(raw_logits(raw, recipe.task), temperature)
    shape = tuple(model.inputs[0].shape[1:])
    scores = head(trust.penultimate_features(model, arrays.x_val, shape)) if head is not None else None
    names, sources = trust.validation_sources(arrays)
    return trust.fit_review_threshold(calibrated, scores, arrays.y_val, sources, names)[1]


def _validation_by_source(calibrated, arrays):
    """{source: {"validation": figures}} of every source with validation images."""
    figures = {}
    for index, name in enumerate(arrays.source_names):
        rows = arrays.val_sources == index
        if not rows.any():
            continue
        held = arrays.y_train[arrays.train_sources == index]
        classes = [arrays.class_names[k] for k in sorted({*held.tolist(), *arrays.y_val[rows].tolist()})]
        figures[name] = {"validation": source_split_metrics(
            calibrated[rows], arrays.y_val[rows], arrays.class_names, classes
        )}
    return figures


def prepared_split(images, input_spec, class_names, **load):
    """(uint8 inputs, class indices, images) of the images that decoded, and how many did not."""
    inputs, ok, _ = dataset.load_prepared(images, input_spec, 1.0, **load)
    images = [image for image, good in zip(images, ok, strict=True) if good]
    return inputs[ok], labels(images, class_names), images, int((~ok).sum())


def review_flag_figures(model, inputs, probabilities, y, flag):
    """The review flag as the site raises it, on a held-out split: a call under the version's
    confidence threshold, or an unfamiliar cell. ``flag`` is (that threshold, the OodHead or None);
    an error is the site's call, the most probable of every class the network has, gone wrong."""
    threshold, head = flag
    scores = None
    if head is not None:
        scores = head(trust.penultimate_features(model, inputs, tuple(model.inputs[0].shape[1:])))
    correct = probabilities.argmax(axis=1) == y
    flagged, caught = trust.review_shares(probabilities.max(axis=1), scores, correct, threshold)
    return {"confidence_threshold": threshold, "ood_score": head is not None, "cells": int(len(y)),
            "errors": int((~correct).sum()), "flagged_share": flagged, "errors_caught": caught}


def _source_test_metrics(model, source, recipe, temperature, load, flag):
    """{split: figures} on a source's TEST and TEST_SIMPLE folders, calibrated with temperature,
    with the review flag's figures where ``flag`` (review_flag_figures's) is given."""
    class_names = recipe.class_names
    source_classes = {image.class_name for image in source.all_train}
    metrics = {}
    for split, folder in source.layout.eval_dirs.items():
        images = dataset.list_images(folder, recipe.task, split, source.originals)
        if not images:
            continue
        inputs, y, images, _ = prepared_split(images, recipe.input_spec, class_names, **load)
        raw = predict_probabilities(model, inputs, recipe.task, n_classes=len(class_names))
        probabilities = calibration.softmax(raw_logits(raw, recipe.task), temperature)
        same = np.array([i.same_cell_in_train for i in images])
        classes = source_classes | {image.class_name for image in images}
        metrics[split] = source_split_metrics(probabilities, y, class_names, classes, same)
        uncalibrated = source_split_metrics(raw, y, class_names, classes)
        metrics[split]["uncalibrated_ece"] = uncalibrated["ece"]
        if flag is not None:
            metrics[split]["review_flag"] = review_flag_figures(model, inputs, probabilities, y, flag)
    return metrics


def test_split_metrics(model, selection, recipe, temperature, config, flag=None):
    """{"sources": {source: {split: figures}}} on every source's TEST and TEST_SIMPLE folders,
    calibrated with temperature, and the review flag's figures where ``flag`` (the version's
    confidence threshold, its OodHead or None) is given; a run on one source also keeps its
    figures at the top level, where they have always been."""
    load = dict(window_scale=recipe.window_scale, cache_dir=config.cache_dir, workers=config.workers)
    by_source = {
        source.name: _source_test_metrics(model, source, recipe, temperature, load, flag)
        for source in selection.sources
    }
    metrics = {"sources": by_source}
    if len(selection.sources) == 1:
        metrics.update(next(iter(by_source.values())))
    return metrics


def evaluate_classifier(classifier, data_dir, split="TEST", window_scale=None, cache_dir=None):
    """Held-out metrics of a CellClassifier on data_dir/split (or data_dir itself), on the
    network's classes the folder holds (source_split_metrics)."""
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
    held = {image.class_name for image in images}
    result = source_split_metrics(probabilities, y, class_names, held, same)
    result["skipped_files"] = skipped
    return result
