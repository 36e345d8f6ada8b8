"""Where the keyboard's focus goes when the sample page draws part of itself again, in a real
browser: a photograph finishing redraws the sidebar, or every card, from fresh HTML, and the focus,
on a control there, stays on that control in the new drawing rather than falling to <body> (a
screen reader would start again at the top of the page).

No worker: the sample is made in the database, and a photograph "finishes" by an update.
"""

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.browser.test_sample_pages_browser import add_cells, photograph
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import SmearImage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The focused element is one the redraw wrote (the old ones were marked "old") and matches selector.
FOCUS_ON_NEW = """(selector) => document.activeElement !== document.body
    && !document.activeElement.closest('.old') && document.activeElement.matches(selector)"""


def technologist(django_user_model):
    return with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")


def finish(image, types):
    add_cells(image, types)
    SmearImage.objects.filter(pk=image.pk).update(status=SmearImage.Status.DONE)


def test_the_focus_stays_in_the_sidebar_it_redraws(live_server, browser_page, django_user_model):
    sample = make_sample("BR-FOCUS-SIDE", types=("NEUTROPHIL",), user=technologist(django_user_model))
    waiting = photograph(sample, "waiting.png", SmearImage.Status.PROCESSING, ())
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    how = page.locator("#formula summary", has_text="How cells are counted")
    how.focus()
    page.keyboard.press("Enter")  # opened, as a reader would to read the rules
    page.evaluate("document.querySelector('aside.sidebar').classList.add('old')")

    finish(waiting, ("LYMPHOCYTE", "MONOCYTE"))
    total = "document.querySelector('aside.sidebar [data-role=total]').textContent"
    page.wait_for_function(f"() => {total} === '3'")
    assert page.locator("aside.sidebar.old").count() == 0  # drawn again
    # The focus is put back as the new sidebar goes in, in the same task: nothing to wait for.
    assert page.evaluate(FOCUS_ON_NEW, "#formula details[open] > summary")
    assert page.evaluate("document.activeElement.textContent.trim()") == "How cells are counted"


def test_the_focus_stays_on_a_cards_control_when_every_card_is_redrawn(live_server, browser_page,
                                                                         django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-FOCUS-CARD", types=("NEUTROPHIL",), user=user)
    first = sample.images.get()
    waiting = photograph(sample, "waiting.png", SmearImage.Status.PROCESSING, ())
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    delete = page.locator(f"#image-{first.pk} [data-role=delete-photograph] button")
    delete.focus()
    page.locator("section.image-card").evaluate_all("all => all.forEach(one => one.classList.add('old'))")

    # A photograph added meanwhile (another tab) as the waiting one finishes: every card is drawn again.
    photograph(sample, "added.png", SmearImage.Status.QUEUED, ())
    finish(waiting, ("LYMPHOCYTE",))
    page.wait_for_selector(f"#image-{waiting.pk}[data-status=done] tr.cellrow")
    assert page.locator("section.image-card.old").count() == 0
    assert page.evaluate(FOCUS_ON_NEW, f"#image-{first.pk} [data-role=delete-photograph] button")
    # And the keys still act from where a reader left off: Tab goes on from that button.
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(f"document.getElementById('image-{first.pk}').contains(document.activeElement)")


def test_the_focus_goes_to_no_other_cards_control_when_its_card_is_gone(live_server, browser_page,
                                                                        django_user_model):
    # The photograph whose Delete button had the focus is deleted meanwhile (another tab): every
    # card is drawn again without it. The other cards' Delete buttons are the same control in
    # words, but of photographs the user never was on: the focus goes to no such button.
    user = technologist(django_user_model)
    sample = make_sample("BR-FOCUS-GONE", types=("NEUTROPHIL",), user=user)
    gone = photograph(sample, "gone.png", SmearImage.Status.DONE, ("LYMPHOCYTE",))
    photograph(sample, "waiting.png", SmearImage.Status.PROCESSING, ())  # keeps the page polling
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.locator(f"#image-{gone.pk} [data-role=delete-photograph] button").focus()

    SmearImage.objects.filter(pk=gone.pk).delete()
    page.wait_for_selector(f"#image-{gone.pk}", state="detached")
    assert page.evaluate("document.activeElement.closest('[data-role=delete-photograph]') === null")
    # Put where the redraw starts instead: the results' first heading, read out as the place it is.
    assert page.evaluate("document.activeElement.matches('#results h2')")


# Each review's answer held back a second, as on a busy server.
HOLD_BACK_POSTS = """() => { const send = window.fetch.bind(window);
    window.fetch = (url, options) => (options && options.method === 'POST')
        ? new Promise(done => setTimeout(() => done(send(url, options)), 1000))
        : send(url, options); }"""


def test_a_reviews_answer_leaves_the_focus_where_the_user_went_meanwhile(live_server, browser_page,
                                                                         django_user_model):
    # A relabel's answer comes a moment after the click; meanwhile the hematologist went on to write
    # the reason for signing below the target. The redrawn row takes the focus back only from <body>
    # (where the redraw drops it), never from a field being typed in: a letter typed there next
    # would have relabelled the row's cell.
    user = with_role(django_user_model.objects.create_user("hema", password=PASSWORD), "hematologist")
    sample = make_sample("BR-FOCUS-TYPING", types=("NEUTROPHIL",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "hema")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.evaluate(HOLD_BACK_POSTS)
    page.locator("tr.cellrow button[name=cell_type][value=LYMPHOCYTE]").click()
    page.locator("#below-target-reason").click()
    page.keyboard.type("one fi")
    expect(page.locator("#review-status")).to_have_text("Cell 1 on BR-FOCUS-TYPING.png relabelled lymphocyte")
    assert page.evaluate("document.activeElement.id") == "below-target-reason"
    page.keyboard.type("eld")
    assert page.locator("#below-target-reason").input_value() == "one field"
    assert sample.images.get().cells.get().cell_type == "LYMPHOCYTE"


def test_a_reviews_answer_leaves_the_focus_on_the_row_the_reviewer_went_on_to(live_server, browser_page,
                                                                              django_user_model):
    # N on a cell, then J to the next photograph's cell before the answer comes: the answer redraws
    # the first photograph's card alone, and the focus stays on the row the reviewer is on. Put back
    # on the reviewed row, the next key (N again) would relabel the cell just reviewed.
    sample = make_sample("BR-FOCUS-ON", types=("LYMPHOCYTE",), user=technologist(django_user_model))
    first = sample.images.get().cells.get()
    second = photograph(sample, "second.png", SmearImage.Status.DONE, ("LYMPHOCYTE",)).cells.get()
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.evaluate(HOLD_BACK_POSTS)
    for key in ("j", "n", "j"):
        page.keyboard.press(key)
    assert page.evaluate("document.activeElement.dataset.cell") == str(second.pk)
    page.wait_for_selector(f'tr.cellrow[data-cell="{first.pk}"] button[value=NEUTROPHIL][aria-pressed=true]')
    assert page.evaluate("document.activeElement.dataset.cell") == str(second.pk)
