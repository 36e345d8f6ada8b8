from django.core.management.base import BaseCommand, CommandError

from webapp.management.commands._activation import activate_unless_warned
from webapp.models import ModelVersion


class Command(BaseCommand):
    help = "Make a ready model version the one that classifies new images (workers switch without restart)."

    def add_arguments(self, parser):
        parser.add_argument("version", type=int)
        parser.add_argument("--force", action="store_true",
                            help="activate a version the site warns of (no better than guessing, measured "
                                 "on nothing, worse than the version it was adapted from)")

    def handle(self, *args, version, force, **options):
        try:
            model_version = ModelVersion.objects.defer("model_bytes").get(pk=version)
        except ModelVersion.DoesNotExist:
            raise CommandError(f"There is no model version {version}.") from None
        if model_version.is_active:
            self.stdout.write(f"v{version} is already the active model.")
            return
        activate_unless_warned(self, model_version, force)
