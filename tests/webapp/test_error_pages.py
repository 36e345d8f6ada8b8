"""Error answers: the site's own pages for people, JSON for programs under /api/, quiet logs for 403."""

import logging

import pytest
from django.core.exceptions import PermissionDenied, TooManyFilesSent
from django.template import loader
from django.urls import reverse

from tests.webapp.lab_factories import make_sample
from webapp.views import errors

pytestmark = pytest.mark.django_db


def a_cell_whose_review_fails_with(error, monkeypatch, client, django_user_model):
    """A cell of a new sample, a superuser signed in, and relabelling it failing with ``error`` after
    the review's row is written: a transaction cut part-way."""
    from webapp.models import Cell
    from webapp.services import review

    write = review.audit.create_all_as

    def written_then_failing(*args, **kwargs):
        write(*args, **kwargs)
        raise error

    monkeypatch.setattr(review.audit, "create_all_as", written_then_failing)
    client.force_login(django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1"))
    make_sample()
    return Cell.objects.get(index=0)


def test_not_found_page_has_the_site_navigation_for_a_signed_in_user(client, tech):
    response = client.get(reverse("lab:sample-detail", args=[999999]))
    assert response.status_code == 404
    assert [t.name for t in response.templates][0] == "404.html"
    body = response.content.decode()
    assert "There is nothing at <code>/samples/999999/</code>" in body
    assert 'href="/samples/new/"' in body  # the navigation
    assert "Sign out" in body and 'name="csrfmiddlewaretoken"' in body


def test_not_found_page_for_a_visitor_shows_no_navigation(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "Not found" in body and 'href="/samples/new/"' not in body


def test_forbidden_page_gives_the_reason_the_view_raised(client, tech):
    response = client.get(reverse("models:list"))
    assert response.status_code == 403
    body = response.content.decode()
    assert "Model versions and retraining are for the lab&#x27;s administrators" in body
    assert 'href="/history/"' in body


def test_a_403_is_logged_in_one_line_without_a_traceback(client, tech, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        client.get(reverse("models:list"))
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is None
    assert record.getMessage() == ("Forbidden (Permission denied): /models/ - user tech - "
                                   "Model versions and retraining are for the lab's administrators: "
                                   "the admin role, with staff status.")


def test_a_server_error_keeps_its_traceback_in_the_log(rf, caplog):
    from django.utils.log import log_response

    request = rf.get("/samples/")
    try:
        raise RuntimeError("broken")
    except RuntimeError as exc:
        with caplog.at_level(logging.ERROR, logger="django.request"):
            log_response("%s: %s", "Internal Server Error", request.path, request=request,
                         response=errors.server_error(request), exception=exc)
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is not None


def test_server_error_page_renders_without_context_or_database(rf, django_assert_num_queries):
    with django_assert_num_queries(0):
        html = loader.get_template("500.html").render()
        response = errors.server_error(rf.get("/samples/"))
    assert "Something went wrong on the server" in html
    assert response.status_code == 500 and b"Something went wrong" in response.content


def test_api_errors_answer_json(rf):
    request = rf.get("/api/cells/")
    denied = errors.permission_denied(request, PermissionDenied("Not your sample."))
    assert denied.status_code == 403 and denied["Content-Type"] == "application/json"
    assert denied.content == b'{"error": "Not your sample."}'
    failed = errors.server_error(request)
    assert failed.status_code == 500 and failed["Content-Type"] == "application/json"


def test_bad_request_page_says_what_the_user_can_do(rf, settings):
    settings.MAX_FILES_PER_UPLOAD = 50
    response = errors.bad_request(rf.post("/samples/new/"), TooManyFilesSent("too many"))
    assert response.status_code == 400
    assert "Upload at most 50 photographs at a time." in response.content.decode()
    vague = errors.bad_request(rf.get("/samples/"), ValueError("internal detail"))
    assert "internal detail" not in vague.content.decode()


def test_a_forged_host_header_is_logged_in_one_line(client, caplog):
    response = client.get("/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    records = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert records and all(record.exc_info is None for record in records)
    assert "evil.example" in records[0].getMessage()


def test_an_upload_without_its_multipart_boundary_is_logged_in_one_line(client, tech, caplog):
    # The security audit: the only traceback in a whole run of bad requests, for a client's fault.
    response = client.generic("POST", reverse("lab:upload"), b"--x\r\n", content_type="multipart/form-data")
    assert response.status_code == 400
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and all(record.exc_info is None for record in records)
    assert "boundary" in records[0].getMessage().lower()


def test_opening_an_address_only_a_button_posts_to_explains_itself(client, tech):
    sample = make_sample()
    response = client.get(reverse("lab:sample-sign", args=[sample.pk]))
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert [t.name for t in response.templates][0] == "405.html"
    body = response.content.decode()
    assert "Not a page to open" in body and "nothing was changed" in body and "Sign out" in body

    answer = client.post(reverse("lab:api-samples"))
    assert answer.status_code == 405 and answer["Allow"] == "GET, HEAD"
    assert answer.json() == {"error": "POST is not accepted here; this address takes GET, HEAD."}


def test_a_page_script_acting_on_a_deleted_cell_gets_a_sentence_in_json(client, tech):
    sample = make_sample()
    cell = sample.images.get().cells.first()
    review = reverse("lab:cell-review", args=[cell.pk])
    sample.delete()

    response = client.post(review, {"cell_type": "MONOCYTE"}, HTTP_ACCEPT="application/json")

    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"error": errors.GONE}
    # A person following a link still gets the page, with the site's navigation.
    page = client.get(reverse("lab:cell-detail", args=[cell.pk]))
    assert page.status_code == 404 and [t.name for t in page.templates][0] == "404.html"


def test_a_page_scripts_server_error_and_bad_request_answer_json(rf):
    request = rf.post("/cells/1/review/", HTTP_ACCEPT="application/json")
    failed = errors.server_error(request)
    assert failed.status_code == 500 and failed["Content-Type"] == "application/json"
    refused = errors.bad_request(request, TooManyFilesSent("too many"))
    assert refused.status_code == 400 and b"Upload at most" in refused.content


# (An empty ?image= is no card at all: the sidebar and the panel, which the live refresh asks for.)
@pytest.mark.parametrize("image", ["\u00b2", "99999999999999999999999", "-1", ",", "1,,\u00b2"])
def test_a_malformed_photograph_number_in_the_results_part_is_not_found(client, tech, image):
    sample = make_sample()
    response = client.get(reverse("lab:sample-results", args=[sample.pk]), {"image": image})
    assert response.status_code == 404


def test_a_database_too_busy_to_answer_is_a_503_that_says_to_try_again(client, django_user_model,
                                                                       monkeypatch, caplog):
    # The concurrency audit: with SQLite's write lock held past its 20 s, a relabel, an upload and a
    # sign-in answered 500.
    from django.db import OperationalError

    from webapp.models import Cell, CellReview

    # The review's row is written, then the next write waits too long.
    cell = a_cell_whose_review_fails_with(OperationalError("database is locked"), monkeypatch, client,
                                          django_user_model)
    with caplog.at_level(logging.WARNING):
        page = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"})
    assert page.status_code == 503 and page["Retry-After"] == "5"
    # Logged once, as a warning with its cause; not a second time by Django as an error.
    logged = [(record.name, record.levelname) for record in caplog.records]
    assert logged == [("webapp.middleware", "WARNING")]
    assert "database is locked" in caplog.text
    assert "The database did not answer in time" in page.content.decode()
    assert "reload the page to see, and try again in a moment if it was not." in page.content.decode()
    script = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"},
                         headers={"Accept": "application/json"})
    assert script.status_code == 503 and "try again in a moment" in script.json()["error"]
    # The review's transaction rolled back: the row written before the error is gone.
    assert not CellReview.objects.exists() and Cell.objects.get(pk=cell.pk).cell_type == cell.cell_type


def test_a_database_whose_disk_is_full_is_a_503_that_says_to_tell_the_administrator(
        client, django_user_model, monkeypatch, caplog):
    # The disk audit: with the SQLite database's disk full, every relabel, upload, sign-off and
    # sign-in answered "Something went wrong on the server" and logged a traceback each.
    from django.db import OperationalError

    from webapp.models import Cell, CellReview

    cell = a_cell_whose_review_fails_with(OperationalError("database or disk is full"), monkeypatch, client,
                                          django_user_model)
    with caplog.at_level(logging.WARNING):
        page = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"})
        script = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "LYMPHOCYTE"},
                             headers={"Accept": "application/json"})
    assert page.status_code == script.status_code == 503 and page["Retry-After"] == "60"
    body = page.content.decode()
    assert "The database's disk is full" in body and "Tell the administrator" in body
    assert "the database has no room left on its disk" in script.json()["error"]
    # One line each, no traceback: the administrator reads what to do, not the same stack twice.
    assert [(r.name, r.levelname, r.exc_info) for r in caplog.records] == [
        ("webapp.middleware", "ERROR", None)] * 2
    assert not CellReview.objects.exists() and Cell.objects.get(pk=cell.pk).cell_type == cell.cell_type


