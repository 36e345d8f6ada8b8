"""Knowing when a trained network does not know: the temperature it serves with and each source's
own, and the statistics of its out-of-distribution score (classifier.ood), fitted after the fit.

The served temperature is fitted on the pooled validation split with each source's cells weighing
alike. The source of a new photograph is unknown (it may be a lab none of the sources is), so no
one source's temperature can be served; pooled without weights, the source with the larger
validation split would set it. Each source's own temperature and its calibration error under
both are recorded beside it: where they differ much, the labs' photographs are calibrated
differently and the served figure is a compromise the record shows.
"""

import numpy as np

from classifier import calibration, dataset, ood
from classifier.metrics import expected_calibration_error
from classifier.training.data import labels, train_folder_images

# The batch the penultimate features are computed in: ~7 MB of LeukoNet input.
FEATURE_BATCH = 256


def validation_sources(arrays):
    """(source names, each validation row's source index). A run on one data folder has one."""
    names = getattr(arrays, "source_names", None)
    rows = getattr(arrays, "val_sources", None)
    if names is None or rows is None:  # arrays made before runs took several data folders
        return ["data"], np.zeros(len(arrays.y_val), np.int64)
    return list(names), np.asarray(rows, np.int64)


def _training_sources(arrays):
    """Each training row's source index for the threshold's balance, or None for one source.
    Reviewed cells (the source after the data folders) count with the first folder: a handful of
    them must not weigh as much as a lab."""
    rows = getattr(arrays, "train_sources", None)
    if rows is None:
        return None
    rows = np.asarray(rows, np.int64)
    return np.where(rows >= len(arrays.source_names), 0, rows)


def _ece(logits, y, temperature):
    return expected_calibration_error(calibration.softmax(logits, temperature), y)


def served_temperature(logits, arrays):
    """(the temperature served, the record of every source's calibration) from validation logits."""
    names, sources = validation_sources(arrays)
    y = arrays.y_val
    weights = ood.balanced_weights(len(y), sources)
    temperature = calibration.fit_temperature(logits, y, weights=weights)
    by_source = {}
    for index, name in enumerate(names):
        rows = sources == index
        if not rows.any():
            continue
        own = calibration.fit_temperature(logits[rows], y[rows])
        by_source[name] = {
            "validation_cells": int(rows.sum()),
            "temperature": own,
            "ece_uncalibrated": _ece(logits[rows], y[rows], 1.0),
            "ece_own_temperature": _ece(logits[rows], y[rows], own),
            "ece_served_temperature": _ece(logits[rows], y[rows], temperature),
        }
    record = {
        "temperature": temperature,
        "served": "fitted on the pooled validation split, each source's cells weighing alike",
        "sources": by_source,
    }
    return temperature, record


def unaugmented_view(inputs, input_shape):
    """Training inputs as the network sees them unaugmented: the central crop of the view cut
    with an augmentation margin (the same scale, so the crop is the plain view)."""
    height, width = input_shape[:2]
    top, left = (inputs.shape[1] - height) // 2, (inputs.shape[2] - width) // 2
    return inputs[:, top : top + height, left : left + width]


def penultimate_features(model, inputs_uint8, input_shape):
    """(N, D) float64 features (the input of the last Dense layer) of uint8 inputs."""
    import keras

    features = keras.Model(model.input, ood.feature_tensor(model))
    rows = []
    for start in range(0, len(inputs_uint8), FEATURE_BATCH):
        batch = unaugmented_view(inputs_uint8[start : start + FEATURE_BATCH], input_shape)
        rows.append(np.asarray(features(batch.astype(np.float32) / np.float32(255.0), training=False)))
    if not rows:
        return np.zeros((0, int(features.outputs[0].shape[-1])))
    return np.concatenate(rows).astype(np.float64)


def fit_ood(fitted, arrays, recipe):
    """(OodHead, its record) of a trained network: class statistics from the training cells'
    features; the threshold from the validation cells', or a refit's training cells' (which have
    no unseen cells; ood.REFIT_QUANTILE says why the quantile differs)."""
    shape = tuple(fitted.model.inputs[0].shape[1:])
    train_features = penultimate_features(fitted.model, arrays.x_train, shape)
    n_classes = len(arrays.class_names)
    if recipe.refit or len(arrays.y_val) == 0:
        reference = (train_features, _training_sources(arrays), None)
        quantile, fitted_on = ood.REFIT_QUANTILE, "training cells"
    else:
        _, sources = validation_sources(arrays)
        val_features = penultimate_features(fitted.model, arrays.x_val, shape)
        reference = (val_features, sources, getattr(arrays, "val_groups", None))
        quantile, fitted_on = ood.HELD_OUT_QUANTILE, "validation cells"
    head, record = ood.fit_ood_head(train_features, arrays.y_train, n_classes, reference, quantile)
    return head, {**record, "threshold_fitted_on": fitted_on}


