"""Staff-only model pages and the training service, without TensorFlow: train_classifier is
replaced by fakes here; tests/e2e/test_retraining.py trains for real through a worker."""

import errno
import html
import os
import re
import tempfile
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import OperationalError, connection
from django.urls import URLPattern, reverse
from django.utils import timezone

from classifier.errors import TrainingCancelled, TrainingDataError
from tests.synthetic_cells import write_cell_folder
from tests.webapp.concurrent_requests import post_while_held
from tests.webapp.lab_factories import make_sample, with_role
from webapp import urls_models
from webapp.models import Cell, ModelActivation, ModelVersion, Sample, SmearImage
from webapp.presenters.charts import learning_curve_chart
from webapp.presenters.models import metric_tables, progress_report
from webapp.selectors import review_agreement
from webapp.services import training
from webapp.services.model_versions import ModelVersionError, activate_version, delete_unused_version
from webapp.services.review import review_cell

PASSWORD = "a-long-passphrase-1"

FOUR = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def four_class_metrics(accuracy=0.9):
    per_class = {name: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10} for name in FOUR}
    matrix = [[10 if i == j else 0 for j in range(4)] for i in range(4)]
    table = {
        "n": 40, "class_names": FOUR, "accuracy": accuracy, "balanced_accuracy": accuracy,
        "per_class": per_class, "confusion_matrix": matrix, "ece": 0.03, "log_loss": 0.3,
    }
    return {"best_epoch": 2, "temperature": 1.3, "validation": dict(table), "TEST": dict(table)}


HISTORY = [
    {"epoch": 1, "loss": 1.2, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.55, "seconds": 3},
    {"epoch": 2, "loss": 0.8, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.66, "seconds": 3},
    {"epoch": 3, "loss": 0.5, "accuracy": 0.85, "val_loss": 0.7, "val_accuracy": 0.8, "seconds": 3},
]


def make_version(status=ModelVersion.Status.READY, **fields):
    values = dict(
        architecture="paper", task="4class", status=status, class_names=FOUR,
        input_spec={"height": 120, "width": 160, "mode": "field"},
        hyperparameters={"epochs": 3, "batch_size": 64}, seed=7, dataset_path="/data/cells",
        class_counts={name: 100 for name in FOUR}, dataset_fingerprint="ab" * 32,
        history=HISTORY, metrics=four_class_metrics(), training_seconds=42.0,
        model_bytes=b"not-a-real-network", model_sha256="cd" * 32, size_bytes=18,
    )
    values.update(fields)
    return ModelVersion.objects.create(**values)


@pytest.fixture
def no_enqueue(sent_tasks):
    """Record what would go to the broker instead of sending it."""
    return sent_tasks


def _example_path(pattern):
    return "/models/" + str(pattern.pattern).replace("<int:pk>", "1")


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["technologist", "staff technologist", "admin without staff status"])
def test_only_the_admin_role_with_staff_status_reaches_any_models_url(client, django_user_model, who):
    version = make_version(status=ModelVersion.Status.READY)
    user = django_user_model.objects.create_user("someone", password=PASSWORD,
                                                 is_staff=who != "admin without staff status")
    with_role(user, "admin" if who.startswith("admin") else "technologist")
    client.force_login(user)
    patterns = [p for p in urls_models.urlpatterns if isinstance(p, URLPattern)]
    assert len(patterns) >= 6
    for pattern in patterns:
        path = _example_path(pattern).replace("/1/", f"/{version.pk}/")
        assert client.get(path).status_code == 403, path
        assert client.post(path, {"epochs": 1, "all_samples": "on"}).status_code == 403, path
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).exists()
    assert ModelVersion.objects.get(pk=version.pk).status == ModelVersion.Status.READY  # not activated
    assert "Models" not in client.get(reverse("home")).content.decode()


@pytest.mark.django_db
def test_models_page_lists_versions_with_data_metrics_cells_and_activation_log(staff_client, staff):
    old = make_version()
    new = make_version(metrics=four_class_metrics(0.93))
    activate_version(old, user=staff)
    activate_version(new, user=staff)  # old is now a roll-back candidate
    failed = make_version(status=ModelVersion.Status.FAILED, failure_reason="too few images per class",
                          model_sha256="", metrics={}, history=[])
    sample = Sample.objects.create(accession_number="H26-1")
    image = SmearImage.objects.create(sample=sample, image="smears/a.png", original_filename="a.png",
                                      width=640, height=480, file_size=10, checksum="0" * 64)
    for index in range(3):
        Cell.objects.create(image=image, model_version=new, index=index, x0=0, y0=0, x1=5, y1=5,
                            predicted_type="NEUTROPHIL", confidence=0.9, binary_call="POLYNUCLEAR",
                            cell_type="NEUTROPHIL")

    page = staff_client.get(reverse("models:list")).content.decode()

    assert f"v{failed.pk}" in page and "too few images per class" in page
    assert "0.9300" in page and "/data/cells" in page and "abababababab" in page
    assert "batch_size: 64" in page
    assert "precision" in page and "Confusion matrix" in page
    assert f"Roll back to v{old.pk}" in page
    assert ">3</td>" in page  # cells classified by the active version
    assert page.count(staff.username) >= 2  # the activation log names who switched
    assert reverse("models:list") in staff_client.get(reverse("home")).content.decode()
    # What "reviewers kept" is, and why it is no accuracy, said on the page: a tooltip on the
    # column's header reached neither a keyboard nor a screen reader.
    assert "<th class=\"num\">reviewers kept</th>" in page
    assert "Reviewed cells are no random sample" in page


@pytest.mark.django_db
def test_version_page_draws_learning_curves_as_inline_svg(staff_client):
    version = make_version()
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert page.count("<svg") == 2
    assert page.count('class="series train"') == 2 and page.count('class="series val"') == 2
    # Nothing is fetched from another host (a CDN): every script, style and picture is the site's.
    # (Not a search for "cdn" in the page: the random CSRF token may spell it.)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert "TEST split" in page and "calibration temperature 1.300" in page


@pytest.mark.django_db
def test_each_learning_curve_gives_its_figures_as_a_table(staff_client):
    # The audit: a curve's figures were a drawing alone, its name all a screen reader had of it.
    version = make_version(history=[*HISTORY[:2], {"epoch": 3, "loss": 0.5, "accuracy": 0.85}])
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    figures = re.findall(r'<figure class="curve">.*?</figure>', page, re.S)
    assert len(figures) == 2
    loss = figures[0]
    table = re.search(r"<table>.*?</table>", loss, re.S).group(0)
    assert re.search(r"<caption[^>]*>Loss per epoch</caption>", table)
    headers = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', table)
    assert headers == ["epoch", "training", "validation"]
    body = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    rows = [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row) for row in body]
    # The third epoch was measured on no validation cell: a dash, not a figure carried over.
    assert rows == [["1", "1.2000", "1.1000"], ["2", "0.8000", "0.9000"], ["3", "0.5000", "–"]]


