"""The sample page in pages of photographs: each page shows its own cards, while the formula, the
progress and the sign-off stay the whole sample's; the live refresh, the review forms and every link
to a photograph's card go to the page that shows it."""

import io
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from classifier.labels import BINARY_GROUP
from tests.webapp.lab_factories import make_sample, with_role
from tests.webapp.test_deleted_meanwhile import hidden_fields
from webapp import selectors
from webapp.models import Cell, Sample, SmearImage
from webapp.selectors import result_stamp

pytestmark = pytest.mark.django_db

# Two photographs a page; the sample's five fill three pages, the last with one.
PER_PAGE = 2


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(selectors, "SAMPLE_PAGE_PHOTOGRAPHS", PER_PAGE)


def add_photograph(sample, types):
    """Another classified photograph of the sample, one cell per entry of ``types``."""
    first = sample.images.order_by("pk").first()
    number = sample.images.count()
    image = SmearImage.objects.create(
        sample=sample, image=f"smears/{sample.accession_number}-{number}.png",
        original_filename=f"{sample.accession_number}-{number}.png", width=640, height=480, file_size=1000,
        checksum=f"{number:064d}", status=SmearImage.Status.DONE, model_version=first.model_version,
        inference_runtime="litert-int8", quality={"focus": 20.0}, quality_warnings=[],
    )
    for index, name in enumerate(types):
        Cell.objects.create(
            image=image, model_version=first.model_version, index=index, x0=10 + 100 * index, y0=20,
            x1=90 + 100 * index, y1=100, predicted_type=name, probabilities={name: 0.9}, confidence=0.9,
            binary_call=BINARY_GROUP.get(name, name), cell_type=name, ood_score=0.5,
        )
    return image


@pytest.fixture
def sample():
    """Five photographs (1-2 cells each, 8 cells): 5 neutrophils, 2 lymphocytes, 1 monocyte."""
    sample = make_sample("H26-PAGES", types=("NEUTROPHIL", "LYMPHOCYTE"))
    add_photograph(sample, ("NEUTROPHIL",))
    add_photograph(sample, ("MONOCYTE", "NEUTROPHIL"))
    add_photograph(sample, ("LYMPHOCYTE",))
    add_photograph(sample, ("NEUTROPHIL", "NEUTROPHIL"))
    return sample


def photograph_ids(sample):
    return list(sample.images.order_by("pk").values_list("pk", flat=True))


def get(client, name, sample, query=""):
    response = client.get(reverse(name, args=[sample.pk]) + query)
    assert response.status_code == 200
    return response.content.decode()


def cards(body):
    return [int(pk) for pk in re.findall(r'<section class="card image-card" id="image-(\d+)"', body)]


def formula(body):
    """Type -> count in the sidebar's differential, and its total."""
    counts = dict((name, int(count)) for name, count in re.findall(
        r'<tr class="t-\w+" data-type="(\w+)"><th scope="row"><span class="chip">[^<]*</span></th>'
        r'<td class="num" data-role="count">(\d+)</td>', body))
    total = int(re.search(r'data-role="total">(\d+)<', body).group(1))
    return counts, total


def navs(body):
    return re.findall(r'<nav class="pagination".*?</nav>', body, re.S)


def review_returns(body):
    return set(re.findall(r'<input type="hidden" name="next" value="([^"]*)">', body))


def test_each_page_shows_its_own_photographs_and_the_whole_sample_s_formula(client, tech, sample):
    ids = photograph_ids(sample)
    first, second, third = (get(client, "lab:sample-detail", sample, query)
                            for query in ("", "?page=2", "?page=3"))
    assert cards(first) == ids[:2]
    assert cards(second) == ids[2:4]
    assert cards(third) == ids[4:]
    for body in (first, second, third):
        # Every photograph's cells count, on whichever page the formula is read.
        assert formula(body) == ({"NEUTROPHIL": 5, "LYMPHOCYTE": 2, "MONOCYTE": 1, "EOSINOPHIL": 0}, 8)
        assert "All 5 photographs classified" in body
        assert "8 of 100 leukocytes counted" in body
    # Which photographs are shown, top and bottom, with the way to the others.
    top, bottom = navs(second)
    for nav in (top, bottom):
        assert "Photographs 3-4 of 5" in nav
        assert 'href="?page=1">← Previous</a>' in nav and 'href="?page=3">Next →</a>' in nav
        assert '<strong aria-current="page">2</strong>' in nav
    assert 'aria-label="Pages of photographs"' in top and 'aria-label="Pages of photographs"' not in bottom
    assert "Photographs 1-2 of 5" in navs(first)[0] and "Previous" not in navs(first)[0]
    assert "Photographs 5-5 of 5" in navs(third)[0] and "Next" not in navs(third)[0]


