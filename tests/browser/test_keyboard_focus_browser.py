"""Keys only where they belong, from the keyboard alone (an accessibility audit's findings): Tab
moves the focus through the gallery without changing the selection (WCAG 3.2.1), a single-letter
shortcut acts only inside the part of the page it belongs to (WCAG 2.1.4), and the arrows scroll
the page outside the tiles and the cell page's own controls.

No worker: samples are made in the database.
"""

import pytest

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def technologist(django_user_model):
    return with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")


def focused(page, selector):
    return page.evaluate("(selector) => document.activeElement.matches(selector)", selector)


def selected_cells(page):
    return set(page.locator(".gtile.selected").evaluate_all("tiles => tiles.map(tile => tile.dataset.cell)"))


def test_tab_through_the_gallery_keeps_the_selection_the_legend_relabels(live_server, browser_page,
                                                                           django_user_model):
    user = technologist(django_user_model)
    types = ("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE")
    sample = make_sample("BR-TAB-SEL", types=types, user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")

    page.get_by_role("link", name="Photographs").focus()
    page.keyboard.press("Tab")
    assert focused(page, ".gtile")
    page.keyboard.press("Shift+ArrowRight")
    chosen = selected_cells(page)
    assert len(chosen) == 2

    # Tab on through the later rows and into the legend: each tile it lands on is only focused.
    legend = '.keylist button[data-type="EOSINOPHIL"]'
    for _ in range(40):
        page.keyboard.press("Tab")
        assert selected_cells(page) == chosen
        if focused(page, legend):
            break
    else:
        pytest.fail("Tab never reaches the legend's Eosinophil button")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"EOSINOPHIL\"] [data-role=row-count]')"
        ".textContent === '2'")
    eosinophils = Cell.objects.filter(image__sample=sample, cell_type="EOSINOPHIL")
    assert {str(pk) for pk in eosinophils.values_list("pk", flat=True)} == chosen


# Each keydown's defaultPrevented, read once the page's own handlers had it (the window's listener
# runs after the document's): false is the browser's own use of the key, a scroll.
RECORD_PREVENTED = ("window.prevented = []; window.addEventListener('keydown', "
                    "event => window.prevented.push(event.defaultPrevented))")


def requests_to(page, part):
    sent = []
    page.on("request", lambda request: sent.append(request.url) if part in request.url else None)
    return sent


def test_gallery_keys_act_on_its_tiles_and_legend_only(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-GAL-KEYS", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), user=user)
    first = Cell.objects.filter(image__sample=sample).order_by("index").first()
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")
    page.evaluate(RECORD_PREVENTED)
    relabels = requests_to(page, "/gallery/")
    tile = page.locator(f'.gtile[data-cell="{first.pk}"]')
    tile.click()
    assert selected_cells(page) == {str(first.pk)}

    # On the "Photographs" link and a nav link: a letter relabels nothing, and the arrows neither
    # select nor take the focus, they are left to scroll the page.
    for link in (page.get_by_role("link", name="Photographs"), page.get_by_role("link", name="Samples")):
        link.focus()
        for key in ("e", "ArrowDown", "ArrowRight", "Space"):
            page.keyboard.press(key)
        assert page.evaluate("() => document.activeElement.tagName") == "A"
    assert page.evaluate("window.prevented") == [False] * 8
    page.wait_for_timeout(300)
    assert relabels == [] and Cell.objects.get(pk=first.pk).cell_type == "NEUTROPHIL"
    assert selected_cells(page) == {str(first.pk)}

    # On the tile, its keys still act.
    tile.focus()
    page.keyboard.press("e")
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"EOSINOPHIL\"] [data-role=row-count]')"
        ".textContent === '1'")
    assert Cell.objects.get(pk=first.pk).cell_type == "EOSINOPHIL"


def test_sample_page_letters_act_from_its_cell_rows_only(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-ROW-KEYS", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user)
    first, second = Cell.objects.filter(image__sample=sample).order_by("index")
    Cell.objects.filter(pk=second.pk).update(needs_review=True)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    reviews = requests_to(page, "/review")
    page.keyboard.press("j")  # nothing focused yet: J starts on the first row
    assert focused(page, f'tr.cellrow.selected[data-cell="{first.pk}"]')

    # The focus moved to the nav: J, K, F and a type's letter neither move it back nor relabel.
    samples = page.get_by_role("link", name="Samples", exact=True)
    samples.focus()
    for key in ("j", "k", "f", "e"):
        page.keyboard.press(key)
        assert focused(page, "nav a, header a"), key
    page.wait_for_timeout(300)
    assert reviews == [] and Cell.objects.get(pk=first.pk).cell_type == "NEUTROPHIL"
    assert page.locator("tr.cellrow.selected").get_attribute("data-cell") == str(first.pk)

    # Back on the row, its letter relabels it.
    page.locator(f'tr.cellrow[data-cell="{first.pk}"]').focus()
    page.keyboard.press("e")
    page.wait_for_selector(f'tr.cellrow[data-cell="{first.pk}"] .current.confirmed[value=EOSINOPHIL]')
    assert Cell.objects.get(pk=first.pk).cell_type == "EOSINOPHIL"


def test_cell_page_keys_act_from_its_review_controls_or_nothing_focused(live_server, browser_page,
                                                                          django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-CELL-KEYS", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user)
    first, second = Cell.objects.filter(image__sample=sample).order_by("index")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/cells/{first.pk}/")
    page.evaluate(RECORD_PREVENTED)
    reviews = requests_to(page, "/review/")

    # On the "Sample ..." link and the nav: the arrows open no other cell, a letter reviews nothing.
    for link in (page.get_by_role("link", name=f"Sample {sample.accession_number}"),
                 page.get_by_role("link", name="Samples", exact=True)):
        link.focus()
        for key in ("ArrowRight", "e"):
            page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert page.evaluate("window.prevented") == [False] * 4
    assert page.url == f"{live_server.url}/cells/{first.pk}/"
    assert reviews == [] and Cell.objects.get(pk=first.pk).cell_type == "NEUTROPHIL"

    # With nothing focused, as the page opens, the arrows walk the cells and a letter reviews.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/cells/{second.pk}/")
    page.keyboard.press("e")
    page.wait_for_function("() => document.getElementById('cell-type').textContent.trim() === 'Eosinophil'")
    assert Cell.objects.get(pk=second.pk).cell_type == "EOSINOPHIL"
    # And from a review button, which is the page's own control.
    page.locator("#cell-review-form button[value=MONOCYTE]").focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/cells/{first.pk}/")
