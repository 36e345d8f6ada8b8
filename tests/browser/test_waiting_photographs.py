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


def test_the_sign_off_panel_catches_up_after_a_results_fetch_that_failed(live_server, browser_page,
                                                                         django_user_model):
    # The page remembered the last photograph as finished before its results were fetched: when
    # that fetch failed (a busy server's 503, a dropped connection), the next poll saw nothing new
    # and stopped, the line saying "Both photographs classified" and the panel "still queued".
    hema = with_role(django_user_model.objects.create_user("hema", password=PASSWORD), "hematologist")
    sample = make_sample("BR-LAG", types=("NEUTROPHIL", "LYMPHOCYTE"), user=hema)
    done = SmearImage.objects.get(sample=sample)
    waiting = SmearImage.objects.create(
        sample=sample, image="smears/BR-LAG-2.png", original_filename="BR-LAG-2.png", width=640,
        height=480, file_size=1000, checksum="1" * 64, status="queued", queued_at=timezone.now(),
        sent_at=timezone.now(), model_version=done.model_version)
    page = browser_page
    sign_in(page, live_server.url, "hema")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    panel = page.locator("#sign-off")
    expect(panel).to_contain_text("1 photograph still queued")

    failed = []

    def fail_once(route):
        if failed:
            route.continue_()
            return
        failed.append(route.request.url)
        route.fulfill(status=503, body="busy")

    page.route(lambda url: "/results/" in url, fail_once)
    SmearImage.objects.filter(pk=waiting.pk).update(status="done")
    expect(page.locator("#progress-text")).to_have_text("Both photographs classified")
    expect(panel).not_to_contain_text("still queued", timeout=15_000)
    assert len(failed) == 1


def test_the_progress_bar_drawn_before_the_script_runs_is_not_full(live_server, browser_page,
                                                                   django_user_model):
    # The policy refuses the style attribute that gave the bar its share; sample.js draws it from
    # aria-valuenow instead. Until it has (or where it never runs), the bar's span, a block of no
    # width of its own, filled the whole bar: "every photograph classified" for one still queued.
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-BAR", types=(), user=user)
    SmearImage.objects.update(status="queued", sent_at=timezone.now(), queued_at=timezone.now())
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.route("**/js/sample.js", lambda route: route.abort())
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    bar = page.locator("#progress .progress")
    assert bar.get_attribute("aria-valuenow") == "0"
    assert bar.locator("span").bounding_box()["width"] == 0
