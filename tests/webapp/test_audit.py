"""The audit trail: uploads, reviews, sign-off, reopening, re-classification and deletions are each
on record with who, when, from what and to what; the worker's cells are one row a photograph."""

import re

import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.webapp.lab_factories import make_sample, make_version
from tests.webapp.test_classification import analysis_with, network, stored_image  # noqa: F401
from tests.webapp.test_sign_off import hematologist, member, small_sample  # noqa: F401
from tests.webapp.test_uploads import jpeg_bytes
from webapp.models import Cell, Sample
from webapp.presenters.sign_off import timeline
from webapp.selectors import result_stamp, sample_timeline
from webapp.services import classification
from webapp.services.sign_off import reopen_sample, sign_sample
from webapp.services.training import reclassify

pytestmark = pytest.mark.django_db


def rows(sample_id, model=None):
    found = sample_timeline(sample_id)
    return list(found.filter(content_type__model=model) if model else found)


def changes(entry):
    return {name: tuple(pair) for name, pair in entry.changes.items()}


def test_an_upload_is_on_record_with_who_sent_it(client, tech, sent_tasks):
    photograph = SimpleUploadedFile("smear-1.jpg", jpeg_bytes(), content_type="image/jpeg")
    client.post(reverse("lab:upload"), {"accession_number": "A-1", "images": [photograph]})
    sample = Sample.objects.get(accession_number="A-1")
    created = rows(sample.pk, "sample")
    assert [(e.action, e.actor) for e in created] == [(LogEntry.Action.CREATE, tech)]
    assert changes(created[0])["accession_number"] == ("None", "A-1")
    uploaded = rows(sample.pk, "smearimage")
    assert [(e.action, e.actor) for e in uploaded] == [(LogEntry.Action.CREATE, tech)]
    assert changes(uploaded[0])["original_filename"] == ("None", "smear-1.jpg")
    assert [entry.what for entry in timeline(sample.pk)] == ["Photograph smear-1.jpg uploaded",
                                                             "Sample A-1 received"]


def test_each_review_is_one_row_from_one_type_to_another(client, tech):
    sample = make_sample()
    before = len(rows(sample.pk))
    cell = Cell.objects.get(image__sample=sample, index=0)
    client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE"})
    client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"})
    added = rows(sample.pk)[: len(rows(sample.pk)) - before]
    assert [(e.content_type.model, e.actor) for e in added] == [("cellreview", tech)] * 2
    assert changes(added[1])["from_type"] == ("None", "NEUTROPHIL")
    assert changes(added[1])["to_type"] == ("None", "MONOCYTE")
    newest = timeline(sample.pk)[0]
    # The cell as the sample page numbers it, on its photograph: not its database id.
    assert newest.what == "Cell 1 on H26-0001.png relabelled" and newest.who == "tech"
    # Types as every page names them, not as they are stored.
    assert [(c.field, c.new) for c in newest.changes][:2] == [("from", "Monocyte"), ("to", "Lymphocyte")]
    # The network's own call kept by a reviewer: a review row, read as a confirmation.
    lymphocyte = Cell.objects.get(image__sample=sample, index=1)
    client.post(reverse("lab:cell-review", args=[lymphocyte.pk]), {"cell_type": "LYMPHOCYTE"})
    assert timeline(sample.pk)[0].what == "Cell 2 on H26-0001.png confirmed"


def test_signing_and_reopening_are_on_record(client, hematologist):  # noqa: F811
    sample = small_sample()
    client.force_login(hematologist)
    client.post(reverse("lab:sample-sign", args=[sample.pk]), {"result_seen": result_stamp(sample)})
    client.post(reverse("lab:sample-reopen", args=[sample.pk]), {"reason": "Recount the monocytes."})
    reopened, signed = rows(sample.pk, "sample")[:2]
    assert signed.actor == reopened.actor == hematologist
    assert changes(signed)["status"] == ("in_progress", "signed")
    assert changes(signed)["times_signed"] == ("0", "1")
    assert changes(reopened)["status"] == ("signed", "reopened")
    assert changes(reopened)["reopen_reason"] == ("", "Recount the monocytes.")
    shown = timeline(sample.pk)
    assert [entry.what for entry in shown[:2]] == ["Reopened", "Signed"]
    shown_changes = [(c.field, c.old, c.new) for c in shown[1].changes]
    assert ("signed by", "", "hema") in shown_changes
    assert ("status", "In progress", "Signed") in shown_changes
    # A time as the pages show one, to the second with its zone, not Python's str() of it.
    (signed_at,) = [new for field, _, new in shown_changes if field == "signed at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", signed_at), signed_at
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="timeline"' in page and "Recount the monocytes." in page


def test_the_worker_writes_one_row_a_photograph_not_one_a_cell(network, stored_image):  # noqa: F811
    version = make_version()
    network.analysis = analysis_with([(10 + 60 * i, 10, 60 + 60 * i, 60) for i in range(8)])
    assert classification.classify_smear_image(stored_image.pk) == 8
    sample_id = stored_image.sample_id
    assert rows(sample_id, "cell") == []
    classified = rows(sample_id, "smearimage")[0]
    assert classified.actor is None
    assert classified.additional_data["note"] == f"classified by v{version.pk}: 8 cells"
    assert changes(classified)["status"] == ("processing", "done")
    newest = timeline(sample_id)[0]
    assert (newest.who, newest.what) == ("the worker", f"Classified by v{version.pk}: 8 cells")


