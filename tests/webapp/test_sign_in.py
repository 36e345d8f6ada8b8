"""What the sign-in page tells a person who cannot sign in, and where it takes one who can."""

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
