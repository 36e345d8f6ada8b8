"""The cell gallery in a real browser: select two cells with a click and a Shift+click, press a
type's key, and see the rows and the formula follow without a reload. Leaves test-output/gallery.png.

No worker: the sample is made in the database, its crops are tiny PNGs written to MEDIA_ROOT.
"""

from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image

from tests.browser.test_lab_browser import PASSWORD, SCREENSHOTS, sign_in
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell, CellReview
from webapp.services.review import review_cell

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COLOURS = {"NEUTROPHIL": (190, 120, 200), "LYMPHOCYTE": (70, 90, 200)}


def write_crops(sample):
    for cell in Cell.objects.filter(image__sample=sample):
        name = f"cells/gallery-{cell.pk}.png"
        path = Path(settings.MEDIA_ROOT) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.new("RGB", (24, 24), (235, 215, 220))
        picture.paste(COLOURS[cell.cell_type], (6, 6, 18, 18))
        picture.save(path)
        Cell.objects.filter(pk=cell.pk).update(crop=name)


def row_count(page, cell_type):
    return int(page.locator(f'.gallery-row[data-type="{cell_type}"] [data-role=row-count]').inner_text())


def test_select_a_range_and_relabel_it_with_a_key(live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-GAL", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"), user=user)
    write_crops(sample)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "sample-formula.png"), full_page=True)
    page.click("[data-role=gallery-link]")
    page.wait_for_selector(".gtile img")
    assert (row_count(page, "NEUTROPHIL"), row_count(page, "LYMPHOCYTE")) == (3, 1)
    # The crops load (lazily) from the protected media view.
    page.wait_for_function("() => Array.from(document.querySelectorAll('.gtile img'))"
                           ".every(img => img.complete && img.naturalWidth === 24)")

    neutrophils = page.locator('.gallery-row[data-type="NEUTROPHIL"] .gtile')
    first, second = (int(neutrophils.nth(i).get_attribute("data-cell")) for i in (0, 1))
    neutrophils.nth(0).click()
    neutrophils.nth(1).click(modifiers=["Shift"])
    assert page.locator(".gtile.selected").count() == 2
    # Ctrl+click takes one out of the selection and puts it back.
    neutrophils.nth(1).click(modifiers=["Control"])
    assert page.locator(".gtile.selected").count() == 1
    neutrophils.nth(1).click(modifiers=["Control"])
    assert page.locator(".gtile.selected").count() == 2

    page.keyboard.press("l")
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"LYMPHOCYTE\"] [data-role=row-count]')"
        ".textContent === '3'")
    assert row_count(page, "NEUTROPHIL") == 1
    assert page.locator('#formula tr[data-type="LYMPHOCYTE"] [data-role=count]').inner_text() == "3"
    moved = page.locator('.gallery-row[data-type="LYMPHOCYTE"] .gtile.reviewed')
    assert {int(moved.nth(i).get_attribute("data-cell")) for i in range(moved.count())} == {first, second}
    assert set(CellReview.objects.filter(reviewed_by=user, to_type="LYMPHOCYTE")
               .values_list("cell_id", flat=True)) == {first, second}

    # A type the sample's network has no place for is not offered: its key does nothing.
    page.keyboard.press("x")
    assert page.locator("#gallery-message").is_hidden()

    # Every type's name fits inside the key legend's card, the longest ones included.
    overflowing = page.evaluate(
        "() => [...document.querySelectorAll('[data-role=keys] .keylist li')].filter(item => "
        "item.getBoundingClientRect().right > item.closest('[data-role=keys]').getBoundingClientRect().right)"
        ".map(item => item.textContent.trim())")
    assert overflowing == []
    page.screenshot(path=str(SCREENSHOTS / "gallery.png"), full_page=True)


def edge_figure(page, cell_type):
    """A row's "N at the edge, not counted", or None where the row shows no such part."""
    part = page.locator(f'.gallery-row[data-type="{cell_type}"] [data-role=row-left-out-part]')
    return int(part.locator("[data-role=row-left-out]").inner_text()) if part.is_visible() else None


