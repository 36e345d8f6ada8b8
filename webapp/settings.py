"""Leukoscope settings: every value comes from the environment, with safe embedded defaults.

Embedded mode (nothing set): SQLite and media under ``var/``, Redis on localhost or one the launcher
starts. Production: set LEUKOSCOPE_SECRET_KEY, LEUKOSCOPE_ALLOWED_HOSTS, DATABASE_URL, REDIS_URL and
LEUKOSCOPE_SECURE=1 behind HTTPS.
"""

import logging
import math
import os
import re
import secrets
import zoneinfo
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from classifier.photograph_size import MAX_PHOTOGRAPH_PIXELS
from classifier.runtimes import DEFAULT_RUNTIME, RUNTIMES
from webapp.configuration import (
    env_flag,
    kept_secret_key,
    masked_url,
    positive_number,
    redis_url_problem,
    whole_number,
)

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name, default):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Each number read from the environment goes through one of these: a value that is not one stops
# every process at start with ImproperlyConfigured naming the variable, which manage.py prints as
# one line (webapp.configuration.configuration_error_line).

def env_count(name, minimum, default=None):
    """A whole number of at least ``minimum`` from the environment; ``default`` where unset (None:
    the classifier's default)."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return whole_number(value, minimum)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={value!r}: expected a whole number of at least {minimum}"
        ) from None


def env_positive(name, default, unit):
    """A positive number (of ``unit``) from the environment, ``default`` where unset."""
    value = os.environ.get(name)
    if value is None:
        return float(default)
    try:
        return positive_number(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value}: expected a positive number of {unit}") from None


def env_seconds(name, default):
    return env_positive(name, default, "seconds")


def env_fraction(name):
    """A number from 0 to 1 from the environment, or None where unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number <= 1:
        raise ImproperlyConfigured(f"{name}={value}: expected a number from 0 to 1 (a probability)")
    return number


def env_time_zone(name, default):
    """An IANA time zone name from the environment (``default`` where unset or empty)."""
    value = os.environ.get(name, "").strip() or default
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a time zone: expected a name from the IANA time zone "
            "database, such as UTC or Europe/Madrid"
        ) from None
    return value


def env_log_level(name, default):
    """A logging level name from the environment, in any case (``default`` where unset or empty)."""
    value = os.environ.get(name, "").strip() or default
    if value.upper() not in logging.getLevelNamesMapping():
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a log level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return value.upper()


def env_database(default):
    """The default database from DATABASE_URL (``default`` where unset), or ImproperlyConfigured
    saying what is wrong with it."""
    url = os.environ.get("DATABASE_URL")
    if url is None:
        url = default
    elif not url.strip():
        raise ImproperlyConfigured(
            "DATABASE_URL is set but empty: unset it for the embedded SQLite database under "
            "LEUKOSCOPE_VAR_DIR, or set it to postgres://user:password@host:5432/name"
        )
    expected = "expected postgres://user:password@host:5432/name or sqlite:///path"
    scheme, separator, _ = url.strip().partition("://")
    if not separator:
        raise ImproperlyConfigured(f"DATABASE_URL={masked_url(url)!r} is not a database URL ({expected})")
    try:
        parsed = dj_database_url.parse(url.strip(), conn_max_age=60)
    except dj_database_url.UnknownSchemeError:
        raise ImproperlyConfigured(f"DATABASE_URL: unknown scheme {scheme!r} ({expected})") from None
    except ValueError:
        raise ImproperlyConfigured(
            f"DATABASE_URL={masked_url(url)} is not a valid URL: the port must be a number, and "
            "characters such as @ : / in the user name or password must be %-encoded (%40 for @)"
        ) from None
    if parsed["ENGINE"] not in SUPPORTED_DATABASE_ENGINES:
        # dj-database-url knows MySQL, Oracle and more, whose drivers Leukoscope neither installs nor
        # is tested on: Django's "Error loading MySQLdb module" named no setting.
        raise ImproperlyConfigured(f"DATABASE_URL: Leukoscope runs on PostgreSQL or SQLite, not {scheme!r} "
                                   f"({expected})")
    return parsed


SUPPORTED_DATABASE_ENGINES = ("django.db.backends.postgresql", "django.db.backends.sqlite3")
VAR_DIR = Path(os.environ.get("LEUKOSCOPE_VAR_DIR", BASE_DIR / "var"))
# A per-installation key kept beside the embedded database, so sessions survive restarts without a
# secret ever being committed. Reading the settings writes it where it is missing (the one thing
# they make on disk); `make setup` (manage.py ensure_instance) makes the folders.
SECRET_KEY_FILE = VAR_DIR / "secret_key"


