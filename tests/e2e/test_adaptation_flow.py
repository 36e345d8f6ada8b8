""""Adapt to this lab" with the real train worker: a staff member presses the button on the Models
page, the worker fine-tunes the active version on the lab's reviewed cells (with a replay of its
training folder and the cross-validation folds, at the settings the session's worker was started
with), and the new version records what it was adapted on. The network is the small published one,
trained here in seconds on cells drawn in code.
"""

import pytest
from django.urls import reverse

from tests.conftest import WORKER_ADAPTATION_EPOCHS, WORKER_ADAPTATION_FOLDS
from tests.e2e.test_retraining import follow_progress
from tests.webapp.lab_factories import with_role
from tests.webapp.test_adaptation import reviewed_cells, train_tiny_network
from webapp.models import ModelVersion
from webapp.services.model_versions import activate_version, register_model_directory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ADAPTATION_TIMEOUT_S = 300  # three short fine-tunes, after TensorFlow's import


def test_adapt_to_this_lab_runs_on_the_worker_and_records_its_cells(client, django_user_model, celery_worker,
                                                                     isolated_media_root, tmp_path, settings):
    # This process plans the progress bar, the worker runs the plan: both read the same settings.
    settings.ADAPTATION_EPOCHS, settings.ADAPTATION_FOLDS = WORKER_ADAPTATION_EPOCHS, WORKER_ADAPTATION_FOLDS
    folder, data, _ = train_tiny_network(tmp_path)
    base, _ = register_model_directory(folder, dataset_path=str(data))
    base = activate_version(base)
    reviewed_cells(base, isolated_media_root)  # two reviewed cells of each of the four types
    lead = with_role(django_user_model.objects.create_user(
        "lead", password="a-long-passphrase-1", is_staff=True), "admin")
    client.force_login(lead)

    response = client.post(reverse("models:adapt"))
    version = ModelVersion.objects.get(status=ModelVersion.Status.TRAINING)
    assert response.status_code == 302 and response.url == reverse("models:detail", args=[version.pk])
    final, seen = follow_progress(client, version, timeout=ADAPTATION_TIMEOUT_S)

    assert final["status"] == "ready", final["failure_reason"]
    version.refresh_from_db()
    assert version.source == ModelVersion.Source.ADAPTED and version.adapted_from_id == base.pk
    assert version.created_by == lead and version.model_sha256
    record = version.metrics["adaptation"]
    assert record["cells"] == 8 and record["left_out"] == {}
    assert record["folds"] == WORKER_ADAPTATION_FOLDS and record["epochs"] == WORKER_ADAPTATION_EPOCHS
    assert record["cross_validated"]["n"] == 8  # every cell scored by a fine-tune that never saw it
    assert record["replay"]["sources"] == ["lab-a"]
    assert version.metrics["sources"]["lab-a"]["TEST"]["n"] == 4
    planned = (WORKER_ADAPTATION_FOLDS + 1) * WORKER_ADAPTATION_EPOCHS
    training_reports = [report for report in seen if report["status"] == "training"]
    assert any(0 < report["epoch"] < report["epochs"] == planned for report in training_reports)
    assert ModelVersion.objects.get(pk=base.pk).status == ModelVersion.Status.ACTIVE  # never swapped in

    page = client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert f"Adapted from <a href=\"{reverse('models:detail', args=[base.pk])}\">v{base.pk}</a> on 8" in page
