"""Measuring a trained network: the calibration temperature fitted on the validation split (or
borrowed by a refit), held-out figures with that temperature on each source's TEST and
TEST_SIMPLE, each source apart, and the figures of a stored classifier on any labelled folder.

A source holding fewer classes than the network is measured on the classes it holds: the call is
the most probable of those (the probabilities restricted to them and renormalised), as a lab that
knows its slides hold no erythroblasts would read it. Where a source holds more than the four
leukocyte types blood-cell-images has, its figures over those four alone are kept too, so that
networks and sources can be compared on the classes they share.
"""

import hashlib
import os
from dataclasses import replace

import numpy as np

from classifier import calibration, dataset, second_look
from classifier.errors import TrainingDataError
from classifier.labels import FOUR_CLASSES
from classifier.metrics import binary_from_four, binary_labels, classification_metrics
from classifier.training import trust
from classifier.training.data import labels, train_folder_images


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


def review_record(served, selection, recipe, config):
    """The review threshold's record of a trained network, fitted on its validation cells as the
    site serves it (``served``, a CellClassifier: its runtime, temperature, second looks and the
    flag those raise), so that the budget holds for the flag a technologist is shown. A refit has
    no unseen cells to fit one on: it takes the one its held-out run fitted at the temperature it
    borrows, where it was given one (else None)."""
    if recipe.refit:
        if recipe.review_threshold is None:
            return None
        return {"confidence_threshold": recipe.review_threshold,
                "fitted_on": "validation cells of the held-out run", "refit_from": recipe.temperature_source}
    looks, correct, sources = [], [], []
    for index, source in enumerate(selection.sources):
        if not source.validation:
            continue
        taken, ok, _, y = served_calls(served, source.validation, recipe.window_scale,
                                       cache_dir=config.cache_dir, workers=config.workers)
        looks.append((taken, ok))
        correct.append(taken.probabilities[ok].argmax(axis=1) == y)
        sources.append(np.full(len(y), index))
    if not looks:
        return None

    def flag_at(threshold):
        return np.concatenate([taken.needs_review(threshold)[ok] for taken, ok in looks])

    names = [source.name for source in selection.sources]
    record = trust.fit_review_threshold(flag_at, np.concatenate(correct), np.concatenate(sources), names)[1]
    return {**record, "fitted_on": "validation cells, as served", "served_by": served.serving_runtime}


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


def review_flag_figures(flagged, probabilities, y, threshold, ood_score):
    """The review flag's figures on a held-out split: ``flagged`` (N,) bool, the flag as the site
    raises it at the version's confidence ``threshold`` (second_look.needs_review; ``ood_score``:
    the network's unfamiliar cells are flagged too); an error is the site's call, the most probable
    of every class the network has, gone wrong."""
    wrong = probabilities.argmax(axis=1) != y
    return {"confidence_threshold": threshold, "ood_score": ood_score, "cells": int(len(y)),
            "errors": int(wrong.sum()), "flagged_share": float(flagged.mean()) if len(y) else 0.0,
            "errors_caught": float(flagged[wrong].mean()) if wrong.any() else None}


def served_calls(served, images, window_scale, **load):
    """(Looks, bool (N,) the photographs that decoded, those photographs, their class indices) of
    a CellClassifier's calls on labelled single-cell photographs as the site serves them
    (second_look.classify_images)."""
    looks, ok, _ = second_look.classify_images(served, images, window_scale, **load)
    kept = [image for image, good in zip(images, ok, strict=True) if good]
    return looks, ok, kept, labels(kept, list(served.class_names))


def served_split_metrics(served, images, window_scale, held_classes, review_threshold=None, **load):
    """source_split_metrics of a CellClassifier's calls on labelled single-cell photographs, as
    the site serves them (its runtime, temperature and second looks: second_look.classify_images),
    on ``held_classes``; with the uncalibrated ECE, the review flag's figures where a
    ``review_threshold`` is given (those on the photographs never trained on too, beside their other
    figures in "without_same_cell_in_train", where some are marked same_cell_in_train), and how many
    files did not decode or showed no colour (``skipped_files``), the first of them named with why
    (``skipped_named``)."""
    looks, ok, decoded, y = served_calls(served, images, window_scale, **load)
    if not decoded:
        # Their headers read (dataset.check_some_readable passed them before training), their data not.
        folder = os.path.commonpath([os.path.dirname(os.path.dirname(image.path)) for image in images])
        raise dataset.unreadable_folder(len(images), folder)
    class_names = list(served.class_names)
    same = np.array([image.same_cell_in_train for image in decoded])
    probabilities = looks.probabilities[ok]
    figures = source_split_metrics(probabilities, y, class_names, held_classes, same)
    uncalibrated = served.predict_inputs(looks.inputs[ok], calibrated=False)
    figures["uncalibrated_ece"] = source_split_metrics(uncalibrated, y, class_names, held_classes)["ece"]
    if review_threshold is not None:
        flagged = looks.needs_review(review_threshold)[ok]
        figures["review_flag"] = review_flag_figures(flagged, probabilities, y, review_threshold,
                                                     served.has_ood_score)
        never_trained_on = figures.get("without_same_cell_in_train")
        if never_trained_on is not None:
            # A flag rate quoted of a held-out split must not count cells the network learnt from,
            # which it calls surely and so seldom flags: measured apart, as the split's other figures.
            kept = ~same
            never_trained_on["review_flag"] = review_flag_figures(
                flagged[kept], probabilities[kept], y[kept], review_threshold, served.has_ood_score)
    figures["skipped_files"] = int((~ok).sum())
    figures["skipped_named"] = dataset.skipped_files(images, ok)
    return figures


