"""The classifier's cache of prepared inputs (LEUKOSCOPE_CLASSIFIER_CACHE): the files training,
adaptation and `evaluate` write so that the next run skips decoding (classifier.dataset).

Nothing removes them. A data folder's file serves every later run on it, but a release that changes
how cells are prepared or found leaves every folder's file unread beside a new one, and a run stopped
while writing leaves its temporary file. (The lab's reviewed cells, another list after each review,
are prepared without the cache.) `manage.py classifier_cache` lists them and, asked, removes those
unused for a while: a run that needs one prepares it again.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

logger = logging.getLogger(__name__)

# classifier.dataset's names: prepared-<key>.npz, and prepared-<key>.<pid>.tmp.npz while it is written
# (left behind by a training stopped in the middle).
PREPARED_FILES = "prepared-*.npz"
UNUSED_FOR = timedelta(days=30)


@dataclass(frozen=True)
class CachedFile:
    path: Path
    size: int
    last_used: datetime  # last written, or last read where the file system records reads


def cached_files(cache_dir):
    """The cache's files, oldest use first."""
    found = []
    for path in Path(cache_dir).glob(PREPARED_FILES):
        try:
            status = path.stat()
        except FileNotFoundError:  # removed while the folder was read
            continue
        # A read updates the access time (at most daily on a relatime mount, never on noatime, where
        # the time written alone counts).
        last = max(status.st_atime, status.st_mtime)
        found.append(CachedFile(path, status.st_size, datetime.fromtimestamp(last, UTC)))
    return sorted(found, key=lambda cached: (cached.last_used, cached.path.name))


def unused_files(cache_dir, unused_for=UNUSED_FOR):
    cutoff = datetime.now(UTC) - unused_for
    return [cached for cached in cached_files(cache_dir) if cached.last_used < cutoff]


def remove_unused_files(cache_dir, unused_for=UNUSED_FOR):
    """Remove the files unused for ``unused_for``, checked again one by one; returns those removed."""
    removed = []
    for cached in unused_files(cache_dir, unused_for):
        cached.path.unlink(missing_ok=True)
        logger.info("Removed %s (%d bytes) from the classifier's cache: unused since %s", cached.path.name,
                    cached.size, cached.last_used.isoformat(timespec="seconds"))
        removed.append(cached)
    return removed
