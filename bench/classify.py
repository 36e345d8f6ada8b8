"""Benchmark a cell classifier on the held-out TEST split of every source it may meet.

    python bench/classify.py [--model-dir DIR | --model-version active|ID] [--data DIR ...]

A model folder (default: the bundled LeukoNet), or a version stored in the site's database, loaded
as its workers load it (`make bench-classify` benchmarks the active one), on each data folder given
(default: ../shared/datasets/blood-cell-images and ../shared/datasets/pbc, those present).

For each source: accuracy, balanced accuracy, per-class recall and the confusion matrix over the
network's classes the source holds (the probabilities renormalised over them, as a lab that knows
its slides hold no others would read them), and over the four leukocyte types every source shares
where it holds more; binary accuracy (summed from a typed network's probabilities), ECE before and
after temperature scaling, the review flag as the site raises it (calibrated confidence under the
threshold, or an out-of-distribution score above 1) with the share of cells flagged and of the
network's errors among them, the share flagged of cells of types the network has no class for;
cells/s at batch 64 and ms/cell at batch 1 on the source's own images (preparation included).
Calls are the site's: a second look at other magnifications where the network is unsure
(classifier.second_look), the review flag the first look's or a call the second look changed.
Where TEST holds photographs of cells also photographed in TRAIN (originals.csv's
same_cell_in_train, or byte-for-byte copies of the network's TRAIN files): the accuracy and the
review flag's figures without them too. Where the source says so (blood-cell-images): TEST_SIMPLE,
and the TEST photograph groups whose copies are mostly misclassified (the few that decide the
accuracy). Then the model's size and the process's peak memory.
"""

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classifier import calibration, dataset, ood, second_look  # noqa: E402
from classifier.errors import TrainingDataError  # noqa: E402
from classifier.labels import BINARY_CLASSES, BINARY_GROUP, FOUR_CLASSES  # noqa: E402
from classifier.metrics import (  # noqa: E402
    REVIEW_THRESHOLDS,
    binary_from_four,
    binary_labels,
    classification_metrics,
    expected_calibration_error,
    format_review_flagging,
    groups_mostly_wrong,
    review_flagging,
    unflagged_words,
)
from classifier.model_folder import BUNDLED_MODELS_DIR  # noqa: E402
from classifier.runtimes import DEFAULT_RUNTIME, RUNTIMES, quiet_tensorflow_startup  # noqa: E402
from classifier.training.data import found_folders  # noqa: E402
from classifier.training.evaluation import (  # noqa: E402
    restricted,
    review_flag_figures,
    trained_on_files,
    with_copies_marked,
)

DEFAULT_MODEL_DIR = BUNDLED_MODELS_DIR / "leukonet"
DATASETS = ROOT.parent / "shared" / "datasets"
DEFAULT_SOURCES = (DATASETS / "blood-cell-images", DATASETS / "pbc")
# The speed is timed on this many TEST cells drawn at random with a fixed seed: a split's files
# are listed class by class, so its first cells are of one type (BCCD's eosinophils, PBC's
# basophils), whose share of second looks (classifier.second_look) is not a smear's.
SPEED_CELLS = 256
SPEED_SAMPLE_SEED = 20261204


@dataclass(frozen=True)
class SplitCalls:
    """A network's calls on one split of a source: every cell whose type the network has a class
    for (``y``, indices into its classes) and, apart, the cells of types it has none for."""

    images: list  # dataset.LabelledImage of the known-type cells, in y's order
    y: np.ndarray
    calibrated: np.ndarray  # (N, C) served probabilities
    uncalibrated: np.ndarray  # (N, C) at temperature 1
    ood_scores: np.ndarray | None  # (N,) the first look's, None for a network without the score
    located: np.ndarray  # bool (N,): the detector found the cell
    # {type the network has no class for: (cells, review-flagged cells)}
    foreign: dict
    # (N, C) the first look at temperature 1, where a second look (classifier.second_look) was
    # taken: the review flag is the first look's, or a call the second look changed.
    first_uncalibrated: np.ndarray | None = None
    first_calibrated: np.ndarray | None = None
    looked_again: np.ndarray | None = None  # bool (N,): a second look was taken

    @property
    def flag_confidence(self):
        """(N,) the confidence the review flag reads: the first look's or the served one, the lower."""
        first = self.calibrated if self.first_calibrated is None else self.first_calibrated
        return np.minimum(first.max(axis=1), self.calibrated.max(axis=1)) if len(first) else np.zeros(0)

    @property
    def changed(self):
        """(N,) bool: calls a second look changed, which the review flag takes too."""
        if self.first_calibrated is None or not len(self.calibrated):
            return np.zeros(len(self.calibrated), bool)
        return self.first_calibrated.argmax(axis=1) != self.calibrated.argmax(axis=1)

    def review_flags(self, review_threshold):
        """(N,) the site's review flag of each known-type cell."""
        first = self.calibrated if self.first_calibrated is None else self.first_calibrated
        return second_look.needs_review(first, self.calibrated, self.ood_scores, review_threshold)


