"""The model pages' figures for adapted versions, as an audit found them misleading: a drop on
held-out photographs said nowhere, a parent already tuned on the lab's cells compared as if it had
not been, no range on the lab's figure, review-flag text quoting the parent's figures, the warning
missing where admins activate, and smaller wording. Fixtures are metrics shaped as
classifier.training.adaptation writes them; nothing is trained."""

import html
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from classifier.training.adaptation import PHASE_CROSS_VALIDATION, PHASE_EVALUATING, PHASE_FINAL
from webapp.models import ModelVersion
from webapp.presenters import models as presenters
from webapp.presenters.models import activation_warning
from webapp.services.model_versions import activate_version

FOUR = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]

pytestmark = pytest.mark.django_db


def split(accuracy, n, flagged=None):
    """One split's figures (classifier.metrics.classification_metrics), n cells."""
    per_class = {name: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": n // 4} for name in FOUR}
    figures = {"n": n, "class_names": FOUR, "accuracy": accuracy, "balanced_accuracy": accuracy,
               "per_class": per_class, "ece": 0.03,
               "confusion_matrix": [[n // 4 if i == j else 0 for j in range(4)] for i in range(4)]}
    if flagged is not None:
        figures["review_flag"] = {"confidence_threshold": 0.86, "ood_score": True, "cells": n, "errors": 20,
                                  "flagged_share": flagged, "errors_caught": 0.8}
    return figures


def two_source_metrics(pbc, bcci, n_pbc=1708, n_bcci=2487, flagged=None):
    """TEST figures of pbc and blood-cell-images, as a run on both folders records them."""
    return {
        "temperature": 1.2,
        "TEST": split(pbc, n_pbc, flagged),  # the first source's, also at the top level
        "sources": {
            "pbc": {"order": 0, "path": "/data/pbc",
                    "validation_split": "by original photograph (originals.csv group)",
                    "TEST": split(pbc, n_pbc, flagged)},
            "blood-cell-images": {"order": 1, "path": "/data/blood-cell-images",
                                  "validation_split": "by original photograph (originals.csv group)",
                                  "TEST": split(bcci, n_bcci, flagged)},
        },
        "validation": split(0.95, 3000),
        "review": {"confidence_threshold": 0.86, "budget": 0.2, "fitted_on": "validation cells",
                   "sources": {
                       "blood-cell-images": {"cells": 300, "flagged_share": 0.2, "errors_caught": 0.83},
                       "pbc": {"cells": 300, "flagged_share": 0.11, "errors_caught": 0.9}}},
    }


def adaptation(cv, before, cells=48, left_out=None):
    """The "adaptation" record of classifier.training.adaptation.adapt_classifier."""
    return {"cells": cells, "per_class": {"NEUTROPHIL": cells}, "left_out": left_out or {}, "unreadable": 0,
            "before": {"n": cells, "accuracy": before}, "folds": 2,
            "cross_validated": {"n": cells, "accuracy": cv, "class_names": FOUR},
            "replay": {"per_class": 50, "cells": 400, "sources": ["pbc", "blood-cell-images"], "missing": []},
            "epochs": 3, "temperature_fitted_on": "fitted on the out-of-fold calls on the lab's cells"}


def make(status=ModelVersion.Status.READY, metrics=None, parent=None, **fields):
    values = dict(architecture="paper", task="4class", status=status, class_names=FOUR,
                  input_spec={"height": 120, "width": 160, "mode": "field"}, hyperparameters={"epochs": 3},
                  seed=7, dataset_path="/data/pbc:/data/blood-cell-images", metrics=metrics or {},
                  model_bytes=b"not-a-real-network", model_sha256="cd" * 32, size_bytes=18,
                  adapted_from=parent)
    if parent is not None:
        values.update(source=ModelVersion.Source.ADAPTED, include_reviewed_cells=True,
                      hyperparameters={"epochs": 3, "validation_fraction": 0.0})
    values.update(fields)
    return ModelVersion.objects.create(**values)


def adapted_metrics(pbc, bcci, record, carried_from, flagged=0.12):
    metrics = two_source_metrics(pbc, bcci, flagged=flagged)
    metrics.pop("validation")
    metrics["review"] = {**metrics["review"], "carried_from": carried_from}
    metrics["ood"] = {"score": "squared Mahalanobis distance", "quantile": 0.98, "threshold_cells": 448,
                      "threshold_fitted_on": "training cells", "threshold_distance": 310.0}
    metrics["adaptation"] = record
    return metrics


def text(page):
    return html.unescape(re.sub(r"\s+", " ", page))


def detail(client, version):
    return text(client.get(reverse("models:detail", args=[version.pk])).content.decode())


def test_an_adaptation_that_drops_on_held_out_photographs_shows_both_figures_and_warns(staff_client):
    # The audit's run: v1 -> v4 dropped pbc TEST from 95.5% to 93.2%; blood-cell-images moved by
    # less than noise here.
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    v4 = make(metrics=adapted_metrics(0.932, 0.870, adaptation(0.9375, 0.9375), "v1"), parent=v1)
    page = detail(staff_client, v4)

    table = page.split('data-role="held-out-comparison"')[1].split("</table>")[0]
    pbc = table.split('data-source="pbc/TEST"')[1].split("</tr>")[0]
    assert "95.5%" in pbc and "93.2%" in pbc and "−2.3 points" in pbc and "worse, beyond noise" in pbc
    bcci = table.split('data-source="blood-cell-images/TEST"')[1].split("</tr>")[0]
    assert "87.5%" in bcci and "87.0%" in bcci and "within noise" in bcci
    # Each row's source heads it, so that a screen reader reads each figure with its source.
    assert '<th scope="row">pbc/TEST</th>' in pbc and '<th scope="row">blood-cell-images/TEST</th>' in bcci
    assert "Newcombe" in page and "leaves out zero" in page  # the rule is stated

    warning = activation_warning(v4)
    assert f"v{v4.pk} called fewer right than v{v1.pk}" in warning
    assert "pbc/TEST 93.2% against 95.5%" in warning and "blood-cell-images" not in warning
    assert warning in page.split('data-role="activation-warning">')[1]


def test_a_held_out_difference_within_noise_issues_no_warning():
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.9, 0.875, n_pbc=40, n_bcci=40))
    metrics = adapted_metrics(0.875, 0.85, adaptation(0.9375, 0.9375), "v1")
    metrics["sources"]["pbc"]["TEST"] = metrics["TEST"] = split(0.875, 40)
    metrics["sources"]["blood-cell-images"]["TEST"] = split(0.85, 40)
    child = make(metrics=metrics, parent=v1)
    assert activation_warning(child) == ""


def test_the_difference_of_two_shares_is_beyond_noise_only_when_its_interval_leaves_out_zero():
    share, difference = presenters.Share, presenters.Difference
    assert not difference(share(45, 48), share(46, 48)).worse  # the audit's 45 vs 46 of 48
    assert difference(share(150, 200), share(180, 200)).worse
    low, high = difference(share(1592, 1708), share(1631, 1708)).range_95  # 93.2% against 95.5%
    assert low < -2.3 < high < 0


def test_a_parent_already_adapted_on_the_same_cells_is_no_fair_comparison(staff_client):
    # v6 adapted from v4, itself adapted on the lab's cells: v4's 95.8% on them is inflated.
    v1 = make(ModelVersion.Status.READY, two_source_metrics(0.955, 0.875))
    v4 = make(ModelVersion.Status.ACTIVE, adapted_metrics(0.955, 0.875, adaptation(0.9375, 0.9375), "v1"),
              parent=v1)
    v6 = make(metrics=adapted_metrics(0.955, 0.875, adaptation(0.75, 0.958, cells=200), f"v{v4.pk}"),
              parent=v4)
    page = detail(staff_client, v6)
    note = page.split('data-role="parent-tuned">')[1].split("</p>")[0]
    assert f"v{v4.pk} was itself adapted to this lab's reviewed cells" in note
    assert "no fair comparison" in note
    assert "worse calls than the version it was adapted from" not in page
    assert activation_warning(v6) == ""
    lab = page.split('data-role="lab-figures">')[1].split("</p>")[0]
    assert "beyond noise" not in lab  # no verdict on the inflated figure

    # A held-out drop still counts against it.
    ModelVersion.objects.filter(pk=v6.pk).update(
        metrics=adapted_metrics(0.932, 0.875, adaptation(0.75, 0.958, cells=200), f"v{v4.pk}"))
    assert "pbc/TEST 93.2% against 95.5%" in activation_warning(ModelVersion.objects.get(pk=v6.pk))


def test_the_labs_figure_has_a_range_and_a_difference_within_noise_is_no_verdict(staff_client):
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    left_out = {"BASOPHIL": 30, "LYMPHOCYTE_ATYPICAL": 34}
    v4 = make(metrics=adapted_metrics(0.955, 0.875, adaptation(45 / 48, 46 / 48, left_out=left_out), "v1"),
              parent=v1)
    page = detail(staff_client, v4)
    lab = page.split('data-role="lab-figures">')[1].split("</p>")[0]
    assert "45 of 48" in lab and "46 of 48" in lab and "95% range" in lab and "within noise" in lab
    assert "worse calls than the version it was adapted from" not in page
    assert activation_warning(v4) == ""
    # 64 of 112 reviewed cells are of types a four-type network has no class for: said at the top.
    left = page.split('data-role="left-out">')[1].split("</p>")[0]
    assert left.startswith(f"57% of this lab's reviewed cells (64 of 112) are of types v{v4.pk} cannot call: "
                           "basophil 30")
    assert page.index('data-role="left-out"') < page.index('data-role="adaptation"')


def test_an_adapted_versions_review_flag_text_says_what_it_kept_and_what_was_refitted(staff_client, settings):
    settings.REVIEW_CONFIDENCE_THRESHOLD = None
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    v4 = make(metrics=adapted_metrics(0.955, 0.875, adaptation(0.9375, 0.9375), f"v{v1.pk}"), parent=v1)
    note = detail(staff_client, v4).split('data-role="review-threshold">')[1].split("</p>")[0]
    assert f"the confidence threshold of v{v1.pk}, the version it was adapted from, kept unchanged" in note
    assert f"v{v1.pk} chose it on its own validation cells" in note
    assert "98th percentile of its training cells" in note and "fitted on the out-of-fold calls" in note
    assert "pbc/TEST: 12% of 1708 cells flagged" in note
    assert "20% of cells flagged" not in note, "v1's figure, at v1's temperature, is not v4's"

    v6 = make(metrics=adapted_metrics(0.955, 0.875, adaptation(0.9375, 0.9375), f"v{v4.pk}"), parent=v4)
    note = detail(staff_client, v6).split('data-role="review-threshold">')[1].split("</p>")[0]
    assert f"v{v4.pk} had kept it from v{v1.pk}" in note and f"v{v1.pk} chose it" in note
    assert f"v{v4.pk} chose it" not in note

    metrics = adapted_metrics(0.955, 0.875, adaptation(0.9375, 0.9375), f"v{v1.pk}")
    for figures in [metrics["TEST"], *(source["TEST"] for source in metrics["sources"].values())]:
        del figures["review_flag"]
    bare = make(metrics=metrics, parent=v1)
    assert "No flag rate was measured on its own TEST photographs" in detail(staff_client, bare)


def test_an_adapted_versions_flag_rate_leaves_out_photographs_of_cells_also_in_train(staff_client, settings):
    """Its sentence quoted the review flag of the whole TEST, copies of TRAIN cells included, while
    every other figure the page quotes of a split is the one without them, and says so."""
    settings.REVIEW_CONFIDENCE_THRESHOLD = None
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    metrics = adapted_metrics(0.955, 0.875, adaptation(0.9375, 0.9375), f"v{v1.pk}")
    for figures in (metrics["TEST"], metrics["sources"]["pbc"]["TEST"]):
        figures["without_same_cell_in_train"] = split(0.95, 1700, flagged=0.15)
    v4 = make(metrics=metrics, parent=v1)
    page = detail(staff_client, v4)
    note = page.split('data-role="review-threshold">')[1].split("</p>")[0]
    assert ("pbc/TEST (without its 8 photographs of cells also photographed in TRAIN): 15% of 1700 cells "
            "flagged, 80% of its wrong calls among them") in note
    assert "1708 cells flagged" not in note
    assert "blood-cell-images/TEST: 12% of 2487 cells flagged" in note  # no copies there: the whole split's
    # The table of the photographs never trained on gives its own flag rate, as the whole split's does.
    assert "15% of these 1700 cells flagged" in page and "12% of these 1708 cells flagged" in page

    # Stored before runs measured the flag apart: the whole split's, as the page always said it.
    for figures in (metrics["TEST"], metrics["sources"]["pbc"]["TEST"]):
        del figures["without_same_cell_in_train"]["review_flag"]
    earlier = make(metrics=metrics, parent=v1)
    note = detail(staff_client, earlier).split('data-role="review-threshold">')[1].split("</p>")[0]
    assert "pbc/TEST: 12% of 1708 cells flagged, 80% of its wrong calls among them" in note
    assert "without its 8 photographs" not in note


def test_the_activate_buttons_carry_the_warning_and_roll_back_only_goes_back(staff_client, staff):
    v1 = make(metrics=two_source_metrics(0.955, 0.875))
    v4 = make(metrics=adapted_metrics(0.932, 0.875, adaptation(0.9375, 0.9375), "v1"), parent=v1)
    activate_version(v1, user=staff)
    activate_version(v4, user=staff)
    activate_version(v1, user=staff)  # back to v1: v4 is newer than the version serving
    listing = text(staff_client.get(reverse("models:list")).content.decode())
    assert f"Roll back to v{v4.pk}" not in listing
    question = re.search(rf'action="/models/{v4.pk}/activate/" data-confirm="([^"]*)"', listing)[1]
    assert question.startswith(f"Activate v{v4.pk}? Warning: On held-out photographs")
    assert "pbc/TEST 93.2% against 95.5%" in question
    page = detail(staff_client, v4)
    question = re.search(rf'action="/models/{v4.pk}/activate/" data-confirm="([^"]*)"', page)[1]
    assert question.startswith(f"Activate v{v4.pk}? Warning: ") and "pbc/TEST 93.2%" in question
    assert f">Activate v{v4.pk}</button>" in page

    activate_version(v4, user=staff)  # now v1 is older and served before: a roll-back
    listing = text(staff_client.get(reverse("models:list")).content.decode())
    assert f"Roll back to v{v1.pk}? Photographs" in listing and f">Roll back to v{v1.pk}</button>" in listing


def test_the_page_says_whether_an_adaptations_folds_kept_photographs_whole(staff_client):
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    by_cell = make(metrics=adapted_metrics(0.95, 0.95, adaptation(0.95, 0.95), "v1"), parent=v1)
    by_photograph = make(metrics=adapted_metrics(
        0.95, 0.95, {**adaptation(0.95, 0.95), "photographs": 31}, "v1"), parent=v1)

    assert ("2-fold cross-validation by cell: each cell called by a fine-tune that never saw it."
            in detail(staff_client, by_cell))
    assert ("2-fold cross-validation by photograph (31 photographs): each cell called by a fine-tune "
            "that saw no cell of its photograph." in detail(staff_client, by_photograph))


def test_smaller_wording_on_the_model_pages(staff_client):
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875),
              history=[{"epoch": 1, "loss": 1.0, "accuracy": 0.6},
                       {"epoch": 2, "loss": 0.7, "accuracy": 0.8}])
    v4 = make(metrics=adapted_metrics(0.955, 0.875, adaptation(0.9375, 0.9375), "v1"), parent=v1)
    data = detail(staff_client, v4).split("<h2>Data</h2>")[1].split("</section>")[0]
    assert "originals.csv group" not in data and "validation split none" in data

    # Only training is drawn: the chart says so, not "training and validation".
    page = detail(staff_client, v1)
    assert 'aria-label="Loss per epoch: training"' in page and "training and validation" not in page

    empty = make(ModelVersion.Status.FAILED, {}, model_sha256="")
    held_out = detail(staff_client, empty).split("<h2>Held-out metrics</h2>")[1].split("</section>")[0]
    assert f"None recorded for v{empty.pk}." in held_out and "Measured on the float network" not in held_out

    # A cancelled adaptation's epochs run across its folds: no curve labelled "training".
    cancelled = make(ModelVersion.Status.CANCELLED, {}, parent=v1, model_sha256="", history=[],
                     progress={"state": "cancelled", "epoch": 4, "epochs": 9,
                               "stage": "cross-validation fold 2 of 2",
                               "history": [{"epoch": k, "loss": 1 / k} for k in range(1, 5)]})
    page = detail(staff_client, cancelled)
    assert "<svg" not in page and 'data-role="curves-withheld"' in page

    response = staff_client.post("/models/999999/activate/")
    assert response.status_code == 404
    page = text(response.content.decode())
    assert "There is no model version v999999" in page and "sample, photograph or cell" not in page
    response = staff_client.get("/models/999999/progress.json", HTTP_ACCEPT="application/json")
    assert response.status_code == 404 and "model version v999999" in response.json()["error"]


