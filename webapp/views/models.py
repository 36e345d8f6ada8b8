"""Staff-only pages for model versions: the list with metrics and the activation log, one page per
version with its learning curves, retraining with live progress, activation and re-classification.

Learning curves are SVG drawn here on the server: no chart library, nothing from a CDN.
"""

import math
from functools import wraps
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from classifier.runtimes import RUNTIME_DESCRIPTIONS
from webapp.forms_models import ReclassifyForm, RetrainForm
from webapp.models import ModelActivation, ModelVersion
from webapp.selectors import review_agreement, review_agreement_by_version
from webapp.services.model_registry import NoActiveModel
from webapp.services.model_versions import ModelVersionError, activate_version
from webapp.services.training import (
    TrainingRefused,
    cancel_training,
    reclassify,
    start_training,
)


def staff_required(view):
    """Signed-in staff only; any other signed-in user gets 403 rather than a login loop."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("Model versions and retraining are for staff only.")
        return view(request, *args, **kwargs)

    return wrapped


def _versions():
    # The stored networks are megabytes each: never load them to draw a page.
    return ModelVersion.objects.defer("model_bytes").select_related("created_by")


# --- reading metrics and progress for the templates -------------------------------------------


def _metric_table(title, metrics):
    """One metrics dict (classifier.metrics.classification_metrics) as rows a template can loop over."""
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
            {**row, "site": math.isclose(row["threshold"], settings.REVIEW_CONFIDENCE_THRESHOLD)}
            for row in metrics.get("review_flagging") or []
        ],
    }


def _is_metrics(value):
    return isinstance(value, dict) and "confusion_matrix" in value and "per_class" in value


def metric_tables(metrics):
    """Every set of held-out figures in a version's metrics, the official TEST split first."""
    metrics = metrics or {}
    if _is_metrics(metrics):  # a bundled model may store one flat table
        return [_metric_table("Held-out", metrics)]
    tables = []
    for key, title in (
        ("TEST", "TEST split (held out)"),
        ("TEST_SIMPLE", "TEST_SIMPLE (originals, no augmentation)"),
        ("validation", "Validation split (held-out groups of TRAIN)"),
    ):
        value = metrics.get(key)
        if not _is_metrics(value):
            continue
        tables.append(_metric_table(title, value))
        if _is_metrics(value.get("binary")):
            tables.append(_metric_table(f"{title}: binary grouping", value["binary"]))
        without = value.get("without_same_cell_in_train")
        if _is_metrics(without):
            tables.append(_metric_table(f"{title}: without cells also photographed in TRAIN", without))
    return tables


def headline(metrics):
    """(accuracy, where) of the figure to show in a list: TEST where there was one, else validation."""
    tables = metric_tables(metrics)
    if not tables:
        return None
    return {"accuracy": tables[0]["accuracy"], "where": tables[0]["title"].split(" ")[0], "table": tables[0]}