def _split_images(folder, task, split, originals):
    """(images of the task's classes, {other folder's type: its images}) of a split folder."""
    try:
        known = dataset.list_images(folder, task, split, originals)
    except TrainingDataError:  # none of the task's classes
        known = []
    foreign = {}
    for class_folder in dataset.folders_outside_task(folder, task):
        files = dataset.image_files(class_folder)
        name = dataset.type_of_folder(class_folder.name)
        foreign[name] = [dataset.LabelledImage(str(p), name, split) for p in files]
    return known, foreign


def _split(classifier, layout, split, originals, review_threshold, trained_on=None):
    """SplitCalls of a source's split, as the site calls them (with its second looks), or None
    where the source has no such split; photographs that are byte-for-byte copies of ``trained_on``'s
    files (the network's TRAIN images: trained_files) marked as cells also photographed in TRAIN."""
    folder = layout.eval_dirs.get(split) or layout.root / split  # a lab may send TEST/ alone
    if not folder.is_dir():
        return None
    known, foreign = _split_images(folder, classifier.task, split, originals)
    if trained_on is not None:
        known = with_copies_marked(known, trained_on)
    images = known + [image for members in foreign.values() for image in members]
    scale = _window_scale(classifier)
    inputs, ok, located = dataset.load_prepared(images, classifier.input_spec, 1.0, scale)
    first = classifier.classify_inputs(inputs)
    looks = second_look.look_again(classifier, inputs, first, second_look.window_cutter(images, scale))
    calibrated = looks.probabilities
    uncalibrated = classifier.predict_inputs(looks.inputs, calibrated=False)
    first_uncalibrated = classifier.predict_inputs(inputs, calibrated=False)
    index = {name: k for k, name in enumerate(classifier.class_names)}
    count = len(known)
    mine = ok.copy()
    mine[count:] = False
    scores = first.ood_scores
    flagged = looks.needs_review(review_threshold)
    others, start = {}, count
    for name, members in foreign.items():
        rows = np.arange(start, start + len(members))
        rows = rows[ok[rows]]
        others[name] = (len(rows), int(flagged[rows].sum()))
        start += len(members)
    return SplitCalls(
        images=[image for image, good in zip(known, ok[:count], strict=True) if good],
        y=np.array([index[image.class_name] for image, good in zip(known, ok, strict=False) if good], int),
        calibrated=calibrated[mine],
        uncalibrated=uncalibrated[mine],
        ood_scores=None if scores is None else scores[mine],
        located=located[mine],
        foreign=others,
        first_uncalibrated=first_uncalibrated[mine],
        first_calibrated=first.probabilities[mine],
        looked_again=looks.looked_again[mine],
    )


def _window_scale(classifier):
    """How the network's windows were scaled in training: "image" (the detector's reading) or
    "reference"."""
    return classifier.metadata.get("hyperparameters", {}).get("window_scale", "image")


def _binary_metrics(probabilities, y, class_names):
    """Binary figures summed from a typed network's call, on the cells of a type with a group."""
    grouped = [name for name in class_names if name in BINARY_GROUP]
    picked, picked_y, _ = restricted(probabilities, y, class_names, grouped)
    return classification_metrics(
        binary_labels(picked_y, grouped), binary_from_four(picked, grouped), BINARY_CLASSES
    )


