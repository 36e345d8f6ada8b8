"""List the media folder's files that no record holds (services/stray_files.py); --delete removes
them."""

from django.core.management.base import BaseCommand, CommandError

from webapp.services.storage import missing_media_folder
from webapp.services.stray_files import YOUNGEST_STRAY, remove_stray_files, stray_files
from webapp.wording import count_of


class Command(BaseCommand):
    help = ("List photographs, crops and heatmaps in LEUKOSCOPE_MEDIA_ROOT that no record holds (left by "
            "a process killed mid-write), older than an hour; --delete removes them.")

    def add_arguments(self, parser):
        parser.add_argument("--delete", action="store_true", help="Remove the files listed.")

    def handle(self, *args, delete, **options):
        if problem := missing_media_folder():
            raise CommandError(problem)
        strays = stray_files()
        for stray in strays:
            self.stdout.write(f"{stray.name}  {stray.size:,} bytes")
        size = sum(stray.size for stray in strays)
        hours = YOUNGEST_STRAY.total_seconds() / 3600
        summary = (f"{count_of(len(strays), 'file')}, {size:,} bytes, held by no record "
                   f"(older than {hours:g} h)")
        if not delete:
            self.stdout.write(summary + (": --delete removes them." if strays else "."))
            return
        removed = remove_stray_files(strays)
        self.stdout.write(f"{summary}: {removed} removed.")
