"""The model pages' figures: held-out metric tables, training progress (also served as JSON to the
page's poll), the rows of the version list and one version's page."""

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.utils import timezone

from classifier import ood
from classifier.labels import BINARY_CLASSES
from classifier.runtimes import RUNTIME_DESCRIPTIONS
from classifier.training.adaptation import MIN_CELLS
from webapp.models import ModelVersion
from webapp.presenters import ViewModel
from webapp.presenters.charts import finite, learning_curves
from webapp.proportions import wilson_interval
from webapp.review_flag import review_threshold_of
from webapp.selectors import (
    Agreement,
    ReviewAgreement,
    activations_of,
    active_version_id,
    adaptation_counts,
    adaptation_epochs,
    adaptation_plan,
    ever_active_version_ids,
    model_versions,
    model_versions_with_cell_counts,
    recent_activations,
    review_agreement,
    review_agreement_by_version,
    version_deletion_refusal,
)


def _metric_table(title, metrics, threshold=None):
    """One metrics dict (classifier.metrics.classification_metrics) as rows a template can loop
    over; the review-flag row at ``threshold`` (the version's, as this site applies it) is marked."""
    names = list(metrics.get("class_names") or metrics.get("per_class", {}).keys())
    by_name = metrics.get("per_class", {})
    per_class = [dict(name=name, **by_name[name]) for name in names if name in by_name]
    matrix = []
    for name, row in zip(names, metrics.get("confusion_matrix", []), strict=False):
        total = sum(row) or 1
        matrix.append(
            {
                "name": name,
                "cells": [
                    {"count": count, "share": round(count / total, 3), "diagonal": k == len(matrix)}
                    for k, count in enumerate(row)
                ],
            }
        )
    return {
        "title": title,
        "n": metrics.get("n"),
        "skipped_files": metrics.get("skipped_files") or 0,  # files of the split that did not decode
        "skipped_named": metrics.get("skipped_named") or [],  # the first of them, with why
        "accuracy": metrics.get("accuracy"),
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "ece": metrics.get("ece"),
        "roc_auc": metrics.get("roc_auc"),
        "class_names": names,
        "per_class": per_class,
        "matrix": matrix,
        "review_flagging": [
            {**row, "site": threshold is not None and math.isclose(row["threshold"], threshold)}
            for row in metrics.get("review_flagging") or []
        ],
        "review_flag": _applied_review_flag(metrics.get("review_flag"), threshold),
    }


def _applied_review_flag(figures, threshold):
    """The split's review-flag figures at the version's threshold, unless the site applies
    another (LEUKOSCOPE_REVIEW_THRESHOLD), at which they do not hold."""
    if not figures:
        return None
    applied = threshold is None or math.isclose(figures["confidence_threshold"], threshold)
    return figures if applied else None


def _is_metrics(value):
    return isinstance(value, dict) and "confusion_matrix" in value and "per_class" in value


SPLIT_TITLES = (
    ("TEST", "TEST split (held out)"),
    ("TEST_SIMPLE", "TEST_SIMPLE (originals, no augmentation)"),
    ("validation", "Validation split (held-out groups of TRAIN)"),
)


def _split_tables(metrics, source="", threshold=None):
    """The tables of one set of splits: each split, then its binary grouping, its figures without
    cells also photographed in TRAIN and, for a source holding more than the four shared types,
    its figures over those four."""
    tables = []
    for key, title in SPLIT_TITLES:
        value = metrics.get(key)
        if not _is_metrics(value):
            continue
        title = f"{source}: {title}" if source else title
        restricted = value.get("restricted_to")
        shown = f"{title}, on the {len(restricted)} classes it holds" if restricted else title
        without = value.get("without_same_cell_in_train")
        table = dict(_metric_table(shown, value, threshold), where=f"{source} {key}".strip(), figures=value,
                     never_trained_on=without if _is_metrics(without) else None)
        if not_held_out(table):
            table["not_held_out"] = not_held_out_reason(value.get("n") or 0)
        tables.append(table)
        for part, words in (
            ("four_classes", "the four types both sources share"),
            ("binary", "binary grouping"),
            ("without_same_cell_in_train", "without cells also photographed in TRAIN"),
        ):
            # A part measured on no image (a TEST of copies of TRAIN alone, without them) is no table.
            if _is_metrics(value.get(part)) and value[part].get("n") != 0:
                tables.append(_metric_table(f"{title}: {words}", value[part], threshold))
                if part == "without_same_cell_in_train":
                    table["held_out_table"] = tables[-1]
    return tables


def not_held_out(table):
    """Whether a split's table (metric_tables) was measured on no photograph held out from training:
    every one of them is of a cell also photographed in TRAIN (originals.csv, or a byte-for-byte
    copy), so its figures are no held-out figure at all."""
    without = table.get("never_trained_on")
    return without is not None and not without.get("n")


def not_held_out_reason(count):
    """Why a TEST split of ``count`` photographs has no held-out figure, in the words every place
    that says so uses."""
    return f"all {count:,} are of cells also photographed in TRAIN"


def held_out_table(table):
    """The table (metric_tables) of a split's figures on photographs never trained on, as every figure
    quoted of it is: that without cells also photographed in TRAIN where the run measured them apart
    (a version's stored metrics hold it since it did), else the split's own; None where that leaves no
    photograph (not_held_out)."""
    if not_held_out(table):
        return None
    return table.get("held_out_table") or table


def copies_left_out(table):
    """How many of a split's photographs (metric_tables) its held-out figures leave out, being of cells
    also photographed in TRAIN (0 for a split that held none, or was not measured apart)."""
    shown = held_out_table(table)
    return max((table.get("n") or 0) - (shown.get("n") or 0), 0) if shown else 0


def without_copies(count):
    """The words a held-out figure carries where it leaves out ``count`` photographs of cells also
    photographed in TRAIN ("" for none): the pages, `manage.py models` and `manage.py train` say so
    alike."""
    if not count:
        return ""
    return f"without its {count:,} photograph{'' if count == 1 else 's'} of cells also photographed in TRAIN"


