"""Every page but the login page (and the machine-facing health check) needs a signed-in user."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

PUBLIC = {"login", "healthz"}


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def _example_path(route):
    """Turn a route like 'samples/<int:pk>/' into a concrete path; regex admin routes included."""
    import re

    path = re.sub(r"<int:[^>]+>", "1", route)
    path = re.sub(r"<path:[^>]+>", "x/y.png", path)
    path = re.sub(r"<[^>]+>", "x", path)
    path = path.lstrip("^").rstrip("$").replace("\\Z", "")
    path = re.sub(r"\(\?P<[^>]+>[^)]*\)", "1", path)
    return "/" + path


def test_every_url_pattern_sends_anonymous_visitors_to_login(client, db):
    """Pages redirect to the login page; the JSON API, read by programs, answers 401 in JSON."""
    routes = [(route, p) for route, p in _walk(get_resolver().url_patterns)]
    assert len(routes) > 5
    pages = api = 0
    for route, pattern in routes:
        if pattern.name in PUBLIC:
            continue
        path = _example_path(route)
        response = client.get(path)
        if path.startswith("/api/"):
            assert response.status_code == 401, f"{path} answered {response.status_code}"
            assert "sign in again" in response.json()["error"]
            api += 1
            continue
        assert response.status_code in (302, 301), f"{path} answered {response.status_code}"
        location = response["Location"]
        assert "/login/" in location, f"{path} redirected to {location}, not to login"
        pages += 1
    assert pages >= 5 and api >= 5


def test_login_page_is_public(client, db):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Sign in" in response.content


def test_signed_in_user_reaches_home(client, django_user_model):
    user = django_user_model.objects.create_user("tech", password="a-long-passphrase-1")
    client.force_login(user)
    assert client.get(reverse("home")).status_code == 200


@pytest.mark.parametrize("path", ["/media/../../etc/passwd", "/media/nope.png", "/media/" + "a" * 300,
                                  "/media/smears/" + "b" * 300 + ".jpg"])
def test_media_outside_root_or_missing_is_404(client, django_user_model, path):
    client.force_login(django_user_model.objects.create_user("t2", password="a-long-passphrase-1"))
    assert client.get(path).status_code == 404


# --- deleting a sample -------------------------------------------------------------------------

@pytest.fixture
def entered_sample(django_user_model):
    from tests.webapp.lab_factories import make_sample, with_role

    creator = with_role(django_user_model.objects.create_user("creator", password="a-long-passphrase-1"),
                        "technologist")
    return make_sample("H26-DEL", types=("NEUTROPHIL",), user=creator)


def test_the_creator_whose_role_was_taken_away_deletes_nothing(client, entered_sample, django_user_model):
    """The roles audit: an account whose groups were all removed got the reader's home page ("changes
    nothing"), yet its sample page still offered Delete, and deleting its photographs and its sample
    went through."""
    from webapp.models import Sample

    creator = django_user_model.objects.get(username="creator")
    creator.groups.clear()
    client.force_login(creator)
    detail = client.get(reverse("lab:sample-detail", args=[entered_sample.pk])).content.decode()
    url = reverse("lab:sample-delete", args=[entered_sample.pk])
    photograph = reverse("lab:image-delete", args=[entered_sample.images.get().pk])
    assert url not in detail and photograph not in detail
    for response in (client.post(url), client.post(photograph)):
        assert response.status_code == 403
        assert "lab work, and your account no longer holds a lab role" in response.content.decode()
    assert Sample.objects.filter(pk=entered_sample.pk, images__isnull=False).exists()


@pytest.mark.parametrize("who", ["technologist", "staff without a role"])
def test_only_the_creator_or_an_administrator_may_delete_a_sample(client, tech, entered_sample,
                                                                  django_user_model, who):
    # The security audit: staff status alone (a monitoring account that reads /healthz, say, which
    # is meant to change nothing) deleted any sample from its page.
    from webapp.models import Sample

    if who != "technologist":
        client.force_login(django_user_model.objects.create_user("monitor", password="a-long-passphrase-1",
                                                                 is_staff=True))
    detail = client.get(reverse("lab:sample-detail", args=[entered_sample.pk])).content.decode()
    url = reverse("lab:sample-delete", args=[entered_sample.pk])
    photograph = reverse("lab:image-delete", args=[entered_sample.images.get().pk])
    assert url not in detail and photograph not in detail  # no Delete button for someone who may not
    for response in (client.get(url), client.post(url)):
        assert response.status_code == 403
        assert ("Only the person who entered sample H26-DEL (creator) or an administrator may delete it."
                in response.content.decode())
    assert client.post(photograph).status_code == 403
    assert Sample.objects.filter(pk=entered_sample.pk, images__isnull=False).exists()


def test_a_sample_whose_creator_account_is_gone_is_deleted_only_by_an_administrator(client, tech,
                                                                                   entered_sample):
    # Deleting the account leaves the sample with no creator: that makes no one its creator.
    from webapp.models import Sample

    Sample.objects.filter(pk=entered_sample.pk).update(created_by=None)
    response = client.post(reverse("lab:sample-delete", args=[entered_sample.pk]))
    assert response.status_code == 403
    assert "Only the person who entered sample H26-DEL or an administrator" in response.content.decode()
    assert client.post(reverse("lab:image-delete", args=[entered_sample.images.get().pk])).status_code == 403
    assert Sample.objects.filter(pk=entered_sample.pk, images__isnull=False).exists()


def test_the_creator_deletes_a_photograph_that_failed_or_does_not_belong(client, tech, entered_sample,
                                                                         django_user_model):
    # A photograph that can never be read kept its sample from being signed: "try it again or
    # delete it", with nothing on the page to delete it with. And one the upload warned another
    # sample holds too ("check that it belongs to this patient") could not be taken out at all.
    from webapp.models import Cell, SmearImage

    done = entered_sample.images.get()
    failed = SmearImage.objects.create(
        sample=entered_sample, image="smears/broken.png", original_filename="broken.png", width=64,
        height=48, file_size=1, checksum="f" * 64, status=SmearImage.Status.FAILED, error="Unreadable.")
    waiting = SmearImage.objects.create(
        sample=entered_sample, image="smears/later.png", original_filename="later.png", width=64,
        height=48, file_size=1, checksum="e" * 64, status=SmearImage.Status.PROCESSING)
    url = reverse("lab:image-delete", args=[failed.pk])
    page = client.get(reverse("lab:sample-detail", args=[entered_sample.pk])).content.decode()
    assert url not in page  # tech did not enter it
    response = client.post(url)
    assert response.status_code == 403 and "may delete its photographs" in response.content.decode()

    client.force_login(django_user_model.objects.get(username="creator"))
    page = client.get(reverse("lab:sample-detail", args=[entered_sample.pk])).content.decode()
    done_url, waiting_url = (reverse("lab:image-delete", args=[image.pk]) for image in (done, waiting))
    assert url in page and done_url in page and waiting_url not in page
    # The classified one asks first: its cells and their reviews go with it.
    assert (f'data-confirm="Delete {done.original_filename} and its 1 cell from sample H26-DEL? The '
            "reviews of its cells go with them; the audit trail keeps a record of the deletion.") in page
    assert "js/confirm.js" in page
    response = client.post(waiting_url, follow=True)
    assert "later.png was not deleted: it is still being classified." in response.content.decode()
    response = client.post(url, follow=True)
    assert "broken.png and its cells were deleted." in response.content.decode()
    cells = list(Cell.objects.filter(image=done).values_list("pk", flat=True))
    response = client.post(done_url, follow=True)
    assert f"{done.original_filename} and its cells were deleted." in response.content.decode()
    assert list(entered_sample.images.all()) == [waiting] and not Cell.objects.filter(pk__in=cells).exists()
    from auditlog.models import LogEntry

    deletion = LogEntry.objects.get(action=LogEntry.Action.DELETE, object_id=done.pk,
                                    content_type__model="smearimage")
    assert deletion.actor.username == "creator"
    assert deletion.additional_data["note"] == f"photograph {done.original_filename} deleted with 1 cell"


def test_a_classified_photograph_without_cells_asks_without_naming_cells(client, entered_sample,
                                                                         django_user_model):
    from webapp.models import SmearImage

    SmearImage.objects.create(
        sample=entered_sample, image="smears/empty.png", original_filename="empty.png", width=64,
        height=48, file_size=1, checksum="d" * 64, status=SmearImage.Status.DONE)
    client.force_login(django_user_model.objects.get(username="creator"))
    page = client.get(reverse("lab:sample-detail", args=[entered_sample.pk])).content.decode()
    assert ('data-confirm="Delete empty.png from sample H26-DEL? The audit trail keeps a record of the '
            'deletion."') in page


@pytest.mark.parametrize("who", ["creator", "administrator"])
def test_the_creator_and_an_administrator_delete_and_the_log_names_them(client, entered_sample, caplog,
                                                                        staff, who):
    import logging

    from webapp.models import Sample

    user = entered_sample.created_by if who == "creator" else staff
    client.force_login(user)
    url = reverse("lab:sample-delete", args=[entered_sample.pk])
    assert url in client.get(reverse("lab:sample-detail", args=[entered_sample.pk])).content.decode()
    with caplog.at_level(logging.INFO, logger="webapp.services.deletion"):
        assert client.post(url).status_code == 302
    assert not Sample.objects.filter(pk=entered_sample.pk).exists()
    assert f"Sample {entered_sample.pk} with 1 image(s) deleted by {user.username}" in caplog.text
    assert "H26-DEL" not in caplog.text  # the accession number stays in the audit trail alone


# --- password guessing ---------------------------------------------------------------------------

def test_five_failed_sign_ins_pause_that_user_name_on_that_computer(client, django_user_model):
    django_user_model.objects.create_user("tech", password="a-long-passphrase-1")
    login = reverse("login")
    answers = [client.post(login, {"username": "tech", "password": "guess"}).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 200, 429]
    paused = client.post(login, {"username": "tech", "password": "a-long-passphrase-1"})
    assert paused.status_code == 429
    assert "refused here for 15 minutes" in paused.content.decode()
    assert "_auth_user_id" not in client.session
    elsewhere = client.post(login, {"username": "tech", "password": "a-long-passphrase-1"},
                            REMOTE_ADDR="10.0.0.7")
    assert elsewhere.status_code == 302


def test_behind_a_proxy_the_lockout_counts_the_clients_address_not_the_proxys(client, django_user_model,
                                                                             settings):
    # The security audit: behind nginx every sign-in came from 127.0.0.1, so five wrong passwords
    # typed anywhere for a hematologist's name locked that account for everyone.
    django_user_model.objects.create_user("hema", password="a-long-passphrase-1")
    login = reverse("login")
    settings.PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    for _ in range(5):
        client.post(login, {"username": "hema", "password": "guess"},
                    HTTP_X_FORWARDED_FOR="10.9.9.9", **proxy)
    assert client.post(login, {"username": "hema", "password": "a-long-passphrase-1"},
                       HTTP_X_FORWARDED_FOR="10.9.9.9", **proxy).status_code == 429
    # The hematologist at her own workstation signs in; an address the client puts before the
    # proxy's own entry is the client's say, not counted.
    assert client.post(login, {"username": "hema", "password": "a-long-passphrase-1"},
                       HTTP_X_FORWARDED_FOR="10.1.1.1", **proxy).status_code == 302
    client.logout()
    assert client.post(login, {"username": "hema", "password": "a-long-passphrase-1"},
                       HTTP_X_FORWARDED_FOR="10.1.1.1, 10.9.9.9", **proxy).status_code == 429
    # Without LEUKOSCOPE_PROXY_COUNT the header is not trusted: a forged one gives no fresh tries.
    settings.PROXY_COUNT = 0
    answers = [client.post(login, {"username": "hema", "password": "guess"}, REMOTE_ADDR="10.3.3.3",
                           HTTP_X_FORWARDED_FOR=f"10.4.4.{k}").status_code for k in range(5)]
    assert answers[-1] == 429


def test_a_successful_sign_in_forgets_earlier_failures(client, django_user_model):
    django_user_model.objects.create_user("tech", password="a-long-passphrase-1")
    login = reverse("login")
    for _ in range(4):
        client.post(login, {"username": "tech", "password": "guess"})
    assert client.post(login, {"username": "tech", "password": "a-long-passphrase-1"}).status_code == 302
    client.logout()
    for _ in range(4):
        client.post(login, {"username": "tech", "password": "guess"})
    assert client.post(login, {"username": "tech", "password": "a-long-passphrase-1"}).status_code == 302


def test_a_pages_script_gets_401_once_the_sign_in_expired(client, tech):
    """The sample page's review clicks and progress polls read JSON: after the sign-in ends they get
    401, which the script turns into a trip through the login page, not HTML it cannot read."""
    from tests.webapp.lab_factories import make_sample

    sample = make_sample()
    cell = sample.images.get().cells.first()
    client.logout()
    as_script = {"HTTP_ACCEPT": "application/json"}
    review = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "EOSINOPHIL"}, **as_script)
    assert review.status_code == 401 and "sign in again" in review.json()["error"]
    assert client.get(reverse("lab:sample-status", args=[sample.pk]), **as_script).status_code == 401
    page = client.get(reverse("lab:sample-detail", args=[sample.pk]))
    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
    cell.refresh_from_db()
    assert cell.cell_type == "NEUTROPHIL"


@pytest.mark.django_db
def test_an_account_without_a_role_reads_results_but_changes_nothing(client, django_user_model, sent_tasks):
    from tests.webapp.lab_factories import make_sample, with_role
    from webapp.models import Cell, CellReview, Sample

    sample = make_sample("H26-ROLE")
    image, cell = sample.images.get(), Cell.objects.filter(image__sample=sample).first()
    client.force_login(django_user_model.objects.create_user("nobody", password="a-long-passphrase-1"))
    changes = [
        (reverse("lab:upload"), {"accession_number": "H26-NEW"}),
        (reverse("lab:sample-add-images", args=[sample.pk]), {}),
        (reverse("lab:image-retry", args=[image.pk]), {}),
        (reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE"}),
        (reverse("lab:gallery-review", args=[sample.pk]), {"cells": str(cell.pk), "cell_type": "MONOCYTE"}),
        (reverse("lab:image-add-cell", args=[image.pk]), {"x0": 400, "y0": 300, "x1": 480, "y1": 380}),
        (reverse("lab:cell-count-in", args=[cell.pk]), {}),
        (reverse("lab:sample-target", args=[sample.pk]), {"target_count": 200}),
    ]
    for path, data in changes:
        response = client.post(path, data)
        assert response.status_code == 403, path
        assert "your account has neither role" in response.content.decode(), path
        # A page's script reads the refusal as JSON.
        response = client.post(path, data, HTTP_ACCEPT="application/json")
        assert response.status_code == 403 and "neither role" in response.json()["error"], path
    assert client.get(reverse("lab:upload")).status_code == 403
    assert Sample.objects.count() == 1 and not CellReview.objects.exists() and sent_tasks == []
    assert Sample.objects.get().target_count == 100
    # Reading is open to every signed-in account (a laboratory information system has no role).
    assert client.get(reverse("lab:sample-detail", args=[sample.pk])).status_code == 200
    assert client.get(reverse("lab:api-sample", args=[sample.pk])).status_code == 200
    # Given the technologist's role, the same account relabels.
    with_role(django_user_model.objects.get(username="nobody"), "technologist")
    response = client.post(reverse("lab:cell-review", args=[cell.pk]), {"cell_type": "MONOCYTE"},
                           HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and CellReview.objects.count() == 1


@pytest.mark.django_db
def test_an_account_without_a_role_is_offered_no_change_it_would_be_refused(client, django_user_model):
    from tests.webapp.lab_factories import make_sample, with_role
    from webapp.models import Cell, SmearImage

    sample = make_sample("H26-OFFER", types=("NEUTROPHIL", "LYMPHOCYTE"))
    image = sample.images.get()
    cell, edge = Cell.objects.filter(image=image).order_by("index")
    Cell.objects.filter(pk=edge.pk).update(is_partial=True)
    failed = SmearImage.objects.create(sample=sample, image=image.image.name, original_filename="b.png",
                                       width=64, height=48, file_size=1, checksum="f" * 64,
                                       status=SmearImage.Status.FAILED, error="Unreadable.")
    controls = {
        reverse("lab:sample-list"): [reverse("lab:upload")],
        reverse("lab:sample-detail", args=[sample.pk]): [
            reverse("lab:sample-add-images", args=[sample.pk]), reverse("lab:image-retry", args=[failed.pk]),
            reverse("lab:cell-review", args=[cell.pk]), reverse("lab:image-add-cell", args=[image.pk]),
            reverse("lab:sample-target", args=[sample.pk])],
        reverse("lab:cell-detail", args=[edge.pk]): [
            reverse("lab:cell-review", args=[edge.pk]), reverse("lab:cell-count-in", args=[edge.pk])],
        reverse("lab:sample-gallery", args=[sample.pk]): [reverse("lab:gallery-review", args=[sample.pk])],
    }
    reader = django_user_model.objects.create_user("reader", password="a-long-passphrase-1")
    client.force_login(reader)
    for page, addresses in controls.items():
        html = client.get(page).content.decode()
        assert [address for address in addresses if address in html] == [], page
    html = client.get(reverse("lab:cell-detail", args=[edge.pk])).content.decode()
    assert "your account reads results only" in html
    # The same pages offer a technologist every one of them.
    with_role(reader, "technologist")
    for page, addresses in controls.items():
        html = client.get(page).content.decode()
        assert [address for address in addresses if address not in html] == [], page


# --- what the browser is told -------------------------------------------------------------------

def test_pages_carry_a_content_security_policy_and_files_do_not(client, tech):
    # The security audit: no policy was sent. Pages may run only the site's own scripts; a PDF is
    # left without one, which can keep the browser's viewer from showing it.
    from tests.webapp.lab_factories import make_sample

    sample = make_sample("H26-CSP", types=("NEUTROPHIL",))
    for url in (reverse("home"), reverse("lab:sample-detail", args=[sample.pk]), reverse("login")):
        policy = client.get(url).headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
        # Styles too: injected markup may not restyle a page, to hide or fake a figure.
        assert "style-src 'self';" in policy and "unsafe-inline" not in policy
    for url in (reverse("lab:sample-report-pdf", args=[sample.pk]), reverse("lab:api-samples")):
        response = client.get(url)
        assert response.status_code == 200 and "Content-Security-Policy" not in response.headers


def test_no_page_sets_a_style_attribute_the_policy_would_refuse():
    # The policy refuses style attributes: one written in a template, or in markup the site's code
    # builds, would leave its page drawn wrong (tests/browser report what the browser refused on the
    # pages they open; this reads every template and every module that writes markup).
    from django.conf import settings

    root = settings.BASE_DIR
    written = [path for path in [*(root / "templates").rglob("*.html"), *(root / "webapp").rglob("*.py"),
                                 *(root / "static" / "js").rglob("*.js")]
               if re.search(r"\bstyle\s*=\s*[\"'{]", path.read_text(encoding="utf-8"))]
    assert written == []


def test_signing_out_drops_the_browsers_cache_of_the_site(client, django_user_model):
    # The security audit: photographs are cached an hour, and lab workstations are shared: the next
    # person at the screen could open a patient's pictures from the cache after a sign-out.
    client.force_login(django_user_model.objects.create_user("tech", password="a-long-passphrase-1"))
    assert client.get(reverse("logout")).status_code == 405  # a link cannot sign anyone out
    signed_out = client.post(reverse("logout"))
    assert signed_out.status_code in (200, 302) and signed_out["Clear-Site-Data"] == '"cache"'
    assert "_auth_user_id" not in client.session


def test_a_signed_in_page_is_not_stored(client, django_user_model):
    # The security audit: pages carried no caching header, so a browser could keep a patient's
    # results on a shared workstation's disk after the sign-out.
    from tests.webapp.lab_factories import make_sample

    sample = make_sample("H26-CACHE", types=("NEUTROPHIL",))
    client.force_login(django_user_model.objects.create_user("tech", password="a-long-passphrase-1"))
    for url in (reverse("home"), reverse("lab:sample-detail", args=[sample.pk]), reverse("lab:api-samples")):
        assert "no-store" in client.get(url)["Cache-Control"], url


def test_a_right_to_left_file_name_keeps_to_itself_in_messages_and_the_delete_confirmation(admin_client):
    # The international-data audit: "عينة-١.png queued again." and the delete dialog, plain text both,
    # had the Arabic name carry the sentence's neighbouring words along.
    from tests.webapp.lab_factories import make_sample

    sample = make_sample("H26-RTL", types=("NEUTROPHIL",))
    image = sample.images.get()
    image.original_filename = "عينة-١.png"
    image.save(update_fields=["original_filename"])
    page = admin_client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-confirm="Delete \u2068عينة-١.png\u2069 and its 1 cell from sample H26-RTL?' in page
    answer = admin_client.post(reverse("lab:image-retry", args=[image.pk]), follow=True).content.decode()
    assert "\u2068عينة-١.png\u2069 is already classified: nothing was queued again." in answer
    # A window's title and a picture's alt text are plain text too, where <bdi> cannot go.
    assert 'alt="Smear photograph \u2068عينة-١.png\u2069"' in page
    cell_page = admin_client.get(reverse("lab:cell-detail", args=[image.cells.get().pk])).content.decode()
    assert "<title>Cell 1 on \u2068عينة-١.png\u2069 · H26-RTL" in cell_page