def test_split_metrics(served, selection, recipe, config, review_threshold=None, left_out=frozenset()):
    """{"sources": {source: {split: figures}}, "served_by": the runtime} of a CellClassifier, as
    the site serves it (served_split_metrics), on every source's TEST and TEST_SIMPLE folders,
    each on the classes the source holds, with the review flag's figures where
    ``review_threshold`` is given; a run on one source also keeps its figures at the top level,
    where they have always been. Files whose SHA-256 is in ``left_out`` (photographs the network
    was tuned on) are left out, and counted in "left_out" as {"source/split": n}; files that are
    byte-for-byte copies of the run's TRAIN images count as cells also photographed in TRAIN, whose
    figures without them are kept beside the split's (evaluation_metrics)."""
    load = dict(cache_dir=config.cache_dir, workers=config.workers)
    by_source, left_out_counts = {}, {}
    trained_on = FileDigests(selection.all_train)
    for source in selection.sources:
        source_classes = {image.class_name for image in source.all_train}
        by_source[source.name] = figures = {}
        for split, folder in source.layout.eval_dirs.items():
            images = dataset.list_images(folder, recipe.task, split, source.originals)
            if left_out:
                kept = [image for image in images if trained_on.digest(image.path) not in left_out]
                if len(kept) < len(images):
                    left_out_counts[f"{source.name}/{split}"] = len(images) - len(kept)
                images = kept
            images = with_copies_marked(images, trained_on)
            if images:
                held = source_classes | {image.class_name for image in images}
                figures[split] = served_split_metrics(served, images, recipe.window_scale, held,
                                                      review_threshold, **load)
    metrics = {"sources": by_source, "served_by": served.serving_runtime}
    if left_out_counts:
        metrics["left_out"] = left_out_counts
    if len(selection.sources) == 1:
        metrics.update(next(iter(by_source.values())))
    return metrics


class FileDigests:
    """The SHA-256s of files (the run's TRAIN images), read only where a file asked about has the
    size of one of them: a TEST file that is a byte-for-byte copy of one the network learnt from is
    no held-out cell, and is measured apart as one also photographed in TRAIN (with_copies_marked)."""

    def __init__(self, images):
        self._by_size = {}
        for image in images:
            try:
                self._by_size.setdefault(os.path.getsize(image.path), []).append(image.path)
            except OSError:
                continue
        self._digests = {}

    def holds(self, path):
        try:
            same_size = self._by_size.get(os.path.getsize(path), [])
            return any(self.digest(other) == self.digest(path) for other in same_size)
        except OSError:
            return False

    def digest(self, path):
        """A file's SHA-256, read once: a TEST file left out by it (``left_out``) is asked again."""
        if path not in self._digests:
            self._digests[path] = _sha256(path)
        return self._digests[path]


def with_copies_marked(images, trained_on):
    """``images`` (TEST photographs), those that are byte-for-byte copies of a file of
    ``trained_on`` (FileDigests of the TRAIN images the network learnt from) marked as cells also
    photographed in TRAIN, as an originals.csv marks them: evaluation_metrics measures them apart.
    What a run does to its TEST, `manage.py evaluate` and bench/classify.py do to any folder."""
    return [replace(image, same_cell_in_train=True) if trained_on.holds(image.path) else image
            for image in images]


def trained_on_files(data_dirs, task, max_per_class=None, seed=None):
    """FileDigests of the TRAIN images a run of ``task`` on ``data_dirs`` learnt from, subsampled
    as it was (``max_per_class`` and ``seed``, a version's hyperparameters and seed: as
    data.select_sources picks them). A folder that is no data folder on this machine (moved since)
    adds none: the caller says so."""
    images = []
    for folder in data_dirs:
        try:
            layout = dataset.resolve_layout(folder)
            images += train_folder_images(layout, {}, task, max_per_class, seed)
        except TrainingDataError:
            continue
    return FileDigests(images)


def _sha256(path):
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def evaluate_classifier(classifier, data_dir, split="TEST", window_scale=None, cache_dir=None,
                        trained_on=None):
    """Held-out metrics of a CellClassifier on data_dir/split (or data_dir itself), as the site
    serves it, on the network's classes the folder holds (served_split_metrics); photographs that
    are byte-for-byte copies of ``trained_on``'s files (trained_on_files: the TRAIN images the
    network learnt from) measured apart, as a run measures its TEST."""
    images, _ = dataset.evaluation_images(data_dir, classifier.task, split)
    if trained_on is not None:
        images = with_copies_marked(images, trained_on)
    scale = window_scale or classifier.metadata.get("hyperparameters", {}).get(
        "window_scale", "image"
    )
    held = {image.class_name for image in images}
    return served_split_metrics(classifier, images, scale, held, cache_dir=cache_dir)
