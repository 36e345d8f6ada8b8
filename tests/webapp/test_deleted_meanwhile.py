"""A change asked for from a sample's page while the sample was being deleted: the request waited on
the sample's row, which the deletion held, and met a sample gone once the deletion committed (a
DoesNotExist or an IntegrityError, a 500). Each is refused in one line, nothing kept. Two requests,
each on a connection of its own (PostgreSQL's row locks; SQLite serialises the two transactions)."""

import threading
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.urls import reverse

from tests.conftest import stored_files, wait_for
from tests.webapp.concurrent_requests import start_as_another_request, waiting_on_a_lock
from tests.webapp.lab_factories import make_sample, with_role
from tests.webapp.test_uploads import jpeg_bytes
from webapp.models import Sample, SmearImage
from webapp.services.deletion import delete_sample


def while_deleted(client, sample, path, data):
    """POST ``data`` to ``path`` while a deletion of ``sample`` holds its row; the answer, followed."""
    deleting, release, answers = threading.Event(), threading.Event(), []

    def delete_and_hold():  # the sample's row locked until the test lets the deletion commit
        with transaction.atomic():
            delete_sample(Sample.objects.get(pk=sample.pk))
            deleting.set()
            release.wait(30)

    deletion = start_as_another_request(delete_and_hold)
    assert deleting.wait(30)
    asking = start_as_another_request(lambda: answers.append(client.post(path, data, follow=True)))
    wait_for(lambda: answers or waiting_on_a_lock(), "the request to wait on the sample's row", 30)
    release.set()
    deletion.join(30)
    asking.join(30)
    assert answers, "the request failed (a 500)"
    return answers[0]


def add_photographs(sample, image):
    photograph = SimpleUploadedFile("b.jpg", jpeg_bytes(seed=3), content_type="image/jpeg")
    return reverse("lab:sample-add-images", args=[sample.pk]), {"images": [photograph]}


CHANGES = {
    "add photographs": (add_photographs, "Sample H26-0001 was deleted meanwhile: nothing was stored."),
    "photographs kind": (lambda sample, image: (reverse("lab:sample-photographs", args=[sample.pk]),
                                                {"photographs": Sample.Photographs.ONE_CELL_EACH}),
                         "Sample H26-0001 was deleted meanwhile: nothing was changed."),
    "target count": (lambda sample, image: (reverse("lab:sample-target", args=[sample.pk]),
                                            {"target_count": "200"}),
                     "Sample H26-0001 was deleted meanwhile: the target count was not set."),
    "try again": (lambda sample, image: (reverse("lab:image-retry", args=[image.pk]), {}),
                  "H26-0001.png was deleted meanwhile: nothing was queued."),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_a_sample_deleted_meanwhile_is_refused_in_one_line(client, django_user_model, sent_tasks,
                                                                      change):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = with_role(with_role(django_user_model.objects.create_user("tech"), "technologist"), "hematologist")
    client.force_login(user)
    sample = make_sample(user=user)
    image = SmearImage.objects.get(sample=sample)
    SmearImage.objects.filter(pk=image.pk).update(status=SmearImage.Status.FAILED)  # "Try again" offered
    media = Path(SmearImage._meta.get_field("image").storage.location)
    files_before, trail_before = stored_files(media), LogEntry.objects.count()
    asked, refusal = CHANGES[change]
    response = while_deleted(client, sample, *asked(sample, image))
    assert response.redirect_chain == [(reverse("lab:sample-list"), 302)]
    assert [str(message) for message in response.context["messages"]] == [refusal]
    assert not Sample.objects.exists() and not SmearImage.objects.exists()
    assert stored_files(media) <= files_before and sent_tasks == []  # nothing stored, nothing queued
    assert LogEntry.objects.count() == trail_before + 1  # the deletion's row alone
