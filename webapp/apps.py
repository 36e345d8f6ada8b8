from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Leukoscope"
    default_auto_field = "django.db.models.BigAutoField"


@checks.register()
def secret_key_is_kept(app_configs, **kwargs):
    """Sessions outlive a restart, and several web workers accept one another's, only with a kept key."""
    if settings.SECRET_KEY_KEPT:
        return []
    return [checks.Warning(
        f"No secret key: neither LEUKOSCOPE_SECRET_KEY nor {settings.SECRET_KEY_FILE} is set, so each "
        "process signs sessions with a key of its own.",
        hint="Run `make setup` (manage.py ensure_instance), or set LEUKOSCOPE_SECRET_KEY.",
        id="leukoscope.W001",
    )]