def held_out_review_flag(table):
    """(The review flag's figures of a split's table (metric_tables) on photographs never trained on,
    without_copies' words for them): those without cells also photographed in TRAIN where the run
    measured the flag apart, else the whole split's, with no words (a run before it did: as its page
    always said them); (None, "") where no photograph was held out (not_held_out)."""
    shown = held_out_table(table)
    if shown is None:
        return None, ""
    if shown is not table and shown.get("review_flag"):
        return shown["review_flag"], without_copies(copies_left_out(table))
    return table.get("review_flag"), ""


def held_out_figures(table):
    """The figures of a split's table (metric_tables) on photographs never trained on: those
    without cells also photographed in TRAIN where the run measured them apart, else the whole
    split's; None where that leaves no photograph (not_held_out)."""
    if not_held_out(table):
        return None
    return table.get("never_trained_on") or table.get("figures")


def sources_in_given_order(metrics):
    """(name, figures) of each data folder a version learnt from, in the order they were given:
    each record's "order", since a PostgreSQL jsonb field keeps no key order."""
    sources = ((metrics or {}).get("sources") or {}).items()
    return sorted(sources, key=lambda item: item[1].get("order", 0))


def metric_tables(metrics):
    """Every set of held-out figures in a version's metrics, the official TEST split first; a
    version trained on several data folders shows each folder's apart, in the order given, then
    the validation split they pooled."""
    metrics = metrics or {}
    threshold = review_threshold_of(ood.fitted_confidence_threshold(metrics))
    if _is_metrics(metrics):  # a bundled model may store one flat table
        return [dict(_metric_table("Held-out", metrics, threshold), where="Held-out", figures=metrics)]
    sources = metrics.get("sources") or {}
    if len(sources) < 2:  # one folder's figures are at the top level, as they always were
        return _split_tables(metrics, threshold=threshold)
    tables = []
    for name, figures in sources_in_given_order(metrics):
        tables.extend(_split_tables({k: v for k, v in figures.items() if k != "validation"}, name, threshold))
    return tables + _split_tables({"validation": metrics.get("validation")}, threshold=threshold)


def headline(metrics):
    """The figure to show in a list: TEST where there was one (the first data folder's that held a
    photograph never trained on), else validation; on the photographs never trained on
    (held_out_table), as the figure in words is. {"accuracy", "where": the split, "table": the
    figure's table, "without": without_copies' words, "" where it is the whole split's}."""
    tables = [table for table in metric_tables(metrics) if "where" in table and not not_held_out(table)]
    if not tables:
        return None
    shown = held_out_table(tables[0])
    return {"accuracy": shown["accuracy"], "where": tables[0]["where"], "table": shown,
            "without": without_copies(copies_left_out(tables[0]))}


# What the site knows of the public data folders a bundled or lab-trained version may have learnt
# from (shared/datasets/README.md); a lab's own folder is named by its path alone.
KNOWN_SOURCES = {
    "blood-cell-images": "BCCD smears (Wright-Giemsa stain, one lab's microscope camera), "
                         "augmented single-cell fields",
    "pbc": "Hospital Clinic of Barcelona (May-Grünwald-Giemsa stain, CellaVision DM96 analyser), "
           "single-cell photographs",
}


@dataclass
class PlainFigure:
    """One held-out figure as a lab lead reads it."""

    where: str  # "pbc/TEST"
    percent: float | None  # None: none of its photographs was never trained on
    n: int | None  # photographs never trained on
    also_in_train: int = 0  # left out: photographs of cells also photographed in TRAIN

    @property
    def sentence(self):
        if self.percent is None:
            reason = not_held_out_reason(self.also_in_train)
            return f"on photographs like {self.where}: no figure, as {reason}"
        return f"on photographs like {self.where}: {self.percent:.0f}% of cells right"


def plain_figures(version):
    """Each source's TEST figure in words, in the order the sources were given; a version with no
    TEST figure is described by its validation split. Where a TEST holds photographs of cells also
    photographed in TRAIN (originals.csv, or byte-for-byte copies), the figure is that without
    them, and they are counted apart: the sentence says its photographs were never trained on."""
    metrics = version.metrics or {}
    figures = []
    for test in source_test_splits(version):
        # A TEST of copies of TRAIN alone (a folder copied into both) has no figure: its 0 of 0 is
        # no "0% of cells right".
        held = test.held_out
        percent = round(100 * held["accuracy"], 1) if held and held.get("accuracy") is not None else None
        figures.append(PlainFigure(test.where, percent, held.get("n") if held else 0, test.also_in_train))
    if not figures:
        validation = next((t for t in metric_tables(metrics) if t.get("where", "").endswith("validation")),
                          None)
        if validation and validation.get("accuracy") is not None:
            figures.append(PlainFigure("its held-out training photographs",
                                       round(100 * validation["accuracy"], 1), validation.get("n")))
    return figures


def valid_for(version):
    """(source name, what it is) of each data folder the version learnt from; none for a version
    that holds no trained network (queued, training, failed or cancelled): it is valid for nothing."""
    if not version.is_trained:
        return []
    names = [name for name, _ in sources_in_given_order(version.metrics)]
    if not names and version.dataset_path:
        names = [Path(path).name for path in version.dataset_path.split(os.pathsep) if path]
    return [(name, KNOWN_SOURCES.get(name, "this lab's own photographs; stain and analyser not "
                                           "recorded")) for name in names]


@dataclass
class CalibrationRow:
    """How well one source's confidences match its accuracy, on its validation cells."""

    source: str
    cells: int | None
    ece_uncalibrated: float | None
    ece_served: float | None  # with the one temperature the version serves
    ece_own: float | None  # with a temperature fitted on this source alone
    temperature: float | None  # that source's own temperature


