"""Adapting a trained network to one lab: a short fine-tune on the lab's reviewed cells, with a
replay sample of the network's own training sources so that it does not forget them.

``adapt_classifier`` takes a version's network (its .keras bytes and metadata, as
classifier.model_folder reads them or a model version stores them), the lab's reviewed cells
[(context window path, reviewer's type, and optionally its photograph)] and the version's data
folders, and returns a TrainingResult like a training run's:

- the fine-tune starts from the version's weights, with its recipe's augmentation and a third of
  its learning rate, for 20 short epochs; each batch draws the lab's cells and each replayed source
  equally (classes balanced within each), and the last epoch is kept;
- cross-validated by photograph: the lab's cells are split into k folds, each photograph's cells
  in one (cells given without a photograph each count as their own), stratified by type as far as
  whole photographs allow; each fold is called by a fine-tune that never saw it nor any other cell
  of its photographs, so the figure on the lab's cells is never that of a network trained on them
  or on their neighbours. The temperature is the version's, kept: reviewed cells are mostly those
  the network was unsure of, no sample of the lab's cells, and one fitted on their out-of-fold
  calls made every call less sure (a lab's audit: 51 reviewed cells, 47 of them flagged, gave
  0.961 against the version's 0.761, and the adapted network flagged 37% of PBC TEST against 15%);
- the out-of-distribution score is fitted again on the adapted network's features of the cells it
  was tuned on (a refit's rule: no cell is left unseen) and baked in as its second output; the
  review flag's confidence threshold is the version's, kept;
- each replayed source's TEST is measured as a training run measures it.

Progress: each report carries ``epoch`` of ``epochs`` over every fine-tune (the bar), ``stage`` in
words, and ``phase`` (PHASE_CROSS_VALIDATION, PHASE_FINAL or, once the last epoch is done,
PHASE_EVALUATING), ``fold`` of ``folds`` (None in the final fine-tune and after it) and
``phase_epoch`` of ``phase_epochs``, the epoch within the current fine-tune.

Types the network has no class for (a basophil for a four-type network, artefacts) are left out and
counted. Plain Python + Keras (imported when a run starts); nothing here knows about Django.
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifier import calibration, dataset, ood
from classifier.errors import TrainingCancelled, TrainingDataError
from classifier.metrics import classification_metrics
from classifier.runtimes import DEFAULT_RUNTIME
from classifier.training import data, evaluation, export, fitting, trust
from classifier.training.augmentation import training_margin
from classifier.training.recipe import Recipe, RecipeError, refit_settings

# Fewer reviewed cells of the network's types than this: nothing to adapt on.
MIN_CELLS = 5
# An epoch is one pass over the lab's cells and the replay (a few hundred cells, a handful of
# steps). bench-adapt, a PBC-only network adapted on 100 BCCD cells, when its draw still took
# augmented copies (74 different cells): 6 epochs at a tenth of the recipe's rate gave 75.6% on
# BCCD TEST; 12 at a third 81.5%; 20 at a third 83.7%; 30 at a third 82.4%; 12 at the full rate
# 83.1%. On 100 different cells, 20 at a third gave 80.7-81.6% over three seeds, and none of these
# moved it past 82.6%: 30 or 40 epochs, the full rate, no colour or stain jitter, the lab's cells
# drawn twice as often as the replay, no mixup or label smoothing. PBC TEST moved by under a point
# in each.
DEFAULT_EPOCHS = 20
DEFAULT_FOLDS = 5
# Cells per class drawn from each of the version's TRAIN folders, replayed beside the lab's.
REPLAY_PER_CLASS = 50
# The fine-tune's learning rate, as a share of the recipe's.
LEARNING_RATE_SHARE = 1 / 3
LAB_SOURCE = "this lab's reviewed cells"
# The phases a progress report names.
PHASE_CROSS_VALIDATION = "cross-validation"
PHASE_FINAL = "final fine-tune"
PHASE_EVALUATING = "evaluating on each source's TEST"
PHASE_FINISHING = "fitting the out-of-distribution score"  # where no TEST is measured


@dataclass(frozen=True, kw_only=True)
class AdaptationConfig:
    """One adaptation: the network it starts from, the lab's cells and the replayed data."""

    model_bytes: bytes
    metadata: dict  # architecture, task, class_names, input_spec, temperature, hyperparameters, seed
    reviewed: list  # [(path to a context window, the reviewer's type[, its photograph])]
    data_dir: str | list | None = None  # the version's data folders, replayed; None: no replay
    replay_per_class: int = REPLAY_PER_CLASS
    epochs: int = DEFAULT_EPOCHS
    folds: int = DEFAULT_FOLDS  # under 2: no cross-validation
    learning_rate: float | None = None  # None: LEARNING_RATE_SHARE of the recipe's
    batch_size: int | None = None  # None: the recipe's
    seed: int | None = None  # None: the version's
    min_cells: int = MIN_CELLS
    cache_dir: str | None = None
    workers: int = 2
    evaluate_test: bool = True
    runtime: str = DEFAULT_RUNTIME  # what computes the TEST figures: the site's (TrainingConfig's)
    missing_folders: list = field(default_factory=list)  # the version's folders not found, for the record
    # SHA-256 of the photographs the lab's cells came from: a source's TEST file among them is left
    # out of the adapted network's TEST figures, which would otherwise score it on what it was tuned on.
    lab_photograph_checksums: frozenset = frozenset()


