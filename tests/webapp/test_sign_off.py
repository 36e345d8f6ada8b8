"""Sign-off: who may sign, what stops a signature, what a signature locks, and reopening."""

import re
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from tests.webapp.lab_factories import make_sample, with_role
from tests.webapp.test_uploads import jpeg_bytes
from webapp.models import AddedCellRequest, Cell, CellReview, Sample, SmearImage
from webapp.selectors import leukocyte_formula, result_stamp, sign_off_facts
from webapp.services.deletion import delete_image, delete_sample
from webapp.services.locking import SampleLocked
from webapp.services.review import review_cell
from webapp.services.sign_off import (
    SignOffRefused,
    reopen_sample,
    set_target_count,
    sign_sample,
)
from webapp.services.training import reclassify
from webapp.services.uploads import add_images_to_sample, requeue_image

pytestmark = pytest.mark.django_db

JSON = {"Accept": "application/json"}
THREE = ("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL")


def member(django_user_model, name, group):
    return with_role(django_user_model.objects.create_user(name, password="a-long-passphrase-1"), group)


@pytest.fixture
def hematologist(django_user_model):
    return member(django_user_model, "hema", "hematologist")


@pytest.fixture
def technologist(django_user_model):
    return member(django_user_model, "techno", "technologist")


def small_sample(accession="H26-0001", types=THREE, **kwargs):
    """A sample whose target is the cells it holds (the form offers 100 or 200; a test needs few)."""
    sample = make_sample(accession, types=types, **kwargs)
    Sample.objects.filter(pk=sample.pk).update(target_count=len(types))
    return Sample.objects.get(pk=sample.pk)


def shown(sample, **fields):
    """The sign form as the sample page sends it: the fields, and the result the page showed."""
    return {"result_seen": result_stamp(sample), **fields}


def codes(sample):
    return [refusal.code for refusal in sign_off_facts(sample).refusals()]


def signed_sample(hematologist, accession="H26-0001"):
    return sign_sample(small_sample(accession), hematologist)


# --- who may sign ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lab:sample-sign", "lab:sample-reopen", "lab:sample-target"])
def test_anonymous_visitors_are_sent_to_sign_in(client, name):
    sample = small_sample()
    response = client.post(reverse(name, args=[sample.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]
    response = client.post(reverse(name, args=[sample.pk]), headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert Sample.objects.get(pk=sample.pk).status == Sample.Status.IN_PROGRESS


def test_the_new_urls_answer_post_only(client, hematologist):
    client.force_login(hematologist)
    sample = small_sample()
    for name in ("lab:sample-sign", "lab:sample-reopen", "lab:sample-target"):
        assert client.get(reverse(name, args=[sample.pk])).status_code == 405


def test_a_technologist_sees_the_status_but_cannot_sign(client, technologist):
    client.force_login(technologist)
    sample = small_sample()
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="sign-off"' in body and "Ready to sign" in body
    assert 'data-role="sign-form"' not in body
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]))
    assert response.status_code == 403
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]), headers=JSON)
    assert response.status_code == 403 and "for hematologists" in response.json()["error"]
    assert Sample.objects.get(pk=sample.pk).status == Sample.Status.IN_PROGRESS
    with pytest.raises(PermissionDenied):
        sign_sample(sample, technologist)


def test_a_hematologist_signs_from_the_sample_page(client, hematologist):
    client.force_login(hematologist)
    sample = small_sample()
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="sign-form"' in body
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]), shown(sample), follow=True)
    assert "Sample H26-0001 signed." in response.content.decode()
    sample.refresh_from_db()
    assert sample.status == Sample.Status.SIGNED and sample.signed_by == hematologist
    assert sample.signed_at is not None and sample.times_signed == 1
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "Signed by <bdi>hema</bdi> on" in body and 'data-role="reopen-form"' in body
    assert 'data-role="sign-form"' not in body
    # Its stylesheet is in the page's head, once, not in the body where each redraw brought it.
    head, page_body = body.split("</head>", 1)
    assert "css/sign_off.css" in head and "css/sign_off.css" not in page_body
    # Folded until asked for: an open reason box on every signed sample invites a slip.
    assert '<details class="reopen">\n    <summary>Reopen this result…</summary>' in body


def test_a_superuser_may_sign(django_user_model):
    boss = django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1")
    assert sign_sample(small_sample(), boss).status == Sample.Status.SIGNED


def test_a_sample_deleted_while_its_page_was_open_is_refused_in_one_line_not_a_500(hematologist):
    # The view reads the sample before the service locks it: a deletion in between raised
    # Sample.DoesNotExist out of sign_sample (the review of the session's locking).
    sample = small_sample()
    delete_sample(Sample.objects.get(pk=sample.pk))
    with pytest.raises(SignOffRefused, match="H26-0001 was deleted meanwhile: there is nothing to sign"):
        sign_sample(sample, hematologist)


