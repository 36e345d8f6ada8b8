"""The Models page as a lab lead reads it, in a real browser, with the bundled versions registered as
a fresh install registers them. Leaves test-output/models-list.png and models-version.png.

No worker: the page reads the figures stored with each version and never loads a network.
"""

import contextlib
import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, SCREENSHOTS, sign_in
from tests.webapp.lab_factories import make_sample, make_version, with_role
from tests.webapp.test_model_pages import HISTORY, four_class_metrics
from webapp.models import Cell, ModelVersion
from webapp.services.review import review_cell

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lab_lead_reads_the_active_version_in_words(live_server, browser_page, django_user_model):
    from webapp.services.model_versions import ensure_default_model

    registered = ensure_default_model()
    if not registered:
        pytest.skip("classifier/default_model/ holds no bundled network")
    active = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")

    page.goto(f"{live_server.url}/models/")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "models-list.png"), full_page=True)
    assert page.get_by_role("button", name="Start training").is_visible()
    assert page.locator("text=Adapt to this lab").first.is_visible()
    page.click(f"a[href='/models/{active.pk}/']")

    page.wait_for_url(re.compile(rf".*/models/{active.pk}/$"))
    words = page.locator("[data-role=in-words]").inner_text()
    # Each training source's TEST figure as a sentence, and what the version is valid for.
    for source in active.metrics.get("sources", {}):
        assert re.search(rf"on photographs like {re.escape(source)}/TEST: \d+% of cells right", words), words
    assert "Valid for" in words
    valid_for = page.locator("[data-role=valid-for]").all_inner_texts()
    assert set(valid_for) == set(active.metrics.get("sources", {}))
    # The review flag's columns say what they mean; raw settings wait behind a disclosure.
    assert page.locator("th", has_text="errors caught").first.is_visible()
    assert page.locator("th", has_text="cells flagged").first.is_visible()
    settings_box = page.locator("[data-role=hyperparameters]")
    assert not settings_box.locator("dl").is_visible()
    settings_box.locator("summary").click()
    assert settings_box.locator("dl").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "models-version.png"), full_page=True)


def test_activating_or_deleting_a_version_asks_first(live_server, browser_page, django_user_model):
    serving = make_version()
    # Measured, as a sound version is: one measured on nothing is warned of in the question too.
    other = make_version(status=ModelVersion.Status.READY, metrics=four_class_metrics())
    failed = make_version(status=ModelVersion.Status.FAILED)
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    asked = []

    def answer(accept):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        page.once("dialog", handle)

    def active_version():
        return ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE).pk

    # Dismissed: nothing is sent, the lab keeps its network.
    page.goto(f"{live_server.url}/models/")
    activate = page.locator(f"form[action='/models/{other.pk}/activate/'] button")
    answer(accept=False)
    activate.click()
    page.wait_for_load_state()
    assert asked == [f"Activate v{other.pk}? Photographs of new samples will be classified by it; "
                     "results already made stay as they are, and photographs added to a sample later are "
                     "classified by the version that classified its others."]
    assert active_version() == serving.pk and page.url.endswith("/models/")
    # Accepted: the version is activated as before.
    answer(accept=True)
    activate.click()
    page.wait_for_selector(f"text=v{other.pk} is now the active model")
    assert active_version() == other.pk

    # The same on a version's page, for its Delete button.
    page.goto(f"{live_server.url}/models/{failed.pk}/")
    answer(accept=False)
    page.click("[data-role=delete-version] button")
    page.wait_for_load_state()
    assert asked[-1].startswith(f"Delete v{failed.pk}?")
    assert ModelVersion.objects.filter(pk=failed.pk).exists()
    answer(accept=True)
    page.click("[data-role=delete-version] button")
    page.wait_for_selector(f"text=v{failed.pk} is deleted.")
    assert not ModelVersion.objects.filter(pk=failed.pk).exists()

    # A version warned of: the dialog carries the warning, and its answer is the confirmation the
    # server asks for where no script asked (no second page).
    warned = make_version(status=ModelVersion.Status.READY, metrics={"refit": {"epochs": 1}})
    page.goto(f"{live_server.url}/models/{warned.pk}/")
    answer(accept=True)
    page.click(f"form[action='/models/{warned.pk}/activate/'] button")
    page.wait_for_selector(f"text=v{warned.pk} is now the active model")
    assert asked[-1].startswith(f"Activate v{warned.pk}? Warning: v{warned.pk} was measured on no cells")
    assert active_version() == warned.pk