@pytest.mark.django_db
def test_version_page_shows_what_the_review_flag_catches_at_the_sites_threshold(staff_client, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.8
    metrics = four_class_metrics()
    metrics["TEST"]["review_flagging"] = [
        {"threshold": 0.7, "flagged_share": 0.065, "errors_caught": 0.257, "unflagged_accuracy": 0.902},
        {"threshold": 0.8, "flagged_share": 0.109, "errors_caught": 0.391, "unflagged_accuracy": 0.916},
        # Every cell flagged: no unflagged call to be right or wrong (the figure is 1.0 by convention).
        {"threshold": 0.99, "flagged_share": 1.0, "errors_caught": 1.0, "unflagged_accuracy": 1.0},
    ]
    version = make_version(metrics=metrics)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert page.count('class="review-flagging"') == 1  # TEST has the figures, validation has none
    site_row = page.split('class="site-threshold"')[1].split("</tr>")[0]
    assert "0.80 · this site" in site_row and ">11%<" in site_row and ">39%<" in site_row
    assert ">0.916<" in site_row
    all_flagged = page.split('<th scope="row">0.99</th>')[1].split("</tr>")[0]
    assert 'title="Every cell was flagged"' in all_flagged and "1.000" not in all_flagged
    # Said in words to a screen reader, which reads no title on a span.
    assert '<span class="visually-hidden">none: every cell was flagged</span>' in all_flagged


@pytest.mark.django_db
@pytest.mark.parametrize("runtime, words", [("litert-int8", "LiteRT with int8 weights"),
                                            ("tensorflow", "TensorFlow, the float network itself")])
def test_version_page_says_how_the_workers_compute_the_network(staff_client, settings, runtime, words):
    settings.INFERENCE_RUNTIME = runtime
    version = make_version()
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    note = page.split('data-role="serving-runtime">')[1].split("</p>")[0]
    assert "Measured on the float network when it was trained" in note and words in note
    # A run that measured its TEST as served says so, and with what.
    served = make_version(metrics={**four_class_metrics(), "served_by": "litert-int8"})
    page = staff_client.get(reverse("models:detail", args=[served.pk])).content.decode()
    note = page.split('data-role="serving-runtime">')[1].split("</p>")[0]
    assert "TEST measured as served when it was trained: computed with LiteRT with int8 weights" in note
    assert "float network when" not in note and words in note


@pytest.mark.django_db
def test_version_page_says_which_epoch_a_held_out_run_stored(staff_client):
    best = make_version()
    last = make_version(metrics={**four_class_metrics(), "epoch_choice": "last"})
    best_page = staff_client.get(reverse("models:detail", args=[best.pk])).content.decode()
    last_page = staff_client.get(reverse("models:detail", args=[last.pk])).content.decode()
    assert "epoch 2, the best on validation" in best_page
    assert "epoch 2, the last, as this recipe keeps" in last_page
    assert "the best on validation" not in last_page


@pytest.mark.django_db
def test_version_page_says_a_refit_has_no_validation_split(staff_client):
    metrics = four_class_metrics()
    del metrics["validation"], metrics["best_epoch"]
    metrics["refit"] = {"epochs": 3, "temperature_source": "leukonet-heldout (validation split seed 7)"}
    version = make_version(metrics=metrics)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "Trained on every TRAIN group" in page and "its last epoch (3)" in page
    assert "leukonet-heldout (validation split seed 7)" in page
    assert "the best on validation" not in page and "Validation split" not in page


@pytest.mark.django_db
def test_version_page_names_a_held_out_run_by_its_folder_name_not_its_path(staff_client):
    metrics = four_class_metrics()
    del metrics["validation"], metrics["best_epoch"]
    source = "/tmp/runs/masked_heldout (validation split seed 7, last epoch 16)"
    metrics["refit"] = {"epochs": 16, "temperature_source": source}
    version = make_version(metrics=metrics, hyperparameters={"epochs": 16, "temperature_source": source})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "/tmp/runs" not in page
    assert "held-out run of the same recipe: masked_heldout (validation split seed 7, last epoch 16)." in page
    assert "<dd>masked_heldout (validation split seed 7, last epoch 16)</dd>" in page


@pytest.mark.django_db
@pytest.mark.parametrize("extra, notes", [
    ({}, "calibration temperature 1.300"),
    ({"skipped_files": 2}, "calibration temperature 1.300"),
    ({"validation_groups": 9, "skipped_files": 0},
     "calibration temperature 1.300 · 9 photograph groups held out for validation"),
])
def test_version_page_separates_its_metric_notes_without_a_dangling_dot(staff_client, extra, notes):
    version = make_version(metrics={**four_class_metrics(), **extra})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert f'<p class="muted small">{notes}</p>' in page


def test_a_test_split_whose_files_did_not_all_decode_says_how_many_beside_its_n(staff_client):
    # Counted in the metrics and said by evaluate alone: the page showed "n = 40" as if whole.
    metrics = four_class_metrics()
    metrics["TEST"]["skipped_files"] = 3
    version = make_version(metrics=metrics)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "n = 40 (3 files skipped)" in page
    # Measured before files were named: the count alone, said so.
    assert "Not named: this version was measured before skipped files were recorded" in page
    metrics["TEST"]["skipped_named"] = [
        {"path": "/lab/TEST/MONOCYTE/a.png", "reason": "not an image, or damaged"}]
    version.metrics = {**metrics, "skipped_files": 1,
                       "skipped_named": [{"path": "/lab/TRAIN/EOSINOPHIL/g.png", "reason": "greyscale: why"}]}
    version.save(update_fields=["metrics"])
    page = html.unescape(staff_client.get(reverse("models:detail", args=[version.pk])).content.decode())
    listed = [re.sub(r"<[^>]+>|\s+", " ", part.split("</details>")[0]).split()
              for part in page.split('data-role="skipped-files">')[1:]]
    assert [" ".join(words) for words in listed] == [
        "3 files skipped, left out of these figures: which, and why /lab/TEST/MONOCYTE/a.png : not an image, "
        "or damaged Named: the first 1 of the 3.",
        "1 file skipped, left out of training and validation: which, and why /lab/TRAIN/EOSINOPHIL/g.png : "
        "greyscale: why"]


def test_version_pages_show_what_reviewers_kept_of_its_calls(staff_client, staff):
    version = make_version()
    untouched = make_version()
    sample = make_sample(types=("NEUTROPHIL", "NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL",
                                "MONOCYTE"), version=version)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    Cell.objects.filter(pk__in=[cells[3].pk, cells[4].pk]).update(needs_review=True)
    labels = ("NEUTROPHIL", "EOSINOPHIL", "ARTEFACT", "LYMPHOCYTE", "BASOPHIL")
    for cell, label in zip(cells[:5], labels, strict=True):
        review_cell(cell, label, staff)
    # Kept: N->N (unflagged) and L->L (flagged); changed: N->E (unflagged), E->basophil (flagged);
    # the artefact is a detection fault, counted apart; the monocyte was never reviewed.
    review = review_agreement(version)
    assert (review.overall.reviewed, review.overall.kept, review.overall.range_95) == (4, 2, (15.0, 85.0))
    assert (review.unflagged.reviewed, review.unflagged.kept) == (2, 1)
    assert (review.flagged.reviewed, review.flagged.kept) == (2, 1)
    assert review.artefacts == 1
    assert review.reviewer_types == [*FOUR, "BASOPHIL", "ARTEFACT"]
    assert dict(zip(review.predicted_types, review.matrix, strict=True)) == {
        "EOSINOPHIL": [0, 0, 0, 0, 1, 0], "LYMPHOCYTE": [0, 1, 0, 0, 0, 0],
        "MONOCYTE": [0, 0, 0, 0, 0, 0], "NEUTROPHIL": [1, 0, 0, 1, 0, 1]}
    review_cell(cells[1], "NEUTROPHIL", staff)  # a second look: only the final label counts
    assert (review_agreement(version).overall.kept, review_agreement(version).overall.reviewed) == (3, 4)

    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "75.0% of 4" in page and "(95% range 30.1–95.4)" in page
    # Kept calls stand out: neutrophil twice, lymphocyte once.
    assert '<td class="num kept">2<span aria-hidden="true"> ✓</span>' in page
    assert '<td class="num kept">1<span aria-hidden="true"> ✓</span>' in page
    assert page.count('class="num kept"') == 2
    page = staff_client.get(reverse("models:detail", args=[untouched.pk])).content.decode()
    assert f"No cell classified by v{untouched.pk} has been reviewed yet." in page
    listing = staff_client.get(reverse("models:list")).content.decode()
    assert '75.0%<div class="muted small">of 4</div>' in listing


def test_learning_curve_chart_handles_one_epoch_and_missing_validation():
    one = learning_curve_chart([{"epoch": 1, "loss": 0.7, "val_loss": float("nan")}], "loss", "Loss")
    assert [s["label"] for s in one["series"]] == ["training"]
    assert len(one["series"][0]["dots"]) == 1
    assert learning_curve_chart([], "loss", "Loss") is None
    chart = learning_curve_chart(HISTORY, "accuracy", "Accuracy")
    ys = [dot["y"] for dot in chart["series"][0]["dots"]]
    assert ys == sorted(ys, reverse=True)  # rising accuracy is drawn upwards
    assert all(chart["top"] <= y <= chart["bottom"] for y in ys)


def test_metric_tables_read_flat_and_nested_metrics():
    nested = four_class_metrics()
    assert [t["title"].split(" ")[0] for t in metric_tables(nested)] == ["TEST", "Validation"]
    assert metric_tables(nested["TEST"])[0]["accuracy"] == 0.9
    assert metric_tables({}) == []


def two_lab_metrics():
    """A run on two data folders: each one's TEST apart, the second's also over the four types."""
    four = four_class_metrics()["TEST"]
    eight = dict(four, class_names=FOUR + ["PLATELET"], accuracy=0.97, four_classes=dict(four, accuracy=0.95),
                 per_class={**four["per_class"], "PLATELET": four["per_class"]["MONOCYTE"]},
                 confusion_matrix=[[10] * 5] * 5)
    record = {"train_counts": {"NEUTROPHIL": 9}, "test_counts": {"TEST": {"NEUTROPHIL": 3}},
              "validation_split": "by file", "fingerprint": "ef" * 32}
    return {
        "best_epoch": 2, "temperature": 1.1, "validation": four,
        "sources": {
            "pbc": {**record, "order": 1, "path": "/data/pbc", "TEST": eight, "validation": four},
            "cells": {**record, "order": 0, "path": "/data/cells", "TEST": dict(four, accuracy=0.88)},
        },
    }


def test_a_version_trained_on_two_folders_shows_each_folders_figures_apart():
    titles = [table["title"] for table in metric_tables(two_lab_metrics())]
    assert titles == [
        "cells: TEST split (held out)",
        "pbc: TEST split (held out)",
        "pbc: TEST split (held out): the four types both sources share",
        "Validation split (held-out groups of TRAIN)",
    ]
    assert metric_tables(two_lab_metrics())[0]["where"] == "cells TEST"


@pytest.mark.django_db
def test_version_page_lists_each_data_folder_and_its_figures(staff_client):
    version = make_version(metrics=two_lab_metrics(), dataset_path=f"/data/cells{os.pathsep}/data/pbc")
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert page.count('data-role="source"') == 2 and "/data/pbc" in page
    assert "validation split by file" in page and "efefefefefefefef…" in page
    assert "pbc: TEST split (held out): the four types both sources share" in page
    listing = staff_client.get(reverse("models:list")).content.decode()
    assert "0.8800" in listing and "cells TEST" in listing  # the first folder's TEST heads the row


@pytest.mark.django_db
def test_retrain_form_queues_one_training_on_commit(staff_client, staff, no_enqueue, tmp_path,
                                                     django_capture_on_commit_callbacks):
    make_version(status=ModelVersion.Status.ACTIVE)
    cells = write_cell_folder(tmp_path / "cells", per_class=1, test_per_class=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("models:train"), {
            "architecture": "paper", "task": "binary", "epochs": 2, "include_reviewed": "on",
            "data_dir": str(cells),
        })
    version = ModelVersion.objects.get(status=ModelVersion.Status.TRAINING)
    assert response.status_code == 302 and response["Location"] == reverse("models:detail", args=[version.pk])
    assert (version.source, version.architecture, version.task) == ("site", "paper", "binary")
    assert version.dataset_path == str(cells) and version.include_reviewed_cells
    assert version.hyperparameters["epochs"] == 2 and version.created_by == staff
    assert no_enqueue == [("train_model_version", (version.pk,))]
    sent = ModelVersion.objects.get(pk=version.pk)
    assert sent.celery_task_id and sent.sent_at is not None  # the id Cancel stops it by
    # Its page does not say it has no score or chose no threshold before it has finished.
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "fitted when training ends" in page
    assert "has no out-of-distribution score" not in page and "did not choose its own" not in page

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("models:train"), {"architecture": "paper", "task": "binary",
                                                               "epochs": 7, "data_dir": str(cells)})
    # Refused on the form as it was filled in (the model audit: a redirect lost every value).
    page = response.content.decode()
    assert response.status_code == 400 and f"v{version.pk} is already training" in page
    assert re.search(r'<input type="number" name="epochs" value="7"', page)
    assert f'value="{cells}"' in page
    assert ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).count() == 1
    assert len(no_enqueue) == 1


