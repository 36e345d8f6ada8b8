"""Make what an installation keeps on disk under LEUKOSCOPE_VAR_DIR: the folder of the embedded
database, the media folder, and a secret key of its own. `make setup` runs it before migrating;
it changes nothing that is already there."""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.configuration import kept_secret_key


class Command(BaseCommand):
    help = "Make the instance's folders (var/, media) and its secret key where they are missing."
    # The one warning the checks would give before this has run is the one it resolves.
    requires_system_checks = []

    def handle(self, *args, **options):
        media = "LEUKOSCOPE_MEDIA_ROOT" if "LEUKOSCOPE_MEDIA_ROOT" in os.environ else "LEUKOSCOPE_VAR_DIR"
        for folder, setting in ((Path(settings.VAR_DIR), "LEUKOSCOPE_VAR_DIR"),
                                (Path(settings.MEDIA_ROOT), media)):
            try:
                # A new var folder is its owner's alone (webapp.configuration.kept_secret_key).
                mode = 0o700 if setting == "LEUKOSCOPE_VAR_DIR" else 0o777
                folder.mkdir(mode=mode, parents=True, exist_ok=True)
            except FileExistsError:
                raise CommandError(f"{folder} is a file, not a folder: set {setting} to a folder.") from None
            except OSError as exc:
                raise CommandError(f"Cannot make the folder {folder} ({exc.strerror}): "
                                   f"set {setting} to a folder this user can write.") from None
        if os.environ.get("LEUKOSCOPE_SECRET_KEY"):
            return
        # The settings write the key as they are read (the same function); this reports a folder
        # they could not write it to, where they fell back on a key for their process alone.
        key_file = Path(settings.SECRET_KEY_FILE)
        try:
            _, written = kept_secret_key(key_file)
        except OSError as exc:
            raise CommandError(f"Cannot write the secret key to {key_file} ({exc.strerror}): "
                               "set LEUKOSCOPE_VAR_DIR to a folder this user can write, or set "
                               "LEUKOSCOPE_SECRET_KEY.") from None
        if written:
            self.stdout.write(f"Secret key written to {key_file}.")
