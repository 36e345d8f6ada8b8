"""A page of a long sample's photographs in a real browser: J/K and the type keys work among the
cells of the page shown, and the live refresh, after a review or as a photograph finishes, redraws
that page, not the first.

No worker: the sample is made in the database, and a photograph "finishes" by an update.
"""

import pytest
from playwright.sync_api import expect

from classifier.labels import BINARY_GROUP
from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.conftest import wait_for
from tests.webapp.lab_factories import make_sample, with_role
from webapp import selectors
from webapp.models import Cell, SmearImage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def focused(page, selector):
    return page.evaluate("(selector) => document.activeElement.matches(selector)", selector)


def photograph(sample, name, status, types):
    first = sample.images.order_by("pk").first()
    image = SmearImage.objects.create(
        sample=sample, image=first.image.name, original_filename=name, width=640, height=480, file_size=1000,
        checksum=name.ljust(64, "0"), status=status, model_version=first.model_version)
    add_cells(image, types)
    return image


def add_cells(image, types):
    for index, name in enumerate(types):
        Cell.objects.create(
            image=image, model_version=image.model_version, index=index, x0=10 + 100 * index, y0=20,
            x1=90 + 100 * index, y1=100, predicted_type=name, probabilities={name: 0.9}, confidence=0.9,
            binary_call=BINARY_GROUP[name], cell_type=name, ood_score=0.5)


def test_keys_and_the_live_refresh_stay_on_the_page_shown(live_server, browser_page, django_user_model,
                                                          monkeypatch):
    monkeypatch.setattr(selectors, "SAMPLE_PAGE_PHOTOGRAPHS", 1)
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-PAGES", types=("NEUTROPHIL",), user=user)
    first = sample.images.get()
    second = photograph(sample, "second.png", SmearImage.Status.DONE, ("NEUTROPHIL", "LYMPHOCYTE"))
    # Still queued: the page polls, and the status it reads lists a photograph not on the page.
    third = photograph(sample, "third.png", SmearImage.Status.QUEUED, ())
    upper, lower = Cell.objects.filter(image=second).order_by("index")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    results = []
    page.on("request", lambda request: results.append(request.url) if "/results/" in request.url else None)
    page.goto(f"{live_server.url}/samples/{sample.pk}/?page=2")
    assert page.locator("section.image-card").evaluate_all("cards => cards.map(card => card.id)") == [
        f"image-{second.pk}"]
    assert "Photographs 2-2 of 3" in page.locator("nav.pagination").first.inner_text()

    # J and K walk the page's cells and stop at its ends.
    for key, cell in [("j", upper), ("j", lower), ("j", lower), ("k", upper)]:
        page.keyboard.press(key)
        assert focused(page, f'tr.cellrow.selected[data-cell="{cell.pk}"]')
    # A type key relabels; only that photograph's card is drawn again, from the review's own answer
    # (no second request), and the page stays.
    page.keyboard.press("m")
    page.wait_for_selector(f'tr.cellrow[data-cell="{upper.pk}"] .current.confirmed[value=MONOCYTE]')
    assert Cell.objects.get(pk=upper.pk).cell_type == "MONOCYTE"
    assert results == []
    assert page.locator("section.image-card").evaluate_all("cards => cards.map(card => card.id)") == [
        f"image-{second.pk}"]

    # The third photograph finishes, on another page: the poll redraws page 2's formula, which now
    # counts its cell, and leaves its card as it was (no card of page 2 changed).
    page.evaluate(f"document.getElementById('image-{second.pk}').classList.add('kept')")
    add_cells(third, ("EOSINOPHIL",))
    third.model_version = first.model_version
    third.status = SmearImage.Status.DONE
    third.save()
    total = "document.querySelector('aside.sidebar [data-role=total]').textContent"
    page.wait_for_function(f"() => {total} === '4'", timeout=15_000)
    assert results[-1] == f"{live_server.url}/samples/{sample.pk}/results/?page=2&image="
    assert page.locator(f"#image-{second.pk}.kept").count() == 1
    assert page.locator("section.image-card").evaluate_all("cards => cards.map(card => card.id)") == [
        f"image-{second.pk}"]
    assert page.get_by_role("navigation", name="Pages of photographs", exact=True).count() == 1
    assert page.url == f"{live_server.url}/samples/{sample.pk}/?page=2"
    assert page.locator(f"#image-{first.pk}").count() == 0


