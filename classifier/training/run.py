"""One training run, end to end: resolve the recipe, choose and load the images, fit the network,
calibrate it, fit its out-of-distribution score, export it, fit its review threshold and measure it
on the held-out splits as the site would serve it, and return it with its metadata."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from classifier import ood
from classifier.errors import TrainingCancelled
from classifier.runtimes import DEFAULT_RUNTIME
from classifier.training import data, evaluation, export, fitting, trust
from classifier.training.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(Recipe):
    """A training run: its recipe (every Recipe field; None takes the recipe's default), the data it
    learns from, and how the machine runs it, none of which changes the network it trains."""

    data_dir: str | list  # one data folder, several separated by os.pathsep, or a list of them
    extra_samples: list = field(default_factory=list)  # [(path to a context window, class)]
    min_images_per_class: int = 2
    cache_dir: str | None = None  # prepared-input cache; None: classifier.dataset's default
    evaluate_test: bool = True
    workers: int = 2  # threads decoding and preparing images
    # What computes the TEST figures: the site's runtime (classifier.runtimes), so that a version's
    # stored figures are its calls as served.
    runtime: str = DEFAULT_RUNTIME


# What a run does after its last epoch, as its progress names it.
FINISHING_STAGE = "calibrating, fitting the review flag and measuring each source's TEST"


def train_classifier(
    config: TrainingConfig,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_bar: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> export.TrainingResult:
    """Train the network config describes. on_epoch gets a report after each epoch; should_stop is
    asked between batches and raises TrainingCancelled when it answers True. on_stage is told
    FINISHING_STAGE after the last epoch: a minute or more of work is left then, which no epoch
    report covers. Bad settings or data raise TrainingDataError (a RecipeError for settings)
    before anything is trained."""
    started = time.monotonic()
    recipe = config.resolved()
    selection = data.select_images(config, recipe)
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training was cancelled before it started")
    keras, tf = fitting.seeded_keras(recipe.seed)
    arrays = data.load_arrays(selection, recipe, config)
    fitted = fitting.fit(keras, tf, arrays, recipe, on_epoch, should_stop, progress_bar)
    if on_stage is not None:
        on_stage(FINISHING_STAGE)
    temperature, metrics = evaluation.calibrate(fitted, arrays, recipe)
    ood_head, metrics["ood"] = trust.fit_ood(fitted, arrays, recipe)
    model_bytes = export.exported_bytes(fitted.model, recipe, ood_head)
    served = export.served_classifier(model_bytes, recipe, temperature, config.runtime)
    review = evaluation.review_record(served, selection, recipe, config)
    if review is not None:
        metrics["review"] = review
    tests = {"sources": {}}
    if config.evaluate_test:
        tests = evaluation.test_split_metrics(served, selection, recipe, config,
                                              ood.confidence_threshold(metrics))
    metrics = export.with_source_records(metrics, tests, selection, recipe)
    return export.training_result(
        config, recipe, selection, arrays, fitted, temperature, metrics, started, model_bytes
    )
