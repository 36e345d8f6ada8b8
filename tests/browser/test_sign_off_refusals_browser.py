"""A refused signature as a screen reader meets it, in a real browser: the refusal is an alert,
read out as the page comes back, while what was done is a polite status; the field a refusal is
about (the reason for signing below the target count, keeping unidentified cells) is marked invalid
and described by the words that say why.

No worker: samples are made in the database.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_accessibility import DANGLING_DESCRIPTIONS
from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.browser.test_sample_focus_browser import finish
from tests.browser.test_sample_pages_browser import add_cells, photograph
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell, Sample, SmearImage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REASON = re.compile("Reason for signing with fewer than 100")


def hematologist(django_user_model):
    return with_role(django_user_model.objects.create_user("hema", password=PASSWORD), "hematologist")


def below_target_sample(user, accession):
    """Three leukocytes, none flagged, of a target of 100: signing asks for a reason."""
    sample = make_sample(accession, types=("NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL"), user=user)
    Sample.objects.filter(pk=sample.pk).update(target_count=100)
    return sample


def test_a_refusal_to_sign_is_an_alert_and_a_signature_a_status(live_server, browser_page, django_user_model):
    sample = below_target_sample(hematologist(django_user_model), "BR-REFUSED")
    page = browser_page
    sign_in(page, live_server.url, "hema")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    panel = page.locator("#sign-off")
    expect(page.get_by_role("alert")).to_have_count(0)

    # Signed without a reason: refused, and said at once as the page comes back.
    panel.get_by_role("button", name="Sign").click()
    alert = page.get_by_role("alert").filter(has=page.locator("ul.messages"))
    expect(alert).to_contain_text("cannot be signed yet: 3 of 100 leukocytes counted")
    expect(alert.get_by_role("listitem")).to_have_count(1)  # still a list
    expect(page.get_by_role("status").filter(has=page.locator("ul.messages"))).to_have_count(0)

    # With a reason, refused for a cell still awaiting review: an alert again.
    Cell.objects.filter(image__sample=sample, index=0).update(needs_review=True)
    page.reload()
    panel.get_by_role("textbox", name=REASON).fill("Leukopenic sample: all fields scanned")
    panel.get_by_role("button", name="Sign").click()
    expect(alert).to_contain_text("1 cell flagged for review was not reviewed yet")

    # Signed: what was done is polite news, not an alert.
    Cell.objects.filter(image__sample=sample).update(needs_review=False)
    page.reload()
    panel.get_by_role("textbox", name=REASON).fill("Leukopenic sample: all fields scanned")
    panel.get_by_role("button", name="Sign").click()
    status = page.get_by_role("status").filter(has=page.locator("ul.messages"))
    expect(status).to_contain_text("Sample BR-REFUSED signed.")
    expect(page.get_by_role("alert")).to_have_count(0)
    assert Sample.objects.get(pk=sample.pk).is_signed


def test_the_field_a_refusal_is_about_is_marked_invalid_and_described(live_server, browser_page,
                                                                       django_user_model):
    sample = below_target_sample(hematologist(django_user_model), "BR-INVALID")
    Cell.objects.filter(image__sample=sample, index=1).update(cell_type="UNIDENTIFIED",
                                                              corrected_type="UNIDENTIFIED")
    page = browser_page
    sign_in(page, live_server.url, "hema")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    panel = page.locator("#sign-off")
    reason = panel.get_by_role("textbox", name=REASON)
    keep = panel.get_by_role("checkbox", name=re.compile("unidentified cell as unidentified"))
    # Before any try: each described by the line that says why it is asked, neither invalid.
    expect(reason).to_have_accessible_description(re.compile("2 of 100 leukocytes counted"))
    expect(keep).to_have_accessible_description(re.compile("1 cell was marked unidentified"))
    for field in (reason, keep):
        expect(field).not_to_have_attribute("aria-invalid", "true")

    # Refused for both: both marked, each still described by its own refusal.
    panel.get_by_role("button", name="Sign").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot be signed yet")
    for field in (reason, keep):
        expect(field).to_have_attribute("aria-invalid", "true")
    expect(reason).to_have_accessible_description(re.compile("2 of 100 leukocytes counted"))
    assert page.evaluate(DANGLING_DESCRIPTIONS) == []

    # A reason given, the cell not kept: the reason is valid now, the box still not.
    reason.fill("Leukopenic sample: all fields scanned")
    panel.get_by_role("button", name="Sign").click()
    expect(page.get_by_role("alert")).to_contain_text("marked unidentified")
    expect(reason).to_have_value("Leukopenic sample: all fields scanned")
    expect(reason).not_to_have_attribute("aria-invalid", "true")
    expect(keep).to_have_attribute("aria-invalid", "true")

    # Written in again, the page is as fresh: nothing is invalid before the next try.
    page.reload()
    for field in (reason, keep):
        expect(field).not_to_have_attribute("aria-invalid", "true")


def test_a_refused_fields_mark_outlasts_a_redraw_while_the_refusal_stands(live_server, browser_page,
                                                                           django_user_model):
    # The audit: a photograph finishing redraws the panel from fresh HTML, and the refused field's
    # aria-invalid, drawn only on the page the refusal returned to, was gone with the old panel.
    sample = below_target_sample(hematologist(django_user_model), "BR-REDRAWN")
    waiting = photograph(sample, "waiting.png", SmearImage.Status.PROCESSING, ())  # the page polls
    page = browser_page
    sign_in(page, live_server.url, "hema")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    panel = page.locator("#sign-off")
    panel.get_by_role("button", name="Sign").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot be signed yet")
    reason = panel.get_by_role("textbox", name=REASON)
    expect(reason).to_have_attribute("aria-invalid", "true")
    page.evaluate("document.getElementById('sign-off').classList.add('old')")

    # Still below the target with the photograph's cell: the refusal stands, and so does the mark.
    finish(waiting, ("LYMPHOCYTE",))
    expect(page.locator("#sign-off:not(.old) [data-role=target-progress]")).to_contain_text("4 of 100")
    expect(reason).to_have_attribute("aria-invalid", "true")
    expect(reason).to_have_accessible_description(re.compile("4 of 100 leukocytes counted"))


def open_a_panel_with_one_unidentified_cell(live_server, page, django_user_model, accession):
    """A hematologist on a below-target sample's page, one of its cells unidentified and one
    photograph still being classified (so the page polls and redraws the panel); (sample, that
    photograph, the sign-off panel)."""
    sample = below_target_sample(hematologist(django_user_model), accession)
    Cell.objects.filter(image__sample=sample, index=1).update(cell_type="UNIDENTIFIED",
                                                              corrected_type="UNIDENTIFIED")
    waiting = photograph(sample, "waiting.png", SmearImage.Status.PROCESSING, ())
    sign_in(page, live_server.url, "hema")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    return sample, waiting, page.locator("#sign-off")


def test_a_ticked_box_and_a_chosen_target_outlast_a_redraw(live_server, browser_page, django_user_model):
    # The audit: a photograph finishing while the focus was elsewhere redrew the panel from fresh
    # HTML, and a ticked "keep unidentified" box (no text typed, the focus gone on) came back unticked.
    page = browser_page
    sample, waiting, panel = open_a_panel_with_one_unidentified_cell(live_server, page, django_user_model,
                                                                     "BR-TICKED")
    keep = panel.get_by_role("checkbox", name=re.compile("unidentified cell as unidentified"))
    keep.check()
    target = panel.get_by_role("combobox", name="Target count")
    target.select_option("200")
    page.locator("main h1").first.click()  # the focus leaves the panel
    page.evaluate("document.getElementById('sign-off').classList.add('old')")

    finish(waiting, ("LYMPHOCYTE",))
    expect(page.locator("#sign-off:not(.old) [data-role=target-progress]")).to_contain_text("3 of 100")
    expect(keep).to_be_checked()
    expect(target).to_have_value("200")
    assert Sample.objects.get(pk=sample.pk).target_count == 100  # chosen, not sent


def test_a_tick_is_not_carried_to_a_box_whose_count_changed(live_server, browser_page, django_user_model):
    # The review: the tick given to "Keep the 1 unidentified cell" was carried into the fresh
    # panel's "Keep the 2 unidentified cells", whose signature then kept a cell nobody agreed to.
    page = browser_page
    _, waiting, panel = open_a_panel_with_one_unidentified_cell(live_server, page, django_user_model,
                                                                "BR-RECOUNTED")
    panel.get_by_role("checkbox", name=re.compile("Keep the 1 unidentified cell as unidentified")).check()
    page.locator("main h1").first.click()  # the focus leaves the panel
    page.evaluate("document.getElementById('sign-off').classList.add('old')")

    add_cells(waiting, ("LYMPHOCYTE",))
    Cell.objects.filter(image=waiting).update(cell_type="UNIDENTIFIED", corrected_type="UNIDENTIFIED")
    SmearImage.objects.filter(pk=waiting.pk).update(status=SmearImage.Status.DONE)
    keep = page.locator("#sign-off:not(.old)").get_by_role(
        "checkbox", name=re.compile("Keep the 2 unidentified cells as unidentified"))
    expect(keep).to_have_count(1)
    expect(keep).not_to_be_checked()