def adaptation_progress(epoch, stage, phase, fold, phase_epoch):
    """An adaptation's progress record as classifier.training.adaptation writes it: two folds and
    the final fine-tune, 3 epochs each."""
    return {"state": "running", "epoch": epoch, "epochs": 9, "stage": stage, "phase": phase, "fold": fold,
            "folds": 2, "phase_epoch": phase_epoch, "phase_epochs": 3}


@pytest.mark.parametrize("progress, counter", [
    ({"state": "queued", "epoch": 0, "epochs": 9}, "epoch 0 of 9 in all (each cross-validation fold's"),
    (adaptation_progress(1, "cross-validation fold 1 of 2", PHASE_CROSS_VALIDATION, 1, 1),
     "fold 1 of 2, epoch 1 of 3 (1 of 9 in all"),
    (adaptation_progress(5, "cross-validation fold 2 of 2", PHASE_CROSS_VALIDATION, 2, 2),
     "fold 2 of 2, epoch 2 of 3 (5 of 9 in all"),
    (adaptation_progress(8, "fine-tune on every reviewed cell", PHASE_FINAL, None, 2),
     "final fine-tune on every reviewed cell, epoch 2 of 3 (8 of 9 in all)"),
    (adaptation_progress(9, PHASE_EVALUATING, PHASE_EVALUATING, None, None), "epoch 9 of 9 in all"),
])
def test_an_adaptations_progress_counts_its_folds_epochs_honestly(staff_client, progress, counter):
    v1 = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    running = make(ModelVersion.Status.TRAINING, {}, parent=v1, model_sha256="", progress=progress)
    data = staff_client.get(reverse("models:progress", args=[running.pk])).json()
    assert data["counter"].startswith(counter) and data["epochs"] == 9
    assert counter in detail(staff_client, running)


