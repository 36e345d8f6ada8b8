"""Storing, registering, activating and deleting model versions."""

import hashlib
import logging

from django.db import connection, transaction
from django.utils import timezone

from classifier.model_folder import ModelFolderError, bundled_model_folders, read_model_folder
from webapp.models import ModelActivation, ModelVersion
from webapp.selectors import version_deletion_refusal

logger = logging.getLogger(__name__)


class ModelVersionError(ValueError):
    """A user-facing reason why a version cannot be used."""


class VersionDeletedMeanwhile(ModelVersionError):
    """The version was deleted after the page that asked read it (its lock waited on the deletion);
    nothing was changed, and the message says so."""


def _locked_version(pk, refusal):
    """The version's row, locked until the transaction ends; VersionDeletedMeanwhile, ending
    ``refusal``, where a deletion committed while this waited for the lock."""
    version = ModelVersion.objects.select_for_update().filter(pk=pk).first()
    if version is None:
        raise VersionDeletedMeanwhile(f"v{pk} was deleted meanwhile: {refusal}")
    return version


def store_training_result(version, result):
    """Fill a version from a classifier.training.TrainingResult and mark it ready."""
    version.model_bytes = result.model_bytes
    version.model_sha256 = result.model_sha256
    version.size_bytes = len(result.model_bytes)
    version.class_names = list(result.class_names)
    version.input_spec = dict(result.input_spec)
    version.hyperparameters = dict(result.hyperparameters)
    version.seed = result.seed
    version.temperature = float(result.temperature)
    version.class_counts = dict(result.class_counts)
    version.dataset_fingerprint = result.dataset_fingerprint
    version.history = list(result.history)
    version.metrics = dict(result.metrics, skipped_files=result.skipped_files,
                           skipped_named=result.skipped_named)
    version.training_seconds = result.training_seconds
    version.status = ModelVersion.Status.READY
    version.failure_reason = ""
    version.finished_at = timezone.now()
    version.save()
    return version


def register_model_directory(directory, source=ModelVersion.Source.BUNDLED, dataset_path=""):
    """Register a saved model folder (classifier.model_folder); idempotent by the network's hash."""
    try:
        model_bytes, meta = read_model_folder(directory)
    except ModelFolderError as error:
        raise ModelVersionError(str(error)) from None
    sha = hashlib.sha256(model_bytes).hexdigest()
    existing = ModelVersion.objects.filter(model_sha256=sha).first()
    if existing:
        if existing.source == ModelVersion.Source.BUNDLED:
            # The same network with records a newer release fitted beside it (its review threshold,
            # say, or its data's fingerprint): the bundled folder is the record of the network it
            # ships.
            records = {"metrics": meta.get("metrics"), "dataset_fingerprint": meta.get("dataset_fingerprint")}
            changed = [field for field, value in records.items()
                       if value and getattr(existing, field) != value]
            for field in changed:
                setattr(existing, field, records[field])
            if changed:
                existing.save(update_fields=changed)
        return existing, False
    version = ModelVersion.objects.create(
        architecture=meta["architecture"],
        task=meta["task"],
        status=ModelVersion.Status.READY,
        source=source,
        class_names=meta["class_names"],
        input_spec=meta["input_spec"],
        hyperparameters=meta.get("hyperparameters", {}),
        seed=meta.get("seed"),
        temperature=meta.get("temperature", 1.0),
        dataset_path=dataset_path or meta.get("dataset_path", ""),
        class_counts=meta.get("class_counts", {}),
        dataset_fingerprint=meta.get("dataset_fingerprint", ""),
        history=meta.get("history", []),
        metrics=meta.get("metrics", {}),
        training_seconds=meta.get("training_seconds"),
        model_bytes=model_bytes,
        model_sha256=sha,
        size_bytes=len(model_bytes),
        finished_at=timezone.now(),
    )
    return version, True


def ensure_default_model():
    """On a fresh install, register the bundled models and activate the default one."""
    registered = []
    for directory in bundled_model_folders():
        try:
            version, created = register_model_directory(directory)
        except ModelVersionError as error:
            raise ModelVersionError(f"The bundled network {directory} cannot be registered: {error} "
                                    "Install the release's classifier/default_model/ again.") from None
        registered.append((version, created))
    if registered and not ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).exists():
        activate_version(registered[0][0], user=None)
    return registered


# The PostgreSQL advisory lock that serialises activations (services.training's is 0x1E0C0).
ACTIVATION_LOCK = 0x1E0C1


def _lock_activations():
    """Inside a transaction: wait for any other activation to commit. Locking the active row alone
    is not enough on PostgreSQL: a second activation waiting on it finds, once the first commits,
    that row ready and no version active, and then makes its own active beside the first's (the
    one-active constraint refuses it). SQLite opens every transaction as BEGIN IMMEDIATE, which
    serialises them already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ACTIVATION_LOCK])


@transaction.atomic
def activate_version(version, user=None):
    _lock_activations()
    version = _locked_version(version.pk, "nothing was activated.")
    if version.status == ModelVersion.Status.ACTIVE:
        return version
    if version.status != ModelVersion.Status.READY:
        raise ModelVersionError(
            f"Version v{version.pk} cannot be activated: its status is "
            f"\u201c{version.get_status_display().lower()}\u201d, and only a ready version can serve."
        )
    if not version.model_sha256:
        # Said apart: "its status is ready, and only a ready version can serve" contradicts itself.
        raise ModelVersionError(f"Version v{version.pk} cannot be activated: it holds no stored network.")
    previous = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
    if previous:
        previous.status = ModelVersion.Status.READY
        previous.save(update_fields=["status"])
    version.status = ModelVersion.Status.ACTIVE
    version.save(update_fields=["status"])
    ModelActivation.objects.create(version=version, previous_version=previous, activated_by=user)
    return version


@transaction.atomic
def delete_unused_version(version, user=None):
    """Delete a version that selectors.version_deletion_refusal lets go; raises ModelVersionError
    with its refusal otherwise. Returns the deleted version's id."""
    version = _locked_version(version.pk, "there is nothing left to delete.")
    if refusal := version_deletion_refusal(version):
        raise ModelVersionError(refusal)
    pk = version.pk
    version.delete()
    logger.info("Model version v%s (%s) deleted by %s", pk, version.status,
                user.get_username() if user else "a command")
    return pk