@pytest.mark.django_db
def test_retrain_form_defaults_to_the_configured_data_and_rejects_bad_epochs(staff_client, settings,
                                                                               no_enqueue):
    response = staff_client.post(reverse("models:train"), {"architecture": "paper", "task": "4class",
                                                           "epochs": 0})
    assert response.status_code == 400 and not ModelVersion.objects.exists()
    staff_client.post(reverse("models:train"), {"architecture": "nope", "task": "4class", "epochs": 1})
    assert not ModelVersion.objects.exists()
    staff_client.post(reverse("models:train"), {"architecture": "paper", "task": "4class", "epochs": 1})
    configured = os.pathsep.join(str(folder) for folder in settings.TRAINING_DATA_DIRS)
    assert ModelVersion.objects.get().dataset_path == configured


@pytest.mark.django_db
def test_retrain_form_starts_from_the_recipe_of_the_active_network():
    from webapp.forms_models import RetrainForm

    ModelVersion.objects.create(
        architecture="leukonet-gn", task="8class", status=ModelVersion.Status.ACTIVE,
        class_names=["BASOPHIL", "EOSINOPHIL", "ERYTHROBLAST", "IMMATURE_GRANULOCYTE", "LYMPHOCYTE",
                     "MONOCYTE", "NEUTROPHIL", "PLATELET"],
        input_spec={"height": 96, "width": 96, "mode": "cell", "crop": 160}, model_sha256="e" * 64,
    )
    initial = RetrainForm().initial
    # The bundled eight-type network's recipe, 30 epochs included: a retraining repeats it.
    assert (initial["architecture"], initial["task"], initial["epochs"]) == ("leukonet-gn", "8class", 30)


@pytest.mark.django_db
def test_a_version_that_never_served_can_be_deleted_and_nothing_else(staff_client, django_user_model):
    failed = make_version(status=ModelVersion.Status.FAILED)
    cancelled = make_version(status=ModelVersion.Status.CANCELLED)
    experiment = make_version(status=ModelVersion.Status.READY)  # a lab's run it chose not to use
    served = make_version(status=ModelVersion.Status.FAILED)
    make_sample(types=("NEUTROPHIL",), version=served)  # results that name it
    bundled = make_version(status=ModelVersion.Status.READY)
    ModelVersion.objects.filter(pk=bundled.pk).update(source=ModelVersion.Source.BUNDLED)
    served_once = make_version(status=ModelVersion.Status.READY)
    ModelActivation.objects.create(version=served_once)
    parent = make_version(status=ModelVersion.Status.READY)
    child = make_version(status=ModelVersion.Status.READY)
    ModelVersion.objects.filter(pk=child.pk).update(adapted_from=parent)
    active = make_version(status=ModelVersion.Status.ACTIVE)
    # A held-out run a refit borrowed its temperature and threshold from: the refit's page names it.
    held_out = make_version(status=ModelVersion.Status.READY)
    refit = make_version(status=ModelVersion.Status.READY)
    ModelVersion.objects.filter(pk=refit.pk).update(metrics={
        "refit": {"temperature_source": f"model version v{held_out.pk} (last epoch 30)"}})
    page = staff_client.get(reverse("models:detail", args=[failed.pk])).content.decode()
    assert 'data-role="delete-version"' in page
    refusals = {served: "classified photographs, whose results name it: it stays.",
                bundled: "is bundled with the software: it stays",
                served_once: "served: the record of which version served when names it",
                parent: f"v{child.pk} was adapted from v{parent.pk}: it stays",
                active: "only a failed or cancelled training, or a ready version that never served",
                held_out: f"v{refit.pk} borrowed its temperature and review threshold from v{held_out.pk}"}
    for kept, refusal in refusals.items():
        page = staff_client.get(reverse("models:detail", args=[kept.pk])).content.decode()
        assert 'data-role="delete-version"' not in page
        response = staff_client.post(reverse("models:delete", args=[kept.pk]), follow=True)
        assert ModelVersion.objects.filter(pk=kept.pk).exists()
        assert refusal in response.content.decode()
    page = staff_client.get(reverse("models:detail", args=[experiment.pk])).content.decode()
    assert 'data-role="delete-version"' in page
    for gone in (failed, cancelled, experiment):
        response = staff_client.post(reverse("models:delete", args=[gone.pk]), follow=True)
        assert f"v{gone.pk} is deleted." in response.content.decode()
        assert not ModelVersion.objects.filter(pk=gone.pk).exists()


@pytest.mark.django_db
def test_activating_or_deleting_a_version_deleted_since_the_page_read_it_says_so():
    # What the page read before a deletion committed (on SQLite as on PostgreSQL): a DoesNotExist.
    experiment = make_version(status=ModelVersion.Status.READY)
    read_by_the_page = ModelVersion.objects.get(pk=experiment.pk)
    delete_unused_version(experiment)
    with pytest.raises(ModelVersionError, match=rf"^v{experiment.pk} was deleted meanwhile: nothing was "
                                                r"activated\.$"):
        activate_version(read_by_the_page)
    with pytest.raises(ModelVersionError, match=rf"^v{experiment.pk} was deleted meanwhile: there is "
                                                r"nothing left to delete\.$"):
        delete_unused_version(read_by_the_page)
    assert not ModelActivation.objects.exists()


def while_held(change, client, path, data=None):
    """POST ``data`` to ``path`` while ``change()`` holds its transaction open, on a connection of its
    own; the answer, followed."""
    return post_while_held(client, change, path, data or {}, "the version's row")


RACES = {
    # The deletion commits first: the activation, waiting on the row, found none (a DoesNotExist, a 500).
    "activated as it is deleted": (delete_unused_version, "models:activate", "models:list",
                                   "v{pk} was deleted meanwhile: nothing was activated."),
    "deleted twice": (delete_unused_version, "models:delete", "models:list",
                      "v{pk} was deleted meanwhile: there is nothing left to delete."),
    # The activation commits first: the deletion finds the version serving.
    "deleted as it is activated": (activate_version, "models:delete", "models:detail",
                                   "v{pk} is active: only a failed or cancelled training, or a ready version "
                                   "that never served, can be deleted."),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("race", list(RACES))
def test_a_version_activated_and_deleted_at_once_gives_the_loser_one_line(staff_client, race):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    serving = make_version(status=ModelVersion.Status.ACTIVE)
    experiment = make_version(status=ModelVersion.Status.READY)
    first, asked, answered_on, refusal = RACES[race]
    response = while_held(lambda: first(ModelVersion.objects.get(pk=experiment.pk)), staff_client,
                          reverse(asked, args=[experiment.pk]), {"next": "detail"})
    answered_on = reverse(answered_on, args=[experiment.pk] if answered_on == "models:detail" else [])
    assert response.redirect_chain == [(answered_on, 302)]
    assert [str(message) for message in response.context["messages"]] == [refusal.format(pk=experiment.pk)]
    active = list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE))
    # Never two versions serving, nor the serving one deleted.
    assert active == ([experiment] if first is activate_version else [serving])
    assert ModelActivation.objects.count() == (1 if first is activate_version else 0)


@pytest.mark.django_db
def test_a_data_folder_that_is_not_there_is_a_form_error_not_a_failed_version(staff_client, no_enqueue,
                                                                               tmp_path):
    missing = tmp_path / "no-such-folder"
    response = staff_client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1,
        "data_dir": f"{tmp_path}{os.pathsep}{missing}"})
    assert response.status_code == 400
    assert f"No such folder on this server: {missing}." in response.content.decode()
    assert not ModelVersion.objects.exists() and no_enqueue == []
    # A relative path would be read from the server's working directory (the walkthrough's
    # "../../etc" reached /etc): refused, asking for the full path.
    response = staff_client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1, "data_dir": "../../etc"})
    assert response.status_code == 400
    assert "Give each folder&#x27;s full path, from /: ../../etc." in response.content.decode()
    assert not ModelVersion.objects.exists() and no_enqueue == []


@pytest.mark.django_db
def test_retrain_form_offers_each_configured_folder_and_trains_on_those_ticked(
        staff_client, settings, no_enqueue, tmp_path):
    labs = [str(tmp_path / name) for name in ("lab-a", "lab-b")]
    settings.TRAINING_DATA_DIRS = [tmp_path / "lab-a", tmp_path / "lab-b"]
    for name in ("lab-a", "lab-b", "lab-c"):
        write_cell_folder(tmp_path / name, per_class=1, test_per_class=1)
    listing = staff_client.get(reverse("models:list")).content.decode()
    assert all(f'value="{lab}"' in listing for lab in labs)
    # One label a folder, under the field's own name: not every box inside one label. The group is
    # described by its help text, as Django's own field template describes a fieldset.
    assert re.search(r'<fieldset class="choices" aria-describedby="id_data_sources_helptext">'
                     r'<legend>Training data folders</legend>'
                     r'(<label class="check" for="[^"]+"><input type="checkbox"[^>]*> [^<]+</label>){2}'
                     r'</fieldset>', listing)
    staff_client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1, "data_sources": [labs[1]],
        "data_dir": f"{tmp_path / 'lab-c'}{os.pathsep}{labs[1]}/",
    })
    version = ModelVersion.objects.get()
    # Ticked, then given, each once, however written (a trailing slash made a second source).
    assert version.dataset_path == os.pathsep.join([labs[1], str(tmp_path / "lab-c")])
    assert training.training_settings(version)["data_dir"] == version.dataset_path