def test_the_figure_in_words_is_that_of_the_photographs_never_trained_on(staff_client):
    # blood-cell-images' TEST holds 87 photographs of cells also photographed in TRAIN (originals.csv):
    # the sentence said "91% of cells right (2,487 photographs never trained on)", its figure and
    # count those of all 2,487, the 87 among them.
    metrics = two_source_metrics(0.955, 0.905)
    metrics["sources"]["blood-cell-images"]["TEST"]["without_same_cell_in_train"] = split(0.8767, 2400)
    words = detail(staff_client, make(ModelVersion.Status.ACTIVE, metrics))
    words = words.split('data-role="in-words"')[1].split("</section>")[0]
    assert ("on photographs like pbc/TEST: 96% of cells right (1,708 photographs never trained on); "
            "on photographs like blood-cell-images/TEST: 88% of cells right (2,400 photographs never "
            "trained on; 87 more, of cells also photographed in TRAIN, left out).") in words
    assert "91%" not in words and "2,487" not in words


def test_a_test_split_of_cells_also_in_train_alone_gives_no_figure_in_words(staff_client):
    # A lab's folder copied into both TRAIN and TEST: none of its TEST photographs was held out, and
    # the sentence said "0% of cells right".
    metrics = two_source_metrics(0.955, 1.0, n_bcci=40)
    metrics["sources"]["blood-cell-images"]["TEST"]["without_same_cell_in_train"] = split(0.0, 0)
    words = detail(staff_client, make(ModelVersion.Status.ACTIVE, metrics))
    words = words.split('data-role="in-words"')[1].split("</section>")[0]
    assert ("on photographs like blood-cell-images/TEST: no figure, as all 40 are of cells also "
            "photographed in TRAIN.") in words
    assert "0% of cells right" not in words and "100%" not in words


