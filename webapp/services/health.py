"""What /healthz reports: can we reach the database, the broker and a worker (one that takes
photographs and can use its media folder), which model serves, and whether any work is stuck.

Quick by design (a few milliseconds): monitoring calls it often, and a load balancer may give up
on a slow answer. The broker is asked with one PING on a client that reconnects by itself after a
Redis restart, and the workers are read from the roll they keep in Redis (webapp.broker) rather
than pinged, which would wait a whole timeout for answers.
"""

import shutil
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

from webapp.broker import MediaFolderWatch, broker_client, consumers_of, live_workers, worker_marks
from webapp.celery import app as celery_app
from webapp.models import ModelVersion, SmearImage
from webapp.queueing import CLASSIFY_QUEUE, TRAIN_QUEUE
from webapp.selectors import abandoned_trainings, stuck_images
from webapp.wording import count_of, megabytes


def classify_workers_running():
    """Whether some worker takes the classify queue now; None where the broker cannot be asked (the
    sample page then says the queue cannot be reached).

    A worker that cannot use its media folder counts: it takes the photographs and puts them back
    in the queue, each card saying why (services.classification.StorageUnreachable), and /healthz
    names the worker and its folder. The page's note, that no worker is running, would not be true.
    """
    try:
        return bool(consumers_of(live_workers(celery_app.conf.broker_url), CLASSIFY_QUEUE))
    except (redis.RedisError, OSError):
        return None


def disk_space(free, what, refused):
    """A check's verdict on ``free`` bytes left on a disk, against the settings: {"ok", "free_bytes"},
    with "error" where an upload of the largest size accepted would not fit (the lab meets it now:
    ``refused`` says what is then refused) and "warning" where less than LEUKOSCOPE_LOW_DISK_MB is
    left (it will). ``what`` names the folder in the sentence."""
    result = {"ok": free >= settings.MAX_UPLOAD_BYTES, "free_bytes": free}
    if not result["ok"]:
        result["error"] = (f"{what} has {megabytes(free)} left on its disk, less than one upload of "
                           f"{megabytes(settings.MAX_UPLOAD_BYTES)} (LEUKOSCOPE_MAX_UPLOAD_BYTES): free "
                           f"space there, or {refused}")
    elif free < settings.LOW_DISK_BYTES:
        result["warning"] = (f"{what} has {megabytes(free)} left on its disk, under "
                             f"LEUKOSCOPE_LOW_DISK_MB={settings.LOW_DISK_BYTES // 1024 // 1024}: free space "
                             "there before it fills")
    return result


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    if connection.vendor != "sqlite":
        return {"ok": True}  # a PostgreSQL server's disk is its own to watch
    folder = Path(connection.settings_dict["NAME"]).parent
    return disk_space(shutil.disk_usage(folder).free, f"the SQLite database's folder {folder}",
                      "every change is refused once it is full")


def _check_broker():
    broker_client(celery_app.conf.broker_url).ping()
    return {"ok": True}


def _media_usable(marks):
    """Of ``marks``, the names of the workers that can use their media folder. One that finds no
    folder counts while this web server has none either: nothing is stored yet (the first upload
    makes the folder), so it misses nothing."""
    missing = any(mark.media and mark.media.get("missing") for mark in marks.values())
    nothing_stored = missing and not Path(settings.MEDIA_ROOT).is_dir()
    return {name for name, mark in marks.items()
            if mark.media_usable or (nothing_stored and mark.media.get("missing"))}


def _media_state(mark, counted):
    if mark.media is None:
        return {"usable": True, "root": None, "note": "not reported (a worker of an older release)"}
    if counted and not mark.media["usable"]:
        return dict(mark.media, note="not held against it: this web server has stored nothing yet")
    return mark.media