@pytest.mark.django_db
def test_retrain_form_refits_a_held_out_run_on_every_group_with_its_temperature(
        staff_client, no_enqueue, tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=3, test_per_class=1)
    # Made under other defaults than today's: the refit repeats its inputs and augmentation.
    held_out = make_version(temperature=1.37, input_spec={"height": 60, "width": 80, "mode": "field"},
                            hyperparameters={"epochs": 1, "batch_size": 8, "mixup": 0.2, "zoom": 0.05},
                            metrics={**four_class_metrics(), "review": {"confidence_threshold": 0.91}})
    ModelVersion.objects.filter(pk=held_out.pk).update(dataset_path=str(data))
    other = write_cell_folder(tmp_path / "other-lab", per_class=3, test_per_class=1)
    refit = make_version(metrics={"temperature": 1.37, "refit": {"epochs": 1}})
    make_version(status=ModelVersion.Status.FAILED)
    page = staff_client.get(reverse("models:list")).content.decode()
    assert f"v{held_out.pk}: paper / 4class, 1 epoch, temperature 1.370" in page
    assert f"v{refit.pk}: paper" not in page, "a refit's borrowed temperature is not offered again"
    form = {"architecture": "paper", "task": "4class", "epochs": 1, "data_dir": str(data),
            "refit_from": held_out.pk}

    assert staff_client.post(reverse("models:train"), {**form, "refit_from": refit.pk}).status_code == 400
    for changed, reason in (({"task": "binary"}, "must repeat its architecture and task"),
                            ({"epochs": 4}, "trains as long as it did: 1 epoch."),
                            # Its temperature and threshold were fitted on its own data's cells.
                            ({"data_dir": str(other)}, f"learns from the data folders it did: {data}.")):
        response = staff_client.post(reverse("models:train"), {**form, **changed})
        # The refusal comes back on the form as filled in, beside the field it is about (the model
        # audit: it redirected to the list, every value lost, the reason far from its field).
        page = html.unescape(response.content.decode())
        (field, value), = changed.items()
        assert response.status_code == 400
        assert re.search(rf'<div id="id_{field}_error"><div class="error">[^<]*{re.escape(reason)}', page)
        assert f'value="{value}"' in page and f'value="{held_out.pk}" selected' in page
    assert ModelVersion.objects.count() == 3 and not no_enqueue

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("models:train"), form)
    version = ModelVersion.objects.get(status=ModelVersion.Status.TRAINING)
    assert no_enqueue == [("train_model_version", (version.pk,))]
    training.run_training(version.pk)  # what the worker runs, on a few drawn cells

    version.refresh_from_db()
    assert version.status == "ready", version.failure_reason
    assert version.temperature == pytest.approx(1.37) and version.hyperparameters["mixup"] == 0.2
    assert version.hyperparameters["zoom"] == 0.05 and version.hyperparameters["batch_size"] == 8
    assert version.input_spec == {"height": 60, "width": 80, "mode": "field"}
    assert version.hyperparameters["validation_fraction"] == 0
    assert f"v{held_out.pk}" in version.metrics["refit"]["temperature_source"]
    assert sum(version.class_counts.values()) == 12, "the refit trains on every TRAIN image"
    # Its review threshold is the held-out run's, fitted at the temperature it borrows.
    assert version.metrics["review"]["confidence_threshold"] == pytest.approx(0.91)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "less than 91% sure of it" in page and "whose temperature this refit borrows" in page


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_starts_create_one_training(django_user_model, no_enqueue):
    user = django_user_model.objects.create_user("a", is_staff=True)
    barrier = threading.Barrier(2)
    outcomes = []

    def start():
        barrier.wait()
        try:
            outcomes.append(training.start_training(user, "paper", 1, task="4class", data_dir="/x"))
        except training.TrainingRefused as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(type(o).__name__ for o in outcomes) == ["ModelVersion", "TrainingRefused"]
    assert ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).count() == 1


@pytest.mark.django_db
def test_progress_says_when_the_training_process_went_silent(staff_client, settings):
    # The model audit: a killed worker's training page showed its last epoch and time left,
    # unchanged, for 60-75 s until the reconciler marked it failed.
    settings.HEARTBEAT_SECONDS, settings.WORKER_LOST_AFTER, settings.RECONCILE_EVERY = 10, 60, 30
    version = make_version(status=ModelVersion.Status.TRAINING, history=[], metrics={}, model_sha256="",
                           heartbeat_at=timezone.now() - timedelta(seconds=5),
                           progress={"state": "running", "epoch": 2, "epochs": 8, "eta_seconds": 60.0})
    progress = reverse("models:progress", args=[version.pk])
    data = staff_client.get(progress).json()
    assert (data["phase"], data["eta_seconds"]) == ("training", 60.0)
    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=45))
    data = staff_client.get(progress).json()
    assert data["phase"].startswith("no sign of life from the training process for 45 s")
    assert data["phase"].endswith("the version is marked failed within 90 s of its last sign")
    assert data["eta_seconds"] is None and data["epoch"] == 2
    # The status region's words leave out the seconds, which change at every poll and would be
    # read out again each time.
    assert data["announcement"] == "no sign of life from the training process: epoch 2 of 8"
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "no sign of life from the training process" in page
    # Waiting for a worker is no silence: no process has claimed it yet.
    ModelVersion.objects.filter(pk=version.pk).update(progress={"state": "queued"})
    assert staff_client.get(progress).json()["phase"] == "waiting for the training worker"


@pytest.mark.django_db
def test_the_page_a_run_ended_on_says_how_once_and_takes_its_own_address_back(staff_client):
    # training.js reloads the page with ?ended=ID as the run ends (accessibility audit: nothing said
    # how it ended); the message is said once, on the address without the parameter.
    version = make_version(status=ModelVersion.Status.FAILED, failure_reason="Out of memory.")
    detail = reverse("models:detail", args=[version.pk])
    response = staff_client.get(f"{detail}?ended={version.pk}", follow=True)
    assert response.redirect_chain == [(detail, 302)]
    assert [str(message) for message in response.context["messages"]] == [
        f"Training of v{version.pk} failed: Out of memory."]
    # Anything else in the parameter is no run's end: the page, and no trace.
    for given in ("x", "²", "9" * 40, str(version.pk + 99)):
        response = staff_client.get(f"{reverse('models:list')}?ended={given}", follow=True)
        assert response.status_code == 200 and response.redirect_chain == [(reverse("models:list"), 302)]
        assert not list(response.context["messages"])


@pytest.mark.django_db
def test_a_stop_is_news_to_who_asked_for_it_and_an_alert_to_everyone_else(client, staff, django_user_model,
                                                                         no_enqueue):
    # The release notes: a run the reader cancelled in another tab was announced, when the page
    # following it reloaded with ?ended=, in the alert region, as a failure is.
    version = make_version(status=ModelVersion.Status.TRAINING, history=[], metrics={}, model_sha256="",
                           progress={"state": "running", "epoch": 1, "epochs": 8})
    colleague = with_role(django_user_model.objects.create_user("colleague", is_staff=True), "admin")
    detail = reverse("models:detail", args=[version.pk])
    client.force_login(staff)
    client.post(reverse("models:cancel", args=[version.pk]))

    def page_after_the_end(reader):
        client.force_login(reader)
        return client.get(f"{detail}?ended={version.pk}", follow=True).content.decode()

    mine = page_after_the_end(staff)
    assert 'role="alert"' not in mine
    news = mine.split('data-role="news"')[1].split("</ul>")[0]
    assert f"Training of v{version.pk} stopped, as you asked." in news
    theirs = page_after_the_end(colleague)
    alert = theirs.split('role="alert"')[1].split("</div>")[0]
    assert f"Training of v{version.pk} stopped: Cancelled by lead." in alert
    # A failure stays an alert for everyone, the one who started the run too.
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED,
                                                     failure_reason="Out of memory.")
    failed = page_after_the_end(staff)
    assert "failed: Out of memory." in failed.split('role="alert"')[1].split("</div>")[0]


def test_progress_json_and_cancel(staff_client):
    version = make_version(status=ModelVersion.Status.TRAINING, history=[], metrics={}, model_sha256="",
                           progress={"state": "running", "epoch": 2, "epochs": 8, "loss": 0.61,
                                     "accuracy": 0.7, "elapsed_seconds": 20.0, "eta_seconds": 60.0})
    data = staff_client.get(reverse("models:progress", args=[version.pk])).json()
    assert (data["status"], data["epoch"], data["epochs"], data["percent"]) == ("training", 2, 8, 25)
    assert data["loss"] == 0.61 and data["eta_seconds"] == 60.0
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "Cancel training" in page and "js/training.js" in page and "js/confirm.js" in page
    # Asked before it is sent, as activating and deleting are: what was learnt is lost.
    assert f'data-confirm="Cancel the training of v{version.pk}? What it has learnt so far is lost' in page
    listed = staff_client.get(reverse("models:list")).content.decode()
    assert f'data-confirm="Cancel the training of v{version.pk}?' in listed
    assert 'data-seconds="60.0">60 s</dd>' in page
    # After the last epoch no time left is known: a dash, not "– s".
    ModelVersion.objects.filter(pk=version.pk).update(progress={**version.progress, "eta_seconds": None})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    # Named for what it covers: the evaluation after the last epoch is not in it.
    assert ("epochs' time left</dt>"
            '<dd data-field="eta_seconds" data-seconds="">–</dd>') in page
    # What it leaves out is said on the page, where a keyboard and a screen reader meet it, not in
    # a tooltip on its term.
    assert "<dt title=" not in page
    assert "The time left counts the epochs alone: measuring the held-out figures" in page
    assert 'aria-valuenow="25"' in page
    # Every epoch done, the held-out figures being measured: the bar tells no share, not 100%.
    ModelVersion.objects.filter(pk=version.pk).update(progress={
        **version.progress, "epoch": 8, "stage": "measuring", "epochs_done": True, "eta_seconds": None})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert 'class="progress finishing"' in page and "aria-valuenow" not in page
    assert 'aria-valuetext="every epoch done; measuring the held-out figures"' in page
    assert staff_client.get(reverse("models:progress", args=[version.pk])).json()["percent"] is None

    staff_client.post(reverse("models:cancel", args=[version.pk]))
    version.refresh_from_db()
    assert version.status == "cancelled" and version.cancel_requested
    assert "lead" in version.failure_reason
    assert staff_client.get(reverse("models:progress", args=[version.pk])).json()["status"] == "cancelled"
    response = staff_client.post(reverse("models:cancel", args=[version.pk]), follow=True)
    assert "not training" in response.content.decode()