@contextlib.contextmanager
def a_warned_version_without_scripts(live_server, chromium, django_user_model):
    """A lab lead signed in with scripts off, where the site's own page asks before a warned
    activation (no script asks first); the serving version and a ready one the site warns of."""
    serving = make_version()
    warned = make_version(status=ModelVersion.Status.READY, metrics={"refit": {"epochs": 1}})
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    context = chromium.new_context(java_script_enabled=False, viewport={"width": 1360, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, live_server.url, "lead")
        yield page, serving, warned
    finally:
        context.close()


def test_the_activation_question_works_from_the_keyboard(live_server, chromium, django_user_model):
    # The audit read the page a warned activation asks its question on (where no script asked it)
    # and never tried it: its focus started at the bar's links, nine Tabs before the answers; the
    # button overriding the warning was not described by it; "Leave the active version serving",
    # drawn as a button, was a link, which Space does not follow; and the page, without the models
    # stylesheet, drew both answers alike and touching.
    lead = a_warned_version_without_scripts(live_server, chromium, django_user_model)
    with lead as (page, serving, warned):
        def ask():
            page.goto(f"{live_server.url}/models/{warned.pk}/")
            page.get_by_role("button", name=f"Activate v{warned.pk}").press("Enter")
            expect(page).to_have_title(f"Activate v{warned.pk}? · Leukoscope")

        ask()
        expect(page.get_by_role("heading", level=1, name=f"Activate v{warned.pk}?")).to_be_focused()
        page.keyboard.press("Tab")
        override = page.get_by_role("button", name=f"Activate v{warned.pk} all the same")
        expect(override).to_be_focused()
        expect(override).to_have_accessible_description(re.compile(f"^v{warned.pk} was measured on no cells"))
        page.keyboard.press("Tab")
        leave = page.get_by_role("button", name="Leave the active version serving")
        expect(leave).to_be_focused()
        answers = [page.evaluate("(e) => getComputedStyle(e).backgroundColor", control.element_handle())
                   for control in (override, leave)]
        assert answers[0] != answers[1]
        override_box, leave_box = override.bounding_box(), leave.bounding_box()
        # Apart, side by side or, where the version's number makes the labels too long for one line
        # of the narrow card (on PostgreSQL the ids run on from other tests), one under the other.
        assert (leave_box["x"] >= override_box["x"] + override_box["width"] + 8
                or leave_box["y"] >= override_box["y"] + override_box["height"] + 8)
        page.keyboard.press("Space")
        page.wait_for_url(re.compile(rf".*/models/{warned.pk}/$"))
        expect(page.locator("ul.messages")).to_contain_text(f"v{warned.pk} was not activated")
        assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE).pk == serving.pk

        # Answered "all the same" with the keyboard: done, and the warning said again, as an alert.
        ask()
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(rf".*/models/{warned.pk}/$"))
        expect(page.get_by_role("alert")).to_contain_text("Activate another version to stop it.")
        done = f"v{warned.pk} is now the active model"
        expect(page.locator("ul.messages").filter(has_text=done)).to_be_visible()
        assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE).pk == warned.pk


RUNNING = {"state": "running", "epoch": 2, "epochs": 4, "elapsed_seconds": 20.0, "eta_seconds": 40.0}


def open_a_running_training(live_server, page, django_user_model):
    """A version training at epoch 2 of 4 (RUNNING), its page open to a staff admin."""
    version = make_version(status=ModelVersion.Status.TRAINING)
    ModelVersion.objects.filter(pk=version.pk).update(progress=RUNNING, hyperparameters={"epochs": 4})
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/{version.pk}/")
    return version


