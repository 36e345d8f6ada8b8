"""The lab's information system reads the JSON API with a key, without a sign-in; a key only
reads, and one revoked or unknown is refused in JSON."""

import hashlib
import os
import pwd
import re
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.webapp.lab_factories import make_sample, mark_signed, named_hematologist, with_role
from webapp.admin import accounts_on_record
from webapp.models import ApiToken
from webapp.services.api_tokens import LAST_USED_EVERY, create_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def not_through_sudo(monkeypatch):
    # The trail names who ran sudo where root runs a command through it (audit.os_user): the
    # account these tests expect is this process's own, however the suite itself is started.
    monkeypatch.delenv("SUDO_UID", raising=False)


@pytest.fixture
def lis(django_user_model):
    return django_user_model.objects.create_user("lis", password="a-long-passphrase-9")


def bearer(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def revoke_in_the_admin(client, *tokens, reason="LIS replaced", **kwargs):
    """The admin's "Revoke" action, sent from its page that asks why."""
    return client.post(reverse("admin:webapp_apitoken_changelist"), {
        "action": "revoke", "_selected_action": [token.pk for token in tokens], "post": "yes",
        "reason": reason}, **kwargs)


def test_a_key_reads_signed_results_and_their_fhir_without_a_sign_in(client, lis, django_user_model):
    signed = mark_signed(make_sample("K-0001", types=("NEUTROPHIL",)), named_hematologist(django_user_model))
    token, key = create_token(lis, "LIS")

    listed = client.get(reverse("lab:api-samples"), {"status": "signed"}, **bearer(key))
    fhir = client.get(reverse("lab:api-sample-fhir", args=[signed.pk]), **bearer(key))

    assert listed.status_code == 200 and [row["accession_number"] for row in listed.json()["results"]] == [
        "K-0001"]
    assert fhir.status_code == 200 and fhir.json()["resourceType"] == "Bundle"
    # Only the key's digest is stored; its last use is on record.
    token.refresh_from_db()
    assert token.key_sha256 == hashlib.sha256(key.encode()).hexdigest() and key not in str(token.__dict__)
    assert token.last_used_at is not None
    # Any whitespace after the scheme, as HTTP allows some clients to send it.
    assert client.get(reverse("lab:api-samples"), HTTP_AUTHORIZATION=f" Bearer\t{key} ").status_code == 200
    # In any case, as HTTP's scheme names are (RFC 9110): some clients send "bearer".
    assert client.get(reverse("lab:api-samples"), HTTP_AUTHORIZATION=f"bearer {key}").status_code == 200
    # No session was made: the next request without the key is not signed in, and is told how a
    # program signs in (a key, not the site's login session).
    unsigned = client.get(reverse("lab:api-samples"))
    assert unsigned.status_code == 401 and "Authorization: Bearer <key>" in unsigned.json()["error"]


def test_a_bad_revoked_or_malformed_key_is_refused_in_json(client, lis):
    token, key = create_token(lis, "LIS")
    url = reverse("lab:api-samples")

    unknown = client.get(url, **bearer("not-a-key"))
    assert unknown.status_code == 401 and "unknown or revoked" in unknown.json()["error"]
    basic = client.get(url, HTTP_AUTHORIZATION="Basic bGlzOnB3")
    assert basic.status_code == 401 and "Bearer <key>" in basic.json()["error"]
    # A signed-in person behind a proxy that signs in with Basic reads the API as on the pages.
    client.force_login(lis)
    assert client.get(url, HTTP_AUTHORIZATION="Basic bGlzOnB3").status_code == 200
    client.logout()

    call_command("api_token", "revoke", str(token.pk))
    assert client.get(url, **bearer(key)).status_code == 401
    # A key of an account since made inactive reads nothing either.
    _, other = create_token(lis, "spare")
    lis.is_active = False
    lis.save()
    assert client.get(url, **bearer(other)).status_code == 401


def test_a_key_only_reads_and_only_the_api(client, django_user_model):
    robot = django_user_model.objects.create_user("robot")
    sample = make_sample("K-0002", types=("NEUTROPHIL",))
    _, key = create_token(robot, "script")
    cell = sample.images.get().cells.get()

    # A key's account holds no role (refusal), and a key writes nothing whatever its account may do.
    posted = client.post(reverse("lab:api-cell", args=[cell.pk]), {"cell_type": "MONOCYTE"}, **bearer(key))
    assert posted.status_code == 405 and "only reads" in posted.json()["error"]
    assert posted["Allow"] == "GET, HEAD"
    # OPTIONS is refused in the same words: the API's views answer GET and HEAD only.
    asked = client.options(reverse("lab:api-samples"), **bearer(key))
    assert asked.status_code == 405 and "only reads" in asked.json()["error"]
    # Outside the API the key is no sign-in: the page sends it to the login page.
    page = client.get(reverse("lab:sample-detail", args=[sample.pk]), **bearer(key))
    assert page.status_code == 302 and "/accounts/login/" in page["Location"]


def test_a_key_fetches_the_photographs_and_crops_the_api_links(client, lis, settings):
    # The security audit: the API's `file` and `crop` links answered a key with the login page.
    from pathlib import Path

    sample = make_sample("K-0003", types=("NEUTROPHIL",))
    _, key = create_token(lis, "LIS")
    answer = client.get(reverse("lab:api-sample", args=[sample.pk]), **bearer(key)).json()
    links = [answer["images"][0]["file"], answer["images"][0]["cells"][0]["crop"]]
    for link in links:
        stored = Path(settings.MEDIA_ROOT) / link.split(settings.MEDIA_URL, 1)[1]
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(b"picture of " + stored.name.encode())
    for link in links:
        fetched = client.get(link, **bearer(key))
        assert fetched.status_code == 200 and b"".join(fetched.streaming_content).startswith(b"picture of")
        assert client.get(link, **bearer("not-a-key")).status_code == 401
        # Without a key it is a page's picture, for a signed-in person only; a proxy's own
        # Authorization header beside a session is left to the session.
        assert client.get(link).status_code == 302
        assert client.get(link, HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code == 302
        client.force_login(lis)
        assert client.get(link, HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code == 200
        client.logout()
    assert client.post(links[0], **bearer(key)).status_code == 405


def test_last_use_is_written_at_most_once_a_minute(client, lis):
    token, key = create_token(lis, "LIS")
    client.get(reverse("lab:api-samples"), **bearer(key))
    token.refresh_from_db()
    first = token.last_used_at
    client.get(reverse("lab:api-samples"), **bearer(key))
    token.refresh_from_db()
    assert token.last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - LAST_USED_EVERY - timedelta(seconds=1))
    client.get(reverse("lab:api-samples"), **bearer(key))
    token.refresh_from_db()
    assert token.last_used_at > first - timedelta(seconds=1) and token.last_used_at <= timezone.now()


def test_the_command_makes_a_key_shown_once_lists_and_revokes(lis, capsys, django_user_model):
    call_command("api_token", "create", "lis", "--name", "LIS")
    printed = capsys.readouterr().out
    key = printed.splitlines()[1].strip()
    token = ApiToken.objects.get()
    assert token.key_sha256 == hashlib.sha256(key.encode()).hexdigest()

    call_command("api_token", "list")
    listing = capsys.readouterr().out
    assert "lis\tLIS" in listing and "last used never\tactive" in listing and key not in listing
    # A key is revoked when its account is given a role: it was once still listed "active", and its
    # 401 said only "unknown or revoked", which sent the administrator looking for a revocation.
    lis.groups.add(Group.objects.get(name="technologist"))
    call_command("api_token", "list")
    assert "last used never\trevoked " in capsys.readouterr().out
    refused = Client().get(reverse("lab:api-samples"), **bearer(key))
    assert refused.status_code == 401
    assert "given a role, staff status or a permission" in refused.json()["error"]
    lis.groups.clear()
    # An account changed by a bulk update sends no signal: its key is not revoked, but stops.
    _, spare = create_token(lis, "spare")
    django_user_model.objects.filter(pk=lis.pk).update(is_active=False)
    call_command("api_token", "list")
    assert "\tstopped: lis is not active." in capsys.readouterr().out
    assert Client().get(reverse("lab:api-samples"), **bearer(spare)).status_code == 401

    with pytest.raises(CommandError, match="There is no account 'nobody'"):
        call_command("api_token", "create", "nobody", "--name", "x")
    django_user_model.objects.create_user("boss", is_staff=True)
    with pytest.raises(CommandError, match="staff account: give the program an account of its own"):
        call_command("api_token", "create", "boss", "--name", "x")
    with pytest.raises(CommandError, match="There is no API key 999"):
        call_command("api_token", "revoke", "999")


@pytest.mark.parametrize("name, expected", [
    ("", "Give the key a name"),
    ("   ", "Give the key a name"),
    # Past the column: PostgreSQL refused it with a traceback, SQLite kept it whole.
    ("L" * 101, "at most 100 characters"),
])
def test_the_command_refuses_a_key_without_a_usable_name_in_one_line(lis, name, expected):
    """The admin's form requires the name that lists say which program a key is for; the command
    made a key named "" (and, on PostgreSQL, failed with a traceback on one past the column)."""
    with pytest.raises(CommandError, match=expected):
        call_command("api_token", "create", "lis", "--name", name)
    assert not ApiToken.objects.exists()


def test_the_admin_lists_keys_and_revokes_them_without_showing_any(client, lis, django_user_model):
    token, key = create_token(lis, "LIS")
    admin_user = django_user_model.objects.create_superuser("root", password="a-long-passphrase-8")
    client.force_login(admin_user)
    changelist = reverse("admin:webapp_apitoken_changelist")

    page = client.get(changelist).content.decode()
    assert "LIS" in page and key not in page and token.key_sha256 not in page
    assert '<td class="field-state">active</td>' in page
    revoke_in_the_admin(client, token)
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert '<td class="field-state">revoked ' in client.get(changelist).content.decode()
    client.logout()
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401


def key_form(client):
    """The fields of a blank "Add API key" form, as the admin renders them."""
    page = client.get(reverse("admin:webapp_apitoken_add")).content.decode()
    return {"form_token": re.search(r'name="form_token" value="([^"]+)"', page).group(1)}


def send_key_form(client, user, name, form=None, **kwargs):
    form = form or key_form(client)
    data = {**form, "user": user.pk, "name": name}
    return client.post(reverse("admin:webapp_apitoken_add"), data, **kwargs)


def shown_key(page):
    found = re.search(r'data-role="api-key"[^>]*>([^<]+)<', page.content.decode())
    return found and found.group(1)


def test_an_administrator_makes_a_key_on_the_site_and_sees_it_once(client, lis, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))

    made = send_key_form(client, lis, "LIS")

    # Post/redirect/get: the answer to the form is a redirect, which carries no key.
    token = ApiToken.objects.get()
    assert made.status_code == 302 and made["Location"].startswith(
        reverse("admin:webapp_apitoken_made", args=[token.pk]))
    shown = client.get(made["Location"])
    assert shown.status_code == 200 and "no-store" in shown["Cache-Control"]
    key = shown_key(shown)
    assert "Copy it now: it is shown only on this page and is not kept." in shown.content.decode()
    assert (token.user, token.name) == (lis, "LIS")
    assert token.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in made["Location"]
    client.logout()
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 200
    # Nothing shows it again, and a staff account gets none.
    client.force_login(django_user_model.objects.get(username="root"))
    assert key not in client.get(reverse("admin:webapp_apitoken_change", args=[token.pk])).content.decode()
    refused = send_key_form(client, django_user_model.objects.get(username="root"), "x")
    assert refused.status_code == 200 and "is a staff account" in refused.content.decode()
    assert ApiToken.objects.count() == 1
    # The trail names who made it, as the command's row names who ran the command.
    row = LogEntry.objects.get(content_type__model="apitoken", action=LogEntry.Action.CREATE)
    assert (row.actor.username, row.additional_data["note"]) == ("root", "Made in the admin.")


def test_the_command_names_who_ran_it_in_the_audit_trail(lis, client, django_user_model):
    """The audit: `api_token create` wrote no row at all, and `revoke` one naming no one. Nobody
    signs in on the command line: the operating-system user stands for who did it."""
    from webapp.management.commands.api_token import Command

    who = f"command line (OS user {os_account()})"
    call_command("api_token", "create", "lis", "--name", "LIS")
    token = ApiToken.objects.get()
    rows = LogEntry.objects.filter(content_type__model="apitoken", object_pk=str(token.pk))
    made = rows.get(action=LogEntry.Action.CREATE)
    assert made.actor is None
    assert made.additional_data == {"note": "Made with manage.py api_token create.", "who": who}
    assert made.changes == {"user": ["None", "lis"], "name": ["None", "LIS"]}

    call_command("api_token", "revoke", str(token.pk), "--reason", "sent by\n e-mail")
    because = f"Revoked with manage.py api_token revoke by OS user {os_account()}: sent by e-mail"
    revoked = rows.get(action=LogEntry.Action.UPDATE)
    assert revoked.actor is None and revoked.additional_data == {"note": because, "who": who}
    token.refresh_from_db()
    assert (token.revoked_by, token.revoke_reason) == (None, because)

    # The trail's list says who where it said "system"; the key names no account as who revoked it.
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    trail = client.get(reverse("admin:auditlog_logentry_changelist")).content.decode()
    assert trail.count(f'<td class="field-user_url">{who}</td>') == 2 and ">system<" not in trail
    keys = client.get(reverse("admin:webapp_apitoken_changelist")).content.decode()
    assert '<td class="field-revoked_by_shown">no account (see the reason)</td>' in keys
    assert "operating-system user" in Command.help and "--reason" in Command.help


def os_account():
    """The account the system runs this process as, by its account database."""
    return pwd.getpwuid(os.getuid()).pw_name


def test_the_trail_names_the_account_the_command_ran_as_whatever_the_environment_says(lis, monkeypatch):
    # Review: the trail took its "OS user" from LOGNAME or USER (getpass.getuser), which whoever runs
    # the command sets as they like (`USER=ana manage.py api_token revoke 3`), and `su` often keeps.
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "someone-else")
    call_command("api_token", "create", "lis", "--name", "LIS")
    token = ApiToken.objects.get()
    call_command("api_token", "revoke", str(token.pk))
    rows = LogEntry.objects.filter(content_type__model="apitoken", object_pk=str(token.pk)).order_by("pk")
    who = f"command line (OS user {os_account()})"
    assert [row.additional_data["who"] for row in rows] == [who, who]
    token.refresh_from_db()
    assert token.revoke_reason == f"Revoked with manage.py api_token revoke by OS user {os_account()}."


