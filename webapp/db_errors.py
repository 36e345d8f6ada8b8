"""Which database errors a second try a moment later may not meet: the web answers them with a 503
that says to try again (webapp.views.errors), the worker tries its task again (webapp.tasks)."""

from django.db import InterfaceError, OperationalError

# SQLite's words for its lock held past the timeout; PostgreSQL's states worth a second try: a
# connection lost (08), a serialisation failure or deadlock, a lock not had, the server shutting down.
SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
POSTGRESQL_TRANSIENT = ("40001", "40P01", "55P03", "57P01", "57P02", "57P03")


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
