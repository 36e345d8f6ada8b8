"""API keys for programs: made and revoked by an administrator (the Django admin's API keys, or
manage.py api_token), checked on each API request that carries one
(webapp.middleware.ApiTokenMiddleware).

A key is 256 random bits, so its plain SHA-256 identifies it without a slow password hash, and the
database never holds a key that would open the API.

A key is revoked for good, never merely paused, when its account is made inactive or given a role,
staff or superuser status or a permission of its own (revoke_keys_of_refused_account, on every change
of an account: webapp.apps connects it): an administrator who made the account inactive to stop a
leaked key must not see the key work again when the account is made active again.
"""

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from webapp import audit
from webapp.models import ApiToken

# A key's last use is written at most this often: a program polling every few seconds must not
# turn every read into a write.
LAST_USED_EVERY = timedelta(minutes=1)


class ApiTokenError(Exception):
    """The key cannot be made or revoked; the message says why."""


class FormAlreadySent(ApiTokenError):
    """The form that asks for a key was sent before and made ``token``; this send makes none."""

    def __init__(self, token):
        super().__init__(f"This form was sent before: it made API key {token.pk}, and makes no other.")
        self.token = token


def _digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def refusal(user):
    """Why ``user`` may not have a key, or None."""
    if not user.is_active:
        return f"{user.get_username()} is not active."
    if user.is_staff or user.is_superuser:
        return (f"{user.get_username()} is a staff account: give the program an account of its own, "
                "without a role (it then reads results and changes nothing).")
    if roles := ", ".join(user.groups.order_by("name").values_list("name", flat=True)):
        return (f"{user.get_username()} has a role ({roles}): a key stands for a program, not a person; "
                "give the program an account of its own, without a role.")
    # A permission given to the account alone (webapp.sign_sample, say) makes it more than a reader
    # as surely as a role does.
    held = user.user_permissions.order_by("content_type__app_label", "codename")
    if permissions := ", ".join(f"{app}.{codename}" for app, codename
                                in held.values_list("content_type__app_label", "codename")):
        return (f"{user.get_username()} holds permissions of its own ({permissions}): a key stands for a "
                "program that only reads; give the program an account of its own, without any.")
    return None


def create_token(user, name, form_token=None, how="", by=None, by_words=""):
    """(ApiToken, key) for ``user``; the key is not kept and cannot be shown again. A ``form_token``
    makes one key at most: a second call with it raises FormAlreadySent, which the database's unique
    constraint enforces for two calls at once. The key's audit row says ``how`` it was made and who
    made it: ``by``, else the request's signed-in account, else ``by_words``
    (audit.command_line_actor)."""
    if reason := refusal(user):
        raise ApiTokenError(reason)
    name = name.strip()
    longest = ApiToken._meta.get_field("name").max_length
    if not name:
        # The lists (the admin's, `api_token list`) say by it which program a key is for.
        raise ApiTokenError("Give the key a name: what uses it, e.g. 'LIS'.")
    if len(name) > longest:
        raise ApiTokenError(f"A key's name is at most {longest} characters, not {len(name)}.")
    key = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user, name=name, key_sha256=_digest(key), made_by_form=form_token)
            _record(token, "create", {"user": (None, user.get_username()), "name": (None, name)},
                    by, how, by_words)
    except IntegrityError:
        earlier = form_token and ApiToken.objects.filter(made_by_form=form_token).first()
        if not earlier:
            raise
        raise FormAlreadySent(earlier) from None
    return token, key


def is_key_of(token, key):
    """Whether ``key`` is the one ``token`` was made with."""
    return secrets.compare_digest(_digest(key), token.key_sha256)


def _record(token, action, changes, by, note, by_words):
    """The key's audit row; its actor ``by``, else the request's signed-in account (auditlog's
    middleware), else none, said in ``by_words`` where a command knows who ran it."""
    said = {"who": by_words} if by_words else {}
    return audit.record(token, action, changes, actor=by, note=note, **said)


def revoke_tokens(tokens, because, by=None, by_words=""):
    """Revoke those of ``tokens`` (a queryset) still in force, each with a row in the audit trail
    saying ``because`` and who: ``by``, or where None the request's signed-in account (auditlog's
    middleware), or no account (a shell, a command: ``by_words`` says who ran it). The key keeps
    the same: who (``revoked_by``, the row's actor) and why. A revoked key keeps its first date.
    Returns the keys revoked."""
    revoked = []
    for token in tokens.filter(revoked_at__isnull=True):
        now = timezone.now()
        by_account = by if by is not None and by.is_authenticated else None
        with transaction.atomic():
            # Conditional: of two revocations of one key at once, one revokes it and writes its row.
            if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
                    revoked_at=now, revoked_by=by_account, revoke_reason=because):
                continue
            row = _record(token, "update", {"revoked_at": (None, now)}, by, because, by_words)
            if by_account is None and row.actor_id is not None:
                # Changed by a request (the admin's account page): the account it was made by, as
                # auditlog's middleware found it for the row.
                ApiToken.objects.filter(pk=token.pk).update(revoked_by=row.actor_id)
        token.revoked_at, token.revoked_by_id, token.revoke_reason = now, row.actor_id, because
        revoked.append(token)
    return revoked


