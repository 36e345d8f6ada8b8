"""A page left unused goes to the login page by itself, saying why, and back once signed in; key
presses on it keep it signed in (webapp/idle_sign_out.py, static/js/idle.js). The limit is set to
a few seconds here; the site's is 30 minutes."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.webapp.lab_factories import make_sample, with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IDLE_SECONDS = 4


def test_a_page_left_unused_goes_to_the_login_page_and_back_and_typing_keeps_it(
        live_server, browser_page, django_user_model, settings):
    settings.IDLE_SIGN_OUT_SECONDS = IDLE_SECONDS
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-IDLE", user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    sample_page = f"{live_server.url}/samples/{sample.pk}/"
    page.goto(sample_page)

    # Twice the limit of someone using the page, without a request of the page's own in between.
    for _ in range(4 * IDLE_SECONDS):
        page.keyboard.press("Shift")
        page.wait_for_timeout(500)
    page.reload()  # the site was told of the key presses: still signed in
    assert page.url == sample_page
    expect(page.locator("h1")).to_contain_text("BR-IDLE")

    # Then nobody: a little before the end the page says so, in view however far it is scrolled,
    # and a key press keeps it, and whatever was typed on it.
    page.mouse.wheel(0, 2000)
    warning = page.locator("[data-role=idle-warning]")
    expect(warning).to_be_visible(timeout=20_000)
    expect(warning).to_contain_text("will be signed out. Press a key or click on the page to stay signed in.")
    assert warning.evaluate("element => getComputedStyle(element).position") == "fixed"
    page.keyboard.press("Shift")
    expect(warning).to_be_hidden()
    page.wait_for_timeout(IDLE_SECONDS * 1000 / 2)
    assert page.url == sample_page

    # Then nobody at all: the page goes by itself.
    notice = page.locator("[data-role=signed-out-idle]")
    said = re.compile(r"signed out after 0\.06+7 minutes without use")
    expect(notice).to_contain_text(said, timeout=20_000)
    assert re.search(rf"/accounts/login/\?next=/samples/{sample.pk}/$", page.url)
    page.fill("#id_username", "tech")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(sample_page)
    expect(page.locator("h1")).to_contain_text("BR-IDLE")
