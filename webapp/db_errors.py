"""Which database errors a second try a moment later may not meet: the web answers them with a 503
that says to try again (webapp.views.errors), the worker tries its task again (webapp.tasks). A
database whose disk is full is told apart: it refuses every write until someone frees space, so the
page says to tell the administrator, and the worker waits for the space as for its media folder."""

import shutil
from pathlib import Path

from django.db import InterfaceError, OperationalError, connections

from webapp.configuration import error_first_line

# SQLite's words for its lock held past the timeout; PostgreSQL's states worth a second try: a
# connection lost (08), a serialisation failure or deadlock, a lock not had, the server shutting down.
SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
POSTGRESQL_TRANSIENT = ("40001", "40P01", "55P03", "57P01", "57P02", "57P03")
# SQLITE_FULL's words; PostgreSQL's disk_full. SQLite on a disk with no byte left cannot even make
# its write-ahead log and says only "disk I/O error": that one is read as a full disk where the
# database's folder has less than this left.
SQLITE_FULL = "database or disk is full"
POSTGRESQL_DISK_FULL = "53100"
NEARLY_NO_SPACE = 1024 * 1024


def is_transient_database_error(error):
    """A database error that a second try a moment later may not meet: busy or out of reach, not a
    query it refuses ("no such table" after a release without its migration stays a server error)."""
    if isinstance(error, InterfaceError):  # the connection closed under the request
        return True
    if not isinstance(error, OperationalError):
        return False
    if any(words in str(error).lower() for words in SQLITE_BUSY):
        return True
    cause = error.__cause__
    state = getattr(cause, "sqlstate", None)
    if state:
        return state.startswith("08") or state in POSTGRESQL_TRANSIENT
    # psycopg's own error with no state: PostgreSQL could not be reached at all. SQLite's other
    # errors ("no such table", "too many SQL variables") are no busy database.
    return cause is not None and type(cause).__module__.split(".")[0] == "psycopg"


def is_database_full(error):
    """A database error that says its disk is full: nothing more is written until space is freed."""
    if not isinstance(error, OperationalError):
        return False
    if getattr(error.__cause__, "sqlstate", None) == POSTGRESQL_DISK_FULL:
        return True
    message = str(error).lower()
    if SQLITE_FULL in message:
        return True
    return "disk i/o error" in message and _sqlite_space_left() < NEARLY_NO_SPACE


def _sqlite_space_left():
    """Bytes free beside the SQLite database (an unknown amount where it is not SQLite or not found)."""
    database = connections["default"].settings_dict
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return NEARLY_NO_SPACE
    try:
        return shutil.disk_usage(Path(database["NAME"]).parent).free
    except OSError:
        return NEARLY_NO_SPACE


def first_line(error):
    """An error's first line, which says what went wrong: PostgreSQL's words run on to a second
    ("HINT:  Check free disk space."), which a card or a failure reason does not need."""
    return error_first_line(error)[:300]
