"""A change asked for from a sample's page while the sample was being deleted: the request waited on
the sample's row, which the deletion held, and met a sample gone once the deletion committed (a
DoesNotExist or an IntegrityError, a 500; a second deletion reported success and wrote a second
audit row). Each is refused in one line, nothing kept. Two requests, each on a connection of its
own (PostgreSQL's row locks; SQLite serialises the two transactions)."""

import re
from pathlib import Path

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from tests.conftest import stored_files
from tests.webapp.concurrent_requests import post_while_held
from tests.webapp.lab_factories import make_sample, with_role
from tests.webapp.test_uploads import jpeg_bytes
from webapp.models import Cell, Sample, SmearImage
from webapp.services import uploads
from webapp.services.deletion import delete_image, delete_sample
from webapp.services.locking import DeletedMeanwhile, ensure_editable
from webapp.services.photographs_kind import read_photographs_as
from webapp.services.sign_off import set_target_count
from webapp.views.errors import GONE


def while_deleted(client, sample, path, data, delete=None, **headers):
    """POST ``data`` to ``path`` while a deletion of ``sample`` (or ``delete()``) holds its row;
    the answer, followed."""
    delete = delete or (lambda: delete_sample(Sample.objects.get(pk=sample.pk)))
    return post_while_held(client, delete, path, data, "the sample's row", **headers)


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
    # The photograph went with its sample: the refusal names the sample, which is why the page
    # that answers is the sample list.
    "try again": (lambda sample, image: (reverse("lab:image-retry", args=[image.pk]), {}),
                  "Sample H26-0001 was deleted meanwhile: nothing was queued."),
    # Both had the sample's page open: the second reported success and wrote a second deletion row.
    "delete the sample": (lambda sample, image: (reverse("lab:sample-delete", args=[sample.pk]), {}),
                          "Sample H26-0001 was deleted meanwhile: there is nothing left to delete."),
    "delete a photograph": (lambda sample, image: (reverse("lab:image-delete", args=[image.pk]), {}),
                            "Sample H26-0001 was deleted meanwhile: there is nothing left to delete."),
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


CELL_GONE = ("A cell you chose is no longer stored: its photograph was deleted or classified again "
             "meanwhile. Nothing was changed; reload the page.")
