""""Adapt to this lab" with the real train worker: a staff member presses the button on the Models
page, the worker fine-tunes the active version on the lab's reviewed cells (with a replay of its
training folder and the cross-validation folds, at the site's own settings), and the new version
records what it was adapted on. The network is the small published one, trained here in seconds on
cells drawn in code, so the wait is mostly the worker importing TensorFlow.
"""

import pytest
from django.urls import reverse

from tests.e2e.test_retraining import follow_progress
from tests.webapp.test_adaptation import reviewed_cells, train_tiny_network
from webapp.models import ModelVersion
from webapp.services.model_versions import activate_version, register_model_directory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ADAPTATION_TIMEOUT_S = 420  # six fine-tunes (five folds and the final one), after TensorFlow's import


def test_adapt_to_this_lab_runs_on_the_worker_and_records_its_cells(client, django_user_model, celery_worker,
                                                                     isolated_media_root, tmp_path):
    folder, data, _ = train_tiny_network(tmp_path)
    base, _ = register_model_directory(folder, dataset_path=str(data))
    base = activate_version(base)
    reviewed_cells(base, isolated_media_root)  # two reviewed cells of each of the four types
    lead = django_user_model.objects.create_user("lead", password="a-long-passphrase-1", is_staff=True)
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
    assert record["folds"] >= 2 and record["cross_validated"]["n"] == 8  # scored on cells held out
    assert record["replay"]["sources"] == ["lab-a"]
    assert version.metrics["sources"]["lab-a"]["TEST"]["n"] == 4
    assert any(0 < report["epoch"] < report["epochs"] for report in seen if report["status"] == "training")
    assert ModelVersion.objects.get(pk=base.pk).status == ModelVersion.Status.ACTIVE  # never swapped in

    page = client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert f"Adapted from <a href=\"{reverse('models:detail', args=[base.pk])}\">v{base.pk}</a> on 8" in page