def trust_record(metrics):
    """(calibration rows per source, the served temperature's note, the out-of-distribution
    score's record, the review flag's threshold and how it was chosen) for a version page; empty
    parts for a version trained before they existed."""
    calibration = (metrics or {}).get("calibration") or {}
    order = {name: i for i, (name, _) in enumerate(sources_in_given_order(metrics))}
    rows = [
        CalibrationRow(name, figures.get("validation_cells"), figures.get("ece_uncalibrated"),
                       figures.get("ece_served_temperature"), figures.get("ece_own_temperature"),
                       figures.get("temperature"))
        for name, figures in sorted((calibration.get("sources") or {}).items(),
                                    key=lambda item: order.get(item[0], len(order)))
    ]
    ood_record = (metrics or {}).get("ood") or {}
    fitted = (metrics or {}).get("review") or {}
    review = {
        "threshold": review_threshold_of(ood.fitted_confidence_threshold(metrics)),
        "site_setting": settings.REVIEW_CONFIDENCE_THRESHOLD is not None,
        "fitted": fitted if fitted.get("confidence_threshold") is not None else None,
        "sources": sorted(((name, figures) for name, figures in (fitted.get("sources") or {}).items()),
                          key=lambda item: order.get(item[0], len(order))),
    }
    return {"calibration": rows, "served": calibration.get("served", ""),
            "ood": ood_record if ood_record.get("threshold_distance") is not None else None,
            "review": review}


def _threshold_chooser(parent):
    """(the versions that had kept the threshold, nearest first, the version that chose it: None
    where it is gone), walking up from ``parent`` through the versions that carried it."""
    kept, current, seen = [], parent, set()
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        if not ((current.metrics or {}).get("review") or {}).get("carried_from"):
            return kept, current
        kept.append(current)
        current = parent_of(current)
    return kept, None


def adapted_review_note(version, parent, fitted, metrics):
    """The review threshold of an adapted version in words: what it inherited (and from whom),
    what was refitted, and how many cells the flag marks on its own TEST photographs."""
    carried = f"v{parent.pk}" if parent else fitted.get("carried_from") or "the version it was adapted from"
    words = [f"It is the confidence threshold of {carried}, the version it was adapted from, kept unchanged "
             "(the lab's reviewed cells are too few to choose one on)."]
    kept, chooser = _threshold_chooser(parent)
    chain = [f"v{v.pk}" for v in kept] + ([f"v{chooser.pk}"] if chooser else ["a version since deleted"])
    if len(chain) > 1:
        further = "".join(f", and {a} from {b}" for a, b in zip(chain[1:], chain[2:], strict=False))
        words.append(f"{chain[0]} had kept it from {chain[1]}{further}.")
    refit = fitted.get("refit_from")
    how = f"a refit that took it from its held-out run ({refit})" if refit else ""
    if parent is None or chooser is None:
        which = f" ({how})" if how else ""
        words.append(f"It was chosen on the validation cells of an earlier version{which}, with that "
                     "version's network and temperature.")
    elif how:
        words.append(f"{chain[-1]} is {how}, which chose it on its own validation cells, with its own "
                     "network and temperature.")
    else:
        words.append(f"{chain[-1]} chose it on its own validation cells, with its own network and "
                     "temperature.")
    temperature = ((metrics or {}).get("adaptation") or {}).get("temperature_fitted_on") or ""
    ood_record = (metrics or {}).get("ood") or {}
    refitted = []
    if ood_record.get("threshold_distance") is not None:
        quantile = ood_record.get("quantile")
        percentile = f"the {round(100 * quantile)}th percentile of " if finite(quantile) else ""
        refitted.append(f"its out-of-distribution threshold ({percentile}its "
                        f"{ood_record.get('threshold_fitted_on') or 'cells'})")
    if temperature and not temperature.startswith("kept"):
        refitted.append(f"its temperature ({temperature})")
    if refitted:
        words.append(f"Refitted for this version: {' and '.join(refitted)}; so the same threshold need not "
                     f"flag as many cells as it did for {carried}.")
    if temperature.startswith("kept"):
        words.append(f"Its temperature is {carried}'s, kept.")
    measured = []
    for test in source_test_splits(version):
        flag, without = held_out_review_flag(test.table)
        if flag and flag.get("flagged_share") is not None:
            caught = (f", {round(100 * flag['errors_caught'])}% of its wrong calls among them"
                      if flag.get("errors_caught") is not None else "")
            where = f"{test.source or 'TEST'}/TEST" + (f" ({without})" if without else "")
            measured.append(f"{where}: {round(100 * flag['flagged_share'])}% of "
                            f"{flag.get('cells', 'its')} cells flagged{caught}")
    words.append(f"Measured on its own TEST photographs: {'; '.join(measured)}." if measured
                 else "No flag rate was measured on its own TEST photographs.")
    return " ".join(words)


@dataclass
class SourceRecord:
    """One data folder a version learnt from, as its page lists it."""

    name: str
    path: str
    train_counts: dict
    test_counts: dict  # images per class in its TEST folder
    validation_split: str
    fingerprint: str


NO_VALIDATION_SPLIT = "none (every TRAIN image it drew was trained on)"


def holds_no_validation_split(version):
    """A run that held no TRAIN images back (a refit, an adaptation: validation_fraction 0), whose
    source records still carry the rule a split would have followed."""
    fraction = (version.hyperparameters or {}).get("validation_fraction")
    return (finite(fraction) and fraction == 0) or (version.metrics or {}).get("adaptation") is not None


def source_records(metrics, no_validation_split=False):
    """The data folders a version learnt from (none recorded before several could be given)."""
    return [
        SourceRecord(
            name=name,
            path=figures.get("path", ""),
            train_counts=figures.get("train_counts", {}),
            test_counts=(figures.get("test_counts") or {}).get("TEST", {}),
            validation_split=(NO_VALIDATION_SPLIT if no_validation_split
                              else figures.get("validation_split", "")),
            fingerprint=figures.get("fingerprint", ""),
        )
        for name, figures in sources_in_given_order(metrics)
    ]