def review_figures(calls, review_threshold):
    """The review flag as the site raises it, on the cells of known types (served calls against
    the truth) and on the cells of types the network has no class for."""
    wrong = calls.calibrated.argmax(axis=1) != calls.y if len(calls.y) else np.zeros(0, bool)

    def figures(flagged):
        caught = float(flagged[wrong].sum() / wrong.sum()) if wrong.any() else 1.0
        return {
            "flagged_share": float(flagged.mean()) if len(flagged) else 0.0,
            "errors_caught": caught,
            "unflagged_accuracy": float(1 - wrong[~flagged].mean()) if (~flagged).any() else 1.0,
        }

    flagged = calls.review_flags(review_threshold)
    foreign_cells = sum(count for count, _ in calls.foreign.values())
    foreign_flagged = sum(flagged_count for _, flagged_count in calls.foreign.values())
    unfamiliar = calls.ood_scores is not None and len(calls.y)
    return {
        "threshold": review_threshold,
        "has_ood_score": calls.ood_scores is not None,
        "errors": int(wrong.sum()),
        **figures(flagged),
        "confidence_only": figures((calls.flag_confidence < review_threshold) | calls.changed),
        "unfamiliar_share": float((calls.ood_scores > ood.UNFAMILIAR_ABOVE).mean()) if unfamiliar else None,
        "foreign": {
            "cells": foreign_cells,
            "types": {name: count for name, (count, _) in calls.foreign.items()},
            "flagged_share": foreign_flagged / foreign_cells if foreign_cells else None,
        },
    }


def speed_sample(images, count=SPEED_CELLS, seed=SPEED_SAMPLE_SEED):
    """``count`` of a split's images drawn at random (a fixed draw), in the drawn order."""
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return [images[k] for k in order]


def _throughput(classifier, windows, window_at):
    """(cells/s at batch 64, ms/cell at batch 1, spread, share of the batch's cells looked at
    again) as the site serves cells from their context windows (``windows``; ``window_at(row,
    factor)`` cuts a second look's): preparation, the out-of-distribution score and the second
    looks (classifier.second_look) included.

    Each batch is timed on its own for at least 3 s and the figures come from the median call, so
    that a neighbour's burst on a shared machine moves them less than it moves a mean; the spread
    (10th-90th percentile of the batch-64 calls, in cells/s) is reported beside them.
    """
    windows = list(windows)

    def served(rows):
        def cut(k, factor):
            return windows[rows[k]] if factor == 1.0 else window_at(rows[k], factor)

        return second_look.classify_cells(classifier, cut, len(rows))

    batch64 = list(range(min(64, len(windows))))
    looks = served(batch64)  # warm-up: first calls trace the graph
    served([0])

    def timed_calls(rows, minimum_seconds=3.0, minimum_calls=5):
        seconds = []
        started = time.perf_counter()
        while time.perf_counter() - started < minimum_seconds or len(seconds) < minimum_calls:
            call_started = time.perf_counter()
            served(rows)
            seconds.append(time.perf_counter() - call_started)
        return np.array(seconds)

    batch_seconds = timed_calls(batch64)
    rates = len(batch64) / batch_seconds
    single_seconds = np.array([
        np.median(timed_calls([row], minimum_seconds=0.0, minimum_calls=3))
        for row in range(min(50, len(windows)))
    ])
    spread = (float(np.percentile(rates, 10)), float(np.percentile(rates, 90)))
    looked_again = float(np.mean(looks.looked_again)) if batch64 else 0.0
    return float(np.median(rates)), float(np.median(single_seconds)) * 1000.0, spread, looked_again


def probabilities_at(uncalibrated, temperature):
    """Probabilities a network gave at temperature 1, calibrated at another temperature."""
    return calibration.softmax(calibration.logits_from_probabilities(uncalibrated), temperature)


