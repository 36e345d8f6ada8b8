"""Training a cell classifier from a folder of labelled images, with progress, cancellation,
best-epoch selection and temperature calibration on a group-held-out validation split.

Plain Python + TensorFlow/Keras (imported lazily, when a run starts): the management command, the
Celery task, classifier.train_cli and the benchmarks wrap ``train_classifier``; nothing here knows
about Django.

- ``recipe``: every setting of a run, its default per architecture and where it is offered.
- ``command_line``: the recipe as command-line options.
- ``data``: which images a run learns from, as arrays; ``augmentation`` and ``batches``: the
  batches it fits on.
- ``fitting``: optimizer, loss, progress, cancellation, the kept epoch.
- ``evaluation``: calibration and held-out figures; ``held_out``: a refit's borrowed calibration.
- ``trust``: the served and per-source temperatures and the out-of-distribution score's fit.
- ``export``: the network's bytes and metadata; ``run``: ``train_classifier``, the whole run.
- ``adaptation``: ``adapt_classifier``, a short fine-tune of a trained network on one lab's cells.
"""

from classifier.training.evaluation import evaluate_classifier
from classifier.training.export import TrainingResult, model_to_bytes
from classifier.training.held_out import (
    kept_epoch_label,
    pooled_temperature,
    temperature_of_run,
    validation_predictions,
)
from classifier.training.recipe import Recipe, RecipeError
from classifier.training.run import TrainingConfig, train_classifier

__all__ = [
    "Recipe",
    "RecipeError",
    "TrainingConfig",
    "TrainingResult",
    "evaluate_classifier",
    "kept_epoch_label",
    "model_to_bytes",
    "pooled_temperature",
    "temperature_of_run",
    "train_classifier",
    "validation_predictions",
]