def test_a_full_database_outside_the_view_is_the_same_503_logged_in_one_line(client, tech, monkeypatch,
                                                                            caplog):
    # The session, read by middleware before any view, on a database with no byte left: every page.
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import OperationalError

    def full(self, *args, **kwargs):
        raise OperationalError("database or disk is full")

    monkeypatch.setattr(SessionStore, "load", full)
    client.raise_request_exception = False
    with caplog.at_level(logging.WARNING):
        page = client.get(reverse("lab:sample-list"))
    assert page.status_code == 503 and "no room left on its disk" in page.content.decode()
    # (Read again by the middleware the first failure passes through: a line for each, no traceback.)
    logged = {(r.name, r.levelname, r.exc_info) for r in caplog.records}
    assert logged == {("webapp.views.errors", "ERROR", None)}


@pytest.mark.parametrize("error, status", [
    ("database is locked", 503), ("no such table: webapp_cell", 500), ("too many SQL variables", 500)])
def test_only_a_busy_database_is_a_503(client, django_user_model, monkeypatch, error, status):
    # A release without its migration, or a query past SQLite's limits: trying again cannot help, and
    # the administrator needs the server error's trail.
    from django.db import OperationalError

    from webapp.models import Cell
    from webapp.views import lab

    def fails(*args, **kwargs):
        raise OperationalError(error)

    monkeypatch.setattr(lab, "review_cell", fails)
    client.raise_request_exception = False
    client.force_login(django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1"))
    make_sample()
    response = client.post(reverse("lab:cell-review", args=[Cell.objects.first().pk]),
                           {"cell_type": "LYMPHOCYTE"})
    assert response.status_code == status


def test_a_busy_database_outside_the_view_is_a_503_too(rf):
    # A session read or saved by middleware fails past the view's reach: Django's 500 handler answers.
    from django.db import OperationalError

    try:
        raise OperationalError("database is locked")
    except OperationalError:
        page = errors.server_error(rf.get("/samples/"))
        script = errors.server_error(rf.get("/api/samples/"))
    assert page.status_code == script.status_code == 503 and page["Retry-After"] == "5"
    assert b"try again in a moment" in script.content


def _raised(error, cause=None):
    """``error`` as Django raises it, from the driver's ``cause``."""
    try:
        raise error from cause
    except Exception as raised:
        return raised


def test_which_database_errors_are_worth_a_second_try():
    import psycopg
    from django.db import InterfaceError, OperationalError

    from webapp.db_errors import is_transient_database_error as transient

    assert transient(OperationalError("database is locked"))
    assert transient(InterfaceError("connection already closed"))
    unreachable = psycopg.OperationalError("connection failed")
    assert transient(_raised(OperationalError("connection failed"), unreachable))
    assert transient(_raised(OperationalError("deadlock"), psycopg.errors.DeadlockDetected("deadlock")))
    assert not transient(OperationalError("no such table: webapp_cell"))
    assert not transient(_raised(OperationalError("canceled"), psycopg.errors.QueryCanceled("timeout")))
    assert not transient(ValueError("database is locked"))


def test_which_database_errors_say_its_disk_is_full(monkeypatch):
    import psycopg
    from django.db import OperationalError

    from webapp import db_errors

    full = db_errors.is_database_full
    assert full(OperationalError("database or disk is full"))
    assert full(_raised(OperationalError("could not extend file"), psycopg.errors.DiskFull("no space")))
    assert not full(OperationalError("database is locked"))
    assert not full(ValueError("database or disk is full"))
    # SQLite with no byte left for its write-ahead log says "disk I/O error": full only where its
    # folder has no room left.
    monkeypatch.setattr(db_errors, "_sqlite_space_left", lambda: 4096)
    assert full(OperationalError("disk I/O error"))
    monkeypatch.setattr(db_errors, "_sqlite_space_left", lambda: 10 * 2**30)
    assert not full(OperationalError("disk I/O error"))