def an_account_other_than_root():
    """An account the system's account database names, other than root: (id, name)."""
    account = next(entry for entry in pwd.getpwall() if entry.pw_uid != 0)
    return account.pw_uid, account.pw_name


def unnamed_id():
    """A user id the system's account database has no name for."""
    named = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(4_000_000, 4_001_000) if uid not in named)


def revoke_with_the_command(lis):
    call_command("api_token", "create", "lis", "--name", "LIS")
    token = ApiToken.objects.get()
    call_command("api_token", "revoke", str(token.pk), "--reason", "sent by e-mail")
    token.refresh_from_db()
    rows = LogEntry.objects.filter(content_type__model="apitoken", object_pk=str(token.pk)).order_by("pk")
    return token, [row.additional_data["who"] for row in rows]


@pytest.mark.parametrize("known", [True, False])
def test_a_command_run_as_root_through_sudo_names_who_ran_sudo(lis, monkeypatch, known):
    # Review: `sudo manage.py api_token revoke 3` was recorded as root's doing, and root is
    # everyone who may use sudo; sudo says who ran it in SUDO_UID.
    sudo_uid, sudo_name = an_account_other_than_root() if known else (unnamed_id(), None)
    sudo_name = sudo_name or f"id {sudo_uid}"
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setenv("SUDO_UID", str(sudo_uid))
    monkeypatch.setenv("SUDO_USER", "someone-else")  # a name, as forgeable as USER: not read

    token, who = revoke_with_the_command(lis)

    root = pwd.getpwuid(0).pw_name
    assert who == [f"command line (OS user {root}, through sudo by {sudo_name})"] * 2
    assert token.revoke_reason == (f"Revoked with manage.py api_token revoke by OS user {root}, "
                                   f"through sudo by {sudo_name}: sent by e-mail")


