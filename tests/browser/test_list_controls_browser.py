"""The lists' controls as a keyboard and a screen reader meet them, in a real browser: each field
of the sample list's search has a label on screen that names it, and the history page's view
toggle is a pair of buttons saying which is pressed.

No worker: samples are made in the database.
"""

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.webapp.lab_factories import make_sample, with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Each visible field of main that no visible <label> names, as its name attribute: an aria-label
# or a placeholder is no label on screen, and a placeholder goes once something is typed.
UNLABELLED = """() => Array.from(document.querySelectorAll(
        'main input:not([type=hidden]), main select, main textarea'))
    .filter(field => field.checkVisibility())
    .filter(field => !Array.from(field.labels || []).some(label => label.checkVisibility()
        && label.textContent.trim()))
    .map(field => field.name || field.id || field.tagName)"""


def technologist(django_user_model):
    return with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")


def test_the_sample_lists_search_fields_have_labels_on_screen(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    make_sample("BR-LIST-1", types=("NEUTROPHIL",), user=user)
    make_sample("BR-OTHER-2", types=("NEUTROPHIL",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/")
    assert page.evaluate(UNLABELLED) == []
    search = page.get_by_role("search")
    # Each field is reached by the words on screen beside it, and searches as before.
    search.get_by_label("Accession number", exact=True).fill("LIST")
    search.get_by_label("Status", exact=True).select_option("unsigned")
    expect(search.get_by_label("Order", exact=True)).to_have_value("")
    search.get_by_role("button", name="Search").click()
    expect(page.locator("table.sample-rows tbody tr")).to_have_count(1)
    expect(page.locator("table.sample-rows tbody")).to_contain_text("BR-LIST-1")
    assert page.evaluate(UNLABELLED) == []


def test_the_history_pages_view_toggle_says_which_view_is_on(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    make_sample("BR-HIST-1", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user)
    make_sample("BR-ELSE-2", types=("MONOCYTE",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/history/?accession=BR-HIST-1")
    toggle = page.get_by_role("group", name="View")
    grid = toggle.get_by_role("button", name="Grid", exact=True)
    table = toggle.get_by_role("button", name="Table", exact=True)
    expect(grid).to_have_attribute("aria-pressed", "true")
    expect(table).to_have_attribute("aria-pressed", "false")

    # By the keyboard: the table is shown, its button now the pressed one, the filter kept.
    table.focus()
    page.keyboard.press("Enter")
    expect(page.locator("table tbody tr")).to_have_count(2)
    expect(toggle.get_by_role("button", name="Table", exact=True, pressed=True)).to_have_count(1)
    expect(toggle.get_by_role("button", name="Grid", exact=True, pressed=False)).to_have_count(1)
    assert "accession=BR-HIST-1" in page.url and "view=table" in page.url
    toggle.get_by_role("button", name="Grid", exact=True).click()
    expect(page.locator(".history-grid .tile")).to_have_count(2)
    expect(toggle.get_by_role("button", name="Grid", exact=True, pressed=True)).to_have_count(1)
    expect(toggle.get_by_role("button", name="Table", exact=True, pressed=False)).to_have_count(1)