def test_an_adaptation_that_found_one_of_two_folders_names_the_one_it_measured(staff_client):
    # The own-data audit: the parent's first folder gone, the adaptation measured the second's TEST,
    # and its page said "on photographs like dup/TEST", the folder it never found.
    parent = make(ModelVersion.Status.ACTIVE, two_source_metrics(0.955, 0.875))
    record = {**adaptation(0.9, 0.85), "replay": {"per_class": 50, "cells": 60, "sources": ["clean4"],
                                                  "missing": ["/data/dup"]}}
    metrics = {"temperature": 1.1, "TEST": split(0.25, 20), "adaptation": record,
               "sources": {"clean4": {"order": 0, "path": "/data/clean4", "TEST": split(0.25, 20)}}}
    adapted = make(metrics=metrics, parent=parent, dataset_path="/data/dup:/data/clean4")
    page = detail(staff_client, adapted)
    assert "on photographs like clean4/TEST: 25% of cells right" in page and "dup/TEST" not in page
    assert "Replayed 60 training images of clean4 (/data/dup not found here)." in page


def copies_then_clean_metrics(copies, clean, n=20):
    """A run on `dup`, whose TEST holds byte-for-byte copies of its own TRAIN photographs alone (so
    its figures without them are of n = 0), then on `clean4`, as the own-data audit trained."""
    dup_test = dict(split(copies, n), without_same_cell_in_train=split(0.0, 0))
    return {"temperature": 1.1,
            "sources": {"dup": {"order": 0, "path": "/data/dup", "TEST": dup_test},
                        "clean4": {"order": 1, "path": "/data/clean4", "TEST": split(clean, n)}},
            "validation": split(0.9, 16)}