@pytest.mark.parametrize("said", [None, "0", "", "ana", "-5", str(2**32), "9" * 5000])
def test_only_a_sudo_caller_sudo_says_is_named(lis, monkeypatch, said):
    # Root without sudo, or through sudo from root itself, is root alone; what sudo never writes
    # names nobody, and no traceback: a number past any user id (32 bits), or past the digits
    # Python's int() reads at all (review: a ValueError out of the command).
    monkeypatch.setattr(os, "getuid", lambda: 0)
    if said is not None:
        monkeypatch.setenv("SUDO_UID", said)

    _, who = revoke_with_the_command(lis)

    assert who == [f"command line (OS user {pwd.getpwuid(0).pw_name})"] * 2


def test_an_account_other_than_root_cannot_pass_for_another_through_sudo_uid(lis, monkeypatch):
    # Any account sets SUDO_UID as it likes (`SUDO_UID=1000 manage.py api_token revoke 3`): only a
    # process that runs as root, which sudo made so, is taken to have come through sudo.
    uid, name = an_account_other_than_root()
    monkeypatch.setattr(os, "getuid", lambda: uid)
    monkeypatch.setenv("SUDO_UID", str(unnamed_id()))

    token, who = revoke_with_the_command(lis)

    assert who == [f"command line (OS user {name})"] * 2 and "sudo" not in token.revoke_reason