def _folder_images(classifier, data_dir):
    """(training images, in-distribution reference images, quantile, where the threshold comes from)
    of a trained network's data folder, its validation split rebuilt as its run made it."""
    hyperparameters = classifier.metadata.get("hyperparameters") or {}
    layout = dataset.resolve_layout(data_dir)
    seed = int(classifier.metadata.get("seed") or 0)
    images = train_folder_images(
        layout, dataset.read_originals(layout.root), classifier.task,
        hyperparameters.get("max_images_per_class"), seed,
    )
    fraction = float(hyperparameters.get("validation_fraction") or 0.0)
    if fraction <= 0.0:
        return images, images, ood.REFIT_QUANTILE, "training cells"
    split_seed = hyperparameters.get("validation_seed")
    split_seed = seed if split_seed is None else int(split_seed)
    train, validation = dataset.split_validation(images, fraction, split_seed)
    return train, validation, ood.HELD_OUT_QUANTILE, "validation cells"


def with_fitted_ood(classifier, data_dir, cache_dir=None):
    """(a CellClassifier of the same network with an out-of-distribution score fitted on the TRAIN
    folder of data_dir, the score's record): to measure what the score would do for a network
    trained before runs fitted one. data_dir must be the data the network was trained on."""
    import keras

    from classifier.inference import CellClassifier

    train, reference, quantile, fitted_on = _folder_images(classifier, data_dir)
    scale = (classifier.metadata.get("hyperparameters") or {}).get("window_scale", "image")
    union = list({image.path: image for image in train + reference}.values())
    inputs, ok, _ = dataset.load_prepared(union, classifier.input_spec, 1.0, scale, cache_dir=cache_dir)
    row = {image.path: k for k, image in enumerate(union)}
    network = keras.Model(classifier.model.input, classifier.model.outputs[0], name=classifier.model.name)
    shape = tuple(classifier.input_shape)

    def features(images):
        kept = [image for image in images if ok[row[image.path]]]
        rows = np.array([row[image.path] for image in kept], np.int64)
        return kept, penultimate_features(network, inputs[rows], shape)

    train, train_features = features(train)
    reference, reference_features = features(reference)
    groups = [image.cell_key for image in reference]
    head, record = ood.fit_ood_head(
        train_features, labels(train, list(classifier.class_names)), len(classifier.class_names),
        (reference_features, None, groups), quantile,
    )
    record = {**record, "threshold_fitted_on": fitted_on, "data": str(data_dir)}
    scored = CellClassifier(ood.with_ood_output(network, head), classifier.metadata, classifier.runtime)
    return scored, record


# The review flag's budget: at most this share of a source's cells flagged for a human to look at
# (a fifth of a 100-cell differential is what a technologist can re-read beside the count).
REVIEW_BUDGET = 0.20
# Confidence thresholds tried, in hundredths: what the Models page and the sample page print.
REVIEW_THRESHOLD_GRID = tuple(round(0.50 + 0.01 * k, 2) for k in range(50))


def review_shares(flagged, correct):
    """(share of cells the review flag raises, share of the wrong calls among them, or None where
    no call is wrong)."""
    flagged, wrong = np.asarray(flagged, bool), ~np.asarray(correct, bool)
    caught = float(flagged[wrong].mean()) if wrong.any() else None
    return float(flagged.mean()), caught


def fit_review_threshold(flag_at, correct, sources, names, budget=REVIEW_BUDGET):
    """(the confidence threshold, its record): the highest threshold of the grid at which the
    review flag, ``flag_at(threshold)`` (N,) bool, raises at most ``budget`` of every source's
    validation cells; ``correct`` (N,) bool, the calls that are right.

    Why fitted, not one number for every network: a network's confidence depends on its classes
    and temperature (a binary call is never under 0.50; an eight-type one may be 0.13), so a fixed
    0.80 flags a different share of cells, and misses a different share of errors, for each
    version. The budget is the same for all; each source must keep to it because a lab's
    photographs may look like any one of them.
    """
    correct, sources = np.asarray(correct, bool), np.asarray(sources)
    present = [(index, name) for index, name in enumerate(names) if (sources == index).any()]

    def shares(threshold):
        flagged = np.asarray(flag_at(threshold), bool)
        return {name: review_shares(flagged[sources == index], correct[sources == index])
                for index, name in present}

    within = [t for t in REVIEW_THRESHOLD_GRID if all(flagged <= budget for flagged, _ in shares(t).values())]
    threshold = max(within) if within else REVIEW_THRESHOLD_GRID[0]
    record = {
        "confidence_threshold": threshold,
        "budget": budget,
        "fitted_on": "validation cells",
        "within_budget": bool(within),
        "sources": {
            name: {"cells": int((sources == index).sum()), "flagged_share": flagged, "errors_caught": caught}
            for (index, name), (flagged, caught) in zip(present, shares(threshold).values(), strict=True)
        },
    }
    return threshold, record