@pytest.mark.parametrize("name, data, not_done", [
    ("lab:sample-sign", {"result_seen": "x"}, "there is nothing to sign."),
    ("lab:sample-target", {"target_count": "200"}, "the target count was not set."),
])
def test_a_sign_off_form_for_a_sample_deleted_before_it_was_sent_says_so(client, hematologist, name, data,
                                                                         not_done):
    """The audit: a sign-off posted for a sample deleted while its page was open answered "deleted
    meanwhile" where the deletion committed as the signature waited on its lock, and the site's
    generic 404 page where it had committed before the form arrived: one race, two answers."""
    sample = small_sample()
    delete_sample(Sample.objects.get(pk=sample.pk))
    client.force_login(hematologist)
    said = f"Sample H26-0001 was deleted meanwhile: {not_done}"

    response = client.post(reverse(name, args=[sample.pk]), data, follow=True)
    assert response.redirect_chain == [(reverse("lab:sample-list"), 302)]
    assert [str(message) for message in response.context["messages"]] == [said]
    answer = client.post(reverse(name, args=[sample.pk]), data, headers=JSON)
    assert (answer.status_code, answer.json()) == (409, {"error": said})
    # An id no sample ever had is still not found.
    assert client.post(reverse(name, args=[sample.pk + 1000]), data).status_code == 404


def test_a_technologist_is_refused_a_deleted_samples_sign_off_without_its_accession(client, technologist):
    sample = small_sample()
    delete_sample(Sample.objects.get(pk=sample.pk))
    client.force_login(technologist)
    for name in ("lab:sample-sign", "lab:sample-reopen"):
        answer = client.post(reverse(name, args=[sample.pk]), {"reason": "x"}, headers=JSON)
        assert answer.status_code == 403
        assert "H26-0001" not in answer.content.decode()


# --- what stops a signature --------------------------------------------------------------------


def test_a_sample_with_nothing_in_the_way_is_ready():
    assert codes(small_sample()) == []


def test_flagged_cells_not_yet_reviewed_stop_the_signature(hematologist):
    sample = small_sample(confidence=0.5)  # under the review threshold: each cell flagged
    refusals = sign_off_facts(sample).refusals()
    assert [r.code for r in refusals] == ["unreviewed"]
    assert refusals[0].message == "3 cells flagged for review were not reviewed yet."
    with pytest.raises(SignOffRefused, match="3 cells flagged for review were not reviewed yet"):
        sign_sample(sample, hematologist, below_target_reason="urgent", keep_unidentified=True)
    for cell in Cell.objects.filter(image__sample=sample):
        review_cell(cell, cell.predicted_type, hematologist)
    assert sign_sample(sample, hematologist).is_signed


def test_the_refusal_says_which_flagged_cells_the_formula_leaves_out_at_the_edge(hematologist):
    # A flagged cell the edge cuts is not in the formula beside the refusal, yet must be reviewed:
    # "3 flagged" next to a formula counting none of them needs saying why.
    sample = small_sample(confidence=0.5)
    Cell.objects.filter(image__sample=sample, index__lt=2).update(is_partial=True)
    refusal = next(r for r in sign_off_facts(sample).refusals() if r.code == "unreviewed")
    assert refusal.message == ("3 cells flagged for review were not reviewed yet (2 of them cut by a "
                               "photograph's edge: left out of the formula, reviewed all the same).")
    Cell.objects.filter(image__sample=sample, index=2).update(corrected_type="NEUTROPHIL")
    Cell.objects.filter(image__sample=sample, index=1).update(corrected_type="LYMPHOCYTE")
    refusal = next(r for r in sign_off_facts(sample).refusals() if r.code == "unreviewed")
    assert refusal.message == ("1 cell flagged for review was not reviewed yet (it is cut by a "
                               "photograph's edge: left out of the formula, reviewed all the same).")


def test_a_result_changed_since_the_page_was_loaded_is_not_signed(client, hematologist, technologist):
    # The audit's hematologist signed a page that still said "Neutrophil 2" after a technologist,
    # on another screen, had made one of them a blast: the LIS received the blast unseen.
    sample = small_sample()
    client.force_login(hematologist)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    seen = re.search(r'name="result_seen" value="([^"]+)"', page).group(1)
    review_cell(Cell.objects.get(image__sample=sample, index=0), "BLAST", technologist)

    response = client.post(reverse("lab:sample-sign", args=[sample.pk]), {"result_seen": seen}, follow=True)

    message = response.content.decode()
    assert "was not signed: its result changed since your page was loaded" in message
    assert "Neutrophil 2 \u2192 1" in message and "Blast 0 \u2192 1" in message
    assert not Sample.objects.get(pk=sample.pk).is_signed
    # A form that does not say which result it signs is not signed either.
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]), headers=JSON)
    assert response.status_code == 400 and "Reload the page" in response.json()["error"]
    # Two labels swapped keep every count, and still change the result.
    swapped = result_stamp(sample)
    review_cell(Cell.objects.get(image__sample=sample, index=1), "BLAST", technologist)
    review_cell(Cell.objects.get(image__sample=sample, index=0), "LYMPHOCYTE", technologist)
    with pytest.raises(SignOffRefused, match="the same counts, but cells were relabelled"):
        sign_sample(sample, hematologist, result_seen=swapped)
    # The page reloaded signs.
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    seen = re.search(r'name="result_seen" value="([^"]+)"', page).group(1)
    client.post(reverse("lab:sample-sign", args=[sample.pk]), {"result_seen": seen})
    assert Sample.objects.get(pk=sample.pk).is_signed