def test_a_test_of_copies_of_train_alone_is_no_held_out_figure_anywhere(staff_client):
    # The audit's `--data dup --data clean4`: the page said dup/TEST had no held-out figure, yet drew
    # a table "without cells also photographed in TRAIN" of n = 0, headlined dup TEST's figure on
    # the copies, and warned "called 25% of the dup TEST cells right" from those copies.
    version = make(metrics=copies_then_clean_metrics(0.25, 0.9), dataset_path="/data/dup:/data/clean4")
    page = detail(staff_client, version)
    assert "without cells also photographed in TRAIN" not in page and "n = 0" not in page
    assert ("No held-out figure: all 20 are of cells also photographed in TRAIN, so these figures say "
            "nothing of photographs it never saw.") in page
    assert "on photographs like dup/TEST: no figure, as all 20 are of cells also photographed in TRAIN" in (
        page)
    assert activation_warning(version) == ""
    assert presenters.headline(version.metrics)["where"] == "clean4 TEST"
    listing = text(staff_client.get(reverse("models:list")).content.decode())
    assert "accuracy 0.9000, clean4 TEST" in listing and "dup TEST" not in listing
    # A figure at chance on the photographs it never trained on is still warned of, by name.
    guessing = make(metrics=copies_then_clean_metrics(1.0, 0.25), dataset_path="/data/dup:/data/clean4")
    assert activation_warning(guessing).startswith(
        f"v{guessing.pk} called 25% of the clean4 TEST cells right")