def _accuracy_figures(calls, names, own_temperature=None):
    """The split's figures over the network's classes it holds (renormalised where it holds fewer),
    binary figures, and the four shared types' where it holds more. ``own_temperature``: the one
    fitted on this source's validation cells alone, where the network learnt from it."""
    held = _held_classes(calls.y, names)
    figures = {"held_classes": held}
    probabilities, y, _ = _over_held(calls.calibrated, calls.y, names, held)
    raw = _over_held(calls.uncalibrated, calls.y, names, held)[0]
    if held != list(names):
        figures["restricted_to"] = held
        # What a user reads: the served probabilities over every class, a call of a type this
        # source lacks counting wrong. Renormalised over fewer types, a call within them reads
        # surer than the site ever shows it.
        figures["ece_as_served"] = expected_calibration_error(calls.calibrated, calls.y)
    figures["test"] = classification_metrics(y, probabilities, held)
    figures["ece_before_temperature"] = classification_metrics(y, raw, held)["ece"]
    figures["ece_after_temperature"] = figures["test"]["ece"]
    if own_temperature:
        # The served temperature is one for every lab; this says how much a lab-specific one (what
        # "Adapt to this lab" fits on the lab's own cells) would change the calibration.
        own = probabilities_at(raw, own_temperature)
        figures["ece_own_temperature"] = classification_metrics(y, own, held)["ece"]
        figures["own_temperature"] = own_temperature
    if tuple(names) != BINARY_CLASSES:
        figures["test_binary"] = _binary_metrics(calls.calibrated, calls.y, names)
        if set(FOUR_CLASSES) <= set(held) and len(held) > len(FOUR_CLASSES):
            four, four_y, _ = restricted(calls.calibrated, calls.y, names, FOUR_CLASSES)
            figures["four_classes"] = classification_metrics(four_y, four, FOUR_CLASSES)
    return figures


def _held_classes(y, names):
    """The network's classes that the cells y (indices into names) hold, in the network's order."""
    return [name for k, name in enumerate(names) if (y == k).any()]


def _over_held(probabilities, y, names, held):
    """(probabilities, labels, class names) over the held classes, renormalised, as the TEST
    figures are read: a network with classes the source lacks is not charged for calling them."""
    if list(held) == list(names):
        return probabilities, y, list(names)
    picked, picked_y, _ = restricted(probabilities, y, names, held)
    return picked, picked_y, list(held)


def _without_same_cell_figures(calls, names, review_threshold):
    """TEST's accuracy and review flag (review_flag_figures, as a run measures them) without the
    cells also photographed in TRAIN (originals.csv's same_cell_in_train, and byte-for-byte copies
    of the network's TRAIN files)."""
    keep = ~np.array([i.same_cell_in_train for i in calls.images], bool)
    probabilities, y, _ = _over_held(calls.calibrated, calls.y, names, _held_classes(calls.y, names))
    figures = {
        "n": int(keep.sum()),
        "accuracy": float((probabilities.argmax(1)[keep] == y[keep]).mean()) if keep.any() else 0.0,
    }
    if tuple(names) != BINARY_CLASSES and keep.any():
        figures["binary_accuracy"] = _binary_metrics(calls.calibrated[keep], calls.y[keep], names)["accuracy"]
    if keep.any():
        # A cell the network learnt from is called surely and so seldom flagged: a flag rate quoted
        # as held out must leave it out, as the run's own TEST figures do.
        flagged = calls.review_flags(review_threshold)
        figures["review_flag"] = review_flag_figures(flagged[keep], calls.calibrated[keep], calls.y[keep],
                                                     review_threshold, calls.ood_scores is not None)
    return figures


def _blood_cell_images_figures(classifier, layout, originals, calls, names, review_threshold, trained_on):
    """What only a source with originals.csv and TEST_SIMPLE (blood-cell-images) can say."""
    figures = {}
    probabilities, y, held = _over_held(calls.calibrated, calls.y, names, _held_classes(calls.y, names))
    figures["test_photographs"], figures["test_worst_photographs"] = groups_mostly_wrong(
        calls.images, probabilities, y, held
    )
    simple = _split(classifier, layout, "TEST_SIMPLE", originals, review_threshold, trained_on)
    if simple is not None and len(simple.y):
        simple_probabilities, simple_y, _ = _over_held(simple.calibrated, simple.y, names, held)
        figures["test_simple"] = {
            "n": int(len(simple_y)),
            "accuracy": float((simple_probabilities.argmax(1) == simple_y).mean()),
        }
        if tuple(names) != BINARY_CLASSES:
            binary = _binary_metrics(simple.calibrated, simple.y, names)
            figures["test_simple"]["binary_accuracy"] = binary["accuracy"]
    return figures


def at_temperature(calls, temperature):
    """The split's calls with their probabilities calibrated at another temperature."""
    first = calls.first_uncalibrated
    return replace(calls, calibrated=probabilities_at(calls.uncalibrated, temperature),
                   first_calibrated=None if first is None else probabilities_at(first, temperature))


