"""Training a cell classifier from a folder of labelled images, with progress, cancellation,
best-epoch selection and temperature calibration on a group-held-out validation split.

Plain Python + TensorFlow/Keras (imported lazily): the management command and the Celery task
wrap ``train_classifier``; nothing here knows about Django.
"""

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from classifier import calibration, dataset
from classifier.architectures import (
    DEFAULT_EPOCHS,
    DEFAULT_INPUT_SPEC,
    DEFAULT_KEEP_LAST_EPOCH,
    DEFAULT_MIXUP,
    GRADCAM_LAYER,
)
from classifier.errors import TrainingCancelled, TrainingDataError
from classifier.labels import TASK_CLASSES
from classifier.metrics import (
    binary_from_four,
    binary_labels,
    classification_metrics,
    format_metrics,
)

# Zoom augmentation, scale factor exp(U(-zoom, zoom)): 0.80-1.25x covers the spread of the
# detector's red-cell scale estimate (0.89-1.22x, 5th-95th percentile on BCCD) that every served
# window carries, and small and large cells of one type.
DEFAULT_ZOOM = 0.22

# Training crops for "cell" networks are cut from a window this much larger than the network's
# view, so shifts and zooms show real pixels instead of padding.
TRAIN_MARGIN = 1.25


@dataclass
class TrainingConfig:
    data_dir: str
    architecture: str = "leukonet"
    task: str = "4class"
    epochs: int | None = None  # None: the architecture's default
    batch_size: int = 64
    learning_rate: float | None = None  # None: the architecture's default
    weight_decay: float = 0.005
    label_smoothing: float | None = None
    seed: int = 20261125
    extra_samples: list = field(default_factory=list)  # [(path to a context window, class)]
    max_images_per_class: int | None = None
    min_images_per_class: int = 2
    # 0 refits on every TRAIN group: the epochs and the calibration temperature then come from
    # a held-out run of the same recipe, since nothing is left to choose or fit them on.
    validation_fraction: float = 0.15
    validation_seed: int | None = None  # None: seed; fix it to compare runs on one split
    temperature: float | None = None  # required when validation_fraction is 0
    temperature_source: str = ""  # where that temperature was fitted, for the record
    augment: bool | None = None  # None: leukonet augments, paper does not (as published)
    mixup: float | None = None  # Beta(a, a) mixup of training batches; 0 = off, None: the arch's
    # Keep the last epoch's network instead of the best on validation (None: the arch's recipe).
    keep_last_epoch: bool | None = None
    # Per-channel gain jitter (+-): white-balanced inputs need little, and a large one blurs the
    # cytoplasm tint that separates eosinophils from neutrophils.
    colour_jitter: float | None = None  # None: 0.04 with white_balance in the input spec, else 0.1
    zoom: float | None = None  # zoom augmentation exp(U(-zoom, zoom)); None: DEFAULT_ZOOM
    input_spec: dict | None = None
    width: float | None = None  # LeukoNet's filter counts scaled by this; None: 1
    window_scale: str = "image"
    cache_dir: str | None = None
    evaluate_test: bool = True
    workers: int = 2


@dataclass
class TrainingResult:
    model_bytes: bytes
    model_sha256: str
    metadata: dict
    class_names: list
    input_spec: dict
    hyperparameters: dict
    seed: int
    temperature: float
    class_counts: dict
    dataset_fingerprint: str
    history: list
    metrics: dict
    training_seconds: float
    skipped_files: int = 0

    def save(self, directory, default=False):
        """Write the bundled-model folder (model.keras + metadata.json); ``default`` marks it as
        the bundled model a fresh install activates."""
        from classifier.inference import save_model_directory

        metadata = {**self.metadata, "default": True} if default else self.metadata
        return save_model_directory(directory, self.model_bytes, metadata)


def check_validation_split(validation_fraction, temperature=None):
    """Raise TrainingDataError unless the fraction is in [0, 1) and a refit (0) has a temperature."""
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise TrainingDataError(
            f"validation fraction {validation_fraction} must be at least 0 and below 1"
        )
    if float(validation_fraction) == 0.0 and not (temperature or 0) > 0:
        raise TrainingDataError(
            "training on every group leaves no held-out split to fit the calibration "
            "temperature on: give the temperature of a held-out run of the same recipe"
        )