def test_a_sample_on_one_page_has_no_page_links(client, tech, monkeypatch):
    monkeypatch.setattr(selectors, "SAMPLE_PAGE_PHOTOGRAPHS", 100)
    sample = make_sample("H26-ONE")
    add_photograph(sample, ("NEUTROPHIL",))
    body = get(client, "lab:sample-detail", sample)
    assert len(cards(body)) == 2
    assert navs(body) == [] and "Photographs 1-2" not in body and 'data-role="page-note"' not in body
    assert f'data-results-url="{reverse("lab:sample-results", args=[sample.pk])}"' in body
    image = sample.images.order_by("pk").last()
    assert review_returns(body) >= {f"{reverse('lab:sample-detail', args=[sample.pk])}#image-{image.pk}"}


@pytest.mark.parametrize("asked, shown, note", [
    ("abc", 1, "The page asked for is not a page number: this is page 1 of 3."),
    ("2.5", 1, "The page asked for is not a page number: this is page 1 of 3."),
    ("0", 1, "There is no page 0 of this sample&#x27;s photographs: this is page 1 of 3."),
    ("-4", 1, "There is no page -4 of this sample&#x27;s photographs: this is page 1 of 3."),
    ("99", 3, "There is no page 99 of this sample&#x27;s photographs: this is page 3 of 3."),
    ("99999999999999999999999", 3, "There is no page 99999999999999999999999 of this sample&#x27;s"),
])
def test_a_page_that_is_not_one_shows_the_nearest_and_says_so(client, tech, sample, asked, shown, note):
    pages = [photograph_ids(sample)[:2], photograph_ids(sample)[2:4], photograph_ids(sample)[4:]]
    for name in ("lab:sample-detail", "lab:sample-results"):
        body = get(client, name, sample, f"?page={asked}")
        assert cards(body) == pages[shown - 1]
        assert f'<p class="note-line" data-role="page-note">{note}' in body
        assert formula(body)[1] == 8
    # The page the script then refreshes is the one shown.
    body = get(client, "lab:sample-detail", sample, f"?page={asked}")
    assert f'data-results-url="{reverse("lab:sample-results", args=[sample.pk])}?page={shown}"' in body


def test_the_results_part_the_script_fetches_is_never_kept_by_a_cache(client, tech, sample):
    for query in ("", f"?image={photograph_ids(sample)[0]}"):
        response = client.get(reverse("lab:sample-results", args=[sample.pk]) + query)
        assert response.status_code == 200 and "no-store" in response["Cache-Control"]


def test_the_page_asked_for_says_nothing_more(client, tech, sample):
    for query in ("", "?page=", "?page=1", "?page=2"):
        assert 'data-role="page-note"' not in get(client, "lab:sample-detail", sample, query)


def test_the_live_refresh_fetches_the_page_shown(client, tech, sample):
    ids = photograph_ids(sample)
    body = get(client, "lab:sample-detail", sample, "?page=2")
    results_url = re.search(r'data-results-url="([^"]*)"', body).group(1)
    assert results_url == f"{reverse('lab:sample-results', args=[sample.pk])}?page=2"
    live = client.get(results_url).content.decode()
    assert cards(live) == ids[2:4]
    assert formula(live)[1] == 8
    assert 'data-role="sign-off-fresh"' in live and "Photographs 3-4 of 5" in live
    # The script asks for one card after a review by adding ?image= to that address.
    part = client.get(f"{results_url}&image={ids[3]}").content.decode()
    assert cards(part) == [ids[3]]


def test_the_live_refresh_fetches_the_cards_that_finished_alone(client, tech, sample):
    ids = photograph_ids(sample)
    results_url = f"{reverse('lab:sample-results', args=[sample.pk])}?page=2"
    # Two photographs finished: their cards, the sidebar and the panel.
    part = client.get(f"{results_url}&image={ids[3]},{ids[2]}").content.decode()
    assert cards(part) == ids[2:4]
    assert formula(part)[1] == 8 and 'data-role="sign-off-fresh"' in part
    # One on another page finished: no card, the formula and the panel alone.
    part = client.get(f"{results_url}&image=").content.decode()
    assert cards(part) == [] and formula(part)[1] == 8 and 'data-role="sign-off-fresh"' in part
    # Each must be this sample's.
    foreign = make_sample("H26-OTHER").images.get().pk
    for query in (f"{ids[2]},{foreign}", f"{ids[2]},x", "²"):
        assert client.get(f"{results_url}&image={query}").status_code == 404