def source_benchmark(classifier, data_dir, review_threshold=0.8, speed=True, trained_on=None) -> dict:
    """Held-out figures (and speed) of a CellClassifier on one source's TEST split; ``trained_on``
    (trained_files), where given, the network's TRAIN files, whose copies are measured apart."""
    layout = dataset.resolve_layout(data_dir)
    originals = dataset.read_originals(layout.root)
    names = list(classifier.class_names)
    calls = _split(classifier, layout, "TEST", originals, review_threshold, trained_on)
    if calls is None:
        raise FileNotFoundError(f"{data_dir} has no TEST folder")
    if not len(calls.y):
        raise TrainingDataError(f"{data_dir}'s TEST holds none of the network's classes ({', '.join(names)})")
    report = {"data_dir": str(data_dir), "name": layout.root.name, "test_n": int(len(calls.y))}
    own = (classifier.metadata.get("metrics", {}).get("calibration", {}).get("sources", {})
           .get(layout.root.name, {}).get("temperature"))
    report.update(_accuracy_figures(calls, names, own))
    report["test_located_share"] = float(np.mean(calls.located))
    if dataset.locates_cell(classifier.input_spec):
        # The site lists no cell on a photograph where the detector finds none, where the bench
        # calls the photograph's middle: scored as the site would answer, those count wrong.
        probabilities, y, _ = _over_held(calls.calibrated, calls.y, names, report["held_classes"])
        report["test_unlocated"] = int(np.sum(~calls.located))
        right_and_located = (probabilities.argmax(1) == y) & calls.located
        report["test_accuracy_unlocated_wrong"] = float(np.mean(right_and_located))
    report["review_threshold"] = review_threshold
    report["review_flagging"] = review_flagging(
        calls.y, calls.calibrated, sorted({*REVIEW_THRESHOLDS, review_threshold}),
        confidence=calls.flag_confidence, also_flagged=calls.changed,
    )
    report["review"] = review_figures(calls, review_threshold)
    if own:
        # A sharper temperature calibrates a source better yet lets more of its errors pass the
        # confidence threshold: the two figures are printed side by side to show that trade.
        report["review_own_temperature"] = review_figures(at_temperature(calls, own), review_threshold)
    if originals or any(image.same_cell_in_train for image in calls.images):
        report["test_without_same_cell"] = _without_same_cell_figures(calls, names, review_threshold)
    if originals:
        report.update(_blood_cell_images_figures(classifier, layout, originals, calls, names,
                                                 review_threshold, trained_on))
    if speed:
        images = speed_sample(calls.images)
        windows = dataset.load_context_windows(images, classifier.input_spec)
        readable = [k for k, window in enumerate(windows) if window is not None]
        window_at = second_look.window_cutter([images[k] for k in readable], _window_scale(classifier))
        cells_per_second, ms_per_cell, spread, looked_again = _throughput(
            classifier, [windows[k] for k in readable], window_at)
        report["cells_per_second_batch64"] = cells_per_second
        report["cells_per_second_batch64_p10_p90"] = spread
        report["ms_per_cell_batch1"] = ms_per_cell
        report["looked_again_batch64"] = looked_again
    if calls.looked_again is not None:
        report["looked_again_test"] = float(np.mean(calls.looked_again)) if len(calls.y) else 0.0
    return report


def trained_files(classifier, data_dirs):
    """(FileDigests of the TRAIN files a network learnt from, the folders it learnt from that are
    not on this machine): its metadata's dataset_path, a folder not where it was looked for among
    ``data_dirs`` (those benchmarked) by its name, subsampled as its run was."""
    metadata = classifier.metadata
    present, missing = found_folders(metadata.get("dataset_path"), data_dirs)
    max_per_class = (metadata.get("hyperparameters") or {}).get("max_images_per_class")
    return trained_on_files(present, classifier.task, max_per_class, metadata.get("seed")), missing


def run_benchmark(classifier, data_dirs=None, review_threshold=0.8, speed=True) -> dict:
    """The model's figures on each source's TEST (source_benchmark), its size and peak memory; TEST
    files that are copies of its TRAIN files (trained_files) measured apart."""
    data_dirs = [str(d) for d in (data_dirs or default_sources())]
    trained_on, not_here = trained_files(classifier, data_dirs)
    report = {
        "architecture": classifier.architecture,
        "task": classifier.task,
        "class_names": list(classifier.class_names),
        "input_spec": classifier.input_spec,
        "temperature": classifier.temperature,
        "has_ood_score": classifier.has_ood_score,
        "size_bytes": classifier.size_bytes,
        "runtime": classifier.serving_runtime,
        "sources": [source_benchmark(classifier, d, review_threshold, speed, trained_on) for d in data_dirs],
    }
    if not_here:
        report["trained_on_not_here"] = not_here
    # ru_maxrss is KiB on Linux.
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return report


