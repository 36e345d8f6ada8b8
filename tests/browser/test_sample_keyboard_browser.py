"""The sample page from the keyboard: "Add photographs" is reached with Tab and opened with Space,
the arrows scroll the page until a cell's row has the focus, and a review gives the focus back to
the reviewed row (or the button pressed in it) once the results are redrawn.

No worker: the sample is made in the database.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell, Sample, SmearImage
from webapp.services.review import review_cell

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def focused(page, selector):
    return page.evaluate("(selector) => document.activeElement.matches(selector)", selector)


def test_add_photographs_is_reached_with_tab_and_opened_with_space(live_server, browser_page,
                                                                    django_user_model, tmp_path):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-KEYS", types=("NEUTROPHIL",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    for _ in range(40):
        page.keyboard.press("Tab")
        if focused(page, "#add-images-input"):
            break
    else:
        pytest.fail("Tab never reaches the Add photographs control")
    # The focus shows on the button-like label around the input.
    assert page.evaluate("getComputedStyle(document.querySelector('#add-images-input').closest('label'))"
                         ".outlineStyle") != "none"

    # Space opens the chooser; the page's script still checks the choice before uploading.
    limit = int(page.locator("#add-images-form").get_attribute("data-max-files"))
    files = []
    for number in range(limit + 1):
        files.append(tmp_path / f"smear-{number}.jpg")
        files[-1].write_bytes(b"not read: refused before upload")
    # Space presses the input, which is what opens the chooser; waiting for the native chooser
    # itself timed out now and then on a loaded host, so the press is what is checked, and the
    # files are then given as the chooser would give them.
    page.evaluate("""() => document.getElementById('add-images-input').addEventListener('click', event => {
        window.chooserAsked = true; event.preventDefault(); })""")
    page.keyboard.press("Space")
    page.wait_for_function("() => window.chooserAsked === true")
    page.set_input_files("#add-images-input", [str(path) for path in files])
    warning = page.locator("#add-images-warning")
    warning.wait_for(state="visible")
    assert f"{limit + 1} photographs chosen: at most {limit}" in warning.inner_text()
    assert page.url.endswith(f"/samples/{sample.pk}/")
    assert SmearImage.objects.filter(sample=sample).count() == 1


def test_arrows_scroll_until_a_row_has_the_focus_and_a_review_keeps_the_place(live_server, browser_page,
                                                                                 django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-ROWS", types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"), user=user)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    page = browser_page
    page.set_viewport_size({"width": 1360, "height": 420})  # short enough for the page to scroll
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.evaluate("window.prevented = []; window.addEventListener('keydown', "
                  "event => window.prevented.push(event.defaultPrevented))")

    # Nothing selected: ArrowDown is the browser's, it scrolls and selects no cell.
    page.keyboard.press("ArrowDown")
    assert page.evaluate("window.prevented") == [False]
    assert page.locator("tr.cellrow.selected").count() == 0
    page.wait_for_function("() => window.scrollY > 0")

    # A clicked row takes the arrows: ArrowDown moves to the next one.
    page.locator(f'tr.cellrow[data-cell="{cells[0].pk}"]').click(position={"x": 8, "y": 8})
    page.keyboard.press("ArrowDown")
    assert focused(page, f'tr.cellrow.selected[data-cell="{cells[1].pk}"]')

    # Its key relabels it; once the results are redrawn the focus is back on that row.
    page.keyboard.press("m")
    page.wait_for_selector(f'tr.cellrow[data-cell="{cells[1].pk}"] .current.confirmed[value=MONOCYTE]')
    assert focused(page, f'tr.cellrow[data-cell="{cells[1].pk}"]')
    assert Cell.objects.get(pk=cells[1].pk).cell_type == "MONOCYTE"

    # Enter on a type button presses it (it does not open the cell), and the focus comes back to
    # that button, in the redrawn row.
    button = f'tr.cellrow[data-cell="{cells[2].pk}"] button[value=EOSINOPHIL]'
    page.focus(button)
    page.keyboard.press("Enter")
    page.wait_for_selector(f'tr.cellrow[data-cell="{cells[2].pk}"] .current.confirmed[value=EOSINOPHIL]')
    assert page.url.endswith(f"/samples/{sample.pk}/")
    assert focused(page, button)
    assert Cell.objects.get(pk=cells[2].pk).cell_type == "EOSINOPHIL"


def test_f_moves_to_the_next_cell_that_needs_review(live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-FLAGS", types=("NEUTROPHIL",) * 5, user=user)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    Cell.objects.filter(pk__in=[cells[1].pk, cells[3].pk]).update(needs_review=True)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")

    # From nothing selected, then from each flagged row, round to the first: unflagged ones skipped.
    for expected in (cells[1], cells[3], cells[1]):
        page.keyboard.press("f")
        assert focused(page, f'tr.cellrow.selected[data-cell="{expected.pk}"]'), expected.index
    # Reviewed, a cell is no longer flagged: F passes it by.
    page.keyboard.press("n")
    page.wait_for_selector(f'tr.cellrow[data-cell="{cells[1].pk}"] .current.confirmed[value=NEUTROPHIL]')
    page.keyboard.press("f")
    assert focused(page, f'tr.cellrow.selected[data-cell="{cells[3].pk}"]')
    page.keyboard.press("n")
    page.wait_for_selector(f'tr.cellrow[data-cell="{cells[3].pk}"] .current.confirmed[value=NEUTROPHIL]')
    page.keyboard.press("f")
    expect(page.locator("#review-status")).to_have_text("No cell on this page still needs review.")


def test_a_review_redraws_its_photograph_and_the_formula_not_the_whole_sample(live_server, browser_page,
                                                                                django_user_model):
    # A 100-photograph sample's results are some 600 KiB: a review swaps in only its photograph's
    # card, the sidebar and the sign-off panel, which the review's own answer carries.
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-PART", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user)
    first = sample.images.get()
    second = SmearImage.objects.create(
        sample=sample, image=first.image.name, original_filename="second.png", width=640, height=480,
        file_size=1000, checksum="2" * 64, status=SmearImage.Status.DONE, model_version=first.model_version)
    cell = Cell.objects.filter(image=first).order_by("index").first()
    Cell.objects.create(image=second, model_version=first.model_version, index=0, x0=10, y0=20, x1=90, y1=100,
                        predicted_type="NEUTROPHIL", probabilities={"NEUTROPHIL": 0.9}, confidence=0.9,
                        binary_call="POLYNUCLEAR", cell_type="NEUTROPHIL", ood_score=0.5)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    requests = []
    page.on("request", lambda request: requests.append(request.url) if "/results/" in request.url else None)
    # Marks on the page's own nodes: a node swapped in does not carry them.
    page.evaluate(f"""() => {{
        document.getElementById('image-{first.pk}').dataset.mark = 'old';
        document.getElementById('image-{second.pk}').dataset.mark = 'kept';
        document.querySelector('aside.sidebar').dataset.mark = 'old';
    }}""")

    page.locator(f'tr.cellrow[data-cell="{cell.pk}"] button[value=MONOCYTE]').click()
    page.wait_for_selector(f'tr.cellrow[data-cell="{cell.pk}"] .current.confirmed[value=MONOCYTE]')
    assert requests == []  # no second request for them
    marks = page.evaluate(f"""() => [document.getElementById('image-{first.pk}').dataset.mark || null,
        document.getElementById('image-{second.pk}').dataset.mark || null,
        document.querySelector('aside.sidebar').dataset.mark || null]""")
    assert marks == [None, "kept", None]
    formula = page.locator("aside.sidebar").inner_text()
    assert "Monocyte" in formula and page.locator("section.image-card").count() == 2
    assert Cell.objects.get(pk=cell.pk).cell_type == "MONOCYTE"


def test_a_review_of_a_sample_deleted_meanwhile_says_so(live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-GONE", types=("NEUTROPHIL",), user=user)
    cell = Cell.objects.get(image__sample=sample)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    sample.delete()  # by someone else, while the page is open

    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.accept()))
    page.locator(f'tr.cellrow[data-cell="{cell.pk}"] button[value="MONOCYTE"]').click()
    page.wait_for_function("() => !document.querySelector('button[value=MONOCYTE]').disabled")

    # Named from the deletion's audit row, by the sample the form carries, as the sample page's
    # other forms name it.
    assert alerts == ["Sample BR-GONE was deleted meanwhile: nothing was changed."]


def test_a_cell_someone_relabelled_since_the_page_was_loaded_is_not_overwritten(live_server, browser_page,
                                                                                 django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    other = with_role(django_user_model.objects.create_user("bea", password=PASSWORD), "technologist")
    sample = make_sample("BR-TWO", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user)
    first, second = Cell.objects.filter(image__sample=sample).order_by("index")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.accept()))

    # Twice on one cell without a reload: the redrawn card carries the label the cell now has.
    for label in ("MONOCYTE", "EOSINOPHIL"):
        page.locator(f'tr.cellrow[data-cell="{first.pk}"] button[value={label}]').click()
        page.wait_for_selector(f'tr.cellrow[data-cell="{first.pk}"] .current.confirmed[value={label}]')
    assert alerts == [] and Cell.objects.get(pk=first.pk).cell_type == "EOSINOPHIL"

    review_cell(second, "MONOCYTE", other)  # on another screen, meanwhile
    with page.expect_event("dialog"):
        page.locator(f'tr.cellrow[data-cell="{second.pk}"] button[value=NEUTROPHIL]').click()
    assert len(alerts) == 1 and alerts[0].startswith(
        "This cell was reviewed since your page was loaded: Cell 2 on BR-TWO.png is now Monocyte (bea's "
        "review). Nothing was changed; the page now shows it as it is")
    assert Cell.objects.get(pk=second.pk).cell_type == "MONOCYTE"
    # The card drawn before the message: the row shows bea's monocyte, reviewed. It once kept the
    # lymphocyte the technologist saw, and the next click was refused again.
    row = page.locator(f'tr.cellrow[data-cell="{second.pk}"]')
    expect(row.locator("button.current.confirmed")).to_have_attribute("value", "MONOCYTE")
    expect(row.locator(".badge.reviewed")).to_have_count(1)
    # Still disagreeing, one click decides.
    row.locator("button[value=NEUTROPHIL]").click()
    page.wait_for_selector(f'tr.cellrow[data-cell="{second.pk}"] .current.confirmed[value=NEUTROPHIL]')
    assert len(alerts) == 1 and Cell.objects.get(pk=second.pk).cell_type == "NEUTROPHIL"


def test_the_deletion_question_works_from_the_keyboard(live_server, browser_page, django_user_model):
    # "Keep it" was a link drawn as a button, which Space does not follow, and the page's focus
    # started at the bar's links, several Tabs before its answers.
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-KEEP", types=("NEUTROPHIL",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/delete/")
    expect(page.get_by_role("heading", level=1, name="Delete sample BR-KEEP?")).to_be_focused()
    page.keyboard.press("Tab")
    delete = page.get_by_role("button", name="Delete for good")
    expect(delete).to_be_focused()
    expect(delete).to_have_accessible_description(re.compile("^This removes the sample, its 1 photograph"))
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Keep it")).to_be_focused()
    page.keyboard.press("Space")
    page.wait_for_url(re.compile(rf".*/samples/{sample.pk}/\??$"))
    assert Sample.objects.filter(pk=sample.pk).exists()
