"""How fast the lab pages render with 100,000 stored cells.

    python bench/web.py [--cells 100000] [--requests 60] [--rebuild]

Builds (once) a separate SQLite database under var/bench/, with samples of two photographs and
ten cells each spread over a year (each photograph with its own checksum and fingerprints, indexed
as an upload indexes them, which the sample page searches for copies held by other samples), and
one sample of 500 cells for its cell gallery and one signed sample of 500 cells (with stored
crops, which its PDF report embeds), then renders the history page (with and without filters),
the sample page, the gallery, the report (page, PDF, CSV) and the LIS's reads (FHIR, signed
results) through Django's test Client as a signed-in user, accepting gzip as a browser does,
and prints p50/p95 per page and the bytes each sends. Target: p95 <= 150 ms each. Then times
the gallery relabelling 2,000 cells at once (the most it takes), the longest write a reviewer
makes.
"""

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.percentiles import percentile  # noqa: E402  (after the path above)

# LEUKOSCOPE_BENCH_DIR: a folder of its own (the test that runs this bench on a tiny scale).
BENCH_DIR = Path(os.environ.get("LEUKOSCOPE_BENCH_DIR") or REPO_ROOT / "var" / "bench")
CELLS_PER_IMAGE = 10
IMAGES_PER_SAMPLE = 2
TYPES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
TARGET_P95_MS = 150
GALLERY_ACCESSION = "BENCH-GALLERY-500"
# The same kind of 500-cell sample, signed: what a hematologist prints and the LIS fetches as FHIR.
SIGNED_ACCESSION = "BENCH-SIGNED-500"
GALLERY_IMAGES, GALLERY_CELLS_PER_IMAGE = 5, 100  # a 500-cell differential in five fields
# The largest selection the gallery relabels at once (forms.MAX_CELLS_PER_REVIEW), timed as a write:
# SQLite's write lock is held that long, and every other writer waits.
RELABEL_ACCESSION, RELABEL_IMAGES = "BENCH-RELABEL-2000", 20
WRITES = 5
# Each request as a browser sends it: accepting gzip, so the timings include the compression.
BROWSER = {"HTTP_HOST": "localhost", "HTTP_ACCEPT_ENCODING": "gzip, deflate, br"}