def epoch_counter(epoch, epochs, progress, adapting):
    """Where a run is, in words. A training counts its own epochs. An adaptation's progress counts
    every epoch of all its fine-tunes (each cross-validation fold's, then the final one) and records
    which fine-tune it is in (classifier.training.adaptation: ``fold`` of ``folds``, ``phase_epoch``
    of ``phase_epochs``); before its first epoch and after its last it says "in all"."""
    if not adapting:
        return f"epoch {epoch} of {epochs}"
    within, each = progress.get("phase_epoch"), progress.get("phase_epochs")
    if within and each:
        in_all = f"{epoch} of {epochs} in all"
        if progress.get("fold"):
            return (f"fold {progress['fold']} of {progress.get('folds')}, epoch {within} of {each} "
                    f"({in_all}, the final fine-tune last)")
        return f"final fine-tune on every reviewed cell, epoch {within} of {each} ({in_all})"
    return (f"epoch {epoch} of {epochs} in all (each cross-validation fold's fine-tune, then the "
            "final one on every reviewed cell)")


@dataclass(frozen=True)
class TrainingOutcome:
    """How a run ended, in words, for the page that followed it (training.js reloads it then)."""

    ended: str  # "finished", "failed", "stopped" or "stopped_as_asked" (by the viewer)
    words: str


def training_outcome(version, viewer=None):
    """None while the version still trains. ``viewer``: who will read it, to tell a stop they
    asked for themselves from one someone else (or a terminal) made."""
    run = (f"Adapting v{version.adapted_from_id} to this lab as v{version.pk}" if version.adapted_from_id
           else f"Training of v{version.pk}")
    Status = ModelVersion.Status
    if version.status == Status.ACTIVE:
        return TrainingOutcome("finished", f"{run} finished: v{version.pk} is the active model.")
    if version.status == Status.READY:
        return TrainingOutcome("finished", f"{run} finished: v{version.pk} is ready, and serves once "
                                           "someone activates it.")
    if version.status == Status.FAILED:
        reason = version.failure_reason or "no reason was recorded."
        return TrainingOutcome("failed", f"{run} failed: {reason}")
    if version.status == Status.CANCELLED:
        if viewer is not None and viewer.pk is not None and version.cancelled_by_id == viewer.pk:
            return TrainingOutcome("stopped_as_asked", f"{run} stopped, as you asked.")
        return TrainingOutcome("stopped", f"{run} stopped: {version.failure_reason or 'Cancelled.'}")
    return None


def progress_report(version):
    progress = dict(version.progress or {})
    epochs = int(progress.get("epochs") or version.hyperparameters.get("epochs") or 0)
    epoch = int(progress.get("epoch") or 0)
    epochs_done = progress.get("epochs_done") or 0 < epochs <= epoch  # "done": also stopped early
    if version.is_trained:
        percent = 100
    elif version.status == ModelVersion.Status.TRAINING and epochs_done:
        percent = None  # the held-out figures are being measured, for a time no epoch tells
    else:
        percent = round(100 * epoch / epochs) if epochs else 0
    state = progress.get("state", "")
    if version.status == ModelVersion.Status.TRAINING:
        phase = {"queued": "waiting for the training worker", "running": "training"}.get(state, state)
        if state == "running" and progress.get("stage"):
            phase = progress["stage"]  # an adaptation's fold or final fine-tune; after the last epoch
        if state == "running" and epoch == 0:
            phase = "loading images and building the network"
    else:
        phase = version.get_status_display().lower()
    heard_phase = phase
    silent_for = silence_of(version)
    if silent_for is not None:
        # A dead worker's last epoch and time left stood unchanged until the reconciler failed it,
        # a minute or more, as if it still trained.
        lost_after = settings.WORKER_LOST_AFTER + settings.RECONCILE_EVERY
        phase = (f"no sign of life from the training process for {silent_for} s: if it has stopped, "
                 f"the version is marked failed within {lost_after} s of its last sign")
        # Without its seconds, which change at every poll: a screen reader would read it again each time.
        heard_phase = "no sign of life from the training process"
    counter = epoch_counter(epoch, epochs, progress, adapting=version.adapted_from_id is not None)

    def number(key):
        value = progress.get(key)
        return value if finite(value) else None

    return {
        "id": version.pk,
        "adapted_from": version.adapted_from_id,  # an adaptation says so while it runs
        "status": version.status,
        "status_display": version.get_status_display(),
        "phase": phase,
        "epoch": epoch,
        "epochs": epochs,
        "counter": counter,
        # What the page's status region says: words that change with the run's stage or epoch alone,
        # not with its times and figures, so that a screen reader speaks once a step.
        "announcement": f"{heard_phase}: {counter}",
        "percent": percent,
        "loss": number("loss"),
        "accuracy": number("accuracy"),
        "val_loss": number("val_loss"),
        "val_accuracy": number("val_accuracy"),
        "elapsed_seconds": number("elapsed_seconds"),
        "eta_seconds": None if silent_for is not None else number("eta_seconds"),
        "failure_reason": version.failure_reason,
    }


# Heartbeats missed before the progress report stops telling a time left: one late beat is a busy
# database or machine, three a process that may be gone.
SILENT_BEATS = 3


def silence_of(version):
    """Whole seconds since a running training's last heartbeat, where it has missed SILENT_BEATS of
    them; None otherwise (not training, not started, or beating)."""
    if version.status != ModelVersion.Status.TRAINING or version.heartbeat_at is None:
        return None
    if (version.progress or {}).get("state") != "running":
        return None
    silent = (timezone.now() - version.heartbeat_at).total_seconds()
    return int(silent) if silent > SILENT_BEATS * settings.HEARTBEAT_SECONDS else None


def shown_temperature_source(source):
    """Where a refit's temperature came from, as the page says it: a held-out run named by its
    folder by the folder's name alone. The full path is one on the machine that trained it, which
    means nothing here and tells every visitor about that machine."""
    where, bracket, rest = (source or "").partition(" (")
    if "/" not in where and "\\" not in where:
        return source or ""
    name = PurePosixPath(where.replace("\\", "/")).name
    return f"{name}{bracket}{rest}" if name else ""