def test_a_photograph_finishing_redraws_its_own_card(live_server, browser_page, django_user_model):
    # The review: each photograph that finished redrew the whole results, every card of the page
    # (on a 500-cell sample some 17,000 elements, over a second's work on a slow PC).
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-ONE-CARD", types=("NEUTROPHIL",), user=user)
    first = sample.images.get()
    waiting = photograph(sample, "waiting.png", SmearImage.Status.PROCESSING, ())
    page = browser_page
    sign_in(page, live_server.url, "tech")
    results = []
    page.on("request", lambda request: results.append(request.url) if "/results/" in request.url else None)
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    # The first card's row selected: the keys still act on it after the other card is redrawn.
    page.keyboard.press("j")
    page.evaluate(f"document.getElementById('image-{first.pk}').classList.add('kept')")

    add_cells(waiting, ("LYMPHOCYTE", "MONOCYTE"))
    SmearImage.objects.filter(pk=waiting.pk).update(status=SmearImage.Status.DONE)
    page.wait_for_selector(f"#image-{waiting.pk}[data-status=done] tr.cellrow", timeout=15_000)
    assert results == [f"{live_server.url}/samples/{sample.pk}/results/?image={waiting.pk}"]
    assert page.locator(f"#image-{first.pk}.kept").count() == 1
    assert page.locator("aside.sidebar [data-role=total]").text_content() == "3"
    assert page.locator(f"#image-{waiting.pk} tr.cellrow").count() == 2
    page.keyboard.press("j")
    assert focused(page, f"#image-{waiting.pk} tr.cellrow.selected")


def drag(page, frame, start, end, touch=False):
    """A drag over ``frame`` between two points given in shares of it, by mouse or by finger."""
    bounds = frame.bounding_box()
    (x0, y0), (x1, y1) = ((bounds["x"] + fx * bounds["width"], bounds["y"] + fy * bounds["height"])
                          for fx, fy in (start, end))
    if not touch:
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x1, y1, steps=4)
        page.mouse.up()
        return
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    steps = [(x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4) for k in range(5)]
    for kind, (x, y) in [("touchStart", steps[0]), *(("touchMove", step) for step in steps[1:])]:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def start_drawing(page, live_server, django_user_model, accession, before_page=None):
    """A technologist's one-photograph sample, its page open in drawing mode: (sample, frame, form).
    ``before_page`` is called with the sample before the page is opened."""
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample(accession, types=("NEUTROPHIL",), user=user)
    if before_page:
        before_page(sample)
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.locator("[data-role=add-cell-toggle]").first.click()
    frame = page.locator(".smear-frame").first
    frame.evaluate("frame => frame.scrollIntoView()")
    return sample, frame, page.locator("[data-role=add-cell-form]").first


def test_a_drawn_box_waits_for_add_and_a_finger_draws_one(live_server, browser_page, django_user_model):
    # The notes: a box was sent the moment the drag ended, so a drag that missed its cell added a
    # wrong one, and a finger drew nothing (mouse events only) on a lab's tablet.
    from webapp.models import AddedCellRequest

    page = browser_page
    sample, frame, form = start_drawing(page, live_server, django_user_model, "BR-DRAW")
    image = sample.images.get()

    drag(page, frame, (0.5, 0.5), (0.75, 0.9))
    assert page.locator(".add-cell-rubber").is_visible()
    assert [form.locator(f"[name={name}]").input_value() for name in ("x0", "y0", "x1", "y1")] == [
        "320", "240", "480", "432"]
    assert not AddedCellRequest.objects.exists()  # not sent by the drag alone
    assert focused(page, "[data-role=add-cell-form] button[type=submit]")

    # Drawn again, by a finger: the box and the form follow; the page did not scroll instead.
    scrolled = page.evaluate("window.scrollY")
    drag(page, frame, (0.25, 0.25), (0.5, 0.5), touch=True)
    assert [form.locator(f"[name={name}]").input_value() for name in ("x0", "y0", "x1", "y1")] == [
        "160", "120", "320", "240"]
    assert page.evaluate("window.scrollY") == scrolled
    box, whole = page.locator(".add-cell-rubber").bounding_box(), frame.bounding_box()
    assert abs(box["width"] - whole["width"] / 4) <= 2 and abs(box["height"] - whole["height"] / 4) <= 2
    assert not AddedCellRequest.objects.exists()

    form.get_by_role("button", name="Add this box").click()
    # Sent: a worker of this test process, where one runs, may classify it at once, so the page's
    # "waiting for the classifier" line is not waited for.
    added = wait_for(AddedCellRequest.objects.first, "the box sent", 60)
    assert (added.image_id, added.x0, added.y0, added.x1, added.y1) == (image.pk, 160, 120, 320, 240)


