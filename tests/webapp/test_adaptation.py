""""Adapt to this lab" from the Models page: the active version fine-tuned on the lab's reviewed
cells through the real service and training code (a tiny network on drawn cells, run as the train
worker runs it), the refusals, staff-only access and cancellation."""

import hashlib

import numpy as np
import pytest
from django.urls import reverse

from classifier.training import TrainingConfig, train_classifier
from classifier.training.adaptation import DEFAULT_EPOCHS, DEFAULT_FOLDS
from tests.synthetic_cells import draw_cell, write_cell_folder
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell, ModelVersion, SmearImage
from webapp.selectors import adaptation_epochs, adaptation_plan
from webapp.services import training
from webapp.services.model_versions import activate_version, register_model_directory

PASSWORD = "a-long-passphrase-1"
FOUR = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def train_tiny_network(root):
    """(model folder, its data folder "lab-a", its prepared-input cache): the published network
    trained for one epoch on a few drawn cells, in seconds."""
    data = write_cell_folder(root / "lab-a", per_class=4, test_per_class=1, seed=4)
    config = TrainingConfig(data_dir=str(data), architecture="paper", task="4class", epochs=1,
                            batch_size=8, cache_dir=str(root / "cache"))
    return train_classifier(config).save(root / "model"), data, root / "cache"


@pytest.fixture(scope="module")
def tiny_network(tmp_path_factory):
    return train_tiny_network(tmp_path_factory.mktemp("adapt-site"))


@pytest.fixture
def active(tiny_network, monkeypatch, settings):
    import classifier.dataset

    folder, data, cache = tiny_network
    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", cache)
    settings.ADAPTATION_EPOCHS, settings.ADAPTATION_FOLDS = 1, 2
    version, _ = register_model_directory(folder, dataset_path=str(data))
    return activate_version(version)


def reviewed_cells(version, media_root, per_type=2, extra=(), photographs=None):
    """Samples whose cells were reviewed, each with its context window stored as the site stores
    it; the reviewer gave each cell the type of the drawn cell. ``photographs`` (default: per_type)
    photographs share the cells in turn, each holding cells of several types."""
    photographs = photographs or per_type
    types = [name for _ in range(per_type) for name in FOUR] + list(extra)
    shares = [types[k::photographs] for k in range(photographs)]
    rng = np.random.default_rng(11)
    (media_root / "windows").mkdir(parents=True, exist_ok=True)
    for k, share in enumerate(shares):
        sample = make_sample(accession=f"H-{len(types)}-{k}", types=["NEUTROPHIL"] * len(share),
                             version=version)
        cells = Cell.objects.filter(image__sample=sample).order_by("index")
        for cell, name in zip(cells, share, strict=True):
            window = f"windows/adapt-{cell.pk}.png"
            draw_cell(name if name in FOUR else "NEUTROPHIL", rng).save(media_root / window)
            Cell.objects.filter(pk=cell.pk).update(window=window, corrected_type=name, cell_type=name)
    return sample


@pytest.fixture
def staff_client(client, django_user_model):
    staff = with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True),
                      "admin")
    client.force_login(staff)
    return client


