"""What the sign-in page tells a person who cannot sign in, and where it takes one who can."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-passphrase-1"
DIDNT_MATCH = "Your user name and password didn&#x27;t match. Please try again."
INACTIVE = "This account is inactive: ask the lab&#x27;s administrator to make it active again."


@pytest.fixture
def retired(django_user_model):
    return django_user_model.objects.create_user("retired", password=PASSWORD, is_active=False)


def refusal(answer):
    page = answer.content.decode()
    return page.split('data-role="sign-in-refused">', 1)[1].split("</p>", 1)[0]


def test_an_inactive_account_with_its_password_is_told_it_is_inactive(client, retired):
    """The audit: a deactivated account's right password was answered "didn't match", as a wrong one
    is, so its owner kept trying (each try counted toward the lockout) instead of asking."""
    login = reverse("login")

    right = client.post(login, {"username": "retired", "password": PASSWORD})

    assert right.status_code == 200 and refusal(right) == INACTIVE
    assert "_auth_user_id" not in client.session
    # Its right password is no failed guess: asking again and again pauses nothing.
    for _ in range(5):
        assert refusal(client.post(login, {"username": "retired", "password": PASSWORD})) == INACTIVE
    # A wrong password says no more for an inactive account than for one that does not exist.
    wrong = client.post(login, {"username": "retired", "password": "guess"})
    nobody = client.post(login, {"username": "nobody", "password": "guess"})
    assert refusal(wrong) == refusal(nobody) == DIDNT_MATCH


def test_the_lockout_still_pauses_an_inactive_accounts_name(client, retired):
    login = reverse("login")
    answers = [client.post(login, {"username": "retired", "password": "guess"}).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 200, 429]
    paused = client.post(login, {"username": "retired", "password": PASSWORD})
    assert paused.status_code == 429 and "inactive" not in paused.content.decode()


def test_a_sign_in_ends_when_its_account_is_made_inactive(client, django_user_model):
    # The backend that lets an inactive account's password be checked must not keep its session.
    tech = django_user_model.objects.create_user("tech", password=PASSWORD)
    assert client.post(reverse("login"), {"username": "tech", "password": PASSWORD}).status_code == 302
    assert client.get(reverse("home")).status_code == 200
    tech.is_active = False
    tech.save()
    assert client.get(reverse("home")).status_code == 302


def test_the_sign_in_page_says_whom_to_ask_for_a_forgotten_password(client):
    page = client.get(reverse("login")).content.decode()
    assert "Forgotten your password? Ask the lab's administrator to set a new one." in page


def test_a_form_sent_after_the_sign_in_ended_comes_back_to_its_page(client, django_user_model):
    """The audit: a sign-off sent after the sign-in ended went to the login page with the sign
    address as `next`, which only takes a POST: signed in, the person landed on "Not a page to
    open" (405) instead of the sample they were signing."""
    from tests.webapp.lab_factories import make_sample, named_hematologist, with_role

    with_role(named_hematologist(django_user_model), "hematologist")
    sample = make_sample("S-NEXT")
    page = f"{reverse('lab:sample-detail', args=[sample.pk])}?page=1"
    sign = reverse("lab:sample-sign", args=[sample.pk])
    login = reverse("login")

    sent = client.post(sign, {}, HTTP_REFERER=f"http://testserver{page}")

    assert sent.status_code == 302 and login_leading_to(sent) == page
    signed_in = client.post(login, {"username": "haem", "password": "a-long-passphrase-2", "next": page})
    assert signed_in.status_code == 302 and signed_in["Location"] == page
    sample.refresh_from_db()
    assert sample.signed_at is None
    client.logout()
    # Without a Referer, or with another site's, the sign-in leads home.
    assert login_leading_to(client.post(sign, {})) is None
    elsewhere = "https://elsewhere.example/samples/1/"
    assert login_leading_to(client.post(sign, {}, HTTP_REFERER=elsewhere)) is None
    # A page opened still comes back to itself.
    assert login_leading_to(client.get(page)) == page


def login_leading_to(answer):
    """Where the login page ``answer`` redirects to leads once signed in (its `next`), or None."""
    address = urlsplit(answer["Location"])
    assert answer.status_code == 302 and address.path == reverse("login")
    return parse_qs(address.query).get("next", [None])[0]


def test_a_refused_sign_in_is_announced_and_tied_to_its_fields(client, django_user_model):
    """The accessibility audit: the refusal was a plain paragraph, the fields said nothing of it, and
    the focus went back to "User name", so a screen reader user heard no refusal."""
    django_user_model.objects.create_user("tech", password=PASSWORD)
    page = client.post(reverse("login"), {"username": "tech", "password": "guess"}).content.decode()
    assert '<p class="error" id="sign-in-error" role="alert" data-role="sign-in-refused">' in page
    for name in ("username", "password"):
        field = page.split(f'name="{name}"', 1)[1].split(">", 1)[0]
        assert 'aria-invalid="true"' in field and 'aria-describedby="sign-in-error"' in field
    first = client.get(reverse("login")).content.decode()
    assert "aria-invalid" not in first and 'role="alert"' not in first