def test_the_progress_bar_tells_no_share_while_the_held_out_figures_are_measured(
        live_server, browser_page, django_user_model):
    # The audit: after the last epoch the bar sat full, with no time left, for the minutes the TEST
    # figures took. The page follows the run by itself, so the change reaches an open page.
    version = open_a_running_training(live_server, browser_page, django_user_model)
    page = browser_page
    bar = page.locator(".training-progress [role=progressbar]")
    assert bar.get_attribute("aria-valuenow") == "50"
    # Half of it drawn, by the page's script: the policy refuses the style attribute that once did
    # (grown from nothing, as the bar's width moves, site.css).
    page.wait_for_function("""() => {
        const [drawn, whole] = ['.training-progress .progress > span', '.training-progress .progress'].map(
            (selector) => document.querySelector(selector).getBoundingClientRect().width);
        return Math.abs(drawn - whole / 2) <= 1;
    }""", timeout=5_000)

    ModelVersion.objects.filter(pk=version.pk).update(progress={
        **RUNNING, "epoch": 4, "eta_seconds": None, "epochs_done": True,
        "stage": "calibrating, fitting the review flag and measuring each source's TEST"})

    page.wait_for_selector(".training-progress .progress.finishing", timeout=10_000)
    assert bar.get_attribute("aria-valuenow") is None
    assert bar.get_attribute("aria-valuetext") == "every epoch done; measuring the held-out figures"
    assert page.locator("[data-field=phase]").inner_text().startswith("calibrating")
    # The band sweeping the bar is a part of it, not a full bar.
    band, whole = (page.evaluate(f"document.querySelector('{selector}').getBoundingClientRect().width")
                   for selector in (".training-progress .progress > span", ".training-progress .progress"))
    assert 0 < band < whole


def test_a_running_training_is_announced_once_a_step_from_a_status_region(
        live_server, browser_page, django_user_model):
    # The audit: the epoch and stage changed on screen in silence; a screen reader heard nothing
    # of a run it was told the page follows by itself.
    version = open_a_running_training(live_server, browser_page, django_user_model)
    page = browser_page
    region = page.get_by_role("status").filter(has_text="epoch")
    expect(region).to_have_text("training: epoch 2 of 4")
    page.evaluate("""() => {
        window.regionWrites = 0;
        new MutationObserver((changes) => { window.regionWrites += changes.length; }).observe(
            document.querySelector('[data-role=progress-announcement]'),
            {childList: true, characterData: true, subtree: true});
    }""")
    # Polls that bring new times and figures but the same step write nothing there.
    ModelVersion.objects.filter(pk=version.pk).update(progress={**RUNNING, "elapsed_seconds": 24.0,
                                                                "eta_seconds": 36.0, "loss": 0.5})
    expect(page.locator("[data-field=loss]")).to_have_text("0.5000", timeout=10_000)
    page.wait_for_timeout(2_500)
    assert page.evaluate("window.regionWrites") == 0
    ModelVersion.objects.filter(pk=version.pk).update(progress={**RUNNING, "epoch": 3})
    expect(region).to_have_text("training: epoch 3 of 4", timeout=10_000)
    page.wait_for_timeout(4_500)
    assert page.evaluate("window.regionWrites") == 1