def test_reloading_the_page_that_showed_a_key_makes_none_and_shows_none(client, lis, django_user_model):
    # The audit: the key was shown in the answer to the form's POST, so a reload sent the form again
    # and made (and showed) a second live key, the first one never shown again but still in force.
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    made = send_key_form(client, lis, "LIS")
    key = shown_key(client.get(made["Location"]))
    assert key

    for _ in range(2):
        again = client.get(made["Location"])
        page = again.content.decode()
        assert again.status_code == 200 and key not in page and not shown_key(again)
        assert "was shown once, when it was made, and cannot be shown again" in page
        assert "Revoke the selected API keys" in page and reverse("admin:webapp_apitoken_add") in page
    assert ApiToken.objects.count() == 1
    # The key shown is the one in force.
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 200
    # Once revoked, the page says so rather than how to revoke it.
    ApiToken.objects.update(revoked_at=timezone.now())
    assert "It was revoked on" in client.get(made["Location"]).content.decode()


def test_the_key_made_is_shown_only_to_the_session_that_made_it(client, lis, django_user_model):
    from django.test import Client

    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase-8")
    client.force_login(root)
    made = send_key_form(client, lis, "LIS")

    # Another administrator, or the same one signed in elsewhere, with the very address.
    for account in (with_role(django_user_model.objects.create_user("lead", is_staff=True), "admin"), root):
        elsewhere = Client()
        elsewhere.force_login(account)
        other = elsewhere.get(made["Location"])
        assert other.status_code == 200 and not shown_key(other)
        assert "cannot be shown again" in other.content.decode()
    # Not signed in: the admin's login page.
    assert Client().get(made["Location"]).status_code == 302
    # A technologist with staff status may not make keys, so may not open the page.
    technologist = with_role(django_user_model.objects.create_user("t", is_staff=True), "technologist")
    elsewhere = Client()
    elsewhere.force_login(technologist)
    assert elsewhere.get(made["Location"]).status_code == 403
    # The session that made it still sees it, once; an edited address shows nothing.
    location = made["Location"]
    tampered = client.get(location[:-2] + ("00" if not location.endswith("00") else "11"))
    assert tampered.status_code == 200 and not shown_key(tampered)
    key = shown_key(client.get(location))
    assert key and ApiToken.objects.get().key_sha256 == hashlib.sha256(key.encode()).hexdigest()


def test_the_key_is_not_kept_in_the_session_in_the_clear(client, lis, django_user_model):
    from django.contrib.sessions.models import Session

    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    made = send_key_form(client, lis, "LIS")
    stored = " ".join(str(session.get_decoded()) for session in Session.objects.all())
    key = shown_key(client.get(made["Location"]))
    assert key and key not in stored
    # Once shown, the session holds nothing of it.
    assert not any(name.startswith("api_key_made") for name in client.session.keys())


