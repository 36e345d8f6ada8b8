"""Ending a sign-in left unused. Lab workstations are shared, and what is reviewed or signed at one
is recorded under the name signed in there: a sign-in that lasted a whole shift however long the
screen stood unattended let the next person at it work under the first one's name.

A sign-in ends once settings.IDLE_SIGN_OUT_SECONDS pass without a person's action: a page opened, a
form sent, or a key, click or touch on a page (static/js/idle.js tells the site of those, and takes
the page to the login page once the time is out, so no results stay on an unattended screen). A
page's own polls (a sample's progress, a training's) are nobody's action: they carry
BACKGROUND_HEADER and leave the clock as it is, or a page left open would never be signed out.
However busy, a sign-in still ends settings.SESSION_COOKIE_AGE after it began (one long shift).
"""

import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import SESSION_KEY, logout
from django.utils import timezone

# In the session: when a person last acted (seconds since the epoch).
LAST_ACTIVITY = "last_activity"
# Left in the session that follows an idle sign-out, for the login page to say why.
SIGNED_OUT_IDLE = "signed_out_idle"
# What a page's script sends with a request no person made (a poll).
BACKGROUND_HEADER = "X-Leukoscope-Background"


def activity_resolution():
    """How stale the recorded last action may grow before a new one is written: the session is a
    database row, written at most once a minute rather than at every click, or a quarter of the
    limit where that is shorter."""
    return min(60.0, settings.IDLE_SIGN_OUT_SECONDS / 4)


def is_background(request):
    return BACKGROUND_HEADER in request.headers


def seconds_left(session, now):
    """How long the sign-in in ``session`` may stay unused from ``now`` before it ends."""
    last = session.get(LAST_ACTIVITY, now)
    return max(0.0, settings.IDLE_SIGN_OUT_SECONDS - (now - last))


def start(session):
    """At a sign-in: its clock starts, and its end after SESSION_COOKIE_AGE is fixed, which the
    recorded actions would otherwise push back at each write of the session."""
    session[LAST_ACTIVITY] = time.time()
    session.set_expiry(timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE))


def on_sign_in(sender, request, user, **kwargs):
    """django.contrib.auth's user_logged_in signal, which every sign-in sends (the site's login
    page, the admin's): the one that ended unused is forgotten, as Django keeps a signed-out
    session's keys through a sign-in (cycle_key), and one that later ended otherwise would be said
    to have ended unused."""
    if request is not None and hasattr(request, "session"):
        request.session.pop(SIGNED_OUT_IDLE, None)
        start(request.session)


def sign_out_if_idle(request):
    """Ends the request's sign-in where it went unused too long (True), and otherwise records the
    request as a person's action unless it is a background one. A program's API key holds no
    sign-in, so its requests are left alone."""
    session = request.session
    if SESSION_KEY not in session:
        return False
    now = time.time()
    if seconds_left(session, now) <= 0:
        logout(request)
        request.session[SIGNED_OUT_IDLE] = True
        return True
    last = session.get(LAST_ACTIVITY)
    if not is_background(request) and (last is None or now - last >= activity_resolution()):
        session[LAST_ACTIVITY] = now
    return False


def was_signed_out_idle(request):
    """Whether the sign-in before this request ended unused; said until the next sign-in
    (on_sign_in), not once: the page left open reloads from two scripts at once (its
    idle clock and its poll's 401), and a first load that the second aborted took the words along."""
    return bool(request.session.get(SIGNED_OUT_IDLE, False))


def minutes():
    """The limit as the pages word it: "30", or "0.5" where set below a minute."""
    return f"{settings.IDLE_SIGN_OUT_SECONDS / 60:g}"