@dataclass(frozen=True)
class LabCells:
    """The reviewed cells the network has a class for, and those it has none for, by type."""

    images: list  # dataset.LabelledImage, is_window
    left_out: dict  # {reviewer's type: cells}

    @property
    def photographs(self):
        """How many photographs the cells come from: the most folds they can be split into."""
        return len({image.cell_key for image in self.images})


def lab_cells(reviewed, task):
    """(the reviewed cells of the task's types as labelled images, the others counted by type)."""
    images, left_out = [], Counter()
    for path, name, *photograph in reviewed:
        if dataset.task_class(str(name), task) is None:
            left_out[str(name)] += 1
        else:
            images.extend(data.extra_images([(path, name, *photograph)], task))
    return LabCells(images, dict(sorted(left_out.items())))


def usable_types(reviewed_types, task):
    """The types among these reviewed ones that an adaptation of a network of the task learns.
    Each type is asked once: a busy lab's year holds hundreds of thousands of reviewed cells."""
    return {name for name in set(map(str, reviewed_types)) if dataset.task_class(name, task) is not None}


def cross_validation_folds(folds, photographs):
    """The folds an adaptation cross-validates on: never more than there are photographs (a
    photograph's cells stay in one fold), and none where that leaves fewer than 2."""
    count = min(folds, photographs)
    return count if count >= 2 else 0


def check_enough(cells, min_cells=MIN_CELLS, version="the version"):
    """Raise TrainingDataError, with the reason, unless there are enough cells to adapt on."""
    count = len(cells.images)
    if count >= min_cells:
        return
    others = sum(cells.left_out.values())
    other_words = (
        f" ({others} more of types {version} has no class for: "
        + ", ".join(f"{name.lower()} {n}" for name, n in cells.left_out.items()) + ")"
        if others else ""
    )
    if count == 0:
        raise TrainingDataError(
            f"No reviewed cell of a type {version} knows{other_words}: review cells of its types "
            "first, then adapt."
        )
    raise TrainingDataError(
        f"Adapting needs at least {min_cells} reviewed cells of the types {version} knows; there "
        f"{'is' if count == 1 else 'are'} {count}{other_words}."
    )


