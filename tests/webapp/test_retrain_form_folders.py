"""A data folder no run can learn from is refused by the retraining form and by `manage.py train`
before a version is stored, in words that say what is expected without listing what the folder
holds; a run that does fail on its data names none of a server's folders either."""

import html
import os
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from classifier.dataset import list_images
from classifier.errors import TrainingDataError
from tests.synthetic_cells import write_cell_folder
from tests.webapp.lab_factories import with_role
from webapp.models import ModelVersion
from webapp.services.training import check_data

PASSWORD = "a-long-passphrase-1"
EXPECTED = ("expected a folder with TRAIN/ (and, for held-out figures, TEST/), each holding one folder per "
            "cell type (e.g. NEUTROPHIL/) with its images, or the folders per cell type alone")
SERVER_FOLDERS = ("PackageKit", "UPower", "X11", "alternatives", "apache2", "apparmor.d", "apt", "avahi",
                  "cron.d", "dbus-1", "default")


def etc_like(root):
    """A system folder typed by mistake: a dozen folders, none a cell type."""
    for name in SERVER_FOLDERS:
        (root / name).mkdir(parents=True)
    (root / "hostname").write_text("lab-server\n")
    return root


def smears_with_boxes(root):
    """A folder of whole smears with Pascal VOC boxes (bccd-smears), not of class folders."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "Annotations" / "BloodImage_00000.xml").write_text("<annotation/>")
    (root / "JPEGImages" / "BloodImage_00000.jpg").write_bytes(b"\xff\xd8\xff")
    (root / "labels.csv").write_text("Image,Category\n0,NEUTROPHIL\n")
    return root


def empty_class_folders(root):
    """TRAIN/ and TEST/ with the cell-type folders made but no image in them."""
    for split in ("TRAIN", "TEST"):
        (root / split / "NEUTROPHIL").mkdir(parents=True)
    return root


@pytest.fixture
def admin_client(client, django_user_model):
    # An administrator by role, not a superuser: one who should not learn the server's folders.
    admin = with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True),
                      "admin")
    assert not admin.is_superuser
    client.force_login(admin)
    return client


def post_training(client, folder, task="4class"):
    return client.post(reverse("models:train"), {
        "architecture": "paper", "task": task, "epochs": 1, "data_dir": str(folder)})


def without_form_tokens(page):
    """The page less its forms' CSRF tokens: random letters that once held "X11", a folder name
    the page must not show."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", page)


@pytest.mark.django_db
@pytest.mark.parametrize("make", [etc_like, smears_with_boxes, empty_class_folders])
def test_the_form_refuses_a_folder_no_run_can_learn_from_before_a_version_exists(
        admin_client, sent_tasks, tmp_path, make):
    folder = make(tmp_path / "typed")
    response = post_training(admin_client, folder)
    page = without_form_tokens(response.content.decode())
    assert response.status_code == 400
    # Why, as the run would refuse it: the folder lies under the training roots, where the lab keeps
    # its data; the reason counts what it holds and names no folder but a cell type's.
    why = {etc_like: f"{folder} has 11 folders but none named for one of the 4class task's classes "
                     "(EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL)",
           smears_with_boxes: f"{folder} has 2 folders but none named for one of the 4class task's classes "
                              "(EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL)",
           empty_class_folders: f"training data folder {folder / 'TRAIN'} holds no images for the 4class "
                                "task"}[make]
    assert html.unescape(page).count(
        f"{folder} is not a training data folder for the 4class task: {why}. E{EXPECTED[1:]}.") == 1
    for name in (*SERVER_FOLDERS, "Annotations", "JPEGImages", "labels.csv", "hostname"):
        assert name not in page
    assert not ModelVersion.objects.exists() and sent_tasks == []


@pytest.mark.django_db
def test_the_form_refuses_the_servers_own_etc(admin_client, sent_tasks, settings):
    if not Path("/etc/apt").is_dir():
        pytest.skip("a system without /etc/apt")
    settings.TRAINING_DATA_ROOTS = [Path("/")]  # a server that lets the site read any folder
    page = post_training(admin_client, "/etc").content.decode()
    assert "/etc is not a training data folder for the 4class task: /etc has " in page
    assert f"E{EXPECTED[1:]}." in html.unescape(page)
    assert "apparmor" not in page and not ModelVersion.objects.exists() and sent_tasks == []


@pytest.mark.django_db
def test_the_form_queues_a_folder_of_cell_types_for_the_task_chosen(admin_client, sent_tasks, tmp_path):
    data = write_cell_folder(tmp_path / "cells", per_class=1, test_per_class=1)
    # A binary network learns from the four types' folders too (a neutrophil is POLYNUCLEAR).
    response = post_training(admin_client, data, task="binary")
    version = ModelVersion.objects.get()
    assert response.status_code == 302 and version.dataset_path == str(data)
    assert version.task == "binary"


