"""The model pages' figures: held-out metric tables, training progress (also served as JSON to the
page's poll), the rows of the version list and one version's page."""

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.urls import reverse

from classifier import ood
from classifier.runtimes import RUNTIME_DESCRIPTIONS
from classifier.training.adaptation import MIN_CELLS, usable_count
from webapp.models import ModelVersion
from webapp.presenters import ViewModel
from webapp.presenters.charts import finite, learning_curves
from webapp.review_flag import review_threshold_of
from webapp.selectors import (
    Agreement,
    ReviewAgreement,
    activations_of,
    ever_active_version_ids,
    model_versions_with_cell_counts,
    recent_activations,
    review_agreement,
    review_agreement_by_version,
    reviewed_cell_windows,
)
from webapp.wording import count_of


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
        tables.append(dict(_metric_table(shown, value, threshold), where=f"{source} {key}".strip()))
        for part, words in (
            ("four_classes", "the four types both sources share"),
            ("binary", "binary grouping"),
            ("without_same_cell_in_train", "without cells also photographed in TRAIN"),
        ):
            if _is_metrics(value.get(part)):
                tables.append(_metric_table(f"{title}: {words}", value[part], threshold))
    return tables


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
        return [dict(_metric_table("Held-out", metrics, threshold), where="Held-out")]
    sources = metrics.get("sources") or {}
    if len(sources) < 2:  # one folder's figures are at the top level, as they always were
        return _split_tables(metrics, threshold=threshold)
    tables = []
    for name, figures in sources_in_given_order(metrics):
        tables.extend(_split_tables({k: v for k, v in figures.items() if k != "validation"}, name, threshold))
    return tables + _split_tables({"validation": metrics.get("validation")}, threshold=threshold)


def headline(metrics):
    """(accuracy, where) of the figure to show in a list: TEST where there was one (the first data
    folder's), else validation."""
    tables = metric_tables(metrics)
    if not tables:
        return None
    return {"accuracy": tables[0]["accuracy"], "where": tables[0]["where"], "table": tables[0]}


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
    percent: float
    n: int | None

    @property
    def sentence(self):
        return f"on photographs like {self.where}: {self.percent:.0f}% of cells right"


def plain_figures(version):
    """Each source's TEST figure in words, in the order the sources were given; a version with no
    TEST figure is described by its validation split."""
    metrics = version.metrics or {}
    folder = Path(version.dataset_path.split(os.pathsep)[0]).name if version.dataset_path else ""
    figures = []
    for table in metric_tables(metrics):
        where = table.get("where", "")
        if not where.endswith("TEST") or table.get("accuracy") is None:
            continue
        source = where.removesuffix("TEST").strip() or folder
        figures.append(PlainFigure(f"{source}/TEST" if source else "its TEST photographs",
                                   round(100 * table["accuracy"], 1), table.get("n")))
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


@dataclass
class SourceRecord:
    """One data folder a version learnt from, as its page lists it."""

    name: str
    path: str
    train_counts: dict
    test_counts: dict  # images per class in its TEST folder
    validation_split: str
    fingerprint: str


def source_records(metrics):
    """The data folders a version learnt from (none recorded before several could be given)."""
    return [
        SourceRecord(
            name=name,
            path=figures.get("path", ""),
            train_counts=figures.get("train_counts", {}),
            test_counts=(figures.get("test_counts") or {}).get("TEST", {}),
            validation_split=figures.get("validation_split", ""),
            fingerprint=figures.get("fingerprint", ""),
        )
        for name, figures in sources_in_given_order(metrics)
    ]


def progress_report(version):
    progress = dict(version.progress or {})
    epochs = int(progress.get("epochs") or version.hyperparameters.get("epochs") or 0)
    epoch = int(progress.get("epoch") or 0)
    if version.is_trained:
        percent = 100
    else:
        percent = round(100 * epoch / epochs) if epochs else 0
    state = progress.get("state", "")
    if version.status == ModelVersion.Status.TRAINING:
        phase = {"queued": "waiting for the training worker", "running": "training"}.get(state, state)
        if state == "running" and progress.get("stage"):
            phase = progress["stage"]  # an adaptation's fold or final fine-tune
        if state == "running" and epoch == 0:
            phase = "loading images and building the network"
    else:
        phase = version.get_status_display().lower()

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
        "percent": percent,
        "loss": number("loss"),
        "accuracy": number("accuracy"),
        "val_loss": number("val_loss"),
        "val_accuracy": number("val_accuracy"),
        "elapsed_seconds": number("elapsed_seconds"),
        "eta_seconds": number("eta_seconds"),
        "failure_reason": version.failure_reason,
        "cancel_requested": version.cancel_requested,
        "detail_url": reverse("models:detail", args=[version.pk]),
    }


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
    if metrics.get("skipped_files"):
        notes.append(f"{count_of(metrics['skipped_files'], 'unreadable file')} skipped")
    return notes


def _percent(value):
    return None if value is None else round(100.0 * value, 1)