def test_unidentified_cells_stop_it_unless_kept(client, hematologist):
    sample = small_sample()
    review_cell(Cell.objects.get(index=0), "UNIDENTIFIED", hematologist)
    Sample.objects.filter(pk=sample.pk).update(target_count=2)
    assert codes(sample) == ["unidentified"]
    with pytest.raises(SignOffRefused, match="1 cell was marked unidentified"):
        sign_sample(sample, hematologist)
    client.force_login(hematologist)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'name="keep_unidentified"' in body
    client.post(reverse("lab:sample-sign", args=[sample.pk]), shown(sample, keep_unidentified="on"))
    sample.refresh_from_db()
    assert sample.is_signed and sample.unidentified_kept


def test_an_unidentified_cell_the_edge_leaves_out_does_not_stop_the_signature(hematologist):
    # The formula leaves it out with the other cells the edge cuts: the sign-off follows the formula.
    sample = small_sample()
    edge = Cell.objects.get(index=0)
    Cell.objects.filter(pk=edge.pk).update(is_partial=True)
    review_cell(edge, "UNIDENTIFIED", hematologist)
    Sample.objects.filter(pk=sample.pk).update(target_count=2)
    assert leukocyte_formula(sample).unidentified == 0
    assert codes(sample) == []
    assert sign_sample(sample, hematologist).is_signed


def test_fewer_leukocytes_than_the_target_need_a_written_reason(client, hematologist):
    sample = small_sample()
    Sample.objects.filter(pk=sample.pk).update(target_count=100)
    refusals = sign_off_facts(sample).refusals()
    assert [r.code for r in refusals] == ["below_target"] and refusals[0].overridable
    assert refusals[0].message.startswith("3 of 100 leukocytes counted: add photographs")
    client.force_login(hematologist)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "3 of 100 leukocytes counted: add photographs." in page
    assert 'name="below_target_reason"' in page
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]),
                           shown(sample, below_target_reason="  "), follow=True)
    assert "cannot be signed yet" in response.content.decode()
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]), shown(sample), headers=JSON)
    assert response.status_code == 409 and "3 of 100 leukocytes counted" in response.json()["error"]
    assert not Sample.objects.get(pk=sample.pk).is_signed
    client.post(reverse("lab:sample-sign", args=[sample.pk]),
                shown(sample, below_target_reason="Leukopenic sample: no more cells on the slide."))
    sample.refresh_from_db()
    assert sample.is_signed
    assert sample.below_target_reason == "Leukopenic sample: no more cells on the slide."
    # The target reached, a reason sent with the form is no reason: the report would say the count
    # fell short.
    reached = sign_sample(small_sample("H26-0002"), hematologist, below_target_reason="Leukopenic.")
    assert reached.is_signed and reached.below_target_reason == ""


def test_a_refused_signature_keeps_what_the_hematologist_wrote(client, hematologist):
    # The form is drawn empty on the page a refusal returns to: the audit's reason was lost.
    sample = small_sample()
    Sample.objects.filter(pk=sample.pk).update(target_count=100)
    Cell.objects.filter(image__sample=sample, index=0).update(needs_review=True)
    client.force_login(hematologist)
    reason = "Leukopenic: <all> fields scanned"
    response = client.post(reverse("lab:sample-sign", args=[sample.pk]),
                           shown(sample, below_target_reason=reason), follow=True)
    page = response.content.decode()
    assert "cannot be signed yet" in page and not Sample.objects.get(pk=sample.pk).is_signed
    assert ">Leukopenic: &lt;all&gt; fields scanned</textarea>" in page
    # Written in once: the next visit starts afresh.
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'maxlength="2000"></textarea>' in page


def test_a_sample_with_no_leukocyte_counted_cannot_be_signed_even_with_a_reason(hematologist):
    # The audit signed one and the LIS received a "final" 0% differential with 0.0-0.0 ranges.
    sample = small_sample()
    Cell.objects.filter(image__sample=sample).update(cell_type="ARTEFACT", corrected_type="ARTEFACT")
    # Not "below the target, a hematologist may sign anyway": no reason makes it signable.
    assert codes(sample) == ["no_leukocytes"]
    with pytest.raises(SignOffRefused, match="No leukocyte is counted: there is no differential to sign"):
        sign_sample(sample, hematologist, below_target_reason="leukopenic", keep_unidentified=True)
    assert not Sample.objects.get(pk=sample.pk).is_signed


def test_photographs_not_finished_stop_the_signature(hematologist):
    sample = small_sample()
    image = sample.images.get()
    for status, words in ((SmearImage.Status.QUEUED, "1 photograph still queued or being classified"),
                          (SmearImage.Status.PROCESSING, "still queued or being classified"),
                          (SmearImage.Status.FAILED, "1 photograph failed: try it again or delete it")):
        SmearImage.objects.filter(pk=image.pk).update(status=status)
        assert "photographs" in codes(sample)
        with pytest.raises(SignOffRefused, match=words):
            sign_sample(sample, hematologist, below_target_reason="urgent", keep_unidentified=True)
    empty = Sample.objects.create(accession_number="EMPTY")
    assert "The sample has no photograph." in [r.message for r in sign_off_facts(empty).refusals()]