def test_review_forms_return_to_the_page_of_their_photograph(client, tech, sample):
    ids = photograph_ids(sample)
    sample_page = reverse("lab:sample-detail", args=[sample.pk])
    assert review_returns(get(client, "lab:sample-detail", sample, "?page=2")) == {
        f"{sample_page}?page=2#image-{ids[2]}", f"{sample_page}?page=2#image-{ids[3]}"}
    assert review_returns(get(client, "lab:sample-detail", sample)) == {
        f"{sample_page}#image-{ids[0]}", f"{sample_page}#image-{ids[1]}"}
    # The one card swapped in after a review, whichever page's address asked for it.
    part = get(client, "lab:sample-results", sample, f"?image={ids[4]}")
    assert review_returns(part) == {f"{sample_page}?page=3#image-{ids[4]}"}

    cell = Cell.objects.filter(image_id=ids[4]).first()
    response = client.post(reverse("lab:cell-review", args=[cell.pk]),
                           {"cell_type": "LYMPHOCYTE", "next": f"{sample_page}?page=3#image-{ids[4]}"})
    assert response.status_code == 302 and response["Location"] == f"{sample_page}?page=3#image-{ids[4]}"


def test_a_review_from_the_sample_page_answers_with_what_the_page_swaps_in(client, tech, sample):
    # One request a key press: the answer carries the photograph's card, the sidebar and the panel
    # that a second request (?image=ID) fetched before.
    ids = photograph_ids(sample)
    cell = Cell.objects.filter(image_id=ids[3]).first()
    review = reverse("lab:cell-review", args=[cell.pk])
    answer = client.post(review, {"cell_type": "MONOCYTE", "answer_with": "card"},
                         HTTP_ACCEPT="application/json").json()
    assert answer["cell"] == cell.pk and answer["cell_type"] == "MONOCYTE" and "formula" not in answer
    part = answer["results_html"]
    fetched = get(client, "lab:sample-results", sample, f"?page=2&image={ids[3]}")
    assert cards(part) == [ids[3]] and formula(part) == formula(fetched)
    assert 'data-role="sign-off-fresh"' in part and formula(part)[0]["MONOCYTE"] >= 1
    assert review_returns(part) == review_returns(fetched)
    # Asked without it (another program), the answer is the formula, as before.
    plain = client.post(review, {"cell_type": "LYMPHOCYTE"}, HTTP_ACCEPT="application/json").json()
    assert "results_html" not in plain and plain["formula"]["total"] == formula(fetched)[1]


def test_the_cell_page_links_to_the_page_of_its_photograph(client, tech, sample):
    ids = photograph_ids(sample)
    sample_page = reverse("lab:sample-detail", args=[sample.pk])
    for image_id, address in [(ids[0], f"{sample_page}#image-{ids[0]}"),
                              (ids[3], f"{sample_page}?page=2#image-{ids[3]}"),
                              (ids[4], f"{sample_page}?page=3#image-{ids[4]}")]:
        cell = Cell.objects.filter(image_id=image_id).first()
        body = client.get(reverse("lab:cell-detail", args=[cell.pk])).content.decode()
        assert f'<div class="meta"><a href="{address}">Sample H26-PAGES</a>' in body
        # ... where that photograph's card is.
        page, anchor = address.removeprefix(sample_page).split("#")
        assert int(anchor.removeprefix("image-")) in cards(get(client, "lab:sample-detail", sample, page))


def test_a_photograph_s_page_number_follows_the_page_s_order(sample):
    ordered = [entry.image for entry in selectors.sample_images_with_cells(sample)]
    assert [selectors.photograph_page_number(image) for image in ordered] == [1, 1, 2, 2, 3]
    for number in (1, 2, 3):
        page = selectors.sample_photograph_page(sample, number)
        assert list(page.object_list) == [image.pk for image in ordered
                                          if selectors.photograph_page_number(image) == number]


def test_a_box_refused_and_a_photograph_tried_again_return_to_its_page(client, tech, sample):
    ids = photograph_ids(sample)
    sample_page = reverse("lab:sample-detail", args=[sample.pk])
    refused = client.post(reverse("lab:image-add-cell", args=[ids[2]]),
                          {"x0": "0", "y0": "0", "x1": "2", "y1": "2"})
    assert refused.status_code == 302 and refused["Location"] == f"{sample_page}?page=2#image-{ids[2]}"
    # Already classified: nothing is queued, and the page is the photograph's.
    again = client.post(reverse("lab:image-retry", args=[ids[4]]))
    assert again.status_code == 302 and again["Location"] == f"{sample_page}?page=3#image-{ids[4]}"