def test_two_keys_made_in_one_session_are_each_shown_once(client, lis, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    first = send_key_form(client, lis, "LIS")
    second = send_key_form(client, lis, "LIS")
    keys = {shown_key(client.get(first["Location"])), shown_key(client.get(second["Location"]))}
    assert len(keys) == 2 and None not in keys and ApiToken.objects.count() == 2


def test_the_form_sent_twice_makes_one_key_and_says_so(client, lis, django_user_model):
    # The audit: a double click sent the form twice and made two live keys, one never used (a script
    # still could, after the page's guard against double clicks).
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    form = key_form(client)

    first = send_key_form(client, lis, "LIS", form)
    again = send_key_form(client, lis, "LIS", form, follow=True)

    token = ApiToken.objects.get()
    page = again.content.decode()
    assert again.redirect_chain[-1][0] == reverse("admin:webapp_apitoken_made", args=[token.pk])
    assert "This form had been sent already: its first send made this key, and this one made none." in page
    assert not shown_key(again) and "make a new key" in page
    # The first send's page still shows its key, once, and that key is the one in force.
    key = shown_key(client.get(first["Location"]))
    assert key and token.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    # A fresh form makes a second key.
    send_key_form(client, lis, "LIS 2")
    assert ApiToken.objects.count() == 2


def test_a_key_form_without_its_token_makes_no_key(client, lis, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    for form in ({}, {"form_token": "../../x"}):
        refused = client.post(reverse("admin:webapp_apitoken_add"), {**form, "user": lis.pk, "name": "LIS"})
        assert refused.status_code == 200
        assert re.search(r'<ul class="errorlist nonfield"><li>This form is incomplete: open it again',
                         refused.content.decode())
    assert not ApiToken.objects.exists()


def test_a_form_token_makes_one_key_even_when_two_sends_meet_in_the_database(lis):
    from webapp.services.api_tokens import FormAlreadySent

    token, key = create_token(lis, "LIS", form_token="a" * 32)
    with pytest.raises(FormAlreadySent) as sent:
        create_token(lis, "LIS", form_token="a" * 32)
    assert sent.value.token == token and ApiToken.objects.count() == 1
    # Keys made without a form (manage.py api_token) share no token.
    create_token(lis, "x"), create_token(lis, "y")
    assert ApiToken.objects.count() == 3


def test_the_admin_role_manages_api_keys(client, lis, django_user_model):
    lead = with_role(django_user_model.objects.create_user("lead", is_staff=True), "admin")
    client.force_login(lead)

    made = send_key_form(client, lis, "LIS", follow=True)

    assert made.status_code == 200 and 'data-role="api-key"' in made.content.decode()
    assert client.get(reverse("admin:webapp_apitoken_changelist")).status_code == 200
    # A technologist, even with staff status, does not.
    other = with_role(django_user_model.objects.create_user("t", is_staff=True), "technologist")
    client.force_login(other)
    assert client.get(reverse("admin:webapp_apitoken_add")).status_code == 403


def test_the_admin_role_holds_no_permission_to_delete_a_key():
    # Migrations make the role; keys are revoked, never deleted, so the role's list says so.
    admin_role = Group.objects.get(name="admin")
    held = set(admin_role.permissions.filter(content_type__model="apitoken")
               .values_list("codename", flat=True))
    assert held == {"add_apitoken", "view_apitoken"}


@pytest.mark.parametrize("role", ["superuser", "admin"])
def test_an_api_key_is_revoked_never_deleted(client, lis, django_user_model, role):
    token, key = create_token(lis, "LIS")
    if role == "superuser":
        client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    else:
        client.force_login(with_role(django_user_model.objects.create_user("lead", is_staff=True), "admin"))
    changelist = reverse("admin:webapp_apitoken_changelist")

    page = client.get(changelist).content.decode()
    assert 'value="revoke"' in page and 'value="delete_selected"' not in page
    client.post(changelist, {"action": "delete_selected", "_selected_action": [token.pk], "post": "yes"})
    shown = client.get(reverse("admin:webapp_apitoken_change", args=[token.pk])).content.decode()
    assert "deletelink" not in shown
    delete = reverse("admin:webapp_apitoken_delete", args=[token.pk])
    assert client.get(delete).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).exists()
    # Revoking is how a key is stopped; it stays listed, with the date.
    revoke_in_the_admin(client, token)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert "LIS" in client.get(changelist).content.decode()


def test_an_account_with_api_keys_is_made_inactive_not_deleted(client, lis, django_user_model):
    token, key = create_token(lis, "LIS")
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    delete = reverse("admin:auth_user_delete", args=[lis.pk])

    asked = client.get(delete)
    page = asked.content.decode()
    assert asked.context["protected"] == ["API key: LIS (lis)"] and not asked.context["perms_lacking"]
    assert "API keys stay on record" in page and 'untick "Active"' in page.replace("&quot;", '"')
    client.post(delete, {"post": "yes"})
    assert django_user_model.objects.filter(pk=lis.pk).exists()
    assert ApiToken.objects.filter(pk=token.pk).exists()
    # The account made inactive, its key reads nothing.
    lis.is_active = False
    lis.save()
    client.logout()
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401


def test_a_key_is_for_an_account_without_a_role_and_stops_when_one_is_given(client, lis, django_user_model):
    # The security audit: `api_token create hema` made a key for a hematologist's account, and a
    # program's key kept working after its account was given a role or staff status.
    hema = with_role(django_user_model.objects.create_user("hema"), "hematologist")
    with pytest.raises(CommandError, match=r"hema has a role \(hematologist\)"):
        call_command("api_token", "create", "hema", "--name", "x")
    assert not ApiToken.objects.filter(user=hema).exists()
    _, key = create_token(lis, "LIS")
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 200
    with_role(lis, "technologist")
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401
    lis.groups.clear()
    lis.is_staff = True
    lis.save()
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401


def test_a_key_reads_a_samples_csv_from_the_api(client, lis):
    sample = make_sample("K-0003", types=("NEUTROPHIL", "LYMPHOCYTE"))
    _, key = create_token(lis, "LIS")
    answer = client.get(reverse("lab:api-sample-export", args=[sample.pk]), **bearer(key))
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    assert answer["Content-Disposition"] == 'attachment; filename="leukoscope-K-0003.csv"'
    page_copy = client.get(reverse("lab:sample-export", args=[sample.pk]), **bearer(key))
    assert page_copy.status_code == 302  # the page's own export is the signed-in user's
    assert b"accession_number,K-0003" in answer.content
    missing = client.get(reverse("lab:api-sample-export", args=[999999]), **bearer(key))
    assert missing.status_code == 404 and "error" in missing.json()
    assert client.get(reverse("lab:api-sample-export", args=[sample.pk])).status_code == 401



def test_a_key_stopped_by_its_accounts_change_stays_revoked_when_the_change_is_undone(
        client, lis, django_user_model):
    """The security audit: an administrator who made the account inactive, or gave it a role, to
    stop a leaked key saw the key answer 200 again once the account was made active again, or its
    role taken away: the key's state was read afresh at each request, and nothing revoked it."""
    from tests.webapp.test_admin import _change_account

    url = reverse("lab:api-samples")
    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase-8")
    client.force_login(root)
    token, key = create_token(lis, "LIS")
    # In the admin: untick Active, then tick it again.
    assert _change_account(client, lis, is_active=None).status_code == 302
    lis.refresh_from_db()
    assert not lis.is_active
    assert _change_account(client, lis, is_active="on").status_code == 302
    lis.refresh_from_db()
    assert lis.is_active
    client.logout()
    assert client.get(url, **bearer(key)).status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is not None
    # The audit trail says why, and who: the administrator whose request made the change.
    row = LogEntry.objects.get(content_type__model="apitoken", object_pk=str(token.pk),
                               action=LogEntry.Action.UPDATE)
    assert row.actor == root and "lis is not active" in row.additional_data["note"]
    # The key says the same (the audit: only the trail did).
    assert (token.revoked_by, token.revoke_reason) == (root, row.additional_data["note"])
    assert ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).count() == 0

    # A role given and taken away, in a shell: the key stays revoked.
    _, key = create_token(lis, "LIS again")
    lis.groups.add(Group.objects.get(name="technologist"))
    lis.groups.clear()
    assert client.get(url, **bearer(key)).status_code == 401
    # The same from the group's side.
    _, key = create_token(lis, "third")
    Group.objects.get(name="technologist").user_set.add(lis)
    lis.groups.clear()
    assert client.get(url, **bearer(key)).status_code == 401
    # Staff or superuser status, given and taken away.
    for flag in ("is_staff", "is_superuser"):
        _, key = create_token(lis, flag)
        setattr(lis, flag, True)
        lis.save()
        setattr(lis, flag, False)
        lis.save()
        assert client.get(url, **bearer(key)).status_code == 401, flag
    assert not ApiToken.objects.filter(user=lis, revoked_at__isnull=True).exists()
    # A sign-in writes only its time: the keys of an account that may hold them are left alone.
    _, key = create_token(lis, "kept")
    client.force_login(lis)
    client.logout()
    assert client.get(url, **bearer(key)).status_code == 200