def test_a_failed_classification_is_on_record(network, stored_image):  # noqa: F811
    make_version()
    network.error = RuntimeError("out of memory")
    classification.classify_smear_image(stored_image.pk)
    failed = rows(stored_image.sample_id, "smearimage")[0]
    assert failed.additional_data["note"].startswith("classification failed: ")
    assert changes(failed)["status"] == ("processing", "failed")


def test_a_cell_added_by_hand_is_a_row_of_its_own():
    sample = make_sample(types=())
    image = sample.images.get()
    version = image.model_version
    cell = Cell.objects.create(
        image=image, model_version=version, index=0, x0=1, y0=2, x1=50, y1=60, predicted_type="MONOCYTE",
        confidence=0.7, binary_call="MONONUCLEAR", cell_type="MONOCYTE", added_by_hand=True,
    )
    added = rows(sample.pk, "cell")
    assert len(added) == 1 and added[0].additional_data["cell_id"] == cell.pk
    assert timeline(sample.pk)[0].what == "Cell 1 on H26-0001.png added by hand"
    # An edge cell counted in, and left out again: said in words, not as a field's True and False.
    for counted, words in ((True, "counted in"), (False, "left out of")):
        cell.is_partial, cell.count_partial = True, counted
        cell.save()
        newest = timeline(sample.pk)[0]
        assert newest.what == f"Cell 1 on H26-0001.png {words} the formula"
        assert "count partial" not in [change.field for change in newest.changes]
    # A cell since deleted keeps the id it had.
    Cell.objects.filter(pk=cell.pk).delete()
    assert timeline(sample.pk)[0].what == f"Cell {cell.pk} left out of the formula"


def test_a_reclassification_is_on_record(django_user_model, sent_tasks):
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    sample = make_sample()
    version = make_version()
    reclassify(sample, staff)
    queued = rows(sample.pk, "sample")[0]
    assert queued.actor == staff
    assert queued.additional_data["note"] == f"re-classification with v{version.pk} queued: 1 photograph"


def test_rows_recorded_in_bulk_are_the_rows_record_writes(django_user_model):
    # A re-classification writes its rows in bulk (audit.record_all): bulk_create sends no pre_save,
    # through which auditlog's middleware adds the request's address, and skips log_create.
    from auditlog.cid import set_cid
    from auditlog.context import set_actor
    from django.forms.models import model_to_dict

    from webapp import audit

    user = django_user_model.objects.create_user("staff", email="staff@lab.example")
    first, second = make_sample("H26-0001"), make_sample("H26-0002")
    LogEntry.objects.all().delete()
    set_cid(None)
    with set_actor(user, remote_addr="192.0.2.7", remote_port=4711):
        for actor in (user, None):
            one = audit.record(first, "update", {"requested_version": (None, "v2")}, actor=actor,
                               note="re-classification with v2 queued: 1 photograph")
            queued = {"requested_version": (None, "v2")}
            many = audit.record_all("update", [
                (first, queued, "re-classification with v2 queued: 1 photograph"),
                (second, queued, "re-classification with v2 queued: 2 photographs"),
            ], actor=actor)
            written = LogEntry.objects.order_by("-pk")[:3]
            stored = [{name: value for name, value in model_to_dict(entry).items()
                       if name not in ("id", "timestamp")} for entry in reversed(written)]
            assert written[2].pk == one.pk and len(many) == 2
            assert stored[1] == stored[0]
            assert stored[0]["remote_addr"] == "192.0.2.7" and stored[0]["actor"] == user.pk
            assert stored[2]["object_pk"] == str(second.pk)
            assert stored[2]["additional_data"] == {"sample_id": second.pk,
                                                    "note": "re-classification with v2 queued: 2 photographs"}


def test_a_deletion_is_one_row_and_the_trail_outlives_the_sample(client, tech):
    sample = make_sample(user=tech)
    sample_id = sample.pk
    before = len(rows(sample_id))
    client.post(reverse("lab:sample-delete", args=[sample.pk]))
    assert not Sample.objects.filter(pk=sample_id).exists()
    trail = rows(sample_id)
    assert len(trail) == before + 1  # no row per cascaded photograph, cell or review
    deleted = trail[0]
    assert (deleted.action, deleted.actor, deleted.content_type.model) == (LogEntry.Action.DELETE, tech,
                                                                          "sample")
    assert changes(deleted)["cells"] == ("3", "0")
    assert timeline(sample_id)[0].what == "Deleted with 1 photograph and 3 cells"