def test_deleting_a_failed_photograph_returns_to_its_page(staff_client, sample):
    ids = photograph_ids(sample)
    SmearImage.objects.filter(pk=ids[3]).update(status=SmearImage.Status.FAILED, error="unreadable")
    response = staff_client.post(reverse("lab:image-delete", args=[ids[3]]))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('lab:sample-detail', args=[sample.pk])}?page=2"
    assert cards(get(staff_client, "lab:sample-detail", sample, "?page=2")) == [ids[2], ids[4]]


@pytest.mark.parametrize("change", ["delete", "try again"])
def test_a_photograph_deleted_meanwhile_is_refused_on_the_page_it_was_on(staff_client, staff, sample,
                                                                        monkeypatch, change):
    # Two tabs on page 2: the second deletion, or "Try again", of a photograph the first tab deleted
    # was refused on page 1.
    from webapp.services.deletion import delete_image
    from webapp.views import lab

    with_role(staff, "technologist")  # who may try a photograph again
    ids = photograph_ids(sample)
    SmearImage.objects.filter(pk=ids[3]).update(status=SmearImage.Status.FAILED, error="unreadable")
    name = "delete_image" if change == "delete" else "requeue_image"
    asked = getattr(lab, name)

    def deleted_first(read, **kwargs):
        delete_image(SmearImage.objects.get(pk=read.pk))  # the other tab's, committed first
        asked(read, **kwargs)

    monkeypatch.setattr(lab, name, deleted_first)
    address = "lab:image-delete" if change == "delete" else "lab:image-retry"
    response = staff_client.post(reverse(address, args=[ids[3]]), follow=True)
    assert response.redirect_chain == [(f"{reverse('lab:sample-detail', args=[sample.pk])}?page=2", 302)]
    not_done = "there is nothing left to delete" if change == "delete" else "nothing was queued"
    assert [str(message) for message in response.context["messages"]] == [
        f"{sample.accession_number}-3.png was deleted meanwhile: {not_done}."]
    assert cards(response.content.decode()) == [ids[2], ids[4]]


def sent_page(body, action):
    """The page of the sample page the card's form posting to ``action`` names, as the browser
    sends it: none where it names none."""
    return {name: value for name, value in hidden_fields(body, action).items() if name == "page"}


@pytest.mark.parametrize("change", ["delete", "try again", "add a cell"])
def test_a_photograph_deleted_before_its_form_came_is_refused_on_the_page_it_was_on(staff_client, staff,
                                                                                    sample, change):
    # The release notes: "Try again" for a photograph another tab had deleted went back to page 1,
    # where the photograph had never been, as its gone id no longer told its page.
    from webapp.services.deletion import delete_image

    with_role(with_role(staff, "technologist"), "hematologist")  # who may try again and draw a box
    ids = photograph_ids(sample)
    if change != "add a cell":
        SmearImage.objects.filter(pk__in=[ids[0], ids[3]]).update(status=SmearImage.Status.FAILED,
                                                                 error="unreadable")
    address = {"delete": "lab:image-delete", "try again": "lab:image-retry",
               "add a cell": "lab:image-add-cell"}[change]
    action = reverse(address, args=[ids[3]])
    sent = sent_page(get(staff_client, "lab:sample-detail", sample, "?page=2"), action)
    assert sent == {"page": "2"}
    assert sent_page(get(staff_client, "lab:sample-results", sample, f"?image={ids[3]}"), action) == sent
    delete_image(SmearImage.objects.get(pk=ids[3]))  # in the other tab
    box = {"x0": "10", "y0": "10", "x1": "60", "y1": "60"} if change == "add a cell" else {}
    response = staff_client.post(action, {**box, **sent}, follow=True)
    assert response.redirect_chain == [(f"{reverse('lab:sample-detail', args=[sample.pk])}?page=2", 302)]
    assert "deleted meanwhile" in " ".join(str(message) for message in response.context["messages"])
    assert cards(response.content.decode()) == [ids[2], ids[4]]
    # Page 1 names no page; a page that is no number is read as the first.
    assert sent_page(get(staff_client, "lab:sample-detail", sample), reverse(address, args=[ids[0]])) == {}
    answer = staff_client.post(action, {**box, "page": "²"})
    assert answer["Location"] == reverse("lab:sample-detail", args=[sample.pk])


