"""System checks: a warning on every start without a kept secret key, and what `manage.py check
--deploy` refuses because it would break a deployment of several machines."""

import os

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def secret_key_is_shared(app_configs, **kwargs):
    """Behind the HTTPS proxy (LEUKOSCOPE_SECURE=1) the key must come from the environment: a key
    generated into var/ differs on each machine, so a session signed by one web server is refused
    by the next and every upload form fails its CSRF check there."""
    if not settings.SECURE or os.environ.get("LEUKOSCOPE_SECRET_KEY"):
        return []
    return [checks.Error(
        "LEUKOSCOPE_SECURE=1 with a secret key generated on this machine, not LEUKOSCOPE_SECRET_KEY.",
        hint="Set the same LEUKOSCOPE_SECRET_KEY on every web and worker machine "
             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))').",
        id="leukoscope.E002",
    )]


@checks.register()
def secret_key_is_kept(app_configs, **kwargs):
    """Sessions outlive a restart, and several web workers accept one another's, only with a kept key."""
    if settings.SECRET_KEY_KEPT:
        return []
    return [checks.Warning(
        f"No kept secret key: LEUKOSCOPE_SECRET_KEY is unset and {settings.SECRET_KEY_FILE} could not be "
        "read or written, so each process signs sessions with a key of its own.",
        hint="Make LEUKOSCOPE_VAR_DIR a folder this user can write (`manage.py ensure_instance` says "
             "why it cannot), or set LEUKOSCOPE_SECRET_KEY.",
        id="leukoscope.W001",
    )]


@checks.register(checks.Tags.security, deploy=True)
def sign_in_lockout_sees_clients(app_configs, **kwargs):
    """Behind the HTTPS proxy every sign-in comes from the proxy's address: without
    LEUKOSCOPE_PROXY_COUNT, five wrong passwords typed for a name lock that account for everyone."""
    if not settings.SECURE or settings.PROXY_COUNT:
        return []
    return [checks.Warning(
        "LEUKOSCOPE_SECURE=1 behind a proxy, but LEUKOSCOPE_PROXY_COUNT is 0: the sign-in lockout "
        "counts every attempt as the proxy's, so anyone can lock a colleague's account by typing "
        "wrong passwords for it.",
        hint="Have the proxy append the client's address (nginx: proxy_set_header X-Forwarded-For "
             "$proxy_add_x_forwarded_for;) and set LEUKOSCOPE_PROXY_COUNT=1 (the number of such proxies).",
        id="leukoscope.W002",
    )]