def adaptation_record(version):
    """What the version page says of an adapted version: the version it came from, the lab's cells
    it was tuned on, its cross-validated figure on them beside its parent's, and the out-of-fold
    calls as a network-versus-reviewer table; None for a version that was not adapted."""
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
    return {
        "from_id": version.adapted_from_id,
        "cells": record.get("cells"),
        "per_class": record.get("per_class") or {},
        "left_out": record.get("left_out") or {},
        "folds": record.get("folds"),
        "cv_percent": _percent(cv.get("accuracy")),
        "before_percent": _percent(before.get("accuracy")),
        "replay": record.get("replay") or {},
        "temperature_fitted_on": record.get("temperature_fitted_on", ""),
        "seconds": record.get("seconds"),
        "reviewer_types": names,
        "matrix_rows": rows,
    }


def adaptation_offer(active):
    """The "Adapt to this lab" card: the active version, and how many reviewed cells an adaptation
    of it would use and leave out (the site has their windows; the run checks the files)."""
    if active is None:
        return None
    types = [corrected for _, corrected in reviewed_cell_windows()]
    usable = usable_count(types, active.task)
    return {"version": active, "usable": usable, "left_out": len(types) - usable, "minimum": MIN_CELLS}


@dataclass
class VersionRow:
    """One line of the version list."""

    version: ModelVersion  # with its `cell_count`
    headline: dict | None  # the figure to show: see headline()
    in_words: list  # PlainFigure per source
    was_active: bool  # activating it again is a roll-back
    review_agreement: Agreement | None


@dataclass
class VersionList(ViewModel):
    versions: list  # VersionRow, newest first
    active: ModelVersion | None
    training: ModelVersion | None
    training_progress: dict | None
    activations: object  # the latest ModelActivation records
    adaptation: dict | None  # adaptation_offer of the active version


def listed_versions():
    versions = list(model_versions_with_cell_counts())
    ever_active = ever_active_version_ids()
    agreement = review_agreement_by_version()
    rows = [
        VersionRow(version, headline(version.metrics), plain_figures(version), version.pk in ever_active,
                   agreement.get(version.pk))
        for version in versions
    ]
    training = next((v for v in versions if v.status == ModelVersion.Status.TRAINING), None)
    active = next((v for v in versions if v.is_active), None)
    return VersionList(
        versions=rows,
        active=active,
        adaptation=adaptation_offer(active),
        training=training,
        training_progress=progress_report(training) if training else None,
        activations=recent_activations(),
    )


# A held-out accuracy within this of guessing: the version learnt nothing a lab can use.
CHANCE_MARGIN = 0.1


def chance_level_warning(version):
    """A sentence where the version's held-out accuracy (validation, else its first TEST) is no
    better than guessing among its types, as a run on too few images ends; "" otherwise."""
    metrics = version.metrics or {}
    held_out = metrics.get("validation") or metrics.get("TEST") or {}
    accuracy = held_out.get("accuracy")
    types = len(version.class_names or [])
    if accuracy is None or types < 2 or accuracy > 1 / types + CHANCE_MARGIN:
        return ""
    return (f"The held-out accuracy of v{version.pk}, {round(100 * accuracy)}%, is no better than "
            f"guessing among its {types} types ({round(100 / types)}%): it would serve calls a lab "
            "cannot use.")


def worse_than_parent_warning(version):
    """A sentence where an adapted version called fewer of the lab's reviewed cells right, cross-
    validated, than the version it was adapted from; "" otherwise."""
    record = (version.metrics or {}).get("adaptation") or {}
    adapted = (record.get("cross_validated") or {}).get("accuracy")
    before = (record.get("before") or {}).get("accuracy")
    if adapted is None or before is None or adapted >= before:
        return ""
    cells = f"{record['cells']} " if record.get("cells") else ""
    return (f"Cross-validated on this lab's {cells}reviewed cells, v{version.pk} called {100 * adapted:.1f}% "
            f"right, fewer than v{version.adapted_from_id or '?'} did ({100 * before:.1f}%): it would serve "
            "this lab worse calls than the version it was adapted from.")


def activation_warning(version):
    """What to say before, and on, activating a version that would serve calls a lab should not
    want ("" where nothing)."""
    return " ".join(filter(None, (chance_level_warning(version), worse_than_parent_warning(version))))


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
    activation_warning: str  # at chance level, or worse than its parent on the lab's cells


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
    return VersionPage(
        version=version,
        progress=progress_report(version),
        charts=learning_curves(version),
        metric_tables=metric_tables(version.metrics),
        best_epoch=metrics.get("best_epoch"),
        epoch_choice=metrics.get("epoch_choice"),
        refit=refit,
        metric_notes=metric_notes(metrics),
        sources=source_records(metrics),
        hyperparameters=hyperparameters,
        activations=activations,
        was_active=activations.exists(),
        review=review_agreement(version),
        serving_runtime=RUNTIME_DESCRIPTIONS[settings.INFERENCE_RUNTIME],
        measured_as_served=RUNTIME_DESCRIPTIONS.get(metrics.get("served_by"), ""),
        adaptation=adaptation_record(version),
        in_words=plain_figures(version),
        valid_for=valid_for(version),
        trust=trust_record(metrics),
        activation_warning=activation_warning(version),
    )