def metric_notes(metrics):
    """The held-out metrics' side notes, each only where it was recorded."""
    notes = []
    if metrics.get("temperature"):
        notes.append(f"calibration temperature {metrics['temperature']:.3f}")
    if metrics.get("validation_groups"):
        notes.append(f"{metrics['validation_groups']} photograph groups held out for validation")
    return notes


def _percent(value):
    return None if value is None else round(100.0 * value, 1)


# When a difference between two versions' figures counts as more than noise, as the pages state it.
NOISE_RULE = (
    "A difference counts as beyond noise when its 95% interval leaves out zero (Newcombe's "
    "interval for a difference of two proportions, from each figure's Wilson interval). The two "
    "figures are treated as independent samples, which is cautious: both versions called the same "
    "cells."
)


@dataclass
class Share:
    """k of n cells called right, with the 95% Wilson range of the share in percent."""

    right: int
    n: int

    @classmethod
    def of(cls, figures, n=None):
        """The share of a metrics dict (its accuracy over its n, else over ``n``); None where
        either is missing."""
        figures = figures or {}
        accuracy, n = figures.get("accuracy"), figures.get("n") or n
        if not finite(accuracy) or not n:
            return None
        return cls(round(accuracy * n), int(n))

    @property
    def percent(self):
        return round(100 * self.right / self.n, 1)

    @property
    def range_95(self):
        return wilson_interval(self.right, self.n)


@dataclass
class Difference:
    """A version's share minus its parent's, in percentage points, with its 95% interval."""

    child: Share
    parent: Share

    @property
    def points(self):
        return round(100 * (self.child.right / self.child.n - self.parent.right / self.parent.n), 1)

    @property
    def range_95(self):
        """Newcombe's hybrid score interval (his method 10) of child minus parent, in points."""
        p1, p2 = 100 * self.child.right / self.child.n, 100 * self.parent.right / self.parent.n
        (l1, u1), (l2, u2) = self.child.range_95, self.parent.range_95
        d = p1 - p2
        return (round(d - math.hypot(p1 - l1, u2 - p2), 1), round(d + math.hypot(u1 - p1, p2 - l2), 1))

    @property
    def worse(self):
        """Fewer right, beyond noise (NOISE_RULE)."""
        return self.range_95[1] < 0

    @property
    def better(self):
        return self.range_95[0] > 0

    @property
    def verdict(self):
        if self.worse:
            return "worse, beyond noise"
        return "better, beyond noise" if self.better else "within noise"

    def words(self):
        low, high = self.range_95
        return f"{self.points:+.1f} points (95% interval {low:+.1f} to {high:+.1f})".replace("-", "−")


def unnamed_test_source(version):
    """The source a TEST table that names none ("TEST") measured: the one source a version records,
    else its first data folder. Not the first folder alone: an adaptation whose parent's first
    folder was gone measured the other (the own-data audit's "dup/TEST" for clean4's figure)."""
    sources = list(((version.metrics or {}).get("sources") or {}).keys())
    if len(sources) == 1:
        return sources[0]
    return Path(version.dataset_path.split(os.pathsep)[0]).name if version.dataset_path else ""


@dataclass
class SourceTestSplit:
    """One source's TEST split as a version's run measured it."""

    source: str  # the data folder's name; "" where the version records none
    table: dict  # the whole split's table (metric_tables)
    held_out: dict | None  # its figures on photographs never trained on (held_out_figures)

    @property
    def where(self):
        return f"{self.source}/TEST" if self.source else "its TEST photographs"

    @property
    def also_in_train(self):
        """Its photographs of cells also photographed in TRAIN, left out of ``held_out``."""
        held = (self.held_out or {}).get("n") or 0
        return max((self.table.get("n") or 0) - held, 0)

    @property
    def no_figure(self):
        """Why it has no held-out figure, in the words the commands print ("" where it has one)."""
        if self.held_out is not None:
            return ""
        return f"{self.where}: no held-out figure, {not_held_out_reason(self.also_in_train)}"


def source_test_splits(version):
    """SourceTestSplit of each TEST split a version was measured on, in the page's order, named as its
    page names them: the one place that says which of its TEST figures hold a held-out photograph."""
    unnamed = unnamed_test_source(version)
    splits = []
    for table in metric_tables(version.metrics or {}):
        where = table.get("where", "")
        if where.endswith("TEST") and table.get("accuracy") is not None:
            splits.append(SourceTestSplit(where.removesuffix("TEST").strip() or unnamed, table,
                                    held_out_figures(table)))
    return splits


@dataclass
class HeldOutRow:
    """One TEST source both an adapted version and its parent were measured on."""

    source: str
    child_percent: float
    parent_percent: float
    difference: Difference | None  # None where either figure has no n


def held_out_comparison(version, parent):
    """HeldOutRow for each TEST source measured on both the version and its parent, each on the
    photographs it never trained on (held_out_figures, as its figure in words), in the version's order."""
    if parent is None:
        return []

    def never_trained_on(of):
        return {test.source or "TEST": test.held_out for test in source_test_splits(of)
                if test.held_out is not None}

    theirs = never_trained_on(parent)
    rows = []
    for source, figures in never_trained_on(version).items():
        before = theirs.get(source)
        if before is None:
            continue
        child, was = Share.of(figures), Share.of(before)
        rows.append(HeldOutRow(f"{source}/TEST", _percent(figures["accuracy"]), _percent(before["accuracy"]),
                               Difference(child, was) if child and was else None))
    return rows


def parent_of(version):
    """The version an adapted version came from, without its stored network; None if none or gone."""
    if version.adapted_from_id is None:
        return None
    return model_versions().filter(pk=version.adapted_from_id).first()


def tuned_on_lab_cells(parent):
    """Why ``parent``'s figure on the lab's reviewed cells is no fair comparison: it had trained on
    them (it was adapted to this lab, or trained with its reviewed cells); "" where it had not."""
    if parent is None:
        return ""
    if parent.adapted_from_id is not None or (parent.metrics or {}).get("adaptation") is not None:
        return f"v{parent.pk} was itself adapted to this lab's reviewed cells"
    if parent.include_reviewed_cells:
        return f"v{parent.pk} was trained with this lab's reviewed cells"
    return ""