def _resolve(config):
    if config.architecture not in DEFAULT_INPUT_SPEC:
        raise TrainingDataError(
            f"unknown architecture {config.architecture!r}; "
            f"expected one of {', '.join(DEFAULT_INPUT_SPEC)}"
        )
    if config.task not in TASK_CLASSES:
        raise TrainingDataError(
            f"unknown task {config.task!r}; expected one of {', '.join(sorted(TASK_CLASSES))}"
        )
    paper = config.architecture == "paper"
    spec = dict(config.input_spec or DEFAULT_INPUT_SPEC[config.architecture])
    check_validation_split(config.validation_fraction, config.temperature)
    return {
        "architecture": config.architecture,
        "task": config.task,
        "epochs": int(config.epochs or DEFAULT_EPOCHS[config.architecture]),
        "batch_size": int(config.batch_size),
        "learning_rate": float(config.learning_rate or (3e-4 if paper else 3e-3)),
        "weight_decay": 0.0 if paper else float(config.weight_decay),
        "label_smoothing": float(
            config.label_smoothing
            if config.label_smoothing is not None
            else (0.0 if paper else 0.1)
        ),
        "augment": bool(config.augment if config.augment is not None else not paper),
        "mixup": float(
            config.mixup if config.mixup is not None else DEFAULT_MIXUP[config.architecture]
        ),
        "keep_last_epoch": bool(
            config.keep_last_epoch
            if config.keep_last_epoch is not None
            else DEFAULT_KEEP_LAST_EPOCH[config.architecture]
        ),
        "optimizer": "adam" if paper else "adamw+cosine",
        "validation_fraction": float(config.validation_fraction),
        "validation_seed": config.validation_seed,
        "window_scale": config.window_scale,
        "max_images_per_class": config.max_images_per_class,
        "input_spec": spec,
        "colour_jitter": float(
            config.colour_jitter
            if config.colour_jitter is not None
            else (0.04 if spec.get("white_balance") else 0.1)
        ),
        "zoom": float(config.zoom if config.zoom is not None else DEFAULT_ZOOM),
        "width": float(config.width if config.width is not None else 1.0),
    }


def _subsample(images, max_per_class, seed):
    if not max_per_class:
        return images
    rng = np.random.default_rng(seed)
    kept = []
    for name in sorted({i.class_name for i in images}):
        members = [i for i in images if i.class_name == name]
        if len(members) > max_per_class:
            picks = sorted(rng.choice(len(members), size=max_per_class, replace=False))
            members = [members[k] for k in picks]
        kept.extend(members)
    return kept


def _extra_images(extra_samples, task):
    images = []
    for path, name in extra_samples:
        mapped = dataset.task_class(str(name), task)
        if mapped is None:
            raise TrainingDataError(f"reviewed cell {path} has class {name!r}, not one of {task}")
        images.append(
            dataset.LabelledImage(
                path=str(path),
                class_name=mapped,
                folder_class=str(name).upper(),
                split="EXTRA",
                group=str(path),
                is_window=True,
            )
        )
    return images


def _labels(images, class_names):
    index = {name: k for k, name in enumerate(class_names)}
    return np.array([index[i.class_name] for i in images], dtype=np.int64)


def _train_folder_images(layout, originals, task, max_per_class, seed):
    """The images of the data's TRAIN folder (or root), subsampled as the run asked."""
    split_name = "TRAIN" if layout.train_dir != layout.root else ""
    images = dataset.list_images(layout.train_dir, task, split_name, originals)
    return _subsample(images, max_per_class, seed)


def _decoded_rows(all_train, images, ok):
    """Row numbers of images in all_train's prepared arrays, those that did not decode left out."""
    row = {image.path: k for k, image in enumerate(all_train)}
    rows = np.array([row[image.path] for image in images], dtype=np.int64)
    return rows[ok[rows]]