def test_a_training_that_ends_on_an_open_page_says_how_it_ended(live_server, browser_page, django_user_model):
    # The audit: as a run ended, training.js reloaded the page at once and nothing said that it had
    # ended, or how: the status badge alone changed.
    version = open_a_running_training(live_server, browser_page, django_user_model)
    page = browser_page
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.FAILED, failure_reason="The training worker ran out of memory.")
    failed = f"Training of v{version.pk} failed: The training worker ran out of memory."
    expect(page.get_by_role("alert").filter(has_text=failed)).to_have_count(1, timeout=20_000)
    # Said once: the page's own address again, which a reload draws without the message.
    assert page.url == f"{live_server.url}/models/{version.pk}/"
    page.reload()
    expect(page.locator(".badge.failed").first).to_be_visible()
    expect(page.get_by_text(failed)).to_have_count(0)

    # On the list, a run that finished is news, said from the status region.
    running = make_version(status=ModelVersion.Status.TRAINING)
    ModelVersion.objects.filter(pk=running.pk).update(progress=RUNNING, hyperparameters={"epochs": 4})
    page.goto(f"{live_server.url}/models/")
    expect(page.locator(".training-progress")).to_have_count(1)
    ModelVersion.objects.filter(pk=running.pk).update(status=ModelVersion.Status.READY)
    finished = (f"Training of v{running.pk} finished: v{running.pk} is ready, and serves once someone "
                "activates it.")
    expect(page.get_by_role("status").filter(has_text=finished)).to_have_count(1, timeout=20_000)
    assert page.url == f"{live_server.url}/models/"

    # Stopped by someone else: a warning, said at once.
    stopped = make_version(status=ModelVersion.Status.TRAINING)
    ModelVersion.objects.filter(pk=stopped.pk).update(progress=RUNNING, hyperparameters={"epochs": 4})
    page.goto(f"{live_server.url}/models/{stopped.pk}/")
    ModelVersion.objects.filter(pk=stopped.pk).update(status=ModelVersion.Status.CANCELLED,
                                                      failure_reason="Cancelled by another.")
    stopped_words = f"Training of v{stopped.pk} stopped: Cancelled by another."
    expect(page.get_by_role("alert").filter(has_text=stopped_words)).to_have_count(1, timeout=20_000)


# The elements of the page that reach past its right edge, tables aside (they scroll in their box).
PAST_THE_EDGE = """() => Array.from(document.querySelectorAll('main *'))
    .filter(e => !e.closest('table')
        && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .map(e => e.tagName.toLowerCase() + (e.getAttribute('class') ? '.' + e.getAttribute('class') : ''))"""


def test_the_model_pages_reflow_at_320_px(live_server, browser_page, django_user_model):
    # The audit: at 320 px the list's columns (320 px at least) and the version page's curves
    # (340 px) made the whole page scroll sideways.
    make_version()
    metrics = four_class_metrics()
    # Figures whose dashes carry hidden words, which must not reach past the page either.
    metrics["TEST"]["review_flagging"] = [
        {"threshold": 0.99, "flagged_share": 1.0, "errors_caught": 1.0, "errors": 0,
         "unflagged_accuracy": 1.0}]
    version = make_version(status=ModelVersion.Status.READY, metrics=metrics)
    ModelVersion.objects.filter(pk=version.pk).update(history=HISTORY)  # its curves drawn
    running = make_version(status=ModelVersion.Status.TRAINING)
    ModelVersion.objects.filter(pk=running.pk).update(progress={"state": "running", "epoch": 1, "epochs": 3})
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    page.set_viewport_size({"width": 320, "height": 800})
    sign_in(page, live_server.url, "lead")
    for address in ("/models/", f"/models/{version.pk}/", f"/models/{running.pk}/"):
        page.goto(f"{live_server.url}{address}")
        assert page.evaluate(PAST_THE_EDGE) == [], address
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_the_confusion_matrix_names_each_class_in_full(live_server, browser_page, django_user_model):
    # The audit: its headers were the classes' first four letters, "EOSI", "LYMP", and its corner
    # an empty header; the whole name was a mouse's tooltip alone.
    version = make_version(status=ModelVersion.Status.READY, metrics=four_class_metrics())
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/{version.pk}/")
    matrix = page.get_by_role("table", name="Confusion matrix: rows true, columns predicted").first
    for name in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
        expect(matrix.get_by_role("columnheader", name=name, exact=True)).to_have_count(1)
        expect(matrix.get_by_role("rowheader", name=name, exact=True)).to_have_count(1)
    expect(matrix.get_by_role("columnheader", name="true class", exact=True)).to_have_count(1)
    # On screen the four letters stay, to keep the matrix narrow.
    shown = matrix.locator("thead th").nth(1).locator("[aria-hidden=true]")
    expect(shown).to_have_text("EOSI")
    expect(shown).to_be_visible()