def progress_report(version):
    progress = dict(version.progress or {})
    epochs = int(progress.get("epochs") or version.hyperparameters.get("epochs") or 0)
    epoch = int(progress.get("epoch") or 0)
    if version.status == ModelVersion.Status.READY or version.status == ModelVersion.Status.ACTIVE:
        percent = 100
    else:
        percent = round(100 * epoch / epochs) if epochs else 0
    state = progress.get("state", "")
    if version.status == ModelVersion.Status.TRAINING:
        phase = {"queued": "waiting for the training worker", "running": "training"}.get(state, state)
        if state == "running" and epoch == 0:
            phase = "loading images and building the network"
    else:
        phase = version.get_status_display().lower()

    def number(key):
        value = progress.get(key)
        return value if isinstance(value, int | float) and math.isfinite(value) else None

    return {
        "id": version.pk,
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


# --- learning curves as inline SVG --------------------------------------------------------------

CHART = {"width": 460, "height": 250, "left": 48, "right": 12, "top": 14, "bottom": 36}


def _finite(value):
    return isinstance(value, int | float) and math.isfinite(value)


def _nice_step(span, target_ticks=5):
    raw = span / max(1, target_ticks)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def learning_curve_chart(history, metric, title):
    """Training and validation `metric` per epoch as polylines in a fixed-size SVG viewBox."""
    rows = [row for row in history or [] if _finite(row.get("epoch"))]
    series_keys = [(metric, "training", "train"), (f"val_{metric}", "validation", "val")]
    values = [row[key] for row in rows for key, _, _ in series_keys if _finite(row.get(key))]
    if not values:
        return None
    c = CHART
    plot_w = c["width"] - c["left"] - c["right"]
    plot_h = c["height"] - c["top"] - c["bottom"]
    if metric == "accuracy":
        low, high = min(0.5, math.floor(min(values) * 10) / 10), 1.0
    else:
        low, high = 0.0, max(values) * 1.05 or 1.0
    step = _nice_step(high - low)
    high = max(high, low + step)
    last_epoch = max(row["epoch"] for row in rows)

    def x_of(epoch):
        if last_epoch <= 1:
            return c["left"] + plot_w / 2
        return c["left"] + (epoch - 1) / (last_epoch - 1) * plot_w

    def y_of(value):
        return c["top"] + (1 - (value - low) / (high - low)) * plot_h

    series = []
    for key, label, css in series_keys:
        points = [(x_of(row["epoch"]), y_of(row[key])) for row in rows if _finite(row.get(key))]
        if points:
            series.append(
                {
                    "label": label,
                    "css": css,
                    "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
                    "dots": [{"x": round(x, 1), "y": round(y, 1)} for x, y in points],
                    "last": rows[-1].get(key),
                }
            )
    y_ticks = []
    tick = math.ceil(low / step - 1e-9) * step  # ticks on round numbers, not on the data's minimum
    while tick <= high + 1e-9:
        y_ticks.append({"y": round(y_of(tick), 1), "label": f"{tick:.2f}".rstrip("0").rstrip(".") or "0"})
        tick += step
    x_every = max(1, math.ceil(last_epoch / 10))
    x_ticks = [
        {"x": round(x_of(epoch), 1), "label": epoch}
        for epoch in range(1, int(last_epoch) + 1)
        if epoch == 1 or epoch % x_every == 0
    ]
    return {
        "title": title,
        "metric": metric,
        "width": c["width"],
        "height": c["height"],
        "left": c["left"],
        "right": c["width"] - c["right"],
        "top": c["top"],
        "bottom": c["height"] - c["bottom"],
        "x_label_y": c["height"] - 4,
        "series": series,
        "y_ticks": y_ticks,
        "x_ticks": x_ticks,
    }


def learning_curves(version):
    history = version.history or (version.progress or {}).get("history") or []
    charts = [learning_curve_chart(history, "loss", "Loss"),
              learning_curve_chart(history, "accuracy", "Accuracy")]
    return [chart for chart in charts if chart]


# --- pages --------------------------------------------------------------------------------------


def _render_list(request, retrain_form=None, reclassify_form=None, status=200):
    versions = list(_versions().annotate(cell_count=Count("cells")).order_by("-pk"))
    ever_active = set(ModelActivation.objects.values_list("version_id", flat=True))
    agreement = review_agreement_by_version()
    for version in versions:
        version.headline = headline(version.metrics)
        version.was_active = version.pk in ever_active
        version.review_agreement = agreement.get(version.pk)
    training = next((v for v in versions if v.status == ModelVersion.Status.TRAINING), None)
    context = {
        "versions": versions,
        "active": next((v for v in versions if v.is_active), None),
        "training": training,
        "training_progress": progress_report(training) if training else None,
        # Only ids of the versions are shown: joining them would load every stored network.
        "activations": ModelActivation.objects.select_related("activated_by")[:50],
        "retrain_form": retrain_form or RetrainForm(),
        "reclassify_form": reclassify_form or ReclassifyForm(),
    }
    return render(request, "models/list.html", context, status=status)


@staff_required
@require_GET
def version_list(request):
    return _render_list(request)


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
        notes.append(f"{metrics['skipped_files']} unreadable file(s) skipped")
    return notes


@staff_required
@require_GET
def version_detail(request, pk):
    version = get_object_or_404(_versions().annotate(cell_count=Count("cells")), pk=pk)
    metrics = version.metrics or {}
    refit = metrics.get("refit")
    if refit:
        refit = dict(refit, temperature_source=shown_temperature_source(refit.get("temperature_source")))
    hyperparameters = {
        key: shown_temperature_source(value) if key == "temperature_source" else value
        for key, value in (version.hyperparameters or {}).items()
    }
    context = {
        "version": version,
        "progress": progress_report(version),
        "charts": learning_curves(version),
        "metric_tables": metric_tables(version.metrics),
        "best_epoch": metrics.get("best_epoch"),
        "epoch_choice": metrics.get("epoch_choice"),
        "refit": refit,
        "metric_notes": metric_notes(metrics),
        "hyperparameters": hyperparameters,
        "activations": version.activations.select_related("activated_by"),
        "was_active": version.activations.exists(),
        "review": review_agreement(version),
        "serving_runtime": RUNTIME_DESCRIPTIONS[settings.INFERENCE_RUNTIME],
    }
    return render(request, "models/detail.html", context)


@staff_required
@require_GET
@never_cache
def version_progress(request, pk):
    version = get_object_or_404(_versions(), pk=pk)
    return JsonResponse(progress_report(version))


@staff_required
@require_POST
def train(request):
    form = RetrainForm(request.POST)
    if not form.is_valid():
        return _render_list(request, retrain_form=form, status=400)
    data = form.cleaned_data
    try:
        version = start_training(
            request.user,
            data["architecture"],
            data["epochs"],
            data["include_reviewed"],
            task=data["task"],
            data_dir=data["data_dir"],
            refit_from=data["refit_from"],
        )
    except TrainingRefused as exc:
        messages.error(request, str(exc))
        return redirect("models:list")
    messages.success(request, f"Training of v{version.pk} is queued on the training worker.")
    return redirect("models:detail", pk=version.pk)


@staff_required
@require_POST
def cancel(request, pk):
    version = get_object_or_404(_versions(), pk=pk)
    try:
        cancel_training(version, request.user)
    except TrainingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Training of v{version.pk} is cancelled.")
    return redirect("models:detail", pk=version.pk)


@staff_required
@require_POST
def activate(request, pk):
    version = get_object_or_404(_versions(), pk=pk)
    try:
        activate_version(version, user=request.user)
    except ModelVersionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"v{version.pk} is now the active model: new images are classified with it."
        )
    if request.POST.get("next") == "detail":
        return redirect("models:detail", pk=pk)
    return redirect("models:list")


@staff_required
@require_POST
def reclassify_samples(request):
    form = ReclassifyForm(request.POST)
    if not form.is_valid():
        return _render_list(request, reclassify_form=form, status=400)
    try:
        version, count = reclassify(form.cleaned_data["samples"], request.user)
    except NoActiveModel as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{count} image(s) queued for re-classification with v{version.pk}; "
                                  "earlier results stay in the history.")
    return redirect("models:list")