@pytest.mark.django_db
def test_class_folders_the_task_leaves_out_are_said_on_queueing(admin_client, sent_tasks, tmp_path):
    # PBC's eight types given to a four-type training: four of them are passed by, and said so; a
    # folder of no cell type without photographs is counted, never named (a typed folder may be any
    # server's).
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=1)
    for extra in ("BASOPHIL", "PLATELET", "apparmor.d"):
        (data / "TRAIN" / extra).mkdir()
    response = post_training(admin_client, data)
    assert response.status_code == 302
    page = admin_client.get(response["Location"]).content.decode()
    assert (f"{data / 'TRAIN'} also holds BASOPHIL/ (no images), PLATELET/ (no images), 1 other folder "
            "without images: not types of the 4class task, left out of this training.") in page
    assert "apparmor" not in page
    # A binary run learns a basophil as POLYNUCLEAR; a platelet is in no group: it is left out.
    assert check_data([str(data)], "binary") == [
        f"{data / 'TRAIN'} also holds PLATELET/ (no images), 1 other folder without images: not types of "
        "the binary task, left out of this training."]


@pytest.mark.django_db
def test_the_form_checks_each_folder_given(admin_client, sent_tasks, tmp_path):
    data = write_cell_folder(tmp_path / "cells", per_class=1, test_per_class=1)
    smears = smears_with_boxes(tmp_path / "bccd-smears")
    response = admin_client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1,
        "data_dir": f"{data}{os.pathsep}{smears}"})
    assert response.status_code == 400
    assert f"{smears} is not a training data folder" in response.content.decode()
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_train_refuses_the_same_folders_before_storing_a_version(tmp_path):
    for make in (etc_like, smears_with_boxes, empty_class_folders):
        folder = make(tmp_path / make.__name__)
        with pytest.raises(CommandError) as refused:
            call_command("train", "--data", str(folder), "--arch", "paper", "--epochs", "1")
        assert str(refused.value).endswith("(--data).")
        assert "PackageKit" not in str(refused.value) and "Annotations" not in str(refused.value)
    assert not ModelVersion.objects.exists()


def test_a_run_that_fails_on_a_folder_of_other_folders_counts_them_without_naming_them(tmp_path):
    folder = etc_like(tmp_path / "etc")
    with pytest.raises(TrainingDataError) as refused:
        list_images(folder, "4class", "TRAIN")
    reason = str(refused.value)
    assert reason == (f"{folder} has 11 folders but none named for one of the 4class task's classes "
                      "(EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL)")
    assert not any(name in reason for name in SERVER_FOLDERS if name not in str(folder))


@pytest.mark.django_db
def test_the_form_refuses_folders_that_together_lack_a_type_the_task_needs(admin_client, sent_tasks,
                                                                          tmp_path):
    # The model audit: an eight-type training on a four-type folder, or with an empty class folder,
    # was queued and failed as a listed version ("too few images per class ... BASOPHIL: 0").
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=1)
    response = post_training(admin_client, data, task="8class")
    page = response.content.decode()
    assert response.status_code == 400
    assert "Too few images per class in training data folder" in page
    assert "BASOPHIL: 0" in page and "PLATELET: 0" in page
    assert not ModelVersion.objects.exists() and sent_tasks == []


@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["/etc", "/no/such/folder", "{tmp}/../../../../etc", "{tmp}/link-to-etc"])
def test_the_form_trains_only_under_the_configured_roots_and_says_nothing_of_other_folders(
        admin_client, sent_tasks, tmp_path, typed):
    (tmp_path / "link-to-etc").symlink_to("/etc")
    folder = typed.format(tmp=tmp_path)
    response = post_training(admin_client, folder)
    page = response.content.decode()
    assert response.status_code == 400
    through_a_link = " (it leads out through a link)" if typed.endswith("link-to-etc") else ""
    assert f"{folder}{through_a_link} is not. The server&#x27;s administrator can add a folder to " in page
    # Whether the folder exists is not told: the same words for /etc and for a folder that is not.
    assert "No such folder" not in page and "not a training data folder" not in page
    assert not ModelVersion.objects.exists() and not sent_tasks


