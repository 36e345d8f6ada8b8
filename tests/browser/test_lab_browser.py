"""A technologist's session in a real browser: sign in, upload a smear, watch it finish, relabel a cell.

Drives Debian's Chromium headless through Playwright against a live server, the real Celery worker
and the real network. Leaves a screenshot of the sample page in test-output/.
"""

import re

import pytest

from tests.conftest import REPO_ROOT, require_dataset
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell, CellReview

SCREENSHOTS = REPO_ROOT / "test-output"
PASSWORD = "a-long-passphrase-1"

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def sign_in(page, base_url, username):
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))


def contrast_on_white(css_colour):
    """WCAG contrast ratio of an rgb(...) colour against white."""
    def linear(channel):
        channel /= 255
        return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4

    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])
    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    return 1.05 / (luminance + 0.05)


def formula_count(page, cell_type):
    return int(page.locator(f'#formula tr[data-type="{cell_type}"] [data-role=count]').inner_text())


def test_upload_watch_and_relabel_in_the_browser(live_server, celery_worker, served_model, browser_page,
                                                  django_user_model):
    smears = sorted(require_dataset("bccd-smears", "JPEGImages").glob("BloodImage_*.jpg"))[2:4]
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")

    page.click("text=New sample")
    # The file list is drawn by a deferred script: files picked before it runs are posted all the
    # same but never listed, so let the page finish loading first.
    page.wait_for_url(re.compile(r".*/samples/new/$"))
    page.wait_for_load_state()
    page.fill("#id_accession_number", "BR-0001")
    page.fill("#id_note", "Wright-Giemsa, x100 oil")
    page.set_input_files("#id_images", [str(path) for path in smears])
    assert all(path.name in page.locator("#filelist").inner_text() for path in smears)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "upload-page.png"), full_page=True)
    page.click("#upload-button")
    page.wait_for_url(re.compile(r".*/samples/\d+/$"))

    # The page updates itself: no reload until every photograph is classified.
    page.wait_for_selector("text=Both photographs classified", timeout=240_000)
    page.wait_for_selector("tr.cellrow")
    # The sign-off panel follows without a reload: no photograph waits any more, and it counts the
    # leukocytes the formula counts.
    page.wait_for_function(
        "() => !document.querySelector('#sign-off').textContent.includes('being classified')")
    counted = page.locator("#sign-off [data-role=target-progress]").inner_text()
    assert counted.startswith(page.locator("#formula [data-role=total]").inner_text() + " of 100")
    assert page.locator(".smear-frame svg .cellbox").count() == page.locator("tr.cellrow").count() >= 1
    # Two photographs hold a few cells, far from a manual differential's 100: the page says so.
    low_count_note = page.locator("#formula [data-role=low-count]").inner_text()
    assert "a manual differential counts at least 100" in low_count_note

    # A whole cell: one cut by the photograph's edge is left out of the formula until counted in.
    whole = Cell.objects.filter(image__sample__accession_number="BR-0001", is_partial=False)
    assert whole.exists(), "every cell found touches the photograph's edge"
    row = page.locator(f'tr.cellrow[data-cell="{whole.order_by("image_id", "index").first().pk}"]')
    cell_id = int(row.get_attribute("data-cell"))
    before_type = Cell.objects.get(pk=cell_id).cell_type
    new_type = sorted(set(served_model.class_names) - {before_type})[0]
    before_new, before_old = formula_count(page, new_type), formula_count(page, before_type)

    # Select the cell with a click, relabel it with its keyboard shortcut.
    row.click(position={"x": 10, "y": 10})
    page.keyboard.press(new_type[0])
    page.wait_for_function(
        "([type, n]) => Number(document.querySelector(`#formula tr[data-type=\"${type}\"] "
        "[data-role=count]`).textContent) === n",
        arg=[new_type, before_new + 1],
    )
    assert formula_count(page, before_type) == before_old - 1
    assert page.locator(f'tr.cellrow[data-cell="{cell_id}"] .was').count() == 1
    review = CellReview.objects.get(cell_id=cell_id)
    assert (review.from_type, review.to_type, review.reviewed_by.username) == (before_type, new_type, "tech")

    # A detection that is no white cell: its key marks it an artefact and the formula drops it.
    total = int(page.locator("#formula [data-role=total]").inner_text())
    page.keyboard.press("A")
    if total > 1:
        page.wait_for_selector("#formula [data-role=artefacts]")
        assert int(page.locator("#formula [data-role=total]").inner_text()) == total - 1
    else:
        page.wait_for_selector("text=Every cell found was marked an artefact")
    assert Cell.objects.get(pk=cell_id).cell_type == "ARTEFACT"

    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")  # the formula panel is sticky: shoot it where it sits
    page.screenshot(path=str(SCREENSHOTS / "sample-page.png"), full_page=True)

    page.goto(f"{live_server.url}/cells/{cell_id}/")
    assert page.locator(".probs tbody tr").count() == len(served_model.class_names)
    page.screenshot(path=str(SCREENSHOTS / "cell-page.png"), full_page=True)
    page.goto(f"{live_server.url}/history/")
    page.screenshot(path=str(SCREENSHOTS / "history-page.png"), full_page=True)
    page.click("text=Samples")
    assert "BR-0001" in page.locator("table").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "sample-list.png"), full_page=True)


def test_the_artefact_button_reads_as_one_to_press(live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-ART", types=("NEUTROPHIL",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    buttons = page.evaluate("""() => Array.from(document.querySelectorAll('.typebtn')).map(b => {
        const style = getComputedStyle(b);
        return [b.value, style.color, style.backgroundColor, b.disabled, style.opacity];
    })""")
    artefact = next(button for button in buttons if button[0] == "ARTEFACT")
    assert artefact[2] == "rgb(255, 255, 255)" and artefact[3] is False and artefact[4] == "1"
    assert contrast_on_white(artefact[1]) >= 4.5, artefact  # WCAG AA for text


def test_the_browser_refuses_a_malformed_accession_number_before_sending_photographs(
        live_server, browser_page, django_user_model):
    from webapp.forms import ACCESSION_RULE

    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    field = page.locator("#id_accession_number")
    # An input whose pattern the browser cannot compile checks nothing: the two rules must agree.
    for typed in ("H26-1", "a b.c_d/e-f", "9", "-H26", "H26<1>", "H\u00e926", " H26", "H26+1"):
        field.fill(typed)
        valid = field.evaluate("input => input.checkValidity()")
        assert valid == bool(ACCESSION_RULE.regex.match(typed)), typed
    # The browser's bubble names the rule: it shows the input's title beside its own sentence.
    assert "letters A-Z (without accents), digits, spaces" in field.get_attribute("title")
    # A Japanese input method's full-width label is folded to the plain one, as the server folds it,
    # once the field is left: the pattern then takes it.
    field.fill("\uff28\uff12\uff16\uff0d\uff11")  # Ｈ２６－１
    field.blur()
    assert field.input_value() == "H26-1" and field.evaluate("input => input.checkValidity()")
    # Its full-width space before or after the label goes, as the server strips it: " H26-1" was
    # refused by the pattern's first letter although the server would take it.
    field.fill("\u3000\uff28\uff12\uff16\uff0d\uff11\u3000")
    field.blur()
    assert field.input_value() == "H26-1" and field.evaluate("input => input.checkValidity()")