def test_each_figure_of_a_versions_tables_is_named_by_its_row(live_server, browser_page, django_user_model):
    # The audit: the per-class, review-flag and calibration tables' first cells were data cells,
    # so a screen reader read "0.800" under "recall" without the class or source it was of.
    metrics = four_class_metrics()
    metrics["TEST"]["review_flagging"] = [
        {"threshold": 0.8, "flagged_share": 0.11, "errors_caught": 0.39, "unflagged_accuracy": 0.916}]
    metrics["calibration"] = {"sources": {"cells": {
        "validation_cells": 40, "ece_uncalibrated": 0.1, "ece_served_temperature": 0.05,
        "ece_own_temperature": 0.04, "temperature": 1.2}}}
    version = make_version(status=ModelVersion.Status.READY, metrics=metrics)
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/{version.pk}/")
    per_class = page.locator("table.per-class").first
    for name in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
        expect(per_class.get_by_role("rowheader", name=name, exact=True)).to_have_count(1)
    expect(per_class.get_by_role("cell")).to_have_count(16)
    flagging = page.locator("table.review-flagging")
    expect(flagging.get_by_role("rowheader", name="0.80", exact=False)).to_have_count(1)
    calibration = page.locator("table.calibration")
    expect(calibration.get_by_role("rowheader", name="cells", exact=True)).to_have_count(1)


def test_a_refused_form_puts_the_focus_on_its_error_or_says_it_as_the_page_arrives(
        live_server, browser_page, django_user_model):
    # The audit: a refused retraining or re-classification came back as a new page with the focus
    # at its top and nothing said; the error sat unannounced halfway down.
    make_version(status=ModelVersion.Status.ACTIVE)
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/")
    page.fill("#id_epochs", "0")
    page.evaluate("() => { document.querySelector('form.retrain-form').noValidate = true; }")
    page.get_by_role("button", name="Start training").click()
    epochs = page.locator("#id_epochs")
    expect(epochs).to_have_attribute("aria-invalid", "true")
    expect(epochs).to_be_focused()
    expect(epochs).to_have_accessible_description(re.compile("greater than or equal to 1"))

    # Neither a number nor "All samples": the form's own refusal, said from an alert region.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Re-classify with the active version").click()
    expect(page.get_by_role("alert").filter(has_text="Give an accession number")).to_have_count(1)


def test_the_reviewers_table_names_its_axes_in_words_and_marks_kept_calls_beyond_colour(
        live_server, browser_page, django_user_model):
    # The audit: its corner read its arrows aloud ("network said down arrow, reviewer said right
    # arrow"), and a kept call stood apart by bold green alone (and its place on the diagonal).
    version = make_version()
    lead = with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    sample = make_sample("BR-KEPT", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), version=version)
    cells = list(Cell.objects.filter(image__sample=sample).order_by("index"))
    for cell, label in zip(cells, ("NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE"), strict=True):
        review_cell(cell, label, lead)
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/{version.pk}/")
    table = page.locator("table.review-confusion")
    heard = table.aria_snapshot()
    assert "↓" not in heard and "→" not in heard, heard
    expect(table.get_by_role("columnheader", name="network said", exact=True)).to_have_count(1)
    expect(table.get_by_role("columnheader", name="reviewer said Eosinophil", exact=True)).to_have_count(1)
    neutrophils = table.get_by_role("row", name=re.compile("^network said Neutrophil"))
    expect(neutrophils.get_by_role("rowheader")).to_have_text("network said Neutrophil")
    # The neutrophil kept once, the lymphocyte once: each said "kept", and marked on screen by a sign.
    kept = table.locator("td.kept")
    expect(kept).to_have_count(2)
    for index in range(2):
        expect(kept.nth(index).locator("[aria-hidden=true]")).to_have_text(" ✓")
        expect(kept.nth(index).locator("[aria-hidden=true]")).to_be_visible()
    assert heard.count('cell "1 kept"') == 2, heard
    expect(table.locator("td:not(.kept) [aria-hidden=true]")).to_have_count(0)
    expect(table.locator("caption")).to_contain_text("A call the reviewer kept is marked ✓")


