"""What the settings, manage.py and the commands share about an installation's configuration: its
kept secret key, the checks of numbers given in the environment or on a command line, and the one
line that a configuration error prints instead of a traceback (manage.py, webapp.wsgi for gunicorn,
webapp.celery for `celery worker`).

webapp.settings imports it: nothing here reads a setting until a function is called.
"""

import math
import os
import re
import secrets
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import DatabaseError, InterfaceError, OperationalError, ProgrammingError


def kept_secret_key(key_file):
    """The secret key kept in ``key_file``, written there first where it is missing.

    Every process of a machine that starts at once (gunicorn's workers, the Celery workers) must
    end up with the same key: each writes a key of its own to a temporary file (mode 0600) in the
    same folder and hard-links it to the name, which only the first link can take, and then reads
    back whatever the name holds. Returns (key, whether this call wrote it); raises OSError where
    the folder cannot be made or written (read-only), for the caller to decide.
    """
    key_file = Path(key_file)
    try:
        return key_file.read_text().strip(), False
    except FileNotFoundError:
        pass
    # The folder holds the embedded database (its sessions) and, by default, the photographs: a
    # new one is its owner's alone. An existing one keeps its mode (a deployment may share it).
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file readable and writable by its owner alone (0600).
    descriptor, temporary = tempfile.mkstemp(dir=key_file.parent, prefix=f".{key_file.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, key_file)
            written = True
        except FileExistsError:  # another process took the name first: its key is everyone's
            written = False
    finally:
        os.unlink(temporary)
    return key_file.read_text().strip(), written


def positive_number(text):
    """A finite number above 0 from ``text``, or ValueError."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def whole_number(text, minimum, maximum=None):
    """A whole number from ``text`` within [minimum, maximum], or ValueError."""
    value = int(str(text).strip())
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(text)
    return value


def masked_url(url):
    """``url`` with any password replaced by ***, to print in a message."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not even a URL: hide everything between "://" and the last "@"
        return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def redis_url_problem(url):
    """Why ``url`` cannot be the broker's address, or None. Celery (kombu) and redis-py (/healthz,
    the workers' marks) both read it, and both take redis:// and rediss:// (TLS) alone; Celery read
    any other text as a RabbitMQ address and retried it for minutes, or stopped on a traceback."""
    expected = "expected redis://host:6379/0 (rediss:// for TLS)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port that is no number raises here, not in the worker
    except ValueError as error:
        return f"not an address ({error}): {expected}"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return expected
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"the database after the host is a number, not {database!r}: {expected}"
    return None


def database_described():
    """The database the settings point at, for a message: DATABASE_URL (password hidden), or the
    embedded SQLite file where it is unset."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return f"DATABASE_URL={masked_url(url)}"
    return f"DATABASE_URL unset: the embedded SQLite database {settings.DATABASES['default']['NAME']}"


# The driver's words for a connection that failed, less what the URL already says (the host and
# port), so that the reason is left: "Connection refused", 'database "x" does not exist'.
_CONNECTION_PREFIXES = re.compile(
    r'^(connection failed:\s*)?(connection to server (at|on) .*? failed:\s*)?(FATAL:\s*)?'
)


def _while_connecting(error):
    """Whether ``error`` was raised while opening a database connection (not by a query)."""
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_name in {"get_new_connection", "ensure_connection"}:
            return True
        traceback = traceback.tb_next
    return False


FLAG_ON = frozenset({"1", "true", "yes", "on"})
FLAG_OFF = frozenset({"", "0", "false", "no", "off"})


def env_flag(name, default=False):
    """An on/off setting from the environment: 1, true, yes or on (any case) is on; 0, false, no,
    off or empty is off; unset, the default. Anything else is ImproperlyConfigured: a slip such as
    LEUKOSCOPE_SECURE=ture must not quietly turn secure cookies and the HTTPS redirect off."""
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in FLAG_ON:
        return True
    if word in FLAG_OFF:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is neither on nor off: expected 1, true, yes or on, "
                               "or 0, false, no or off")


def wants_traceback(argv):
    """Whether a configuration error should show its traceback: with --traceback, or
    LEUKOSCOPE_DEBUG set (on; a LEUKOSCOPE_DEBUG that is neither on nor off is itself the error
    to print in one line)."""
    try:
        debug = env_flag("LEUKOSCOPE_DEBUG")
    except ImproperlyConfigured:
        debug = False
    return debug or "--traceback" in argv


def configuration_error_line(error):
    """The one line to print for a configuration error (a bad setting, a database that cannot be
    reached), or None for any other exception, whose traceback is wanted."""
    if isinstance(error, ImproperlyConfigured):
        return " ".join(str(error).split())
    if isinstance(error, OperationalError | InterfaceError) or _table_missing(error):
        first = error_first_line(error)
        if _while_connecting(error):
            reason = _CONNECTION_PREFIXES.sub("", first) or first
            return f"The database cannot be reached ({database_described()}): {reason}"
        hint = ""
        if "no such table" in first or re.search(r'relation ".*" does not exist', first):
            hint = " (run manage.py migrate)"
        return f"Database error ({database_described()}): {first}{hint}"
    if type(error) is DatabaseError:
        # The driver's own fault of the database, no subclass of it: SQLite's "file is not a
        # database" (DATABASE_URL naming some other file) or "database disk image is malformed".
        # The operator's to mend (README, Backups), not a defect of the code.
        return f"The database cannot be used ({database_described()}): {error_first_line(error)}"
    if (isinstance(error, ProgrammingError)
            and getattr(error.__cause__, "sqlstate", None) == INSUFFICIENT_PRIVILEGE):
        # Tables owned by another role, as a restore without --role leaves them: the operator's to
        # grant, not a defect whose traceback helps.
        return (f"The database refused the site's role ({database_described()}): {error_first_line(error)} "
                "(the tables must belong to the role DATABASE_URL signs in as, or grant it their "
                "rights: README, Backups)")
    return None


# PostgreSQL's state for a right the role lacks ("permission denied for table ...").
INSUFFICIENT_PRIVILEGE = "42501"
# PostgreSQL's state for a table not there ('relation "webapp_sample" does not exist'): a database
# never migrated. Raised as a ProgrammingError, where SQLite's "no such table" is an OperationalError.
UNDEFINED_TABLE = "42P01"


def _table_missing(error):
    return (isinstance(error, ProgrammingError)
            and getattr(error.__cause__, "sqlstate", None) == UNDEFINED_TABLE)


def error_first_line(error):
    """The database error's first line, which says what went wrong (the rest is context)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].strip()


def exit_for_configuration_error(error, argv, status=1):
    """For a configuration error, unless its traceback is wanted, print its one line (`Error: …`)
    on stderr and exit with ``status``; else return, for the caller to raise ``error``."""
    line = configuration_error_line(error)
    if line is None or wants_traceback(argv):
        return
    print(f"Error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(status)