def test_a_refit_on_copies_of_train_alone_is_warned_of_as_measured_on_nothing(staff_client):
    # A folder copied into both TRAIN and TEST, refitted (no validation split): every figure it holds
    # is on cells it learnt from, and nothing warned before activating it.
    test = dict(split(1.0, 20), without_same_cell_in_train=split(0.0, 0))
    version = make(metrics={"temperature": 1.0, "refit": {"epochs": 1}, "TEST": test},
                   dataset_path="/data/dup", hyperparameters={"epochs": 1, "validation_fraction": 0.0})
    words = (f"v{version.pk} was measured on no cells it did not learn from (dup/TEST: all 20 are of cells "
             "also photographed in TRAIN, and it kept no validation split): nothing says how often its "
             "calls are right.")
    assert activation_warning(version) == words
    assert words in detail(staff_client, version)
    assert presenters.headline(version.metrics) is None


def test_an_adaptation_is_not_compared_with_its_parent_on_copies_of_train(staff_client):
    # Both measured on dup/TEST, all copies of the parent's TRAIN: a fall there from 100% to 50% is
    # no held-out drop, and was warned of as one.
    parent = make(ModelVersion.Status.ACTIVE, copies_then_clean_metrics(1.0, 0.9, n=400))
    metrics = copies_then_clean_metrics(0.5, 0.9, n=400)
    metrics.pop("validation")
    metrics["adaptation"] = adaptation(0.9, 0.9)
    adapted = make(metrics=metrics, parent=parent, dataset_path="/data/dup:/data/clean4")
    assert presenters.held_out_drop_warning(adapted, parent) == ""
    assert [row.source for row in presenters.held_out_comparison(adapted, parent)] == ["clean4/TEST"]
    assert activation_warning(adapted, parent) == ""