def test_a_permission_given_to_a_keys_account_alone_revokes_the_key(client, lis):
    """The security audit: an account given webapp.sign_sample by itself, no role, kept its key:
    the checks read roles and staff status, never the account's own permissions."""
    from django.contrib.auth.models import Permission

    sign = Permission.objects.get(content_type__app_label="webapp", codename="sign_sample")
    token, key = create_token(lis, "LIS")
    lis.user_permissions.add(sign)
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is not None
    with pytest.raises(CommandError, match=r"lis holds permissions of its own \(webapp.sign_sample\)"):
        call_command("api_token", "create", "lis", "--name", "x")
    # Given by a bulk write that sends no signal, the permission still stops the key.
    lis.user_permissions.clear()
    _, key = create_token(lis, "LIS again")
    type(lis).user_permissions.through.objects.bulk_create(
        [type(lis).user_permissions.through(user=lis, permission=sign)])
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401


def test_a_key_revoked_in_the_admin_names_who_revoked_it(client, lis, django_user_model):
    from django.contrib.admin.models import CHANGE
    from django.contrib.admin.models import LogEntry as AdminLogEntry

    token, _ = create_token(lis, "LIS")
    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase-8")
    client.force_login(root)
    changelist = reverse("admin:webapp_apitoken_changelist")

    revoke_in_the_admin(client, token)
    # Again: a key already revoked is not revoked, nor recorded, twice.
    revoke_in_the_admin(client, token)

    history = AdminLogEntry.objects.filter(object_id=str(token.pk), content_type__model="apitoken")
    assert [(entry.user, entry.action_flag) for entry in history] == [(root, CHANGE)]
    trail = LogEntry.objects.get(content_type__model="apitoken", object_pk=str(token.pk),
                                 action=LogEntry.Action.UPDATE)
    assert trail.actor == root and trail.additional_data["note"] == "Revoked in the admin: LIS replaced"
    # The key says the same, on its page and in the list (the audit: only the trail did).
    token.refresh_from_db()
    assert (token.revoked_by, token.revoke_reason) == (root, "Revoked in the admin: LIS replaced")
    page = client.get(reverse("admin:webapp_apitoken_change", args=[token.pk])).content.decode()
    assert re.search(r'<div class="readonly">\s*root\s*</div>', page)
    assert re.search(r'<div class="readonly">\s*Revoked in the admin: LIS replaced\s*</div>', page)
    listing = client.get(changelist).content.decode()
    assert '<td class="field-revoked_by_shown">root</td>' in listing
    history_page = client.get(reverse("admin:webapp_apitoken_history", args=[token.pk]))
    assert "Revoked." in history_page.content.decode()
    # The revoker is on record: the account is made inactive, not deleted.
    assert accounts_on_record([root.pk]) == {root.pk: "named in the audit trail"}
    # The trail and the admin's history flushed: the key still names it.
    LogEntry.objects.filter(actor=root).update(actor=None)
    AdminLogEntry.objects.filter(user=root).delete()
    assert accounts_on_record([root.pk]) == {root.pk: "named as who revoked an API key"}