# A share of the lab's reviewed cells, of types the network has no class for, from which the page
# says so at its top.
LEFT_OUT_PROMINENT = 0.1


def adaptation_record(version, parent=None):
    """What the version page says of an adapted version: the version it came from, the lab's cells
    it was tuned on, its cross-validated figure on them beside its parent's (each with its 95%
    range, and whether they differ beyond noise), both versions' TEST figures, the lab's cells of
    types it cannot call, and the out-of-fold calls as a network-versus-reviewer table; None for a
    version that was not adapted."""
    record = (version.metrics or {}).get("adaptation")
    if version.adapted_from_id is None and not record:
        return None
    record = record or {}
    cv, before = record.get("cross_validated") or {}, record.get("before") or {}
    names = list(cv.get("class_names") or [])
    matrix = cv.get("confusion_matrix") or []  # rows: the reviewer's type, columns: the call
    rows = [
        (name, [(matrix[j][i], matrix[j][i] > 0 and i == j) for j in range(len(names))])
        for i, name in enumerate(names)
    ] if matrix else []
    cv_share, before_share = Share.of(cv, record.get("cells")), Share.of(before, record.get("cells"))
    left_out = record.get("left_out") or {}
    others = sum(left_out.values())
    reviewed = (record.get("cells") or 0) + others
    return {
        "from_id": version.adapted_from_id,
        "cells": record.get("cells"),
        "per_class": record.get("per_class") or {},
        "left_out": left_out,
        "left_out_share": round(100 * others / reviewed) if others else 0,
        "left_out_prominent": bool(others) and others / reviewed >= LEFT_OUT_PROMINENT,
        "reviewed": reviewed,
        "left_out_count": others,
        "folds": record.get("folds"),
        # Folds by photograph since the record counts them; earlier adaptations' folds were by cell.
        "photographs": record.get("photographs"),
        "before_percent": _percent(before.get("accuracy")),
        "cv": cv_share,
        "before": before_share,
        "lab_difference": Difference(cv_share, before_share) if cv_share and before_share else None,
        "parent_tuned": tuned_on_lab_cells(parent),
        "held_out": held_out_comparison(version, parent),
        "noise_rule": NOISE_RULE,
        "replay": record.get("replay") or {},
        "temperature_fitted_on": record.get("temperature_fitted_on", ""),
        # {"source/split": n}: TEST files the lab's reviewed cells came from, left out of its figures.
        "test_left_out": record.get("test_left_out") or {},
        "seconds": record.get("seconds"),
        "reviewer_types": names,
        "matrix_rows": rows,
    }


def adaptation_offer(active):
    """The "Adapt to this lab" card: the active version, and how many reviewed cells an adaptation
    of it would use and leave out (the site has their windows; the run checks the files)."""
    if active is None:
        return None
    epochs, folds = adaptation_plan()
    usable, left_out, photographs = adaptation_counts(active.task, folds)
    # Folds are made of the photographs the run will use: those holding a cell of the task's types.
    every_epoch = adaptation_epochs(photographs)
    # Measured on two cores: 10-15 minutes at the classifier's defaults (20 epochs, five folds and
    # the final fine-tune: 120 epochs), of which 1-2 are loading and each source's TEST, whatever
    # the epochs (a lab's audit: 161 s for 9 epochs, 76 of them after the last).
    low = max(1, round(1 + every_epoch * 9 / 120))
    high = max(low + 1, round(2 + every_epoch * 13 / 120))
    return {"version": active, "usable": usable, "left_out": left_out, "minimum": MIN_CELLS,
            "epochs": epochs, "cross_validated": every_epoch > epochs, "minutes": f"{low}-{high}"}


@dataclass
class VersionRow:
    """One line of the version list."""

    version: ModelVersion  # with its `cell_count`
    headline: dict | None  # the figure to show: see headline()
    in_words: list  # PlainFigure per source
    was_active: bool  # it served before
    review_agreement: Agreement | None
    roll_back: bool = False  # activating it goes back to an older version that served before
    warning: str = ""  # activation_warning

    @property
    def question(self):
        return activation_question(self.version, self.roll_back, self.warning)


def is_roll_back(version, was_active, active_pk):
    """Activating ``version`` goes back: it served before and is older than the one serving now.
    A version newer than the one serving (one rolled back from, say) is activated, not rolled
    back to."""
    return was_active and active_pk is not None and version.pk < active_pk


ACTIVATION_CONSEQUENCES = ("Photographs of new samples will be classified by it; results already made stay "
                           "as they are, and photographs added to a sample later are classified by the "
                           "version that classified its others.")


def activation_verb(version, roll_back):
    return f"Roll back to v{version.pk}" if roll_back else f"Activate v{version.pk}"


def activation_question(version, roll_back, warning):
    """The confirm text of the button that activates ``version``, its activation warning in it."""
    warned = f" Warning: {warning}" if warning else ""
    return f"{activation_verb(version, roll_back)}?{warned} {ACTIVATION_CONSEQUENCES}"


@dataclass
class ActivationConfirmation(ViewModel):
    """The page that asks before a warned-of version is activated by a form the browser's confirm
    did not ask for (scripts off, a bookmarked or scripted POST): the warning must be read once."""

    version: ModelVersion
    verb: str
    warning: str
    consequences: str
    back_to_detail: bool


def activation_confirmation(version, warning, back_to_detail):
    """The ActivationConfirmation of activating ``version``, of which the site warns ``warning``
    (activation_warning)."""
    roll_back = is_roll_back(version, activations_of(version).exists(), active_version_id())
    return ActivationConfirmation(version, activation_verb(version, roll_back), warning,
                                  ACTIVATION_CONSEQUENCES, back_to_detail)


