"""Lab records made directly in the database, for page and selector tests that need no worker."""

import itertools

from django.contrib.auth.models import Group
from django.utils import timezone

from classifier.labels import BINARY_GROUP, FOUR_CLASSES
from webapp.models import Cell, ModelVersion, Sample, SmearImage

_counter = itertools.count(1)


def make_version(class_names=FOUR_CLASSES, status=ModelVersion.Status.ACTIVE, metrics=None):
    if status == ModelVersion.Status.ACTIVE:
        ModelVersion.objects.filter(status=status).update(status=ModelVersion.Status.READY)
    return ModelVersion.objects.create(
        architecture="leukonet", task="4class" if len(class_names) > 2 else "binary", status=status,
        class_names=list(class_names), input_spec={"height": 96, "width": 96, "mode": "cell", "crop": 120},
        model_sha256=f"{next(_counter):064d}", metrics=metrics or {},
    )


def make_sample(accession="H26-0001", types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"), version=None,
                confidence=0.9, user=None, ood_score=0.5):
    """A sample with one classified image holding one cell per entry of `types`, each with an
    out-of-distribution score as the bundled network gives (None: a network without one)."""
    version = version or make_version()
    sample = Sample.objects.create(accession_number=accession, created_by=user)
    image = SmearImage.objects.create(
        sample=sample, image=f"smears/{accession}.png", original_filename=f"{accession}.png",
        width=640, height=480, file_size=1000, checksum="0" * 64, status=SmearImage.Status.DONE,
        model_version=version, inference_runtime="litert-int8", quality={"focus": 20.0},
        quality_warnings=[],
    )
    for index, name in enumerate(types):
        probabilities = {other: (1 - confidence) / (len(version.class_names) - 1)
                         for other in version.class_names}
        probabilities[name] = confidence
        Cell.objects.create(
            image=image, model_version=version, index=index, x0=10 + 100 * index, y0=20,
            x1=90 + 100 * index, y1=100, predicted_type=name, probabilities=probabilities,
            confidence=confidence, binary_call=BINARY_GROUP.get(name, name), cell_type=name,
            needs_review=confidence < 0.8, crop=f"cells/{accession}-{index}.jpg", ood_score=ood_score,
        )
    return sample


def mark_signed(sample, user, times=1):
    """Set a sample's sign-off fields directly (tests of what reads them, not of signing)."""
    sample.status = Sample.Status.SIGNED
    sample.signed_by = user
    sample.signed_at = timezone.now()
    sample.times_signed = times
    sample.save()
    return sample


def named_hematologist(user_model):
    """The signer the report and the LIS export name: a full name, not only a user name."""
    return user_model.objects.create_user(
        "haem", password="a-long-passphrase-2", first_name="Ada", last_name="Lovelace")


def with_role(user, role):
    """The user in one of the lab's groups (technologist, hematologist, admin), as the migrations
    made it (tests/conftest.py brings the groups back after a transactional test's flush)."""
    user.groups.add(Group.objects.get(name=role))
    return user