def shown_messages(response):
    return [str(message) for message in response.context["messages"]]


def test_the_admin_asks_why_before_it_revokes_a_key_and_keeps_the_reason(client, lis, django_user_model):
    # Review: the admin's "Revoke" took no reason, and every key revoked there read "Revoked in the
    # admin.", where the command kept the --reason it was given.
    token, key = create_token(lis, "LIS")
    spare, _ = create_token(lis, "spare")
    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase-8")
    client.force_login(root)
    changelist = reverse("admin:webapp_apitoken_changelist")

    # The list's action leads to a page that asks why, and revokes nothing yet.
    asked = client.post(changelist, {"action": "revoke", "_selected_action": [token.pk, spare.pk],
                                     "index": 0})
    page = asked.content.decode()
    assert asked.status_code == 200
    assert asked.templates[0].name == "admin/webapp/apitoken/revoke_confirmation.html"
    assert re.search(r'<div class="breadcrumbs">.*?API keys</a>\s*&rsaquo; Revoke\s*</div>', page, re.S)
    assert 'name="reason"' in page and 'maxlength="500"' in page and 'name="post" value="yes"' in page
    carried = re.findall(r'name="_selected_action" value="(\d+)"', page)
    assert sorted(carried) == sorted([str(token.pk), str(spare.pk)])
    assert 'class="errornote"' not in page
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()

    # Sent without a reason, or with spaces alone: the page again, saying so; nothing revoked.
    for reason in ("", "  \n\t "):
        again = revoke_in_the_admin(client, token, spare, reason=reason)
        assert again.status_code == 200
        assert "Give a reason: it is kept with each key revoked" in again.content.decode()
        assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()
    too_long = revoke_in_the_admin(client, token, reason="x" * 501)
    assert too_long.status_code == 200 and "at most 500 characters" in too_long.content.decode()
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()

    done = revoke_in_the_admin(client, token, spare, reason=" sent by\n e-mail ", follow=True)

    because = "Revoked in the admin: sent by e-mail"
    assert shown_messages(done) == ["2 API keys revoked."]
    for revoked in (token, spare):
        revoked.refresh_from_db()
        assert revoked.revoked_at is not None
        assert (revoked.revoked_by, revoked.revoke_reason) == (root, because)
        row = LogEntry.objects.get(content_type__model="apitoken", object_pk=str(revoked.pk),
                                   action=LogEntry.Action.UPDATE)
        assert row.actor == root and row.additional_data["note"] == because
    client.logout()
    assert client.get(reverse("lab:api-samples"), **bearer(key)).status_code == 401


def test_the_admin_leaves_a_key_revoked_already_as_it_is_and_says_how_many_it_revoked(
        client, lis, django_user_model):
    earlier, _ = create_token(lis, "earlier")
    call_command("api_token", "revoke", str(earlier.pk), "--reason", "lost")
    earlier.refresh_from_db()
    before = (earlier.revoked_at, earlier.revoked_by, earlier.revoke_reason)
    token, _ = create_token(lis, "LIS")
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    changelist = reverse("admin:webapp_apitoken_changelist")

    asked = client.post(changelist, {"action": "revoke", "_selected_action": [earlier.pk, token.pk],
                                     "index": 0})
    assert "This key will be revoked with the reason you give" in asked.content.decode()
    assert "left as it is" in asked.content.decode()
    done = revoke_in_the_admin(client, earlier, token, follow=True)

    assert shown_messages(done) == ["1 API key revoked. 1 other was revoked already and left as it was."]
    earlier.refresh_from_db()
    assert (earlier.revoked_at, earlier.revoked_by, earlier.revoke_reason) == before
    assert LogEntry.objects.filter(content_type__model="apitoken", object_pk=str(earlier.pk),
                                   action=LogEntry.Action.UPDATE).count() == 1
    # Every key chosen revoked already: nothing to ask.
    nothing = client.post(changelist, {"action": "revoke", "_selected_action": [earlier.pk], "index": 0},
                          follow=True)
    assert shown_messages(nothing) == ["The selected API keys are revoked already: nothing was changed."]


def test_only_who_could_revoke_a_key_before_reaches_the_page_that_asks_why(client, lis, django_user_model):
    token, _ = create_token(lis, "LIS")
    changelist = reverse("admin:webapp_apitoken_changelist")
    asking = {"action": "revoke", "_selected_action": [token.pk], "index": 0}

    # Not signed in, or signed in without staff status: a sign-in page, nothing said.
    for account in (None, django_user_model.objects.create_user("tech", password="a-long-passphrase-7")):
        client.logout()
        if account:
            client.force_login(account)
        for data in (asking, {**asking, "post": "yes", "reason": "LIS replaced"}):
            refused = client.post(changelist, data)
            assert refused.status_code == 302 and "/login/" in refused["Location"]
            assert "LIS" not in refused.content.decode()
    # Staff without the admin role's permission over keys: 403, nothing shown.
    client.force_login(django_user_model.objects.create_user("clerk", is_staff=True))
    for data in (asking, {**asking, "post": "yes", "reason": "LIS replaced"}):
        refused = client.post(changelist, data)
        assert refused.status_code == 403 and "LIS" not in refused.content.decode()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    # The admin role revokes, as before.
    lead = with_role(django_user_model.objects.create_user("lead", is_staff=True), "admin")
    client.force_login(lead)
    assert "LIS" in client.post(changelist, asking).content.decode()
    revoke_in_the_admin(client, token)
    token.refresh_from_db()
    assert (token.revoked_by, token.revoke_reason) == (lead, "Revoked in the admin: LIS replaced")