def configure(database):
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.setdefault("LEUKOSCOPE_MEDIA_ROOT", str(BENCH_DIR / "media"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ.setdefault("LEUKOSCOPE_LOG_LEVEL", "WARNING")
    os.environ.pop("LEUKOSCOPE_DEBUG", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def photograph_fields(rng, name):
    """A stored photograph's checksum and fingerprints, each its own, as an upload gives them:
    the sample page searches every other photograph's fingerprint bands for copies of its own."""
    import hashlib

    return {
        "checksum": hashlib.sha256(name.encode()).hexdigest(),
        "fingerprint": f"{rng.getrandbits(256):064x}",
        "turned_fingerprints": [f"{rng.getrandbits(256):064x}" for _ in range(7)],
    }


def populate(n_cells, seed=7):
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from classifier.labels import BINARY_GROUP
    from webapp.models import Cell, ModelVersion, Sample, SmearImage
    from webapp.services.uploads import index_fingerprints

    if Cell.objects.count() >= n_cells:
        if SmearImage.objects.filter(fingerprint="").exists():
            raise SystemExit(f"{BENCH_DIR} holds a bench database built before photographs had "
                             "fingerprints: run again with --rebuild")
        return
    print(f"building {n_cells:,} cells in {BENCH_DIR} (once) ...", flush=True)
    started = time.perf_counter()
    rng = random.Random(seed)
    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    versions = [
        ModelVersion.objects.create(architecture="leukonet", task="4class", status=status,
                                    class_names=list(TYPES), model_sha256=f"bench{status}")
        for status in (ModelVersion.Status.READY, ModelVersion.Status.ACTIVE)
    ]
    per_sample = CELLS_PER_IMAGE * IMAGES_PER_SAMPLE
    n_samples = n_cells // per_sample
    now = timezone.now()
    # bulk_create would stamp every row "now"; the history needs a year of dates.
    for model in (Sample, SmearImage, Cell):
        model._meta.get_field("created_at").auto_now_add = False
    for start in range(0, n_samples, 500):
        with transaction.atomic():
            samples = []
            for number in range(start, min(n_samples, start + 500)):
                created = now - timedelta(minutes=(n_samples - number) * 525_600 / n_samples)
                samples.append(
                    Sample(accession_number=f"H26-{number:06d}", created_by=user, created_at=created)
                )
            Sample.objects.bulk_create(samples)
            images = []
            for sample in samples:
                for index in range(IMAGES_PER_SAMPLE):
                    images.append(SmearImage(
                        sample=sample, image=f"smears/bench/{sample.accession_number}-{index}.jpg",
                        original_filename=f"{sample.accession_number}-{index}.jpg", width=640, height=480,
                        file_size=100_000, status=SmearImage.Status.DONE,
                        model_version=versions[1] if sample.pk % 5 else versions[0],
                        quality={"focus": 20.0}, created_at=sample.created_at, processed_at=sample.created_at,
                        **photograph_fields(rng, f"{sample.accession_number}-{index}"),
                    ))
            SmearImage.objects.bulk_create(images)
            index_fingerprints(images)
            cells = []
            for image in images:
                for index in range(CELLS_PER_IMAGE):
                    predicted = rng.choice(TYPES)
                    confidence = rng.uniform(0.3, 1.0)
                    reviewed = rng.random() < 0.1
                    corrected = rng.choice(TYPES) if reviewed else ""
                    others = (1 - confidence) / 3
                    cells.append(Cell(
                        image=image, model_version=image.model_version, index=index,
                        x0=20 + 50 * index, y0=40, x1=80 + 50 * index, y1=120,
                        crop=f"cells/bench/{image.pk}-{index}.jpg", predicted_type=predicted,
                        probabilities={name: (confidence if name == predicted else others) for name in TYPES},
                        confidence=confidence, binary_call=BINARY_GROUP[predicted],
                        needs_review=confidence < 0.8, corrected_type=corrected,
                        reviewed_by=user if reviewed else None,
                        reviewed_at=image.created_at if reviewed else None,
                        cell_type=corrected or predicted, created_at=image.created_at,
                    ))
            Cell.objects.bulk_create(cells, batch_size=2000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"built {Cell.objects.count():,} cells in {time.perf_counter() - started:.0f} s", flush=True)


def gallery_sample(seed=11, accession=GALLERY_ACCESSION, signed_by=None, images=GALLERY_IMAGES):
    """The sample of 500 cells the gallery is timed on, made once beside the others; with
    ``signed_by``, stored as that user's signed result (the fields the sign-off writes, without the
    reviews its refusals would ask for first: the bench times reading a result, not signing it)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from classifier.labels import BINARY_GROUP
    from webapp.models import Cell, ModelVersion, Sample, SmearImage
    from webapp.services.uploads import index_fingerprints

    existing = Sample.objects.filter(accession_number=accession).first()
    if existing:
        return existing
    rng = random.Random(seed)
    now = timezone.now()  # populate() turns auto_now_add off: every record is dated here
    user = get_user_model().objects.get(username="bench")
    version = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    with transaction.atomic():
        sample = Sample.objects.create(accession_number=accession, created_by=user, created_at=now)
        for number in range(images):
            image = SmearImage.objects.create(
                sample=sample, image=f"smears/bench/{accession}-{number}.jpg",
                original_filename=f"gallery-{number}.jpg", width=2048, height=1536, file_size=900_000,
                status=SmearImage.Status.DONE, model_version=version, created_at=now,
                **photograph_fields(rng, f"{accession}-{number}"),
            )
            index_fingerprints([image])
            cells = []
            for index in range(GALLERY_CELLS_PER_IMAGE):
                predicted = rng.choice(TYPES)
                confidence = rng.uniform(0.3, 1.0)
                reviewed = rng.random() < 0.1
                corrected = rng.choice(("BASOPHIL", "ERYTHROBLAST", "PLATELET", *TYPES)) if reviewed else ""
                cells.append(Cell(
                    image=image, model_version=version, index=index, x0=index, y0=0, x1=index + 60,
                    y1=60, crop=f"cells/bench/{accession}-{number}-{index}.jpg", predicted_type=predicted,
                    probabilities={name: confidence if name == predicted else (1 - confidence) / 3
                                   for name in TYPES},
                    confidence=confidence, binary_call=BINARY_GROUP[predicted],
                    needs_review=confidence < 0.8, corrected_type=corrected,
                    reviewed_by=user if reviewed else None, cell_type=corrected or predicted,
                    is_partial=rng.random() < 0.03, created_at=now,
                ))
            Cell.objects.bulk_create(cells)
        if signed_by is not None:
            write_crops(sample, rng)
            sample.status, sample.signed_by, sample.signed_at = Sample.Status.SIGNED, signed_by, now
            sample.times_signed = 1
            sample.save(update_fields=["status", "signed_by", "signed_at", "times_signed"])
    return sample


def write_crops(sample, rng):
    """A stored JPEG for each cell of ``sample``, the size of a real crop: the report and its PDF
    show a few cells of each type, which a missing file would leave out."""
    import io

    import numpy as np
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from PIL import Image

    noise = np.random.default_rng(rng.getrandbits(32))
    for crop in sample.images.values_list("cells__crop", flat=True):
        pixels = noise.integers(120, 230, size=(110, 110, 3), dtype=np.uint8)
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, "JPEG", quality=90)
        default_storage.save(crop, ContentFile(encoded.getvalue()))


def measure(client, url, n_requests):
    for _ in range(3):  # warm caches and the template loader
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    timings = []
    for _ in range(n_requests):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return statistics.median(timings), percentile(timings, 0.95), len(response.content)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--rebuild", action="store_true", help="start from an empty bench database")
    args = parser.parse_args()

    database = BENCH_DIR / "web.sqlite3"
    if args.rebuild:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    configure(database)
    populate(args.cells)

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse

    from webapp.models import Cell, ModelVersion, Sample

    client = Client(**BROWSER)
    client.force_login(get_user_model().objects.get(username="bench"))
    # A hematologist's home page also lists the samples awaiting a signature.
    signer, _ = get_user_model().objects.get_or_create(username="bench-signer")
    signer.groups.add(Group.objects.get(name="hematologist"))
    signer_client = Client(**BROWSER)
    signer_client.force_login(signer)
    # A technologist's sample page carries the type buttons on every row; the staff account above,
    # without a lab role, is offered none.
    technologist, _ = get_user_model().objects.get_or_create(username="bench-technologist")
    technologist.groups.add(Group.objects.get(name="technologist"))
    technologist_client = Client(**BROWSER)
    technologist_client.force_login(technologist)
    gallery = gallery_sample()
    signed = gallery_sample(seed=13, accession=SIGNED_ACCESSION, signed_by=signer)
    samples = list(Sample.objects.exclude(pk__in=[gallery.pk, signed.pk]).order_by("?")
                   .values_list("pk", "accession_number")[:3])
    ready = ModelVersion.objects.filter(status=ModelVersion.Status.READY).values_list("pk", flat=True).first()
    today = Cell.objects.order_by("-created_at").values_list("created_at", flat=True).first().date()
    history = reverse("lab:history")
    gallery_results = reverse("lab:sample-results", args=[gallery.pk])
    gallery_first_image = gallery.images.order_by("pk").values_list("pk", flat=True).first()
    pages = [
        ("history, no filter", history),
        ("history, page 100", f"{history}?page=100"),
        ("history, table view", f"{history}?view=table"),
        ("history, type", f"{history}?cell_type=MONOCYTE"),
        ("history, type + confidence 40-60% + not reviewed",
         f"{history}?cell_type=EOSINOPHIL&confidence_min=40&confidence_max=60&reviewed=no"),
        ("history, reviewed", f"{history}?reviewed=yes"),
        ("history, flagged for review", f"{history}?needs_review=yes"),
        ("history, accession", f"{history}?accession={samples[0][1]}"),
        ("history, last 30 days + older version",
         f"{history}?date_from={today - timedelta(days=30)}&date_to={today}&model_version={ready}"),
        ("history, rare: reviewed monocyte >95%",
         f"{history}?cell_type=MONOCYTE&reviewed=yes&confidence_min=95"),
        ("sample page", reverse("lab:sample-detail", args=[samples[1][0]])),
        ("sample page (another)", reverse("lab:sample-detail", args=[samples[2][0]])),
        ("sample status JSON", reverse("lab:sample-status", args=[samples[1][0]])),
        ("cell gallery, 500 cells", reverse("lab:sample-gallery", args=[gallery.pk])),
        ("sample page, 500 cells", reverse("lab:sample-detail", args=[gallery.pk])),
        ("sample page, 500 cells, a technologist's", reverse("lab:sample-detail", args=[gallery.pk]),
         technologist_client),
        # What the sample page fetches after each review: its photograph's card alone, and the
        # whole results part it fetched before.
        ("sample page after a review, 500 cells", f"{gallery_results}?image={gallery_first_image}"),
        ("sample results part, 500 cells (all photographs)", gallery_results),
        ("report page, 500 cells", reverse("lab:sample-report", args=[gallery.pk])),
        ("report PDF, 500 cells", reverse("lab:sample-report-pdf", args=[gallery.pk])),
        ("CSV export, 500 cells", reverse("lab:sample-export", args=[gallery.pk])),
        ("report PDF, 500 cells, signed", reverse("lab:sample-report-pdf", args=[signed.pk])),
        ("API FHIR bundle, 500 cells, signed", reverse("lab:api-sample-fhir", args=[signed.pk])),
        ("API signed results since 30 days ago",
         f"{reverse('lab:api-samples')}?signed_since={today - timedelta(days=30)}T00:00:00Z"),
        ("API cells, type filter", f"{reverse('lab:api-cells')}?cell_type=LYMPHOCYTE"),
        ("API sample", reverse("lab:api-sample", args=[samples[1][0]])),
        ("sample list, not signed", f"{reverse('lab:sample-list')}?status=unsigned"),
        ("home page", reverse("home")),
        ("home page, a hematologist's", reverse("home"), signer_client),
    ]
    print(f"{Cell.objects.count():,} cells, {Sample.objects.count():,} samples; "
          f"{args.requests} requests each")
    print(f"{'page':52} {'p50 ms':>8} {'p95 ms':>8} {'KiB sent':>9}")
    worst = 0.0
    for name, url, *who in pages:
        p50, p95, sent = measure(who[0] if who else client, url, args.requests)
        worst = max(worst, p95)
        flag = "" if p95 <= TARGET_P95_MS else "  over target"
        print(f"{name:52} {p50:8.1f} {p95:8.1f} {sent / 1024:9.1f}{flag}", flush=True)
    print(f"worst p95 {worst:.1f} ms (target {TARGET_P95_MS} ms)")
    relabel_all(gallery_sample(seed=17, accession=RELABEL_ACCESSION, images=RELABEL_IMAGES),
                technologist_client)


def relabel_all(sample, client):
    """Time the gallery's relabel of every cell of ``sample`` at once, to one type and back."""
    from django.urls import reverse

    from webapp.models import Cell

    cells = list(Cell.objects.filter(image__sample=sample).values_list("pk", flat=True))
    url = reverse("lab:gallery-review", args=[sample.pk])
    timings = []
    for number in range(WRITES):
        started = time.perf_counter()
        # As the gallery's script sends them: one field, the numbers joined by commas.
        response = client.post(url, {"cells": ",".join(map(str, cells)),
                                     "cell_type": ("MONOCYTE", "LYMPHOCYTE")[number % 2]},
                               HTTP_ACCEPT="application/json")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:500]
    print(f"{'gallery relabel, ' + format(len(cells), ',') + ' cells at once (a write)':52} "
          f"{statistics.median(timings):8.1f} {max(timings):8.1f}  (max; SQLite's write lock is held "
          "this long)")


if __name__ == "__main__":
    main()