def adaptation_recipe(metadata, config):
    """The version's recipe (inputs and augmentation as it trained), fine-tune length and rate."""
    hyperparameters = metadata.get("hyperparameters") or {}
    repeated = refit_settings(hyperparameters, metadata.get("input_spec"))
    base = Recipe(architecture=metadata["architecture"], task=metadata["task"], **repeated).resolved()
    seed = config.seed if config.seed is not None else metadata.get("seed")
    try:
        recipe = Recipe(
            **{**{s: getattr(base, s) for s in base.__dataclass_fields__},
               "epochs": config.epochs,
               "learning_rate": config.learning_rate or base.learning_rate * LEARNING_RATE_SHARE,
               "batch_size": config.batch_size or base.batch_size,
               "sampling": "balanced",
               "source_weights": {},
               "keep_last_epoch": True,
               "validation_fraction": 0.0,
               "temperature": float(metadata.get("temperature") or 1.0),
               "temperature_source": "the version adapted",
               "seed": base.seed if seed is None else int(seed)},
        ).resolved()
    except RecipeError as error:
        raise TrainingDataError(f"the version's recipe cannot be fine-tuned: {error}") from None
    if list(recipe.class_names) != list(metadata["class_names"]):
        raise TrainingDataError(
            f"the version's classes ({', '.join(metadata['class_names'])}) are not those of its "
            f"task {recipe.task}: it cannot be adapted"
        )
    return recipe


def replay_sources(folders, recipe, per_class):
    """(each existing folder's Source with at most per_class TRAIN images a class, the folders not
    found)."""
    present = [folder for folder in folders if Path(folder).expanduser().is_dir()]
    missing = [folder for folder in folders if folder not in present]
    if not present or per_class < 1:
        return [], missing
    sources = data.select_sources(present, recipe.task, per_class, recipe.seed, 0.0, recipe.seed)
    return sources, missing


@dataclass(frozen=True)
class _Prepared:
    """Every cell a fine-tune may draw on, prepared once: replay rows, then the lab's cells."""

    x: np.ndarray  # uint8 inputs with the augmentation margin
    y: np.ndarray
    source: np.ndarray  # index into source_names; the lab is the last
    source_names: list
    lab_rows: np.ndarray  # row numbers of the lab's cells in x
    lab_images: list  # the lab's cells that decoded, in lab_rows' order
    margin: float
    skipped: int
    skipped_named: list  # the first of them, with why (dataset.SkippedFiles)


def prepare(sources, cells, recipe, config):
    margin = training_margin(recipe)
    load = dict(window_scale=recipe.window_scale, cache_dir=config.cache_dir, workers=config.workers)
    xs, ys, where, skipped = [], [], [], dataset.SkippedFiles()
    for index, source in enumerate(sources):
        inputs, ok, _ = dataset.load_prepared(source.all_train, recipe.input_spec, margin, **load)
        skipped.add(source.all_train, ok)
        kept = [image for image, good in zip(source.all_train, ok, strict=True) if good]
        xs.append(inputs[ok])
        ys.append(data.labels(kept, recipe.class_names))
        where.append(np.full(len(kept), index, np.int64))
    # The lab's reviewed cells: a list of its own each run, not worth a file in the cache.
    inputs, ok, _ = dataset.load_prepared(cells.images, recipe.input_spec, margin, **load, keep=False)
    skipped.add(cells.images, ok)
    lab_images = [image for image, good in zip(cells.images, ok, strict=True) if good]
    start = sum(len(x) for x in xs)
    xs.append(inputs[ok])
    ys.append(data.labels(lab_images, recipe.class_names))
    where.append(np.full(len(lab_images), len(sources), np.int64))
    return _Prepared(
        x=np.concatenate(xs), y=np.concatenate(ys), source=np.concatenate(where),
        source_names=[source.name for source in sources] + [LAB_SOURCE],
        lab_rows=np.arange(start, start + len(lab_images)), lab_images=lab_images, margin=margin,
        skipped=skipped.count, skipped_named=skipped.named,
    )