def test_a_tap_after_a_drawn_box_leaves_the_box_that_add_would_send(live_server, browser_page,
                                                                    django_user_model):
    # A tap (or a drag the browser took back) removed the drawn box from the photograph while the
    # form kept its numbers: "Add this box" then sent a box no longer shown. Escape then reopening
    # showed no box either, over a form still holding the cancelled one.
    page = browser_page
    _, frame, form = start_drawing(page, live_server, django_user_model, "BR-TAP")
    drag(page, frame, (0.5, 0.5), (0.75, 0.9))
    bounds = frame.bounding_box()
    page.mouse.click(bounds["x"] + bounds["width"] / 10, bounds["y"] + bounds["height"] / 10)
    assert page.locator(".add-cell-rubber").is_visible()
    assert form.locator("[name=x0]").input_value() == "320"
    page.keyboard.press("Escape")
    page.locator("[data-role=add-cell-toggle]").click()
    assert [form.locator(f"[name={name}]").input_value() for name in ("x0", "y0", "x1", "y1")] == [""] * 4


def test_a_photograph_finishing_waits_for_a_box_being_drawn(live_server, browser_page, django_user_model):
    # The review: now that a drawn box waits for "Add this box", the live refresh as another
    # photograph finished replaced the results, and the box with them.
    queued = []
    page = browser_page
    _, frame, _ = start_drawing(page, live_server, django_user_model, "BR-WAIT", lambda sample: queued.append(
        photograph(sample, "later.png", SmearImage.Status.QUEUED, ())))
    queued = queued[0]
    drag(page, frame, (0.2, 0.2), (0.4, 0.5))
    requests = []
    page.on("request", lambda request: requests.append(request.url))

    add_cells(queued, ("LYMPHOCYTE",))
    SmearImage.objects.filter(pk=queued.pk).update(status=SmearImage.Status.DONE)
    page.wait_for_function("() => document.getElementById('progress-text').textContent"
                           ".includes('Both photographs classified')", timeout=15_000)
    page.wait_for_timeout(2_000)  # the next poll, which would refresh the results
    assert page.locator(".add-cell-rubber").count() == 1
    assert page.locator("[data-role=add-cell-form] [name=x0]").first.input_value() != ""
    assert not any("/results/" in url for url in requests)
    # Cancelled, the results catch up at the next poll.
    page.keyboard.press("Escape")
    page.wait_for_selector(f"#image-{queued.pk} tr.cellrow", timeout=15_000)


