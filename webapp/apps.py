from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in

from webapp import (
    deploy_checks,  # noqa: F401  (registers the system checks)
    idle_sign_out,
)


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Leukoscope"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        user_logged_in.connect(idle_sign_out.on_sign_in, dispatch_uid="webapp.idle_sign_out")