def test_deleting_a_photograph_is_on_record(django_user_model):
    from webapp.services.deletion import delete_image

    user = django_user_model.objects.create_user("someone")
    sample = make_sample()
    delete_image(sample.images.get(), user)
    deleted = rows(sample.pk, "smearimage")[0]
    assert (deleted.action, deleted.actor) == (LogEntry.Action.DELETE, user)
    assert deleted.additional_data["note"] == "photograph H26-0001.png deleted with 3 cells"


def test_sign_off_rows_carry_the_services_actor_without_a_request(hematologist):  # noqa: F811
    sample = small_sample()
    sign_sample(sample, hematologist)
    reopen_sample(sample, hematologist, "typo")
    assert [e.actor for e in rows(sample.pk, "sample")[:2]] == [hematologist, hematologist]
    assert timeline(sample.pk)[0].who == "hema"


@pytest.mark.django_db
def test_the_timeline_reads_the_sample_id_index_not_the_whole_audit_table():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the sample-id index is PostgreSQL's (webapp/migrations/0012_audit_sample_index.py)")
    sample = make_sample()
    query, params = sample_timeline(sample.pk).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask whether it can
        cursor.execute(f"EXPLAIN {query}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "webapp_auditlog_sample_id" in plan, plan


def test_a_long_trail_says_how_much_of_it_the_page_shows(client, tech):
    # The audit's sample of 110 photographs showed "Audit trail (200 entries)" and silently
    # dropped the oldest rows, "Sample received" among them.
    from django.template.loader import render_to_string

    from webapp import audit
    from webapp.presenters.sign_off import sign_off_panel

    sample = make_sample("H26-LONG")
    for n in range(4):
        audit.record(sample, "update", {"note": (str(n), str(n + 1))}, note=f"change {n}")
    total = sign_off_panel(sample, may_sign=False).timeline_total
    assert total >= 4
    panel = sign_off_panel(sample, may_sign=False, timeline_limit=3)
    assert len(panel.timeline) == 3 and panel.timeline_total == total
    html = render_to_string("lab/_timeline.html",
                            {"panel": panel, "timeline": panel.timeline, "sample": sample})
    assert f"Audit trail (the newest 3 of {total} entries)" in html
    trail = reverse("lab:sample-trail", args=[sample.pk])
    assert f'{total} entries in all: <a href="{trail}">the whole trail</a>, a page at a time.' in html
    whole = sign_off_panel(sample, may_sign=False)
    html = render_to_string("lab/_timeline.html",
                            {"panel": whole, "timeline": whole.timeline, "sample": sample})
    assert f"Audit trail ({total} entries)" in html and "the whole trail" not in html


def test_the_whole_trail_pages_back_to_the_samples_first_entry(client, tech, monkeypatch):
    # A re-classified sample of 80 photographs held more than the panel's newest 200 entries, and
    # its uploads were out of everyone's view but staff's in the Django admin.
    from webapp import audit
    from webapp.presenters.sign_off import timeline_entries
    from webapp.views import lab

    monkeypatch.setattr(lab, "TRAIL_PAGE_ENTRIES", 3)
    sample = make_sample("H26-TRAIL")
    for n in range(5):
        audit.record(sample, "update", {"note": (str(n), str(n + 1))}, note=f"change {n}")
    trail = reverse("lab:sample-trail", args=[sample.pk])
    first = client.get(trail).content.decode()
    rows = list(sample_timeline(sample.pk))
    oldest = timeline_entries(rows[-1:])[0].what  # the sample's receipt
    assert f"{len(rows)} entries" in first and first.count('data-role="timeline-entry"') == 3
    assert "Older →" in first and oldest not in first
    last = client.get(trail, {"page": (len(rows) + 2) // 3}).content.decode()
    assert oldest in last and "← Newer" in last
    assert client.get(reverse("lab:sample-trail", args=[sample.pk + 999])).status_code == 404


def test_deleting_a_photograph_records_the_types_of_the_cells_it_took(django_user_model):
    # A reopened result may lose a photograph; the trail must say which calls went with it (the only
    # blast, say), not only how many, or an amended result cannot be reconstructed from the record.
    from webapp.services.deletion import delete_image

    user = django_user_model.objects.create_user("someone")
    sample = make_sample(types=("NEUTROPHIL", "BLAST", "NEUTROPHIL"))
    delete_image(sample.images.get(), user)
    deleted = rows(sample.pk, "smearimage")[0]
    assert changes(deleted)["cell_types"] == ("Neutrophil 2, Blast 1", "None")
    assert "cell types: Neutrophil 2, Blast 1" in " ".join(
        f"{change.field}: {change.old}" for change in timeline(sample.pk)[0].changes)


def test_a_change_between_right_to_left_values_keeps_its_arrow_from_old_to_new(client, tech):
    # "note: OLD → NEW" with both notes Arabic is one right-to-left run, the arrow inside it: shown
    # as "NEW → OLD", the trail said the note was changed the other way round. Each value is isolated.
    from webapp import audit

    sample = make_sample("H26-0791")
    audit.record(sample, "update", {"note": ("صبغة رايت", "صبغة جيمزا")}, actor=tech)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "note: <bdi>صبغة رايت</bdi> → <bdi>صبغة جيمزا</bdi>" in page
