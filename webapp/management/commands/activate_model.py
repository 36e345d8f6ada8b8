from django.core.management.base import BaseCommand, CommandError

from webapp.models import ModelVersion
from webapp.presenters.models import activation_warning
from webapp.services.model_versions import ModelVersionError, activate_version


class Command(BaseCommand):
    help = "Make a ready model version the one that classifies new images (workers switch without restart)."

    def add_arguments(self, parser):
        parser.add_argument("version", type=int)

    def handle(self, *args, version, **options):
        try:
            model_version = ModelVersion.objects.defer("model_bytes").get(pk=version)
        except ModelVersion.DoesNotExist:
            raise CommandError(f"There is no model version {version}.") from None
        if model_version.is_active:
            self.stdout.write(f"v{version} is already the active model.")
            return
        try:
            activate_version(model_version, user=None)
        except ModelVersionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"v{version} is now the active model."))
        # What the site's confirmation and page say of such a version (the model audit: the command
        # activated a chance-level one without a word).
        warning = activation_warning(model_version)
        if warning:
            self.stderr.write(self.style.WARNING(f"Warning: {warning} Activate another version to stop it."))
