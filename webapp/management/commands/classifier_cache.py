"""List the classifier's cache of prepared inputs (services/classifier_cache.py); --delete removes the
files unused for --unused-days days."""

import os
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from classifier.dataset import CACHE_VARIABLE, DEFAULT_CACHE_DIR
from webapp.services.classifier_cache import UNUSED_FOR, cached_files, remove_unused_files, unused_files
from webapp.wording import count_of


class Command(BaseCommand):
    help = ("List the prepared inputs training and evaluate keep in LEUKOSCOPE_CLASSIFIER_CACHE; --delete "
            "removes those unused for --unused-days days (a run that needs one prepares it again).")

    def add_arguments(self, parser):
        parser.add_argument("--delete", action="store_true", help="Remove the files unused that long.")
        parser.add_argument("--unused-days", type=int, default=UNUSED_FOR.days,
                            help=f"Days without use after which a file may go (default {UNUSED_FOR.days}).")
        parser.add_argument("--cache-dir", type=Path,
                            help="The cache folder (default: LEUKOSCOPE_CLASSIFIER_CACHE, else var/cache).")

    def handle(self, *args, delete, unused_days, cache_dir, **options):
        if unused_days < 0:
            raise CommandError(f"--unused-days {unused_days}: give 0 or more days.")
        unused_for = timedelta(days=unused_days)
        if cache_dir is not None:
            where = f"--cache-dir {cache_dir}"
        elif os.environ.get(CACHE_VARIABLE):
            cache_dir, where = DEFAULT_CACHE_DIR, f"{CACHE_VARIABLE}={DEFAULT_CACHE_DIR}"
        elif not DEFAULT_CACHE_DIR.exists():
            # The instance's own folder, which the first training or evaluation makes.
            self.stdout.write(f"{DEFAULT_CACHE_DIR}: nothing cached yet (no training or evaluation has "
                              "run here).")
            return
        else:
            cache_dir = where = DEFAULT_CACHE_DIR
        if not cache_dir.is_dir():
            # A mistyped folder would otherwise read as an empty cache, and --delete as done.
            problem = "a file, not a folder" if cache_dir.exists() else "no such folder"
            raise CommandError(f"{where}: {problem}.")
        every = cached_files(cache_dir)
        for cached in every:
            self.stdout.write(f"{cached.path.name}  {cached.size:,} bytes  last used "
                              f"{cached.last_used.date().isoformat()}")
        stale = unused_files(cache_dir, unused_for)
        summary = (f"{cache_dir}: {count_of(len(every), 'file')}, {sum(c.size for c in every):,} bytes; "
                   f"{len(stale)} unused for {count_of(unused_for.days, 'day')} or more, "
                   f"{sum(c.size for c in stale):,} bytes")
        if not delete:
            self.stdout.write(summary + (": --delete removes them." if stale else "."))
            return
        removed = remove_unused_files(cache_dir, unused_for)
        self.stdout.write(f"{summary}: {len(removed)} removed.")