@pytest.mark.django_db
def test_adapting_the_active_version_makes_a_new_cross_validated_version(
        staff_client, active, tiny_network, isolated_media_root, sent_tasks,
        django_capture_on_commit_callbacks):
    reviewed_cells(active, isolated_media_root, extra=("BASOPHIL",))
    # One of the lab's photographs is, byte for byte, a TEST file of the source the run replays.
    test_file = sorted((tiny_network[1] / "TEST").rglob("*.*"))[0]
    SmearImage.objects.filter(pk=Cell.objects.exclude(corrected_type="").first().image_id).update(
        checksum=hashlib.sha256(test_file.read_bytes()).hexdigest())
    page = staff_client.get(reverse("models:list")).content.decode()
    assert "Adapt to this lab" in page
    assert "<strong>8</strong> reviewed cells of v" in page and "1 of other types left out" in page
    # The wait said for the site's settings (one epoch, two folds and the final fine-tune), not
    # the classifier's defaults' 10-15 minutes.
    assert "about 1-2 minutes on two CPU cores (1 epoch a fine-tune)" in page
    assert "It is cross-validated on the reviewed cells" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("models:adapt"))
    version = ModelVersion.objects.get(status=ModelVersion.Status.TRAINING)
    assert response.url == reverse("models:detail", args=[version.pk])
    assert sent_tasks == [("train_model_version", (version.pk,))]
    assert version.adapted_from == active and version.source == "adapted"
    assert version.progress["epochs"] == 3  # two folds and the final fine-tune, one epoch each

    training.run_training(version.pk)  # what the train worker runs
    version.refresh_from_db()
    assert version.status == "ready", version.failure_reason
    assert version.adapted_from_id == active.pk and version.include_reviewed_cells
    record = version.metrics["adaptation"]
    assert record["cells"] == 8 and record["left_out"] == {"BASOPHIL": 1} and record["folds"] == 2
    assert record["cross_validated"]["n"] == 8
    assert record["replay"]["sources"] == ["lab-a"] and record["replay"]["cells"] == 16
    assert version.metrics["sources"]["lab-a"]["TEST"]["n"] == 3  # the lab's photograph left out
    assert record["test_left_out"] == {"lab-a/TEST": 1}
    assert version.progress["state"] == "done" and version.progress["epoch"] == 3
    assert ModelVersion.objects.get(pk=active.pk).status == ModelVersion.Status.ACTIVE  # not replaced

    detail = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    right = round(8 * record["cross_validated"]["accuracy"])
    assert (f"Adapted from <a href=\"{reverse('models:detail', args=[active.pk])}\">v{active.pk}</a> on 8 "
            "reviewed cells of this lab.") in detail
    assert (f"Cross-validated on them: <strong>{right} of 8</strong> right ({100 * right / 8:.1f}%, "
            "95% range") in detail
    assert 'data-role="adaptation-confusion"' in detail and "Basophil 1" in detail
    assert (f"Left out of v{version.pk}'s held-out figures, as the lab's reviewed cells came from those "
            "very files: 1 photograph of lab-a/TEST.") in detail.replace("&#x27;", "'")
    # The reviewed cells are no random sample of the lab's: said where the figures stand.
    assert 'data-role="reviewed-not-random"' in detail and "mostly those the network was unsure of" in detail
    # Its cells are flagged at the threshold the lab's cells were flagged at before.
    kept = active.metrics["review"]["confidence_threshold"]
    assert version.metrics["review"]["confidence_threshold"] == kept
    assert (f"the confidence threshold of v{active.pk}, the version it was adapted from, kept "
            "unchanged") in detail


@pytest.mark.django_db
def test_the_adapt_card_says_the_wait_and_whether_it_cross_validates(staff_client, active, settings,
                                                                      isolated_media_root):
    reviewed_cells(active, isolated_media_root)
    settings.ADAPTATION_EPOCHS, settings.ADAPTATION_FOLDS = None, None  # the classifier's defaults
    page = staff_client.get(reverse("models:list")).content.decode()
    # Two photographs: two folds and the final fine-tune, 20 epochs each.
    assert f"about 6-8 minutes on two CPU cores ({DEFAULT_EPOCHS} epochs a fine-tune)" in page
    settings.ADAPTATION_FOLDS = 0
    page = staff_client.get(reverse("models:list")).content.decode()
    assert "about 2-2 minutes" not in page and "about 2-4 minutes" in page
    assert "It is not cross-validated (LEUKOSCOPE_ADAPTATION_FOLDS, or too few photographs)" in page
    # A photograph whose reviewed cells are all of types the network lacks makes no fold.
    settings.ADAPTATION_FOLDS = 2
    first = Cell.objects.exclude(corrected_type="").order_by("image_id").values_list("image_id", flat=True)[0]
    Cell.objects.filter(image_id=first).exclude(corrected_type="").update(corrected_type="PLATELET")
    page = staff_client.get(reverse("models:list")).content.decode()
    assert "It is not cross-validated" in page


@pytest.mark.parametrize("epochs, folds, plan, every_epoch", [
    (None, None, (DEFAULT_EPOCHS, DEFAULT_FOLDS), (DEFAULT_FOLDS + 1) * DEFAULT_EPOCHS),
    (4, None, (4, DEFAULT_FOLDS), (DEFAULT_FOLDS + 1) * 4),
    (None, 1, (DEFAULT_EPOCHS, 1), DEFAULT_EPOCHS),  # one fold is no cross-validation: the final alone
    (2, 3, (2, 3), 8),
    (2, 20, (2, 20), 18),  # no more folds than the 8 cells: 8 and the final
])
def test_the_sites_settings_plan_an_adaptation_and_unset_leave_the_classifiers(settings, epochs, folds, plan,
                                                                               every_epoch):
    settings.ADAPTATION_EPOCHS, settings.ADAPTATION_FOLDS = epochs, folds
    assert adaptation_plan() == plan
    assert adaptation_epochs(8) == every_epoch


