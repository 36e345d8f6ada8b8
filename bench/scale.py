"""How fast the pages render on PostgreSQL with a year of a busy lab: 2.5 million cells.

    DATABASE_URL=postgres://user@host:5432/leukoscope_scale python bench/scale.py [--cells 2500000]
        [--requests 20] [--rebuild] [--page WORDS ...]

bench/web.py times the lab pages on SQLite at 100,000 cells; what only a production-sized PostgreSQL
shows is its query plans: a count, a sort or an offset that reads the whole cell or audit table.
This builds (once, in one transaction: an interrupted build leaves nothing) the database that
DATABASE_URL names, which must be a database of its own: a sample for every 100 cells (two photographs
of 50 cells), spread over a year, classified by the 4-class network, then the bundled 8-class one, then
a site retrain; every flagged cell of a signed sample reviewed; the audit trail those leave. Beside
them: a 500-cell sample in progress (the gallery), a signed one with stored crops (report, PDF,
FHIR) and a sample of 1,000 one-cell photographs. Rows go in by bulk_create and INSERT ... SELECT,
about 2.5 minutes on two cores at the default size.

Then every page of pages() is requested as its user would (a technologist, a hematologist, the lab's
admin, the superuser in the Django admin, the LIS with its API key), accepting gzip, and a table of
p50/p95, the number of queries and the bytes sent is printed, with the pages that miss the target.
"""

import argparse
import math
import os
import statistics
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.percentiles import percentile  # noqa: E402
from bench.web import BENCH_DIR, BROWSER, photograph_fields, write_crops  # noqa: E402

DEFAULT_CELLS = 2_500_000
PHOTOGRAPHS_PER_SAMPLE, CELLS_PER_PHOTOGRAPH = 2, 50
CELLS_PER_SAMPLE = PHOTOGRAPHS_PER_SAMPLE * CELLS_PER_PHOTOGRAPH
TARGET_P95_MS = 500
# A page keeps being timed for at most this long (at least MIN_REQUESTS times), so that one page
# gone slow (seconds a request) does not hold the whole table up.
PAGE_TIME_BUDGET_S = 15
MIN_REQUESTS = 5
GALLERY_ACCESSION = "SCALE-GALLERY-500"
SIGNED_ACCESSION = "SCALE-SIGNED-500"
ONE_CELL_ACCESSION = "SCALE-ONE-CELL-1000"
# The bundled networks' tasks by age: the 4-class network served the first quarter of the year,
# the bundled 8-class one the next half, a retrain on the lab's own cells the last quarter.
FOUR_CLASS_UNTIL_DAYS_AGO, BUNDLED_UNTIL_DAYS_AGO = 270, 90
# Shares of the types each network calls, as a lab's differentials run.
TYPE_SHARES = {
    "4class": (("NEUTROPHIL", 0.60), ("LYMPHOCYTE", 0.30), ("MONOCYTE", 0.07), ("EOSINOPHIL", 0.03)),
    "8class": (("NEUTROPHIL", 0.55), ("LYMPHOCYTE", 0.28), ("MONOCYTE", 0.07), ("EOSINOPHIL", 0.03),
               ("BASOPHIL", 0.01), ("IMMATURE_GRANULOCYTE", 0.02), ("ERYTHROBLAST", 0.02),
               ("PLATELET", 0.02)),
}
# The page sizes of webapp.selectors.history_page and of the API's lists (webapp/views/api.py).
HISTORY_PER_PAGE, API_PER_PAGE = 48, 50


