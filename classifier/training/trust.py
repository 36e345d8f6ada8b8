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

from classifier import calibration, ood
from classifier.metrics import expected_calibration_error

# The batch the penultimate features are computed in: ~7 MB of LeukoNet input.
FEATURE_BATCH = 256


def validation_sources(arrays):
    """(source names, each validation row's source index). A run on one data folder has one."""
    names = getattr(arrays, "source_names", None)
    rows = getattr(arrays, "val_sources", None)
    if names is None or rows is None:  # arrays made before runs took several data folders
        return ["data"], np.zeros(len(arrays.y_val), np.int64)
    return list(names), np.asarray(rows, np.int64)


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
        train_sources = getattr(arrays, "train_sources", None)
        reference = (train_features, train_sources, None)
        quantile, fitted_on = ood.REFIT_QUANTILE, "training cells"
    else:
        _, sources = validation_sources(arrays)
        val_features = penultimate_features(fitted.model, arrays.x_val, shape)
        reference = (val_features, sources, getattr(arrays, "val_groups", None))
        quantile, fitted_on = ood.HELD_OUT_QUANTILE, "validation cells"
    head, record = ood.fit_ood_head(train_features, arrays.y_train, n_classes, reference, quantile)
    return head, {**record, "threshold_fitted_on": fitted_on}
