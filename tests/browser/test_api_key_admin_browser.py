"""The Django admin's "API keys › Add" in a real browser: a double click on Save makes one key, shown
once, not two of which the program would get one and the other stay live."""

import re

import pytest

from tests.browser.test_lab_browser import PASSWORD, sign_in
from webapp.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_double_click_on_save_makes_one_key(live_server, browser_page, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    lis = django_user_model.objects.create_user("lis")
    page = browser_page
    sign_in(page, live_server.url, "root")
    page.goto(f"{live_server.url}/admin/webapp/apitoken/add/")
    page.select_option("#id_user", str(lis.pk))
    page.fill("#id_name", "LIS")
    page.dblclick("input[name=_save]")
    page.wait_for_url(re.compile(r".*/made/\?pad="))
    key = page.locator("[data-role=api-key]").inner_text()
    assert len(key) > 20
    page.wait_for_load_state("networkidle")
    assert ApiToken.objects.count() == 1