def _check_workers():
    """A worker must take the classify queue, and one of those must be able to use its media
    folder, or photographs wait or fail; one for the train queue is reported, not required (a
    retraining waits for it, and a lab retrains seldom)."""
    marks = worker_marks(celery_app.conf.broker_url)
    if not marks:
        return {"ok": False, "error": "no Celery worker answered"}
    workers = {name: mark.queues for name, mark in marks.items()}
    takers = {queue: consumers_of(workers, queue) for queue in (CLASSIFY_QUEUE, TRAIN_QUEUE)}
    usable = _media_usable(marks)
    unusable = {queue: [name for name in names if name not in usable] for queue, names in takers.items()}
    result = {"ok": bool(takers[CLASSIFY_QUEUE]) and unusable[CLASSIFY_QUEUE] != takers[CLASSIFY_QUEUE],
              "workers": sorted(workers), "queues": takers,
              "media": {name: _media_state(mark, name in usable) for name, mark in sorted(marks.items())}}

    def problems(names):
        return "; ".join(f"{name} {marks[name].media['problem']}" for name in names)

    warnings = []
    classify, broken = takers[CLASSIFY_QUEUE], unusable[CLASSIFY_QUEUE]
    if not classify:
        result["error"] = (f"no worker takes the {CLASSIFY_QUEUE} queue, so photographs wait (workers: "
                           f"{', '.join(sorted(workers))})")
    elif len(broken) == len(classify) == 1:
        result["error"] = f"the {CLASSIFY_QUEUE} worker {problems(broken)}, so every photograph fails"
    elif broken == classify:
        result["error"] = (f"no {CLASSIFY_QUEUE} worker can use its media folder, so every photograph "
                           f"fails: {problems(broken)}")
    elif broken:
        warnings.append(f"the photographs these {CLASSIFY_QUEUE} workers take fail: {problems(broken)}")
    if not takers[TRAIN_QUEUE]:
        warnings.append(f"no worker takes the {TRAIN_QUEUE} queue: a retraining would wait")
    elif unusable[TRAIN_QUEUE] == takers[TRAIN_QUEUE]:
        # Training reads the reviewed cells' crops from the media folder, and leaves out those it
        # cannot find.
        warnings.append(f"a retraining would leave out the lab's reviewed cells: "
                        f"{problems(unusable[TRAIN_QUEUE])}")
    if warnings:
        result["warning"] = "; ".join(warnings)
    return result


_storage_watches = {}  # media folder -> broker.MediaFolderWatch: a mount that hangs holds up no answer


def _check_storage():
    """Whether this web server can store uploads in its media folder (the workers report their own
    under worker.media): one that cannot refuses every upload."""
    root = str(settings.MEDIA_ROOT)
    state = _storage_watches.setdefault(root, MediaFolderWatch(root)).state()
    if state["usable"]:
        # A probe of 16 bytes passes on a disk with no room for a photograph: uploads were refused,
        # and the workers could store no crop, while this said "ok".
        if "free_bytes" not in state:
            return {"ok": True, "root": root}
        return {**disk_space(state["free_bytes"], f"LEUKOSCOPE_MEDIA_ROOT={root}",
                             "uploads and the workers' pictures are refused"), "root": root}
    # Before the first upload, which makes it. Once photographs are stored, a missing folder is a
    # shared mount missing here: an upload would go to the local disk, out of the workers' sight.
    if state.get("missing") and not SmearImage.objects.exists():
        return {"ok": True, "root": root, "note": "no photograph stored yet"}
    return {"ok": False, "root": root, "error": f"this web server {state['problem']}, so every upload "
                                                "is refused"}


def _check_work():
    """Photographs and trainings that wait past the settings: what the reconciler should take
    back. Any here long means the reconciler is not running, or cannot reach the broker."""
    stuck = stuck_images()
    queued = stuck.filter(status=SmearImage.Status.QUEUED).count()
    processing = stuck.filter(status=SmearImage.Status.PROCESSING).count()
    trainings = abandoned_trainings().count()
    result = {"ok": not (queued or processing or trainings), "queued_photographs": queued,
              "processing_photographs": processing, "abandoned_trainings": trainings}
    if not result["ok"]:
        result["error"] = (f"{count_of(queued, 'photograph')} queued and {processing} processing past "
                           f"their time, {count_of(trainings, 'training')} without a heartbeat")
    return result


def _active_model():
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        return {"ok": False, "error": "no model version is active"}
    return {"ok": True, "version": version.label, "architecture": version.architecture,
            "task": version.task}


def _outcome(check):
    try:
        return check()
    except Exception as exc:  # any failure of a dependency is what health reports
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _answered(result):
    """Whether a check's part answered: a SQLite database whose disk is nearly full fails its check,
    yet still answers the checks that read it (its free space is measured only once it did)."""
    return result["ok"] or "free_bytes" in result


def system_health():
    checks = {"database": _outcome(_check_database), "broker": _outcome(_check_broker),
              "storage": _outcome(_check_storage)}
    needs = {"worker": ("broker", _check_workers), "model": ("database", _active_model),
             "work": ("database", _check_work)}
    for name, (needed, check) in needs.items():
        unreachable = {"ok": False, "error": f"{needed} unreachable"}
        checks[name] = _outcome(check) if _answered(checks[needed]) else unreachable
    failing = [name for name, result in checks.items() if not result["ok"]]
    return {"status": "ok" if not failing else "failing", "failing": failing, "checks": checks}


def public_summary(report):
    """What anyone may see: the overall status and whether each part works. Worker host names, the
    serving model and error messages help an attacker as much as an administrator: staff only."""
    return {
        "status": report["status"],
        "failing": report["failing"],
        # What still works but will not for long (a disk filling): a monitor can act before the lab
        # meets it. Only the names; what each says is for staff.
        "warnings": [name for name, result in report["checks"].items() if result.get("warning")],
        "checks": {name: {"ok": result["ok"]} for name, result in report["checks"].items()},
    }
