from django.apps import AppConfig


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Leukoscope"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from webapp import deploy_checks  # noqa: F401  (registers the checks)
