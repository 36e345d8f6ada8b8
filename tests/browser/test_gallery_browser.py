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