def test_a_photograph_deleted_while_boxes_wait_leaves_the_other_cards_live(live_server, browser_page,
                                                                           django_user_model):
    # The review: add_cell.js asks for the cards of every photograph whose drawn box waits, in one
    # request. One of them deleted (in another tab, by its sample's creator), that request was a
    # 404 every two seconds for good: the other photograph's box, classified, stayed dashed and
    # uncounted, and the deleted card stayed on the page.
    from webapp.models import AddedCellRequest

    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-BOX-GONE", types=("NEUTROPHIL",), user=user)
    kept = sample.images.get()
    gone = photograph(sample, "gone.png", SmearImage.Status.DONE, ("LYMPHOCYTE",))
    for image in (kept, gone):
        AddedCellRequest.objects.create(image=image, x0=400, y0=300, x1=460, y1=360, requested_by=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    assert page.locator("[data-role=pending-cell]").count() == 2

    SmearImage.objects.filter(pk=gone.pk).delete()
    request = AddedCellRequest.objects.get(image=kept)
    Cell.objects.create(  # the box, classified
        image=kept, model_version=kept.model_version, index=1, x0=400, y0=300, x1=460, y1=360,
        predicted_type="MONOCYTE", probabilities={"MONOCYTE": 0.9}, confidence=0.9,
        binary_call=BINARY_GROUP["MONOCYTE"], cell_type="MONOCYTE", ood_score=0.5, added_by_hand=True)
    AddedCellRequest.objects.filter(pk=request.pk).update(status=AddedCellRequest.Status.DONE)
    page.wait_for_selector(f"#image-{gone.pk}", state="detached", timeout=15_000)
    page.wait_for_function("() => !document.querySelector('[data-role=pending-cell]')", timeout=15_000)
    assert page.locator(f"#image-{kept.pk} tr.cellrow").count() == 2


def test_a_photograph_queued_again_shows_its_cells_as_earlier_results(live_server, browser_page,
                                                                      django_user_model):
    # The review: since only the cards whose status the poll's differs from were drawn again, and
    # the poll had moved a card queued again to "queued" (its badge alone), that card kept its
    # classified look: no spinner, no note that its cells are the earlier results the formula counts.
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-AGAIN", types=("NEUTROPHIL",), user=user)
    done = sample.images.get()
    photograph(sample, "waiting.png", SmearImage.Status.QUEUED, ())  # the page polls
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    SmearImage.objects.filter(pk=done.pk).update(status=SmearImage.Status.QUEUED)  # re-classified
    page.wait_for_selector(f"#image-{done.pk} [data-role=earlier-results]", timeout=15_000)
    assert page.locator(f"#image-{done.pk} .image-state .spinner").count() == 1


def test_a_note_of_one_long_word_stays_on_the_page_and_the_report(live_server, browser_page,
                                                                  django_user_model):
    """A note of one long word (a German compound, a name without spaces) ran off the sample page
    and past the report's sheet, where printing cut it off."""
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("H26-0900", types=("NEUTROPHIL",))
    sample.note = "Donaudampfschiffahrtsgesellschaftskapitänswitwe" * 4
    sample.save()
    page = browser_page
    sign_in(page, live_server.url, "tech")
    for address in (f"/samples/{sample.pk}/", f"/samples/{sample.pk}/report/"):
        page.goto(f"{live_server.url}{address}")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (address, overflow)


def test_the_formulas_figures_and_headings_are_never_broken_inside(live_server, browser_page,
                                                                   django_user_model):
    """The sidebar's narrow Count column broke "Count" and the total "100.0" over two lines ("100 /
    .0"), a clinical figure easy to misread."""
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("H26-0901", types=("NEUTROPHIL",) * 55 + ("LYMPHOCYTE",) * 30 + ("MONOCYTE",) * 15)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    for width in (1024, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/samples/{sample.pk}/")
        broken = page.evaluate("""() => [...document.querySelectorAll(
            '.formula th.num, .formula td.num, .formula .total th')].filter(cell => {
                const line = parseFloat(getComputedStyle(cell).lineHeight);
                const range = document.createRange();
                range.selectNodeContents(cell);
                return range.getClientRects().length > 1 || cell.scrollWidth > cell.clientWidth
                    || range.getBoundingClientRect().height > 1.5 * line;
            }).map(cell => cell.textContent.trim())""")
        assert broken == [], (width, broken)


def test_a_box_is_added_from_the_keyboard_by_its_edges_and_told_what_is_wrong(live_server, browser_page,
                                                                               django_user_model):
    # The audit (WCAG 2.1.1): a box could only be drawn by a drag; its form's fields, the keyboard's
    # way, were labelled x0, y0, x1 and y1 in pixels of a size the page did not give, and the
    # browser's bubbles said only that a field was wanted or out of range, naming no edge.
    from webapp.models import AddedCellRequest

    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-KEY-BOX", types=("NEUTROPHIL",), user=user)
    image = sample.images.get()
    assert (image.width, image.height) == (640, 480)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.get_by_role("button", name="Add a missed cell").focus()
    page.keyboard.press("Enter")
    box = page.get_by_role("group", name="The box, in the photograph's pixels (640 across, 480 down, "
                                          "from its top left corner)")
    expect(box).to_be_visible()
    left, top, right, bottom = (box.get_by_role("spinbutton", name=f"{edge} edge", exact=True)
                                for edge in ("Left", "Top", "Right", "Bottom"))
    message = page.get_by_role("alert").and_(page.locator("[data-role=add-cell-error]"))
    add = page.get_by_role("button", name="Add this box")

    add.focus()
    page.keyboard.press("Enter")  # nothing typed
    expect(message).to_have_text("Give the box's left edge. Give the box's top edge. "
                                 "Give the box's right edge. Give the box's bottom edge.")
    expect(left).to_be_focused()
    expect(left).to_have_attribute("aria-invalid", "true")
    expect(left).to_have_accessible_description(message.inner_text())

    page.keyboard.type("300")
    for field, value in ((top, "200"), (right, "250"), (bottom, "900")):
        page.keyboard.press("Tab")
        expect(field).to_be_focused()
        page.keyboard.type(value)
    # In the fields' order: the first sentence is about the field that takes the focus.
    expect(message).to_have_text("The right edge (250) must be right of the left edge (300). "
                                 "Bottom edge must be 0 to 480: the photograph is 640 by 480 pixels.")
    for field, wrong in ((left, False), (top, False), (right, True), (bottom, True)):
        assert (field.get_attribute("aria-invalid") == "true") is wrong
    add.click()
    expect(right).to_be_focused()  # the first field at fault
    assert not AddedCellRequest.objects.exists()

    right.fill("380")
    bottom.fill("280")
    expect(page.locator("[data-role=add-cell-error]")).to_be_empty()
    expect(right).not_to_have_attribute("aria-invalid", "true")
    # What is typed is drawn where a drag would have drawn it.
    frame, drawn = page.locator(".smear-frame").first.bounding_box(), page.locator(".add-cell-rubber")
    expect(drawn).to_be_visible()
    shown = drawn.bounding_box()
    scale = frame["width"] / 640
    assert abs(shown["x"] - frame["x"] - 300 * scale) <= 2 and abs(shown["width"] - 80 * scale) <= 2
    bottom.press("Enter")
    added = wait_for(AddedCellRequest.objects.first, "the box sent", 60)
    assert (added.image_id, added.x0, added.y0, added.x1, added.y1) == (image.pk, 300, 200, 380, 280)