def test_the_curves_legend_tells_its_lines_apart_by_more_than_colour(live_server, browser_page,
                                                                     django_user_model):
    # The audit: the validation line is dashed, yet both legend keys were solid bars, in two
    # colours equally light: in grey the key named neither line.
    version = make_version(status=ModelVersion.Status.READY, metrics=four_class_metrics())
    ModelVersion.objects.filter(pk=version.pk).update(history=HISTORY)
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/{version.pk}/")
    assert page.locator("svg.curve-svg .series.val").first.evaluate(
        "line => getComputedStyle(line).strokeDasharray") not in ("", "none")
    # The key is drawn as its line is: dashed for validation, solid for training.
    pattern = "key => getComputedStyle(key).backgroundImage"
    assert "repeating-linear-gradient" in page.locator(".legend .key.val").first.evaluate(pattern)
    assert page.locator(".legend .key.train").first.evaluate(pattern) == "none"


def test_every_column_of_the_versions_table_has_a_header(live_server, browser_page, django_user_model):
    # The audit: the column of Activate, Roll back and Cancel buttons had an empty header, so a
    # screen reader named the column of a button it reached by nothing.
    make_version()
    make_version(status=ModelVersion.Status.READY, metrics=four_class_metrics())
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/")
    headers = page.locator("table.versions > thead").get_by_role("columnheader")
    expect(headers).to_have_count(10)
    expect(headers.last).to_have_accessible_name("Activate or cancel")
    assert all(name.strip() for name in headers.all_text_contents())


def test_a_disabled_training_button_is_described_by_why(live_server, browser_page, django_user_model):
    # The audit: "Adapt" and "Start training" were unavailable with no word of why on the button;
    # the reason stood in a paragraph nothing tied to it.
    make_version()
    with_role(django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True), "admin")
    page = browser_page
    sign_in(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/models/")
    adapt = page.get_by_role("button", name=re.compile("^Adapt v"))
    expect(adapt).to_be_disabled()
    expect(adapt).to_have_accessible_description(re.compile(r"At least \d+ are needed"))
    running = make_version(status=ModelVersion.Status.TRAINING)
    page.reload()
    for name in ("Start training", re.compile("^Adapt v")):
        button = page.get_by_role("button", name=name)
        expect(button).to_be_disabled()
        expect(button).to_have_accessible_description(re.compile(f"v{running.pk} is running"))


def test_back_after_answering_the_activation_question_asks_no_resubmission(live_server, chromium,
                                                                            django_user_model):
    # The question was the answer to the activation's POST: Back after answering it came to the
    # browser's "Confirm Form Resubmission" instead of a page.
    with a_warned_version_without_scripts(live_server, chromium, django_user_model) as (page, _, warned):
        page.goto(f"{live_server.url}/models/{warned.pk}/")
        page.get_by_role("button", name=f"Activate v{warned.pk}").press("Enter")
        expect(page).to_have_title(f"Activate v{warned.pk}? · Leukoscope")
        assert page.url.endswith(f"/models/{warned.pk}/activate/?next=detail")
        page.get_by_role("button", name=f"Activate v{warned.pk} all the same").press("Enter")
        page.wait_for_url(re.compile(rf".*/models/{warned.pk}/$"))
        assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE).pk == warned.pk

        # Back comes to the question's address, which asks nothing of the version now serving.
        answer = page.go_back()
        assert answer is not None and answer.ok
        expect(page).to_have_title(f"v{warned.pk} · Model versions · Leukoscope")
        expect(page.get_by_text(f"v{warned.pk} is the active model already")).to_be_visible()
        page.go_back()
        expect(page).to_have_title(re.compile(f"v{warned.pk}"))