def test_staff_who_may_only_view_api_keys_cannot_revoke_them(client, lis, django_user_model):
    """An auditor's single "view API key" permission (which a superuser may give) opened the list,
    and with it the Revoke action, which Django's admin offers to whoever sees the list unless the
    action names a permission."""
    from django.contrib.auth.models import Permission

    token, _ = create_token(lis, "LIS")
    auditor = django_user_model.objects.create_user("auditor", is_staff=True)
    auditor.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    client.force_login(auditor)
    changelist = reverse("admin:webapp_apitoken_changelist")

    listed = client.get(changelist)
    assert listed.status_code == 200 and "LIS" in listed.content.decode()
    assert 'value="revoke"' not in listed.content.decode()
    asked = client.post(changelist, {"action": "revoke", "_selected_action": [token.pk], "index": 0})
    assert "Revoke API keys" not in asked.content.decode()
    revoke_in_the_admin(client, token)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_the_audit_trail_lists_the_rows_about_api_keys_alone(client, lis, django_user_model):
    """The audit: the trail's record-type filter offered the models auditlog watches, and API keys'
    rows, written by hand, could not be listed apart."""
    from django.contrib.contenttypes.models import ContentType

    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase-8")
    client.force_login(root)
    token, _ = create_token(lis, "LIS")
    revoke_in_the_admin(client, token)
    make_sample()  # rows about other records, which the filter leaves out
    trail = reverse("admin:auditlog_logentry_changelist")
    keys = ContentType.objects.get_for_model(ApiToken)

    page = client.get(trail).content.decode()
    assert f'href="?resource_type={keys.pk}">apitoken</a>' in page
    listed = client.get(trail, {"resource_type": keys.pk}).context["cl"].result_list
    assert listed and {entry.content_type_id for entry in listed} == {keys.pk}
    assert {entry.object_pk for entry in listed} == {str(token.pk)}


def test_a_key_stopped_by_a_bulk_update_is_revoked_on_its_next_use_or_by_the_reconciler(client, lis,
                                                                                        django_user_model):
    """The audit: ``User.objects.update(is_active=False)`` sends no signal, so the account's keys were
    refused while it lasted but never revoked, and worked again once a second bulk update undid it."""
    from webapp.services.reconciler import reconcile_work

    url = reverse("lab:api-samples")
    used, used_key = create_token(lis, "used")
    swept, swept_key = create_token(lis, "swept")
    other = django_user_model.objects.create_user("lis2")
    kept, kept_key = create_token(other, "kept")
    django_user_model.objects.filter(pk=lis.pk).update(is_active=False)

    assert client.get(url, **bearer(used_key)).status_code == 401
    used.refresh_from_db()
    because = ("Revoked for good as its account changed, by a change made outside the admin that did not "
               "revoke it then (a bulk update, a restored backup): lis is not active.")
    assert used.revoked_at is not None and (used.revoked_by, used.revoke_reason) == (None, because)
    row = LogEntry.objects.get(content_type__model="apitoken", object_pk=str(used.pk),
                               action=LogEntry.Action.UPDATE)
    assert row.additional_data["note"] == because
    swept.refresh_from_db()
    assert swept.revoked_at is None  # another key's use revokes only itself

    assert reconcile_work().keys_revoked == 1
    swept.refresh_from_db()
    assert (swept.revoked_at is not None, swept.revoke_reason) == (True, because)
    assert reconcile_work().keys_revoked == 0, "revoked once"

    django_user_model.objects.filter(pk=lis.pk).update(is_active=True)
    assert client.get(url, **bearer(used_key)).status_code == 401
    assert client.get(url, **bearer(swept_key)).status_code == 401
    assert client.get(url, **bearer(kept_key)).status_code == 200
    kept.refresh_from_db()
    assert kept.revoked_at is None


def test_the_key_list_says_unknown_only_where_nothing_says_who_revoked_a_key(client, lis, django_user_model):
    # Review: every key the sweep, a key's use or a command revoked was listed as revoked by
    # "unknown", as if nobody could say, though its reason names what revoked it.
    from webapp.services.reconciler import reconcile_work

    swept, _ = create_token(lis, "swept")
    unrecorded, _ = create_token(django_user_model.objects.create_user("lis2"), "before 0031")
    django_user_model.objects.filter(pk=lis.pk).update(is_active=False)
    assert reconcile_work().keys_revoked == 1
    # As migration 0030 revoked a key: no row, so no one and no reason to copy onto it.
    ApiToken.objects.filter(pk=unrecorded.pk).update(revoked_at=timezone.now())

    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-passphrase-8"))
    keys = client.get(reverse("admin:webapp_apitoken_changelist")).content.decode()
    shown = dict(re.findall(r'<a href="[^"]*/(\d+)/change/">\d+</a>.*?field-revoked_by_shown">([^<]*)<', keys,
                            re.S))
    assert shown == {str(swept.pk): "no account (see the reason)", str(unrecorded.pk): "unknown"}