def configure(database_url):
    """Django on ``database_url``; SystemExit unless it is a PostgreSQL database that answers."""
    import dj_database_url

    if not database_url or not dj_database_url.parse(database_url)["ENGINE"].endswith("postgresql"):
        raise SystemExit("bench/scale.py is about PostgreSQL's plans: set DATABASE_URL=postgres://... "
                         "(bench/web.py times the pages on SQLite)")
    os.environ.setdefault("LEUKOSCOPE_MEDIA_ROOT", str(BENCH_DIR / "scale-media"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ.setdefault("LEUKOSCOPE_LOG_LEVEL", "WARNING")
    os.environ.pop("LEUKOSCOPE_DEBUG", None)
    import django

    django.setup()
    from django.db import OperationalError, connection

    try:
        connection.ensure_connection()
    except OperationalError as error:
        raise SystemExit(f"cannot open DATABASE_URL's database: {' '.join(str(error).split())} "
                         "(create it first, e.g. createdb leukoscope_scale)") from None


def sql(statement, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def ensure_built(n_cells, rebuild):
    """Migrate and build the database for ``n_cells`` unless it holds that build already. A database
    holding anything else is refused before anything is written to it: a bench must never migrate,
    fill or empty a lab's own."""
    from django.core.management import call_command
    from django.db import connection

    from webapp.models import Sample

    samples, ours = 0, False
    if Sample._meta.db_table in connection.introspection.table_names():
        samples = Sample.objects.count()
        ours = Sample.objects.filter(accession_number=GALLERY_ACCESSION).exists()
    if samples and not ours:
        raise SystemExit("DATABASE_URL's database holds samples bench/scale.py did not make: "
                         "point it at a database of its own")
    if ours and rebuild:
        print("emptying the bench database (--rebuild) ...", flush=True)
        sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        ours = False
    call_command("migrate", verbosity=0)
    n_samples = max(1, n_cells // CELLS_PER_SAMPLE)
    if not ours:
        build(n_samples)
    elif samples - 3 != n_samples:  # less the three special samples
        raise SystemExit(f"the bench database holds {(samples - 3) * CELLS_PER_SAMPLE:,} cells' worth of "
                         f"samples, not {n_cells:,}: run again with --rebuild")


def build(n_samples):
    from django.db import transaction

    started = time.perf_counter()

    def progress(what):
        print(f"  [{time.perf_counter() - started:6.1f} s] {what}", flush=True)

    print(f"building {n_samples * CELLS_PER_SAMPLE:,} cells in {n_samples:,} samples (once) ...", flush=True)
    with transaction.atomic():
        # The foreign keys are deferred: checked at commit, one queued trigger event per row, which
        # for millions of rows costs minutes and gigabytes. The rows are made consistent here, so
        # the checks are skipped (needs a superuser or the right to set this parameter).
        sql("SET LOCAL session_replication_role = replica")
        users = make_users()
        versions = make_model_versions()
        progress("users, model versions")
        make_samples_and_photographs(n_samples, users, versions)
        progress("samples, photographs, fingerprint bands")
        reviewers = [user.pk for name, user in users.items() if name.startswith(("tech", "hema"))]
        cells = insert_cells(versions.values(), reviewers)
        progress(f"{cells:,} cells")
        make_special_samples(users, versions["site"], reviewers)
        progress("the gallery's, the signed and the one-cell-photographs samples")
        progress(f"{insert_reviews():,} cell reviews")
        progress(f"{insert_audit_trail():,} audit log rows")
    # VACUUM cannot run in a transaction: the planner's statistics, and the visibility map that lets
    # an index-only scan skip the table, as a database that has been running a while has them.
    from django.db import connection

    connection.ensure_connection()
    connection.connection.autocommit = True
    sql("VACUUM ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        progress(f"VACUUM ANALYZE; database size {cursor.fetchone()[0]}")


def make_users():
    """{username: user}: eight technologists, three hematologists, the lab's admin (staff), a
    superuser for the Django admin and the LIS's account, none with a usable password."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user_model = get_user_model()
    roles = {f"tech{n}": "technologist" for n in range(1, 9)}
    roles |= {f"hema{n}": "hematologist" for n in range(1, 4)}
    roles |= {"labadmin": "admin", "root": None, "lis": None}
    users = {}
    for name, role in roles.items():
        users[name] = user_model.objects.create_user(name, is_staff=name in ("labadmin", "root"),
                                                     is_superuser=name == "root")
        if role:
            users[name].groups.add(Group.objects.get(name=role))
    return users


def make_model_versions():
    """{"4class", "8class", "site"}: the bundled networks as a fresh install registers them, and a
    retrain on the lab's own cells (a copy of the bundled 8-class one), active."""
    from webapp.models import ModelVersion
    from webapp.services.model_versions import activate_version, ensure_default_model

    ensure_default_model()
    bundled = {version.task: version
               for version in ModelVersion.objects.filter(source=ModelVersion.Source.BUNDLED)}
    eight = bundled["8class"]
    copied = {field.attname: getattr(eight, field.attname) for field in ModelVersion._meta.concrete_fields
              if field.name not in ("id", "created_at", "status", "source")}
    site = ModelVersion.objects.create(**copied, status=ModelVersion.Status.READY,
                                       source=ModelVersion.Source.SITE)
    activate_version(site)
    return {"4class": bundled["4class"], "8class": eight, "site": site}


def make_samples_and_photographs(n_samples, users, versions):
    """The year's samples, oldest first, two done photographs each: signed from two days old (3 in 100
    signed twice, 1 in 100 reopened since, 1 in 100 never signed)."""
    import random

    from django.utils import timezone

    from webapp.models import Sample, SmearImage
    from webapp.services.uploads import index_fingerprints

    rng = random.Random(42)
    now = timezone.now()
    technologists = [user for name, user in users.items() if name.startswith("tech")]
    hematologists = [user for name, user in users.items() if name.startswith("hema")]
    # bulk_create would stamp every row "now"; the pages need a year of dates.
    for model in (Sample, SmearImage):
        model._meta.get_field("created_at").auto_now_add = False
    for first in range(0, n_samples, 1000):
        samples = []
        for number in range(first, min(n_samples, first + 1000)):
            created = now - timedelta(days=365 * (n_samples - number) / n_samples, hours=3)
            sample = Sample(accession_number=f"H26-{number:06d}", created_by=rng.choice(technologists),
                            created_at=created, note="May-Grunwald-Giemsa, x100 oil")
            roll = rng.random()
            if now - created >= timedelta(days=2) and roll >= 0.01:
                sign(sample, rng.choice(hematologists), created + timedelta(hours=rng.uniform(1, 20)))
                if roll >= 0.97:
                    sample.reopened_by, sample.reopened_at = rng.choice(hematologists), sample.signed_at
                    sample.reopen_reason, sample.times_signed = "Relabelled a monocyte", 2
                    sample.signed_at += timedelta(hours=1)
                elif roll >= 0.96:
                    sample.status, sample.reopened_by = Sample.Status.REOPENED, rng.choice(hematologists)
                    sample.reopened_at, sample.reopen_reason = sample.signed_at, "A second look at the blasts"
            samples.append(sample)
        Sample.objects.bulk_create(samples)
        photographs = []
        for sample in samples:
            days_ago = (now - sample.created_at).days
            version = versions["4class" if days_ago > FOUR_CLASS_UNTIL_DAYS_AGO
                               else "8class" if days_ago > BUNDLED_UNTIL_DAYS_AGO else "site"]
            photographs += make_photographs(sample, PHOTOGRAPHS_PER_SAMPLE, version, rng)
        SmearImage.objects.bulk_create(photographs)
        index_fingerprints(photographs)


def sign(sample, hematologist, when):
    from webapp.models import Sample

    sample.status, sample.signed_by, sample.signed_at, sample.times_signed = (
        Sample.Status.SIGNED, hematologist, when, 1)


def make_photographs(sample, count, version, rng):
    from webapp.models import SmearImage

    return [SmearImage(
        sample=sample, image=f"smears/{sample.created_at:%Y/%m/%d}/{sample.accession_number}-{number}.jpg",
        original_filename=f"field-{number + 1:02d}.jpg", width=2048, height=1536, file_size=900_000,
        status=SmearImage.Status.DONE, model_version=version, quality={"focus": 20.0, "exposure": 0.5},
        inference_runtime="litert-int8", created_at=sample.created_at, queued_at=sample.created_at,
        sent_at=sample.created_at, processed_at=sample.created_at + timedelta(minutes=1),
        **photograph_fields(rng, f"{sample.accession_number}-{number}"),
    ) for number in range(count)]


def type_by_roll(shares, roll):
    """SQL for the type whose share of [0, 1) the value ``roll`` falls in."""
    cases, upper = [], 0.0
    for name, share in shares[:-1]:
        upper += share
        cases.append(f"WHEN {roll} < {upper:.4f} THEN '{name}'")
    return f"CASE {' '.join(cases)} ELSE '{shares[-1][0]}' END"


# The cells of one version's photographs (of the samples in a range), cells_per_photograph each, in
# one statement: Python objects for millions of cells would take far longer. Confidence is skewed
# high as a network's is; below 0.82 (1 cell in 5) a cell is flagged; a flagged cell of a sample
# signed once is reviewed (sign-off demands it), 3 in 10 otherwise; the reviewer's type is drawn
# by the same shares, often the network's own.
CELLS_SQL = """
INSERT INTO webapp_cell (image_id, model_version_id, index, x0, y0, x1, y1, detection_score, crop, heatmap,
    "window", predicted_type, probabilities, confidence, binary_call, needs_review, corrected_type,
    reviewed_at, reviewed_by_id, cell_type, created_at, added_by_hand, count_partial, is_partial,
    first_look_type, view_factor, outlined)
SELECT image_id, %(version)s, n, 20 + 80 * mod(n, 25), 100 + 120 * (n / 25), 110 + 80 * mod(n, 25),
    190 + 120 * (n / 25), 0.9, 'cells/' || stem || '.jpg', 'heatmaps/' || stem || '.png',
    'windows/' || stem || '.png', predicted,
    jsonb_build_object(predicted, confidence, CASE WHEN predicted = 'LYMPHOCYTE' THEN 'MONOCYTE'
                                                   ELSE 'LYMPHOCYTE' END, 1 - confidence),
    confidence, COALESCE(%(binary_groups)s::jsonb ->> predicted, ''), needs_review, corrected,
    CASE WHEN corrected <> '' THEN created_at + interval '3 hours' END,
    CASE WHEN corrected <> '' THEN reviewer END, COALESCE(NULLIF(corrected, ''), predicted), created_at,
    false, false, partial_roll < 0.04, '', 1.0, true
FROM (
    SELECT typed.*, CASE WHEN needs_review AND (signed_once OR review_roll < 0.3)
                         THEN {relabelled} ELSE '' END AS corrected
    FROM (
        SELECT rolled.*, {predicted} AS predicted, confidence < 0.82 AS needs_review
        FROM (
            SELECT i.id AS image_id, i.id || '-' || n AS stem, n, i.processed_at AS created_at,
                s.times_signed > 0 AS signed_once, 1 - 0.7 * power(random(), 6) AS confidence,
                random() AS type_roll, random() AS review_roll, random() AS relabel_roll,
                random() AS partial_roll,
                (%(reviewers)s::int[])[1 + floor(random() * cardinality(%(reviewers)s::int[]))::int]
                    AS reviewer
            FROM webapp_smearimage i JOIN webapp_sample s ON s.id = i.sample_id
            CROSS JOIN generate_series(0, %(cells_per_photograph)s - 1) AS n
            WHERE i.model_version_id = %(version)s AND i.sample_id BETWEEN %(first)s AND %(last)s
        ) rolled
    ) typed
) reviewed
"""


def insert_cells(versions, reviewers, samples=None, cells_per_photograph=CELLS_PER_PHOTOGRAPH):
    """Cells for the done photographs of ``samples`` (a (first, last) id range; all where None)."""
    import json

    from classifier.labels import BINARY_GROUP

    first, last = samples or (0, 2**31 - 1)
    inserted = 0
    for version in versions:
        shares = TYPE_SHARES[version.task]
        statement = CELLS_SQL.format(predicted=type_by_roll(shares, "type_roll"),
                                     relabelled=type_by_roll(shares, "relabel_roll"))
        inserted += sql(statement, {"version": version.pk, "binary_groups": json.dumps(BINARY_GROUP),
                                    "reviewers": reviewers, "cells_per_photograph": cells_per_photograph,
                                    "first": first, "last": last})
    return inserted


def make_special_samples(users, version, reviewers):
    """The gallery's 500-cell sample (in progress), its signed twin with stored crops (which the
    report and its PDF embed) and a sample of 1,000 one-cell photographs (an analyser's pictures)."""
    import random

    from django.utils import timezone

    from webapp.models import Sample, SmearImage
    from webapp.services.uploads import index_fingerprints

    rng = random.Random(5)
    now = timezone.now()
    for accession, photographs, cells_each, kind in (
            (GALLERY_ACCESSION, 5, 100, Sample.Photographs.SMEAR_FIELDS),
            (SIGNED_ACCESSION, 5, 100, Sample.Photographs.SMEAR_FIELDS),
            (ONE_CELL_ACCESSION, 1000, 1, Sample.Photographs.ONE_CELL_EACH)):
        sample = Sample(accession_number=accession, created_by=users["tech1"], created_at=now,
                        photographs=kind)
        if accession == SIGNED_ACCESSION:
            sign(sample, users["hema1"], now)
        sample.save()
        made = SmearImage.objects.bulk_create(make_photographs(sample, photographs, version, rng))
        index_fingerprints(made)
        insert_cells([version], reviewers, (sample.pk, sample.pk), cells_each)
        if accession == SIGNED_ACCESSION:
            write_crops(sample, rng)


def insert_reviews():
    """One CellReview for each reviewed cell, as webapp.services.review records it."""
    return sql("""INSERT INTO webapp_cellreview (cell_id, from_type, to_type, reviewed_at, reviewed_by_id)
                  SELECT id, predicted_type, corrected_type, reviewed_at, reviewed_by_id FROM webapp_cell
                  WHERE corrected_type <> '' ORDER BY reviewed_at""")


def insert_audit_trail():
    """django-auditlog's rows for what the build did, as the site writes them (webapp.audit: the
    sample's, photograph's and cell's ids in additional_data, which the sample's trail is found by)."""
    from django.contrib.contenttypes.models import ContentType

    from webapp.models import Cell, CellReview, Sample, SmearImage

    kinds = {model: ContentType.objects.get_for_model(model).pk
             for model in (Sample, SmearImage, Cell, CellReview)}
    # Each: object_pk, object_id, object_repr, action (0 create, 1 update), changes, timestamp,
    # actor_id, content_type_id, remote_addr, additional_data.
    selects = [
        f"""SELECT id::text, id, accession_number, 0,
                jsonb_build_object('accession_number', jsonb_build_array('None', accession_number),
                                   'status', jsonb_build_array('None', 'in_progress')),
                created_at, created_by_id, {kinds[Sample]}, '10.1.2.3'::inet,
                jsonb_build_object('sample_id', id)
            FROM webapp_sample""",
        f"""SELECT i.id::text, i.id, s.accession_number || ' / ' || i.original_filename, 0,
                jsonb_build_object('original_filename', jsonb_build_array('None', i.original_filename)),
                i.created_at, s.created_by_id, {kinds[SmearImage]}, '10.1.2.3'::inet,
                jsonb_build_object('sample_id', i.sample_id, 'image_id', i.id)
            FROM webapp_smearimage i JOIN webapp_sample s ON s.id = i.sample_id""",
        f"""SELECT i.id::text, i.id, s.accession_number || ' / ' || i.original_filename, 1,
                jsonb_build_object('status', jsonb_build_array('processing', 'done')),
                i.processed_at, NULL::int, {kinds[SmearImage]}, NULL::inet,
                jsonb_build_object('sample_id', i.sample_id, 'image_id', i.id,
                                   'note', 'classified by v' || i.model_version_id)
            FROM webapp_smearimage i JOIN webapp_sample s ON s.id = i.sample_id""",
        f"""SELECT c.id::text, c.id, 'cell ' || c.id, 1,
                jsonb_build_object('corrected_type', jsonb_build_array('', c.corrected_type)),
                c.reviewed_at, c.reviewed_by_id, {kinds[Cell]}, '10.1.2.4'::inet,
                jsonb_build_object('sample_id', i.sample_id, 'image_id', c.image_id, 'cell_id', c.id)
            FROM webapp_cell c JOIN webapp_smearimage i ON i.id = c.image_id WHERE c.corrected_type <> ''""",
        f"""SELECT r.id::text, r.id, 'review of cell ' || r.cell_id, 0,
                jsonb_build_object('from_type', jsonb_build_array('None', r.from_type),
                                   'to_type', jsonb_build_array('None', r.to_type)),
                r.reviewed_at, r.reviewed_by_id, {kinds[CellReview]}, '10.1.2.4'::inet,
                jsonb_build_object('sample_id', i.sample_id, 'cell_id', r.cell_id)
            FROM webapp_cellreview r JOIN webapp_cell c ON c.id = r.cell_id
            JOIN webapp_smearimage i ON i.id = c.image_id""",
        f"""SELECT id::text, id, accession_number, 1,
                jsonb_build_object('status', jsonb_build_array('in_progress', 'signed')),
                signed_at, signed_by_id, {kinds[Sample]}, '10.1.2.5'::inet,
                jsonb_build_object('sample_id', id)
            FROM webapp_sample WHERE signed_at IS NOT NULL""",
    ]
    rows = " UNION ALL ".join(f"({select})" for select in selects)
    # In time order, as the site writes them: the log's ids follow its timestamps.
    return sql(f"""INSERT INTO auditlog_logentry (object_pk, object_id, object_repr, action, changes,
                       timestamp, actor_id, content_type_id, remote_addr, additional_data, changes_text)
                   SELECT *, '' FROM ({rows}) AS trail ORDER BY 6""")


def pages():
    """(name, URL, who) of each page timed; who is a username, or "lis" for its API key."""
    from django.urls import reverse
    from django.utils import timezone

    from webapp.models import Cell, ModelVersion, Sample
    from webapp.selectors import HISTORY_COUNT_CAP

    gallery, signed, one_cell = (Sample.objects.get(accession_number=accession).pk
                                 for accession in (GALLERY_ACCESSION, SIGNED_ACCESSION, ONE_CELL_ACCESSION))
    samples = Sample.objects.count()
    middle = Sample.objects.order_by("pk").values_list("accession_number", flat=True)[samples // 2]
    # The late pages a reader reaches: the counted lists stop counting at the cap, so their last page does.
    counted_cells = min(Cell.objects.count(), HISTORY_COUNT_CAP)
    year_ago = (timezone.now() - timedelta(days=366)).replace(hour=0, minute=0, second=0, microsecond=0)
    # As the API counts them: signed now (not reopened), since that moment.
    signed_in_a_year = Sample.objects.filter(status=Sample.Status.SIGNED, signed_at__gte=year_ago)
    # A poll's last page, reached as its "next" reaches it: after the result the page before ended with.
    last_page_size = (signed_in_a_year.count() - 1) % 200 + 1
    before_last = list(signed_in_a_year.order_by("-signed_at", "-id")[last_page_size:last_page_size + 1])
    last_signed_page = f"signed_since={year_ago:%Y-%m-%dT%H:%M:%SZ}"
    if before_last:
        last_signed_page = (f"signed_since={before_last[0].signed_at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"
                            f"&after={before_last[0].pk}")
    active = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE).pk
    four_class = ModelVersion.objects.get(task="4class").pk
    history, sample_list = reverse("lab:history"), reverse("lab:sample-list")
    api_samples, api_cells = reverse("lab:api-samples"), reverse("lab:api-cells")
    return [
        ("home, technologist", reverse("home"), "tech1"),
        ("home, hematologist", reverse("home"), "hema1"),
        ("home, lab admin", reverse("home"), "labadmin"),
        ("samples list", sample_list, "tech1"),
        ("samples list, not signed", f"{sample_list}?status=unsigned", "tech1"),
        ("samples list, awaiting review, oldest first", f"{sample_list}?status=to_review&order=oldest",
         "tech1"),
        ("samples list, waiting for a signature, oldest first", f"{sample_list}?status=to_sign&order=oldest",
         "hema1"),
        ("samples list, accession search", f"{sample_list}?q={middle}", "tech1"),
        ("samples list, last page", f"{sample_list}?page={math.ceil(samples / 25)}", "tech1"),
        ("history", history, "tech1"),
        ("history, last page", f"{history}?page={math.ceil(counted_cells / HISTORY_PER_PAGE)}", "tech1"),
        ("history, type", f"{history}?cell_type=MONOCYTE", "tech1"),
        ("history, type + confidence 40-60% + not reviewed",
         f"{history}?cell_type=EOSINOPHIL&confidence_min=40&confidence_max=60&reviewed=no", "tech1"),
        ("history, rare: reviewed monocyte >95%",
         f"{history}?cell_type=MONOCYTE&reviewed=yes&confidence_min=95", "tech1"),
        ("history, 4-class version", f"{history}?model_version={four_class}", "tech1"),
        ("sample page, 500 cells", reverse("lab:sample-detail", args=[gallery]), "tech1"),
        ("sample page, 1,000 one-cell photographs", reverse("lab:sample-detail", args=[one_cell]), "tech1"),
        ("cell gallery, 500 cells", reverse("lab:sample-gallery", args=[gallery]), "tech1"),
        ("report page, 500 cells, signed", reverse("lab:sample-report", args=[signed]), "hema1"),
        ("report PDF, 500 cells, signed", reverse("lab:sample-report-pdf", args=[signed]), "hema1"),
        ("CSV export, 500 cells, signed", reverse("lab:sample-export", args=[signed]), "hema1"),
        ("model versions list", reverse("models:list"), "labadmin"),
        ("model version page, active", reverse("models:detail", args=[active]), "labadmin"),
        ("admin sample, 1,000 photographs",
         reverse("admin:webapp_sample_change", args=[one_cell]), "root"),
        ("admin photographs list", reverse("admin:webapp_smearimage_changelist"), "root"),
        ("admin cells list", reverse("admin:webapp_cell_changelist"), "root"),
        ("admin cell reviews list", reverse("admin:webapp_cellreview_changelist"), "root"),
        ("admin audit log list", reverse("admin:auditlog_logentry_changelist"), "root"),
        ("API samples, signed", f"{api_samples}?status=signed", "lis"),
        ("API samples signed in a year, last page of 200",
         f"{api_samples}?{last_signed_page}&page_size=200",
         "lis"),
        ("API cells, last page", f"{api_cells}?page={math.ceil(counted_cells / API_PER_PAGE)}", "lis"),
        ("API FHIR bundle, 500 cells, signed", reverse("lab:api-sample-fhir", args=[signed]), "lis"),
    ]


def clients():
    """{who: a test Client signed in as them}; the LIS's with a fresh API key."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from webapp.services.api_tokens import create_token

    signed_in = {}
    for name in ("tech1", "hema1", "labadmin", "root"):
        signed_in[name] = Client(**BROWSER)
        signed_in[name].force_login(get_user_model().objects.get(username=name))
    _, key = create_token(get_user_model().objects.get(username="lis"), "bench/scale.py")
    signed_in["lis"] = Client(**BROWSER, HTTP_AUTHORIZATION=f"Bearer {key}")
    return signed_in


def measure(client, url, n_requests):
    """(status, p50 ms, p95 ms, queries, bytes). Unlike bench/web.py's, a page that answers
    anything but 200 is reported in the table, not raised: the rest of the table still comes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches and the template loader
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    # Now: the captured queries are read from the connection's log, which each request empties.
    queries = len(captured)
    timings = []
    deadline = time.perf_counter() + PAGE_TIME_BUDGET_S
    while len(timings) < n_requests and (len(timings) < MIN_REQUESTS or time.perf_counter() < deadline):
        started = time.perf_counter()
        client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    return (response.status_code, statistics.median(timings), percentile(timings, 0.95), queries,
            len(response.content))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=DEFAULT_CELLS,
                        help="cells of the year's samples (100 a sample); the rest in proportion")
    parser.add_argument("--requests", type=int, default=20, help="timed requests a page")
    parser.add_argument("--rebuild", action="store_true", help="empty the bench database and build it again")
    parser.add_argument("--page", action="append", default=[], metavar="WORDS",
                        help="time only the pages whose name holds WORDS (repeatable)")
    args = parser.parse_args()

    configure(os.environ.get("DATABASE_URL"))
    ensure_built(args.cells, args.rebuild)
    from webapp.models import Cell, Sample

    signed_in = clients()
    print(f"{Cell.objects.count():,} cells, {Sample.objects.count():,} samples on PostgreSQL; "
          f"up to {args.requests} requests a page")
    print(f"{'page':52} {'status':>6} {'p50 ms':>8} {'p95 ms':>8} {'queries':>7} {'KiB sent':>9}")
    missed = []
    for name, url, who in pages():
        if args.page and not any(words in name for words in args.page):
            continue
        status, p50, p95, queries, sent = measure(signed_in[who], url, args.requests)
        if p95 > TARGET_P95_MS:
            missed.append(name)
        flag = "  over target" if p95 > TARGET_P95_MS else ""
        print(f"{name:52} {status:>6} {p50:8.1f} {p95:8.1f} {queries:7} {sent / 1024:9.1f}{flag}", flush=True)
    print(f"target p95 <= {TARGET_P95_MS} ms: " + (f"missed by {len(missed)}: {', '.join(missed)}"
                                                   if missed else "every page meets it"))


if __name__ == "__main__":
    main()