def _embedded_secret_key():
    """This machine's kept key: the first process to find SECRET_KEY_FILE missing writes it, and
    every process of the machine (gunicorn's workers, the Celery workers) reads the same one, so a
    session signed by one is accepted by the others."""
    try:
        key, _ = kept_secret_key(SECRET_KEY_FILE)
    except OSError:
        # The folder cannot be written (read-only): a key for this process alone, whose sessions
        # end with it. webapp.deploy_checks warns about it (leukoscope.W001).
        return secrets.token_urlsafe(50), False
    if not key:
        raise ImproperlyConfigured(
            f"{SECRET_KEY_FILE} is empty: delete it to have a new key written (which signs everyone "
            "out), or set LEUKOSCOPE_SECRET_KEY"
        )
    return key, True


if os.environ.get("LEUKOSCOPE_SECRET_KEY"):
    SECRET_KEY, SECRET_KEY_KEPT = os.environ["LEUKOSCOPE_SECRET_KEY"], True
else:
    SECRET_KEY, SECRET_KEY_KEPT = _embedded_secret_key()
DEBUG = env_flag("LEUKOSCOPE_DEBUG")
ALLOWED_HOSTS = env_list("LEUKOSCOPE_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("LEUKOSCOPE_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "auditlog",
    "webapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Above everything that writes a page's body, so it compresses what they wrote (static files are
    # served precompressed by WhiteNoise above it).
    "webapp.middleware.CompressTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before the API key's middleware: a key holds no sign-in to end.
    "webapp.middleware.IdleSignOutMiddleware",
    # A program's API key stands in for a sign-in, before the sign-in is required.
    "webapp.middleware.ApiTokenMiddleware",
    # Below both: it reads who the request was made as, a key's account included.
    "webapp.middleware.SignedInPagesNotStoredMiddleware",
    # Records who made each change the audit trail keeps (webapp.audit).
    "auditlog.middleware.AuditlogMiddleware",
    "webapp.middleware.NulInUrlIsNotFound",
    "webapp.middleware.LoginRequiredOrUnauthorizedMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "webapp.middleware.MethodNotAllowedExplained",
    # Last, so that its answer to a view's database error comes before any other's.
    "webapp.middleware.DatabaseBusyMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database(default=f"sqlite:///{VAR_DIR / 'leukoscope.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The test database must be a file, not memory: the Celery worker the tests start is another
    # process and has to see the rows the tests write.
    # Named per process so two test runs in one checkout never share (and clobber) a database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-leukoscope-{os.getpid()}.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    # PostgreSQL compiles a query whose estimated cost passes jit_above_cost to machine code first:
    # 100 ms spent on the samples waiting for a signature, whose subqueries' estimates pass it, to
    # run a 50 ms query (bench/scale.py). A page's queries are short; JIT pays off in reports over
    # millions of rows, which this site does not run. A DATABASE_URL's own ?options= are kept.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = " ".join(filter(None, ["-c jit=off", options.get("options", "")]))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "webapp.sign_in.InactiveAccountToldBackend",
]
# Password guessing: after five failed sign-ins for one user name from one address, that pair is
# refused for a quarter of an hour (`manage.py axes_reset_username NAME` lifts it sooner). The pair,
# not the name alone, so nobody elsewhere can lock a colleague out by typing wrong passwords.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# axes masks the address of a failed sign-in in the log by default: the administrator could not tell
# a mistyped password from someone trying names, and the access log keeps that address anyway. The
# name stays masked: a password is sometimes typed into it.
AXES_SENSITIVE_PARAMETERS = ["username"]
# Behind the HTTPS proxy every request comes from the proxy's address, so the pair above would be
# the name alone: anyone could lock a colleague out. LEUKOSCOPE_PROXY_COUNT proxies in front that
# each append the address they were reached from to X-Forwarded-For (nginx: proxy_set_header
# X-Forwarded-For $proxy_add_x_forwarded_for) make the client's own the one counted; 0 (the
# default) trusts no such header, which a client could otherwise forge to guess without limit.
PROXY_COUNT = env_count("LEUKOSCOPE_PROXY_COUNT", 0, default=0)
AXES_CLIENT_IP_CALLABLE = "webapp.middleware.client_address"
LOGIN_URL = "login"
# Lab workstations are shared: a sign-in lasts one long shift, not Django's two weeks.
SESSION_HOURS = env_positive("LEUKOSCOPE_SESSION_HOURS", 12, "hours")
SESSION_COOKIE_AGE = round(SESSION_HOURS * 3600)
# Within it, a sign-in left unused this long ends (webapp/idle_sign_out.py): at a shared
# workstation the next person must not review or sign under the name still signed in.
IDLE_MINUTES = env_positive("LEUKOSCOPE_IDLE_MINUTES", 30, "minutes")
IDLE_SIGN_OUT_SECONDS = IDLE_MINUTES * 60
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# ISO dates everywhere, the Django admin included (webapp/formats/en/formats.py).
FORMAT_MODULE_PATH = ["webapp.formats"]
TIME_ZONE = env_time_zone("LEUKOSCOPE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# No STATIC_ROOT: WhiteNoise serves straight from static/ through the finders, with no
# collectstatic step (given a folder, it would warn at every start while that folder is missing).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without a collectstatic step
# Smear photographs are medical data: served only through a view that checks the sign-in.
MEDIA_ROOT = Path(os.environ.get("LEUKOSCOPE_MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "/media/"

# Uploads: checked by content; limits guard the worker against huge files and decompression bombs.
MAX_UPLOAD_BYTES = env_count("LEUKOSCOPE_MAX_UPLOAD_BYTES", 1, default=25 * 1024 * 1024)
# Training skips a photograph over MAX_PHOTOGRAPH_PIXELS whatever this says (classifier.dataset).
MAX_IMAGE_PIXELS = env_count("LEUKOSCOPE_MAX_IMAGE_PIXELS", 1, default=MAX_PHOTOGRAPH_PIXELS)
# A 200-cell differential of one-cell pictures (an analyser's export) in one upload. What bounds an
# upload's time is the pixels to decode, and its memory the files held until they are stored, each
# counted together as the files are sent, whatever becomes of each (webapp.intake.check_files):
# 2,000 megapixels is 50 photographs at the largest MAX_IMAGE_PIXELS allows (some 60 s on one
# core), 1,024 MB under 50 at the largest file allowed. Never under one photograph of each limit.
MAX_FILES_PER_UPLOAD = env_count("LEUKOSCOPE_MAX_FILES_PER_UPLOAD", 1, default=200)
MAX_UPLOAD_MEGAPIXELS = env_count("LEUKOSCOPE_MAX_UPLOAD_MEGAPIXELS", 1, default=2000)
MAX_UPLOAD_TOTAL_MB = env_count("LEUKOSCOPE_MAX_UPLOAD_TOTAL_MB", 1, default=1024)
# Django refuses a request over this before any form sees it, with a bare 400; set well above the
# form's limit so that an ordinary oversized batch gets the form's own message instead.
DATA_UPLOAD_MAX_NUMBER_FILES = 4 * MAX_FILES_PER_UPLOAD
# Larger files wait in temporary files: 200 photographs held in memory at once stay under 200 MB.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# Where training data lives; a user points this (or the command's --data) at their own folder.
DATASETS_DIR = Path(
    os.environ.get("LEUKOSCOPE_DATASETS_DIR", BASE_DIR.parent / "shared" / "datasets")
)
# One folder or several, separated by os.pathsep as PATH's are: each one lab's photographs, trained
# on together and measured apart (classifier.training.data). The site's retraining form offers
# each, and evaluate measures each.
TRAINING_DATA_DIRS = [
    Path(folder)
    for folder in os.environ.get(
        "LEUKOSCOPE_TRAINING_DATA",
        os.pathsep.join(str(DATASETS_DIR / name) for name in ("blood-cell-images", "pbc")),
    ).split(os.pathsep)
    if folder.strip()
]
# The folders under which the retraining form's "Other data folder" may name one. The form runs as
# a site account, not as whoever runs the server: without a bound, a lab admin could learn which
# server paths exist by typing them. manage.py train, run by the server's own user, is not bound.
TRAINING_DATA_ROOTS = [
    Path(folder)
    for folder in os.environ.get(
        "LEUKOSCOPE_TRAINING_DATA_ROOTS",
        os.pathsep.join(str(folder) for folder in [DATASETS_DIR, *TRAINING_DATA_DIRS]),
    ).split(os.pathsep)
    if folder.strip()
]
# Cells whose top calibrated probability falls below a threshold are flagged for a human to look at,
# as are cells whose out-of-distribution score (classifier.ood) is above their version's threshold.
# Each version fits its confidence threshold on its validation cells (metrics.review); a lab that
# sets LEUKOSCOPE_REVIEW_THRESHOLD uses that one for every version instead, and versions without a
# fitted one (trained before runs fitted it, refits) use classifier.ood's default, 0.80.
REVIEW_CONFIDENCE_THRESHOLD = env_fraction("LEUKOSCOPE_REVIEW_THRESHOLD")
# Leukocytes a sample's differential counts before it is signed, unless a hematologist writes why
# fewer will do; a sample's own target may be raised (200 for tighter ranges). A new sample's target
# is one of the targets its page offers (services.sign_off.TARGET_CHOICES): any other would be shown
# there as one it is not.
TARGET_COUNT_CHOICES = (100, 200)
LEUKOSCOPE_TARGET_COUNT = env_count("LEUKOSCOPE_TARGET_COUNT", 1, default=100)
if LEUKOSCOPE_TARGET_COUNT not in TARGET_COUNT_CHOICES:
    raise ImproperlyConfigured(f"LEUKOSCOPE_TARGET_COUNT={os.environ['LEUKOSCOPE_TARGET_COUNT']!r}: expected "
                               f"{' or '.join(map(str, TARGET_COUNT_CHOICES))} (leukocytes a sample counts)")
# The namespace of the lab's accession numbers, as its information system names it (a URI, e.g.
# "urn:oid:1.2.3.4.5" or "https://lab.example.org/accession"): the FHIR export's identifier.system,
# without which an LIS cannot tell this lab's "H26-0001" from another's. Unset: the value alone.
ACCESSION_SYSTEM = os.environ.get("LEUKOSCOPE_ACCESSION_SYSTEM", "").strip()
if ACCESSION_SYSTEM and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", ACCESSION_SYSTEM):
    raise ImproperlyConfigured(f"LEUKOSCOPE_ACCESSION_SYSTEM={ACCESSION_SYSTEM!r}: expected a URI such as "
                               "urn:oid:1.2.3.4.5 or https://lab.example.org/accession")


# "Adapt to this lab": epochs of each fine-tune and cross-validation folds (each one more fine-tune;
# 0 or 1: none). Unset, classifier.training.adaptation's defaults (20 epochs, 5 folds); a lab on a
# slow machine may trade the cross-validated figure's precision for a shorter wait.
ADAPTATION_EPOCHS = env_count("LEUKOSCOPE_ADAPTATION_EPOCHS", 1)
ADAPTATION_FOLDS = env_count("LEUKOSCOPE_ADAPTATION_FOLDS", 0)
# What computes the network in the worker (classifier.runtimes.RUNTIMES): int8 weights by
# default, "litert" for float32, "tensorflow" for the plain Keras model.
INFERENCE_RUNTIME = os.environ.get("LEUKOSCOPE_INFERENCE_RUNTIME", DEFAULT_RUNTIME)
if INFERENCE_RUNTIME not in RUNTIMES:
    raise ImproperlyConfigured(
        f"LEUKOSCOPE_INFERENCE_RUNTIME={INFERENCE_RUNTIME!r}: expected one of {', '.join(RUNTIMES)}"
    )

# Celery: Redis broker; the launcher exports REDIS_URL when it starts an embedded Redis.
CELERY_BROKER_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
if problem := redis_url_problem(CELERY_BROKER_URL):
    raise ImproperlyConfigured(f"REDIS_URL={masked_url(CELERY_BROKER_URL)!r}: {problem}")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = "classify"
CELERY_TASK_ROUTES = {
    "webapp.tasks.classify_image": {"queue": "classify"},
    "webapp.tasks.add_cell": {"queue": "classify"},
    "webapp.tasks.train_model_version": {"queue": "train"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True


# A message a worker took but never acknowledged (its worker died) goes back to the queue this long
# after it was taken. Classifying a photograph takes seconds, so minutes return a dead worker's
# photographs soon; training is acknowledged on receipt and never waits on this (see tasks.py).
BROKER_VISIBILITY_TIMEOUT = env_seconds("LEUKOSCOPE_BROKER_VISIBILITY_TIMEOUT", 300)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
    # kombu looks for such messages every 10 s x this throttle (100 s by default): every 10 s.
    "unacked_restore_throttle": 1,
    # Without these a Redis that stops answering without closing the connection (a frozen host, a
    # firewall) holds every publish, and so every upload, forever.
    "socket_connect_timeout": 2,
    "socket_timeout": 2,
}
# `make run` on a Redis other instances find too keeps this instance's queues apart (webapp.broker).
if os.environ.get("LEUKOSCOPE_BROKER_KEY_PREFIX"):
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = os.environ["LEUKOSCOPE_BROKER_KEY_PREFIX"]
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# One quick retry, not Celery's three: a photograph that could not be sent is stored as queued and
# sent by the reconciler, so the upload need not wait for the broker to come back.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                    "interval_max": 0.2}
CELERY_TASK_ALWAYS_EAGER = False

# A classify worker that cannot reach the media folder (a network mount missing on its machine)
# puts the photograph back in the queue and tries it again after this long, instead of failing it.
STORAGE_RETRY_SECONDS = env_seconds("LEUKOSCOPE_STORAGE_RETRY_SECONDS", 60)

# /healthz warns when the media folder's disk, or the SQLite database's, has less than this left,
# while the lab still works, and fails where less than one upload of MAX_UPLOAD_BYTES would fit.
LOW_DISK_BYTES = env_count("LEUKOSCOPE_LOW_DISK_MB", 1, default=1024) * 1024 * 1024

# The reconciler (manage.py reconcile, started by `make run`) queues again what no live task will
# finish. A running task writes a heartbeat this often ...
HEARTBEAT_SECONDS = env_seconds("LEUKOSCOPE_HEARTBEAT_SECONDS", 10)
# ... and its worker is taken for dead when none came for this long: its photograph is queued
# again, its training marked failed.
WORKER_LOST_AFTER = env_seconds("LEUKOSCOPE_WORKER_LOST_AFTER", 60)
# A photograph or training still queued this long after it was sent is sent again (when the queue
# holds nothing else it could be waiting behind), and the sample page offers "Try again".
QUEUED_STUCK_AFTER = env_seconds("LEUKOSCOPE_QUEUED_STUCK_AFTER", 300)
# How often the reconciler sweeps: a photograph whose task was lost waits at most this long past
# the times above before it is queued again; each sweep is a few indexed queries.
RECONCILE_EVERY = env_seconds("LEUKOSCOPE_RECONCILE_EVERY", 30)
# A cancelled training's process is stopped by its worker at once (queueing.stop_task); where that
# message cannot reach the worker, the training loop finds the cancel itself between batches,
# looking at most this often (each look is one query).
TRAINING_CANCEL_CHECK_SECONDS = env_seconds("LEUKOSCOPE_TRAINING_CANCEL_CHECK_SECONDS", 1)

SECURE = env_flag("LEUKOSCOPE_SECURE")
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
CSRF_FAILURE_VIEW = "webapp.views.errors.csrf_failure"
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Sent with every page (webapp.middleware.ContentSecurityPolicyMiddleware): scripts and styles only
# from the site's own files, so text a person typed can never run as a script, nor restyle a page to
# hide or fake a figure, even where an escape were missed. Bars are drawn in SVG or by the page's
# scripts, never by style attributes.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
                           "frame-ancestors 'none'")

LOG_LEVEL = env_log_level("LEUKOSCOPE_LOG_LEVEL", "INFO")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Celery's per-task lines ("received", "succeeded in ...") repeat, for every photograph, what the
# site's own lines say with its id; Celery's failures are warnings and errors, and still show.
CELERY_TASK_CHATTER_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {"refusal_in_one_line": {"()": "webapp.log_filters.RefusalInOneLine"},
                "client_mistakes_as_info": {"()": "webapp.log_filters.ClientMistakesAsInfo"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # Failed sign-ins and lock-outs are warnings; every successful sign-in and sign-out is not news.
        "axes": {"level": "WARNING"},
        # In this order: the first reads the exception that the second takes off the record.
        "django.request": {"filters": ["client_mistakes_as_info", "refusal_in_one_line"]},
        "celery.worker.strategy": {"level": CELERY_TASK_CHATTER_LEVEL},
        "celery.app.trace": {"level": CELERY_TASK_CHATTER_LEVEL},
        # Django logs each suspicious request under its exception's name; a logger's filters do
        # not reach its children's records, so each is named.
        **{f"django.security.{name}": {"filters": ["refusal_in_one_line"]} for name in (
            "DisallowedHost", "SuspiciousSession", "SuspiciousFileOperation", "RequestDataTooBig",
            "TooManyFieldsSent", "TooManyFilesSent",
        )},
    },
}
# A worker replaces the root logger's handler with its own (worker_hijack_root_logger): given the
# same format, its lines read as the web server's and the reconciler's, with the logger's name.
CELERY_WORKER_LOG_FORMAT = CELERY_WORKER_TASK_LOG_FORMAT = LOG_FORMAT