@dataclass
class VersionList(ViewModel):
    versions: list  # VersionRow, newest first
    active: ModelVersion | None
    training: ModelVersion | None
    training_progress: dict | None
    activations: object  # the latest ModelActivation records
    adaptation: dict | None  # adaptation_offer of the active version
    reclassify_question: str = ""  # the confirm text of the re-classify button
    reclassify_groups_note: str = ""  # groups_only_note of the active version


def listed_versions():
    versions = list(model_versions_with_cell_counts())
    ever_active = ever_active_version_ids()
    agreement = review_agreement_by_version()
    by_pk = {version.pk: version for version in versions}
    active = next((v for v in versions if v.is_active), None)
    rows = []
    for version in versions:
        was_active = version.pk in ever_active
        warning = ""
        if version.status == ModelVersion.Status.READY:
            warning = activation_warning(version, by_pk.get(version.adapted_from_id))
        roll_back = is_roll_back(version, was_active, active and active.pk)
        rows.append(VersionRow(version, headline(version.metrics), plain_figures(version), was_active,
                               agreement.get(version.pk), roll_back, warning))
    training = next((v for v in versions if v.status == ModelVersion.Status.TRAINING), None)
    return VersionList(
        versions=rows,
        active=active,
        adaptation=adaptation_offer(active),
        training=training,
        training_progress=progress_report(training) if training else None,
        activations=recent_activations(),
        reclassify_question=reclassify_question(active, by_pk),
        reclassify_groups_note=groups_only_note(active),
    )


def groups_only_note(version):
    """What re-classifying with a version naming only the binary groups does to reviewed cells, said
    beside the re-classify form and after it (its question says it too, but only where scripts run);
    "" for a version that names types. Nothing is lost: each label keeps its link to the review it
    came from, which a later typed version follows back to the reviewer's type."""
    if version is None or not version.class_names or not set(version.class_names) <= set(BINARY_CLASSES):
        return ""
    return (f"v{version.pk} names only the two groups, so a cell a reviewer gave a type is held as its "
            "group (a lymphocyte as MONONUCLEAR) and a re-classified sample's formula holds the two "
            "groups alone; re-classifying it later with a version that names types gives back the "
            "types the reviewers gave.")


def reclassify_question(active, by_pk):
    """Re-classifying runs the chosen samples, every unsigned one at a click, with the active version:
    asked first, with what would be said before activating that version."""
    if active is None:
        return ""
    warning = activation_warning(active, by_pk.get(active.adapted_from_id))
    warned = f" Warning: {warning}" if warning else ""
    labels = "a reviewer's label stays where it finds the same cell"
    if active.class_names and set(active.class_names) <= set(BINARY_CLASSES):
        labels += (", a type as its group (a lymphocyte as MONONUCLEAR: the formula then holds the two "
                   "groups alone; re-classifying later with a version that names types gives back the types "
                   "the reviewers gave)")
    return (f"Classify the chosen samples again with v{active.pk}?{warned} Their cells are replaced by its "
            f"calls; {labels}, and signed samples are left as they are.")


# A held-out accuracy within this of guessing: the version learnt nothing a lab can use.
CHANCE_MARGIN = 0.1


def chance_level_warning(version):
    """A sentence where one of the version's held-out figures (in the page's order: each TEST, then
    validation) is no better than guessing among the types those cells hold, as a run on too few
    images ends; "" otherwise. It names the figure: the page's headline may be another one. Both the
    share of cells right and the mean of each type's share (balanced accuracy) are read: a network that
    calls every cell one type gets as many right as that type's share of the cells, and only the mean
    says so."""
    types = len(version.class_names or [])
    if types < 2:
        return ""
    for table in metric_tables(version.metrics):
        where, shown = table.get("where"), held_out_table(table)
        if where is None or shown is None or shown.get("accuracy") is None:
            continue
        accuracy, balanced = shown["accuracy"], shown.get("balanced_accuracy")
        held = sum(1 for row in shown.get("per_class") or () if row.get("support"))
        among = (f"the {held} types they hold" if 2 <= held < types else f"its {types} types")
        chance = 1 / (held if 2 <= held < types else types)
        cells = ("its validation cells" if where.endswith("validation")
                 else "its held-out cells" if where == "Held-out" else f"the {where} cells")
        without = without_copies(copies_left_out(table))
        right = f"right ({without})" if without else "right"
        if accuracy <= chance + CHANCE_MARGIN:
            figure = f"called {round(100 * accuracy)}% of {cells} {right}"
        elif balanced is not None and balanced <= chance + CHANCE_MARGIN:
            figure = (f"called {round(100 * accuracy)}% of {cells} {right} but, type by type, "
                      f"{round(100 * balanced)}% on average")
        else:
            continue
        return (f"v{version.pk} {figure}, no better than guessing among {among} "
                f"({round(100 * chance)}%): it would serve calls a lab cannot use.")
    return ""


def unmeasured_warning(version):
    """A sentence where a trained version holds no figure on cells it did not learn from (its data
    had no TEST folder, or one of photographs of cells also photographed in TRAIN alone, and a refit
    keeps no validation split): nothing says how often it is right, and the page has no figure to
    warn by; "" otherwise."""
    if not version.is_trained or headline(version.metrics) is not None:
        return ""
    if ((version.metrics or {}).get("adaptation") or {}).get("cross_validated") is not None:
        return ""  # measured on the lab's reviewed cells it left out, fold by fold
    copied = [f"{test.where}: {not_held_out_reason(test.also_in_train)}"
              for test in source_test_splits(version)]
    why = (f"{'; '.join(copied)}, and it kept no validation split" if copied
           else "its data folders hold no TEST folder, and it kept no validation split")
    return (f"v{version.pk} was measured on no cells it did not learn from ({why}): nothing says how "
            "often its calls are right.")


_NO_PARENT = object()


