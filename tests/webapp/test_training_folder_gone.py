"""A data folder renamed or removed after the site queued a training on it: the failed version said
"some classes have no training images left" (the folder gone after the run listed its images) or
"training data folder ... does not exist", never that the folder queued with was gone since."""

import os

import pytest
from django.urls import reverse

import classifier.dataset
from tests.synthetic_cells import write_cell_folder
from webapp.services import training

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued_on(tmp_path, monkeypatch, staff, sent_tasks, django_capture_on_commit_callbacks):
    """A training queued from the site on a tiny drawn data folder: (version, its folder)."""
    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    folder = write_cell_folder(tmp_path / "lab", per_class=4, test_per_class=1)
    with django_capture_on_commit_callbacks(execute=True):
        version = training.start_training(staff, "paper", 1, task="4class", data_dir=str(folder))
    assert sent_tasks == [("train_model_version", (version.pk,))]
    return version, folder


def gone_reason(folder):
    return (f"The data folder {folder} is no longer there (renamed or removed since the training was "
            "queued). Put it back where it was, or start the training again on the folder where it is now.")


def test_a_folder_renamed_before_the_worker_starts_fails_the_version_saying_so(queued_on, staff_client):
    version, folder = queued_on
    os.rename(folder, folder.with_name("lab-2026"))
    training.run_training(version.pk)  # what the train worker runs
    version.refresh_from_db()
    assert version.status == "failed" and version.failure_reason == gone_reason(folder)
    page = staff_client.get(reverse("models:list")).content.decode()
    assert f"The data folder {folder} is no longer there" in page


def test_a_folder_removed_while_the_run_reads_it_is_named_not_its_empty_classes(queued_on, monkeypatch):
    # Gone after the run listed its images: every image read as unreadable, and the version said
    # "after setting aside the validation split and skipping unreadable files, some classes have no
    # training images left: EOSINOPHIL: 0, ...".
    version, folder = queued_on
    load = classifier.dataset.load_prepared_margins

    def renamed_first(*args, **kwargs):
        if folder.exists():
            os.rename(folder, folder.with_name("lab-old"))
        return load(*args, **kwargs)

    monkeypatch.setattr(classifier.dataset, "load_prepared_margins", renamed_first)
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and version.failure_reason == gone_reason(folder)


def test_a_folder_still_there_keeps_the_runs_own_reason(queued_on, monkeypatch):
    # Every image unreadable with the folder in place: the run's words stand.
    version, folder = queued_on
    load = classifier.dataset.load_prepared_margins

    def none_decoded(*args, **kwargs):
        loaded = load(*args, **kwargs)
        return {margin: (inputs, ok & False, rest) for margin, (inputs, ok, rest) in loaded.items()}

    monkeypatch.setattr(classifier.dataset, "load_prepared_margins", none_decoded)
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and folder.exists()
    assert version.failure_reason.startswith(
        "after setting aside the validation split and skipping unusable files, some classes have no "
        "training images left: EOSINOPHIL: 0")