@pytest.mark.django_db
def test_activate_and_roll_back_are_one_post_each_and_logged(staff_client, staff):
    first = make_version(status=ModelVersion.Status.ACTIVE)
    second = make_version()
    # A GET activates nothing: with nothing to warn of, it goes back to the list.
    assert staff_client.get(reverse("models:activate", args=[second.pk])).url == reverse("models:list")
    assert ModelVersion.objects.get(status="active") == first

    staff_client.post(reverse("models:activate", args=[second.pk]))
    staff_client.post(reverse("models:activate", args=[first.pk]), {"next": "detail"})

    assert ModelVersion.objects.get(status="active") == first
    log = list(ModelActivation.objects.order_by("id"))
    assert [(a.version, a.previous_version, a.activated_by) for a in log] == [
        (second, first, staff), (first, second, staff)
    ]


def a_guessing_version_beside_an_active_one():
    """A ready version no better than guessing among its four types (which the site warns of before
    activating it), with another version serving."""
    make_version(status=ModelVersion.Status.ACTIVE)
    return make_version(status=ModelVersion.Status.READY,
                        metrics={"validation": four_class_metrics(0.25)["validation"]})


@pytest.mark.django_db
def test_a_version_no_better_than_guessing_says_so_before_and_after_activation(staff_client):
    # The audit trained one on 96 images: 25% on four types, labelled Ready, one click to serve.
    guessing = a_guessing_version_beside_an_active_one()
    sound = make_version(status=ModelVersion.Status.READY,
                         metrics={"validation": four_class_metrics(0.88)["validation"]})
    words = (f"v{guessing.pk} called 25% of its validation cells right, no better than guessing among its 4 "
             "types (25%)")
    assert words in staff_client.get(reverse("models:detail", args=[guessing.pk])).content.decode()
    assert "no better than guessing" not in staff_client.get(
        reverse("models:detail", args=[sound.pk])).content.decode()
    # Sent without the browser's confirm (scripts off): the server asks, and nothing changes yet.
    serving = ModelVersion.objects.get(status="active")
    # The question is a page of its own, which the POST redirects to: Back after answering it
    # returns to a page, not to the browser's "Confirm Form Resubmission".
    asked = staff_client.post(reverse("models:activate", args=[guessing.pk]), {"next": "detail"}, follow=True)
    question = f'{reverse("models:activate", args=[guessing.pk])}?next=detail'
    assert asked.redirect_chain == [(question, 302)]
    page = asked.content.decode()
    assert asked.status_code == 200 and 'data-role="confirm-activation"' in page
    assert f'<h1 id="confirm-question" tabindex="-1" autofocus>Activate v{guessing.pk}?</h1>' in page
    assert words in page
    assert ('<input type="hidden" name="confirmed" value="1"><input type="hidden" name="next" '
            'value="detail">') in page
    assert ('<input type="hidden" name="leave" value="1"><input type="hidden" name="next" value="detail">\n'
            '      <button type="submit">Leave the active version serving') in page
    assert ModelVersion.objects.get(status="active") == serving
    # Leaving: back to the page the question came from, by an address without the bare "?" a GET
    # form with no fields gave it, and nothing changed.
    left = staff_client.post(reverse("models:activate", args=[guessing.pk]), {"leave": "1", "next": "detail"},
                             follow=True)
    assert left.redirect_chain == [(reverse("models:detail", args=[guessing.pk]), 302)]
    assert f"v{guessing.pk} was not activated: the active version stays serving." in left.content.decode()
    assert ModelVersion.objects.get(status="active") == serving
    left = staff_client.post(reverse("models:activate", args=[guessing.pk]), {"leave": "1"})
    assert left.url == reverse("models:list")
    assert ModelVersion.objects.get(status="active") == serving
    response = staff_client.post(reverse("models:activate", args=[guessing.pk]), {"confirmed": "1"},
                                 follow=True)
    page = response.content.decode()
    assert words in page and "Activate another version to stop it." in page
    assert ModelVersion.objects.get(status="active") == guessing
    # A version nothing warns of is activated by the one POST, as before.
    staff_client.post(reverse("models:activate", args=[serving.pk]))
    assert ModelVersion.objects.get(status="active") == serving


@pytest.mark.django_db
def test_the_activation_question_is_not_asked_again_of_a_version_that_serves(staff_client):
    # The review: Back after answering the question (the page the POST-redirect-GET made for it)
    # asked "Activate v2?" of the version serving, whose answer then said it "is now the active model".
    guessing = a_guessing_version_beside_an_active_one()
    question = f'{reverse("models:activate", args=[guessing.pk])}?next=detail'
    assert 'data-role="confirm-activation"' in staff_client.get(question).content.decode()
    staff_client.post(reverse("models:activate", args=[guessing.pk]), {"confirmed": "1", "next": "detail"},
                      follow=True)
    assert ModelVersion.objects.get(status="active") == guessing

    back = staff_client.get(question, follow=True)
    assert back.redirect_chain == [(reverse("models:detail", args=[guessing.pk]), 302)]
    assert [str(message) for message in back.context["messages"]] == [
        f"v{guessing.pk} is the active model already: there is nothing to activate."]
    # Nor of one that cannot serve: its question's answer could only be refused.
    failed = make_version(status=ModelVersion.Status.FAILED,
                          metrics={"validation": four_class_metrics(0.25)["validation"]})
    back = staff_client.get(reverse("models:activate", args=[failed.pk]), follow=True)
    assert back.redirect_chain == [(reverse("models:list"), 302)]
    assert 'data-role="confirm-activation"' not in back.content.decode()


@pytest.mark.django_db
def test_the_activation_question_shows_none_of_its_templates_notes(staff_client):
    # Review: a note to the template's readers, a {# #} comment broken over two lines (which Django
    # reads as one line's only), was printed on the page between the two answers.
    guessing = a_guessing_version_beside_an_active_one()
    page = staff_client.get(reverse("models:activate", args=[guessing.pk])).content.decode()
    assert 'data-role="confirm-activation"' in page
    assert "{#" not in page and "#}" not in page and "whose address a browser ends" not in page


@pytest.mark.django_db
def test_leaving_a_version_someone_activated_meanwhile_says_it_serves(staff_client):
    # Review: "Leave the active version serving", pressed on a question open while another
    # administrator activated that very version, answered "v3 was not activated: the active version
    # stays serving", of the version that now serves.
    guessing = a_guessing_version_beside_an_active_one()
    question = f'{reverse("models:activate", args=[guessing.pk])}?next=detail'
    assert 'data-role="confirm-activation"' in staff_client.get(question).content.decode()
    activate_version(guessing)  # the other administrator

    left = staff_client.post(reverse("models:activate", args=[guessing.pk]), {"leave": "1", "next": "detail"},
                             follow=True)

    assert left.redirect_chain == [(reverse("models:detail", args=[guessing.pk]), 302)]
    assert [(message.level_tag, str(message)) for message in left.context["messages"]] == [
        ("warning", f"v{guessing.pk} is the active model: it was activated meanwhile. Activate another "
                    "version to stop it.")]
    assert ModelVersion.objects.get(status="active") == guessing


@pytest.mark.django_db
def test_the_guessing_warning_names_the_figure_it_read(staff_client):
    # The audit's 2-epoch run: the page's headline said 25% on tiny/TEST, the warning "the
    # held-out accuracy, 17%" (its validation figure), two held-out accuracies for one version.
    from classifier.labels import EIGHT_CLASSES

    version = make_version(status=ModelVersion.Status.READY, class_names=EIGHT_CLASSES,
                           metrics={"TEST": four_class_metrics(0.6)["TEST"],
                                    "validation": four_class_metrics(0.17)["validation"]})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    # Guessing among the 4 types the cells hold, not the network's 8 (the model audit read "17% ...
    # no better than guessing among its 8 types (12%)").
    assert (f"v{version.pk} called 17% of its validation cells right, no better than guessing among the "
            "4 types they hold (25%)") in page
    ModelVersion.objects.filter(pk=version.pk).update(metrics={
        "TEST": four_class_metrics(0.2)["TEST"], "validation": four_class_metrics(0.6)["validation"]})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert f"v{version.pk} called 20% of the TEST cells right, no better than guessing" in page


@pytest.mark.django_db
def test_a_version_that_calls_every_cell_one_type_is_no_better_than_guessing(staff_client):
    # The model audit: a binary run called every TEST cell polynuclear, 67% right (the polynuclear
    # share), and no warning stood before its activation.
    table = {"n": 60, "class_names": ["MONONUCLEAR", "POLYNUCLEAR"], "accuracy": 0.67,
             "balanced_accuracy": 0.5, "per_class": {"MONONUCLEAR": {"recall": 0.0, "support": 20},
                           "POLYNUCLEAR": {"recall": 1.0, "support": 40}},
             "confusion_matrix": [[0, 20], [0, 40]]}
    version = make_version(status=ModelVersion.Status.READY, task="binary",
                           class_names=["MONONUCLEAR", "POLYNUCLEAR"], metrics={"TEST": table})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert (f"v{version.pk} called 67% of the TEST cells right but, type by type, 50% on average, no better "
            "than guessing among its 2 types (50%)") in page


