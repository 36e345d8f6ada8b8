from django.core.management.base import BaseCommand, CommandError

from webapp.models import ModelVersion
from webapp.services.model_versions import ModelVersionError, ensure_default_model


class Command(BaseCommand):
    help = "Register the bundled classification models (once) and activate the default if none is active."

    def handle(self, *args, **options):
        try:
            registered = ensure_default_model()
        except ModelVersionError as exc:
            raise CommandError(str(exc)) from None
        for version, created in registered:
            if created:
                self.stdout.write(f"Registered bundled model {version}.")
        active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
        if active:
            self.stdout.write(f"Active model: {active}.")
        else:
            self.stderr.write(self.style.WARNING(
                "No model version is active: train one with `manage.py train --activate`."))