def test_the_legend_buttons_relabel_and_the_edge_figures_follow(live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-EDGE", types=("NEUTROPHIL", "NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), user=user)
    write_crops(sample)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    Cell.objects.filter(pk__in=[cells[1].pk, cells[2].pk]).update(is_partial=True)  # two edge neutrophils
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")
    assert (edge_figure(page, "NEUTROPHIL"), edge_figure(page, "LYMPHOCYTE")) == (2, None)

    # A mouse alone: click an edge cell, then the legend's Lymphocyte button.
    page.locator(f'.gtile[data-cell="{cells[1].pk}"]').click()
    legend = page.locator('[data-role=keys] .keylist button[data-type="LYMPHOCYTE"]')
    assert legend.get_attribute("type") == "button"
    legend.click()
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"LYMPHOCYTE\"] [data-role=row-count]')"
        ".textContent === '2'")
    # The row that gained its first edge cell says so; the other counts one fewer.
    assert (edge_figure(page, "NEUTROPHIL"), edge_figure(page, "LYMPHOCYTE")) == (1, 1)
    assert Cell.objects.get(pk=cells[1].pk).cell_type == "LYMPHOCYTE"
    moved = page.locator(f'.gallery-row[data-type="LYMPHOCYTE"] .gtile[data-cell="{cells[1].pk}"]')
    assert moved.count() == 1

    # The keyboard still relabels, and the row that loses its last edge cell drops the phrase.
    page.locator(f'.gtile[data-cell="{cells[2].pk}"]').click()
    page.keyboard.press("m")
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"NEUTROPHIL\"] [data-role=row-count]')"
        ".textContent === '1'")
    assert (edge_figure(page, "NEUTROPHIL"), edge_figure(page, "LYMPHOCYTE"),
            edge_figure(page, "MONOCYTE")) == (None, 1, 1)
    # What the page says without a reload is what it says after one.
    shown = {name: edge_figure(page, name) for name in ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE")}
    page.reload()
    assert {name: edge_figure(page, name) for name in shown} == shown

    # With nothing selected, a legend button asks for a selection and changes nothing.
    page.keyboard.press("Escape")
    legend.click()
    assert "Select one or more cells first" in page.locator("#gallery-message").inner_text()
    assert CellReview.objects.filter(reviewed_by=user).count() == 2

    # A touch screen has no Shift or Ctrl: with "each tap adds" ticked, plain clicks choose several
    # cells, and one press of the legend relabels them all.
    page.check("#gallery-add-mode")
    page.locator(f'.gtile[data-cell="{cells[0].pk}"]').click()
    page.locator(f'.gtile[data-cell="{cells[3].pk}"]').click()
    page.locator(f'.gtile[data-cell="{cells[2].pk}"]').click()
    page.locator(f'.gtile[data-cell="{cells[2].pk}"]').click()  # a second tap takes it out again
    assert page.locator(".gtile.selected").count() == 2
    page.locator('[data-role=keys] .keylist button[data-type="EOSINOPHIL"]').click()
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"EOSINOPHIL\"] [data-role=row-count]')"
        "?.textContent === '2'")
    now = [Cell.objects.get(pk=cell.pk).cell_type for cell in cells]
    assert now == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL"]
    page.uncheck("#gallery-add-mode")

    # One tap opens a cell: select it, then "Open the selected cell".
    page.locator(f'.gtile[data-cell="{cells[3].pk}"]').click()
    page.click("[data-role=open-cell]")
    page.wait_for_url(f"**/cells/{cells[3].pk}/")


def test_a_selection_of_more_than_a_thousand_cells_is_relabelled_at_once(live_server, browser_page,
                                                                         django_user_model):
    # The page sent a form field per cell, and Django reads at most 1,000 fields from one form: a
    # selection the site takes (up to 2,000 cells) was refused as "more data than the site accepts".
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-GAL-BIG", types=("NEUTROPHIL",) * 1200 + ("LYMPHOCYTE",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")
    neutrophils = page.locator('.gallery-row[data-type="NEUTROPHIL"] .gtile')
    neutrophils.first.click()
    neutrophils.last.click(modifiers=["Shift"])
    assert page.locator(".gtile.selected").count() == 1200
    page.keyboard.press("m")
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"MONOCYTE\"] [data-role=row-count]')"
        ".textContent === '1200'")
    assert page.locator("#gallery-message").is_hidden()
    assert CellReview.objects.filter(reviewed_by=user, to_type="MONOCYTE").count() == 1200


def test_a_cell_someone_relabelled_since_the_gallery_was_loaded_is_not_overwritten(
        live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    other = with_role(django_user_model.objects.create_user("bea", password=PASSWORD), "technologist")
    sample = make_sample("BR-GAL-TWO", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), user=user)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")

    # The same cell relabelled twice without a reload: the answer gave its tile the label it now has.
    page.locator(f'.gtile[data-cell="{cells[0].pk}"]').click()
    for key, row in (("m", "MONOCYTE"), ("e", "EOSINOPHIL")):
        page.keyboard.press(key)
        page.wait_for_selector(f'.gallery-row[data-type="{row}"] .gtile[data-cell="{cells[0].pk}"]')
    assert page.locator("#gallery-message").is_hidden()
    assert Cell.objects.get(pk=cells[0].pk).cell_type == "EOSINOPHIL"

    # Another reviewer relabels the second neutrophil on their own screen meanwhile.
    review_cell(cells[1], "MONOCYTE", other)
    page.locator(f'.gtile[data-cell="{cells[1].pk}"]').click()
    page.locator(f'.gtile[data-cell="{cells[2].pk}"]').click(modifiers=["Control"])
    page.keyboard.press("e")
    message = page.locator("#gallery-message")
    message.wait_for(state="visible")
    assert message.inner_text().startswith(
        "This cell was reviewed since your page was loaded: Cell 2 on BR-GAL-TWO.png is now Monocyte "
        "(bea's review). None of the 2 selected cells was changed; the page now shows it as it is")
    now = [Cell.objects.get(pk=cell.pk).cell_type for cell in cells]
    assert now == ["EOSINOPHIL", "MONOCYTE", "LYMPHOCYTE"]
    # Beside the message, the tile is drawn as bea left it: in her type's row, reviewed, the rows'
    # counts and the formula following, the selection kept. It once stayed a neutrophil until a
    # reload, and the same key pressed again was refused again.
    page.wait_for_selector(
        f'.gallery-row[data-type="MONOCYTE"] .gtile.reviewed.selected[data-cell="{cells[1].pk}"]')
    assert (row_count(page, "NEUTROPHIL"), row_count(page, "MONOCYTE")) == (0, 1)
    assert page.locator('#formula tr[data-type="MONOCYTE"] [data-role=count]').inner_text() == "1"
    assert message.inner_text().startswith("This cell was reviewed since your page was loaded")
    assert page.locator(".gtile.selected").count() == 2
    # Still disagreeing, the technologist presses the key once more: both cells are relabelled.
    page.keyboard.press("e")
    page.wait_for_function(
        "() => document.querySelector('.gallery-row[data-type=\"EOSINOPHIL\"] [data-role=row-count]')"
        ".textContent === '3'")
    assert message.is_hidden()
    assert [Cell.objects.get(pk=cell.pk).cell_type for cell in cells] == ["EOSINOPHIL"] * 3