def _arrays(prepared, rows, class_names):
    """The TrainingArrays of a fine-tune on these rows (no validation split)."""
    shape = prepared.x.shape[1:]
    counts = Counter(class_names[k] for k in prepared.y[rows])
    return data.TrainingArrays(
        class_names=list(class_names),
        x_train=prepared.x[rows],
        y_train=prepared.y[rows],
        x_val=np.zeros((0, *shape), np.uint8),
        y_val=np.zeros(0, np.int64),
        class_counts={name: int(counts.get(name, 0)) for name in class_names},
        skipped=prepared.skipped,
        skipped_named=prepared.skipped_named,
        margin=prepared.margin,
        validation_groups=0,
        source_names=prepared.source_names,
        train_sources=prepared.source[rows],
        val_sources=np.zeros(0, np.int64),
    )


def stratified_folds(labels, folds, seed, groups=None):
    """A fold number per cell: every cell of a group (a photograph) in one fold, and each fold
    holding as near its share of each type's cells as whole groups allow. Without groups each cell
    is its own.

    Groups are placed largest first (in a seeded order among equals), each in the fold where the
    types' shares come out most even, the fold with fewest cells among equally good ones; no fold
    is left empty while there are groups to fill it.
    """
    labels = np.asarray(labels)
    keys = list(range(len(labels))) if groups is None else list(groups)
    if len(keys) != len(labels):
        raise ValueError("one group per cell")
    index = {key: k for k, key in enumerate(dict.fromkeys(keys))}
    of_cell = np.array([index[key] for key in keys], np.int64)
    classes, label_index = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(index), len(classes)), np.int64)
    np.add.at(counts, (of_cell, label_index), 1)
    totals = np.maximum(counts.sum(0), 1)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(index))
    order = shuffled[np.argsort(-counts[shuffled].sum(1), kind="stable")]
    per_fold = np.zeros((folds, len(classes)), np.int64)
    fold_of = np.zeros(len(index), np.int64)
    for placed, group in enumerate(order):
        empty = np.flatnonzero(per_fold.sum(1) == 0)
        left = len(order) - placed
        candidates = empty if len(empty) >= left else range(folds)
        best = None
        for fold in candidates:
            per_fold[fold] += counts[group]
            spread = float(np.std(per_fold / totals, axis=0).mean())
            per_fold[fold] -= counts[group]
            key = (round(spread, 12), int(per_fold[fold].sum()), fold)
            if best is None or key < best:
                best = key
        fold_of[group] = best[2]
        per_fold[best[2]] += counts[group]
    return fold_of[of_cell]


class _Progress:
    """One progress report over every fine-tune of an adaptation (the folds, then the final), and
    the phase after them."""

    def __init__(self, runs, epochs, on_epoch, folds=0):
        self.total = runs * epochs
        self.epochs = epochs
        self.folds = folds
        self.on_epoch = on_epoch
        self.done = 0
        self.started = time.monotonic()
        self.stage = ""

    def _where(self, stage, phase, fold):
        return {"stage": stage, "phase": phase, "fold": fold, "folds": self.folds,
                "phase_epochs": self.epochs}

    def run(self, stage, phase, fold=None):
        """The on_epoch of one fine-tune: ``fold`` (from 1) of the cross-validation, or None."""
        self.stage = stage
        offset = self.done
        self.done += self.epochs
        where = self._where(stage, phase, fold)

        def report(row):
            if self.on_epoch is None:
                return
            within = int(row["epoch"])
            epoch = offset + within
            elapsed = time.monotonic() - self.started
            self.on_epoch({
                **row, **where, "epoch": epoch, "epochs": self.total, "phase_epoch": within,
                "elapsed_seconds": round(elapsed, 1),
                "eta_seconds": round(elapsed / epoch * (self.total - epoch), 1),
            })

        return report

    def after_training(self, phase):
        """Every epoch is done; the network is being finished (``phase``): no time left to tell."""
        self.stage = phase
        if self.on_epoch is None:
            return
        self.on_epoch({
            **self._where(phase, phase, None), "epoch": self.done, "epochs": self.total,
            "phase_epoch": None, "elapsed_seconds": round(time.monotonic() - self.started, 1),
            "eta_seconds": None,
        })