def default_sources():
    """The shared datasets' labelled single-cell sources that are present."""
    return [path for path in DEFAULT_SOURCES if path.is_dir()]


def _percent(value):
    return "n/a" if value is None else f"{value:.1%}"


def _accuracy_lines(source, names):
    t = source["test"]
    lines = []
    if source.get("restricted_to"):
        lines.append(
            f"scored on the {len(source['held_classes'])} of the network's classes this source holds "
            f"({', '.join(source['held_classes'])}): probabilities renormalised over them"
        )
    lines.append(
        f"TEST (n={source['test_n']}): accuracy {t['accuracy']:.4f}  balanced {t['balanced_accuracy']:.4f}"
    )
    if "test_binary" in source:
        b = source["test_binary"]
        auc = "n/a" if b.get("roc_auc") is None else f"{b['roc_auc']:.4f}"
        lines.append(
            f"TEST binary (summed from {len(names)}-class): accuracy {b['accuracy']:.4f}  "
            f"balanced {b['balanced_accuracy']:.4f}  ROC AUC {auc}"
        )
    elif t.get("roc_auc") is not None:
        lines.append(f"TEST ROC AUC {t['roc_auc']:.4f}")
    recalls = "  ".join(f"{name} {row['recall']:.3f}" for name, row in t["per_class"].items())
    lines.append("per-class recall: " + recalls)
    unlocated = source.get("test_unlocated")
    if unlocated:
        photographs = "1 photograph" if unlocated == 1 else f"{unlocated} photographs"
        lines.append(
            f"  the detector found no cell on {photographs}, called here from "
            f"the photograph's middle, as the site calls photographs uploaded as one white cell each; "
            f"uploaded as fields, the site lists no cell there: counting them wrong, accuracy "
            f"{source['test_accuracy_unlocated_wrong']:.4f}"
        )
    four = source.get("four_classes")
    if four:
        lines.append(
            f"TEST over the four shared types (n={four['n']}): accuracy {four['accuracy']:.4f}  "
            f"balanced {four['balanced_accuracy']:.4f}  recall "
            + "  ".join(f"{k} {v['recall']:.3f}" for k, v in four["per_class"].items())
        )
    return lines


def _blood_cell_images_lines(source, names):
    lines = []
    w = source.get("test_without_same_cell")
    if w and not w["n"]:
        lines.append("TEST without same_cell_in_train: none; every TEST image is marked so")
    elif w:
        # same_cell_in_train: originals.csv's mark, or a byte-for-byte copy of a TRAIN file.
        extra = f"  binary {w['binary_accuracy']:.4f}" if "binary_accuracy" in w else ""
        lines.append(f"TEST without same_cell_in_train (n={w['n']}): accuracy {w['accuracy']:.4f}{extra}")
    if "test_simple" in source:
        s = source["test_simple"]
        extra = f"  binary {s['binary_accuracy']:.4f}" if "binary_accuracy" in s else ""
        lines.append(f"TEST_SIMPLE (n={s['n']}): accuracy {s['accuracy']:.4f}{extra}")
    return lines


def _review_lines(source):
    review = source["review"]
    rule = f"calibrated confidence under {review['threshold']:.2f}"
    if review["has_ood_score"]:
        rule += " or out-of-distribution score above 1"
    lines = [
        f"review flag as the site raises it ({rule}), on TEST: {review['flagged_share']:.1%} of "
        f"cells flagged, {review['errors_caught']:.1%} of the {review['errors']} errors among them, "
        f"{unflagged_words(review['flagged_share'], review['unflagged_accuracy'])}"
    ]
    if review["has_ood_score"]:
        alone = review["confidence_only"]
        lines.append(
            f"  confidence alone: {alone['flagged_share']:.1%} flagged, {alone['errors_caught']:.1%} of "
            f"the errors; out-of-distribution score above 1: {_percent(review['unfamiliar_share'])} of cells"
        )
    else:
        lines.append("  (this network carries no out-of-distribution score: the flag is confidence alone)")
    lines += _review_never_trained_on_lines(source)
    foreign = review["foreign"]
    if foreign["cells"]:
        types = ", ".join(f"{name} {count}" for name, count in foreign["types"].items())
        lines.append(
            f"cells of types the network has no class for ({types}): {foreign['flagged_share']:.1%} "
            "of them flagged"
        )
    return lines


