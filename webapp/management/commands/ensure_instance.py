"""Make what an installation keeps on disk under LEUKOSCOPE_VAR_DIR: the folder of the embedded
database, the media folder, and a secret key of its own. `make setup` runs it before migrating;
it changes nothing that is already there."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Make the instance's folders (var/, media) and its secret key where they are missing."
    # The one warning the checks would give before this has run is the one it resolves.
    requires_system_checks = []

    def handle(self, *args, **options):
        for folder in (settings.VAR_DIR, Path(settings.MEDIA_ROOT)):
            folder.mkdir(parents=True, exist_ok=True)
        key_file = Path(settings.SECRET_KEY_FILE)
        if os.environ.get("LEUKOSCOPE_SECRET_KEY") or key_file.exists():
            return
        try:
            # Readable by its owner alone, and never written over a key another setup just wrote.
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        self.stdout.write(f"Secret key written to {key_file}.")