# A change to a cell or a photograph says what the page showed is gone, as it does for a photograph
# deleted alone: the sample's lock finding no row must not reach the person as a 500.
CELL_CHANGES = {
    "relabel": (lambda sample, image, cell: (reverse("lab:cell-review", args=[cell.pk]),
                                             {"cell_type": "MONOCYTE"}), CELL_GONE),
    "gallery relabel": (lambda sample, image, cell: (reverse("lab:gallery-review", args=[sample.pk]),
                                                     {"cells": [cell.pk], "cell_type": "MONOCYTE"}),
                        CELL_GONE),
    "count an edge cell in": (lambda sample, image, cell: (reverse("lab:cell-count-in", args=[cell.pk]),
                                                           {"count_in": "1"}),
                              "This cell is no longer stored: its photograph was deleted or classified again "
                              "meanwhile. Reload the page."),
    "add a cell": (lambda sample, image, cell: (reverse("lab:image-add-cell", args=[image.pk]),
                                                {"x0": 400, "y0": 300, "x1": 480, "y1": 380}),
                   "The photograph was deleted meanwhile: no box was kept. Reload the page."),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", list(CELL_CHANGES))
def test_a_change_to_a_cell_of_a_sample_deleted_meanwhile_is_refused_as_the_cell_gone(
        client, django_user_model, sent_tasks, change):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = with_role(django_user_model.objects.create_user("tech"), "technologist")
    client.force_login(user)
    sample = make_sample(user=user)
    image = SmearImage.objects.get(sample=sample)
    cell = image.cells.order_by("index").first()
    Cell.objects.filter(pk=cell.pk).update(is_partial=True)
    asked, refusal = CELL_CHANGES[change]
    response = while_deleted(client, sample, *asked(sample, image, cell), HTTP_ACCEPT="application/json")
    assert (response.status_code, response.json()["error"]) == (400, refusal)
    assert not Sample.objects.exists() and sent_tasks == []


@pytest.mark.django_db
def test_a_change_to_a_sample_another_deletion_took_is_refused_naming_the_sample(monkeypatch):
    # What the pages read before a deletion committed (on SQLite as on PostgreSQL). The sample's
    # lock found no row and said nothing: each service asked again in words of its own, a photograph
    # named for a sample gone, and photographs added were all read before the refusal.
    sample = make_sample()
    image = SmearImage.objects.select_related("sample").get(sample=sample)
    delete_sample(Sample.objects.get(pk=sample.pk))
    files_read = []
    monkeypatch.setattr(uploads, "check_files", lambda files, known: files_read.append(files))
    photograph = SimpleUploadedFile("b.jpg", jpeg_bytes(seed=3), content_type="image/jpeg")
    changes = [
        (lambda: ensure_editable(sample, "relabelling a cell"), "nothing was changed."),
        (lambda: uploads.add_images_to_sample(sample, [photograph]), "nothing was stored."),
        (lambda: read_photographs_as(sample, Sample.Photographs.ONE_CELL_EACH), "nothing was changed."),
        (lambda: set_target_count(sample, 200), "the target count was not set."),
        (lambda: uploads.requeue_image(image), "nothing was queued."),
        (lambda: delete_image(image), "there is nothing left to delete."),
    ]
    for change, not_done in changes:
        with pytest.raises(DeletedMeanwhile) as refused:
            change()
        assert str(refused.value) == f"Sample H26-0001 was deleted meanwhile: {not_done}"
    assert files_read == []


@pytest.mark.django_db(transaction=True)
def test_a_photograph_deleted_twice_at_once_is_refused_the_second_time_in_one_line(client, django_user_model,
                                                                                  sent_tasks):
    # Two tabs on one sample page: the second deletion waited on the sample's row, found the
    # photograph gone and said "deleted" for a deletion it had not made.
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = with_role(django_user_model.objects.create_user("tech"), "technologist")
    client.force_login(user)
    sample = make_sample(user=user)
    image = SmearImage.objects.get(sample=sample)
    kept = SmearImage.objects.create(sample=sample, image="smears/second.png", original_filename="second.png",
                                     width=640, height=480, file_size=1000, checksum="1" * 64)
    trail_before = LogEntry.objects.count()
    response = while_deleted(client, sample, reverse("lab:image-delete", args=[image.pk]), {},
                             delete=lambda: delete_image(SmearImage.objects.get(pk=image.pk), user=user))
    assert response.redirect_chain == [(reverse("lab:sample-detail", args=[sample.pk]), 302)]
    assert [str(message) for message in response.context["messages"]] == [
        "H26-0001.png was deleted meanwhile: there is nothing left to delete."]
    assert list(SmearImage.objects.values_list("pk", flat=True)) == [kept.pk]
    assert LogEntry.objects.count() == trail_before + 1  # the first deletion's row alone


@pytest.mark.django_db
def test_deleting_what_another_deletion_took_is_refused_and_adds_nothing_to_the_trail():
    # What the page read before a deletion committed in between (on SQLite as on PostgreSQL).
    sample = make_sample()
    image = SmearImage.objects.get(sample=sample)
    read_by_the_page = Sample.objects.get(pk=sample.pk), SmearImage.objects.get(pk=image.pk)
    delete_image(image)
    trail = LogEntry.objects.count()
    with pytest.raises(DeletedMeanwhile, match=r"^H26-0001.png was deleted meanwhile: there is nothing left "
                                               r"to delete\.$"):
        delete_image(read_by_the_page[1])
    delete_sample(sample)
    with pytest.raises(DeletedMeanwhile, match=r"^Sample H26-0001 was deleted meanwhile: there is nothing "
                                               r"left to delete\.$"):
        delete_sample(read_by_the_page[0])
    assert LogEntry.objects.count() == trail + 1  # the sample's deletion alone


def entered_and_deleted(user):
    """A sample ``user`` entered (its creation's audit row naming them, as the upload's request
    does), and a failed photograph of it, deleted before a form from its page arrives."""
    with set_actor(user):
        sample = make_sample(user=user)
    image = SmearImage.objects.get(sample=sample)
    SmearImage.objects.filter(pk=image.pk).update(status=SmearImage.Status.FAILED)
    delete_sample(Sample.objects.get(pk=sample.pk))
    return sample, image


@pytest.mark.django_db
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_posted_after_the_sample_was_deleted_says_so(client, django_user_model, sent_tasks, change):
    # The audit: the same race met a moment sooner (the deletion committed before the form came)
    # answered the site's generic "page not found".
    user = with_role(with_role(django_user_model.objects.create_user("tech"), "technologist"), "hematologist")
    sample, image = entered_and_deleted(user)
    client.force_login(user)
    asked, refusal = CHANGES[change]
    trail_before = LogEntry.objects.count()
    response = client.post(*asked(sample, image), follow=True)
    assert response.redirect_chain == [(reverse("lab:sample-list"), 302)]
    assert [str(message) for message in response.context["messages"]] == [refusal]
    assert sent_tasks == [] and LogEntry.objects.count() == trail_before


@pytest.mark.django_db
def test_a_photograph_deleted_before_a_form_for_it_came_is_named(client, django_user_model, sent_tasks):
    user = with_role(with_role(django_user_model.objects.create_user("tech"), "technologist"), "hematologist")
    client.force_login(user)
    sample = make_sample(user=user)
    image = SmearImage.objects.get(sample=sample)
    delete_image(SmearImage.objects.get(pk=image.pk), user=user)
    page = reverse("lab:sample-detail", args=[sample.pk])
    for name, not_done in (("lab:image-retry", "nothing was queued."),
                           ("lab:image-delete", "there is nothing left to delete.")):
        response = client.post(reverse(name, args=[image.pk]), follow=True)
        assert response.redirect_chain == [(page, 302)]
        assert [str(message) for message in response.context["messages"]] == [
            f"H26-0001.png was deleted meanwhile: {not_done}"]
    box = {"x0": 400, "y0": 300, "x1": 480, "y1": 380}
    answer = client.post(reverse("lab:image-add-cell", args=[image.pk]), box, HTTP_ACCEPT="application/json")
    assert (answer.status_code, answer.json()["error"]) == (
        400, "The photograph was deleted meanwhile: no box was kept. Reload the page.")
    # An id no photograph ever had is still not found.
    assert client.post(reverse("lab:image-retry", args=[image.pk + 1000])).status_code == 404
    assert sent_tasks == []


@pytest.mark.django_db
@pytest.mark.parametrize("change", list(CHANGES))
def test_whoever_may_not_make_a_change_is_refused_without_the_deleted_samples_accession(
        client, django_user_model, change):
    # A reader (no role) may make none of them; a technologist who did not enter the sample may not
    # delete it: each hears 403 before the refusal would name the sample.
    entered_by = with_role(django_user_model.objects.create_user("tech"), "technologist")
    sample, image = entered_and_deleted(entered_by)
    asked, _ = CHANGES[change]
    refused = [django_user_model.objects.create_user("reader")]
    if change.startswith("delete"):
        refused.append(with_role(django_user_model.objects.create_user("other"), "technologist"))
    for user in refused:
        client.force_login(user)
        response = client.post(*asked(sample, image))
        assert response.status_code == 403, user
        assert "H26-0001" not in response.content.decode()


@pytest.mark.django_db
def test_a_gallery_relabel_sent_after_the_sample_was_deleted_says_so(client, django_user_model):
    # The release notes: the gallery, open while another page deleted its sample, had its relabel
    # answered "not found", as if no such sample had ever been.
    user = with_role(django_user_model.objects.create_user("tech"), "technologist")
    sample, image = entered_and_deleted(user)
    relabel = reverse("lab:gallery-review", args=[sample.pk])
    chosen = {"cells": "1", "cell_type": "MONOCYTE"}
    # Whoever may not relabel hears 403, and not which sample it was.
    client.force_login(django_user_model.objects.create_user("reader"))
    refused = client.post(relabel, chosen, HTTP_ACCEPT="application/json")
    assert refused.status_code == 403 and "H26-0001" not in refused.content.decode()
    client.force_login(user)
    trail_before = LogEntry.objects.count()
    answer = client.post(relabel, chosen, HTTP_ACCEPT="application/json")
    assert (answer.status_code, answer.json()) == (
        409, {"error": "Sample H26-0001 was deleted meanwhile: nothing was changed."})
    assert LogEntry.objects.count() == trail_before
    # A sample id never used is still not found.
    assert client.post(reverse("lab:gallery-review", args=[sample.pk + 1000]), chosen,
                       HTTP_ACCEPT="application/json").status_code == 404


def hidden_fields(body, action):
    """The hidden fields of the form on ``body`` that posts to ``action``, as the browser sends them."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', body, re.S)[1]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))


@pytest.mark.django_db
def test_a_cells_form_sent_after_its_sample_was_deleted_says_so(client, django_user_model):
    # The release notes: a relabel or a count-in sent from a page open while another deleted the
    # sample answered "not found". A worker's cell has no audit row of its own: the form names its
    # sample, whose deletion's row says what it was.
    user = with_role(django_user_model.objects.create_user("tech"), "technologist")
    client.force_login(user)
    with set_actor(user):
        sample = make_sample(user=user)
    cell = Cell.objects.filter(image__sample=sample).order_by("index").first()
    Cell.objects.filter(pk=cell.pk).update(is_partial=True)  # offered "Count it in"
    review, count_in = (reverse(name, args=[cell.pk]) for name in ("lab:cell-review", "lab:cell-count-in"))
    sample_page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    cell_page = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
    monocyte = {"cell_type": "MONOCYTE"}
    sent = [(review, {**hidden_fields(sample_page, review), **monocyte}),  # the sample page's relabel
            (review, {**hidden_fields(cell_page, review), **monocyte}),  # the cell page's
            (count_in, hidden_fields(cell_page, count_in))]
    assert {fields["sample"] for _, fields in sent} == {str(sample.pk)}
    delete_sample(Sample.objects.get(pk=sample.pk))
    refusal = "Sample H26-0001 was deleted meanwhile: nothing was changed."
    reader = django_user_model.objects.create_user("reader")
    for action, fields in sent:
        client.force_login(reader)
        refused = client.post(action, fields)
        assert refused.status_code == 403 and "H26-0001" not in refused.content.decode()
        client.force_login(user)
        trail_before = LogEntry.objects.count()
        answer = client.post(action, fields, HTTP_ACCEPT="application/json")
        assert (answer.status_code, answer.json()) == (409, {"error": refusal})
        answer = client.post(action, fields, follow=True)
        assert answer.redirect_chain == [(reverse("lab:sample-list"), 302)]
        assert [str(message) for message in answer.context["messages"]] == [refusal]
        assert LogEntry.objects.count() == trail_before
    # A form naming no sample, a sample not deleted or no number is still "not found".
    kept = make_sample("H26-0002")
    for named in ({}, {"sample": str(kept.pk)}, {"sample": "²"}, {"sample": "9" * 40}):
        assert client.post(count_in, named).status_code == 404
        # Told to a page's script as the site's "no longer there", never "No such sample." of a
        # sample that is still there.
        answer = client.post(count_in, named, HTTP_ACCEPT="application/json")
        assert answer.json() == {"error": GONE}