def _review_never_trained_on_lines(source):
    """The review flag's figures on TEST without the cells also photographed in TRAIN, where some
    are marked so (none where none is: the whole split's figures are those)."""
    without = source.get("test_without_same_cell")
    if not without or without["n"] == source["test_n"]:
        return []
    if not without["n"]:
        return ["  on TEST without same_cell_in_train: none; every TEST image is marked so"]
    flag = without["review_flag"]
    if flag["errors"]:
        caught = f"{flag['errors_caught']:.1%} of the {flag['errors']} errors among them"
    else:
        caught = "no error to catch"
    return [f"  on TEST without same_cell_in_train (n={without['n']}): {flag['flagged_share']:.1%} of "
            f"cells flagged, {caught}"]


def _groups_lines(source):
    worst = source.get("test_worst_photographs") or []
    if not source.get("test_photographs"):
        return []
    photographs = source["test_photographs"]
    lost = sum(row["copies"] * (1 - row["accuracy"]) for row in worst) / source["test_n"]
    wrong_groups = len({row["group"] for row in worst})
    lines = [
        f"TEST photograph groups mostly right: {photographs - wrong_groups}/{photographs}; "
        f"the {wrong_groups} others cost {lost:.1%} of TEST accuracy:"
    ]
    lines.extend(
        f"  {row['group']} {row['label']}: {row['copies']} copies, "
        f"{row['accuracy']:.0%} right, mostly called {row['mostly_called']}"
        for row in worst
    )
    return lines


def source_lines(source, names):
    """The printed report of one source (source_benchmark's)."""
    lines = [f"data: {source['data_dir']}"]
    lines += _accuracy_lines(source, names)
    lines += _blood_cell_images_lines(source, names)
    lines.append(
        f"ECE (15 bins) before temperature {source['ece_before_temperature']:.4f}, "
        f"after {source['ece_after_temperature']:.4f}"
        + (f"; with the temperature fitted on this source's validation cells alone "
           f"({source['own_temperature']:.3f}): {source['ece_own_temperature']:.4f}"
           if "ece_own_temperature" in source else "")
    )
    if "ece_as_served" in source:
        lines.append(
            f"  ECE of the probabilities as served, over all {len(names)} of the network's types "
            f"(not renormalised; a call of a type this source lacks counts wrong): "
            f"{source['ece_as_served']:.4f}"
        )
    if "review_own_temperature" in source:
        own = source["review_own_temperature"]
        lines.append(
            f"  at that temperature the review flag would flag {own['flagged_share']:.1%} of cells "
            f"and catch {own['errors_caught']:.1%} of the errors"
        )
    if "cells_per_second_batch64" in source:
        low, high = source["cells_per_second_batch64_p10_p90"]
        lines.append(
            f"speed: {source['cells_per_second_batch64']:.0f} cells/s at batch 64 "
            f"(median call; 10-90%: {low:.0f}-{high:.0f}), "
            f"{source['ms_per_cell_batch1']:.2f} ms/cell at batch 1 (median; preparation included)"
        )
        if "looked_again_test" in source:
            lines.append(
                f"  timed on {SPEED_CELLS} TEST cells drawn at random; second looks taken of "
                f"{source['looked_again_batch64']:.0%} of the batch's 64 cells, "
                f"{source['looked_again_test']:.1%} of TEST's"
            )
    lines += _review_lines(source)
    lines += format_review_flagging(source["review_flagging"], source["review_threshold"], ", on TEST")
    lines += _groups_lines(source)
    matrix = source["test"]["confusion_matrix"]
    lines.append("confusion matrix (rows true, columns predicted): " + json.dumps(matrix))
    return lines