def test_the_panel_says_photographs_are_being_classified_not_to_add_some(client, hematologist):
    # The workflow audit: while 7 photographs were classifying the panel read "0 of 100 leukocytes
    # counted: add photographs.", above "Not ready to sign:" and a Sign button that works.
    sample = small_sample()
    Sample.objects.filter(pk=sample.pk).update(target_count=100)
    SmearImage.objects.filter(sample=sample).update(status=SmearImage.Status.PROCESSING)
    client.force_login(hematologist)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "3 of 100 leukocytes counted so far: 1 photograph still being classified." in page
    assert "add photographs." not in page and "Before signing:" in page


def test_a_cell_drawn_by_hand_still_being_classified_stops_the_signature(hematologist):
    sample = small_sample()
    request = AddedCellRequest.objects.create(image=sample.images.get(), x0=5, y0=5, x1=40, y1=40)
    with pytest.raises(SignOffRefused, match="1 cell drawn by hand still being classified: wait until it is"):
        sign_sample(sample, hematologist, below_target_reason="urgent", keep_unidentified=True)
    AddedCellRequest.objects.filter(pk=request.pk).update(status=AddedCellRequest.Status.DONE)
    sign_sample(sample, hematologist, below_target_reason="urgent", keep_unidentified=True)
    assert Sample.objects.get(pk=sample.pk).is_signed


def test_every_reason_is_listed_at_once(hematologist):
    sample = small_sample(confidence=0.5)
    Sample.objects.filter(pk=sample.pk).update(target_count=100)
    SmearImage.objects.filter(sample=sample).update(status=SmearImage.Status.FAILED)
    with pytest.raises(SignOffRefused) as refused:
        sign_sample(sample, hematologist)
    assert [r.code for r in refused.value.reasons] == ["unreviewed", "photographs", "below_target"]


def test_a_signed_sample_cannot_be_signed_twice(hematologist):
    sample = signed_sample(hematologist)
    with pytest.raises(SignOffRefused, match="already signed"):
        sign_sample(sample, hematologist)


# --- the lock ----------------------------------------------------------------------------------


def test_relabelling_a_cell_of_a_signed_sample_is_refused(client, hematologist):
    sample = signed_sample(hematologist)
    cell = Cell.objects.get(image__sample=sample, index=0)
    with pytest.raises(SampleLocked, match="H26-0001 was signed by hema"):
        review_cell(cell, "MONOCYTE", hematologist)
    client.force_login(hematologist)
    response = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE"},
                           headers={"Accept": "application/json"})
    assert response.status_code == 409 and "reopen" in response.json()["error"]
    response = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE"},
                           follow=True)
    assert "relabelling a cell is refused while it is signed" in response.content.decode()
    cell.refresh_from_db()
    assert (cell.cell_type, cell.corrected_type) == ("NEUTROPHIL", "")
    assert not CellReview.objects.exists()


def test_adding_photographs_to_a_signed_sample_is_refused(client, hematologist, sent_tasks):
    sample = signed_sample(hematologist)
    photograph = SimpleUploadedFile("more.jpg", jpeg_bytes(), content_type="image/jpeg")
    with pytest.raises(SampleLocked):
        add_images_to_sample(sample, [photograph])
    client.force_login(hematologist)
    photograph.seek(0)
    response = client.post(reverse("lab:sample-add-images", args=[sample.pk]), {"images": [photograph]},
                           follow=True)
    assert "adding photographs is refused while it is signed" in response.content.decode()
    assert sample.images.count() == 1 and sent_tasks == []


def test_photographs_are_refused_when_the_sample_is_signed_while_they_are_read(
        hematologist, sent_tasks, monkeypatch, settings, tmp_path):
    # The audit's race: a signature lands while a large upload's files are being checked.
    from webapp.services import uploads

    settings.MEDIA_ROOT = tmp_path
    sample = small_sample(types=THREE)
    Sample.objects.filter(pk=sample.pk).update(target_count=3)
    checked = uploads.check_files

    def checked_while_signing(files, *known):
        result = checked(files, *known)
        sign_sample(Sample.objects.get(pk=sample.pk), hematologist)
        return result

    monkeypatch.setattr(uploads, "check_files", checked_while_signing)
    photograph = SimpleUploadedFile("more.jpg", jpeg_bytes(), content_type="image/jpeg")
    with pytest.raises(SampleLocked, match="adding photographs is refused while it is signed"):
        add_images_to_sample(Sample.objects.get(pk=sample.pk), [photograph])
    assert sample.images.count() == 1 and sent_tasks == []
    assert not list(tmp_path.rglob("more*"))  # no file left behind either


def test_a_signed_samples_page_offers_nothing_it_would_refuse(client, hematologist):
    sample = small_sample(types=THREE)
    Sample.objects.filter(pk=sample.pk).update(target_count=100, created_by=hematologist)
    sign_sample(Sample.objects.get(pk=sample.pk), hematologist, below_target_reason="leukopenic")
    client.force_login(hematologist)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "add-images-form" not in page and reverse("lab:sample-delete", args=[sample.pk]) not in page
    assert "add photographs" not in page.lower()
    assert "3 of 100 leukocytes counted." in page
    cell_page = client.get(reverse("lab:cell-detail", args=[sample.images.get().cells.first().pk]))
    assert "cell-review-form" not in cell_page.content.decode()
    assert "labels are locked until a hematologist reopens it" in cell_page.content.decode()

    reopen_sample(Sample.objects.get(pk=sample.pk), hematologist, reason="one more field")
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "add-images-form" in page
    # Its result was released once: it is corrected, never deleted.
    assert reverse("lab:sample-delete", args=[sample.pk]) not in page
    assert "3 of 100 leukocytes counted: add photographs." in page
    cell_page = client.get(reverse("lab:cell-detail", args=[sample.images.get().cells.first().pk]))
    assert "cell-review-form" in cell_page.content.decode()