@pytest.mark.django_db
def test_an_adapted_version_worse_than_its_parent_on_the_labs_cells_says_so(staff_client):
    # Beyond noise: 150 of 200 against 180 of 200 (14 of 16 against 15 of 16 is not: see
    # tests/webapp/test_model_pages_honesty.py).
    parent = make_version(status=ModelVersion.Status.ACTIVE)
    adaptation = {"cells": 200, "cross_validated": {"accuracy": 0.75}, "before": {"accuracy": 0.9}}
    worse = make_version(status=ModelVersion.Status.READY, metrics={"adaptation": adaptation})
    ModelVersion.objects.filter(pk=worse.pk).update(adapted_from=parent)
    words = (f"Cross-validated on this lab's 200 reviewed cells, v{worse.pk} called 75.0% right, fewer than "
             f"v{parent.pk} did (90.0%)")
    detail = staff_client.get(reverse("models:detail", args=[worse.pk])).content.decode()
    assert words in html.unescape(detail)
    # The lab's own figures come before the curves and the TEST tables of the parent's sources.
    assert detail.index('data-role="adaptation"') < detail.index("<h2>Learning curves</h2>")
    page = html.unescape(staff_client.post(reverse("models:activate", args=[worse.pk]), {"confirmed": "1"},
                                           follow=True).content.decode())
    assert words in page and "Activate another version to stop it." in page
    adaptation["cross_validated"]["accuracy"] = 0.95  # better than its parent: nothing to say
    ModelVersion.objects.filter(pk=worse.pk).update(metrics={"adaptation": adaptation})
    assert "fewer than" not in staff_client.get(reverse("models:detail", args=[worse.pk])).content.decode()


@pytest.mark.django_db
def test_an_adaptation_that_replayed_no_training_image_says_so_before_activation(staff_client):
    # The model audit: with its parent's data folder gone, an adaptation replayed 0 images and was
    # Ready, said only deep in its page; the activation's confirmation said nothing.
    parent = make_version(status=ModelVersion.Status.ACTIVE)
    adaptation = {"cells": 40, "replay": {"cells": 0, "sources": [], "missing": ["/data/cells"]}}
    adapted = make_version(status=ModelVersion.Status.READY, metrics={"adaptation": adaptation})
    ModelVersion.objects.filter(pk=adapted.pk).update(adapted_from=parent)
    words = (f"v{adapted.pk} was adapted without replaying any of its parent's training images (/data/cells "
             "not found on this server): only this lab's reviewed cells tuned it")
    detail = html.unescape(staff_client.get(reverse("models:detail", args=[adapted.pk])).content.decode())
    assert words in detail
    adaptation["replay"]["cells"] = 800
    ModelVersion.objects.filter(pk=adapted.pk).update(metrics={"adaptation": adaptation})
    detail = staff_client.get(reverse("models:detail", args=[adapted.pk])).content.decode()
    assert "without replaying" not in detail


@pytest.mark.django_db
def test_activating_a_failed_version_says_why_and_changes_nothing(staff_client):
    active = make_version(status=ModelVersion.Status.ACTIVE)
    failed = make_version(status=ModelVersion.Status.FAILED, model_sha256="")
    training = make_version(status=ModelVersion.Status.TRAINING, model_sha256="")
    # Ready by its status, but with no network stored: it would fail every photograph it was sent.
    empty = make_version(status=ModelVersion.Status.READY, model_sha256="")
    not_ready = "only a ready version can serve"
    for version, why in ((failed, not_ready), (training, not_ready), (empty, "it holds no stored network")):
        response = staff_client.post(reverse("models:activate", args=[version.pk]), follow=True)
        assert why in response.content.decode()
        assert ModelVersion.objects.get(status="active") == active


@pytest.mark.django_db
def test_reclassify_asks_first_and_warns_of_a_version_no_better_than_guessing(staff_client):
    # The model audit: "All samples" re-ran every unsigned sample at one click, even with a
    # chance-level version active; activation asks first, re-classifying did not.
    guessing = {"TEST": four_class_metrics(0.25)["TEST"]}
    active = make_version(status=ModelVersion.Status.ACTIVE, metrics=guessing)
    page = html.unescape(staff_client.get(reverse("models:list")).content.decode())
    assert (f'data-confirm="Classify the chosen samples again with v{active.pk}? Warning: v{active.pk} '
            "called 25% of the TEST cells right, no better than guessing") in page
    assert "signed samples are left as they are." in page


@pytest.mark.django_db
def test_reclassify_with_a_binary_version_says_a_type_becomes_its_group(staff_client):
    # The admin audit: the question said a reviewer's label stays, and a binary version held every
    # reviewed lymphocyte as MONONUCLEAR, the formula left with the two groups alone.
    typed = make_version(status=ModelVersion.Status.ACTIVE)
    page = html.unescape(staff_client.get(reverse("models:list")).content.decode())
    assert "a type as its group" not in page
    ModelVersion.objects.filter(pk=typed.pk).update(status=ModelVersion.Status.READY)
    binary = make_version(class_names=["MONONUCLEAR", "POLYNUCLEAR"], status=ModelVersion.Status.ACTIVE)
    page = html.unescape(staff_client.get(reverse("models:list")).content.decode())
    assert (f"Classify the chosen samples again with v{binary.pk}?") in page
    assert ("a reviewer's label stays where it finds the same cell, a type as its group (a lymphocyte as "
            "MONONUCLEAR: the formula then holds the two groups alone") in page


@pytest.mark.django_db
def test_reclassify_with_a_binary_version_says_so_beside_the_form_and_after(staff_client, no_enqueue):
    # The form's own words said a reviewer's label is kept, and only the script's question (none with
    # scripts off) said a binary version holds a type as its group; nor did the message after.
    typed = make_version(status=ModelVersion.Status.ACTIVE)
    sample = Sample.objects.create(accession_number="H1")
    SmearImage.objects.create(sample=sample, image="smears/a.png", original_filename="a.png", width=640,
                              height=480, file_size=10, checksum="0" * 64, status=SmearImage.Status.DONE)
    said = "names only the two groups, so a cell a reviewer gave a type is held as its group"
    page = html.unescape(staff_client.get(reverse("models:list")).content.decode())
    assert 'data-role="groups-only"' not in page and said not in page
    answer = staff_client.post(reverse("models:reclassify"), {"accession_number": "H1"}, follow=True)
    assert said not in html.unescape(answer.content.decode())
    ModelVersion.objects.filter(pk=typed.pk).update(status=ModelVersion.Status.READY)
    binary = make_version(class_names=["MONONUCLEAR", "POLYNUCLEAR"], status=ModelVersion.Status.ACTIVE)
    note = (f"v{binary.pk} {said} (a lymphocyte as MONONUCLEAR) and a re-classified sample's formula holds "
            "the two groups alone; re-classifying it later with a version that names types gives back the "
            "types the reviewers gave.")
    page = html.unescape(staff_client.get(reverse("models:list")).content.decode())
    assert f'<p class="small" data-role="groups-only">{note}</p>' in page
    answer = staff_client.post(reverse("models:reclassify"), {"accession_number": "H1"}, follow=True)
    assert f"queued for re-classification with v{binary.pk}" in html.unescape(answer.content.decode())
    assert note in html.unescape(answer.content.decode())


@pytest.mark.django_db
def test_reclassify_queues_the_chosen_sample_with_the_active_version(staff_client, no_enqueue,
                                                                      django_capture_on_commit_callbacks):
    active = make_version(status=ModelVersion.Status.ACTIVE)
    chosen, other = Sample.objects.create(accession_number="H1"), Sample.objects.create(accession_number="H2")
    images = {}
    for sample in (chosen, other):
        images[sample] = SmearImage.objects.create(
            sample=sample, image="smears/a.png", original_filename="a.png", width=640, height=480,
            file_size=10, checksum="0" * 64, status=SmearImage.Status.DONE)

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("models:reclassify"), {"accession_number": "H1"})
    assert no_enqueue == [("classify_image", (images[chosen].pk,))]
    queued = SmearImage.objects.get(pk=images[chosen].pk)
    assert queued.status == "queued" and queued.requested_version == active

    with django_capture_on_commit_callbacks(execute=True):
        answer = staff_client.post(reverse("models:reclassify"), {"all_samples": "on"}, follow=True)
    assert len(no_enqueue) == 3
    # H1 was just classified by the active version: its calls are made again in place, not kept.
    assert (f"2 photographs queued for re-classification with v{active.pk}; other versions&#x27; calls stay "
            f"in the history, and a photograph v{active.pk} classified before gets its calls again, in place "
            "of its earlier ones.") in answer.content.decode()

    response = staff_client.post(reverse("models:reclassify"), {})
    assert response.status_code == 400 and len(no_enqueue) == 3
    too_long = staff_client.post(reverse("models:reclassify"), {"accession_number": "H" * 5000})
    # Only the length is wrong: a number was given.
    page = too_long.content.decode()
    assert too_long.status_code == 400 and "at most 64 characters" in page
    assert "Give an accession number, or tick" not in page and len(no_enqueue) == 3


# --- run_training with a stand-in for the ML core ------------------------------------------------


def fake_result():
    return SimpleNamespace(
        model_bytes=b"network", model_sha256="ef" * 32, metadata={}, class_names=FOUR,
        input_spec={"height": 120, "width": 160, "mode": "field"},
        hyperparameters={"epochs": 2, "batch_size": 64, "learning_rate": 0.001}, seed=5, temperature=1.1,
        class_counts={name: 3 for name in FOUR}, dataset_fingerprint="12" * 32, history=HISTORY[:2],
        metrics=four_class_metrics(), training_seconds=3.5, skipped_files=0, skipped_named=[],
    )


@pytest.fixture
def fake_trainer(monkeypatch):
    import classifier.training

    calls = []

    def install(behaviour):
        def train_classifier(config, on_epoch=None, should_stop=None, progress_bar=False, on_stage=None):
            calls.append(config)
            install.on_stage = on_stage
            return behaviour(config, on_epoch, should_stop)

        monkeypatch.setattr(classifier.training, "train_classifier", train_classifier)
        return calls

    return install


def queued_version(**fields):
    values = dict(history=[], metrics={}, model_sha256="", model_bytes=None, progress={"state": "queued"})
    return make_version(status=ModelVersion.Status.TRAINING, **{**values, **fields})


