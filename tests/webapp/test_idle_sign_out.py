"""A sign-in left unused ends (webapp/idle_sign_out.py): a lab workstation is shared, and what is
reviewed or signed there is recorded under the name signed in. The clock is the session's own
record of the last action, set back here as time passing would set it."""

import re
import time

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.webapp.lab_factories import make_sample
from webapp.idle_sign_out import LAST_ACTIVITY, SIGNED_OUT_IDLE

BACKGROUND = {"HTTP_X_LEUKOSCOPE_BACKGROUND": "1"}


def last_acted(client, seconds_ago):
    session = client.session
    session[LAST_ACTIVITY] = time.time() - seconds_ago
    session.save()


def recorded_idle_seconds(client):
    return time.time() - client.session[LAST_ACTIVITY]


@pytest.mark.django_db
def test_the_login_page_words_a_limit_of_one_minute_and_one_hour_in_the_singular(client, settings):
    settings.IDLE_SIGN_OUT_SECONDS, settings.SESSION_HOURS = 60, 1
    page = client.get(f"{reverse('login')}?next=/").content.decode()
    assert "ends after 1 minute without use, and 1 hour after it began" in page


@pytest.mark.django_db
def test_a_sign_in_left_unused_ends_and_the_login_page_says_why_and_leads_back(client, tech):
    sample = make_sample()
    page = reverse("lab:sample-detail", args=[sample.pk])
    assert client.get(page).status_code == 200
    last_acted(client, settings.IDLE_SIGN_OUT_SECONDS + 1)

    response = client.get(page)
    assert response.status_code == 302 and response["Location"] == f"{reverse('login')}?next={page}"
    # Photographs are cached for an hour: they go as they do at a sign-out.
    assert response["Clear-Site-Data"] == '"cache"'
    login = client.get(response["Location"]).content.decode()
    assert 'data-role="signed-out-idle"' in login
    assert "signed out after 30 minutes without use" in login and "come back to the page you were on" in login
    # Said until the next sign-in: the page's two scripts reload it at once, and the browser may
    # abort the first login page, which read the words, for the second.
    assert 'data-role="signed-out-idle"' in client.get(response["Location"]).content.decode()
    assert client.get(reverse("home")).status_code == 302

    back = client.post(reverse("login"),
                       {"username": "tech", "password": "a-long-passphrase-1", "next": page})
    assert back.status_code == 302 and back["Location"] == page
    assert client.get(page).status_code == 200
    # Forgotten at the sign-in, which keeps the session's keys: one that ends otherwise later (its
    # hours, a sign-out elsewhere) is not said to have ended unused.
    assert SIGNED_OUT_IDLE not in client.session


@pytest.mark.django_db
def test_a_sign_in_through_the_admins_login_page_forgets_the_unused_one_before_it(client, tech):
    # The review: only the site's own login form forgot it, so after a sign-in on /admin/login/ a
    # sign-in ended by another cause (here its account made inactive) was said to have ended unused.
    tech.is_staff = True
    tech.save()
    page = reverse("home")
    client.get(page)
    last_acted(client, settings.IDLE_SIGN_OUT_SECONDS + 1)
    assert client.get(page).status_code == 302
    signed_in = client.post(reverse("admin:login"), {"username": "tech", "password": "a-long-passphrase-1",
                                                      "next": reverse("admin:index")})
    assert signed_in.status_code == 302 and signed_in["Location"] == reverse("admin:index")
    assert SIGNED_OUT_IDLE not in client.session
    tech.is_active = False
    tech.save()
    login = client.get(client.get(page)["Location"]).content.decode()
    assert 'data-role="signed-out-idle"' not in login


