"""Retraining from the site with the real worker: start → live progress → ready → activate →
re-classify a sample with the new version; a training on a bad folder ends failed with its reason.

Training data are a few cells drawn in code and one epoch of the small published network, so the
real training costs seconds; most of the wait is the worker importing TensorFlow once.
"""

import html
import io
import os
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image, ImageDraw

from tests.classifier.sources import CROP_LAB_CLASSES, write_two_sources
from tests.conftest import DATASETS_DIR
from tests.synthetic_cells import write_cell_folder
from tests.webapp.lab_factories import with_role
from webapp.models import ModelActivation, ModelVersion, Sample, SmearImage
from webapp.services.model_registry import active_version

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TRAINING_TIMEOUT_S = 300  # the first task of the worker process loads TensorFlow
CLASSIFY_TIMEOUT_S = 180


@pytest.fixture
def staff(client, django_user_model):
    user = with_role(django_user_model.objects.create_user(
        "lead", password="a-long-passphrase-1", is_staff=True), "admin")
    client.force_login(user)
    return user


def follow_progress(client, version, timeout=TRAINING_TIMEOUT_S):
    """Poll the page's JSON endpoint as training.js does, until the run ends."""
    url = reverse("models:progress", args=[version.pk])
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = client.get(url).json()
        seen.append(report)
        if report["status"] != "training":
            return report, seen
        time.sleep(0.5)
    pytest.fail(f"v{version.pk} still training after {timeout} s: {seen[-1]}")


def smear_photograph():
    """A real BCCD smear where the shared datasets are present, else a drawn one."""
    folder = DATASETS_DIR / "bccd-smears" / "JPEGImages"
    photos = sorted(folder.glob("BloodImage_*.jpg")) if folder.is_dir() else []
    if photos:
        return photos[0].read_bytes(), True
    rng = np.random.default_rng(1)
    field = np.clip(rng.normal((228, 196, 200), 6, (480, 640, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(field)
    draw = ImageDraw.Draw(image)
    for x, y in ((120, 120), (420, 300), (520, 90)):
        draw.ellipse((x - 30, y - 30, x + 30, y + 30), fill=(214, 150, 160))  # red cells
    draw.ellipse((280, 200, 350, 270), fill=(225, 175, 195))
    for dx in (-14, 0, 14):
        draw.ellipse((315 + dx - 10, 225, 315 + dx + 10, 245), fill=(110, 50, 150))  # lobed nucleus
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue(), False


def test_retrain_watch_progress_activate_and_reclassify(client, staff, celery_worker, tmp_path):
    data = write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=2)

    response = client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1, "data_dir": str(data),
    })
    version = ModelVersion.objects.get()
    assert response.status_code == 302 and version.status == "training" and version.source == "site"
    assert version.celery_task_id

    final, seen = follow_progress(client, version)

    assert final["status"] == "ready", final["failure_reason"]
    assert (final["epoch"], final["epochs"], final["percent"]) == (1, 1, 100)
    # While the held-out figures are measured the bar tells no share (None), never a full one.
    finishing = [report["status"] == "training" and report["epoch"] == report["epochs"] for report in seen]
    assert all(report["percent"] is None if done else 0 <= report["percent"] <= 100
               for report, done in zip(seen, finishing, strict=True))
    version.refresh_from_db()
    assert version.model_sha256 and version.history and "TEST" in version.metrics
    assert not ModelVersion.objects.filter(status="active").exists()  # never served until activated
    page = client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert page.count("<svg") == 2 and "TEST split" in page

    # One epoch on 16 images is warned of (measured at chance): activated once the warning is confirmed.
    client.post(reverse("models:activate", args=[version.pk]), {"confirmed": "1"})
    assert active_version() == version
    assert ModelActivation.objects.get(version=version).activated_by == staff

    content, real_smear = smear_photograph()
    sample = Sample.objects.create(accession_number="RETRAIN-1", created_by=staff)
    image = SmearImage(sample=sample, original_filename="smear.jpg", width=640, height=480,
                       file_size=len(content), checksum="0" * 64, status=SmearImage.Status.DONE)
    image.image.save("smear.jpg", ContentFile(content), save=False)
    image.save()

    client.post(reverse("models:reclassify"), {"accession_number": "RETRAIN-1"})

    deadline = time.monotonic() + CLASSIFY_TIMEOUT_S
    while time.monotonic() < deadline:
        image.refresh_from_db()
        if image.status in ("done", "failed"):
            break
        time.sleep(0.5)
    assert image.status == "done", image.error or image.status
    assert image.model_version == version
    cells = list(image.cells.all())
    if real_smear:
        assert cells, "the detector found no leukocyte in a BCCD smear"
    assert all(cell.model_version_id == version.pk for cell in cells)
    assert all(cell.predicted_type in version.class_names for cell in cells)