def print_report(report: dict) -> None:
    names = report["class_names"]
    score = "out-of-distribution score" if report["has_ood_score"] else "no out-of-distribution score"
    lines = [
        f"model: {report['architecture']} / {report['task']}  input {report['input_spec']}  "
        f"T={report['temperature']:.3f}  size {report['size_bytes'] / 1e6:.2f} MB  "
        f"runtime {report['runtime']}  {score}",
    ]
    lines += [f"note: the network learnt from {folder}, which is not on this machine: copies of its "
              "photographs in TEST are not told apart from the others"
              for folder in report.get("trained_on_not_here", ())]
    for source in report["sources"]:
        lines += source_lines(source, names)
    lines.append(f"peak memory (maxrss): {report['peak_rss_mib']:.0f} MiB")
    print("\n".join(lines))


def stored_model(version):
    """(CellClassifier, review threshold) of a model version in the site's database, "active" or
    an id, computed by the site's runtime (LEUKOSCOPE_INFERENCE_RUNTIME) as its workers compute it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()

    from webapp.management.commands._model_version_command import ModelVersionCommand
    from webapp.review_flag import review_threshold
    from webapp.services.model_registry import load_classifier

    model_version = ModelVersionCommand().trained_version(None if version == "active" else int(version))
    classifier = load_classifier(model_version)
    classifier.metadata.setdefault("size_bytes", model_version.size_bytes)
    classifier.metadata.setdefault("metrics", model_version.metrics or {})  # per-source calibration
    classifier.metadata.setdefault("dataset_path", model_version.dataset_path)  # for trained_files
    print(f"Benchmarking v{model_version.pk} ({model_version.architecture}/{model_version.task})")
    return classifier, review_threshold(model_version)


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    model.add_argument("--model-version", metavar="active|ID",
                       help="a model version stored in the site's database instead of a folder")
    parser.add_argument("--data", action="append", metavar="DIR",
                        help="a source's data folder (TEST/CLASS/*.jpeg); repeat for several (default: "
                        + " and ".join(str(path) for path in DEFAULT_SOURCES) + ", those present)")
    parser.add_argument("--no-speed", action="store_true", help="skip the timing (figures only)")
    parser.add_argument("--fit-ood", metavar="DIR",
                        help="first fit an out-of-distribution score for the network on DIR's TRAIN (the "
                        "data it was trained on), for a network trained before runs fitted one")
    parser.add_argument("--json", help="also write the report as JSON here")
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIMES,
                        help=f"what computes a --model-dir network (default: {DEFAULT_RUNTIME}, the site's "
                        "default, LEUKOSCOPE_INFERENCE_RUNTIME)")
    parser.add_argument("--review-threshold", type=float, default=None,
                        help="the review flag's confidence threshold (default: the one the version "
                        "fitted on its validation cells, else 0.8; for --model-version, the site's "
                        "LEUKOSCOPE_REVIEW_THRESHOLD where set)")
    args = parser.parse_args(argv)
    if args.model_version is not None and args.model_version != "active" and not args.model_version.isdigit():
        parser.error(f"--model-version takes 'active' or a version id, not {args.model_version!r}")
    data_dirs = args.data or [str(path) for path in default_sources()]
    missing = [path for path in data_dirs if not Path(path).is_dir()]
    if missing or not data_dirs:
        print(f"dataset not found: {', '.join(missing) or ' or '.join(map(str, DEFAULT_SOURCES))}",
              file=sys.stderr)
        return 2
    if args.model_version is not None:
        from django.core.management.base import CommandError

        try:
            classifier, review_threshold = stored_model(args.model_version)
        except CommandError as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        from classifier.inference import CellClassifier

        classifier = CellClassifier.from_directory(args.model_dir, runtime=args.runtime)
        review_threshold = ood.confidence_threshold(classifier.metadata.get("metrics"))
    if args.review_threshold is not None:
        review_threshold = args.review_threshold
    try:
        fitted_here = None
        if args.fit_ood:
            from classifier.training.trust import with_fitted_ood

            classifier, fitted_here = with_fitted_ood(classifier, args.fit_ood)
        report = run_benchmark(classifier, data_dirs, review_threshold, speed=not args.no_speed)
    except (TrainingDataError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if fitted_here:
        report["ood_fitted_here"] = fitted_here
        print(
            f"out-of-distribution score fitted here on {fitted_here['data']}'s TRAIN: threshold "
            f"{fitted_here['threshold_distance']:.1f} (quantile {fitted_here['quantile']} of the "
            f"{fitted_here['threshold_fitted_on']}), shrinkage {fitted_here['shrinkage']:.4f}; the size "
            "below is the network's without it"
        )
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