def _augment_fn(tf, spec, margin, colour_jitter, zoom_range):
    """Per-sample rotation (any angle), zoom, shift, flips, stain (colour) jitter and occasional
    blur as plain batched tensor ops: Keras augmentation layers cost ~200 ms/batch on this CPU,
    these a few ms. Corners uncovered by a rotation are black, as in the dataset's own copies."""
    height, width = int(spec["height"]), int(spec["width"])
    blur_kernel = tf.constant(
        np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32)[:, :, None, None] / 16.0
    )
    blur_kernel = tf.tile(blur_kernel, [1, 1, 3, 1])

    def augment(images, labels):
        x = tf.cast(images, tf.float32) / 255.0
        n = tf.shape(x)[0]
        in_h = tf.cast(tf.shape(x)[1], tf.float32)
        in_w = tf.cast(tf.shape(x)[2], tf.float32)
        # Output pixel (u, v) samples the input at centre + zoom * R(angle) (u - cu, v - cv) +
        # shift; the cache holds the view at the network's resolution with a margin around it.
        angle = tf.random.uniform([n], -np.pi, np.pi)
        zoom = tf.exp(tf.random.uniform([n], -zoom_range, zoom_range))
        room = (margin - 1.0) / 2.0
        shift_x = tf.random.uniform([n], -1.0, 1.0) * room * width * 0.8
        shift_y = tf.random.uniform([n], -1.0, 1.0) * room * height * 0.8
        cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
        cu, cv = (width - 1) / 2.0, (height - 1) / 2.0
        cx, cy = (in_w - 1) / 2.0 + shift_x, (in_h - 1) / 2.0 + shift_y
        zeros = tf.zeros([n])
        transforms = tf.stack(
            [cos, -sin, cx - cos * cu + sin * cv, sin, cos, cy - sin * cu - cos * cv, zeros, zeros],
            axis=1,
        )
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=transforms,
            output_shape=tf.constant([height, width]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )

        def maybe(p):
            return tf.random.uniform([n, 1, 1, 1]) < p

        x = tf.where(maybe(0.5), tf.reverse(x, axis=[2]), x)
        # Stain jitter: per-channel gain, brightness, contrast, saturation.
        x = x * tf.random.uniform([n, 1, 1, 3], 1.0 - colour_jitter, 1.0 + colour_jitter)
        x = x + tf.random.uniform([n, 1, 1, 1], -0.08, 0.08)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * tf.random.uniform([n, 1, 1, 1], 0.8, 1.2) + mean
        grey = tf.reduce_mean(x, axis=3, keepdims=True)
        x = (x - grey) * tf.random.uniform([n, 1, 1, 1], 0.75, 1.25) + grey
        blurred = tf.nn.depthwise_conv2d(x, blur_kernel, [1, 1, 1, 1], "SAME")
        x = tf.where(maybe(0.15), blurred, x)
        return tf.clip_by_value(x, 0.0, 1.0), labels

    return augment


def _target(tf, labels, task, n_classes):
    if task == "binary":
        return tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
    return tf.one_hot(labels, n_classes)


def _mixup_fn(tf, alpha):
    """Blend each sample (and its target) with another of the batch, weight ~ Beta(a, a)."""

    def mix(images, targets):
        n = tf.shape(images)[0]
        a = tf.random.gamma([n], alpha)
        b = tf.random.gamma([n], alpha)
        lam = tf.maximum(a / (a + b), b / (a + b))  # the sample keeps the larger share
        order = tf.random.shuffle(tf.range(n))
        lam_x = tf.reshape(lam, [-1, 1, 1, 1])
        lam_y = tf.reshape(lam, [-1, 1])
        images = lam_x * images + (1.0 - lam_x) * tf.gather(images, order)
        targets = lam_y * targets + (1.0 - lam_y) * tf.gather(targets, order)
        return images, targets

    return mix


def _scale_only(tf):
    def scale(images, labels):
        return tf.cast(images, tf.float32) / 255.0, labels

    return scale


def _predict_probabilities(model, inputs_uint8, task, batch_size=256):
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