def worse_than_parent_warning(version, parent):
    """A sentence where an adapted version called fewer of the lab's reviewed cells right, cross-
    validated, than ``parent``, the version it was adapted from, beyond noise (NOISE_RULE); ""
    otherwise, and "" where that version had itself trained on those cells (its figure on them is
    inflated)."""
    record = (version.metrics or {}).get("adaptation") or {}
    adapted = Share.of(record.get("cross_validated"), record.get("cells"))
    before = Share.of(record.get("before"), record.get("cells"))
    if adapted is None or before is None or tuned_on_lab_cells(parent):
        return ""
    difference = Difference(adapted, before)
    if not difference.worse:
        return ""
    return (f"Cross-validated on this lab's {adapted.n} reviewed cells, v{version.pk} called "
            f"{adapted.percent:.1f}% right, fewer than v{version.adapted_from_id or '?'} did "
            f"({before.percent:.1f}%): {difference.words()}, beyond noise. It would serve this lab "
            "worse calls than the version it was adapted from.")


def held_out_drop_warning(version, parent):
    """A sentence where an adapted version called fewer TEST photographs right than ``parent``, the
    version it was adapted from, on a source both were measured on, beyond noise; "" otherwise."""
    if version.adapted_from_id is None:
        return ""
    drops = [row for row in held_out_comparison(version, parent) if row.difference and row.difference.worse]
    if not drops:
        return ""
    where = "; ".join(f"{row.source} {row.child_percent:.1f}% against {row.parent_percent:.1f}% "
                      f"({row.difference.words()})" for row in drops)
    return (f"On held-out photographs neither version trained on, v{version.pk} called fewer right than "
            f"v{parent.pk}, the version it was adapted from, beyond noise: {where}. It may serve "
            "photographs like these worse.")


def unreplayed_warning(version):
    """A sentence where an adaptation replayed none of its parent's training images (its data folders
    were not found on this server): only the lab's reviewed cells tuned it, and it may have
    forgotten the types those cells do not show. "" otherwise."""
    replay = ((version.metrics or {}).get("adaptation") or {}).get("replay") or {}
    if replay.get("cells") != 0:
        return ""
    missing = replay.get("missing") or []
    where = f" ({', '.join(missing)} not found on this server)" if missing else ""
    return (f"v{version.pk} was adapted without replaying any of its parent's training images{where}: "
            "only this lab's reviewed cells tuned it, and it may have forgotten the types they do not "
            "show. Set LEUKOSCOPE_TRAINING_DATA to those folders and adapt again.")


def activation_warning(version, parent=_NO_PARENT):
    """What to say before, and on, activating a version that would serve calls a lab should not
    want ("" where nothing). ``parent``: the version it was adapted from, where the caller has it."""
    if parent is _NO_PARENT:
        parent = parent_of(version)
    return " ".join(filter(None, (chance_level_warning(version), unmeasured_warning(version),
                                  worse_than_parent_warning(version, parent),
                                  held_out_drop_warning(version, parent), unreplayed_warning(version))))


@dataclass
class VersionPage(ViewModel):
    version: ModelVersion
    progress: dict
    charts: list
    metric_tables: list
    best_epoch: int | None
    epoch_choice: str | None
    refit: dict | None  # a refit's record, its temperature's source as shown_temperature_source says
    metric_notes: list
    skipped_in_training: dict  # TRAIN files left out as unusable: {"count", "named"} (skipped_named)
    sources: list  # SourceRecord of each data folder, where recorded
    hyperparameters: dict
    activations: object
    was_active: bool
    review: ReviewAgreement
    serving_runtime: str
    # How its TEST figures were computed, in words, where as served (metrics["served_by"]); ""
    # for a version whose run measured its float network's first look alone.
    measured_as_served: str
    adaptation: dict | None  # adaptation_record
    in_words: list  # PlainFigure per source
    valid_for: list  # (source, what it is)
    trust: dict  # trust_record
    activation_warning: str  # at chance level, or worse than its parent, beyond noise
    roll_back: bool  # activating it goes back to an older version (is_roll_back)
    activation_question: str  # the activate button's confirm text
    # An unfinished adaptation's recorded epochs run across its folds' fine-tunes: not drawn.
    curves_withheld: bool
    deletable: bool  # deleting it loses no result or record (selectors.version_deletion_refusal)


def version_page(version):
    metrics = version.metrics or {}
    refit = metrics.get("refit")
    if refit:
        refit = dict(refit, temperature_source=shown_temperature_source(refit.get("temperature_source")))
    hyperparameters = {
        key: shown_temperature_source(value) if key == "temperature_source" else value
        for key, value in (version.hyperparameters or {}).items()
    }
    activations = activations_of(version)
    parent = parent_of(version)
    trust = trust_record(metrics)
    fitted = trust["review"]["fitted"]
    if fitted and (fitted.get("carried_from") or version.adapted_from_id is not None):
        trust["review"]["adapted_note"] = adapted_review_note(version, parent, fitted, metrics)
    warning = activation_warning(version, parent)
    was_active = activations.exists()
    roll_back = is_roll_back(version, was_active, active_version_id())
    curves_withheld = version.adapted_from_id is not None and not version.is_trained and not version.history
    return VersionPage(
        version=version,
        progress=progress_report(version),
        charts=[] if curves_withheld else learning_curves(version),
        metric_tables=metric_tables(version.metrics),
        best_epoch=metrics.get("best_epoch"),
        epoch_choice=metrics.get("epoch_choice"),
        refit=refit,
        metric_notes=metric_notes(metrics),
        skipped_in_training={"count": metrics.get("skipped_files") or 0,
                             "named": metrics.get("skipped_named") or []},
        sources=source_records(metrics, holds_no_validation_split(version)),
        hyperparameters=hyperparameters,
        activations=activations,
        was_active=was_active,
        review=review_agreement(version),
        serving_runtime=RUNTIME_DESCRIPTIONS[settings.INFERENCE_RUNTIME],
        measured_as_served=RUNTIME_DESCRIPTIONS.get(metrics.get("served_by"), ""),
        adaptation=adaptation_record(version, parent),
        in_words=plain_figures(version),
        valid_for=valid_for(version),
        trust=trust,
        activation_warning=warning,
        roll_back=roll_back,
        activation_question=activation_question(version, roll_back, warning),
        curves_withheld=curves_withheld,
        deletable=version_deletion_refusal(version) is None,
    )