def test_trying_a_photograph_again_on_a_signed_sample_is_refused(client, hematologist, sent_tasks):
    sample = signed_sample(hematologist)
    image = sample.images.get()
    with pytest.raises(SampleLocked):
        requeue_image(image)
    client.force_login(hematologist)
    response = client.post(reverse("lab:image-retry", args=[image.pk]), follow=True)
    assert "is already classified: nothing was queued again" in response.content.decode()
    image.refresh_from_db()
    assert image.status == SmearImage.Status.DONE and sent_tasks == []


def test_try_again_on_a_photograph_already_classified_queues_nothing(client, technologist, sent_tasks,
                                                                    django_capture_on_commit_callbacks):
    # A page drawn while the photograph was stuck still offers "Try again" once it is done.
    sample = small_sample()
    image = sample.images.get()
    client.force_login(technologist)
    response = client.post(reverse("lab:image-retry", args=[image.pk]), follow=True)
    assert "H26-0001.png is already classified: nothing was queued again." in response.content.decode()
    assert SmearImage.objects.get(pk=image.pk).status == SmearImage.Status.DONE and sent_tasks == []
    SmearImage.objects.filter(pk=image.pk).update(status=SmearImage.Status.FAILED, error="worker lost")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("lab:image-retry", args=[image.pk]))
    assert SmearImage.objects.get(pk=image.pk).status == SmearImage.Status.QUEUED and len(sent_tasks) == 1


def test_reclassifying_leaves_signed_samples_untouched_and_says_so(
        client, hematologist, sent_tasks, django_user_model, django_capture_on_commit_callbacks):
    signed = signed_sample(hematologist, "SIGNED-1")
    open_one = small_sample("OPEN-1")
    with pytest.raises(SampleLocked), django_capture_on_commit_callbacks(execute=True):
        reclassify(signed)
    assert sent_tasks == []
    with django_capture_on_commit_callbacks(execute=True):
        done = reclassify(None)
    assert done.signed_skipped == ["SIGNED-1"] and done.queued == 1
    assert [args for _, args in sent_tasks] == [(open_one.images.get().pk,)]
    image = signed.images.get()
    assert image.status == SmearImage.Status.DONE and image.requested_version is None
    staff = with_role(django_user_model.objects.create_user("staff", password="a-long-passphrase-1",
                                                            is_staff=True), "admin")
    client.force_login(staff)
    response = client.post(reverse("models:reclassify"), {"all_samples": "on"}, follow=True)
    assert "1 signed sample left as it is (SIGNED-1)" in response.content.decode()
    assert signed.images.get().status == SmearImage.Status.DONE


def test_deleting_a_signed_sample_or_its_photograph_is_refused(client, hematologist):
    sample = signed_sample(hematologist)
    image = sample.images.get()
    stored = default_storage.save(image.image.name, ContentFile(jpeg_bytes()))
    SmearImage.objects.filter(pk=image.pk).update(image=stored)
    image.refresh_from_db()
    with pytest.raises(SampleLocked):
        delete_sample(sample, hematologist)
    with pytest.raises(SampleLocked):
        delete_image(image, hematologist)
    Sample.objects.filter(pk=sample.pk).update(created_by=hematologist)
    client.force_login(hematologist)
    response = client.post(reverse("lab:sample-delete", args=[sample.pk]), follow=True)
    assert "deleting the sample is refused while it is signed" in response.content.decode()
    assert Sample.objects.filter(pk=sample.pk).exists() and SmearImage.objects.filter(pk=image.pk).exists()
    assert Cell.objects.filter(image=image).count() == 3
    assert default_storage.exists(stored)


def test_a_result_once_released_is_never_deleted_but_its_photographs_may_be(client, hematologist,
                                                                               django_user_model):
    # The audit reopened a signed sample and its technologist then deleted it: the LIS, which had
    # filed the result, found a 404 and no word of a withdrawal.
    sample = signed_sample(hematologist)
    reopen_sample(sample, hematologist, "Cell 1 is a basophil.")
    Sample.objects.filter(pk=sample.pk).update(created_by=hematologist)
    client.force_login(hematologist)
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert reverse("lab:sample-delete", args=[sample.pk]) not in page
    response = client.post(reverse("lab:sample-delete", args=[sample.pk]), follow=True)
    assert "its result was released (signed 1 time), and a released result stays on record" in (
        response.content.decode())
    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase-9")
    with pytest.raises(SampleLocked, match="released"):
        delete_sample(Sample.objects.get(pk=sample.pk), root)
    client.force_login(root)
    refused = client.post(reverse("admin:webapp_sample_delete", args=[sample.pk]), {"post": "yes"})
    assert refused.status_code == 403
    assert Sample.objects.filter(pk=sample.pk).exists()
    # A photograph of it is still the hematologist's to take out while correcting it.
    delete_image(sample.images.get(), hematologist)
    assert not SmearImage.objects.filter(sample=sample).exists()


