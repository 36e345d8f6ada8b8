"""What a screen reader and a keyboard meet, in a real browser (Chromium's accessibility tree, as
Playwright's role locators read it): the sample page's type buttons named by their type and pressed
for the cell's own, a review and a flash message said in live regions, the gallery's rows reached
with Tab, selected with Space and relabelled with a key, and form fields described by help and
error texts that exist.

No worker: samples are made in the database.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_gallery_browser import write_crops
from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.browser.test_upload_page_browser import tiny_png
from tests.webapp.lab_factories import make_sample, make_version, with_role
from webapp.models import Cell

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Each id an aria-describedby names that no element of the page carries, as "element -> id".
DANGLING_DESCRIPTIONS = """() => Array.from(document.querySelectorAll('[aria-describedby]'))
    .flatMap(element => element.getAttribute('aria-describedby').split(/\\s+/)
        .filter(id => id && !document.getElementById(id))
        .map(id => (element.id || element.tagName) + ' -> ' + id))"""


DROP_ZONE_NAME = "Smear photographs Drop photographs here or click to choose files"


def technologist(django_user_model):
    return with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")


def focused_cell(page):
    return page.evaluate("() => document.activeElement.closest('.gtile')?.dataset.cell || null")


def test_type_buttons_say_their_type_and_state_and_a_review_is_announced(live_server, browser_page,
                                                                          django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-A11Y", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user)
    first, second = Cell.objects.filter(image__sample=sample).order_by("index")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")

    row = page.locator(f'tr.cellrow[data-cell="{first.pk}"]')
    # Named by the type, not the letter shown; the letter is the shortcut; the cell's type is pressed.
    neutrophil = row.get_by_role("button", name="Neutrophil", exact=True, pressed=True)
    expect(neutrophil).to_have_count(1)
    expect(neutrophil).to_have_text("N")
    expect(neutrophil).to_have_attribute("aria-keyshortcuts", "N")
    expect(row.get_by_role("button", pressed=True)).to_have_count(1)
    expect(row.get_by_role("button", name="Lymphocyte", exact=True, pressed=False)).to_have_count(1)
    expect(neutrophil).to_have_accessible_description(re.compile("the network's call, not yet confirmed"))
    # The row's link, the table's headers and the progress bar have names.
    expect(row.get_by_role("link", name="Open cell 1", exact=True)).to_have_count(1)
    table = page.locator("table.cells")
    expect(table.get_by_role("columnheader", name="Picture", exact=True)).to_have_count(1)
    expect(table.get_by_role("columnheader", name="Cell page", exact=True)).to_have_count(1)
    expect(page.get_by_role("progressbar", name="Photographs classified")).to_have_count(1)

    # The live region is there before the review and outside what the review swaps in.
    region = page.get_by_role("status").and_(page.locator("#review-status"))
    expect(region).to_have_count(1)
    page.evaluate("() => { document.getElementById('review-status').dataset.mark = 'kept'; }")
    row.get_by_role("button", name="Monocyte", exact=True).click()
    expect(region).to_have_text("Cell 1 on BR-A11Y.png relabelled monocyte")
    expect(row.get_by_role("button", name="Monocyte", exact=True, pressed=True)).to_have_count(1)
    expect(neutrophil).to_have_count(0)
    expect(row.get_by_role("button", name="Neutrophil", exact=True, pressed=False)).to_have_count(1)
    assert page.locator("#review-status").get_attribute("data-mark") == "kept"
    assert Cell.objects.get(pk=first.pk).cell_type == "MONOCYTE"

    # The keyboard's review says so too; a press of the cell's own type confirms the call.
    page.locator(f'tr.cellrow[data-cell="{second.pk}"]').click(position={"x": 8, "y": 8})
    page.keyboard.press("l")
    expect(region).to_have_text("Cell 2 on BR-A11Y.png confirmed as lymphocyte")
    assert Cell.objects.get(pk=second.pk).corrected_type == "LYMPHOCYTE"
    # A type named with its key ("Platelet (G)", its key not its initial) is announced by its name.
    page.locator(f'tr.cellrow[data-cell="{second.pk}"]').click(position={"x": 8, "y": 8})
    page.keyboard.press("g")
    expect(region).to_have_text("Cell 2 on BR-A11Y.png relabelled platelet")


def test_a_flash_message_is_read_from_a_live_region(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-A11Y-EDGE", types=("NEUTROPHIL",), user=user)
    cell = Cell.objects.get(image__sample=sample)
    Cell.objects.filter(pk=cell.pk).update(is_partial=True)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/cells/{cell.pk}/")
    page.click("[data-role=count-in]")
    region = page.get_by_role("status").filter(has=page.locator("ul.messages"))
    expect(region).to_contain_text("is now counted in the formula")
    expect(region.get_by_role("list").get_by_role("listitem")).to_have_count(1)  # still a list


# The live regions of a page's HTML, as served (before any script), that hold ``text``.
REGIONS_SERVED_WITH = """([html, text]) => Array.from(
    new DOMParser().parseFromString(html, 'text/html').querySelectorAll('[role=status], [aria-live]'))
    .filter(region => region.textContent.includes(text)).length"""


def test_a_flash_message_is_written_into_its_status_region_after_the_page_loads(
        live_server, chromium, browser_page, django_user_model):
    # The audit: what was done stood in its status region as the page arrived, and many screen
    # readers read a polite region's words only when they change, not those it loads with.
    user = technologist(django_user_model)
    sample = make_sample("BR-A11Y-NEWS", types=("NEUTROPHIL",), user=user)
    cell = Cell.objects.get(image__sample=sample)
    Cell.objects.filter(pk=cell.pk).update(is_partial=True)
    said = "is now counted in the formula"
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/cells/{cell.pk}/")
    with page.expect_response(lambda response: response.request.method == "GET"
                              and response.url.endswith(f"/cells/{cell.pk}/")) as arrival:
        page.click("[data-role=count-in]")
    assert page.evaluate(REGIONS_SERVED_WITH, [arrival.value.text(), said]) == 0
    expect(page.get_by_role("status").filter(has_text=said)).to_have_count(1)

    # Without scripts the message is on the page all the same, where it was drawn.
    Cell.objects.filter(pk=cell.pk).update(count_partial=False)
    context = chromium.new_context(java_script_enabled=False)
    try:
        plain = context.new_page()
        sign_in(plain, live_server.url, "tech")
        plain.goto(f"{live_server.url}/cells/{cell.pk}/")
        plain.click("[data-role=count-in]")
        expect(plain.locator("ul.messages").filter(has_text=said)).to_be_visible()
    finally:
        context.close()


def test_tab_reaches_the_gallery_and_a_type_key_relabels_the_cell(live_server, browser_page,
                                                                   django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-A11Y-GAL", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), user=user)
    write_crops(sample)
    # A file name as a lab's scanner may write it: the tooltip's own separator and quotes in it.
    sample.images.update(original_filename='ward 3 · "smear" 12.jpg')
    first, second, lymphocyte = Cell.objects.filter(image__sample=sample).order_by("index")
    # Named as the sample page names the cell, not by its database id.
    first_name = 'Cell 1 on ward 3 · "smear" 12.jpg'
    assert first.image.original_filename in first_name
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")

    # A listbox a row, named by its heading, which is not inside it; tiles named with their type.
    neutrophils = page.get_by_role("listbox", name="Neutrophil", exact=True)
    expect(neutrophils).to_have_count(1)
    expect(neutrophils).to_have_attribute("aria-multiselectable", "true")
    expect(neutrophils.get_by_role("option")).to_have_count(2)
    named = neutrophils.get_by_role("option", name=f"{first_name}, neutrophil", exact=True)
    expect(named).to_have_count(1)
    assert page.locator("[role=listbox] :is(h1, h2, h3, header)").count() == 0

    # Tab from the page's last control before the gallery: each row with cells is one stop.
    page.get_by_role("link", name="Photographs").focus()
    page.keyboard.press("Tab")
    assert focused_cell(page) == str(lymphocyte.pk)  # the lymphocyte row comes first
    page.keyboard.press("Tab")
    assert focused_cell(page) == str(first.pk)
    tile = page.get_by_role("option", name=f"{first_name}, neutrophil", exact=True)
    # Reached with Tab, it is only focused (WCAG 3.2.1); Space selects it.
    expect(tile).to_have_attribute("aria-selected", "false")
    page.keyboard.press("Space")
    expect(tile).to_have_attribute("aria-selected", "true")

    page.keyboard.press("e")
    eosinophils = page.get_by_role("listbox", name="Eosinophil", exact=True)
    moved = eosinophils.get_by_role("option", name=f"{first_name}, eosinophil, reviewed", exact=True)
    expect(moved).to_have_count(1)
    # Its tooltip keeps what the network called it and now says it was reviewed.
    expect(moved).to_have_attribute("title", f"{first_name} · network: Neutrophil 90% · reviewed")
    expect(page.locator("#gallery-status")).to_have_text(f"{first_name} relabelled eosinophil")
    assert Cell.objects.get(pk=first.pk).cell_type == "EOSINOPHIL"
    # The focus stays on the cell, and every row still has one Tab stop, where it had cells.
    assert focused_cell(page) == str(first.pk)
    stops = page.evaluate("""() => Array.from(document.querySelectorAll('[role=listbox]'), box =>
        [box.querySelectorAll('.gtile').length, box.querySelectorAll('.gtile[tabindex="0"]').length])""")
    assert all(tab_stops == min(tiles, 1) for tiles, tab_stops in stops), stops
    page.keyboard.press("Tab")  # from the eosinophil row to the lymphocyte row's stop
    assert focused_cell(page) == str(lymphocyte.pk)

    # The arrows still select as they move; Shift+click still extends the selection.
    page.keyboard.press("ArrowRight")
    assert focused_cell(page) == str(second.pk)
    expect(page.locator(".gtile.selected")).to_have_count(1)
    page.locator(f'.gtile[data-cell="{lymphocyte.pk}"]').click(modifiers=["Shift"])
    expect(page.get_by_role("option", selected=True)).to_have_count(2)
    # A cell given the type it has: its call confirmed, not "relabelled".
    page.locator(f'.gtile[data-cell="{lymphocyte.pk}"]').click()
    expect(page.get_by_role("option", selected=True)).to_have_count(1)
    page.keyboard.press("l")
    expect(page.locator("#gallery-status")).to_have_text(re.compile(r" confirmed as lymphocyte$"))


def test_help_and_error_texts_are_the_ones_fields_are_described_by(live_server, browser_page,
                                                                   django_user_model):
    technologist(django_user_model)
    make_sample("BR-TAKEN")
    page = browser_page
    sign_in(page, live_server.url, "tech")

    page.goto(f"{live_server.url}/samples/new/")
    assert page.evaluate(DANGLING_DESCRIPTIONS) == []
    accession = page.locator("#id_accession_number")
    expect(accession).to_have_accessible_description(re.compile("specimen number"))
    expect(page.locator("#id_note")).to_have_accessible_description(re.compile("patient-identifying"))
    # Refused by the server (a number already taken, no photograph): the errors describe the fields.
    accession.fill("BR-TAKEN")
    page.evaluate("() => { document.getElementById('upload-form').noValidate = true; }")
    page.click("#upload-button")
    expect(accession).to_have_attribute("aria-invalid", "true")
    assert page.evaluate(DANGLING_DESCRIPTIONS) == []
    expect(accession).to_have_accessible_description(re.compile("specimen number.*already", re.S))

    page.context.clear_cookies()
    make_version()
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/")
    assert page.evaluate(DANGLING_DESCRIPTIONS) == []
    for field in ("include_reviewed", "data_dir", "refit_from", "accession_number"):
        expect(page.locator(f"#id_{field}")).not_to_have_accessible_description("")
    page.fill("#id_epochs", "0")
    page.evaluate("() => { document.querySelector('form.retrain-form').noValidate = true; }")
    page.get_by_role("button", name="Start training").click()
    epochs = page.locator("#id_epochs")
    expect(epochs).to_have_attribute("aria-invalid", "true")
    assert page.evaluate(DANGLING_DESCRIPTIONS) == []
    expect(epochs).to_have_accessible_description(re.compile("greater than or equal to 1"))


def test_the_first_tab_skips_the_bar_and_the_drop_zone_is_one_named_button(live_server, browser_page,
                                                                            django_user_model):
    # The workflow audit: no skip link on the site's pages (the admin has one), and the upload's drop
    # zone a focusable box with no role or name, its hidden file input a second Tab stop.
    technologist(django_user_model)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the page's content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "content"
    page.goto(f"{live_server.url}/samples/new/")
    zone = page.get_by_role("button", name=DROP_ZONE_NAME, exact=True)
    expect(zone).to_have_count(1)
    zone.focus()
    page.keyboard.press("Tab")  # past the zone: not into its file input
    assert page.evaluate("() => document.activeElement.type") != "file"


def test_the_drop_zone_is_named_by_the_words_it_shows(live_server, browser_page, django_user_model):
    # The audit (WCAG 2.5.3, label in name): the zone showed "Drop photographs here" under the label
    # "Smear photographs" and was named "Choose photographs, or drop them here", so a speech user's
    # "click Drop photographs here" found nothing.
    technologist(django_user_model)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    zone = page.locator("#dropzone")
    expect(zone).to_have_role("button")
    label = page.locator("label[for=id_images]").inner_text().strip()
    title = zone.locator("strong").inner_text().strip()
    assert (label, title) == ("Smear photographs", "Drop photographs here")
    expect(zone).to_have_accessible_name(re.compile(f"^{re.escape(label)}\\b.*\\b{re.escape(title)}\\b"))
    expect(zone).to_have_accessible_name(DROP_ZONE_NAME)
    # What it takes is said as its description, not lost with the name it no longer has.
    expect(zone).to_have_accessible_description(
        re.compile(r"^JPEG, PNG, TIFF, BMP or WebP, up to \d+ MB each"))


def test_the_upload_s_error_describes_the_drop_zone_a_user_operates(live_server, browser_page,
                                                                    django_user_model, tmp_path):
    # The audit: the error under the drop zone ("Choose at least one ...") was tied to the file input,
    # which the script hides from assistive technology (the zone opens it): nothing read it out with
    # the control, and the zone did not say it was in error.
    technologist(django_user_model)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    zone = page.locator("#dropzone")
    expect(zone).not_to_have_attribute("aria-invalid", "true")
    page.fill("#id_accession_number", "BR-NO-FILES")
    page.evaluate("() => { document.getElementById('upload-form').noValidate = true; }")
    page.click("#upload-button")
    error = page.locator("#dropzone ~ .errorlist")
    expect(error).to_have_text("Choose at least one smear photograph.")
    zone = page.get_by_role("button", name=DROP_ZONE_NAME, exact=True)
    expect(zone).to_have_attribute("aria-invalid", "true")
    expect(zone).to_have_accessible_description(
        re.compile(r"^Choose at least one smear photograph\. JPEG, PNG, TIFF, BMP or WebP"))
    assert page.evaluate(DANGLING_DESCRIPTIONS) == []
    # A photograph chosen answers it: the zone is no longer marked as in error.
    page.set_input_files("#id_images", [tiny_png(tmp_path / "field.png")])
    expect(page.get_by_role("button", name="Remove field.png")).to_have_count(1)
    expect(zone).not_to_have_attribute("aria-invalid", "true")