def revoke_token(token_id, because, by=None, by_words=""):
    token = ApiToken.objects.select_related("user").filter(pk=token_id).first()
    if token is None:
        raise ApiTokenError(f"There is no API key {token_id}.")
    revoke_tokens(ApiToken.objects.filter(pk=token.pk), because, by=by, by_words=by_words)
    token.refresh_from_db(fields=["revoked_at", "revoked_by", "revoke_reason"])
    return token


def revoke_keys_of_refused_account(user):
    """Revoke for good the keys of ``user`` in force, where the account may no longer hold one
    (refusal). Returns the keys revoked."""
    in_force = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    # Most accounts hold no key: one query, and no reading of roles and permissions, on their saves.
    if not in_force.exists() or (reason := refusal(user)) is None:
        return []
    return revoke_tokens(in_force, f"Revoked for good as its account changed: {reason}")


# Accounts refusal refuses, in one query: what user_for_key reads in the negative.
_REFUSED_ACCOUNT = (Q(user__is_active=False) | Q(user__is_staff=True) | Q(user__is_superuser=True)
                    | Q(user__groups__isnull=False) | Q(user__user_permissions__isnull=False))


def revoke_stopped_keys(tokens=None):
    """Revoke for good the keys in force (of ``tokens``, else all) whose account may no longer hold
    one though nothing revoked them: a bulk update (``User.objects.update(is_active=False)``), a
    raw query or a restored backup sends no signal. Such a key is refused at once all the same
    (user_for_key); this makes that refusal last, as a signal's revocation does, when the change is
    undone. Called on the key's next use and by the reconciler's sweep. Returns the keys revoked."""
    in_force = ApiToken.objects.filter(revoked_at__isnull=True) if tokens is None else tokens
    # By id: the joins on roles and permissions would repeat a key once per role.
    stopped = in_force.filter(_REFUSED_ACCOUNT, revoked_at__isnull=True).values("pk")
    revoked = []
    for token in ApiToken.objects.filter(pk__in=stopped).select_related("user"):
        if reason := refusal(token.user):
            because = (f"Revoked for good as its account changed, by a change made outside the admin that "
                       f"did not revoke it then (a bulk update, a restored backup): {reason}")
            revoked += revoke_tokens(ApiToken.objects.filter(pk=token.pk), because)
    return revoked


# What an account's save can change that refusal reads. A save of other fields alone (the last
# sign-in's time, written at each sign-in) is passed over.
_REFUSAL_FIELDS = {"is_active", "is_staff", "is_superuser"}


def on_account_saved(sender, instance, raw=False, update_fields=None, **kwargs):
    """post_save of the user model: the admin's account page, a command, a shell."""
    if raw or (update_fields is not None and not _REFUSAL_FIELDS & set(update_fields)):
        return
    revoke_keys_of_refused_account(instance)


def on_account_given(sender, instance, action, reverse, pk_set, **kwargs):
    """m2m_changed of an account's groups and permissions, from either side: ``account.groups.add``
    or ``group.user_set.add``."""
    if action != "post_add" or not pk_set:
        return
    for user in get_user_model().objects.filter(pk__in=pk_set) if reverse else [instance]:
        revoke_keys_of_refused_account(user)


def token_state(token):
    """Whether a key works, in the words its list shows: "active", "revoked <when>", or "stopped"
    with why, where its account was changed by a bulk update, which sends no signal to revoke the
    key (the key then answers 401, and its next use or the reconciler revokes it: revoke_stopped_keys)."""
    if token.revoked_at:
        return f"revoked {token.revoked_at.isoformat(timespec='seconds')}"
    if why := refusal(token.user):
        return f"stopped: {why}"
    return "active"


def user_for_key(key):
    """The active account a key that is not revoked belongs to, else None; also None where the
    account may not hold a key (refusal) though the key was not revoked (a bulk update)."""
    token = (ApiToken.objects.select_related("user")
             .filter(key_sha256=_digest(key), revoked_at__isnull=True, user__is_active=True,
                     user__is_staff=False, user__is_superuser=False, user__groups__isnull=True,
                     user__user_permissions__isnull=True).first())
    if token is None:
        revoke_stopped_keys(ApiToken.objects.filter(key_sha256=_digest(key)))
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