def test_a_training_on_two_labs_stores_and_shows_each_labs_figures(client, staff, celery_worker,
                                                                    tmp_path):
    fields, crops = write_two_sources(tmp_path / "labs", train=4, test=2)
    client.post(reverse("models:train"), {
        "architecture": "paper", "task": "4class", "epochs": 1,
        "data_dir": os.pathsep.join([str(fields), str(crops)]),
    })
    version = ModelVersion.objects.get()

    final, _ = follow_progress(client, version)

    assert final["status"] == "ready", final["failure_reason"]
    version.refresh_from_db()
    assert version.dataset_path == os.pathsep.join([str(fields), str(crops)])
    by_lab = version.metrics["sources"]
    in_given_order = sorted(by_lab, key=lambda name: by_lab[name]["order"])
    assert in_given_order == ["field-lab", "crop-lab"] and "TEST" not in version.metrics
    assert by_lab["crop-lab"]["TEST"]["restricted_to"] == list(CROP_LAB_CLASSES)
    page = client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "field-lab: TEST split (held out)" in page
    assert "crop-lab: TEST split (held out), on the 3 classes it holds" in page
    assert str(crops) in page and page.count('data-role="source"') == 2


def test_training_on_a_folder_without_images_ends_failed_with_its_reason(client, staff, celery_worker,
                                                                         tmp_path):
    # A folder with no cell-type folder is refused by the form, before any version exists.
    empty = tmp_path / "no-images-here"
    empty.mkdir()
    refused = client.post(reverse("models:train"), {"architecture": "paper", "task": "4class", "epochs": 1,
                                                     "data_dir": str(empty)})
    assert refused.status_code == 400 and "is not a training data folder" in refused.content.decode()
    assert not ModelVersion.objects.exists()
    # So is one that holds too few images of the task's types (the model audit: it was queued, and
    # failed as a listed version).
    scarce = tmp_path / "one-neutrophil"
    (scarce / "TRAIN" / "NEUTROPHIL").mkdir(parents=True)
    Image.new("RGB", (64, 48), "white").save(scarce / "TRAIN" / "NEUTROPHIL" / "only.jpeg")
    refused = client.post(reverse("models:train"), {"architecture": "paper", "task": "4class", "epochs": 1,
                                                     "data_dir": str(scarce)})
    assert refused.status_code == 400 and "Too few images per class" in refused.content.decode()
    assert not ModelVersion.objects.exists()
    # So is one whose files are named as images but none reads as one (git-lfs pointers): it failed
    # as a listed version seconds later.
    pointers = tmp_path / "not-images"
    for name in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
        (pointers / "TRAIN" / name).mkdir(parents=True)
        for n in range(2):
            (pointers / "TRAIN" / name / f"cell{n}.jpeg").write_bytes(b"not a photograph")
    refused = client.post(reverse("models:train"), {"architecture": "paper", "task": "4class", "epochs": 1,
                                                     "data_dir": str(pointers)})
    assert refused.status_code == 400 and "could be read as a photograph" in refused.content.decode()
    assert not ModelVersion.objects.exists()
    # One whose photographs' headers read but whose data do not decode (cut short before their
    # scan) is found only as they are decoded: it fails in the run, with the reason.
    unreadable = write_cell_folder(tmp_path / "cut-short", per_class=2, test_per_class=1)
    for path in unreadable.rglob("*.jpeg"):
        whole = path.read_bytes()
        path.write_bytes(whole[:whole.index(b"\xff\xda")])
    client.post(reverse("models:train"), {"architecture": "paper", "task": "4class", "epochs": 1,
                                          "data_dir": str(unreadable)})
    version = ModelVersion.objects.get()

    final, _ = follow_progress(client, version)

    assert final["status"] == "failed" and final["failure_reason"]
    page = client.get(reverse("models:detail", args=[version.pk])).content.decode()
    assert "Training failed" in page and str(unreadable) in page
    listing = client.get(reverse("models:list")).content.decode()
    assert final["failure_reason"][:40] in html.unescape(listing)
    # The failed run frees the slot: the next training may start.
    response = client.post(reverse("models:train"), {"architecture": "paper", "task": "4class", "epochs": 1,
                                                     "data_dir": str(unreadable)}, follow=True)
    assert "already training" not in response.content.decode()
    follow_progress(client, ModelVersion.objects.latest("pk"))