@pytest.mark.django_db
def test_too_few_reviewed_cells_are_refused_with_the_reason(staff_client, active, isolated_media_root,
                                                             sent_tasks):
    reviewed_cells(active, isolated_media_root, per_type=1)  # 4 cells
    response = staff_client.post(reverse("models:adapt"), follow=True)
    assert "Adapting needs at least 5 reviewed cells of the types" in response.content.decode()
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).exists()
    assert sent_tasks == []


@pytest.mark.django_db
def test_nothing_to_adapt_without_an_active_version(staff_client):
    response = staff_client.post(reverse("models:adapt"), follow=True)
    assert "No version is active: there is nothing to adapt." in response.content.decode()


@pytest.mark.django_db
def test_an_adaptation_whose_replayed_folder_holds_no_photograph_is_refused_before_a_version(
        staff_client, active, tiny_network, isolated_media_root, tmp_path, sent_tasks):
    # The active version's data folder, checked out without its photographs (git-lfs pointers in
    # their place): the adaptation once became a version that failed seconds later, in the run.
    import shutil

    reviewed_cells(active, isolated_media_root)
    _, data, _ = tiny_network
    copy = shutil.copytree(data, tmp_path / "lab-a")
    for photograph in (copy / "TEST").rglob("*.*"):
        photograph.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    ModelVersion.objects.filter(pk=active.pk).update(dataset_path=str(copy))
    page = staff_client.post(reverse("models:adapt"), follow=True).content.decode()
    assert (f"None of the 4 images in {copy / 'TEST'} could be read as a photograph: replace them with the "
            f"photographs, or remove the folder. v{active.pk} learnt from this folder, and adapting it "
            "replays some of its photographs.") in page
    assert not ModelVersion.objects.filter(source=ModelVersion.Source.ADAPTED).exists()
    assert not sent_tasks


@pytest.mark.django_db
def test_adapting_is_for_staff_only(client, django_user_model, active, isolated_media_root):
    reviewed_cells(active, isolated_media_root)
    client.force_login(django_user_model.objects.create_user("tech", password=PASSWORD))
    assert client.post(reverse("models:adapt")).status_code == 403
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).exists()


@pytest.mark.django_db
def test_a_cancelled_adaptation_stores_nothing_and_frees_the_slot(
        staff_client, active, isolated_media_root, sent_tasks, django_capture_on_commit_callbacks):
    reviewed_cells(active, isolated_media_root)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("models:adapt"))
    version = ModelVersion.objects.get(status=ModelVersion.Status.TRAINING)
    page = staff_client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "Cancel training" in page
    # It says what it is, not only "training".
    assert f"v{version.pk} is adapting v{active.pk} to this lab's reviewed cells" in page
    assert f", adapted from v{active.pk} <span" in page
    second = staff_client.post(reverse("models:adapt"), follow=True).content.decode()
    assert f"Version v{version.pk} is already training" in second

    staff_client.post(reverse("models:cancel", args=[version.pk]))
    training.run_training(version.pk)  # a delivery arriving after the cancel does nothing
    version.refresh_from_db()
    assert version.status == "cancelled" and not version.model_sha256
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).exists()


@pytest.mark.django_db
def test_a_running_adaptation_stops_at_the_cancel(active, isolated_media_root, sent_tasks, monkeypatch,
                                                  django_user_model, settings):
    reviewed_cells(active, isolated_media_root)
    version = training.start_adaptation(django_user_model.objects.create_user("lead", is_staff=True))
    updates = []
    real = training._update_progress

    def cancel_after_first_epoch(version_id, **changes):
        updates.append(changes)
        if changes.get("epoch") == 1:
            ModelVersion.objects.filter(pk=version_id).update(cancel_requested=True)
        return real(version_id, **changes)

    monkeypatch.setattr(training, "_update_progress", cancel_after_first_epoch)
    settings.TRAINING_CANCEL_CHECK_SECONDS = 0
    training.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == "cancelled" and not version.model_sha256
    assert [u["epoch"] for u in updates if "epoch" in u] == [1]