def test_the_target_count_is_set_from_the_page_and_locked_with_the_sample(client, hematologist):
    sample = make_sample()
    assert sample.target_count == 100  # settings.LEUKOSCOPE_TARGET_COUNT
    client.force_login(hematologist)
    client.post(reverse("lab:sample-target", args=[sample.pk]), {"target_count": "200"})
    assert Sample.objects.get(pk=sample.pk).target_count == 200
    response = client.post(reverse("lab:sample-target", args=[sample.pk]), {"target_count": "150"},
                           follow=True)
    assert "The target count is 100 or 200 leukocytes." in response.content.decode()
    assert Sample.objects.get(pk=sample.pk).target_count == 200
    with pytest.raises(SignOffRefused, match="one of 100, 200 leukocytes"):  # whatever calls it
        set_target_count(sample, 150)
    assert Sample.objects.get(pk=sample.pk).target_count == 200
    signed = signed_sample(hematologist, "S-2")
    with pytest.raises(SampleLocked):
        set_target_count(signed, 200)
    assert Sample.objects.get(pk=signed.pk).target_count == 3


def test_a_target_set_before_the_choices_narrowed_shows_as_the_samples(client, tech):
    # LEUKOSCOPE_TARGET_COUNT once took any number: a sample made at 150 showed "100" selected.
    sample = make_sample()
    Sample.objects.filter(pk=sample.pk).update(target_count=150)
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    select = body.split('id="target-count"')[1].split("</select>")[0]
    options = re.findall(r'<option value="(\d+)"( selected)?>', select)
    assert options == [("100", ""), ("150", " selected"), ("200", "")]


def test_the_page_says_when_the_target_is_reached(client, tech):
    sample = small_sample()
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "Target of 3 reached" in body


# --- reopening ---------------------------------------------------------------------------------


def test_reopening_needs_a_reason_and_unlocks_the_sample(client, hematologist, technologist):
    sample = signed_sample(hematologist)
    with pytest.raises(SignOffRefused, match="Give the reason"):
        reopen_sample(sample, hematologist, "   ")
    client.force_login(technologist)
    assert client.post(reverse("lab:sample-reopen", args=[sample.pk]), {"reason": "x"}).status_code == 403
    with pytest.raises(PermissionDenied):  # the service refuses too, whatever calls it
        reopen_sample(sample, technologist, "x")
    assert Sample.objects.get(pk=sample.pk).is_signed
    client.force_login(hematologist)
    response = client.post(reverse("lab:sample-reopen", args=[sample.pk]), {"reason": ""}, follow=True)
    assert "Give the reason for reopening the sample." in response.content.decode()
    assert Sample.objects.get(pk=sample.pk).is_signed
    client.post(reverse("lab:sample-reopen", args=[sample.pk]), {"reason": "Cell 2 is a monocyte."})
    sample.refresh_from_db()
    assert sample.status == Sample.Status.REOPENED and sample.reopened_by == hematologist
    assert sample.reopen_reason == "Cell 2 is a monocyte."
    cell = Cell.objects.get(image__sample=sample, index=1)
    review_cell(cell, "MONOCYTE", hematologist)  # unlocked
    assert Cell.objects.get(pk=cell.pk).cell_type == "MONOCYTE"
    again = sign_sample(sample, hematologist)
    assert again.times_signed == 2 and again.is_signed


def test_reopening_an_unsigned_sample_is_refused(hematologist):
    with pytest.raises(SignOffRefused, match="not signed"):
        reopen_sample(small_sample(), hematologist, "why not")


# --- the lists ---------------------------------------------------------------------------------


def test_the_sample_list_and_history_show_each_status(client, tech, hematologist):
    small_sample("READY-1")
    make_sample("BUSY-1")  # 3 of 100 leukocytes: below the target, signed only with a reason
    make_sample("FLAGGED-1", confidence=0.5)  # cells to review: in progress
    signed_sample(hematologist, "SIGNED-1")
    reopened = reopen_sample(signed_sample(hematologist, "REOPENED-1"), hematologist, "recount")
    Sample.objects.filter(pk=reopened.pk).update(target_count=100)
    amended = reopen_sample(signed_sample(hematologist, "AMENDED-1"), hematologist, "recount")
    sign_sample(amended, hematologist)
    client.force_login(tech)
    body = client.get(reverse("lab:sample-list")).content.decode()
    for state, words in (("ready", "Ready to sign"), ("in_progress", "In progress"),
                         ("in_progress", "Below the target"), ("signed", "Signed"), ("reopened", "Reopened"),
                         ("signed", "Signed, amended")):
        assert f'data-state="{state}">{words}</span>' in body
    assert body.count('data-state="signed">Signed, amended</span>') == 1
    history = client.get(reverse("lab:history"), {"view": "table"}).content.decode()
    assert 'data-state="signed">Signed</span>' in history
    assert 'data-state="ready">Ready to sign</span>' in history