def _finite_or_none(value):
    """A metric as a float, or None where there is none (a refit has no validation) or it
    diverged: JSON, and so the database, has no NaN."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _Progress:
    """Keras callback: best-epoch weights (unless select_best is off: a refit keeps its last
    epoch), per-epoch reports, cancellation between batches."""

    def __new__(cls, keras, epochs, on_epoch, should_stop, select_best=True):
        class Progress(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.history = []
                self.best = None
                self.best_weights = None
                self.cancelled = False
                self.started = time.monotonic()
                self.epoch_started = self.started

            def _check_stop(self):
                if should_stop is not None and should_stop():
                    self.cancelled = True
                    self.model.stop_training = True

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_started = time.monotonic()

            def on_train_batch_end(self, batch, logs=None):
                if batch % 10 == 0:
                    self._check_stop()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                now = time.monotonic()
                row = {
                    "epoch": epoch + 1,
                    "loss": _finite_or_none(logs.get("loss")),
                    "accuracy": _finite_or_none(logs.get("accuracy")),
                    "val_loss": _finite_or_none(logs.get("val_loss")),
                    "val_accuracy": _finite_or_none(logs.get("val_accuracy")),
                    "seconds": round(now - self.epoch_started, 2),
                }
                self.history.append(row)
                worst = -math.inf
                key = (
                    worst if row["val_accuracy"] is None else row["val_accuracy"],
                    worst if row["val_loss"] is None else -row["val_loss"],
                )
                if select_best and (self.best is None or key > self.best[0]):
                    self.best = (key, epoch + 1)
                    self.best_weights = [w.copy() for w in self.model.get_weights()]
                elapsed = now - self.started
                if on_epoch is not None:
                    on_epoch(
                        {
                            **row,
                            "epochs": epochs,
                            "elapsed_seconds": round(elapsed, 1),
                            "eta_seconds": round(elapsed / (epoch + 1) * (epochs - epoch - 1), 1),
                        }
                    )
                self._check_stop()

        return Progress()


def _compile(keras, model, hp, steps_per_epoch, task):
    if hp["optimizer"] == "adam":
        optimizer = keras.optimizers.Adam(hp["learning_rate"])
    else:
        total = max(1, hp["epochs"] * steps_per_epoch)
        warmup = min(total // 10, 2 * steps_per_epoch)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=hp["learning_rate"] / 10,
            decay_steps=max(1, total - warmup),
            alpha=0.01,
            warmup_target=hp["learning_rate"],
            warmup_steps=warmup,
        )
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=hp["weight_decay"])
    if task == "binary":
        loss = keras.losses.BinaryCrossentropy(label_smoothing=hp["label_smoothing"])
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=hp["label_smoothing"])
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def model_to_bytes(model):
    """The .keras file of a model (weights and architecture, no optimizer state)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def train_classifier(
    config: TrainingConfig,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_bar: bool = False,
) -> TrainingResult:
    started = time.monotonic()
    hp = _resolve(config)
    task, spec = hp["task"], hp["input_spec"]
    class_names = list(TASK_CLASSES[task])
    seed = int(config.seed)

    layout = dataset.resolve_layout(config.data_dir)
    originals = dataset.read_originals(layout.root)
    all_train = _train_folder_images(layout, originals, task, config.max_images_per_class, seed)
    dataset.check_class_counts(
        all_train, task, config.min_images_per_class, f"training data folder {layout.train_dir}"
    )
    refit = hp["validation_fraction"] == 0.0
    split_seed = seed if config.validation_seed is None else int(config.validation_seed)
    if refit:
        train_images, val_images = all_train, []
    else:
        train_images, val_images = dataset.split_validation(
            all_train, config.validation_fraction, split_seed
        )
    extras = _extra_images(config.extra_samples, task)
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training was cancelled before it started")

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)

    margin = TRAIN_MARGIN if (hp["augment"] and spec.get("mode") == "cell") else 1.0
    load = dict(window_scale=hp["window_scale"], cache_dir=config.cache_dir, workers=config.workers)
    # Whole-folder loads are cached once for any seed; the split picks rows out of them. A refit
    # validates on nothing, so it needs only the training view.
    margins = [margin] if refit else sorted({margin, 1.0})
    loaded = dataset.load_prepared_margins(all_train, spec, margins, **load)
    all_inputs_m, all_ok_m, _ = loaded[margin]
    all_inputs_1, all_ok_1, _ = loaded.get(1.0, loaded[margin])
    skipped = int((~all_ok_m).sum())
    train_rows = _decoded_rows(all_train, train_images, all_ok_m)
    val_rows = _decoded_rows(all_train, val_images, all_ok_1)
    x_train = all_inputs_m[train_rows]
    y_train = _labels([all_train[k] for k in train_rows], class_names)
    if extras:
        extra_inputs, extra_ok, _ = dataset.load_prepared(extras, spec, margin, **load)
        skipped += int((~extra_ok).sum())
        x_train = np.concatenate([x_train, extra_inputs[extra_ok]])
        y_train = np.concatenate(
            [
                y_train,
                _labels([e for e, ok in zip(extras, extra_ok, strict=True) if ok], class_names),
            ]
        )
    x_val = all_inputs_1[val_rows]
    y_val = _labels([all_train[k] for k in val_rows], class_names)
    counts = Counter(class_names[k] for k in y_train)
    class_counts = {name: int(counts.get(name, 0)) for name in class_names}
    too_few = [f"{n}: {c}" for n, c in class_counts.items() if c < 1]
    if too_few:
        raise TrainingDataError(
            "after setting aside the validation split and skipping unreadable files, some "
            "classes have no training images left: " + ", ".join(too_few)
        )
    if len(x_val) == 0 and not refit:  # tiny data: validate on training images, not on nothing
        x_val, y_val = all_inputs_1[train_rows], y_train[: len(train_rows)]

    batch_size = hp["batch_size"]
    n_classes = len(class_names)
    train_ds = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train_ds = train_ds.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
    train_ds = train_ds.batch(batch_size)
    if hp["augment"]:
        augment = _augment_fn(tf, spec, margin, hp["colour_jitter"], hp["zoom"])
        train_ds = train_ds.map(augment, num_parallel_calls=2)
    else:
        train_ds = train_ds.map(_scale_only(tf))
    target = lambda x, y: (x, _target(tf, y, task, n_classes))  # noqa: E731
    train_ds = train_ds.map(target)
    if hp["mixup"] > 0:
        train_ds = train_ds.map(_mixup_fn(tf, hp["mixup"]))
    train_ds = train_ds.prefetch(2)
    val_ds = None
    if not refit:
        val_ds = (
            tf.data.Dataset.from_tensor_slices((x_val, y_val))
            .batch(256)
            .map(_scale_only(tf))
            .map(target)
            .prefetch(1)
        )

    from classifier.architectures import build_model

    model = build_model(hp["architecture"], task, spec, n_classes, hp["width"])
    steps = math.ceil(len(x_train) / batch_size)
    _compile(keras, model, hp, steps, task)
    progress = _Progress(
        keras,
        hp["epochs"],
        on_epoch,
        should_stop,
        select_best=not (refit or hp["keep_last_epoch"]),
    )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=hp["epochs"],
        callbacks=[progress],
        verbose=1 if progress_bar else 0,
    )
    if progress.cancelled:
        raise TrainingCancelled(f"training was cancelled after {len(progress.history)} epoch(s)")
    best_epoch = progress.best[1] if progress.best else len(progress.history)
    if progress.best_weights is not None:
        model.set_weights(progress.best_weights)

    if refit:
        temperature = float(config.temperature)
        metrics = {
            "temperature": temperature,
            "refit": {"epochs": len(progress.history), "temperature_source": config.temperature_source},
        }
    else:
        # Temperature from the validation split, then held-out metrics with it.
        val_raw = _predict_probabilities(model, x_val, task)
        val_logits = raw_logits(val_raw, task)
        temperature = calibration.fit_temperature(val_logits, y_val)
        metrics = {
            # The epoch whose network is stored: the best on validation, or the last.
            "best_epoch": best_epoch,
            "epoch_choice": "last" if hp["keep_last_epoch"] else "best",
            "temperature": temperature,
            "validation": evaluation_metrics(
                calibration.softmax(val_logits, temperature), y_val, class_names
            ),
            "validation_uncalibrated_ece": classification_metrics(y_val, val_raw, class_names)[
                "ece"
            ],
            "validation_groups": len({all_train[k].group or all_train[k].path for k in val_rows}),
        }
    if config.evaluate_test:
        for split, folder in layout.eval_dirs.items():
            images = dataset.list_images(folder, task, split, originals)
            if not images:
                continue
            inputs, ok, _ = dataset.load_prepared(images, spec, 1.0, **load)
            images = [i for i, good in zip(images, ok, strict=True) if good]
            y = _labels(images, class_names)
            raw = _predict_probabilities(model, inputs[ok], task)
            probabilities = calibration.softmax(raw_logits(raw, task), temperature)
            same = np.array([i.same_cell_in_train for i in images])
            metrics[split] = evaluation_metrics(probabilities, y, class_names, same)
            metrics[split]["uncalibrated_ece"] = classification_metrics(y, raw, class_names)["ece"]

    # Save a fresh, uncompiled copy: no optimizer state in the bundled file.
    from classifier.architectures import build_model as rebuild

    export = rebuild(hp["architecture"], task, spec, n_classes, hp["width"])
    export.set_weights(model.get_weights())
    model_bytes = model_to_bytes(export)
    sha = hashlib.sha256(model_bytes).hexdigest()
    training_seconds = round(time.monotonic() - started, 1)
    fingerprint = dataset.fingerprint(all_train + extras)
    hyperparameters = {k: v for k, v in hp.items() if k not in ("architecture", "task")}
    hyperparameters.pop("input_spec")
    hyperparameters["best_epoch"] = best_epoch
    hyperparameters["train_margin"] = margin
    metadata = {
        "format": 1,
        "architecture": hp["architecture"],
        "task": task,
        "class_names": class_names,
        "input_spec": spec,
        "temperature": temperature,
        "gradcam_layer": GRADCAM_LAYER,
        "hyperparameters": hyperparameters,
        "seed": seed,
        "class_counts": class_counts,
        "validation_count": int(len(y_val)),
        "dataset_path": str(config.data_dir),
        "dataset_fingerprint": fingerprint,
        "extra_samples": len(extras),
        "history": progress.history,
        "metrics": metrics,
        "training_seconds": training_seconds,
        "skipped_files": skipped,
        "model_sha256": sha,
        "size_bytes": len(model_bytes),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    # Fail here, not in the database, if something is not serialisable or not valid JSON (NaN).
    json.dumps(metadata, allow_nan=False)
    return TrainingResult(
        model_bytes=model_bytes,
        model_sha256=sha,
        metadata=metadata,
        class_names=class_names,
        input_spec=spec,
        hyperparameters=hyperparameters,
        seed=seed,
        temperature=temperature,
        class_counts=class_counts,
        dataset_fingerprint=fingerprint,
        history=progress.history,
        metrics=metrics,
        training_seconds=training_seconds,
        skipped_files=skipped,
    )


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
    inputs, ok, _ = dataset.load_prepared(
        images, classifier.input_spec, 1.0, window_scale=scale, cache_dir=cache_dir
    )
    images = [i for i, good in zip(images, ok, strict=True) if good]
    y = _labels(images, list(classifier.class_names))
    probabilities = classifier.predict_inputs(inputs[ok].astype(np.float32) / 255.0)
    same = np.array([i.same_cell_in_train for i in images])
    result = evaluation_metrics(probabilities, y, list(classifier.class_names), same)
    result["skipped_files"] = int((~ok).sum())
    return result


class ValidationPredictions(NamedTuple):
    logits: np.ndarray  # uncalibrated, (N, C)
    labels: np.ndarray  # (N,) indices into class_names
    split_seed: int
    images: list  # the N validation images (dataset.LabelledImage)
    class_names: list


def validation_predictions(run_dir, data_dir, cache_dir=None):
    """A held-out run's uncalibrated predictions on its own validation split.

    The split is rebuilt from the run's metadata (validation seed and fraction) on data_dir,
    which must be the data it was trained on. Raises ValueError with a message for the operator.
    """
    from classifier.inference import CellClassifier

    try:
        # Float32, as the run fitted its own temperature: a pooled temperature must agree with it.
        classifier = CellClassifier.from_directory(run_dir, runtime="litert")
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{run_dir} is not a model folder: {error}") from None
    metadata = classifier.metadata
    hyperparameters = metadata.get("hyperparameters") or {}
    fraction = float(hyperparameters.get("validation_fraction") or 0.0)
    if fraction <= 0.0 or not metadata.get("validation_count"):
        raise ValueError(f"{run_dir} was trained without a validation split: it has nothing to lend")
    split_seed = hyperparameters.get("validation_seed")
    split_seed = int(metadata["seed"] if split_seed is None else split_seed)
    class_names = list(classifier.class_names)
    layout = dataset.resolve_layout(data_dir)
    all_train = _train_folder_images(
        layout,
        dataset.read_originals(layout.root),
        metadata["task"],
        hyperparameters.get("max_images_per_class"),
        int(metadata["seed"]),
    )
    _, validation = dataset.split_validation(all_train, fraction, split_seed)
    inputs, ok, _ = dataset.load_prepared(
        all_train,
        classifier.input_spec,
        1.0,
        window_scale=hyperparameters.get("window_scale", "image"),
        cache_dir=cache_dir,
    )
    rows = _decoded_rows(all_train, validation, ok)
    y = _labels([all_train[k] for k in rows], class_names)
    per_class = (metadata.get("metrics") or {}).get("validation", {}).get("per_class", {})
    recorded = [int(per_class.get(name, {}).get("support", -1)) for name in class_names]
    rebuilt = np.bincount(y, minlength=len(class_names)).tolist()
    if rebuilt != recorded:
        raise ValueError(
            f"{data_dir} gives {run_dir}'s validation split (seed {split_seed}) {rebuilt} "
            f"images per class where the run had {recorded}: not the data it was trained on"
        )
    logits = classifier.logits(inputs[rows].astype(np.float32) / np.float32(255.0))
    return ValidationPredictions(logits, y, split_seed, [all_train[k] for k in rows], class_names)


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


__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "train_classifier",
    "evaluate_classifier",
    "check_validation_split",
    "validation_predictions",
    "pooled_temperature",
    "format_metrics",
    "asdict",
]
