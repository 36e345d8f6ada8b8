from django.apps import AppConfig

from webapp import deploy_checks  # noqa: F401  (registers the system checks)


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Leukoscope"
    default_auto_field = "django.db.models.BigAutoField"