@pytest.mark.parametrize("name, form, message", [
    ("lab:sample-target", {"target_count": ""}, "Choose the target count: 100 or 200 leukocytes."),
    ("lab:sample-target", {"target_count": "150"}, "The target count is 100 or 200 leukocytes."),
    ("lab:sample-sign", {"result_seen": "x" * 5000},
     "Reload the page and sign again: the form's record of the result you were shown is not one this site "
     "wrote."),
    # Not a stamp at all: said so, rather than "its result changed since your page was loaded".
    ("lab:sample-sign", {"result_seen": "garbage"},
     "Reload the page and sign again: the form's record of the result you were shown is not one this site "
     "wrote."),
    ("lab:sample-sign", {"result_seen": "NEUTROPHIL:\u0663;0123456789abcdef"},
     "Reload the page and sign again: the form's record of the result you were shown is not one this site "
     "wrote."),
    # A stamp of the site's form whose digest no result has: read, not refused as garbage.
    ("lab:sample-sign", {"result_seen": "NEUTROPHIL:2;0123456789abcdef", "below_target_reason": "y" * 2001},
     "The reason for signing below the target count is at most 2,000 characters."),
])
def test_a_form_the_panel_cannot_read_is_a_400_saying_what_to_do(client, hematologist, name, form, message):
    # Bad input is the caller's to mend (400), not a state of the sample that stands in the way (409).
    client.force_login(hematologist)
    sample = small_sample()
    response = client.post(reverse(name, args=[sample.pk]), form, headers=JSON)
    assert response.status_code == 400 and response.json() == {"error": message}
    assert not Sample.objects.get(pk=sample.pk).is_signed


def test_a_reopening_reason_too_long_is_a_400(client, hematologist):
    client.force_login(hematologist)
    sample = signed_sample(hematologist)
    response = client.post(reverse("lab:sample-reopen", args=[sample.pk]), {"reason": "z" * 2001},
                           headers=JSON)
    assert response.status_code == 400
    assert response.json() == {"error": "The reason for reopening is at most 2,000 characters."}
    assert Sample.objects.get(pk=sample.pk).is_signed


