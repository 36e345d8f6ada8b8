""""Adapt to this lab" cross-validates by photograph: the service hands each reviewed cell's
photograph to the classifier, plans its folds on photographs, and the run's progress record says
its phase, fold and epoch within it, then that it measures the TEST sets."""

import pytest

from classifier.training.adaptation import PHASE_EVALUATING
from tests.webapp.test_adaptation import active, reviewed_cells, tiny_network  # noqa: F401 (fixtures)
from webapp.models import Cell, ModelVersion
from webapp.services import training


@pytest.mark.django_db
def test_the_adaptation_is_given_each_cells_photograph(active, isolated_media_root,  # noqa: F811
                                                        django_user_model):
    reviewed_cells(active, isolated_media_root, per_type=2, photographs=2)
    version = training.start_adaptation(django_user_model.objects.create_user("lead", is_staff=True))
    reviewed = training.adaptation_settings(version)["reviewed"]
    image_of = {cell.window.name: cell.image_id for cell in Cell.objects.exclude(corrected_type="")}
    assert len(reviewed) == 8
    for path, _, photograph in reviewed:
        window = next(name for name in image_of if path.endswith(name))
        assert photograph == f"photograph {image_of[window]}"
    assert len({photograph for _, _, photograph in reviewed}) == 2
    # Two photographs, two folds (ADAPTATION_FOLDS), one epoch each, and the final fine-tune.
    assert version.progress["epochs"] == 3


@pytest.mark.django_db
def test_cells_of_one_photograph_are_not_cross_validated_against_each_other(
        active, isolated_media_root, django_user_model):  # noqa: F811
    reviewed_cells(active, isolated_media_root, per_type=2, photographs=1)  # 8 cells, one photograph
    version = training.start_adaptation(django_user_model.objects.create_user("lead", is_staff=True))
    assert version.progress["epochs"] == 1, "no fold can hold out a photograph: the final fine-tune alone"

    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "ready", version.failure_reason
    record = version.metrics["adaptation"]
    assert record["folds"] == 0 and record["photographs"] == 1 and record["cross_validated"] is None


@pytest.mark.django_db
def test_the_progress_record_names_the_phase_fold_and_epoch_within_it(
        active, isolated_media_root, django_user_model, monkeypatch):  # noqa: F811
    reviewed_cells(active, isolated_media_root, per_type=2, photographs=2)
    version = training.start_adaptation(django_user_model.objects.create_user("lead", is_staff=True))
    updates = []
    real = training._update_progress

    def recorded(version_id, **changes):
        updates.append(changes)
        return real(version_id, **changes)

    monkeypatch.setattr(training, "_update_progress", recorded)
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "ready", version.failure_reason

    reports = [u for u in updates if "phase" in u]
    assert [(r["epoch"], r["epochs"], r["phase"], r["fold"], r["folds"], r["phase_epoch"], r["phase_epochs"])
            for r in reports] == [
        (1, 3, "cross-validation", 1, 2, 1, 1), (2, 3, "cross-validation", 2, 2, 1, 1),
        (3, 3, "final fine-tune", None, 2, 1, 1), (3, 3, PHASE_EVALUATING, None, 2, None, 1)]
    # After the last epoch the page can say what it waits for, and tells no time left it cannot know.
    evaluating = reports[-1]
    assert evaluating["stage"] == "evaluating on each source's TEST" and evaluating["eta_seconds"] is None
    # The learning curve keeps the three epochs alone.
    assert [row["epoch"] for row in version.progress["history"]] == [1, 2, 3]
    assert version.progress["state"] == "done" and ModelVersion.objects.get(pk=version.pk).is_trained