@pytest.mark.django_db
def test_run_training_stores_a_ready_version_with_progress_and_never_activates(fake_trainer):
    active = make_version(status=ModelVersion.Status.ACTIVE)
    version = queued_version(hyperparameters={"epochs": 2, "max_images_per_class": 5})
    seen = []

    def behaviour(config, on_epoch, should_stop):
        on_epoch({"epoch": 1, "epochs": 2, "loss": 0.9, "accuracy": 0.6, "val_loss": 1.0,
                  "val_accuracy": 0.5, "elapsed_seconds": 1.0, "eta_seconds": 1.0})
        seen.append(ModelVersion.objects.get(pk=version.pk).progress)
        assert should_stop() is False
        fake_trainer.on_stage("calibrating, fitting the review flag and measuring each source's TEST")
        seen.append(progress_report(ModelVersion.objects.get(pk=version.pk)))
        return fake_result()

    calls = fake_trainer(behaviour)
    training.run_training(version.pk)

    config = calls[0]
    assert (config.architecture, config.task, config.epochs) == ("paper", "4class", 2)
    assert config.max_images_per_class == 5
    assert config.data_dir == "/data/cells" and config.seed == 7
    assert seen[0]["epoch"] == 1 and seen[0]["eta_seconds"] == 1.0 and len(seen[0]["history"]) == 1
    # After the last epoch the page says what is left to do, with no time to tell (not "0 s").
    finishing = seen[1]
    assert finishing["phase"] == "calibrating, fitting the review flag and measuring each source's TEST"
    assert finishing["eta_seconds"] is None
    # Nor a full bar (the audit: 100% with nothing left, while the TEST figures took minutes).
    assert finishing["percent"] is None and seen[0]["epoch"] == 1
    version.refresh_from_db()
    assert version.status == "ready" and bytes(version.model_bytes) == b"network"
    assert version.progress["state"] == "done" and version.history == HISTORY[:2]
    assert ModelVersion.objects.get(status="active") == active

    training.run_training(version.pk)  # a duplicate delivery does nothing
    assert len(calls) == 1


def _postgresql_disk_full():
    import psycopg

    error = OperationalError('could not extend file "base/1/2": No space left on device\nHINT:  Check free '
                             'disk space.')
    error.__cause__ = psycopg.errors.DiskFull("no space")
    return error


@pytest.mark.django_db
@pytest.mark.parametrize(
    "error, expected",
    [
        (TrainingDataError("training data folder /nope does not exist"), "/nope does not exist"),
        (MemoryError(), "ran out of memory"),
        (RuntimeError("cuDNN exploded\nstack..."), "unexpected error (RuntimeError: cuDNN exploded)"),
        # The disk audit: both read "Training stopped with an unexpected error (...)".
        (OSError(errno.ENOSPC, "No space left on device"),
         f"the training machine could not write its files (No space left on device). It writes the "
         f"network to its temporary folder (TMPDIR, here {tempfile.gettempdir()}) before storing it: free "
         "space there"),
        (_postgresql_disk_full(),
         'the database has no room left on its disk (could not extend file "base/1/2": No space left on '
         'device). Nothing of it was kept'),
        (OperationalError("database or disk is full"),
         "The trained network could not be stored: the database has no room left on its disk (database or "
         "disk is full). Nothing of it was kept; free space for the database, then train again."),
    ],
)
def test_run_training_failure_is_recorded_readably(fake_trainer, error, expected, tmp_path):
    # Its data folder is there: a reason is the run's own (test_training_folder_gone for one gone).
    version = queued_version(dataset_path=str(tmp_path))

    def behaviour(config, on_epoch, should_stop):
        raise error

    fake_trainer(behaviour)
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and expected in version.failure_reason
    assert not version.model_sha256 and version.progress["state"] == "failed"


@pytest.mark.django_db
@pytest.mark.parametrize("error, with_traceback", [
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (_postgresql_disk_full(), False),
    (MemoryError(), False),
    (RuntimeError("cuDNN exploded"), True),
])
def test_a_failure_the_reason_explains_is_logged_in_one_line_an_unexpected_one_with_its_traceback(
        fake_trainer, caplog, error, with_traceback):
    """`manage.py train` on a full disk printed the run's 17-line traceback (the log's ERROR record)
    above its one-line failure, which says all a person can act on; the worker's log keeps the
    traceback of an error no reason explains."""
    version = queued_version()

    def behaviour(config, on_epoch, should_stop):
        raise error

    fake_trainer(behaviour)
    with caplog.at_level("INFO", logger="webapp.services.training"):
        training.run_training(version.pk)
    version.refresh_from_db()
    [record] = [r for r in caplog.records if r.name == "webapp.services.training" and r.levelname != "INFO"]
    assert bool(record.exc_info) is with_traceback
    if not with_traceback:
        assert record.levelname == "WARNING"
        assert record.getMessage() == (f"Training of model version v{version.pk} failed: "
                                       f"{version.failure_reason}")


@pytest.mark.django_db
def test_cancel_reaches_the_running_training_and_nothing_is_stored(fake_trainer, staff, settings):
    settings.TRAINING_CANCEL_CHECK_SECONDS = 0
    version = queued_version()

    def behaviour(config, on_epoch, should_stop):
        assert not should_stop()
        training.cancel_training(version, staff)
        if should_stop():
            raise TrainingCancelled("cancelled")
        return fake_result()

    fake_trainer(behaviour)
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "cancelled" and not version.model_sha256


@pytest.mark.django_db
def test_a_result_arriving_after_cancel_is_not_stored(fake_trainer, staff):
    version = queued_version()

    def behaviour(config, on_epoch, should_stop):
        training.cancel_training(version, staff)
        return fake_result()

    fake_trainer(behaviour)
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "cancelled" and version.model_bytes is None


@pytest.mark.django_db
def test_a_redelivered_training_whose_worker_died_is_marked_failed(fake_trainer):
    version = queued_version(progress={"state": "running", "epoch": 3, "epochs": 10})
    calls = fake_trainer(lambda *args: fake_result())
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and "ran out of memory" in version.failure_reason
    assert calls == []


@pytest.mark.django_db
def test_reviewed_cells_go_to_training_once_with_their_corrected_type(fake_trainer, isolated_media_root):
    window = isolated_media_root / "windows" / "c1.png"
    window.parent.mkdir(parents=True, exist_ok=True)
    window.write_bytes(b"png")
    old, new = make_version(), make_version(status=ModelVersion.Status.ACTIVE)
    sample = Sample.objects.create(accession_number="H3")
    image = SmearImage.objects.create(sample=sample, image="smears/a.png", original_filename="a.png",
                                      width=640, height=480, file_size=10, checksum="0" * 64)
    common = dict(image=image, index=0, x0=1, y0=2, x1=30, y1=40, predicted_type="NEUTROPHIL",
                  confidence=0.6, binary_call="POLYNUCLEAR", window="windows/c1.png")
    Cell.objects.create(model_version=old, corrected_type="EOSINOPHIL", cell_type="EOSINOPHIL", **common)
    Cell.objects.create(model_version=new, corrected_type="EOSINOPHIL", cell_type="EOSINOPHIL", **common)
    Cell.objects.create(model_version=new, **{**common, "index": 1, "x0": 50, "window": "windows/none.png"},
                        corrected_type="LYMPHOCYTE", cell_type="LYMPHOCYTE")
    Cell.objects.create(model_version=new, **{**common, "index": 2, "x0": 90}, cell_type="NEUTROPHIL")
    Cell.objects.create(model_version=new, **{**common, "index": 3, "x0": 120}, corrected_type="MONONUCLEAR",
                        cell_type="MONONUCLEAR")  # relabelled under a binary network
    Cell.objects.create(model_version=new, **{**common, "index": 4, "x0": 150}, corrected_type="ARTEFACT",
                        cell_type="ARTEFACT")  # no white cell: taught to no network
    Cell.objects.create(model_version=new, **{**common, "index": 5, "x0": 180}, corrected_type="BASOPHIL",
                        cell_type="BASOPHIL")  # a polynuclear cell, but none of the four types

    assert training.reviewed_cell_samples("4class") == [(str(window), "EOSINOPHIL")]
    assert sorted(name for _, name in training.reviewed_cell_samples("binary")) == [
        "BASOPHIL", "EOSINOPHIL", "MONONUCLEAR"]

    version = queued_version(include_reviewed_cells=True)
    calls = fake_trainer(lambda *args: fake_result())
    training.run_training(version.pk)
    assert calls[0].extra_samples == [(str(window), "EOSINOPHIL")]


@pytest.mark.django_db
def test_model_pages_never_load_the_stored_networks(staff_client, staff):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    old, new = make_version(), make_version()
    activate_version(old, user=staff)
    activate_version(new, user=staff)
    for url in (reverse("models:list"), reverse("models:detail", args=[new.pk]),
                reverse("models:progress", args=[new.pk])):
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(url).status_code == 200
        assert not [q["sql"] for q in queries.captured_queries if "model_bytes" in q["sql"]], url


@pytest.mark.django_db
def test_reclassify_without_an_active_version_says_so(staff_client, no_enqueue):
    Sample.objects.create(accession_number="H9")
    response = staff_client.post(reverse("models:reclassify"), {"all_samples": "on"}, follow=True)
    assert "No model version is active" in response.content.decode() and no_enqueue == []


