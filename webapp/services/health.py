"""What /healthz reports: can we reach the database, the broker and a worker, and which model serves."""

from django.db import connection

from webapp.celery import app as celery_app
from webapp.models import ModelVersion


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def _check_broker():
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return {"ok": True}


def _check_workers():
    replies = celery_app.control.ping(timeout=1.0) or []
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return {"ok": False, "error": "no Celery worker answered"}
    return {"ok": True, "workers": names}


def _active_model():
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        return {"ok": False, "error": "no model version is active"}
    return {"ok": True, "version": version.label, "architecture": version.architecture,
            "task": version.task}


def system_health():
    checks = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        try:
            checks[name] = check()
        except Exception as exc:  # any failure of a dependency is what health reports
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if checks["broker"]["ok"]:
        try:
            checks["worker"] = _check_workers()
        except Exception as exc:
            checks["worker"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        checks["worker"] = {"ok": False, "error": "broker unreachable"}
    if checks["database"]["ok"]:
        checks["model"] = _active_model()
    else:
        checks["model"] = {"ok": False, "error": "database unreachable"}
    failing = [name for name, result in checks.items() if not result["ok"]]
    return {"status": "ok" if not failing else "failing", "failing": failing, "checks": checks}


def public_summary(report):
    """What anyone may see: the overall status and whether each part works. Worker host names, the
    serving model and error messages help an attacker as much as an administrator: staff only."""
    return {
        "status": report["status"],
        "failing": report["failing"],
        "checks": {name: {"ok": result["ok"]} for name, result in report["checks"].items()},
    }
