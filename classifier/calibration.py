"""Temperature scaling: one scalar fitted on the validation split so confidences mean what they say.

Works on logits; for the published binary network (one sigmoid unit) a logit z becomes the
two-column logits [0, z], whose softmax is exactly [1 - sigmoid(z), sigmoid(z)].
"""

import json
from pathlib import Path

import numpy as np


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logits_from_probabilities(probabilities):
    """Logits (up to a per-row constant, which softmax ignores) of (N, C) probabilities."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))


def sigmoid_to_logits(p):
    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 1e-12, 1 - 1e-12)
    z = np.log(p) - np.log1p(-p)
    return np.stack([np.zeros_like(z), z], axis=1)


def negative_log_likelihood(logits, y_true, temperature):
    probabilities = softmax(logits, temperature)
    picked = probabilities[np.arange(len(probabilities)), np.asarray(y_true, int)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(logits, y_true, low=0.05, high=20.0):
    """The temperature minimising validation NLL (golden-section search on log T)."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) == 0:
        return 1.0
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc = negative_log_likelihood(logits, y_true, np.exp(c))
    fd = negative_log_likelihood(logits, y_true, np.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = negative_log_likelihood(logits, y_true, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = negative_log_likelihood(logits, y_true, np.exp(d))
    return float(np.exp((a + b) / 2))


# A held-out run's settings that a refit borrowing its temperature repeats, so that the temperature
# is fitted on the inputs and augmentation the refit trains with (the input spec, a metadata field
# of its own, is repeated too).
REFIT_COPIED_SETTINGS = (
    "mixup", "zoom", "colour_jitter", "label_smoothing", "weight_decay", "window_scale",
    "batch_size", "learning_rate", "width",
)


def refit_recipe(hyperparameters, input_spec):
    """The TrainingConfig settings a refit repeats, from a held-out run's stored settings."""
    hyperparameters = hyperparameters or {}
    recipe = {
        key: hyperparameters[key]
        for key in REFIT_COPIED_SETTINGS
        if hyperparameters.get(key) is not None
    }
    if input_spec:
        recipe["input_spec"] = dict(input_spec)
    return recipe


def temperature_of_run(path):
    """(temperature, where it came from, recipe to repeat) of a held-out run, for its refit.

    ``path`` is the run's model folder or its metadata.json. Raises ValueError with a message for
    the operator when there is no such file or no temperature in it.
    """
    path = Path(path)
    metadata_file = path / "metadata.json" if path.is_dir() else path
    try:
        metadata = json.loads(metadata_file.read_text())
        temperature = float(metadata["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"no calibration temperature in {path}: {error}") from None
    if not temperature > 0:
        raise ValueError(f"the temperature in {path} is {temperature}, not a positive number")
    hyperparameters = metadata.get("hyperparameters") or {}
    split_seed = hyperparameters.get("validation_seed") or metadata.get("seed")
    label = kept_epoch_label(metadata.get("metrics") or {})
    recipe = refit_recipe(hyperparameters, metadata.get("input_spec"))
    return temperature, f"{path} (validation split seed {split_seed}, {label})", recipe


def kept_epoch_label(metrics):
    """Which epoch a held-out run stored, in words: "best epoch 9" or "last epoch 16"."""
    return f"{metrics.get('epoch_choice', 'best')} epoch {metrics.get('best_epoch')}"