def _base_network(keras, model_bytes):
    """The version's network with its probabilities alone as output (the score is fitted again)."""
    from classifier.inference import load_keras_bytes

    stored = load_keras_bytes(model_bytes)
    return keras.Model(stored.input, stored.outputs[0], name=stored.name)


def _predict(model, prepared, rows, recipe):
    """Uncalibrated probabilities of the network on the rows' plain (unaugmented) view."""
    shape = tuple(model.inputs[0].shape[1:])
    inputs = trust.unaugmented_view(prepared.x[rows], shape)
    return evaluation.predict_probabilities(model, inputs, recipe.task, n_classes=len(recipe.class_names))


def _fine_tune(keras, tf, config, prepared, rows, recipe, report, should_stop):
    model = _base_network(keras, config.model_bytes)
    arrays = _arrays(prepared, rows, recipe.class_names)
    fitted = fitting.train_network(keras, tf, model, arrays, recipe, report, should_stop, select_best=False)
    return fitted, arrays


def _stop_check(should_stop, what):
    if should_stop is not None and should_stop():
        raise TrainingCancelled(f"adaptation was cancelled {what}")


def cross_validate(keras, tf, config, prepared, recipe, progress, folds, should_stop):
    """Out-of-fold uncalibrated probabilities of every lab cell, each from a fine-tune on the
    other folds (and the replay)."""
    lab_labels = prepared.y[prepared.lab_rows]
    photographs = [image.cell_key for image in prepared.lab_images]
    assigned = stratified_folds(lab_labels, folds, recipe.seed, groups=photographs)
    replay = np.setdiff1d(np.arange(len(prepared.y)), prepared.lab_rows)
    out_of_fold = np.zeros((len(lab_labels), len(recipe.class_names)))
    for fold in range(folds):
        _stop_check(should_stop, f"before fold {fold + 1}")
        held = assigned == fold
        rows = np.concatenate([replay, prepared.lab_rows[~held]])
        report = progress.run(f"cross-validation fold {fold + 1} of {folds}", PHASE_CROSS_VALIDATION,
                              fold + 1)
        fitted, _ = _fine_tune(keras, tf, config, prepared, rows, recipe, report, should_stop)
        out_of_fold[held] = _predict(fitted.model, prepared, prepared.lab_rows[held], recipe)
    return out_of_fold


def _lab_figures(probabilities, labels, class_names):
    """Figures on the lab's cells over the classes the network has."""
    result = classification_metrics(labels, probabilities, class_names)
    return {key: result[key] for key in
            ("n", "class_names", "accuracy", "balanced_accuracy", "per_class", "confusion_matrix", "ece")}