def partly_copies(metrics, whole, held_out, source="blood-cell-images", n=2487, copies=87):
    """``metrics`` with ``source``'s TEST holding ``copies`` photographs of cells also photographed in
    TRAIN among its ``n``: ``whole`` the split's accuracy, ``held_out`` that without them."""
    without = split(held_out, n - copies)
    metrics["sources"][source]["TEST"] = dict(split(whole, n), without_same_cell_in_train=without)
    return metrics


def test_the_headline_and_models_quote_the_figure_without_copies_of_train_as_in_words(staff_client):
    # The list headlined "accuracy 0.9050, blood-cell-images TEST", the whole split's, 87 copies of
    # TRAIN among its 2,487, and `manage.py models` printed it, where the sentence beside it said 88%
    # of 2,400 photographs never trained on.
    metrics = partly_copies(two_source_metrics(0.955, 0.905), 0.905, 0.8767)
    metrics["sources"]["blood-cell-images"]["order"], metrics["sources"]["pbc"]["order"] = 0, 1
    version = make(ModelVersion.Status.ACTIVE, metrics, dataset_path="/data/blood-cell-images:/data/pbc")
    shown = presenters.headline(version.metrics)
    assert shown["accuracy"] == 0.8767 and shown["table"]["n"] == 2400
    listing = text(staff_client.get(reverse("models:list")).content.decode())
    assert ("accuracy 0.8767, blood-cell-images TEST, without its 87 photographs of cells also "
            "photographed in TRAIN") in listing
    assert "88% of cells right" in listing and "0.9050" not in listing
    out = StringIO()
    call_command("models", stdout=out)
    line = out.getvalue().splitlines()[1]
    assert "0.8767" in line and "0.9050" not in line
    assert line.endswith("blood-cell-images TEST, without its 87 photographs of cells also photographed "
                         "in TRAIN; pbc TEST 0.9550")


def test_a_figure_at_chance_without_the_copies_of_train_is_warned_of(staff_client):
    # 40% of 2,487 cleared the chance line (25% + 10 points) thanks to 87 copies of TRAIN; on the
    # 2,400 photographs never trained on it called 30% right, and nothing warned.
    metrics = partly_copies(two_source_metrics(0.955, 0.40), 0.40, 0.30)
    version = make(metrics=metrics)
    assert activation_warning(version) == (
        f"v{version.pk} called 30% of the blood-cell-images TEST cells right (without its 87 photographs "
        "of cells also photographed in TRAIN), no better than guessing among its 4 types (25%): it would "
        "serve calls a lab cannot use.")


def test_an_adaptation_is_compared_with_its_parent_without_copies_of_train(staff_client):
    # Both TEST splits held 87 copies of TRAIN: the comparison read 90.5% against 90.0% of 2,487,
    # within noise, where on the 2,400 photographs neither trained on it fell from 87.7% to 85.0%.
    v1 = make(ModelVersion.Status.ACTIVE, partly_copies(two_source_metrics(0.955, 0.905), 0.905, 0.8767))
    metrics = partly_copies(adapted_metrics(0.955, 0.90, adaptation(0.9375, 0.9375), "v1"), 0.90, 0.85)
    v4 = make(metrics=metrics, parent=v1)
    page = detail(staff_client, v4)
    row = page.split('data-source="blood-cell-images/TEST"')[1].split("</tr>")[0]
    row = re.sub(r"<[^>]+>", "", row)
    assert "87.7% of 2400" in row and "85.0% of 2400" in row and "worse, beyond noise" in row
    assert "90.5%" not in row and "2487" not in row
    assert "blood-cell-images/TEST 85.0% against 87.7%" in activation_warning(v4)