def test_the_progress_poll_lists_the_photographs_of_the_page_shown(client, tech, sample):
    ids = photograph_ids(sample)
    SmearImage.objects.filter(pk=ids[4]).update(status=SmearImage.Status.PROCESSING)
    page = get(client, "lab:sample-detail", sample, "?page=2")
    status_url = re.search(r'data-status-url="([^"]+)"', page)[1]
    assert status_url.endswith("?page=2")
    polled = client.get(status_url).json()
    assert [image["id"] for image in polled["images"]] == ids[2:4]
    # The counts are the whole sample's: the photograph in progress is on page 3.
    assert (polled["total"], polled["finished"], polled["counts"]["processing"]) == (5, 4, 1)
    everything = client.get(reverse("lab:sample-status", args=[sample.pk])).json()
    assert [image["id"] for image in everything["images"]] == ids


def test_photographs_added_are_shown_on_their_page(client, tech, sample, sent_tasks):
    rgb = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    response = client.post(reverse("lab:sample-add-images", args=[sample.pk]),
                           {"images": [SimpleUploadedFile("more.png", buffer.getvalue())]})
    added = sample.images.order_by("pk").last()
    assert added.original_filename == "more.png"
    # The sixth photograph, two a page: on page 3, where the first page would not show it.
    assert response.status_code == 302 and response["Location"].endswith(f"?page=3#image-{added.pk}")


@pytest.mark.parametrize("asked", ["0", "-3"])
def test_the_progress_poll_reads_a_page_under_one_as_the_page_does(client, tech, sample, asked):
    shown = cards(get(client, "lab:sample-detail", sample, f"?page={asked}"))
    polled = client.get(reverse("lab:sample-status", args=[sample.pk]) + f"?page={asked}").json()
    assert [image["id"] for image in polled["images"]] == shown == photograph_ids(sample)[:PER_PAGE]


def form_page(body, role):
    """The page of the sample page the sign-off panel's form ``role`` returns to."""
    form = re.search(rf'<form [^>]*data-role="{role}">(.*?)</form>', body, re.S)[1]
    page = re.search(r'<input type="hidden" name="page" value="(\d+)">', form)
    return int(page[1]) if page else 1


@pytest.fixture
def hematologist_client(client, django_user_model):
    user = django_user_model.objects.create_user("hema", password="a-long-passphrase-1")
    client.force_login(with_role(user, "hematologist"))
    return client


def test_the_sign_off_panel_returns_to_the_page_it_was_on(hematologist_client, sample):
    client, ids = hematologist_client, photograph_ids(sample)
    sample_page = reverse("lab:sample-detail", args=[sample.pk])
    for query, page in (("", 1), ("?page=2", 2), ("?page=99", 3)):
        body = get(client, "lab:sample-detail", sample, query)
        assert form_page(body, "target-form") == form_page(body, "sign-form") == page
    # The panel swapped in after a review of page 3's photograph, and the page's live refresh.
    assert form_page(get(client, "lab:sample-results", sample, f"?image={ids[4]}"), "sign-form") == 3
    assert form_page(get(client, "lab:sample-results", sample, "?page=2"), "sign-form") == 2

    target = client.post(reverse("lab:sample-target", args=[sample.pk]), {"target_count": "200", "page": "2"})
    assert target.status_code == 302 and target["Location"] == f"{sample_page}?page=2"
    # Refused (8 cells of 200, no reason given): back on its page with the refusal.
    refused = client.post(reverse("lab:sample-sign", args=[sample.pk]),
                          {"result_seen": result_stamp(sample), "page": "3"})
    assert refused["Location"] == f"{sample_page}?page=3"
    signed = client.post(reverse("lab:sample-sign", args=[sample.pk]), {
        "result_seen": result_stamp(sample), "below_target_reason": "A leukopenic sample.", "page": "3"})
    assert signed["Location"] == f"{sample_page}?page=3"
    assert Sample.objects.get(pk=sample.pk).is_signed
    body = get(client, "lab:sample-detail", sample, "?page=3")
    assert form_page(body, "reopen-form") == 3
    reopened = client.post(reverse("lab:sample-reopen", args=[sample.pk]),
                           {"reason": "A mix-up.", "page": "3"})
    assert reopened["Location"] == f"{sample_page}?page=3"
    assert not Sample.objects.get(pk=sample.pk).is_signed
    # A page that is not a number returns to the first.
    for sent in ("x", "-2", "²", "1" * 30):
        answer = client.post(reverse("lab:sample-target", args=[sample.pk]),
                             {"target_count": "100", "page": sent})
        assert answer["Location"] == sample_page
