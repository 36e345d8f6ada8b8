"""The site on a phone (390 px wide): the top bar wraps so that every page and "Sign out" are on
screen, on the bar's purple; wide tables scroll inside their own box, so no page is wider than the
screen; the sample list's rows and the sample page's cells are cards (type buttons in rows), all on
screen. Leaves test-output/phone-sample.png.

No worker: the records are made in the database.
"""

import pytest

from tests.browser.test_lab_browser import PASSWORD, SCREENSHOTS, sign_in
from tests.webapp.lab_factories import make_sample, make_version, mark_signed, with_role
from webapp.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}

# The top bar's parts that must be on screen and on the bar: every page link and the account's.
BAR_OUTSIDE = """() => {
    const bar = document.querySelector('.topbar').getBoundingClientRect();
    return Array.from(document.querySelectorAll('.topbar a, .topbar button')).filter(item => {
        const box = item.getBoundingClientRect();
        return box.left < 0 || box.right > window.innerWidth || box.left < bar.left || box.right > bar.right
            || box.top < bar.top || box.bottom > bar.bottom;
    }).map(item => item.textContent.trim());
}"""


def test_every_page_fits_a_phone_and_the_bar_wraps(live_server, browser_page, django_user_model):
    lead = django_user_model.objects.create_user("lead-technologist", password=PASSWORD, is_staff=True)
    for role in ("admin", "technologist", "hematologist"):
        with_role(lead, role)
    make_version(status=ModelVersion.Status.READY)
    sample = make_sample("H26-PHONE-0001", types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL"),
                         user=lead, confidence=0.6)
    page = browser_page
    page.set_viewport_size(PHONE)
    sign_in(page, live_server.url, "lead-technologist")
    pages = ["/", "/samples/", f"/samples/{sample.pk}/", f"/samples/{sample.pk}/gallery/",
             "/history/?view=table", "/models/", f"/models/{sample.images.get().model_version_id}/"]
    for url in pages:
        page.goto(live_server.url + url)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{url} is {width} px wide on a {PHONE['width']} px screen"
        assert page.evaluate(BAR_OUTSIDE) == [], url
        assert page.get_by_role("button", name="Sign out").is_visible()

    # The report, signed and amended, as a hematologist reads it on the ward: a page of its own,
    # without the site's bar, that fits the screen too.
    # A long accession number and a type with a full row of crops are what ran past the screen.
    signed = mark_signed(make_sample("H26-PHONE-" + "8" * 40, types=("NEUTROPHIL",) * 5 + ("LYMPHOCYTE",),
                                     user=lead), lead, times=2)
    signed.reopened_by, signed.reopened_at = lead, signed.signed_at
    signed.reopen_reason = "Cell 2 recounted after a second look at the smear."
    signed.save()
    page.goto(f"{live_server.url}/samples/{signed.pk}/report/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the report is {width} px wide on a {PHONE['width']} px screen"

    # The sample list's rows are cards: each part of a row, a long accession number's included, is
    # on screen rather than in columns scrolled out of sight.
    make_sample("H26-" + "7" * 60, types=("NEUTROPHIL",), user=lead)
    page.goto(f"{live_server.url}/samples/")
    off_screen = page.evaluate("""() => Array.from(document.querySelectorAll('main table td'))
        .filter(cell => cell.getBoundingClientRect().right > window.innerWidth)
        .map(cell => cell.textContent.trim())""")
    assert off_screen == [], off_screen

    # The sample page's cells are cards: every type button of every cell is on screen without
    # scrolling sideways, and a cell's fifteen buttons wrap in rows of several, not one per line.
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    off_screen = page.evaluate("""() => Array.from(
        document.querySelectorAll('tr.cellrow button, tr.cellrow a')).filter(item => {
            const box = item.getBoundingClientRect();
            return box.left < 0 || box.right > window.innerWidth; })
        .map(item => item.textContent.trim())""")
    assert off_screen == [], off_screen
    lines = page.evaluate("""() => new Set(Array.from(
        document.querySelector('tr.cellrow .review-form').querySelectorAll('button'),
        button => Math.round(button.getBoundingClientRect().top))).size""")
    buttons = page.locator("tr.cellrow").first.locator(".review-form button").count()
    assert buttons >= 12 and lines <= 4, (buttons, lines)
    # A press on the phone relabels the cell as on a desktop.
    page.locator("tr.cellrow").first.locator(".review-form button[value=BASOPHIL]").click()
    page.wait_for_function("() => document.querySelector('tr.cellrow .typebtn.current.confirmed')")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "phone-sample.png"), full_page=True)