@pytest.mark.django_db
def test_a_pages_polls_leave_the_clock_running_and_a_persons_action_restarts_it(client, tech):
    sample = make_sample()
    client.get(reverse("home"))
    last_acted(client, settings.IDLE_SIGN_OUT_SECONDS - 120)

    for _ in range(3):
        assert client.get(reverse("lab:sample-status", args=[sample.pk]), HTTP_ACCEPT="application/json",
                          **BACKGROUND).status_code == 200
        assert client.get(reverse("lab:sample-results", args=[sample.pk]), **BACKGROUND).status_code == 200
    assert recorded_idle_seconds(client) >= settings.IDLE_SIGN_OUT_SECONDS - 120

    assert client.get(reverse("lab:sample-detail", args=[sample.pk])).status_code == 200
    assert recorded_idle_seconds(client) < 5


@pytest.mark.django_db
def test_a_poll_past_the_end_gets_401_even_for_a_part_of_a_page(client, tech):
    # Given the login page instead, the sample page's script would draw it in place of a card.
    sample = make_sample()
    client.get(reverse("home"))
    last_acted(client, settings.IDLE_SIGN_OUT_SECONDS + 1)

    part = client.get(reverse("lab:sample-results", args=[sample.pk]), HTTP_ACCEPT="text/html", **BACKGROUND)
    assert part.status_code == 401 and "sign in again" in part.json()["error"]
    assert client.get(reverse("sign-in-activity"), **BACKGROUND).status_code == 401
    # The page the script then reloads says why.
    page = client.get(reverse("lab:sample-detail", args=[sample.pk]), follow=True).content.decode()
    assert 'data-role="signed-out-idle"' in page


@pytest.mark.django_db
def test_the_pages_script_asks_how_long_is_left_and_tells_of_a_key_or_click(client, tech):
    client.get(reverse("home"))
    last_acted(client, 600)

    left = client.get(reverse("sign-in-activity"), **BACKGROUND)
    assert left.status_code == 200
    assert left.json()["seconds_left"] == pytest.approx(settings.IDLE_SIGN_OUT_SECONDS - 600, abs=2)
    assert recorded_idle_seconds(client) >= 600  # asking is not using

    assert client.post(reverse("sign-in-activity")).status_code == 204
    assert recorded_idle_seconds(client) < 5
    left = client.get(reverse("sign-in-activity"), **BACKGROUND).json()["seconds_left"]
    assert left == pytest.approx(settings.IDLE_SIGN_OUT_SECONDS, abs=5)


@pytest.mark.django_db
def test_every_signed_in_page_carries_the_script_and_the_login_page_does_not(client, tech, staff):
    script = 'src="/static/js/idle.js" data-activity-url="/accounts/activity/" data-idle-seconds="1800"'
    assert script in client.get(reverse("home")).content.decode()
    # The printable report too: results on an unattended screen. It holds no form, so the token
    # the script tells the site of a key press with comes with the script.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(tech)
    report = browser.get(reverse("lab:sample-report", args=[make_sample("H26-IDLE").pk])).content.decode()
    assert script in report and "csrfmiddlewaretoken" not in report
    assert browser.post(reverse("sign-in-activity")).status_code == 403
    token = re.search(r'data-csrf-token="([^"]+)"', report)[1]
    assert browser.post(reverse("sign-in-activity"), HTTP_X_CSRFTOKEN=token).status_code == 204
    client.logout()
    assert "js/idle.js" not in client.get(reverse("login")).content.decode()
    client.force_login(staff)
    assert script in client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_however_busy_a_sign_in_ends_its_hours_after_it_began(client, django_user_model):
    django_user_model.objects.create_user("tech", password="a-long-passphrase-1")
    client.post(reverse("login"), {"username": "tech", "password": "a-long-passphrase-1"})
    end = client.session.get_expiry_date()
    assert abs(end.timestamp() - time.time() - settings.SESSION_COOKIE_AGE) < 5

    last_acted(client, 120)  # two minutes on: the next action is written to the session
    response = client.get(reverse("home"))
    assert recorded_idle_seconds(client) < 5
    # Written, the session keeps its end, and so does the cookie: no action moves it on.
    assert client.session.get_expiry_date() == end
    assert response.cookies["sessionid"]["max-age"] <= settings.SESSION_COOKIE_AGE - 1

