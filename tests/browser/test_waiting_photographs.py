"""The sample page's note that no worker takes its photographs: shown when the page is drawn with
none on the roll, and gone once a photograph moves on (a worker that came up just after the site
started, say), without a reload. No worker: the roll is written by hand on an embedded Redis."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.conftest import point_celery_at
from tests.webapp.lab_factories import make_sample, with_role
from webapp.broker import start_embedded_redis
from webapp.models import SmearImage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_no_classifier_note_goes_once_a_photograph_moves_on(live_server, browser_page, django_user_model,
                                                                tmp_path, broker_url):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-WAIT", types=(), user=user)
    SmearImage.objects.update(status="queued", sent_at=timezone.now(), queued_at=timezone.now())
    server = start_embedded_redis(tmp_path / "redis")
    page = browser_page
    try:
        point_celery_at(server.url)  # an empty roll: no worker at all
        sign_in(page, live_server.url, "tech")
        page.goto(f"{live_server.url}/samples/{sample.pk}/")
        note = page.locator("[data-role=no-classifier]")
        expect(note).to_contain_text("No classifier worker is running")

        SmearImage.objects.update(status="processing", heartbeat_at=timezone.now())
        expect(note).to_have_count(0, timeout=20_000)
    finally:
        server.stop()
        point_celery_at(broker_url)
