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