def sign_in_flight(sample, user, locked, release):
    """As sign_sample signs: the sample's row locked and written, then held (``locked`` set) until
    ``release`` is set, then committed. For a thread of its own (start_as_another_request)."""
    from django.db import transaction

    with transaction.atomic():
        Sample.objects.select_for_update().get(pk=sample.pk)
        Sample.objects.filter(pk=sample.pk).update(status=Sample.Status.SIGNED, signed_by=user,
                                                   signed_at=timezone.now(), times_signed=1)
        locked.set()
        release.wait(30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("delete", ["photograph", "sample"])
def test_a_deletion_waits_for_a_signature_in_flight_and_is_then_refused(django_user_model, delete):
    # A classified photograph may be deleted now: checked before the deletion's transaction, the
    # lock was not taken, and a signature committed in between left a signed result without its
    # photograph's cells. (SQLite takes one writer at a time: the race is PostgreSQL's.)
    import threading

    from django.db import connection

    from tests.webapp.concurrent_requests import start_as_another_request

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1")
    sample = make_sample("H26-RACE", types=("NEUTROPHIL", "LYMPHOCYTE"))
    image = sample.images.get()
    locked, release = threading.Event(), threading.Event()
    refused = []

    def remove():
        try:
            if delete == "photograph":
                delete_image(SmearImage.objects.select_related("sample").get(pk=image.pk), user=user,
                             finished_only=True)
            else:
                delete_sample(Sample.objects.get(pk=sample.pk), user=user)
        except SampleLocked as exc:
            refused.append(str(exc))

    signer = start_as_another_request(lambda: sign_in_flight(sample, user, locked, release))
    assert locked.wait(10)
    deleter = start_as_another_request(remove)
    deleter.join(1.5)
    assert deleter.is_alive(), "the deletion went ahead under a signature in flight"
    release.set()
    signer.join(10)
    deleter.join(10)
    assert refused and "is refused while it is signed" in refused[0]
    assert Sample.objects.get(pk=sample.pk).status == Sample.Status.SIGNED
    assert Cell.objects.filter(image__sample=sample).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_re_classification_waits_for_a_signature_in_flight_and_leaves_the_sample_signed(
        django_user_model, sent_tasks):
    # "Re-classify all" read which samples were signed without their rows' locks: a signature
    # committed between that read and the queueing left a signed sample's photographs queued, and
    # the worker then replaced the signed result's cells with another version's calls.
    import threading

    from django.db import connection

    from tests.conftest import wait_for
    from tests.webapp.concurrent_requests import start_as_another_request, waiting_on_a_lock
    from tests.webapp.lab_factories import make_version

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    user = django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1")
    sample = make_sample("H26-RACE", types=("NEUTROPHIL", "LYMPHOCYTE"))
    make_version()  # a newer version, active: what the re-classification queues for
    locked, release, done = threading.Event(), threading.Event(), []

    signer = start_as_another_request(lambda: sign_in_flight(sample, user, locked, release))
    assert locked.wait(30)
    reclassifier = start_as_another_request(lambda: done.append(reclassify(None, user)))
    wait_for(lambda: done or waiting_on_a_lock(), "the re-classification to finish or wait", 30)
    release.set()
    signer.join(30)
    reclassifier.join(30)
    assert Sample.objects.get(pk=sample.pk).status == Sample.Status.SIGNED
    image = sample.images.get()
    assert (image.status, image.requested_version_id) == (SmearImage.Status.DONE, None)
    assert sent_tasks == []
    assert (done[0].queued, done[0].signed_skipped) == (0, ["H26-RACE"])


@pytest.mark.django_db(transaction=True)
def test_signatures_commit_in_the_order_an_information_system_polls_them(hematologist, monkeypatch):
    # The LIS asks for the results signed since the last signed_at it read. A signature still
    # writing its figures let a later one commit first: a poll between the two commits listed the
    # later one alone, and the next poll, from its signed_at, never listed the earlier one.
    import threading

    from django.db import connection

    from tests.webapp.concurrent_requests import start_as_another_request
    from webapp.selectors import samples_with_progress
    from webapp.services import sign_off

    if connection.vendor != "postgresql":
        pytest.skip("SQLite's IMMEDIATE transactions take one writer at a time: the race is PostgreSQL's")
    slow, quick = small_sample("H26-SLOW"), small_sample("H26-QUICK")
    writing, release = threading.Event(), threading.Event()
    figures = sign_off.result_figures

    def slow_figures(formula):
        if not writing.is_set():  # the first signature only, once its clock is read
            writing.set()
            release.wait(30)
        return figures(formula)

    def poll(since=None):
        signed = samples_with_progress(signed_since=since or timezone.now() - timedelta(days=1))
        return [(sample.accession_number, sample.signed_at) for sample in signed]

    monkeypatch.setattr(sign_off, "result_figures", slow_figures)
    slow_signer = start_as_another_request(lambda: sign_sample(slow, hematologist))
    assert writing.wait(30)
    quick_signer = start_as_another_request(lambda: sign_sample(quick, hematologist))
    quick_signer.join(1.5)
    first_poll = poll()
    release.set()
    slow_signer.join(30)
    quick_signer.join(30)
    assert not (slow_signer.is_alive() or quick_signer.is_alive())
    # The LIS files what the first poll listed and asks again from its last signed_at.
    next_poll = poll(first_poll[-1][1]) if first_poll else poll()
    filed = {accession for accession, _ in first_poll + next_poll}
    assert filed == {"H26-SLOW", "H26-QUICK"}, f"polled {first_poll}, then {next_poll}"
    assert [accession for accession, _ in poll()] == ["H26-SLOW", "H26-QUICK"]


def test_the_account_that_signed_or_reopened_a_result_cannot_be_deleted(hematologist, django_user_model):
    # Deleting it blanked "Signed by" on the report, left the FHIR DiagnosticReport of a final result
    # with no performer, and the trail then credited the signature to "the worker". The account is
    # made inactive instead, as one holding API keys is.
    from django.db.models import ProtectedError

    sample = small_sample()
    sign_sample(sample, hematologist, result_seen=result_stamp(sample))
    with pytest.raises(ProtectedError):
        hematologist.delete()
    other = member(django_user_model, "hema2", "hematologist")
    reopen_sample(sample, other, "Recount")
    sign_sample(sample, hematologist, result_seen=result_stamp(sample))
    with pytest.raises(ProtectedError):
        other.delete()
    assert Sample.objects.get(pk=sample.pk).signed_by == hematologist


def test_a_signature_keeps_the_name_it_was_signed_under_when_the_account_is_renamed(client, hematologist,
                                                                                  django_user_model):
    """The roles audit: renaming an account renamed the signer of every result it had signed, on the
    report, its PDF and the FHIR performer of a result the LIS had filed as final, unmarked as
    amended. The name is kept as signed; and the admin keeps the user name of an account on record."""
    from webapp.presenters.report import sample_report

    hematologist.first_name, hematologist.last_name = "Ada", "Lovelace"
    hematologist.save()
    sample = signed_sample(hematologist)
    reopen_sample(sample, hematologist, "recount")
    sample = sign_sample(Sample.objects.get(pk=sample.pk), hematologist)
    hematologist.first_name, hematologist.last_name = "Ada", "King"
    hematologist.save()
    report = sample_report(Sample.objects.get(pk=sample.pk))
    assert (report.signed_by, report.reopened_by) == ("Ada Lovelace", "Ada Lovelace")

    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    change = reverse("admin:auth_user_change", args=[hematologist.pk])
    page = client.get(change).content.decode()
    assert 'name="username"' not in page and "The user name hema stays as it is" in page
    form = {"first_name": "Ada", "last_name": "King", "email": "", "is_active": "on",
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "username": "dr.king"}
    assert client.post(change, form).status_code == 302
    assert django_user_model.objects.get(pk=hematologist.pk).username == "hema"


def test_the_sign_off_panel_and_the_legend_are_reached_by_their_headings(client, hematologist):
    """The accessibility audit: "Sign-off" and "Reading the page" were bold text, which a screen
    reader's list of headings passes by."""
    client.force_login(hematologist)
    page = client.get(reverse("lab:sample-detail", args=[small_sample().pk])).content.decode()
    assert '<h2 class="panel-heading">Sign-off</h2>' in page
    assert '<h2 class="panel-heading">Reading the page</h2>' in page