def adapt_classifier(
    config: AdaptationConfig,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> export.TrainingResult:
    """Fine-tune the network of config on the lab's reviewed cells (module docstring). Too few
    usable cells, or bad data, raise TrainingDataError before anything is trained; should_stop
    answering True raises TrainingCancelled."""
    started = time.monotonic()
    metadata = config.metadata
    recipe = adaptation_recipe(metadata, config)
    version = metadata.get("label") or "the version"
    cells = lab_cells(config.reviewed, recipe.task)
    check_enough(cells, config.min_cells, version)
    sources, missing = replay_sources(data.data_folders(config.data_dir), recipe, config.replay_per_class)
    data.check_readable(sources, recipe.task, config.evaluate_test)
    _stop_check(should_stop, "before it started")
    keras, tf = fitting.seeded_keras(recipe.seed)
    prepared = prepare(sources, cells, recipe, config)
    decoded = LabCells(prepared.lab_images, cells.left_out)
    check_enough(decoded, config.min_cells, version)
    class_names = recipe.class_names
    lab_labels = prepared.y[prepared.lab_rows]
    photographs = decoded.photographs
    folds = cross_validation_folds(config.folds, photographs)
    progress = _Progress(folds + 1, recipe.epochs, on_epoch, folds)

    base = _base_network(keras, config.model_bytes)
    before = _predict(base, prepared, prepared.lab_rows, recipe)
    cv_started = time.monotonic()
    out_of_fold = None
    if folds:
        out_of_fold = cross_validate(keras, tf, config, prepared, recipe, progress, folds, should_stop)
    cv_seconds = time.monotonic() - cv_started

    _stop_check(should_stop, "before the final fine-tune")
    tune_started = time.monotonic()
    fitted, arrays = _fine_tune(keras, tf, config, prepared, np.arange(len(prepared.y)), recipe,
                                progress.run("fine-tune on every reviewed cell", PHASE_FINAL), should_stop)
    fine_tune_seconds = time.monotonic() - tune_started
    # What follows (the score fitted again, the export, each source's TEST as served) takes a
    # while after the last epoch: the page says what it waits for, not "0 s left".
    progress.after_training(PHASE_EVALUATING if config.evaluate_test and sources else PHASE_FINISHING)

    # Kept (module docstring): the reviewed cells are no sample to calibrate on.
    temperature = float(metadata.get("temperature") or 1.0)
    temperature_from = "kept from the version adapted (the reviewed cells are mostly those it was unsure of)"
    ood_head, ood_record = trust.fit_ood(fitted, arrays, recipe)

    adaptation = {
        "cells": int(len(lab_labels)),
        "per_class": {name: int((lab_labels == k).sum()) for k, name in enumerate(class_names)
                      if (lab_labels == k).any()},
        "left_out": cells.left_out,
        "unreadable": len(cells.images) - len(prepared.lab_images),
        "before": _lab_figures(calibration.softmax(evaluation.raw_logits(before, recipe.task),
                                                   float(metadata.get("temperature") or 1.0)),
                               lab_labels, class_names),
        "folds": folds,
        "photographs": photographs,  # the cells' photographs, each in one fold
        "cross_validated": None,
        "replay": {
            "per_class": config.replay_per_class,
            "cells": int(len(prepared.y) - len(lab_labels)),
            "sources": [source.name for source in sources],
            "missing": [str(folder) for folder in [*config.missing_folders, *missing]],
        },
        "epochs": recipe.epochs,
        "learning_rate": recipe.learning_rate,
        "temperature_fitted_on": temperature_from,
        "base_sha256": metadata.get("model_sha256", ""),
        "fine_tune_seconds": round(fine_tune_seconds, 1),
        "cross_validation_seconds": round(cv_seconds, 1),
    }
    if out_of_fold is not None:
        calibrated = calibration.softmax(evaluation.raw_logits(out_of_fold, recipe.task), temperature)
        adaptation["cross_validated"] = _lab_figures(calibrated, lab_labels, class_names)

    selection = data.ImageSelection(sources, prepared.lab_images)
    model_bytes = export.exported_bytes(fitted.model, recipe, ood_head)
    tests = {"sources": {}}
    if config.evaluate_test and sources:
        served = export.served_classifier(model_bytes, recipe, temperature, config.runtime)
        tests = evaluation.test_split_metrics(served, selection, recipe, config,
                                              ood.confidence_threshold(metadata.get("metrics")),
                                              left_out=config.lab_photograph_checksums)
        adaptation["test_left_out"] = tests.pop("left_out", {})
    metrics = {"temperature": temperature, "ood": ood_record, "adaptation": adaptation}
    if ood.fitted_confidence_threshold(metadata.get("metrics")) is not None:
        # A handful of the lab's cells cannot fit a threshold to a budget: the lab keeps the one
        # its cells were flagged at, rather than falling back to the site's default.
        metrics["review"] = {**metadata["metrics"]["review"], "carried_from": version}
    metrics = export.with_source_records(metrics, tests, selection, recipe)
    adaptation["seconds"] = round(time.monotonic() - started, 1)
    replayed = [str(source.layout.root) for source in sources]
    return export.training_result(
        _DataOf(replayed), recipe, selection, arrays, fitted, temperature, metrics, started, model_bytes
    )


@dataclass(frozen=True)
class _DataOf:
    """What export.training_result reads of a run's config: its data folders."""

    data_dir: list
