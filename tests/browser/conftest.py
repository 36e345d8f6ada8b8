from collections import deque
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.served_model import activate_served_model


@pytest.fixture
def served_model(transactional_db):
    return activate_served_model()


CHROMIUM = Path("/usr/bin/chromium")
PAGE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for a module's tests, each of which opens a context of its own (cookies,
    storage and cache apart): starting the browser for each test cost it about a second."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an asyncio loop in this thread; the ORM calls the tests make
        # between browser steps are ordinary synchronous calls, not calls from a coroutine.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"],
            )
            yield browser
            browser.close()


@pytest.fixture
def browser_page(chromium):
    context = chromium.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    # Generous: on CI's two cores this page, its server, the worker's network and another test
    # process share the machine, and an upload's answer once came after 20 s. Nothing here
    # measures time; a test that fails says where it waited (_keep_request_journal).
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Anything the site's Content-Security-Policy blocked (settings.CONTENT_SECURITY_POLICY): a
    # script, style or picture it refused is a page that works without the policy only.
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    _keep_request_journal(page)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


REQUESTS_KEPT = 40


def _keep_request_journal(page):
    """When each of the page's last requests went and its answer came, for the report of a test
    that fails (tests/browser/conftest.pytest_runtest_makereport): a timeout alone does not say
    whether the browser, the server or the database was waiting."""
    journal = page.request_journal = deque(maxlen=REQUESTS_KEPT)

    def note(event, request, extra=""):
        # The clock's time, as the worker's log and the captured log give theirs.
        at = f"{datetime.now():%H:%M:%S.%f}"[:-3]
        journal.append(f"{at}  {event:<9} {request.method} {request.url}{extra}")

    page.on("request", lambda request: note("sent", request))
    page.on("requestfinished", lambda request: note("answered", request))
    page.on("requestfailed", lambda request: note("failed", request, f" ({request.failure})"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    page = getattr(item, "funcargs", {}).get("browser_page")
    journal = getattr(page, "request_journal", None)
    if report.failed and journal:
        report.sections.append((f"the browser's last {len(journal)} requests",
                                "\n".join(journal)))
    return report
