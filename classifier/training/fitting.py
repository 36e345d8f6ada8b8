"""Fitting a network to training batches: the optimizer and loss of the recipe, per-epoch progress
reports, cancellation between batches, and the choice of the epoch whose weights are kept.

TensorFlow and Keras are imported only when a run starts (seeded_keras), never at import.
"""

import math
import time
from dataclasses import dataclass
from typing import Any

from classifier.errors import TrainingCancelled
from classifier.training import batches

# Cancellation is asked about every this many batches (and after each epoch).
STOP_CHECK_BATCHES = 10


@dataclass(frozen=True)
class FittedNetwork:
    model: Any  # the Keras model, compiled, with the kept epoch's weights
    history: list  # one row per epoch: loss, accuracy, val_loss, val_accuracy (None if none), seconds
    best_epoch: int  # the epoch whose weights are kept: the best on validation, or the last


def seeded_keras(seed):
    """(keras, tensorflow), every random generator seeded."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    return keras, tf


def compile_model(keras, model, recipe, steps_per_epoch):
    if recipe.optimizer == "adam":
        optimizer = keras.optimizers.Adam(recipe.learning_rate)
    else:
        total = max(1, recipe.epochs * steps_per_epoch)
        warmup = min(total // 10, 2 * steps_per_epoch)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 10,
            decay_steps=max(1, total - warmup),
            alpha=0.01,
            warmup_target=recipe.learning_rate,
            warmup_steps=warmup,
        )
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
    if recipe.task == "binary":
        loss = keras.losses.BinaryCrossentropy(label_smoothing=recipe.label_smoothing)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
    # Keras's "accuracy" by name and an unbuilt optimizer make their variables inside the first
    # trace of the train step, and tf.function then traces it a second time: 2-3 s of every run,
    # most of a small one's. A metric object and a built optimizer have theirs beforehand.
    if recipe.task == "binary":
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])
    optimizer.build(model.trainable_variables)


def _finite_or_none(value):
    """A metric as a float, or None where there is none (a refit has no validation) or it
    diverged: JSON, and so the database, has no NaN."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrainingProgress:
    """What a run keeps across epochs: the history, the best epoch's weights (unless select_best is
    off: a refit keeps its last epoch), the per-epoch reports and whether it was cancelled."""

    def __init__(self, epochs, on_epoch=None, should_stop=None, select_best=True):
        self.epochs = epochs
        self.on_epoch = on_epoch
        self.should_stop = should_stop
        self.select_best = select_best
        self.history = []
        self.best = None  # (sort key, epoch)
        self.best_weights = None
        self.cancelled = False
        self.started = time.monotonic()
        self.epoch_started = self.started

    @property
    def best_epoch(self):
        return self.best[1] if self.best else len(self.history)

    def stop_requested(self):
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
        return self.cancelled

    def epoch_began(self):
        self.epoch_started = time.monotonic()

    def epoch_ended(self, epoch, logs, model):
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
        if self.select_best and (self.best is None or key > self.best[0]):
            self.best = (key, epoch + 1)
            self.best_weights = [w.copy() for w in model.get_weights()]
        if self.on_epoch is not None:
            elapsed = now - self.started
            self.on_epoch({
                **row,
                "epochs": self.epochs,
                "elapsed_seconds": round(elapsed, 1),
                "eta_seconds": round(elapsed / (epoch + 1) * (self.epochs - epoch - 1), 1),
            })


def _keras_callback(keras, progress):
    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            progress.epoch_began()

        def on_train_batch_end(self, batch, logs=None):
            if batch % STOP_CHECK_BATCHES == 0 and progress.stop_requested():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            progress.epoch_ended(epoch, logs or {}, self.model)
            if progress.stop_requested():
                self.model.stop_training = True

    return Progress()


def fit(keras, tf, arrays, recipe, on_epoch=None, should_stop=None, progress_bar=False):
    """Build the recipe's network and train it; raises TrainingCancelled when should_stop says so."""
    from classifier.architectures import build_model

    n_classes = len(arrays.class_names)
    model = build_model(
        recipe.architecture, recipe.task, recipe.input_spec, n_classes, recipe.width, pretrained=True,
        freeze_trunk=recipe.freeze_trunk, mixstyle=recipe.mixstyle,
    )
    select_best = not (recipe.refit or recipe.keep_last_epoch)
    return train_network(keras, tf, model, arrays, recipe, on_epoch, should_stop, progress_bar, select_best)


def train_network(keras, tf, model, arrays, recipe, on_epoch=None, should_stop=None, progress_bar=False,
                  select_best=True):
    """Compile ``model`` with the recipe's optimizer and loss and train it on the arrays (a new
    network, or a trained one being fine-tuned); raises TrainingCancelled when should_stop says so."""
    training = batches.training_batches(tf, arrays, recipe)
    validation = batches.validation_batches(tf, arrays, recipe)
    compile_model(keras, model, recipe, math.ceil(len(arrays.x_train) / recipe.batch_size))
    progress = TrainingProgress(recipe.epochs, on_epoch, should_stop, select_best=select_best)
    model.fit(
        training,
        validation_data=validation,
        epochs=recipe.epochs,
        # The batches shuffle or balance themselves (batches.training_batches); Keras's default
        # True is ignored for a dataset, with a warning in every training's log that it was.
        shuffle=False,
        callbacks=[_keras_callback(keras, progress)],
        verbose=1 if progress_bar else 0,
    )
    if progress.cancelled:
        done = len(progress.history)
        raise TrainingCancelled(f"training was cancelled after {done} epoch{'' if done == 1 else 's'}")
    if progress.best_weights is not None:
        model.set_weights(progress.best_weights)
    return FittedNetwork(model, progress.history, progress.best_epoch)