@pytest.mark.django_db
def test_a_folder_under_a_configured_root_is_trained_on(admin_client, sent_tasks, tmp_path, settings):
    settings.TRAINING_DATA_ROOTS = [tmp_path / "labs"]
    data = write_cell_folder(tmp_path / "labs" / "ours", per_class=4, test_per_class=1)
    response = post_training(admin_client, data)
    assert response.status_code == 302
    assert ModelVersion.objects.get().dataset_path == str(data)
    response = post_training(admin_client, write_cell_folder(tmp_path / "elsewhere", per_class=4))
    assert response.status_code == 400 and ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_a_folder_under_the_roots_is_refused_saying_what_is_wrong_with_it(admin_client, sent_tasks, tmp_path,
                                                                        settings):
    # The own-data audit: photographs kept in a subfolder of each class folder, refused in the words
    # of what is expected, which the folder seemed to be; a file named as the folder was "no such
    # folder".
    settings.TRAINING_DATA_ROOTS = [tmp_path / "labs"]
    nested = tmp_path / "labs" / "ours" / "TRAIN" / "NEUTROPHIL" / "slide1"
    nested.mkdir(parents=True)
    for index in range(3):
        (nested / f"{index}.jpg").write_bytes(b"")
    page = html.unescape(post_training(admin_client, tmp_path / "labs" / "ours").content.decode())
    assert (f"{tmp_path / 'labs' / 'ours'} is not a training data folder for the 4class task: training data "
            f"folder {tmp_path / 'labs' / 'ours' / 'TRAIN'} holds no images for the 4class task: its class "
            "folders keep their images in subfolders (NEUTROPHIL/ 3), which are not read; move them up into "
            "the class folder. Expected a folder with TRAIN/") in page
    (tmp_path / "labs" / "cells.txt").write_text("NEUTROPHIL\n")
    page = html.unescape(post_training(admin_client, tmp_path / "labs" / "cells.txt").content.decode())
    assert f"A file, not a folder: {tmp_path / 'labs' / 'cells.txt'}." in page
    assert "No such folder" not in page
    assert not ModelVersion.objects.exists() and not sent_tasks


@pytest.mark.django_db
def test_with_no_roots_configured_no_typed_folder_is_trained_on(admin_client, sent_tasks, tmp_path, settings):
    settings.TRAINING_DATA_ROOTS = []
    page = post_training(admin_client, write_cell_folder(tmp_path / "lab", per_class=4)).content.decode()
    assert "The site trains on no folder typed here: LEUKOSCOPE_TRAINING_DATA_ROOTS names none." in page
    assert "LEUKOSCOPE_TRAINING_DATA_ROOTS names no folder: the site reads none typed here." in page
    assert not ModelVersion.objects.exists()


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def pointers_in(data, split):
    """A clone made without git-lfs: the split's photographs are pointer files of that name."""
    for path in (data / split).rglob("*.jpeg"):
        path.write_bytes(LFS_POINTER)
    return data / split


@pytest.mark.django_db
@pytest.mark.parametrize("split", ["TRAIN", "TEST"])
def test_the_form_refuses_a_folder_of_files_that_are_no_photographs_before_a_version_exists(
        admin_client, sent_tasks, tmp_path, split):
    # The check read one header, yet ran only in the run: the folder became a failed version
    # seconds after the form took it. Refused here, without saying how many files the typed folder
    # holds (a typed path may be any server folder).
    data = write_cell_folder(tmp_path / "cells", per_class=3, test_per_class=2)
    unreadable = pointers_in(data, split)
    response = post_training(admin_client, data)
    page = response.content.decode()
    assert response.status_code == 400
    assert (f"None of the images in {unreadable} could be read as a photograph: replace them with the "
            "photographs, or remove the folder.") in page
    assert "12 images" not in page and "8 images" not in page
    assert not ModelVersion.objects.exists() and sent_tasks == []


@pytest.mark.django_db
def test_the_form_refuses_a_configured_folder_of_files_that_are_no_photographs(
        admin_client, sent_tasks, tmp_path, settings):
    data = write_cell_folder(tmp_path / "pbc", per_class=3, test_per_class=2)
    settings.TRAINING_DATA_DIRS = [data]
    unreadable = pointers_in(data, "TEST")
    response = admin_client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1, "data_sources": [str(data)]})
    assert response.status_code == 400
    assert f"None of the images in {unreadable} could be read as a photograph" in response.content.decode()
    assert not ModelVersion.objects.exists() and sent_tasks == []


@pytest.mark.django_db
@pytest.mark.parametrize("split", ["TRAIN", "TEST"])
def test_train_refuses_a_folder_of_files_that_are_no_photographs_before_storing_a_version(tmp_path, split):
    data = write_cell_folder(tmp_path / "cells", per_class=3, test_per_class=2)
    unreadable = pointers_in(data, split)
    with pytest.raises(CommandError) as refused:
        call_command("train", "--data", str(data), "--arch", "paper", "--epochs", "1")
    count = 12 if split == "TRAIN" else 8
    assert str(refused.value) == (f"None of the {count} images in {unreadable} could be read as a "
                                  "photograph: replace them with the photographs, or remove the folder "
                                  "(--data).")
    assert not ModelVersion.objects.exists()
