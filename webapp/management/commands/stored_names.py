"""List the photographs stored under their uploaded file's name (services/stored_names.py);
--rename moves them to names of ids."""

from django.core.management.base import BaseCommand, CommandError

from webapp.services.storage import missing_media_folder
from webapp.services.stored_names import named_by_upload, rename_to_ids
from webapp.wording import count_of


class Command(BaseCommand):
    help = ("List the photographs stored, before this release, under their uploaded file's name (where "
            "microscope software may have written the patient's name); --rename stores each under its "
            "sample's id instead. Photographs a worker has in hand are left for a later run.")

    def add_arguments(self, parser):
        parser.add_argument("--rename", action="store_true", help="Move the files listed to names of ids.")

    def handle(self, *args, rename, **options):
        if problem := missing_media_folder():
            raise CommandError(problem)
        if not rename:
            listed = named_by_upload()
            for image_id, _, name, _ in listed:
                self.stdout.write(f"photograph {image_id}  {name}")
            self.stdout.write(f"{count_of(len(listed), 'photograph')} stored under an uploaded file's name"
                              + (": --rename stores them under their sample's id." if listed else "."))
            return
        renamed, left = rename_to_ids()
        for moved in renamed:
            self.stdout.write(f"photograph {moved.image_id}  {moved.old} -> {moved.new}")
        self.stdout.write(f"{count_of(len(renamed), 'photograph')} renamed; "
                          f"{count_of(len(left), 'photograph')} left for a later run (being classified, "
                          "or its file could not be read).")