@pytest.mark.django_db
def test_with_the_broker_down_a_training_waits_unsent_until_the_reconciler_sends_it(
        staff, monkeypatch, django_capture_on_commit_callbacks):
    from celery import current_app

    from webapp import queueing
    from webapp.services.reconciler import reconcile_work

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("redis refused")

    monkeypatch.setattr(current_app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        version = training.start_training(staff, "paper", 1, task="4class", data_dir="/x")
    version.refresh_from_db()
    assert version.status == "training" and version.sent_at is None and not version.celery_task_id
    later = timezone.now() + timedelta(minutes=1)
    assert reconcile_work(later).trainings_sent == 0 and version.sent_at is None  # still down

    sent = []
    monkeypatch.setattr(queueing, "publish", lambda name, args, *, queue, task_id=None:
                        sent.append((name, tuple(args), queue, task_id)) or True)
    monkeypatch.setattr(queueing, "queue_length", lambda queue: 0)
    assert reconcile_work(later).trainings_sent == 1
    version.refresh_from_db()
    assert sent == [(queueing.TRAIN_TASK, (version.pk,), "train", version.celery_task_id)]
    assert reconcile_work(later).trainings_sent == 0, "sent once, not at every sweep"
    # Meanwhile the slot is held, and Cancel frees it.
    training.cancel_training(version, staff)
    assert training.training_in_progress() is None


@pytest.mark.django_db
def test_a_lab_lead_reads_each_sources_figure_and_what_the_version_is_valid_for(staff_client):
    version = make_version(metrics=two_lab_metrics(), dataset_path=f"/data/cells{os.pathsep}/data/pbc",
                           hyperparameters={"learning_rate": 0.001, "batch_size": 32})
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    words = page.split('data-role="in-words"')[1].split("</section>")[0]
    assert "on photographs like cells/TEST: 88% of cells right" in words
    assert "on photographs like pbc/TEST:" in words
    # pbc is a folder the site knows: its stain and analyser are named; "cells" is the lab's own.
    assert "CellaVision DM96" in words and "stain and analyser not recorded" in words
    # Raw settings sit behind a disclosure; the review flag's columns say what they mean.
    assert 'data-role="hyperparameters"' in page and "learning_rate" in page
    listing = staff_client.get(reverse("models:list")).content.decode()
    assert "On photographs like cells/TEST: 88% of cells right" in listing
    assert "<details><summary>2 settings</summary>" in listing
    # A version that failed learnt nothing: its page claims it is valid for nothing.
    assert "Valid for</strong>" in page
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "Valid for</strong>" not in page


@pytest.mark.django_db
def test_version_page_shows_each_sources_calibration_and_the_out_of_distribution_threshold(staff_client):
    metrics = dict(two_lab_metrics(), calibration={
        "served": "fitted on the pooled validation split",
        "sources": {"pbc": {"ece_uncalibrated": 0.102, "ece_served_temperature": 0.0397,
                            "ece_own_temperature": 0.0282, "temperature": 0.658, "validation_cells": 1400},
                    "cells": {"ece_uncalibrated": 0.052, "ece_served_temperature": 0.0701,
                              "ece_own_temperature": 0.0463, "temperature": 0.93, "validation_cells": 1608}},
    }, ood={"score": "squared Mahalanobis distance", "quantile": 0.9, "threshold_cells": 3008,
            "threshold_fitted_on": "validation cells", "threshold_distance": 440.3})
    version = make_version(metrics=metrics)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    trust = page.split('data-role="trust"')[1].split("</section>")[0]
    # In the order the sources were given (cells, then pbc), whatever order jsonb keeps.
    assert trust.index('data-source="cells"') < trust.index('data-source="pbc"')
    assert "0.040" in trust and "0.658" in trust and "90th percentile of 3008 validation cells" in trust
    # A version trained before either existed: no table, and the page says only confidence flags.
    plain = make_version(metrics=two_lab_metrics())
    trust = staff_client.get(reverse("models:detail", args=[plain.pk])).content.decode().split(
        'data-role="trust"')[1].split("</section>")[0]
    assert 'class="calibration"' not in trust and "has no out-of-distribution score" in trust


@pytest.mark.django_db
def test_review_flag_table_shows_no_share_of_errors_caught_where_no_call_was_wrong(staff_client):
    """Every call right: the stored share of errors caught is 1.0, which the table showed as 100%."""
    metrics = four_class_metrics()
    metrics["TEST"]["review_flagging"] = [
        {"threshold": 0.8, "flagged_share": 0.1, "errors_caught": 1.0, "errors": 0,
         "unflagged_accuracy": 1.0},
        {"threshold": 0.9, "flagged_share": 0.2, "errors_caught": 0.5, "errors": 2,
         "unflagged_accuracy": 0.99},
    ]
    version = make_version(metrics=metrics)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    rows = page.split('class="review-flagging"')[1].split("</tbody>")[0].split("<tr")[2:]
    assert "none to catch" in rows[0] and "100%" not in rows[0]
    # Said in words to a screen reader, which reads no title on a span: a dash alone said nothing.
    assert '<span class="visually-hidden">none: no call was wrong, none to catch</span>' in rows[0]
    assert ">50%<" in rows[1] and "none to catch" not in rows[1]


@pytest.mark.django_db
def test_version_page_says_which_review_threshold_the_version_chose_and_on_what(staff_client, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = None
    metrics = four_class_metrics()
    metrics["TEST"]["review_flagging"] = [
        {"threshold": 0.8, "flagged_share": 0.109, "errors_caught": 0.391, "unflagged_accuracy": 0.916},
        {"threshold": 0.86, "flagged_share": 0.17, "errors_caught": 0.81, "unflagged_accuracy": 0.95},
    ]
    metrics["review"] = {
        "confidence_threshold": 0.86, "budget": 0.2, "fitted_on": "validation cells", "within_budget": True,
        "sources": {"cells": {"cells": 300, "flagged_share": 0.198, "errors_caught": 0.835}},
    }
    metrics["TEST"]["review_flag"] = {"confidence_threshold": 0.86, "ood_score": True, "cells": 40,
                                      "errors": 4, "flagged_share": 0.17, "errors_caught": 0.75}
    version = make_version(metrics=metrics)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    site_row = page.split('class="site-threshold"')[1].split("</tr>")[0]
    assert "0.86 · this site" in site_row and ">81%<" in site_row
    on_test = re.sub(r"\s+", " ", page.split('data-role="split-review-flag">')[1].split("</p>")[0])
    assert on_test == ("The review flag as this site raises it (a call under 86% sure, or an unfamiliar "
                       "cell): 17% of these 40 cells flagged, 75% of the 4 wrong calls among them.")
    note = re.sub(r"\s+", " ", page.split('data-role="review-threshold">')[1].split("</p>")[0])
    assert "less than 86% sure of it" in note and "chose it on its validation cells" in note
    assert "at most 20% of each source's cells; cells: 20% of cells flagged, 84% of its wrong calls" in note
    assert "as this site serves them" not in note, "fitted on first looks, before December 2026"
    version.metrics = {**metrics, "review": {**metrics["review"], "fitted_on": "validation cells, as served",
                                             "served_by": "litert-int8"}}
    version.save(update_fields=["metrics"])
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    note = re.sub(r"\s+", " ", page.split('data-role="review-threshold">')[1].split("</p>")[0])
    assert "validation cells, as this site serves them (second looks included): the highest" in note
    # A tiny run unsure of most cells kept to no budget: the note says so, not "at most 20%".
    version.metrics = {**metrics, "review": {**metrics["review"], "confidence_threshold": 0.5,
                                             "within_budget": False, "sources": {"cells": {
                                                 "cells": 30, "flagged_share": 0.9, "errors_caught": 1.0}}}}
    version.save(update_fields=["metrics"])
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    note = re.sub(r"\s+", " ", page.split('data-role="review-threshold">')[1].split("</p>")[0])
    assert ("at every threshold tried the flag marked more than 20% of a source's cells (the network is "
            "unsure of most of them), so it took the lowest; cells: 90% of cells flagged") in note
    assert "at most 20%" not in note

    settings.REVIEW_CONFIDENCE_THRESHOLD = 0.8  # the lab's LEUKOSCOPE_REVIEW_THRESHOLD
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "0.80 · this site" in page.split('class="site-threshold"')[1].split("</tr>")[0]
    assert "This site sets that threshold for every version" in page
    assert 'data-role="split-review-flag"' not in page, "TEST's figures at 0.86 do not hold at 0.80"

    settings.REVIEW_CONFIDENCE_THRESHOLD = None
    # Adapted from a refit, which had borrowed its threshold: the page names both.
    metrics["review"] = {"confidence_threshold": 0.9, "fitted_on": "validation cells of the held-out run",
                         "refit_from": "model version v3 (last epoch 30)", "carried_from": "v4"}
    adapted = make_version(metrics=metrics, model_sha256="ab" * 32)
    page = staff_client.get(reverse("models:detail", args=[adapted.pk])).content.decode()
    note = html.unescape(re.sub(r"\s+", " ", page.split('data-role="review-threshold">')[1].split("</p>")[0]))
    assert ("It is the confidence threshold of v4, the version it was adapted from, kept unchanged" in note
            and "an earlier version (a refit that took it from its held-out run (model version v3 (last "
                "epoch 30)))" in note)
    del metrics["review"]
    older = make_version(metrics=metrics, model_sha256="ef" * 32)
    page = staff_client.get(reverse("models:detail", args=[older.pk])).content.decode()
    assert "less than 80% sure of it" in page and "did not choose its own" in page


@pytest.mark.django_db
def test_a_version_measured_on_no_held_out_cell_says_so_before_activation(staff_client):
    """A refit on a folder without TEST/ had no figure at all: its page showed none, and its
    Activate asked the plain question, where a version at chance level is warned of."""
    make_version(status=ModelVersion.Status.ACTIVE, metrics=four_class_metrics())
    unmeasured = make_version(status=ModelVersion.Status.READY, metrics={"refit": {"epochs": 1}})
    words = (f"v{unmeasured.pk} was measured on no cells it did not learn from (its data folders hold no "
             "TEST folder, and it kept no validation split): nothing says how often its calls are right.")
    assert words in staff_client.get(reverse("models:detail", args=[unmeasured.pk])).content.decode()
    assert words in staff_client.get(reverse("models:list")).content.decode()
    measured = make_version(status=ModelVersion.Status.READY, metrics=four_class_metrics())
    assert "measured on no cells" not in staff_client.get(
        reverse("models:detail", args=[measured.pk])).content.decode()
    failed = make_version(status=ModelVersion.Status.FAILED)
    assert "measured on no cells" not in staff_client.get(
        reverse("models:detail", args=[failed.pk])).content.decode()
